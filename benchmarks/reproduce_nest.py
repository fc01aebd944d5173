"""Rows of `benchmarks/reproduce.py` about NesT (Zhang et al. 2022): where GradCAT's tree walk and
the class activation map put the object, and NesT's data efficiency beside the ViT. Thresholds are
fixed here, before any run (see `reproduce_claims.py`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import reproduce_claims as C
from flax import nnx

from nest_jax.analysis.cam import box_from_cam, box_iou, class_activation_map
from nest_jax.analysis.forward import normalize
from nest_jax.analysis.gradcat import gradcat

BATCH = 100
CAM_THRESHOLD = 0.2  # Zhou et al. 2016's threshold on the min–max normalized map


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open box (y0, x0, y1, x1) of a boolean mask (H, W); the whole image when it is empty."""
    return box_from_cam(mask, threshold=0.5, mode="tight")  # a 0/1 map: the box of its ones


def box_coverage(boxes: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fraction of each box (B, 4) that the object mask (B, H, W) covers -> (B,)."""
    return np.asarray([m[y0:y1, x0:x1].mean() for m, (y0, x0, y1, x1) in zip(masks, boxes)], np.float64)


def centre_boxes(gt: np.ndarray, size: int) -> np.ndarray:
    """The baseline box: the mean ground-truth box size, centred in the image.  gt (B, 4) -> (B, 4)."""
    h, w = np.mean(gt[:, 2] - gt[:, 0]), np.mean(gt[:, 3] - gt[:, 1])
    y0, x0 = (size - h) / 2, (size - w) / 2
    return np.tile(np.round([y0, x0, y0 + h, x0 + w]).astype(int), (len(gt), 1))


def localize(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GradCAT's leaf boxes and CAM boxes of the predicted class.  x (N, H, W, 3) in [0, 1] -> (N, 4) each."""
    leaf, cam = [], []
    for i in range(0, len(x), BATCH):
        xb = normalize(jnp.asarray(x[i : i + BATCH]), C.MEAN, C.STD)
        leaf.append(np.asarray(gradcat(model, xb).boxes[:, -1]))
        up = np.asarray(class_activation_map(model, xb).upsampled)
        cam.append(np.asarray([box_from_cam(u, CAM_THRESHOLD, "largest") for u in up]))
    return np.concatenate(leaf), np.concatenate(cam)


def plot_boxes(images: np.ndarray, boxes: dict[str, np.ndarray]):
    """A row of images (N, H, W, 3) in [0, 1], each with its box (N, 4) of every named kind."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    colors = ("lime", "red", "yellow", "cyan")
    fig = Figure(figsize=(1.6 * len(images), 2.0))
    for i, img in enumerate(images):
        ax = fig.add_subplot(1, len(images), i + 1)
        ax.imshow(np.clip(img, 0, 1)), ax.set_xticks([]), ax.set_yticks([])
        for (name, b), color in zip(boxes.items(), colors):
            y0, x0, y1, x1 = (float(v) for v in b[i])
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, lw=1.5, label=name))
    fig.axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.05), ncol=len(boxes), fontsize=7, frameon=False)
    return fig


def localization_row(m: dict, nat: dict, out_dir) -> dict:
    model, x, masks = m["nest_natural"], nat["image"], nat["mask"]
    leaf, cam = localize(model, x)
    gt = np.asarray([mask_box(k) for k in masks])
    cover, chance = float(box_coverage(leaf, masks).mean()), float(masks.mean())
    corloc = lambda boxes: float(np.mean(box_iou(boxes, gt) >= 0.5))  # noqa: E731
    cam_iou, cam_loc = float(box_iou(cam, gt).mean()), corloc(cam)
    base = centre_boxes(gt, x.shape[1])
    base_iou, base_loc = float(box_iou(base, gt).mean()), corloc(base)
    plot_boxes(x[:8], {"object": gt[:8], "CAM": cam[:8], "GradCAT leaf": leaf[:8]}).savefig(
        out_dir / "nest_localization.png", dpi=100
    )
    return C.row(
        "NesT's GradCAT walk and CAM land on the object (Zhang et al. 2022, §5, Alg. 1 and Fig. 6)",
        "GradCAT's chosen blocks lie on the object of the explained class; NesT's CAM gives weakly "
        "supervised object boxes",
        f"GradCAT leaf block covered by the object {cover:.2f} (a random block: {chance:.2f}); CAM box IoU "
        f"{cam_iou:.2f}, CorLoc (IoU ≥ 0.5) {cam_loc:.2f}; a centred box of the mean object size: IoU "
        f"{base_iou:.2f}, CorLoc {base_loc:.2f} ({len(x)} test images, {x.shape[1]} px, clutter)",
        "reproduced: leaf coverage ≥ random + 0.2 and CAM CorLoc ≥ centred box + 0.2; partly: both greater",
        cover >= chance + 0.2 and cam_loc >= base_loc + 0.2,
        cover > chance and cam_loc > base_loc,
        f"{C.FIGURES}/nest_localization.png",
        models=("nest_natural",),
    )


def num_params(model) -> int:
    return sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def data_efficiency_row(m: dict, accs: dict, subset: int, full: int) -> dict:
    nest, vit = accs["nest_natural_subset"], accs["vit_natural_subset"]
    sizes = f"NesT {num_params(m['nest_natural']):,} parameters, ViT {num_params(m['vit_natural']):,}"
    return C.row(
        "NesT more data-efficient than ViT (Zhang et al. 2022, §4.2, Table 2)",
        "trained from scratch on small data (CIFAR), NesT far above DeiT of similar size",
        f"top-1 with {subset} / {full} training images: NesT {nest:.3f} / {accs['nest_natural']:.3f}, "
        f"ViT {vit:.3f} / {accs['vit_natural']:.3f} ({sizes}; on digits, 135 images: NesT 94.0 % vs ViT "
        "41.2 %, benchmarks/data_efficiency.py)",
        f"reproduced: NesT ≥ ViT + 0.05 at {subset} images; partly: greater",
        nest >= vit + 0.05,
        nest > vit,
        models=("nest_natural_subset", "vit_natural_subset"),
    )
