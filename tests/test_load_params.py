"""`nest_jax.load_params` / `load_into`: the one weights loader, checked against the training system's
own `Checkpointer` restore (bit-exact), a convert output's source model and timm's forward pass."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import nest_jax
from nest_jax.convert import Weights, load_into, save_params
from nest_jax.errors import UserError
from nest_jax.models import create_model
from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.loop import train_and_evaluate
from nest_jax.train.sharding import make_mesh, path_str
from nest_jax.train.trainer import build_model, make_trainer
from tests._train_helpers import SyntheticData, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A real training workdir: 4 steps of the tiny ViT (with EMA), checkpoints at steps 2 and 4."""
    path = tmp_path_factory.mktemp("run")
    cfg = tiny_config(num_train_steps=4, checkpoint_every_steps=2, log_every_steps=100)
    train_and_evaluate(cfg, path, data=SyntheticData())
    return path, cfg


def _restored(path, cfg, step):
    """The whole train state of checkpoint `step` as the training system restores it, flattened."""
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tr = make_trainer(cfg, mesh, num_classes=4, num_train_steps=cfg.train.num_train_steps, warmup_steps=2)
    ckpt = Checkpointer(path, create=False)
    state = ckpt.restore(tr.abstract_state, tr.state_shardings, step=step)
    ckpt.close()
    return {
        k: {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
        for k, t in state.items()
        if isinstance(t, dict)
    }


def _assert_same(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k


def test_workdir_weights_equal_the_checkpointers_restore(workdir):
    """Latest, a given step and the EMA: the exact arrays the trainer would resume from."""
    path, cfg = workdir
    latest = nest_jax.load_params(path)
    assert latest.step == 4 and latest.source == "nest_jax" and latest.batch_stats == {}
    _assert_same(latest.params, _restored(path, cfg, 4)["params"])
    early = nest_jax.load_params(str(path), step=2)
    state2 = _restored(path, cfg, 2)
    assert early.step == 2
    _assert_same(early.params, state2["params"])
    _assert_same(nest_jax.load_params(path, step=2, ema=True).params, state2["ema"])
    assert not np.array_equal(state2["ema"]["head/kernel"], state2["params"]["head/kernel"])  # a real EMA


def test_load_into_a_model_gives_the_workdirs_params_and_the_analyze_step(workdir):
    from nest_jax.analyze.__main__ import load_checkpoint

    path, cfg = workdir
    model = build_model(cfg, 4, nnx.Rngs(params=5, dropout=6))
    assert load_checkpoint(model, "nest_jax", str(path), "A") == 4
    have = {path_str(k): np.asarray(v[...]) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    _assert_same(have, _restored(path, cfg, 4)["params"])


def test_missing_step_path_and_ema_are_one_line_user_errors(workdir, tmp_path):
    """Old code: `init_from.use_ema` on a state without EMA silently loaded the raw parameters."""
    path, _ = workdir
    with pytest.raises(UserError, match=r"no checkpoint of step 3; its checkpoints are steps \[2, 4\]") as e:
        nest_jax.load_params(path, step=3)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="nowhere does not exist"):
        nest_jax.load_params(tmp_path / "nowhere")
    cfg = tiny_config()
    cfg.optimizer.ema_decay = 0.0
    tr = make_trainer(
        cfg, make_mesh({"data": 1}, devices=jax.devices()[:1]), num_classes=4, num_train_steps=3, warmup_steps=0
    )
    ckpt = Checkpointer(tmp_path / "no_ema", async_save=False)
    ckpt.save(3, tr.init_state())
    ckpt.close()
    with pytest.raises(UserError, match="holds no EMA parameters") as e:
        nest_jax.load_params(tmp_path / "no_ema", ema=True)
    assert "\n" not in str(e.value)
    from nest_jax.train.init_from import initialize_from

    cfg.init_from.update(dict(checkpoint=str(tmp_path / "no_ema"), source="nest_jax", use_ema=True))
    with pytest.raises(UserError, match=r"--config\.init_from\.checkpoint: .*holds no EMA parameters"):
        initialize_from(cfg, tr, tr.init_state(), num_classes=4)


def test_convert_output_round_trip(tmp_path):
    src = create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, num_classes=3, rngs=nnx.Rngs(3))
    kwargs = dict(img_size=16, patch_size=8, depth=1, num_classes=3)
    save_params(src, tmp_path / "out", model_name="vit_tiny_patch16_224", model_kwargs=kwargs)
    weights = nest_jax.load_params(tmp_path / "out")
    assert weights.step is None and weights.model == "vit_tiny_patch16_224" and weights.model_kwargs == kwargs
    dst = weights.new_model(rngs=nnx.Rngs(9))
    assert nest_jax.load_into(dst, weights) == []
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(dst(x)), np.asarray(src(x)))
    with pytest.raises(UserError, match="no training steps or EMA"):
        nest_jax.load_params(tmp_path / "out", step=1)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_file_is_detected_and_gives_timms_logits(tmp_path, suffix):
    import timm
    import torch

    torch.manual_seed(0)
    ref = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, depth=1, num_classes=5
    ).eval()
    with torch.no_grad():
        for p in ref.parameters():  # timm's zero biases / unit norms would hide a swapped scale or bias
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    file = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save(ref.state_dict(), file)
    else:
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(file))
    model = create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, num_classes=5, rngs=nnx.Rngs(0))
    with pytest.raises(UserError, match="pass model="):
        nest_jax.load_params(file)
    weights = nest_jax.load_params(file, model=nnx.eval_shape(lambda: model))
    assert weights.source == "timm" and isinstance(weights, Weights)
    assert load_into(model, weights) == []
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x).numpy()
    got = np.asarray(model(x.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_the_convert_layer_loads_a_workdir_without_the_training_system(workdir):
    path, cfg = workdir
    code = (
        "import sys, nest_jax.convert as c\n"
        f"w = c.load_params({str(path)!r}, ema=True)\n"
        "print(w.step, len(w.params), sorted(m for m in sys.modules if m.startswith('nest_jax.train')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split(maxsplit=2) == ["4", str(len(_restored(path, cfg, 4)["params"])), "[]\n"]


def test_fid_classifier_reads_the_workdirs_ema_through_the_loader(workdir):
    """The FID feature extractor of a classifier workdir: its EMA parameters, restored independently."""
    from nest_jax.analysis.fid import classifier_from_workdir
    from nest_jax.convert import assign_params
    from nest_jax.data.preprocess import mean_std

    path, cfg = workdir
    extract = classifier_from_workdir(str(path), use_ema=True)
    model = build_model(cfg, 4, nnx.Rngs(0))
    assign_params(model, _restored(path, cfg, 4)["ema"])
    mean, std = (np.asarray(v, np.float32) for v in mean_std(cfg.dataset))
    images = np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    want = model(((images + 1) / 2 - mean) / std, capture="pre_logits")[1]["pre_logits"]
    np.testing.assert_allclose(np.asarray(extract(images)), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_loading_a_workdir_prints_nothing_of_orbax(workdir):
    """A user sees only nest_jax's own lines: no orbax "Item ... could not be restored" warnings for
    the parts of the train state the loader leaves out, no sharding UserWarning (a fresh process,
    so absl and `warnings` print as they would for a user)."""
    path, _ = workdir
    code = "import sys, nest_jax; w = nest_jax.load_params(sys.argv[1]); print('step', w.step)"
    out = subprocess.run([sys.executable, "-W", "default", "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["step", "4"], out.stderr[-2000:]
    noise = [line for line in out.stderr.splitlines() if "could not be restored" in line or "Warning" in line]
    assert not noise, noise
