"""Faults around the training loop: an edited input position, signals outside the loop and during a
save, evaluation beside a run that deletes old checkpoints, a full disk at the workdir's files.

Each test starts from what a user saw go wrong (issue "Reliability, second round", items 5, 8, 9
and 11) and checks the outcome against something independent of the code under test: the exit
status and stderr of a real process, the files on a real (tmpfs) disk, a reference run.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nest_jax.errors import PREEMPTED_EXIT_CODE, USAGE_EXIT_CODE, UserError
from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.lock import LOCK_NAME
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import make_trainer
from nest_jax.train.writers import MetricWriter
from tests._tmpfs import tmpfs
from tests._train_helpers import tiny_config

REPO = Path(__file__).resolve().parents[1]
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
LOG_LINE = re.compile(r"^[IWEF]\d{4} ")  # absl's log prefix: the run's log, not its final message


def _digits_config(**train):
    """The tiny ViT on the real digits stream (8 px): its input position is nest_jax's own
    {"step", "seed"}."""
    cfg = tiny_config(**train)
    cfg.dataset.update(
        dict(name="digits", train_split="train", eval_split="test", image_size=8, num_channels=1, normalize="digits")
    )
    return cfg


def _final_state(workdir, cfg):
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(cfg, mesh, num_classes=10, num_train_steps=cfg.train.num_train_steps, warmup_steps=2)
    ckpt = Checkpointer(workdir)
    state = ckpt.restore(tr.abstract_state, tr.state_shardings)
    ckpt.close()
    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


# ---- 5: the input position saved with a checkpoint ----


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """(workdir stopped at checkpoint 3 of 6, final state of an uninterrupted 6-step run)."""
    full = tmp_path_factory.mktemp("full")
    train_and_evaluate(_digits_config(num_train_steps=6, log_every_steps=100), full)
    half = tmp_path_factory.mktemp("half")
    train_and_evaluate(_digits_config(num_train_steps=6, stop_after_steps=3, log_every_steps=100), half)
    assert json.loads((half / "checkpoints/3/data/process_0-of-1.json").read_text()) == {"step": 3, "seed": 0}
    return half, _final_state(full, _digits_config(num_train_steps=6))


@pytest.mark.parametrize("edit", ["config", "file"])
def test_a_seed_other_than_the_checkpoints_is_one_line_naming_both(digits_runs, tmp_path, edit):
    """Resuming with --config.seed=1 was a ValueError traceback from the iterator; a seed edited
    in the position file (config unchanged) trained on silently with the step's order."""
    work = tmp_path / "w"
    shutil.copytree(digits_runs[0], work)
    cfg = _digits_config(num_train_steps=6, log_every_steps=100)
    position = work / "checkpoints/3/data/process_0-of-1.json"
    if edit == "config":
        cfg.seed, saved, wanted = 1, 0, 1
    else:
        position.write_text(json.dumps({"step": 3, "seed": 5}))
        saved, wanted = 5, 0
    with pytest.raises(UserError) as info:
        train_and_evaluate(cfg, work)
    msg = str(info.value)
    assert "\n" not in msg and f"seed {saved}" in msg and f"seed {wanted}" in msg, msg
    assert f"--config.seed={saved}" in msg and str(position) in msg
    assert Checkpointer(work).all_steps() == [3] and not (work / LOCK_NAME).exists()


def test_an_edited_step_in_the_input_position_is_ignored_and_the_run_stays_exact(digits_runs, tmp_path, caplog):
    """A step edited from 3 to 1 in the position file made the resumed run train on batches 1-3
    again (another data order, silently); the checkpoint's step now places the stream, and the
    resumed run equals an uninterrupted one bit for bit."""
    work = tmp_path / "w"
    shutil.copytree(digits_runs[0], work)
    position = work / "checkpoints/3/data/process_0-of-1.json"
    position.write_text(json.dumps({"step": 1, "seed": 0}))
    cfg = _digits_config(num_train_steps=6, log_every_steps=100)
    with caplog.at_level("WARNING"):
        train_and_evaluate(cfg, work)
    resumed, full = _final_state(work, cfg), digits_runs[1]
    assert sorted(resumed) == sorted(full)
    for k in full:
        assert np.array_equal(full[k], resumed[k]), k
    warned = [r.getMessage() for r in caplog.records if str(position) in r.getMessage()]
    assert len(warned) == 1 and "says step 1 but the checkpoint is step 3" in warned[0]


# ---- 8: signals ----


def _env() -> dict:
    # PYTHONFAULTHANDLER: a child that hangs is aborted by `_finish`, and prints every thread's stack.
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", PYTHONFAULTHANDLER="1")
    return dict(env, XLA_FLAGS="--xla_backend_optimization_level=0")


def _default_signals() -> None:
    """preexec_fn: the child gets SIGINT and SIGTERM as a terminal's foreground job has them. A child
    inherits an ignored SIGINT and a blocked signal mask; something in the suite's worker processes
    leaves one of them set, and a child that never saw its Ctrl-C trained until the test timed out."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of a child that should end within `timeout` s; one that hangs fails the
    test with the stacks of its threads (SIGABRT makes faulthandler print them)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"the run did not end within {timeout} s; its threads:\n{err[-12000:]}")


def _main_argv(workdir, overrides, script: str | None = None) -> list[str]:
    """The digits job's command line: `python -m nest_jax.main`, or `python -c script` (a script
    that ends in `nest_jax.main.run()`)."""
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "nest_jax.main"]
    args = ["--config=configs/digits_nest_tiny.py", f"--workdir={workdir}"]
    return head + args + [f"--config.{o}" for o in overrides]


def _start_main(workdir, *overrides) -> subprocess.Popen:
    """`python -m nest_jax.main` on the digits job, in its own process group (as a shell runs it)."""
    return subprocess.Popen(
        _main_argv(workdir, overrides),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_signals,
    )


def _run_script(script: str, workdir, *overrides) -> subprocess.CompletedProcess:
    """The digits job run to its end by `script` (see `_main_argv`)."""
    return subprocess.run(
        _main_argv(workdir, overrides, script),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_default_signals,
    )


def _message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


# The child sends itself SIGTERM from a filter on the training loop's logger when the data line is
# logged: the signal lands at that point of setup on any machine, loaded or not (a parent reading the
# line and signalling could be scheduled late enough for the child to reach the loop).
_TERM_MARK = "test: SIGTERM sent at the data line"
_TERM_AT_DATA_LINE = f"""
import logging, os, signal, sys
MARK, LOCK = {_TERM_MARK!r}, {LOCK_NAME!r}
WORKDIR = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
def term(record):
    if "eval examples" in record.getMessage():
        held = os.path.exists(os.path.join(WORKDIR, LOCK))
        print(MARK + (" with the lock held" if held else " without the lock"), file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    return True
logging.getLogger("nest_jax.train.loop").addFilter(term)
from nest_jax.main import run
sys.argv[0] = "nest_jax.main"
run()
"""


@pytest.mark.slow  # one CLI process up to the model's construction: ~20 CPU-s
def test_sigterm_during_setup_exits_75_with_one_line_and_releases_the_lock(tmp_path):
    """SIGTERM before the loop (here: right after the data is read, the lock held, the model not
    yet built) killed the process: exit 143, no message, the lock file left behind."""
    proc = _run_script(_TERM_AT_DATA_LINE, tmp_path, "train.num_train_steps=4")
    sent = f"{_TERM_MARK} with the lock held"
    assert sent in proc.stderr, proc.stderr[-3000:]  # the signal came at the data line, the lock held
    err = proc.stderr.replace(sent, "")
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    lines = _message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("nest_jax.main: preempted (SIGTERM) outside"), err[-3000:]
    assert "Traceback" not in err and not (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


@pytest.mark.slow  # one CLI run to its first saves: ~60 CPU-s
def test_ctrl_c_during_a_save_finishes_it_and_exits_130_with_one_line(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while a checkpoint is being
    written printed 68-82 lines of KeyboardInterrupt and could drop the save; now the save in
    progress is finished, the lock released, one line names the checkpoint, exit 130."""
    proc = _start_main(tmp_path, "train.num_train_steps=10000", "train.checkpoint_every_steps=1")
    deadline, in_flight = time.time() + 400, []
    while not in_flight and proc.poll() is None and time.time() < deadline:
        in_flight = list((tmp_path / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
        time.sleep(0.002)
    assert in_flight, "no save was seen in progress"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = _finish(proc, 300)
    assert proc.returncode == INTERRUPTED_EXIT_CODE, err[-3000:]
    lines = _message_lines(err)
    assert len(lines) == 1 and lines[0].startswith("nest_jax.main: interrupted (Ctrl-C): the newest complete"), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not (tmp_path / LOCK_NAME).exists()
    ckpts = tmp_path / "checkpoints"
    assert not list(ckpts.glob("*.orbax-checkpoint-tmp*"))  # nothing half-written left
    step = int(in_flight[0].name.split(".")[0])
    steps = Checkpointer(tmp_path, create=False).all_steps()
    assert step in steps and f"step {max(steps)} in" in lines[0]
    # The checkpoint that was being written reads back whole: its arrays match their checksums.
    _check_restorable(ckpts / str(step))


# The child sends itself SIGINT from inside a garbage-collector callback, at the first metrics line:
# Python's handler raises KeyboardInterrupt there, and the collector drops it ("Exception ignored").
# JAX registers such a callback, so a real Ctrl-C can land in one (seen: a run went on training).
_INT_IN_GC = """
import gc, logging, signal, sys
armed = []
def in_gc(phase, info):
    if armed:
        armed.clear()
        signal.raise_signal(signal.SIGINT)
gc.callbacks.append(in_gc)
def at_metrics(record):
    if "train_loss" in record.getMessage() and not armed:
        armed.append(1)
        gc.collect()
    return True
logging.getLogger("absl").addFilter(at_metrics)  # the metric writer logs through absl
from nest_jax.main import run
sys.argv[0] = "nest_jax.main"
run()
"""


@pytest.mark.slow  # one CLI run to its first metrics line: ~40 CPU-s
def test_ctrl_c_dropped_inside_the_garbage_collector_still_stops_the_run(tmp_path):
    """A KeyboardInterrupt raised inside a gc callback is dropped by Python; the run went on to the
    end. The SIGINT handler also sets a flag that the loop reads at the next step boundary."""
    proc = _run_script(_INT_IN_GC, tmp_path, "train.num_train_steps=400", "train.log_every_steps=10")
    assert "Exception ignored in" in proc.stderr and "KeyboardInterrupt" in proc.stderr  # really dropped
    assert proc.returncode == INTERRUPTED_EXIT_CODE, proc.stderr[-3000:]
    assert proc.stderr.rstrip().splitlines()[-1].startswith("nest_jax.main: interrupted (Ctrl-C)")
    assert not (tmp_path / LOCK_NAME).exists()


def test_after_ctrl_c_the_process_ends_without_interpreter_teardown_and_loses_no_output():
    """`nest_jax.main.run` ends a Ctrl-C'd run with `os._exit(130)`: tearing the interpreter down
    under a train step still in flight crashed the process (a segmentation fault after the one-line
    message, 6 of 12 trials of Ctrl-C during the first steps before this). Output still buffered
    (stdout into a pipe) must reach the pipe, and atexit teardown must not run."""
    code = (
        "import atexit, sys\n"
        "import nest_jax.main as m\n"
        "atexit.register(lambda: print('teardown ran', file=sys.stderr))\n"
        "def interrupted():\n"
        "    print('buffered, no newline', end='')\n"
        "    return m.INTERRUPTED_EXIT_CODE\n"
        "m.main = interrupted\n"
        "m.run()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == INTERRUPTED_EXIT_CODE, run.stderr
    assert run.stdout == "buffered, no newline"
    assert "teardown ran" not in run.stderr


def _check_restorable(folder: Path) -> None:
    import orbax.checkpoint as ocp

    from nest_jax.train import integrity

    with ocp.StandardCheckpointer() as reader:
        state = reader.restore(folder / "default")  # without a target: named tuples come back as dicts
    saved = json.loads(next((folder / "checksums").glob("*")).read_text())
    _, sums = integrity.finite_and_checksums(state)
    assert sorted(int(s) for s in np.asarray(sums)) == sorted(saved["sums"].values())


# ---- 9: evaluation beside a training run ----

_SAVER = """
import sys, time, jax.numpy as jnp
from nest_jax.train.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], max_to_keep=1)
state = {"step": jnp.zeros((), jnp.int32), "params": {f"w{i}": jnp.full((256, 256), 1.0 + i) for i in range(8)}}
for step in range(1, 1_000_000):
    ckpt.save(step, dict(state, step=jnp.asarray(step, jnp.int32)))
    if step == 1:
        ckpt.wait()
        print("saved", flush=True)
    time.sleep(0.01)
"""


def test_evaluation_beside_a_run_that_keeps_one_checkpoint_always_reads_the_newest(tmp_path, capfd, caplog):
    """With a run saving every few ms and keeping one checkpoint (`max_to_keep=1`), evaluation
    listed a step that was deleted while it was read: "no readable checkpoint", or a traceback
    from orbax's listing. For 30 s of reads (at most 30): each read returns a whole checkpoint or,
    when the run replaced it `retries` times in a row, the documented one-line UserError; nothing
    else. The run must win some races (re-reads logged) and lose some (distinct steps returned):
    how many of each depends on the machine's speed, so neither is counted exactly."""
    saver = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(tmp_path)], cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True
    )
    caplog.set_level("INFO", logger="nest_jax.train.checkpoint")
    try:
        assert saver.stdout.readline().startswith("saved")
        abstract = {
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "params": {f"w{i}": jax.ShapeDtypeStruct((256, 256), jnp.float32) for i in range(8)},
        }
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: one, abstract)
        steps, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline and len(steps) < 30:
            ckpt = Checkpointer(tmp_path, create=False)  # as --mode=eval does
            try:
                found = ckpt.restore_latest(abstract, shardings, set_aside=False, retries=20)
            except UserError as e:
                assert "were replaced 21 times while being read" in str(e)
                continue
            finally:
                ckpt.close(quiet=True)
            assert found is not None
            step, state = found
            assert int(state["step"]) == step and float(state["params"]["w3"][0, 0]) == 4.0
            steps.append(step)
        assert saver.poll() is None and len(set(steps)) > 1  # the run kept saving throughout
    finally:
        saver.kill()
        saver.wait()
    assert any("changed while it was read" in r.getMessage() for r in caplog.records)  # races happened
    assert "Traceback" not in capfd.readouterr().err


def test_evaluation_lists_again_when_a_step_lands_after_its_listing(tmp_path):
    """A listing that holds none of the finished steps (taken before the run's save landed, or while
    it renamed the new step into place and deleted the old one) made evaluation report "no
    checkpoint" beside a run that had one; it now lists again. A workdir that has none still has none."""
    state = {"step": jnp.asarray(1, jnp.int32), "params": {"w": jnp.full((4, 4), 4.0)}}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: one, abstract)
    run = Checkpointer(tmp_path, max_to_keep=1)
    reader = Checkpointer(tmp_path, create=False)  # lists the (empty) folder now, as --mode=eval does
    try:
        assert reader.restore_latest(abstract, shardings, set_aside=False) is None
        run.save(1, state)
        run.wait()
        step, restored = reader.restore_latest(abstract, shardings, set_aside=False)
        assert step == 1 and float(restored["params"]["w"][0, 0]) == 4.0
    finally:
        reader.close(quiet=True)
        run.close(quiet=True)


# ---- 11: a full disk at the workdir's own files ----


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs and a function leaving exactly `pages` free memory pages on it."""
    with tmpfs(tmp_path, "1m") as mnt:
        yield _filler(mnt)


def _filler(mnt: Path):
    page = os.sysconf("SC_PAGE_SIZE")

    def leave_free(pages: int) -> Path:
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * page):
                pass
        except OSError:  # ENOSPC: the disk is full
            pass
        finally:
            os.close(fd)
        os.truncate(filler, (os.stat(filler).st_size // page - pages) * page)
        return mnt / "run"

    return leave_free


def _pages(text: str) -> int:
    return -(-len(text.encode()) // os.sysconf("SC_PAGE_SIZE"))


@pytest.mark.parametrize("target", ["config.json", "params.txt"])
def test_a_full_disk_at_the_workdirs_files_is_one_line(small_disk, target):
    """config.json or params.txt on a full disk was an OSError traceback (exit 1)."""
    cfg = tiny_config(num_train_steps=2)
    cfg.mode = "train"
    # The lock takes one page; then config.json fits or not; params.txt comes next.
    work = small_disk(1 if target == "config.json" else 1 + _pages(cfg.to_json_best_effort(indent=2)))
    from tests._train_helpers import SyntheticData

    with pytest.raises(UserError) as info:
        train_and_evaluate(cfg, work, data=SyntheticData())
    msg = str(info.value)
    assert msg.startswith(f"cannot write {work / target}: No space left on device; free space") and "\n" not in msg
    assert not (work / LOCK_NAME).exists() and not list(work.glob("*.tmp"))


def test_a_full_disk_at_the_event_file_and_metrics_is_one_line(small_disk, capfd):
    """The TensorBoard writer's thread died with a traceback on a full disk (and then blocked on its
    full queue); metrics.jsonl raised OSError. Now the flush is one UserError line, and closing
    after it raises nothing."""
    work = small_disk(0)
    work.mkdir()
    writer = MetricWriter(work)
    writer.write(1, {"loss": 0.5, "picture": np.zeros((4, 4, 3), np.uint8)[None]})
    with pytest.raises(UserError, match=rf"^cannot write {work}.*: No space left on device; free space"):
        writer.flush()
    writer.close(quiet=True)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow  # one CLI process up to config.json: ~10 CPU-s
def test_the_command_line_on_a_full_disk_exits_2_with_one_line(small_disk):
    work = small_disk(1)
    proc = _start_main(work, "train.num_train_steps=4")
    _, err = _finish(proc, 300)
    assert proc.returncode == USAGE_EXIT_CODE, err[-3000:]
    lines = _message_lines(err)
    assert lines == [
        f"nest_jax.main: error: cannot write {work}/config.json: No space left on device; free space and "
        "rerun (training resumes from the last checkpoint)"
    ], err[-3000:]
