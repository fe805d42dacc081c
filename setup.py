"""tfvnas: variational-inference-based differentiable NAS for TensorFlow/Keras."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="tfvnas",
    version="0.1.0",
    description=(
        "Variational-inference-based differentiable neural architecture search "
        "(VINNAS) for TensorFlow/Keras: search, sparse training, TFLite export."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["tfvnas", "tfvnas.*"]),
    package_data={
        "tfvnas.datasets": ["mnist_5k.npz", "README.md"],
        "tfvnas.genotypes": ["*.json"],
        "tfvnas.exporting": ["templates/*.j2"],
    },
    include_package_data=True,
    install_requires=[
        "tensorflow==2.21.*",
        "tensorflow-probability==0.25.*",
        # TFP 0.25 imports tf_keras for tfp.layers; tfvnas uses only
        # tfp.distributions, but the import must resolve.
        "tf-keras==2.21.*",
        "keras-tuner[bayesian]==1.4.*",
        # Stratified splits in tfvnas.data (also a dependency of the above).
        "scikit-learn>=1.3",
        # tf.summary writes through it (TensorFlow 2.21 no longer installs it).
        "tensorboard==2.21.*",
        # Export: pruning-preserving QAT (on tf_keras) and the LiteRT interpreter.
        "tensorflow-model-optimization==0.8.*",
        "ai-edge-litert==2.3.*",
        "numpy>=1.26,<3",
        # Pictures (tfvnas show, TensorBoard cell images); graphviz's `dot` is used when installed.
        "matplotlib>=3.8",
        "pyyaml>=6",
        # The export report and model card are Jinja2 templates.
        "jinja2>=3.1",
    ],
    extras_require={
        # Two worker processes (pytest.ini).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100"],
        # TFDS datasets (`--dataset tfds:NAME`, `tfvnas.streams.from_tfds`).
        "tfds": ["tensorflow-datasets>=4.9"],
    },
    entry_points={"console_scripts": ["tfvnas=tfvnas.cli:entry"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
