"""Test set-up: 8 simulated CPU devices for the sharding tests, no GPU/TPU, no network."""

import os

# Must be set before jax is imported anywhere: every test process sees 8 CPU devices, so sharded
# and single-device results can be compared in one process.
# XLA's backend optimization level 0: the suite is dominated by compiling many small programs once,
# which this makes ~40% cheaper; numerics are unchanged within every test's tolerance.
# The environment's own flags are kept aside for processes that must run as a user's would (the
# notebook kernels, tests/_notebooks.py).
os.environ.setdefault("NEST_JAX_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TFDS_DATA_DIR", "/nonexistent-tfds-dir")  # tests never read real datasets
os.environ.setdefault("MPLBACKEND", "Agg")
# One XLA compilation cache shared by both xdist workers and every subprocess they start (CLI runs,
# notebook kernels): the same small programs (initializers, layers) are otherwise compiled again in
# each process. Empty on a fresh clone; keyed by jax version and program, so never stale.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "xla_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# TensorFlow (the data pipelines) and PyTorch (the parity tests) crash the interpreter when
# TensorFlow is imported before torch's compiler stack (triton, pulled in by torchvision/timm);
# importing those first is safe, so the whole session does that once here, whatever order the
# test modules are collected in.
try:
    import timm  # noqa: F401,E402
    import torch  # noqa: F401,E402
    import torchvision  # noqa: F401,E402
except ImportError:  # torch is a dev extra: parity tests need it, the rest of the suite does not
    pass


# The longest test files first, so the two xdist workers (--dist loadfile) finish together instead
# of one starting a long file at the end (longest-processing-time-first scheduling).
LONG_FILES = (
    "test_configs_e2e.py",
    "test_notebook_06.py",
    "test_train_digits.py",
    "test_notebook_02.py",
    "test_notebook_03.py",
    "test_train_reliability.py",
    "test_bf16.py",
    "test_gan_train.py",
    "test_train_checkpoint.py",
    "test_gcs.py",
    "test_gradcat.py",
    "test_train_step.py",
    "test_train_transfer.py",
    "test_timm_parity.py",
    "test_cam.py",
    "test_nest_parity.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))
