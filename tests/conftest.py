"""Test set-up: 8 simulated CPU devices for the sharding tests, no GPU/TPU, no network."""
import os

# Must be set before jax is imported anywhere: every test process sees 8 CPU devices, so sharded
# and single-device results can be compared in one process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-dir")  # tests never read real datasets
os.environ.setdefault("MPLBACKEND", "Agg")
