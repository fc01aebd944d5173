"""Evaluators chosen from config.evals, the TF-free writers and the progress line."""

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nest_jax.errors import UserError
from nest_jax.train import evaluators
from nest_jax.train.evaluators import get_evaluator, register_evaluator
from nest_jax.train.evaluators.classification import ClassificationEvaluator
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.writers import MetricWriter, Progress
from tests._train_helpers import SyntheticData, tiny_config


def test_registry_finds_builtin_kinds_lists_known_ones_and_loads_plugins_lazily(tmp_path, monkeypatch):
    assert get_evaluator("classification") is ClassificationEvaluator
    (tmp_path / "my_plugin_evals.py").write_text(
        textwrap.dedent("""
        from nest_jax.train.evaluators import register_evaluator
        @register_evaluator("plugin_kind")
        class PluginEvaluator:
            pass
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(evaluators, "PLUGIN_MODULES", ("my_plugin_evals",))
    assert "my_plugin_evals" not in sys.modules
    assert get_evaluator("plugin_kind").__name__ == "PluginEvaluator"  # imported on demand
    with pytest.raises(UserError, match=r"unknown evaluator kind 'plugin_knd'; did you mean plugin_kind\?"):
        get_evaluator("plugin_knd")
    # A plugin that fails on its own missing import is an error, not silently skipped.
    (tmp_path / "broken_plugin_evals.py").write_text("import this_dependency_is_missing\n")
    monkeypatch.setattr(evaluators, "PLUGIN_MODULES", ("broken_plugin_evals",))
    with pytest.raises(ModuleNotFoundError, match="this_dependency_is_missing"):
        get_evaluator("still_unknown")


def test_an_unknown_evaluator_setting_is_one_line_naming_the_close_match_and_the_valid_ones(tmp_path):
    """Settings are keyword arguments: a misspelt key fails at build time (the old registry passed
    the whole cfg dict through and the misspelt key was silently ignored)."""
    cfg = tiny_config()
    cfg.evals.val.batch_sise = 8
    with pytest.raises(UserError) as e:
        train_and_evaluate(cfg, tmp_path, data=SyntheticData())
    msg = str(e.value)
    assert "\n" not in msg and "config.evals.val: unknown setting 'batch_sise'" in msg
    assert "did you mean batch_size?" in msg and "valid settings: split, batch_size, max_batches" in msg


@register_evaluator("test_probe")
class ProbeEvaluator:
    """Returns a scalar (the step) and an image (a gradient), to check how results are written."""

    def __init__(self, model_fn, data):
        pass

    def run(self, state, step):
        img = np.linspace(0, 1, 4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
        return {"step": float(step), "image": img}


def test_evals_from_config_run_on_their_schedule_and_are_written(tmp_path):
    cfg = tiny_config(num_train_steps=4, checkpoint_every_steps=0, eval_every_steps=2)
    cfg.evals.train_set = dict(kind="classification", split="train", every_steps=0, prefix="train_set_")
    cfg.evals.probe = dict(kind="test_probe", every_steps=0, prefix="probe_")
    data = SyntheticData()
    out = train_and_evaluate(cfg, tmp_path, data=data)
    # val every 2 steps (split not passed: the default), train_set and probe only at the end.
    # Each pass twice (params, then EMA); at the end the entries run in name order: train_set, val.
    assert data.eval_splits == [None, None, "train", "train", None, None]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in rows if "eval_top1" in r]
    assert val_steps == [2, 4] and [r["step"] for r in rows if "probe_step" in r] == [4]
    assert out["eval_count"] == 20 and out["eval_ema_count"] == 20  # padding of 20 -> 24 excluded
    assert 0 <= out["train_set_top1"] <= 1 and out["probe_step"] == 4.0 and "probe_image" not in out
    assert any("train_loss" in r for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert [e.step for e in acc.Scalars("eval_top1")] == [2, 4]
    assert acc.Scalars("eval_top1")[-1].value == pytest.approx(out["eval_top1"])
    image = acc.Images("probe_image")[0]
    assert (image.width, image.height, image.step) == (6, 4, 4)
    # Patch embed 4*4*3*16+16, cls 16, pos 5*16, block 2224, norm 32, head 16*4+4: 3,204 parameters.
    assert "3,204" in (tmp_path / "params.txt").read_text()


def test_metric_writer_scalars_and_images_read_back(tmp_path):
    w = MetricWriter(tmp_path)
    w.write(3, {"a": 0.5, "b": np.float32(2.0), "img": np.zeros((2, 5, 7, 3), np.uint8)})
    w.close()
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 3, "a": 0.5, "b": 2.0}
    ]
    w = MetricWriter(tmp_path)  # a resumed run appends
    w.write(4, {"a": 0.25})
    w.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    MetricWriter(tmp_path / "off", enabled=False).write(1, {"a": 1.0})
    assert not (tmp_path / "off").exists()


def test_progress_line_reports_rate_and_time_left(monkeypatch):
    clock = iter([100.0, 104.0, 110.0])
    monkeypatch.setattr("nest_jax.train.writers.time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    p = Progress(10, 0, stream=out)  # t=100
    p.update(2, {"loss": 1.23456, "accuracy": 0.5, "lr": 1e-3})  # t=104: 2 steps in 4 s
    p.update(5, {"loss": 1.0})  # t=110: 3 steps in 6 s, 5 left -> 10 s
    lines = out.getvalue().splitlines()
    assert lines[0] == "step 2/10  loss 1.2346  accuracy 0.500  lr 0.001  0.50 steps/s  ETA 0:16"
    assert lines[1] == "step 5/10  loss 1.0000  0.50 steps/s  ETA 0:10"


def test_the_training_loop_does_not_import_tensorflow():
    code = (
        "import sys, nest_jax.train.loop, nest_jax.train.writers, nest_jax.train.evaluators; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu.metric_writers')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
