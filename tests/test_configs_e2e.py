"""Every shipped config (configs/*.py, each get_config argument) trains 2 steps end to end through
`train_and_evaluate` — the real `nest_jax.data` pipeline on data written for the test, the
config's own augmentation, mixup/CutMix, distillation teacher, fine-tuning checkpoint and EMA —
then evaluates and checkpoints.

What is made small, and why (the sizes are irrelevant to what is tested: that each config's
pieces fit together and run):
- images, batches, steps: `tests._configs.config_for_test` (32 px, batch 8, 2 steps);
- the students of the `small`/`base` arguments get tiny widths and depths (`SHRINK`): compiling a
  20-layer NesT-S/B or a 768-wide DeiT-B dominates the run time otherwise. Each keeps its family,
  its prefix tokens (DeiT `cls`/`dist`), its attention kind (the CIFAR NesTs' multi-query) and its
  hierarchy (the level count, hence block aggregation at every level);
- distillation teachers are random, written by the test in the format the config names
  (`source`), at tiny sizes where the config's teacher is big (NesT-B → `SHRINK`);
- configs/vit_b16_finetune_384.py: both the model and the Google `.npz` it fine-tunes from are a
  2-layer, 32-wide ViT with patch 16 (ViT-B/16 has 86M parameters); the `.npz` is written at 16 px
  with 7 classes, so loading it resizes the position table (1×1 → 2×2 patches) and re-initializes
  the head, as fine-tuning ImageNet-21k weights at 384 px does.
Even so, 20 runs cost ~320 CPU-seconds (each compiles its own init/train/eval programs and
orbax-saves over 8 simulated devices), hence `slow`.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np
import pytest
from flax import nnx

from nest_jax.train import loop
from tests._configs import CONFIG_ARGS, config_for_test

# Tiny widths/depths for every student but the digits ones (already small), per model name.
_NEST = dict(dims=(16, 32, 64), depths=(1, 1, 2), heads=(1, 2, 4))  # 3 levels, as the ImageNet NesTs
_NEST_CIFAR = dict(dims=(32,) * 4, depths=(1,) * 4, heads=(2,) * 4)  # 4 levels, as the CIFAR NesTs
_DEIT = dict(dim=32, depth=2, num_heads=2, mlp_dim=64)
SHRINK = {}
for _size in ("tiny", "small", "base"):
    SHRINK[f"nest_{_size}"] = _NEST
    SHRINK[f"nest_{_size}_cifar"] = _NEST_CIFAR
    for _suffix in ("", "_distilled"):
        SHRINK[f"deit_{_size}{_suffix}_patch16_224"] = _DEIT
TINY_VIT = dict(dim=32, depth=2, num_heads=2, mlp_dim=64)

NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet2012": 1000, "image_folder": 2}
# Eval examples: digits' documented test split; the tfds splits and image folder written by
# tests/_configs.py (12 records; 2 classes × 3 images).
NUM_EVAL = {"digits": 450, "cifar10": 12, "cifar100": 12, "imagenet2012": 12, "image_folder": 6}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")  # shared: each dataset is written once


def _flat(tree) -> dict[str, np.ndarray]:
    from nest_jax.train.sharding import path_str

    return {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


class Recorder:
    """Wraps the trainer the loop builds: records each step's loss, the parameters before the first
    step and after the last, the teachers' parameters, and (with teachers) the first step's loss
    again with every teacher parameter zeroed — same compiled step, same state and batch."""

    def __init__(self, monkeypatch):
        self.losses: list[float] = []
        self.initial = self.final = self.teachers = None
        self.loss_zero_teachers = None
        real = loop.make_trainer

        def make_trainer(*args, **kwargs):
            trainer = real(*args, **kwargs)
            return dataclasses.replace(trainer, train_step=self._wrap(trainer.train_step))

        monkeypatch.setattr(loop, "make_trainer", make_trainer)

    def _wrap(self, step):
        def train_step(state, batch, rest, teacher_params):
            first = not self.losses
            if first:
                self.initial = _flat(state["params"])  # host copies: the step donates its state
                self.teachers = {t: _flat(p) for t, (p, _) in teacher_params.items()}
                replay = jax.tree.map(lambda x: x.copy(), state) if teacher_params else None
            new, metrics = step(state, batch, rest, teacher_params)
            self.losses.append(float(metrics["loss"]))
            if first and teacher_params:
                zeroed = {t: (jax.tree.map(lambda x: x * 0, p), r) for t, (p, r) in teacher_params.items()}
                self.loss_zero_teachers = float(step(replay, batch, rest, zeroed)[1]["loss"])
            self.final = _flat(new["params"])
            return new, metrics

        return train_step


def _shrink(config) -> None:
    if config.dataset.name != "digits" and config.model.name in SHRINK:
        config.model.overrides.update(SHRINK[config.model.name])


def _random_teacher(config, token: str, out_dir: str) -> dict[str, np.ndarray]:
    """Writes a random teacher of the architecture `config.distill[token]` names, in its source's
    format, points the config at it and returns its parameters ({path: array})."""
    from nest_jax.models import create_model

    t = config.distill[token]
    if config.dataset.name != "digits" and t.model in SHRINK:
        t.overrides.update(SHRINK[t.model])
    kw = dict(t.overrides)
    kw.setdefault("in_chans", int(config.dataset.num_channels))
    img = t.img_size or config.model.img_size or config.dataset.image_size
    num_classes = NUM_CLASSES[config.dataset.name]
    model = create_model(t.model, num_classes=num_classes, img_size=img, rngs=nnx.Rngs(123), **kw)
    if t.source == "nest_jax":
        from nest_jax.convert.checkpoint import save_params

        path = os.path.join(out_dir, f"teacher_{token}")
        save_params(model, path, model_name=t.model, model_kwargs=dict(kw, num_classes=num_classes, img_size=img))
    elif t.source == "nest_official":
        from nest_jax.convert.nest import params_to_official_nest

        path = os.path.join(out_dir, f"teacher_{token}.npz")
        np.savez(path, **_flat(params_to_official_nest(model)))
    else:
        raise AssertionError(f"no writer for teacher source {t.source!r}: add one to this test")
    t.checkpoint = path
    return _flat(nnx.state(model, nnx.Param))


def _finetune_checkpoint(config, out_dir: str) -> dict[str, np.ndarray]:
    """A tiny Google-style ViT `.npz` (16 px, 7 classes) for `config.init_from`; returns it."""
    from nest_jax.convert.vit_npz import params_to_vit_npz
    from nest_jax.models import create_model

    config.model.overrides.update(TINY_VIT)
    kw = {k: v for k, v in config.model.overrides.items() if k != "dtype"}
    model = create_model(config.model.name, num_classes=7, img_size=16, rngs=nnx.Rngs(5), **kw)
    npz = params_to_vit_npz(model)
    path = os.path.join(out_dir, "vit_tiny.npz")
    np.savez(path, **npz)
    config.init_from.checkpoint = path
    return npz


def _train(config_file: str, arg, data_dir, tmp_path, monkeypatch) -> None:
    config = config_for_test(config_file, arg, data_dir)
    _shrink(config)
    out = tmp_path / str(arg)
    out.mkdir()
    teachers = {t: _random_teacher(config, t, str(out)) for t in config.distill}
    npz = _finetune_checkpoint(config, str(out)) if config.init_from.get("source") == "vit_npz" else None
    rec = Recorder(monkeypatch)
    workdir = str(out / "work")
    result = loop.train_and_evaluate(config, workdir)

    name, k = config.dataset.name, NUM_CLASSES[config.dataset.name]
    # Reached step 2 with a finite loss at every step.
    assert result["step"] == 2 and len(rec.losses) == 2, (result, rec.losses)
    assert all(math.isfinite(v) for v in rec.losses), rec.losses
    # A fresh classifier predicts near-uniformly, so its loss (also with mixed, smoothed targets
    # and the teacher's hard label) starts near ln K: a wrong class count or targets that do not
    # sum to 1 would move it.
    assert abs(rec.losses[0] - math.log(k)) < 1.0, (rec.losses, math.log(k))
    # The final evaluation ran over every eval example (padding masked out), EMA too if kept.
    assert result["eval_count"] == NUM_EVAL[name], result
    assert 0.0 <= result["eval_top1"] <= 1.0 and math.isfinite(result["eval_loss"]), result
    if config.optimizer.ema_decay:
        assert result["eval_ema_count"] == NUM_EVAL[name], result
    # The step-2 checkpoint exists and holds the trained parameters.
    import nest_jax

    saved = nest_jax.load_params(workdir).params
    assert "2" in os.listdir(os.path.join(workdir, "checkpoints"))
    assert saved.keys() == rec.final.keys()
    for p, v in rec.final.items():
        np.testing.assert_array_equal(saved[p], v, err_msg=p)
    assert any(not np.array_equal(rec.initial[p], v) for p, v in rec.final.items())  # it trained
    # Distillation: the teacher written above is the one the step runs, and its logits are in the
    # loss (zeroing its parameters changes the first step's loss).
    for token, params in teachers.items():
        loaded = rec.teachers[token]
        assert loaded.keys() == params.keys()
        for p, v in params.items():
            np.testing.assert_array_equal(loaded[p], v, err_msg=f"teacher {token}: {p}")
    if teachers:
        assert abs(rec.loss_zero_teachers - rec.losses[0]) > 1e-3, (rec.loss_zero_teachers, rec.losses)
    # Fine-tuning: the first step starts from the .npz (Google names mapped to ours); the position
    # table's 1×1 patch grid is spread over 2×2; the 7-class head is replaced by a fresh 1000-class
    # one, zero-initialized as Google's ViT code does.
    if npz is not None:
        first = rec.initial
        np.testing.assert_array_equal(first["patch_embed/proj/kernel"], npz["embedding/kernel"])
        np.testing.assert_array_equal(
            first["layers/1/mlp/fc2/kernel"], npz["Transformer/encoderblock_1/MlpBlock_0/Dense_1/kernel"]
        )
        pos, src = first["pos_embed"], npz["Transformer/posembed_input/pos_embedding"]
        assert pos.shape == (1, 1 + 4, 32) and src.shape == (1, 1 + 1, 32)
        np.testing.assert_array_equal(pos[:, 0], src[:, 0])
        np.testing.assert_allclose(pos[0, 1:], np.repeat(src[0, 1:], 4, axis=0), rtol=1e-6)
        assert first["head/kernel"].shape == (32, k) and not first["head/kernel"].any()
        assert rec.losses[0] == pytest.approx(math.log(k), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("config_file", sorted(CONFIG_ARGS))
def test_config_trains_evaluates_and_checkpoints(config_file, data_dir, tmp_path, monkeypatch):
    for arg in CONFIG_ARGS[config_file]:
        with monkeypatch.context() as m:
            _train(config_file, arg, data_dir, tmp_path, m)
