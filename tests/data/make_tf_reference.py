"""Writes tests/data/tf_reference.npz: outputs of the TensorFlow augmentation ops that the NumPy/PIL
ports must reproduce. It ran once, at commit 7f395d5 (the last commit with the TF pipeline in
nest_jax/data), with tensorflow-cpu 2.21.0; it cannot run after the port (the TF ops are gone):

    git checkout 7f395d5 -- nest_jax/data && PYTHONPATH=$PWD python tests/data/make_tf_reference.py

Contents: the fixed input images, each RandAugment op at levels (0.1, 0.5, 1.0) × signs (−1, +1),
tf.image contrast / saturation / hue adjustments at fixed factors, and the eval view (resize_crop,
resize) with bilinear and bicubic resizing, normalized.
"""

import ml_collections
import numpy as np

from nest_jax.data import preprocess, randaugment
from nest_jax.data._tf import tf

LEVELS = (0.1, 0.5, 1.0)
SIGNS = (-1.0, 1.0)


def fixed_image(h=20, w=24, seed=0):
    """Smooth colour gradients plus noise, quantized to 8 bits (as decoded images are)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([yy, xx, 1 - (yy + xx) / 2], -1) * 200 + rng.integers(0, 56, (h, w, 3))
    return (np.round(base) / 255.0).astype(np.float32)


def main():
    out = {}
    image = fixed_image()
    out["image"] = image
    for name_i, name in enumerate(randaugment.OPS):
        for level in LEVELS:
            for sign in SIGNS:
                y = randaugment.apply_op(tf.constant(name_i), tf.constant(image), tf.constant(level), tf.constant(sign))
                out[f"op/{name}/{level}/{int(sign)}"] = y.numpy()
    for f in (0.3, 1.7):
        out[f"contrast/{f}"] = tf.image.adjust_contrast(image, f).numpy()
        out[f"saturation/{f}"] = tf.image.adjust_saturation(image, f).numpy()
    for d in (-0.2, 0.05):
        out[f"hue/{d}"] = tf.image.adjust_hue(image, d).numpy()
    out["grayscale"] = tf.image.rgb_to_grayscale(image).numpy()
    big = fixed_image(37, 53, seed=1)
    out["eval_input"] = big
    for method in ("bilinear", "bicubic"):
        for mode in ("resize_crop", "resize"):
            cfg = ml_collections.ConfigDict(
                dict(
                    name="x",
                    image_size=16,
                    num_channels=3,
                    normalize="imagenet",
                    eval_resize=mode,
                    crop_fraction=0.875,
                    resize_method=method,
                )
            )
            out[f"eval/{mode}/{method}"] = preprocess.eval_image(tf.constant(big), cfg).numpy()
    np.savez_compressed("tests/data/tf_reference.npz", **out)
    print(len(out), "arrays")


if __name__ == "__main__":
    main()
