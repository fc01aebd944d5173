"""Attention segmentation (IPViT Table 3, DINO thresholding): the mass threshold against a NumPy
reference written here, masks and Jaccard indices on hand-made attention maps, and
`python -m nest_jax.analyze segmentation` end to end on a tiny ViT over the shapes world."""

import json

import numpy as np
import pytest

from nest_jax.analysis import segmentation as seg


def reference_keep(a: np.ndarray, fraction: float) -> np.ndarray:
    """Patch p is kept when the attention on patches larger than p's sums to less than `fraction`
    (the top patches holding `fraction` of the mass, the one that crosses it included)."""
    a = np.asarray(a, np.float64)
    out = np.zeros(a.shape, bool)
    for idx in np.ndindex(a.shape[:-1]):
        row = a[idx] / a[idx].sum()
        for p in range(len(row)):
            out[idx + (p,)] = row[row > row[p]].sum() < fraction
    return out


def test_keep_mass_on_a_hand_example_and_against_the_reference():
    a = np.array([0.05, 0.5, 0.15, 0.3])
    np.testing.assert_array_equal(seg.keep_mass(a, 0.6), [False, True, False, True])  # 0.5 + 0.3 ≥ 0.6
    np.testing.assert_array_equal(seg.keep_mass(a, 0.9), [False, True, True, True])  # 0.95 ≥ 0.9
    np.testing.assert_array_equal(seg.keep_mass(a, 0.4), [False, True, False, False])
    rng = np.random.default_rng(0)
    for f in (0.3, 0.6, 0.9):
        x = rng.dirichlet(np.ones(49) * 0.3, size=(3, 2))  # (3, 2, 49): images × heads × patches
        np.testing.assert_array_equal(seg.keep_mass(x, f), reference_keep(x, f))
    with pytest.raises(ValueError):
        seg.keep_mass(a, 0.0)


def _weights(rows: dict[int, np.ndarray], heads: int = 2, grid: int = 4, prefix: int = 2) -> np.ndarray:
    """(1, heads, T, T) attention; query `token` of every head attends to the patches in rows[token]
    (a (grid, grid) map) plus a share on the prefix keys, which the analysis drops."""
    t = prefix + grid * grid
    w = np.full((1, heads, t, t), 1.0 / t)
    for token, m in rows.items():
        row = np.concatenate([np.full(prefix, 0.3), np.asarray(m, np.float64).ravel()])
        w[0, :, token] = row / row.sum()
    return w


def test_hand_made_maps_give_the_exact_masks_and_jaccard():
    # 4×4 grid of 8-px patches (32×32 image); the object is the square rows/cols 8..24 (patches 1..2).
    truth = np.zeros((1, 32, 32), bool)
    truth[0, 8:24, 8:24] = True
    on_object = np.zeros((4, 4))
    on_object[1:3, 1:3] = 1.0
    corner = np.zeros((4, 4))
    corner[3, 3] = 1.0
    half = np.zeros((4, 4))  # patches (1, 1) and (1, 2): the top half of the object and nothing else
    half[1, 1:3] = 1.0
    w = _weights({0: on_object + 1e-6, 1: corner + 1e-6})
    cls = seg.attention_masks(w, 0, 2, (4, 4), 8, fraction=0.99)
    np.testing.assert_array_equal(cls, truth)
    assert seg.jaccard(cls, truth)[0] == 1.0
    shape = seg.attention_masks(w, 1, 2, (4, 4), 8, fraction=0.9)
    assert shape.sum() == 64 and seg.jaccard(shape, truth)[0] == 0.0
    m = seg.attention_masks(_weights({0: half + 1e-6}), 0, 2, (4, 4), 8, fraction=0.99)
    assert seg.jaccard(m, truth)[0] == pytest.approx(128 / 256)
    each = seg.attention_masks(w, 0, 2, (4, 4), 8, fraction=0.99, heads="each")
    assert each.shape == (1, 2, 32, 32) and np.all(each == truth[:, None])
    assert seg.jaccard(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0  # both empty


def test_upsampling_is_nearest_neighbour():
    m = np.array([[True, False, False, True]])
    up = seg.upsample(m, (2, 2), 3)
    want = np.kron(np.array([[1, 0], [0, 1]]), np.ones((3, 3))).astype(bool)
    np.testing.assert_array_equal(up[0], want)


CONFIG = """
from nest_jax.train.config_base import base_config
def get_config():
    c = base_config()
    c.model.name = "deit_tiny_shape_patch16_224"
    c.model.overrides = dict(patch_size=8, dim=16, depth=1, num_heads=2, mlp_dim=32)
    c.dataset.update(dict(name="shapes", image_size=32, num_channels=3, normalize="inception"))
    c.dataset.shapes.update(dict(num_classes=4, num_train=16, num_test=16, clutter=2))
    return c
"""


def test_analyze_cli_runs_segmentation_on_the_shapes_world(tmp_path):
    from nest_jax.analyze.__main__ import main

    cfg = tmp_path / "tiny.py"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    assert main(["segmentation", f"--config={cfg}", f"--out={out}", "--opt=num_images=8", "--opt=fraction=0.5"]) == 0
    r = next(iter(json.loads((out / "segmentation.json").read_text()).values()))
    for t in ("cls", "shape"):
        assert 0.0 <= r[f"jaccard_{t}"] <= 1.0 and len(r[f"jaccard_{t}_heads"]) == 2
    assert r["examples_count"] == 8 and any(p.suffix == ".png" for p in out.iterdir())
