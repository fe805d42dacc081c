"""Genotypes, histories and PNG and SVG checks shared by the tests of the picture modules."""

import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np

from tfvnas.models.genotype import Genotype, edge_list

SVG = "{http://www.w3.org/2000/svg}"
OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]

DARTS_V2 = Genotype(
    normal=[
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 1), ("skip_connect", 0)],
        [("skip_connect", 0), ("dil_conv_3x3", 2)],
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
        [("skip_connect", 2), ("max_pool_3x3", 1)],
        [("max_pool_3x3", 0), ("skip_connect", 2)],
        [("skip_connect", 2), ("max_pool_3x3", 1)],
    ],
    reduce_concat=[2, 3, 4, 5],
)


def _dense_cell(nodes, ops_per_edge):
    # Every node takes every earlier state, with `ops_per_edge` ops on each edge.
    return [
        [(OPS[(i + j + 3 * r) % len(OPS)], j) for j in range(2 + i) for r in range(ops_per_edge)]
        for i in range(nodes)
    ]


DENSE = Genotype(
    normal=_dense_cell(4, 2),
    normal_concat=[2, 3, 4, 5],
    reduce=_dense_cell(5, 1),
    reduce_concat=[2, 3, 4, 5, 6],
)


def check_png(path, min_colors=4):
    """A real PNG (by its magic and matplotlib's reader), neither blank nor a solid block."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert h > 50 and w > 50
    rgb = img[..., :3]
    ink = (rgb < 0.98).any(axis=2).mean()
    assert 0.01 < ink < 0.9, ink
    packed = (np.round(rgb * 255).astype(np.uint32) * np.array([1 << 16, 1 << 8, 1], np.uint32)).sum(axis=2)
    assert len(np.unique(packed)) >= min_colors
    return img


def parse_svg(text):
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def svg_texts(root):
    return ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]


def by_gid(artists, prefix):
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


def search_history(epochs=3, nodes=2, threshold=3.0):
    """A small search_history.json: gate (edge 0, op 0) climbs over the threshold at epoch 2."""
    edges = edge_list(nodes)
    rng = np.random.default_rng(0)
    base = {t: rng.uniform(-3, 2, (len(edges), len(OPS))) for t in ("normal", "reduce")}
    ever_pruned = {t: np.zeros((len(edges), len(OPS)), bool) for t in base}
    records = []
    for t in range(epochs):
        log_alpha, active = {}, {}
        for cell_type in ("normal", "reduce"):
            table = base[cell_type] + 0.1 * t
            table[0, 0] = 1.0 + 2.5 * t  # 1.0, 3.5, 6.0
            ever_pruned[cell_type] |= table >= threshold
            log_alpha[cell_type] = table.round(4).tolist()
            active[cell_type] = (~ever_pruned[cell_type]).astype(int).tolist()
        records.append(
            {
                "epoch": t + 1,
                "val_accuracy": 0.5 + 0.1 * t,
                "active_ops": {c: int(np.sum(active[c])) for c in active},
                "total_ops": len(edges) * len(OPS),
                "weight_sparsity": None,
                "log_alpha": log_alpha,
                "active": active,
                # Keys the plots do not use.
                "pruned_at": {"normal": [], "reduce": []},
                "genotype": DARTS_V2.to_dict(),
            }
        )
    return {"dataset": "tiny", "op_names": OPS, "edges": [list(e) for e in edges], "threshold": threshold,
            "epochs": records}


LAYERS = [
    {"name": "stem/conv", "type": "Conv2D", "dense": 432, "nonzero": 400},
    {"name": "cell_0/a_rather_long_layer_name/sep_conv_3x3/depthwise", "type": "DepthwiseConv2D", "dense": 144,
     "nonzero": 20},
    {"name": "head/dense", "type": "Dense", "dense": 1000, "nonzero": 0},
]
