"""Where a search's node energy comes from, at initialisation and at its end, and where its skips come from.

For a search folder (`tfvnas search --out DIR`), prints per op type and per
input kind (one of the cell's two inputs, or an intermediate node) each
gated output's share of its node's energy, relative to an equal share
(`tfvnas.models.energy`), for the supernet as initialised (same config and
seed) and as its last checkpoint holds it; then the found normal cell's
skip connections that come from intermediate nodes, against the random
null of the same space.

    python scripts/energy_diagnostic.py runs/search
    python scripts/energy_diagnostic.py runs/search --dataset ../shared/data/fashion_mnist_50k_10k.npz --json out.json
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def diagnose(search_dir, dataset=None, images=64):
    import study_ranking

    from tfvnas import config as config_lib
    from tfvnas import data as data_lib
    from tfvnas import files, runs
    from tfvnas.loops.searching import Searcher
    from tfvnas.models.energy import energy_summary, node_energy
    from tfvnas.models.genotype import Genotype

    cfg = config_lib.SearchConfig.load(os.path.join(search_dir, "search_config.json"))
    history = files.read_json(os.path.join(search_dir, "search_history.json"))
    data = data_lib.load(dataset or history["dataset"], seed=cfg.seed)
    searcher = Searcher(cfg, data, verbose=0)
    batch = searcher.dataset.x_train[:images]
    out = {"init": energy_summary(node_energy(searcher.model, batch))}
    checkpoints = os.path.join(search_dir, runs.CHECKPOINT_SUBDIR)
    searcher.restore(checkpoints)
    out["end"] = energy_summary(node_energy(searcher.model, batch))
    genotype = Genotype.load(os.path.join(search_dir, "genotype.json"))
    inter, skips = study_ranking.skip_origins(genotype)
    out["skips"] = {"normal_skips": skips, "from_nodes": inter,
                    "null": study_ranking.skip_origin_null(cfg.op_names, nodes=cfg.nodes, samples=5000)}
    return out


def format_table(out):
    lines = ["| op | init: from a cell input | init: from a node | end: from a cell input | end: from a node |",
             "|---|---|---|---|---|"]
    for op in (o for o in out["init"] if o != "state_energy"):
        cells = []
        for when in ("init", "end"):
            row = out[when].get(op, {})
            cells += [f"{row[k]:.2f}" if k in row else "-" for k in ("cell input", "node")]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    for when in ("init", "end"):
        lines.append(f"node state energy at {when}: "
                     + ", ".join(f"node {2 + int(n)} {v:.1f}" for n, v in out[when]["state_energy"].items()))
    s = out["skips"]
    lines.append(f"normal cell: {s['normal_skips']} skip(s), {s['from_nodes']} from intermediate nodes; random null "
                 f"{s['null']['pooled_share']:.2f} of skips from nodes ({s['null']['skips_per_cell']:.2f} skips per cell)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("search_dir", help="a search folder (search_config.json, search_history.json, checkpoints/)")
    parser.add_argument("--dataset", help="the data set, if the history's name does not load (an .npz path)")
    parser.add_argument("--images", type=int, default=64, help="training images of the measured batch")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.search_dir, "search_config.json")):
        parser.error(f"{args.search_dir!r} is not a search folder (no search_config.json)")
    out = diagnose(args.search_dir, args.dataset, args.images)
    print(format_table(out))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
