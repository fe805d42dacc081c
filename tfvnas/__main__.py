"""`python -m tfvnas ...`: the `tfvnas` command (`tfvnas.cli`)."""

from tfvnas.cli import entry

entry()
