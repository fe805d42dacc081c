"""Configurations the loop tests share."""

# The smoke search shrunk to 1 cell and 1 node: 2 epochs of 4 steps
# (256 examples, bi-level halves of 128, global batch 32).
TINY = {"layers": 1, "nodes": 1, "epochs": 2}
