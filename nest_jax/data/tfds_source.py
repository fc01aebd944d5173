"""tensorflow-datasets source: any prepared tfds dataset by name and `data_dir`; never downloads.

A dataset that is not prepared under `data_dir` is an error saying how to prepare it. Records are
read with the image still encoded (SkipDecoding) so that skipping (resume) and caching are cheap;
`decode` turns a record into {"image": uint8 (H, W, C), "label"}. Per process, a split is read
as `tfds.even_splits(split, process_count)[process_index]`, files in a fixed order.
"""
from __future__ import annotations

from nest_jax.data._tf import tf


def _prepare_hint(name: str, data_dir: str | None) -> str:
    where = data_dir or "~/tensorflow_datasets (or $TFDS_DATA_DIR)"
    return (f"Prepare it once on a machine with network access:\n"
            f"  tfds build {name} --data_dir={where}\n"
            f"or in Python: tfds.builder({name!r}, data_dir={where!r}).download_and_prepare()\n"
            f"(ImageNet needs its tar files placed in <data_dir>/downloads/manual first), then "
            f"copy that data_dir here and set config.dataset.data_dir to it.")


class TfdsSource:
    random_access = False
    _instances: dict = {}

    @classmethod
    def get(cls, name: str, data_dir: str | None, *, image_key: str = "image",
            label_key: str = "label"):
        key = (name, data_dir, image_key, label_key)
        if key not in cls._instances:
            cls._instances[key] = cls(name, data_dir, image_key=image_key, label_key=label_key)
        return cls._instances[key]

    def __init__(self, name: str, data_dir: str | None, *, image_key: str = "image",
                 label_key: str = "label"):
        import tensorflow_datasets as tfds

        self._tfds = tfds
        self.name, self.image_key, self.label_key = name, image_key, label_key
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(f"tfds has no dataset {name!r} (dataset.name); the names are those of "
                             f"`tfds build --help` / tfds.list_builders(). {str(e)[:200]}") from e
        if not self.builder.is_prepared():
            raise FileNotFoundError(
                f"tfds dataset {name!r} is not prepared under data_dir={data_dir!r} (looked in "
                f"{self.builder.data_dir}); it is never downloaded at run time.\n"
                + _prepare_hint(name, data_dir))
        features = self.builder.info.features
        self.num_classes = features[label_key].num_classes
        self.channels = features[image_key].shape[-1] or 3

    def _as_dataset(self, split) -> tf.data.Dataset:
        ds = self.builder.as_dataset(
            split=split, shuffle_files=False,
            decoders={self.image_key: self._tfds.decode.SkipDecoding()},
            read_config=self._tfds.ReadConfig(try_autocache=False))
        keys = (self.image_key, self.label_key)
        return ds.map(lambda x: {k: x[k] for k in keys})

    def num_examples(self, split: str) -> int:
        try:
            return self.builder.info.splits[split].num_examples
        except (KeyError, ValueError):  # no split metadata (e.g. under tfds.testing.mock_data)
            return int(self._as_dataset(split).cardinality())

    def _shard(self, split: str, process_index: int, process_count: int):
        return self._tfds.even_splits(split, n=process_count)[process_index]

    def num_local_examples(self, split: str, *, process_index: int, process_count: int) -> int:
        n = int(self.read(split, process_index=process_index,
                          process_count=process_count).cardinality())
        if n < 0:  # unknown cardinality
            raise ValueError(f"cannot size the shard of {self.name} {split!r}")
        return n

    def read(self, split: str, *, process_index: int, process_count: int) -> tf.data.Dataset:
        """This process's shard of `split`: records {"image": encoded bytes, "label"}."""
        return self._as_dataset(self._shard(split, process_index, process_count))

    def decode(self, record) -> dict:
        image = record[self.image_key]
        if image.dtype == tf.string:
            image = tf.io.decode_image(image, channels=self.channels, expand_animations=False)
        return {"image": image, "label": record[self.label_key]}
