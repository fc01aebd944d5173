"""`nest_jax.create_model(name, pretrained=...)`: timm's Hub releases read offline from a Hugging Face
cache laid out as the hub lays it out (blobs, snapshots/<rev>, refs/main), written here from random
timm weights; logits equal timm's on the same weights (float32, <= 1e-5) for ViT, distilled DeiT
(both heads), NesT (`nest_*_jx`) and ResNet-50, and for a bfloat16 file. The hub-id table is checked
against timm's own `pretrained_cfg`s. Smallest variants (1-layer, 32 px) keep each test seconds."""

import hashlib
import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import timm
import torch
from etils import epath
from flax import nnx
from safetensors.torch import save_file

import nest_jax
from nest_jax.convert import hub
from nest_jax.convert.hub_table import GCS, TIMM
from nest_jax.errors import UserError
from tests.test_timm_parity import forward, forward_eval_and_train, randomize

TOL = 1e-5
REV = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache, hub_id: str, state_dict: dict) -> None:
    """The hub's cache layout: the file is a blob named by its hash, linked from snapshots/<rev>/."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    tmp = repo / "model.tmp"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp))
    blob = repo / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(blob)
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def inputs(size: int):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return x, jnp.asarray(x.numpy().transpose(0, 2, 3, 1))


def timm_model(name: str, **kw):
    torch.manual_seed(0)
    if name.startswith("nest_"):  # timm's nest factories fix the depths: the class takes them
        from timm.models.nest import Nest

        kw = dict(embed_dims=(96, 192, 384), num_heads=(3, 6, 12), pad_type="same", drop_path_rate=0.0, **kw)
        return randomize(Nest(**kw).eval())
    return randomize(timm.create_model(name, pretrained=False, **kw).eval())


@pytest.mark.parametrize(
    "name, timm_kw, ours_kw",
    [
        ("vit_tiny_patch16_224", dict(img_size=32, depth=1), dict(img_size=32, depth=1)),
        ("nest_tiny", dict(img_size=32, depths=(1, 1, 1)), dict(img_size=32, depths=(1, 1, 1))),
        ("resnet50", dict(layers=(1, 1, 1, 1)), dict(layers=(1, 1, 1, 1))),
    ],
)
def test_pretrained_true_reads_the_cache_offline_and_gives_timms_logits(cache, name, timm_kw, ours_kw):
    src = hub.resolve(name)
    arch = src.location.split("/")[1].split(".")[0]
    tm = timm_model(arch, **timm_kw)
    put_in_cache(cache, src.location, tm.state_dict())
    model = nest_jax.create_model(name, pretrained=True, **ours_kw)
    x_t, x_j = inputs(32 if name != "resnet50" else 64)
    with torch.no_grad():
        ref = tm(x_t).numpy()
    out = np.asarray(forward(model, x_j))
    np.testing.assert_allclose(out, ref, rtol=0, atol=TOL)
    assert np.abs(ref).max() > 0.1


def test_distilled_deit_both_heads_and_a_bfloat16_file(cache, monkeypatch):
    tm = timm_model("deit_tiny_distilled_patch16_224", img_size=32, depth=1)
    with torch.no_grad():  # the bf16 file holds these values; the float32 model below gets them exactly
        for p in tm.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    put_in_cache(
        cache,
        "timm/deit_tiny_distilled_patch16_224.fb_in1k",
        {k: v.to(torch.bfloat16) for k, v in tm.state_dict().items()},
    )
    with monkeypatch.context() as m:  # no torch at run time: any `import torch` fails here
        m.setitem(sys.modules, "torch", None)
        model = nest_jax.create_model("deit_tiny_distilled_patch16_224", pretrained="fb_in1k", img_size=32, depth=1)
    assert model.cls_token[...].dtype == jnp.float32
    x_t, x_j = inputs(32)
    with torch.no_grad():
        ref = tm(x_t).numpy()
        f = tm.forward_features(x_t)
        want = {"cls": tm.head(f[:, 0]).numpy(), "dist": tm.head_dist(f[:, 1]).numpy()}
    out, (out_train, recorded) = forward_eval_and_train(model, x_j)  # no dropout: train mode is deterministic
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(out_train), ref, rtol=0, atol=TOL)
    got = recorded["heads"]
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=0, atol=TOL)
    assert np.abs(want["cls"] - want["dist"]).max() > 0.1


def test_other_class_count_and_size_keep_a_fresh_head_and_resize_once(cache, caplog):
    tm = timm_model("vit_tiny_patch16_224", img_size=32, depth=1)
    put_in_cache(cache, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", tm.state_dict())
    with caplog.at_level(logging.INFO, logger="nest_jax"):
        model = nest_jax.create_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", num_classes=7, img_size=48, depth=1)
    assert model.head.kernel.shape == (192, 7) and model.pos_embed.shape == (1, 10, 192)
    np.testing.assert_array_equal(np.asarray(model.cls_token[...]), tm.cls_token.detach().numpy())
    messages = [r.getMessage() for r in caplog.records]
    for change in ("resized pos_embed", "re-initializing head/kernel", "re-initializing head/bias"):
        assert sum(change in m for m in messages) == 1, (change, messages)


def test_missing_cache_entry_offline_is_one_line_naming_the_hub_id(cache):
    cache.mkdir()
    with pytest.raises(UserError) as e:
        nest_jax.create_model("deit_tiny_patch16_224", pretrained=True, img_size=32, depth=1)
    msg = str(e.value)
    assert "\n" not in msg and "timm/deit_tiny_patch16_224.fb_in1k" in msg
    assert "hf download timm/deit_tiny_patch16_224.fb_in1k model.safetensors" in msg and str(cache) in msg


def test_truncated_cache_file_and_unknown_tag_are_one_line(cache):
    tm = timm_model("vit_tiny_patch16_224", img_size=32, depth=1)
    put_in_cache(cache, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", tm.state_dict())
    hub_id = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    # The walk used for a gs:// cache (here on a local folder) finds what huggingface_hub finds.
    walked = hub._remote_cache_file(epath.Path(cache), hub_id, "model.safetensors", "fill it")
    assert walked.resolve() == hub.hub_file(hub_id).resolve()
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        hub._remote_cache_file(epath.Path(cache), "timm/other", "model.safetensors", "fill it")
    blob = next((cache / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "blobs").iterdir())
    blob.write_bytes(blob.read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated or corrupt") as e:
        nest_jax.create_model("vit_tiny_patch16_224", pretrained=True, img_size=32, depth=1)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="neither a tag of vit_tiny_patch16_224.*augreg_in21k_ft_in1k"):
        nest_jax.create_model("vit_tiny_patch16_224", pretrained="augreg_nope")


def test_official_nest_clu_folder_by_path(tmp_path):
    """A clu checkpoint folder (`ckpt-<n>.flax`, msgpack training state) reads as official NesT."""
    from flax import serialization

    from nest_jax.convert.nest import params_to_official_nest
    from nest_jax.models import create_model

    kw = dict(img_size=32, depths=(1, 1, 1), num_classes=10, drop_rate=0.0, attn_drop_rate=0.0)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: create_model("nest_tiny", rngs=nnx.Rngs(3), **kw)))
    rng = np.random.default_rng(3)  # random values everywhere (a real init compiles per shape: slow)
    fill = lambda x: (
        jax.random.key(0)
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        else jnp.asarray(  # noqa: E731
            rng.normal(0, 0.2, x.shape).astype(x.dtype) if x.dtype.kind == "f" else np.zeros(x.shape, x.dtype)
        )
    )
    src = nnx.merge(graphdef, jax.tree.map(fill, state))
    state = {"optimizer": {"target": params_to_official_nest(src)}, "step": np.asarray(5)}
    folder = tmp_path / "nest-t_imagenet"
    folder.mkdir()
    (folder / "ckpt-1.flax").write_bytes(b"\x80")  # older and damaged: the newest is read
    (folder / "ckpt-12.flax").write_bytes(serialization.msgpack_serialize(state))
    model = nest_jax.create_model("nest_tiny", pretrained=str(folder), img_size=32, depths=(1, 1, 1))
    assert model.head.kernel.shape == (384, 10)  # the checkpoint's class count
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(forward(model, x)), np.asarray(forward(src, x)))
    (folder / "ckpt-12.flax").write_bytes(serialization.msgpack_serialize(state)[:300])
    with pytest.raises(UserError, match="not a readable msgpack checkpoint"):
        nest_jax.create_model("nest_tiny", pretrained=str(folder), img_size=32, depths=(1, 1, 1))


def test_hub_table_matches_timms_pretrained_cfgs():
    from timm.models import get_arch_pretrained_cfgs

    for name, (arch, table) in TIMM.items():
        cfgs = {tag.split(".", 1)[1]: cfg for tag, cfg in get_arch_pretrained_cfgs(arch).items() if cfg.hf_hub_id}
        assert list(table) == list(cfgs), name  # every release, timm's default first
        for tag, (classes, size, (mean, std)) in table.items():
            cfg = cfgs[tag]
            assert cfg.hf_hub_id == hub.resolve(name, tag).location == f"timm/{arch}.{tag}"
            assert (classes, size, tuple(mean), tuple(std)) == (
                cfg.num_classes,
                cfg.input_size[1],
                tuple(cfg.mean),
                tuple(cfg.std),
            )
            url = GCS.get(name, {}).get(f"gcs_{tag}", (None,))[0]
            if cfg.url and cfg.url.startswith("https://storage.googleapis.com/vit_models/"):
                assert url == cfg.url.replace("https://storage.googleapis.com/", "gs://")
    # Every registered model whose timm architecture has released weights is in the table.
    for name in nest_jax.list_models():
        arch = f"{name}_jx" if name in ("nest_tiny", "nest_small", "nest_base") else name
        if arch in timm.list_models(pretrained=False) and timm.list_models(arch, pretrained=True):
            assert name in TIMM, name
    cfg = hub.pretrained_cfg("nest_tiny")
    assert cfg["location"] == "timm/nest_tiny_jx.goog_in1k" and cfg["model_kwargs"]["gelu"] == "exact"
    assert hub.pretrained_cfg("vit_tiny_patch16_224", "gcs_augreg_in21k")["num_classes"] == 21843
    listed = nest_jax.list_models("vit_tiny*", pretrained=True)
    assert (
        listed[0] == "vit_tiny_patch16_224.augreg_in21k_ft_in1k" and "vit_tiny_patch16_224.gcs_augreg_in21k" in listed
    )
    assert not nest_jax.list_models("deit_*shape*", pretrained=True)
