"""The robustness analyses' defaults answer their question on a trained model (a small digits ViT,
tests/_trained_digits.py, ~90% top-1): the optimized adversarial patch fools clearly more images
than the random patch it starts from, and random PatchDrop's estimate falls monotonically with
the drop ratio within its standard error."""

import jax
import numpy as np
import pytest

from nest_jax.analysis import adversarial_patch as A
from nest_jax.analysis import occlusion as O
from tests._trained_digits import trained_digits_vit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    model, batches, mean, std, result = trained_digits_vit(800)
    assert result["eval_top1"] > 0.8, result  # the premise: a model that has learned the task
    return model, batches, mean, std


def test_optimized_patch_beats_the_random_patch(trained):
    model, batches, mean, std = trained
    train = [{k: v[0::2] for k, v in b.items()} for b in batches]
    held_out = [{k: v[1::2] for k, v in b.items()} for b in batches]
    r = A.run_adversarial_patch(model, train, held_out, mean=mean, std=std, fraction=0.1, steps=25)
    # Measured: 0.59 against 0.34 for the random 10-px patch. 30 signed steps of 2/255 from one
    # placement per image reach only 0.40, and their objective rises (-1.66 -> -1.43).
    assert r["fooling_rate"] > r["random_fooling_rate"] + 0.15, r
    assert r["objective_last"] < r["objective_first"], r  # log p(true class) fell


def test_drop_sets_are_nested_across_ratios():
    key = jax.random.key(7)
    masks = [np.asarray(O.random_drop_mask(key, 6, (4, 4), k)) for k in range(17)]
    for k in range(16):
        assert (masks[k] <= masks[k + 1]).all() and masks[k].reshape(6, -1).sum(1).tolist() == [k] * 6


def test_occlusion_is_monotone_within_its_error(trained):
    model, batches, mean, std = trained
    r = O.run_occlusion(model, batches, mean=mean, std=std, repeats=5)
    top1, sem = np.asarray(r["top1"]), np.asarray(r["top1_sem"])
    assert r["ratios"][0] == 0.0 and sem[0] == 0.0  # nothing dropped: every repeat is the clean top-1
    rise = top1[1:] - top1[:-1]
    assert (rise <= 2 * np.hypot(sem[1:], sem[:-1]) + 1e-9).all(), (top1, sem)
    assert top1[-1] < top1[0] - 0.2, top1  # 90% of the cells dropped costs clearly
    assert (sem[1:] > 0).all() and (sem < 0.05).all(), sem
