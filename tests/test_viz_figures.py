"""What a reviewer checks on a figure, read off the matplotlib objects: every colour map has a colour
bar, layer/level axes carry integer ticks only, the per-block figure speaks NesT's vocabulary
(levels) and names lines that coincide instead of hiding one under the other."""

import numpy as np

from nest_jax import viz
from nest_jax.viz import robustness as vr


def colour_bars(fig) -> int:
    return sum(hasattr(ax, "_colorbar") for ax in fig.axes)


def integer_ticks(ax) -> bool:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def test_maps_have_colour_bars():
    maps = np.random.default_rng(0).random((3, 3, 3, 3))
    assert colour_bars(viz.plot_position_maps(maps)) == 1  # one shared scale for the nine maps
    assert colour_bars(viz.plot_token_probe(np.linspace(0, 1, 16), (4, 4))) == 1
    assert colour_bars(viz.plot_cka(np.eye(4))) == 1


def test_layer_axes_have_integer_ticks():
    # Two or three layers is where matplotlib's default locator puts ticks at 0.5, 1.5, ….
    assert integer_ticks(viz.plot_norm_ratios({"attn/cls": np.asarray([1.0, 2.0])}).axes[0])
    assert integer_ticks(viz.plot_probe_accuracy({"ridge/cls": np.asarray([0.2, 0.5, 0.9])}).axes[0])
    cka = viz.plot_cka(np.random.default_rng(1).random((3, 4)))
    assert integer_ticks(cka.axes[0]) and all(float(t).is_integer() for t in cka.axes[0].get_yticks())
    per = vr.plot_per_layer({"ViT": {"top1": {"cls": [0.1, 0.5, 0.9]}, "layers": 3}})
    assert integer_ticks(per.axes[0])


def test_per_block_tokens_figure_uses_levels_and_names_coinciding_lines():
    results = {
        "NesT": {"top1": {"inference": [0.3, 0.8]}, "levels": 2},
        "DeiT": {"top1": {"cls": [0.2, 0.6], "dist": [0.1, 0.5], "inference": [0.2, 0.6]}, "layers": 2},
    }
    ax = vr.plot_per_layer(results).axes[0]
    assert "level" in ax.get_xlabel() and "layer" in ax.get_xlabel()
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["NesT: model's prediction", "DeiT: class token = model's prediction", "DeiT: distillation token"]
    assert len({(line.get_marker(), line.get_linestyle()) for line in ax.get_lines()[1:]}) == 2
