"""Optional source for tfds datasets prepared only as TFRecord (`config.dataset.tfrecord: True`),
read through TensorFlow — install it with `pip install -e ".[tf]"`.

TensorFlow is imported only when such a dataset is requested (never by the default pipeline).
A split's records are read once, in file order, with the images still encoded, and kept in memory
as (encoded bytes, label); `lookup(split)[i]` decodes record i with PIL, so the records go through
the same grain pipeline and NumPy augmentations as every other source (random access, per-epoch
permutations, resume). Memory ≈ the split's file size: fine for CIFAR-sized data; convert larger
datasets to array_record instead (tfds_source.py says how).
"""

from __future__ import annotations

import functools
import io

import numpy as np

from nest_jax.data.digits import ArrayRecords
from nest_jax.data.tfds_source import TfdsSource
from nest_jax.errors import UserError


class TfrecordSource(TfdsSource):
    """A tfds dataset prepared only as TFRecord, read through tf.data (the `[tf]` extra)."""

    def __init__(self, name: str, data_dir: str | None, *, image_key: str = "image", label_key: str = "label"):
        try:
            import tensorflow as tf
        except ImportError as e:
            raise UserError(
                "config.dataset.tfrecord=True reads TFRecord files through TensorFlow, "
                'which is not installed: pip install -e ".[tf]" (or convert the '
                "dataset to array_record and drop tfrecord)"
            ) from e
        try:
            tf.config.set_visible_devices([], "GPU")  # TF only reads files; JAX owns accelerators
        except RuntimeError:  # TF already initialised its devices
            pass
        # The same checks and messages as the array_record source (unknown name, not prepared).
        super().__init__(name, data_dir, image_key=image_key, label_key=label_key)
        self._splits: dict = {}

    def lookup(self, split: str) -> ArrayRecords:
        if split not in self._splits:
            import tensorflow_datasets as tfds

            ds = self.builder.as_dataset(
                split=split,
                shuffle_files=False,
                decoders={self.image_key: tfds.decode.SkipDecoding()},
                read_config=tfds.ReadConfig(try_autocache=False),
            )
            images, labels = [], []
            for record in ds.as_numpy_iterator():
                images.append(bytes(record[self.image_key]))
                labels.append(int(record[self.label_key]))
            decode = functools.partial(_decode, channels=self.channels)  # picklable, for grain's workers
            self._splits[split] = ArrayRecords(images, np.asarray(labels, np.int32), decode)
        return self._splits[split]


def _decode(data: bytes, channels: int) -> np.ndarray:
    """Encoded image bytes → uint8 (H, W, C), decoded with PIL."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return pixels[..., None] if pixels.ndim == 2 else pixels
