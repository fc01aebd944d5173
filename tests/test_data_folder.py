"""Image-folder source: classes from subfolders, a corrupt file reported by name, all decodable."""
import logging

import numpy as np
import pytest
from PIL import Image

from nest_jax import data
from nest_jax.data.image_folder import ImageFolderSource
from tests._data_cfg import dataset_config

CLASSES = ["cat", "dog", "zebra"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train: 3 classes × 4 images (PNG, JPEG, grey PNG, odd size), a garbage JPEG in dog/ and a
    truncated one in cat/;
    val: 2 images per class. Each image is a flat colour whose red value encodes (class, i)."""
    root = tmp_path_factory.mktemp("folder")
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                value = 40 * c + 10 * i
                size = (20, 14) if i == 3 else (12, 12)
                if i == 2:
                    Image.new("L", size, value).save(d / f"{i}.png")
                else:
                    ext = "png" if i % 2 == 0 else "jpg"
                    Image.new("RGB", size, (value, 0, 255 - value)).save(d / f"{i}.{ext}")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    whole = (root / "train" / "cat" / "1.jpg").read_bytes()
    (root / "train" / "cat" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # truncated
    (root / "train" / "dog" / "notes.txt").write_text("ignored: not an image extension")
    return root


def _cfg(root, **kw):
    return dataset_config("image_folder", data_dir=str(root), eval_split="val", image_size=8,
                          num_channels=3, normalize="inception", **kw)


def test_classes_come_from_subfolders_and_corrupt_file_is_reported(folder, caplog):
    with caplog.at_level(logging.WARNING):
        info = data.get_info(_cfg(folder))
    assert info.num_classes == 3 and info.num_train == 12 and info.num_eval == 6
    source = ImageFolderSource.get(str(folder))
    assert source.classes == CLASSES
    bad = source.bad_files("train")
    assert sorted(p.split("/")[-1] for p, _ in bad) == ["broken.jpg", "cut.jpg"]
    assert "broken.jpg" in caplog.text and "cut.jpg" in caplog.text
    assert np.bincount(source.split("train").labels).tolist() == [4, 4, 4]


def test_folder_train_epoch_decodes_every_readable_file(folder):
    cfg = _cfg(folder)
    it = data.train_iterator(cfg, global_batch_size=4, seed=0, process_index=0, process_count=1)
    batches = [next(it) for _ in range(3)]  # one epoch: 12 readable images
    labels = np.concatenate([b["label"] for b in batches])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    images = np.concatenate([b["image"] for b in batches])
    assert images.shape == (12, 8, 8, 3) and np.abs(images).max() <= 1.0 + 1e-6


def test_folder_eval_reads_val_in_order_with_labels(folder):
    cfg = _cfg(folder)
    (batch,) = list(data.eval_iterator(cfg, global_batch_size=8, process_index=0,
                                       process_count=1))
    assert batch["mask"].tolist() == [1.0] * 6 + [0.0] * 2
    assert batch["label"][:6].tolist() == [0, 0, 1, 1, 2, 2]
    # Flat colours survive resizing: red channel in [-1, 1] units gives back 40·c + 10·i.
    red = (batch["image"][:6, 4, 4, 0] + 1) / 2 * 255
    np.testing.assert_allclose(red, [0, 10, 40, 50, 80, 90], atol=3)  # JPEG rounding
