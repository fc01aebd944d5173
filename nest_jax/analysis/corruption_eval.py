"""Corruption error (CE), mean CE and relative mCE (Hendrycks & Dietterich 2019, Section 4).

For a model f, corruption c and severities s (any of 1..5; all five by default) with top-1 errors
E_{s,c}, each compared with AlexNet's at the same severity:

    CE_c = Σ_s E_{s,c} / Σ_s E^{AlexNet}_{s,c}            mCE = mean over the 15 c of CE_c
    relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^{AlexNet}_{s,c} − E^{AlexNet}_clean)

reported ×100. AlexNet's errors are the published per-severity figures of the ImageNet-C release
(the same numbers timm ships as `imagenetc_alexnet_error_rates_list`), keyed by corruption name;
their means per corruption are the familiar table (gaussian_noise .886428, …). AlexNet's clean
top-1 error is 0.43478 (torchvision's AlexNet, 56.522% top-1, the model the paper evaluated; the
paper's table rounds it to 43.5).

`run_corruptions` corrupts every batch on the fly (`corruptions.corrupt`, one key per batch and
severity). When the released ImageNet-C is on disk, `run_stored_corruptions` evaluates it instead:
`imagenet_c_folder` reads the released folder, `imagenet_c_tfds` the tfds build
`imagenet2012_corrupted/<corruption>_<severity>` (array_record, through `tfds.data_source`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import jax
import numpy as np

from nest_jax.analysis import corruptions as C
from nest_jax.analysis.forward import as_list, fold, logits_from_pixels, top1
from nest_jax.errors import UserError

ALEXNET_ERRORS_BY_SEVERITY = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
ALEXNET_ERRORS = {k: float(np.mean(v)) for k, v in ALEXNET_ERRORS_BY_SEVERITY.items()}
ALEXNET_CLEAN_ERROR = 0.43478


SEVERITIES = (1, 2, 3, 4, 5)


def check_corruptions(corruptions: Sequence[str], severities: Sequence[int]) -> None:
    """UserError unless every corruption has an AlexNet baseline and the severities are distinct
    values in 1..5 (the errors at severity s are compared with AlexNet's at the same s)."""
    bad = [c for c in corruptions if c not in ALEXNET_ERRORS_BY_SEVERITY]
    if bad or not corruptions:
        raise UserError(
            f"unknown corruption {', '.join(bad) or '(none given)'}; choose from {', '.join(C.CORRUPTIONS)}"
        )
    sev = tuple(severities)
    if not sev or len(set(sev)) != len(sev) or not all(isinstance(s, int) and s in SEVERITIES for s in sev):
        raise UserError(f"severities={sev} must be distinct integers in 1..5, e.g. severities=(1,2,3)")


def _alexnet(name: str, severities: Sequence[int]) -> np.ndarray:
    return np.asarray([ALEXNET_ERRORS_BY_SEVERITY[name][s - 1] for s in severities])


def corruption_error(errors: Mapping[str, Sequence[float]], severities: Sequence[int] = SEVERITIES) -> dict[str, float]:
    """CE_c (×100) per corruption name from its top-1 errors at `severities` (AlexNet's errors at
    the same severities are the reference)."""
    return relative_corruption_error(errors, 0.0, 0.0, severities)  # the sums of the errors themselves


def relative_corruption_error(
    errors: Mapping[str, Sequence[float]],
    clean_error: float,
    alexnet_clean_error: float = ALEXNET_CLEAN_ERROR,
    severities: Sequence[int] = SEVERITIES,
) -> dict[str, float]:
    """Relative CE_c (×100): the degradation from the model's own clean error, over AlexNet's."""
    check_corruptions(list(errors), severities)
    return {
        n: 100.0
        * float(np.sum(np.asarray(e) - clean_error))
        / float(np.sum(_alexnet(n, severities) - alexnet_clean_error))
        for n, e in errors.items()
    }


def mean_corruption_error(
    errors: Mapping[str, Sequence[float]], clean_error: float | None = None, severities: Sequence[int] = SEVERITIES
) -> dict:
    """{"ce": {name: CE}, "mce": mean CE, and with clean_error "relative_ce", "relative_mce"};
    errors[name][i] is the top-1 error at severities[i]."""
    ce = corruption_error(errors, severities)
    out = {"ce": ce, "mce": float(np.mean(list(ce.values())))}
    if clean_error is not None:
        rel = relative_corruption_error(errors, clean_error, severities=severities)
        out.update(relative_ce=rel, relative_mce=float(np.mean(list(rel.values()))))
    return out


def run_corruptions(
    model,
    batches: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    corruptions: Sequence[str] = C.CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    frost_textures=None,
) -> dict:
    """Top-1 on clean and corrupted copies of `batches` ([0, 1] pixels), CE, mCE, relative mCE.

    Returns {"clean_top1", "top1": {name: [per severity]}, "ce", "mce", "relative_ce", "relative_mce"}.
    """
    check_corruptions(corruptions, severities)
    batches, key = as_list(batches), jax.random.key(seed)

    def corrupted(ci: int, name: str, s: int) -> Iterator[dict]:  # one key per corruption, severity and batch
        for bi, b in enumerate(batches):
            yield {**b, "image": C.corrupt(name, fold(key, ci, s, bi), b["image"], s, frost_textures=frost_textures)}

    return _evaluate(model, batches, corrupted, mean, std, corruptions, severities)


def _evaluate(model, clean, corrupted: Callable, mean, std, corruptions, severities, **extra) -> dict:
    """Top-1 on the `clean` batches and on `corrupted(i, name, severity)` (the batches of the i-th
    corruption at that severity), all [0, 1] pixels; CE, mCE and relative mCE from the errors."""
    mean, std = tuple(mean), tuple(std)
    accuracy = lambda batches: top1(batches, lambda i, b: logits_from_pixels(model, b["image"], mean=mean, std=std))
    clean_top1 = accuracy(clean)
    table = {n: [accuracy(corrupted(ci, n, s)) for s in severities] for ci, n in enumerate(corruptions)}
    errors = {n: [1.0 - a for a in v] for n, v in table.items()}
    out = {"clean_top1": clean_top1, "severities": list(severities), "top1": table, **extra}
    out.update(mean_corruption_error(errors, clean_error=1.0 - clean_top1, severities=severities))
    return out


def imagenet_c_folder(
    root: str, name: str, severity: int, *, batch_size: int = 64, classes: Sequence[str] | None = None
) -> Iterator[dict]:
    """Batches of a released ImageNet-C folder `root/<name>/<severity>/<wnid>/*.JPEG`.

    Images are read as they are stored (224 px, RGB, [0, 1]); labels are positions of the wnid in
    `classes` (default: the sorted wnids found, which is ImageNet's standard class order).
    """
    from etils import epath
    from PIL import Image

    folder = epath.Path(root) / name / str(severity)
    if not folder.exists():
        raise UserError(
            f"{folder} does not exist; expected an ImageNet-C folder <root>/<corruption>/<severity>/<wnid>/"
        )
    wnids = list(classes) if classes is not None else sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(f, i) for i, w in enumerate(wnids) for f in sorted((folder / w).iterdir())]
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        imgs = []
        for f, _ in chunk:
            with f.open("rb") as fh:
                imgs.append(np.asarray(Image.open(fh).convert("RGB"), np.float32) / 255.0)
        yield {"image": np.stack(imgs), "label": np.asarray([i for _, i in chunk], np.int32)}


def imagenet_c_tfds(
    data_dir: str | None, name: str, severity: int, *, batch_size: int = 64, split: str = "validation"
) -> Iterator[dict]:
    """Batches of the tfds build `imagenet2012_corrupted/<name>_<severity>` under `data_dir`
    (prepared as array_record; never downloaded): [0, 1] pixels as stored, labels as in ImageNet."""
    from nest_jax.data.tfds_source import TfdsSource

    records = TfdsSource.get(f"imagenet2012_corrupted/{name}_{severity}", data_dir).lookup(split)
    for start in range(0, len(records), batch_size):
        chunk = [records[i] for i in range(start, min(start + batch_size, len(records)))]
        yield {
            "image": np.stack([np.asarray(r["image"], np.float32) / 255.0 for r in chunk]),
            "label": np.asarray([r["label"] for r in chunk], np.int32),
        }


def run_stored_corruptions(
    model,
    load: Callable[[str, int], Iterable[dict]],
    clean: Iterable[dict],
    *,
    mean: tuple,
    std: tuple,
    corruptions: Sequence[str] = C.CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
) -> dict:
    """As `run_corruptions`, on a stored ImageNet-C: `load(name, severity)` yields its batches
    ([0, 1] pixels), e.g. `functools.partial(imagenet_c_tfds, data_dir)` or
    `functools.partial(imagenet_c_folder, root)`; `clean` the uncorrupted validation batches."""
    check_corruptions(corruptions, severities)
    corrupted = lambda ci, name, s: load(name, s)
    return _evaluate(model, clean, corrupted, mean, std, corruptions, severities, source="stored")
