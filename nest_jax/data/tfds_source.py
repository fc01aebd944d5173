"""tensorflow-datasets source: any prepared tfds dataset by name and `data_dir`; never downloads.

Records are read by index through `tfds.data_source(name, split=…, data_dir=…)`, a random-access
reader of array_record files that needs no TensorFlow: `lookup(split)[i]` →
{"image": uint8 (H, W, C), "label": int}. Datasets must therefore be prepared in the array_record
format (`tfds build NAME --file_format=array_record`); one prepared only as TFRecord is an error
saying how to convert it, or can be read through TensorFlow with the optional `[tf]` extra
(`dataset.tfrecord: True`, tfrecord_source.py). A dataset that is not prepared under `data_dir`
is an error saying how to prepare it.
"""

from __future__ import annotations


def _prepare_hint(name: str, data_dir: str | None) -> str:
    where = data_dir or "~/tensorflow_datasets (or $TFDS_DATA_DIR)"
    return (
        f"Prepare it once on a machine with network access:\n"
        f"  tfds build {name} --data_dir={where} --file_format=array_record\n"
        f"or in Python: tfds.builder({name!r}, data_dir={where!r}, "
        f"file_format='array_record').download_and_prepare()\n"
        f"(ImageNet needs its tar files placed in <data_dir>/downloads/manual first), then "
        f"copy that data_dir here and set config.dataset.data_dir to it."
    )


def _convert_hint(name: str, dataset_dir: str) -> str:
    return (
        f"tfds dataset {name!r} in {dataset_dir} is prepared as TFRecord only, which "
        f"nest_jax reads without TensorFlow only in the array_record format. Convert it once "
        f"(needs TensorFlow and apache-beam):\n"
        f"  tfds convert_format --dataset_version_dir={dataset_dir} "
        f"--out_file_format=array_record\n"
        f"or rebuild it with `tfds build {name} --file_format=array_record`, or read it "
        f'through TensorFlow: pip install -e ".[tf]" and set config.dataset.tfrecord=True.'
    )


class NamedSource:
    """One instance per (name, data_dir, keys) and class: metadata is read once per run. A subclass
    sets `builder` (the tfds builder) and defines `lookup(split)`."""

    _instances: dict = {}

    @classmethod
    def get(cls, name: str, data_dir: str | None, *, image_key: str = "image", label_key: str = "label"):
        key = (cls, name, data_dir, image_key, label_key)
        if key not in NamedSource._instances:
            NamedSource._instances[key] = cls(name, data_dir, image_key=image_key, label_key=label_key)
        return NamedSource._instances[key]

    def num_examples(self, split: str) -> int:
        try:
            return self.builder.info.splits[split].num_examples
        except (KeyError, ValueError):  # no split metadata: count the records
            return len(self.lookup(split))


class TfdsSource(NamedSource):
    def __init__(self, name: str, data_dir: str | None, *, image_key: str = "image", label_key: str = "label"):
        import tensorflow_datasets as tfds

        self._tfds = tfds
        self.name, self.data_dir = name, data_dir
        self.image_key, self.label_key = image_key, label_key
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise ValueError(
                f"tfds has no dataset {name!r} (dataset.name); the names are those of "
                f"`tfds build --help` / tfds.list_builders(). {str(e)[:200]}"
            ) from e
        if not self.builder.is_prepared():
            raise FileNotFoundError(
                f"tfds dataset {name!r} is not prepared under data_dir={data_dir!r} (looked in "
                f"{self.builder.data_dir}); it is never downloaded at run time.\n" + _prepare_hint(name, data_dir)
            )
        info = self.builder.info
        formats = {
            str(getattr(f, "value", f)) for f in [info.file_format, *getattr(info, "alternative_file_formats", [])]
        }
        self.array_record = "array_record" in formats
        features = info.features
        # Unlabelled datasets (e.g. downsampled_imagenet for generative models) read as one class, label 0.
        self.labelled = label_key in features
        self.num_classes = features[label_key].num_classes if self.labelled else 1
        self.channels = features[image_key].shape[-1] or 3
        self._sources: dict = {}

    def lookup(self, split: str) -> TfdsRecords:
        if split not in self._sources:
            if not self.array_record:
                raise FileNotFoundError(_convert_hint(self.name, str(self.builder.data_dir)))
            source = self._tfds.data_source(self.name, split=split, data_dir=self.data_dir)
            self._sources[split] = TfdsRecords(source, self.image_key, self.label_key if self.labelled else None)
        return self._sources[split]


class TfdsRecords:
    """`records[i]` → {"image": uint8 (H, W, C), "label": int} from a tfds data source (label 0 when
    `label_key` is None: an unlabelled dataset)."""

    def __init__(self, source, image_key: str, label_key: str | None):
        self.source, self.image_key, self.label_key = source, image_key, label_key

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        record = self.source[int(index)]
        label = int(record[self.label_key]) if self.label_key is not None else 0
        return {"image": record[self.image_key], "label": label}
