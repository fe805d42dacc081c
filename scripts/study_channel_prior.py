#!/usr/bin/env python3
"""The channel-prior study: accuracy against size, with and without the channel-group ARD prior.

`measure` reads `tfvnas train` output folders (trained with and without
`channel_prior`) and reports, per folder: test accuracy, MACs per image of
the unshrunk and of the shrunk stripped network (`tfvnas.compress.macs.count_macs`)
and their ratio, non-zero parameters of both, and the share of channel
scales pruned. The target (2.5x fewer MACs than the unshrunk stripped
network, within 0.5 points of the test accuracy of the same network trained
without the prior) is checked here, never in the test suite.

    tfvnas train --genotype saved_models/example-mnist-5k/search --preset quick --out runs/cp/base-s0
    tfvnas train --genotype saved_models/example-mnist-5k/search --preset quick --out runs/cp/prior-s0 \\
        --config prior.json            # {"channel_prior": true}
    python scripts/study_channel_prior.py measure runs/cp/base-s0 runs/cp/prior-s0

`fashion` is the same comparison on Fashion-MNIST at a small budget (the
`quick` training recipe on 14x14 images, `--epochs` epochs, the first
`--limit` training images): it trains the network without the prior and
with it for every `--scales` value of `channel_scale_init`, picks the
prior's value on the validation split, and only then reads the test split,
once, for the network without the prior and the one picked.

    python scripts/study_channel_prior.py fashion --data ../shared/data/fashion_mnist_50k_10k.npz \\
        --genotype saved_models/example-mnist-5k/search --out runs/cp-fashion

Both write `<name>.json` and print a Markdown table.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def sizes(network):
    """MACs and non-zero parameters of the stripped network, unshrunk and shrunk; pruned channels."""
    from tfvnas.compress import counting, macs, shrinking
    from tfvnas.compress import strip as strip_lib
    from tfvnas.layers import channel_prior

    unshrunk = strip_lib.strip(network, shrink=False)
    shrunk = shrinking.shrink(unshrunk)
    pruned, total = channel_prior.channel_sparsity(network)
    row = {"channels_pruned": pruned, "channels": total}
    for name, model in (("unshrunk", unshrunk), ("shrunk", shrunk)):
        counts = counting.count_parameters(model)
        row[f"macs_{name}"] = macs.count_macs(model)["total"]
        row[f"nonzero_{name}"] = counts["nonzero"]
        row[f"dense_{name}"] = counts["dense"]
    row["macs_ratio"] = row["macs_unshrunk"] / row["macs_shrunk"]
    return row


def _measure(args):
    from tfvnas.exporting import load_trained

    rows = []
    for folder in args.train:
        network, history = load_trained(folder)
        config = json.load(open(os.path.join(folder, "train_config.json")))
        rows.append({"folder": folder, "channel_prior": config.get("channel_prior", False),
                     "seed": config["seed"], "test_accuracy": history["test_accuracy"], **sizes(network)})
    return rows


def _fashion(args):
    from tfvnas import config as config_lib
    from tfvnas import data as data_lib
    from tfvnas.loops import training
    from tfvnas.models import zoo

    genotype = zoo.load_genotype(args.genotype)
    dataset = data_lib.load(args.data, seed=args.seed).resized(args.size)
    base = config_lib.TRAIN_PRESETS["quick"].replace(epochs=args.epochs, limit=args.limit, seed=args.seed)
    arms = [("no prior", base)] + [
        (f"prior, scale_init {s}", base.replace(channel_prior=True, channel_scale_init=s)) for s in args.scales]
    trained = []
    for name, cfg in arms:
        start = time.time()
        trainer = training.Trainer(genotype, cfg, dataset, verbose=1)
        trainer.train()
        val_loss, val_acc = trainer.evaluate("val")
        trained.append((name, cfg, trainer, val_acc, time.time() - start))
        print(f"{name}: val accuracy {val_acc:.4f} ({time.time() - start:.0f} s)", flush=True)
    # The prior's setting is chosen on the validation split; the test split
    # is read once per reported network.
    picked = max((t for t in trained if t[1].channel_prior), key=lambda t: t[3]) if args.scales else None
    rows = []
    for name, cfg, trainer, val_acc, seconds in trained:
        row = {"arm": name, "channel_prior": cfg.channel_prior, "channel_scale_init": cfg.channel_scale_init,
               "val_accuracy": val_acc, "seconds": seconds, "seed": cfg.seed}
        if not cfg.channel_prior or (picked is not None and trainer is picked[2]):
            row["test_accuracy"] = trainer.evaluate("test")[1]
            row["picked"] = cfg.channel_prior
        rows.append({**row, **sizes(trainer.model)})
    return rows


def _markdown(rows):
    head = ("| run | val acc. | test acc. | MACs unshrunk | MACs shrunk | ratio | non-zero unshrunk | "
            "non-zero shrunk | channels pruned |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = r.get("arm") or f"{'prior' if r['channel_prior'] else 'no prior'}, seed {r['seed']}"
        val = f"{r['val_accuracy']:.4f}" if "val_accuracy" in r else "-"
        test = f"{r['test_accuracy']:.4f}" if "test_accuracy" in r else "(not read)"
        lines.append(
            f"| {name} | {val} | {test} | {r['macs_unshrunk']:,} | {r['macs_shrunk']:,} | {r['macs_ratio']:.2f}x | "
            f"{r['nonzero_unshrunk']:,} | {r['nonzero_shrunk']:,} | {r['channels_pruned']} of {r['channels']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure = sub.add_parser("measure", help="sizes and accuracy of `tfvnas train` folders")
    measure.add_argument("train", nargs="+", help="`tfvnas train` output folders")
    measure.add_argument("--out", help="write the rows to this JSON file")
    fashion = sub.add_parser("fashion", help="train and compare on Fashion-MNIST at a small budget")
    fashion.add_argument("--data", required=True, help="the Fashion-MNIST .npz file")
    fashion.add_argument("--genotype", default="saved_models/example-mnist-5k/search")
    fashion.add_argument("--size", type=int, default=14, help="image side (default 14)")
    fashion.add_argument("--epochs", type=int, default=3)
    fashion.add_argument("--limit", type=int, default=20000, help="training images used (default 20000)")
    fashion.add_argument("--scales", type=float, nargs="*", default=[0.1, 0.2],
                         help="channel_scale_init values of the prior's arms")
    fashion.add_argument("--seed", type=int, default=0)
    fashion.add_argument("--out", help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = _measure(args) if args.command == "measure" else _fashion(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    print(_markdown(rows))


if __name__ == "__main__":
    main()
