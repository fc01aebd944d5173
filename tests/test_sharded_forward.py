"""Sharded forward passes over 8 simulated CPU devices equal the single-device forward.

Data parallel: the batch split over a `data` mesh axis. Data + tensor parallel: parameters placed
by their logical partition names (`heads`, `mlp` -> `tensor`) on a (data=2, tensor=4) mesh.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from nest_jax.models import create_model
from nest_jax.models.functional import pure

# Heads and MLP widths divisible by the tensor axis (4): uneven shards are not placeable.
MODELS = {
    "vit": lambda: create_model("vit_tiny_patch16_224", num_classes=8, img_size=32, patch_size=8, depth=2, num_heads=4),
    "nest": lambda: create_model(
        "nest_tiny_cifar", num_classes=8, img_size=32, depths=(1, 1, 1, 1), heads=(4, 4, 4, 4)
    ),
}


def auto_mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> jax.sharding.Mesh:
    # Auto (GSPMD-propagated) axes, as nest_jax.train uses: `jax.make_mesh` now defaults to Explicit
    # axes, under which reshapes of sharded arrays (NesT's blockify) need explicit out_sharding.
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


LOGICAL_RULES = [
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", None),
    ("kv", None),
    ("classes", None),
    ("conv_in", None),
    ("conv_out", None),
]


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    """(name, apply, params, images, single-device logits)."""
    model = MODELS[request.param]()
    apply, params, _ = pure(model)
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    return request.param, apply, params, images, jax.jit(apply)(params, images)


def test_batch_sharded_over_data_axis_matches_single_device(case):
    _, apply, params, images, expected = case
    assert len(jax.devices()) == 8
    mesh = auto_mesh((8,), ("data",))
    x = jax.device_put(images, NamedSharding(mesh, P("data")))
    p = jax.device_put(params, NamedSharding(mesh, P()))
    out = jax.jit(apply)(p, x)
    assert len(x.sharding.device_set) == 8 and x.addressable_shards[0].data.shape[0] == 1
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_params_sharded_by_logical_names_match_single_device(case):
    name, apply, params, images, expected = case
    mesh = auto_mesh((2, 4), ("data", "tensor"))
    with nn.logical_axis_rules(LOGICAL_RULES):
        specs = nnx.get_partition_spec(params)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    p = jax.device_put(params, shardings)
    x = jax.device_put(images, NamedSharding(mesh, P("data")))
    out = jax.jit(apply)(p, x)
    # The layout is not vacuous: attention and MLP weights are split 4 ways along heads / hidden.
    split = {k for k, v in nnx.to_flat_state(p) if "tensor" in str(v.sharding.spec)}
    kinds = {"/".join(map(str, k)).rsplit("/", 1)[-1] for k in split}
    assert {"q" if name == "nest" else "qkv", "proj", "kernel"} <= kinds, kinds
    fc1 = next(v for k, v in nnx.to_flat_state(p) if k[-2:] == ("fc1", "kernel"))
    assert fc1.addressable_shards[0].data.shape[1] == fc1.shape[1] // 4
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
