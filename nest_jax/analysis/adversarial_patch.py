"""Universal adversarial patch (Brown et al. 2017; evaluated on ViTs by Naseer et al. 2021, §3.3).

One patch p (S, S, C) in [0, 1] is pasted into every image at a random position (and, for a
circular patch, a random rotation), covering `fraction` of the image area: a square of side
round(√(fraction·H·W)) or a disk of that area. It is optimized over correctly classified training
images to maximize the cross-entropy of the true class (untargeted) or minimize that of a target
class (targeted), by Adam (default) or signed-gradient steps with a cosine-decayed step size, each
step one jitted call whose objective is averaged over `placements` random placements of the patch in
every image (expectation over transformations, Athalye et al. 2018). Evaluation: the fooling rate on
held-out images that the model classifies correctly without the patch — the fraction whose
prediction is no longer the label (untargeted) or becomes the target (targeted; images of the target
class excluded) — beside the fooling rate of the random patch the optimization starts from (same
size, same placements): occluding part of the image fools some images by itself, and the gap is what
the optimization adds (Naseer et al. 2021, Fig. 10, compare patch sizes this way).

Pasting samples the patch bilinearly at rotated coordinates (exact copy for unrotated squares);
pixels outside the patch's support keep the image, so a patch of area 0 leaves images unchanged.
All of this happens in [0, 1] pixel space, before normalization.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nest_jax.analysis.forward import as_list, batch_mask, logits_from_pixels, normalize
from nest_jax.analysis.image_ops import bilinear_sample
from nest_jax.errors import UserError

Array = jax.Array


def patch_side(image_hw: tuple[int, int], fraction: float, shape: str = "square") -> int:
    """Side S of the patch's bounding square: area fraction·H·W as a square or as a disk."""
    area = fraction * image_hw[0] * image_hw[1]
    side = math.sqrt(area) if shape == "square" else 2.0 * math.sqrt(area / math.pi)
    return int(round(side))


def check_patch(
    image_hw: tuple[int, int],
    *,
    fraction: float,
    shape: str,
    steps: int,
    lr: float,
    optimizer: str,
    placements: int = 1,
) -> None:
    """UserError unless the settings describe a patch that fits the image and can be trained:
    0 < fraction <= 1 with a bounding square of 1 to min(H, W) pixels, shape square or circle,
    steps >= 1, placements >= 1, lr >= 0, optimizer sign or adam."""
    if shape not in ("square", "circle"):
        raise UserError(f"adversarial_patch: shape={shape!r} must be 'square' or 'circle'")
    if optimizer not in ("sign", "adam"):
        raise UserError(f"adversarial_patch: optimizer={optimizer!r} must be 'sign' or 'adam'")
    if int(steps) < 1:
        raise UserError(f"adversarial_patch: steps={steps} must be at least 1, e.g. steps=100")
    if int(placements) < 1:
        raise UserError(f"adversarial_patch: placements={placements} must be at least 1, e.g. placements=2")
    if not float(lr) >= 0:  # 0 keeps the random initial patch: a baseline
        raise UserError(f"adversarial_patch: lr={lr} must not be negative, e.g. lr=0.1")
    side = patch_side(image_hw, fraction, shape) if fraction > 0 else 0
    if not (fraction <= 1 and 1 <= side <= min(image_hw)):
        raise UserError(
            f"adversarial_patch: fraction={fraction} gives a {side}-px {shape} patch on {image_hw[0]}×{image_hw[1]} "
            f"images; choose 0 < fraction <= 1 (the patch's share of the image area) for a patch of 1 to {min(image_hw)} px"
        )


def support_mask(side: int, shape: str) -> np.ndarray:
    """(S, S) float mask of the patch: all ones (square) or the inscribed disk (circle)."""
    if shape == "square":
        return np.ones((side, side), np.float32)
    if shape != "circle":
        raise ValueError(f"shape must be 'square' or 'circle', got {shape!r}")
    t = np.arange(side) - (side - 1) / 2
    return ((t[:, None] ** 2 + t[None, :] ** 2) <= (side / 2) ** 2).astype(np.float32)


def paste(images: Array, patch: Array, mask: Array, offsets: Array, angles: Array) -> Array:
    """Composites the patch into each image.

    images (B, H, W, C); patch (S, S, C); mask (S, S); offsets (B, 2) top-left (row, col) of the
    patch's bounding square; angles (B,) radians (rotation about its centre).
    """
    b, h, w, _ = images.shape
    s = patch.shape[0]
    if s == 0:  # a patch of area 0 covers nothing
        return images
    centre = (s - 1) / 2
    rgba = jnp.concatenate([patch, mask[..., None]], axis=-1)

    def one(img, off, ang):
        y = jnp.arange(h, dtype=jnp.float32)[:, None] - off[0] - centre
        x = jnp.arange(w, dtype=jnp.float32)[None, :] - off[1] - centre
        cos, sin = jnp.cos(ang), jnp.sin(ang)  # inverse rotation: output -> patch coordinates
        u = cos * y + sin * x + centre
        v = -sin * y + cos * x + centre
        sample = bilinear_sample(rgba, jnp.broadcast_to(u, (h, w)), jnp.broadcast_to(v, (h, w)), outside="zero")
        m = sample[..., -1:]
        return img * (1 - m) + sample[..., :-1] * m

    return jax.vmap(one)(images, offsets.astype(jnp.float32), angles)


def random_placement(key: Array, batch: int, image_hw: tuple[int, int], side: int, rotate: bool):
    """Offsets (B, 2) uniform over positions that keep the patch inside, angles (B,) in [0, 2π)."""
    k1, k2, k3 = jax.random.split(key, 3)
    oy = jax.random.randint(k1, (batch,), 0, image_hw[0] - side + 1)
    ox = jax.random.randint(k2, (batch,), 0, image_hw[1] - side + 1)
    ang = jax.random.uniform(k3, (batch,), maxval=2 * jnp.pi) if rotate else jnp.zeros((batch,))
    return jnp.stack([oy, ox], -1), ang


def patch_loss(model, images, labels, patch, mask, key, *, rotate, mean, std, target):
    """Untargeted: −CE(true class) (to minimize); targeted: CE(target class). Scalar mean."""
    offsets, angles = random_placement(key, images.shape[0], images.shape[1:3], patch.shape[0], rotate)
    logits = model(normalize(paste(images, patch, mask, offsets, angles), mean, std), train=False)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    if target is None:
        return jnp.take_along_axis(logp, labels[:, None], -1).mean()
    return -logp[:, target].mean()


@nnx.jit(static_argnames=("rotate", "mean", "std", "target", "tx"))
def _step(model, images, labels, patch, opt_state, mask, key, *, rotate, mean, std, target, tx):
    loss, g = jax.value_and_grad(
        lambda p: patch_loss(model, images, labels, p, mask, key, rotate=rotate, mean=mean, std=std, target=target)
    )(patch)
    updates, opt_state = tx.update(g, opt_state, patch)
    return jnp.clip(optax.apply_updates(patch, updates), 0.0, 1.0), opt_state, loss


def correctly_classified(model, batches, mean, std) -> list[dict]:
    """Keeps only the images the model gets right (padding dropped)."""
    out = []
    for b in batches:
        pred = np.asarray(jnp.argmax(logits_from_pixels(model, jnp.asarray(b["image"]), mean=mean, std=std), -1))
        keep = (pred == np.asarray(b["label"])) & (batch_mask(b) > 0)
        if keep.any():
            out.append({"image": np.asarray(b["image"])[keep], "label": np.asarray(b["label"])[keep]})
    return out


def train_patch(
    model,
    batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    fraction: float = 0.05,
    shape: str = "square",
    rotate: bool | None = None,
    steps: int = 100,
    lr: float = 0.1,
    optimizer: str = "adam",
    placements: int = 2,
    target: int | None = None,
    seed: int = 0,
) -> tuple[Array, Array, list]:
    """Optimizes a universal patch over correctly classified images.  -> (patch, mask, losses per step).

    With L the objective of `patch_loss` averaged over `placements` random placements per image and
    η_t = lr·½(1 + cos(πt/steps)): optimizer "adam": Adam(η_t); "sign": p ← clip(p − η_t·sign(∇L)).
    The patch starts from `initial_patch(seed, …)`, uniform in [0, 1].
    """
    mean, std = tuple(mean), tuple(std)
    batches = as_list(batches)
    image_hw = tuple(np.shape(batches[0]["image"])[1:3])
    check_patch(
        image_hw, fraction=fraction, shape=shape, steps=steps, lr=lr, optimizer=optimizer, placements=placements
    )
    data = correctly_classified(model, batches, mean, std)
    if not data:
        raise ValueError("the model classifies none of the training images correctly; nothing to attack")
    h, w, c = data[0]["image"].shape[1:]
    side = patch_side((h, w), fraction, shape)
    rotate = (shape == "circle") if rotate is None else rotate
    mask = jnp.asarray(support_mask(side, shape))
    patch = initial_patch(seed, side, c)
    key = jax.random.fold_in(jax.random.key(seed), 1)
    schedule = optax.cosine_decay_schedule(lr, steps)
    tx = optax.sign_sgd(schedule) if optimizer == "sign" else optax.adam(schedule)
    opt_state = tx.init(patch)
    # Each image `placements` times (each copy gets its own placement), on the device once.
    tiled = [tuple(jnp.asarray(np.concatenate([b[k]] * placements)) for k in ("image", "label")) for b in data]
    losses = []
    for i in range(steps):
        images, labels = tiled[i % len(tiled)]
        patch, opt_state, loss = _step(
            model,
            images,
            labels,
            patch,
            opt_state,
            mask,
            jax.random.fold_in(key, i),
            rotate=rotate,
            mean=mean,
            std=std,
            target=target,
            tx=tx,
        )
        losses.append(loss)  # read back once at the end: no host round trip per step
    return patch, mask, [float(v) for v in jax.device_get(losses)]


_PATCH_DEFAULTS = {
    k: p.default for k, p in inspect.signature(train_patch).parameters.items() if p.default is not p.empty
}


def initial_patch(seed: int, side: int, channels: int) -> Array:
    """(S, S, C) uniform random patch in [0, 1]: the optimization's start and the random baseline."""
    return jax.random.uniform(jax.random.fold_in(jax.random.key(seed), 0), (side, side, channels))


@nnx.jit(static_argnames=("rotate", "mean", "std"))
def patched_logits(model, images, patch, mask, key, *, rotate, mean, std):
    offsets, angles = random_placement(key, images.shape[0], images.shape[1:3], patch.shape[0], rotate)
    return model(normalize(paste(images, patch, mask, offsets, angles), mean, std), train=False)


def fooling_rate(
    model,
    batches: Iterable[dict],
    patch: Array,
    mask: Array,
    *,
    mean: tuple,
    std: tuple,
    rotate: bool = False,
    target: int | None = None,
    seed: int = 1,
) -> dict:
    """Fooling rate on the correctly classified images of `batches`.  -> {"fooling_rate", "evaluated"}."""
    mean, std = tuple(mean), tuple(std)
    data = correctly_classified(model, as_list(batches), mean, std)
    fooled, total = 0, 0
    for i, b in enumerate(data):
        labels, key = b["label"], jax.random.fold_in(jax.random.key(seed), i)
        logits = patched_logits(model, jnp.asarray(b["image"]), patch, mask, key, rotate=rotate, mean=mean, std=std)
        pred = np.asarray(jnp.argmax(logits, -1))
        if target is None:
            fooled += int((pred != labels).sum())
            total += len(labels)
        else:
            keep = labels != target
            fooled += int((pred[keep] == target).sum())
            total += int(keep.sum())
    return {"fooling_rate": fooled / max(total, 1), "evaluated": total}


def run_adversarial_patch(
    model,
    train_batches: Iterable[dict],
    eval_batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    return_patch: bool = False,
    **settings: Any,
) -> dict:
    """Trains a universal patch (`train_patch` with `settings`: fraction, shape, rotate, steps, lr,
    optimizer, placements, target, seed) and reports its fooling rate on held-out images.

    -> {"fooling_rate", "random_fooling_rate" (the starting random patch, same placements),
    "evaluated", "patch_side", "fraction", "shape", "objective_first", "objective_last"}.
    """
    s = {**_PATCH_DEFAULTS, **settings}  # an unknown key: train_patch's TypeError
    shape, fraction, target, seed = s["shape"], s["fraction"], s["target"], s["seed"]
    s["rotate"] = rotate = (shape == "circle") if s["rotate"] is None else s["rotate"]
    patch, mask, losses = train_patch(model, train_batches, mean=mean, std=std, **s)
    eval_batches = as_list(eval_batches)
    out = fooling_rate(model, eval_batches, patch, mask, mean=mean, std=std, rotate=rotate, target=target)
    start = initial_patch(seed, patch.shape[0], patch.shape[-1])
    random = fooling_rate(model, eval_batches, start, mask, mean=mean, std=std, rotate=rotate, target=target)
    out.update(
        random_fooling_rate=random["fooling_rate"],
        patch_side=int(patch.shape[0]),
        fraction=fraction,
        shape=shape,
        objective_first=losses[0],
        objective_last=losses[-1],
    )
    if return_patch:
        out["patch"] = np.asarray(patch)
        out["mask"] = np.asarray(mask)
    return out
