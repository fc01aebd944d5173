"""Shape bias on cue-conflict images (Geirhos et al. 2019, "ImageNet-trained CNNs are biased
towards texture"; the protocol of their model-vs-human toolbox).

A cue-conflict image has the shape of one class and the texture of another. With predictions
over the classes:

    shape bias = #(prediction = shape class) / (#(prediction = shape class) + #(prediction = texture class))

over the images whose shape and texture classes differ (images with the same class for both are
dropped); predictions that are neither are ignored. Humans ≈ 0.96, ImageNet ResNet-50 ≈ 0.2.

ImageNet models predict over 1000 classes; they are mapped to the 16 entry-level categories
(airplane … truck) by averaging the softmax probabilities over each category's ImageNet indices
(the toolbox's `ImageNetProbabilitiesTo16ClassesMapping`; the index lists are the toolbox's
WordNet-hyponym lists, `IMAGENET16_INDICES`) and taking the argmax. Models trained on the
procedural shapes × textures set (`nest_jax.data.shapes`) predict the classes directly.

`cue_conflict_folder` reads the released stimuli (1280 PNGs, `<shape>/<shape><i>-<texture><j>.png`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nest_jax.analysis.forward import as_list, batch_mask, logits_from_pixels
from nest_jax.errors import UserError


def _r(a: int, b: int) -> list[int]:
    return list(range(a, b + 1))


_BIRD_RANGES = ((10, 16), (18, 20), (22, 24), (80, 83), (87, 96), (98, 100), (127, 133), (135, 145))
IMAGENET16_INDICES = {
    "airplane": [404],
    "bear": _r(294, 297),
    "bicycle": [444, 671],
    "bird": [8] + [i for a, b in _BIRD_RANGES for i in _r(a, b)],
    "boat": [472, 554, 625, 814, 914],
    "bottle": [440, 720, 737, 898, 899, 901, 907],
    "car": [436, 511, 817],
    "cat": _r(281, 286),
    "chair": [423, 559, 765, 857],
    "clock": [409, 530, 892],
    "dog": [i for i in _r(152, 268) if i not in (192, 204, 227, 242, 251, 258, 260, 264)],
    "elephant": [385, 386],
    "keyboard": [508, 878],
    "knife": [499],
    "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}
CATEGORIES16 = tuple(IMAGENET16_INDICES)  # the 16 entry-level categories, alphabetical


def imagenet_to_16(probs: jax.Array) -> jax.Array:
    """(B, 1000) ImageNet probabilities -> (B, 16) mean probability per category (CATEGORIES16 order)."""
    m = np.zeros((1000, 16), np.float32)
    for j, c in enumerate(CATEGORIES16):
        m[IMAGENET16_INDICES[c], j] = 1.0 / len(IMAGENET16_INDICES[c])
    return jnp.asarray(probs) @ jnp.asarray(m)


def shape_bias(predictions: Sequence[int], shape_labels: Sequence[int], texture_labels: Sequence[int]) -> dict:
    """Shape bias from predicted, shape and texture classes (all integer arrays of one length).

    -> {"shape_bias", "shape_hits", "texture_hits", "conflict_images", "shape_accuracy", "texture_accuracy"}
    (the accuracies are over the cue-conflict images: how often each cue wins overall).
    """
    p, s, t = (np.asarray(a) for a in (predictions, shape_labels, texture_labels))
    conflict = s != t
    shape_hits = int(((p == s) & conflict).sum())
    texture_hits = int(((p == t) & conflict).sum())
    n = int(conflict.sum())
    decided = shape_hits + texture_hits
    return {
        "shape_bias": shape_hits / decided if decided else float("nan"),
        "shape_hits": shape_hits,
        "texture_hits": texture_hits,
        "conflict_images": n,
        "shape_accuracy": shape_hits / max(n, 1),
        "texture_accuracy": texture_hits / max(n, 1),
    }


def run_shape_bias(
    model, batches: Iterable[dict], *, mean: tuple, std: tuple, imagenet16: bool | None = None, logits_fn=None
) -> dict:
    """Shape bias of a model on cue-conflict batches {"image", "label" (= shape), "texture_label"}.

    imagenet16: map 1000-way ImageNet outputs to the 16 categories (default: when the model
    predicts 1000 classes). logits_fn(images (B,H,W,C) in [0,1]) -> logits overrides the model's
    inference logits (e.g. to read one token's head; see `per_block_tokens`).
    """
    if logits_fn is None:
        logits_fn = lambda x: logits_from_pixels(model, x, mean=tuple(mean), std=tuple(std))
    preds, shapes, textures = [], [], []
    for b in as_list(batches):
        logits = logits_fn(jnp.asarray(b["image"]))
        use16 = logits.shape[-1] == 1000 if imagenet16 is None else imagenet16
        scores = imagenet_to_16(jax.nn.softmax(logits.astype(jnp.float32), -1)) if use16 else logits
        keep = batch_mask(b) > 0
        preds.append(np.asarray(jnp.argmax(scores, -1))[keep])
        shapes.append(np.asarray(b["label"])[keep])
        textures.append(np.asarray(b["texture_label"])[keep])
    return shape_bias(np.concatenate(preds), np.concatenate(shapes), np.concatenate(textures))


def shapes_world_images(data, variant: str, num_images: int, **arrays_kw) -> tuple[np.ndarray, dict]:
    """The first `num_images` test images of the run's procedural shapes world (`data`: its
    `EvalData`; the world's clutter, rotation and scale) in `variant`, as [0, 1] pixels with the
    run's channel count, and the arrays they came from (labels; masks with masks=True)."""
    from nest_jax.data.shapes import ShapesTexturesSource

    src = ShapesTexturesSource.from_config(
        data.dataset.shapes, data.image_size, num_classes=data.num_classes, variant=variant, num_test=num_images
    )
    a = src.arrays("test", **arrays_kw)
    img = a["image"].astype(np.float32) / 255.0
    return (img if data.num_channels == 3 else img.mean(-1, keepdims=True)), a


_NAME = re.compile(r"^([a-z]+)\d+-([a-z]+)\d+\.(png|jpg|jpeg)$", re.IGNORECASE)


def parse_cue_conflict_name(filename: str) -> tuple[str, str]:
    """'airplane1-bicycle2.png' -> ('airplane', 'bicycle'): the shape class, then the texture class."""
    m = _NAME.match(filename)
    if not m:
        raise ValueError(f"{filename!r} is not a cue-conflict file name <shape><i>-<texture><j>.png")
    return m.group(1).lower(), m.group(2).lower()


def cue_conflict_folder(
    root: str, *, image_size: int = 224, batch_size: int = 64, categories: Sequence[str] = CATEGORIES16
) -> Iterator[dict]:
    """Batches {"image" (B, S, S, 3) in [0, 1], "label" (shape), "texture_label"} from a folder of
    cue-conflict stimuli in `root` or its class folders; class ids are positions in `categories`."""
    from etils import epath
    from PIL import Image

    index = {c: i for i, c in enumerate(categories)}
    base = epath.Path(root)
    files = sorted(p for pattern in ("*", "*/*") for p in base.glob(pattern) if _NAME.match(p.name))
    if not files:
        raise UserError(f"no cue-conflict images (<shape><i>-<texture><j>.png) under {root}")
    for start in range(0, len(files), batch_size):
        imgs, shapes, textures = [], [], []
        for f in files[start : start + batch_size]:
            s, t = parse_cue_conflict_name(f.name)
            with f.open("rb") as fh:
                img = Image.open(fh).convert("RGB")
                if img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.BICUBIC)
                imgs.append(np.asarray(img, np.float32) / 255.0)
            shapes.append(index[s])
            textures.append(index[t])
        yield {
            "image": np.stack(imgs),
            "label": np.asarray(shapes, np.int32),
            "texture_label": np.asarray(textures, np.int32),
        }
