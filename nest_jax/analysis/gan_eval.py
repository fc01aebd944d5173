"""The generator's evaluators: `samples` (a grid of images on fixed latents) and `fid` (FID and KID
of its samples against the real images of a split).

Both get `model_fn(state)` = the EMA generator, z: (B, latent_dim) -> images (B, H, W, C) in
[-1, 1] (`gan.GanTrainer.eval_model`), and draw latents on device, `batch_size` at a time (None:
train.eval_batch_size), split over the mesh's batch axes. In a GAN config (`config.evals`, prefix "" keeps the names short):

    samples=dict(kind="samples", every_steps=500, prefix="", num_images=64, seed=1234)
    fid=dict(kind="fid", every_steps=5000, prefix="", checkpoint=CLASSIFIER_WORKDIR, num_samples=2048)

`samples` returns {"samples": uint8 grid}: TensorBoard, and `WORKDIR/samples/step_<k>.png`.
`fid` returns {"fid", "kid", "kid_std"}; the real statistics are computed at its first run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import numpy as np

from nest_jax.analysis import fid as F
from nest_jax.errors import UserError
from nest_jax.train.evaluators import EvalData, check_batch_size, register_evaluator


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """images: (N, H, W, C) in [-1, 1] -> uint8 grid (rows·(H+1)+1, cols·(W+1)+1, 3), 1-px borders."""
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    x = np.clip((np.asarray(images, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if c == 1:
        x = np.repeat(x, 3, axis=-1)
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[i, ..., :3]
    return grid


class Sampler:
    """Base of `samples` and `fid`: `sample(state, n, seed)` -> (n, H, W, C) float32 in [-1, 1], host
    numpy on every process. Latent batch i is `normal(fold_in(key(seed), i))`: the same images for
    the same (state, seed)."""

    task = "gan"  # evaluates the generator of a GAN run (`build_evaluators` checks config.task)

    def __init__(self, model_fn: Callable, data: EvalData, batch_size: int | None):
        size = data.batch_size if batch_size is None else check_batch_size(batch_size, data.mesh, "batch_size")
        self.model_fn, self.data, self.batch_size = model_fn, data, size

        @functools.partial(jax.jit, static_argnums=2)
        def generate(state, key, latent: int):
            z = jax.random.normal(key, (size, latent))
            return model_fn(state)(jax.lax.with_sharding_constraint(z, data.sharding), train=False)

        self._generate = generate

    def sample(self, state: dict, n: int, seed: int) -> np.ndarray:
        model = self.model_fn(state)
        latent, key = getattr(getattr(model, "config", None), "latent_dim", None), jax.random.key(seed)
        if latent is None:  # a classifier has no samples
            raise UserError(
                f"{type(model).__name__} is not a generator (no config.latent_dim): samples and fid evaluate GANs"
            )
        out = [self._generate(state, jax.random.fold_in(key, i), int(latent)) for i in range(-(-n // self.batch_size))]
        return np.concatenate([np.asarray(self.data.gather(x), np.float32) for x in out])[:n]


@register_evaluator("samples")
class SampleGrid(Sampler):
    """A grid of the generator's images on fixed latents (the same latents at every step)."""

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        num_images: int = 64,
        seed: int = 1234,
        batch_size: int | None = None,
    ):
        super().__init__(model_fn, data, batch_size)
        self.num_images, self.seed = num_images, seed

    def run(self, state: dict, step: int) -> dict[str, np.ndarray]:
        return {"samples": image_grid(self.sample(state, self.num_images, self.seed))}


@register_evaluator("fid")
class FIDEvaluator(Sampler):
    """FID and KID of the generator's samples against the real images of a split.

    extractor "classifier": features of a classifier trained with the main job on the same data
    (`checkpoint` = its workdir); "inception": the FID Inception-v3 (`weights` = pytorch-fid's
    file, images resized to 299 by `resize`). Fresh latents at every step (seed 10,000 + step).
    """

    def __init__(
        self,
        model_fn: Callable,
        data: EvalData,
        *,
        extractor: str = "classifier",
        checkpoint: str = "",
        weights: str = "",
        resize: str = "tf_legacy",
        split: str = "train",
        num_samples: int = 2048,
        batch_size: int | None = None,
        kid_subsets: int = 50,
        kid_subset_size: int = 500,
    ):
        if extractor == "classifier":  # a missing file fails now
            self.extract = F.classifier_from_workdir(checkpoint)
        elif extractor == "inception":
            self.extract = F.inception_extractor(weights, resize=resize)
        else:
            raise UserError(f"fid evaluator: extractor must be 'classifier' or 'inception', got {extractor!r}")
        super().__init__(model_fn, data, batch_size)
        self.split, self.num_samples, self.kid_subsets, self.kid_subset_size = (
            split,
            num_samples,
            kid_subsets,
            kid_subset_size,
        )

    @functools.cached_property
    def real(self) -> F.FeatureStats:
        """Features of one pass over `split` (padding masked), every process's examples."""
        ds = self.data.dataset.copy_and_resolve_references()
        with ds.unlocked():
            ds.eval_resize = "resize"  # the whole image, as the generator draws it (no center crop)
        batches = self.data.batches(self.split, batch_size=self.batch_size, max_batches=0, dataset=ds)
        pairs = ((b["image"], b["mask"]) for b in batches)
        return F.accumulate(self.extract, pairs, keep_features=True, gather=self.data.gather)

    def run(self, state: dict, step: int) -> dict[str, float]:
        real = self.real  # computed at the first run
        images, bs = self.sample(state, self.num_samples, 10_000 + step), self.batch_size
        fake = F.accumulate(self.extract, (images[i : i + bs] for i in range(0, len(images), bs)), keep_features=True)
        kid, kid_std = F.kid(
            real.all_features(), fake.all_features(), num_subsets=self.kid_subsets, subset_size=self.kid_subset_size
        )
        return {"fid": F.fid_from_stats(real, fake), "kid": kid, "kid_std": kid_std}
