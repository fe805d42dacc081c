"""Published DARTS-space cells, one JSON file per cell (the genotype zoo).

This package holds data only; read it with `tfvnas.models.zoo.zoo_names`,
`tfvnas.models.zoo.zoo_entry` and `tfvnas.models.zoo.load_genotype`. Each file
has the four `Genotype` keys (`normal`, `normal_concat`, `reduce`,
`reduce_concat`, in the schema of `Genotype.to_dict`) plus a `source` object
naming the paper, the repository and variable the cell was transcribed from,
and the CIFAR-10 result the paper reports. README.md lists the cells.
"""
