"""The NesT plots run headless (Agg) on real analysis results and draw what they promise."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from nest_jax.analysis import box_from_cam, class_activation_map, gradcat
from nest_jax.models import create_model
from nest_jax.viz import plot_cam, plot_gradcat, plot_level_scores


def test_nest_plots_produce_figures(tmp_path):
    model = create_model(
        "nest_tiny_cifar", num_classes=10, rngs=nnx.Rngs(0), dims=(8,) * 4, depths=(1,) * 4, heads=(1,) * 4
    )
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    r = gradcat(model, x, target=jnp.array([1, 2]))
    cam = class_activation_map(model, x)
    up = np.asarray(cam.upsampled[1])

    fig = plot_gradcat(np.asarray(x[1]), r, index=1)
    assert isinstance(fig, Figure) and len(fig.axes[0].patches) == 3  # one box per level below the root
    fig = plot_cam(np.asarray(x[1]), up, box=box_from_cam(up), true_box=(0, 0, 16, 16))
    assert isinstance(fig, Figure) and len(fig.axes[0].patches) == 2
    fig = plot_level_scores(r, index=0)
    maps = [a for a in fig.axes if a.images]  # one heatmap per level, plus 4 colorbar axes
    assert isinstance(fig, Figure) and len(maps) == 4 and len(fig.axes) == 8
    assert [m.images[0].get_array().shape for m in maps] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(len(m.patches) == 1 for m in maps)  # the chosen node, outlined
    fig.savefig(tmp_path / "levels.png")
    assert (tmp_path / "levels.png").stat().st_size > 1000
