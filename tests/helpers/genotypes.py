"""The DARTS (second order) cell and the DARTS operations, for the genotype and derivation tests."""

from tfvnas.models.genotype import Genotype

DARTS_OPS = [
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "none",
]

# DARTS (second order) cell from Liu et al. 2019, written in the JSON schema.
DARTS_V2 = {
    "normal": [
        [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],
        [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]],
        [["sep_conv_3x3", 1], ["skip_connect", 0]],
        [["skip_connect", 0], ["dil_conv_3x3", 2]],
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        [["max_pool_3x3", 0], ["max_pool_3x3", 1]],
        [["skip_connect", 2], ["max_pool_3x3", 1]],
        [["max_pool_3x3", 0], ["skip_connect", 2]],
        [["skip_connect", 2], ["max_pool_3x3", 1]],
    ],
    "reduce_concat": [2, 3, 4, 5],
}


def darts_v2():
    return Genotype.from_dict(DARTS_V2)
