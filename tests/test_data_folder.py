"""Image-folder source: classes from subfolders, corrupt files (garbage, truncated, broken
Huffman tables, broken entropy-coded data) reported by name, an empty class folder refused."""

import io
import logging
import os
import shutil
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from nest_jax import data
from nest_jax.data.image_folder import ImageFolderSource, check_image
from nest_jax.errors import UserError
from tests._data_cfg import dataset_config

CLASSES = ["cat", "dog", "zebra"]


def _photo_jpeg() -> bytes:
    """A 120 × 90 JPEG with real entropy-coded content (smooth random colours)."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize((120, 90), Image.BILINEAR).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def broken_huffman_table(jpeg: bytes) -> bytes:
    """The first Huffman table's 16 code-length counts set to 255 (an impossible code): the header
    still parses, decoding fails (TF: `jpeg::Uncompress failed`)."""
    data = bytearray(jpeg)
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(data)


def broken_entropy_data(jpeg: bytes) -> bytes:
    """380 bytes of the entropy-coded scan overwritten with 0xFF (a run of invalid markers);
    the file still ends with the end-of-image marker."""
    data = bytearray(jpeg)
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    data[start + 20 : start + 400] = b"\xff" * 380
    return bytes(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train: 3 classes × 4 images (PNG, JPEG, grey PNG, odd size), a garbage JPEG in dog/, a
    truncated one in cat/, a broken-Huffman-table and a broken-scan JPEG in zebra/;
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
    (root / "train" / "zebra" / "huffman.jpg").write_bytes(broken_huffman_table(_photo_jpeg()))
    (root / "train" / "zebra" / "scan.jpg").write_bytes(broken_entropy_data(_photo_jpeg()))
    return root


def _cfg(root, **kw):
    return dataset_config(
        "image_folder", data_dir=str(root), eval_split="val", image_size=8, num_channels=3, normalize="inception", **kw
    )


def test_classes_come_from_subfolders_and_corrupt_file_is_reported(folder, caplog):
    with caplog.at_level(logging.WARNING):
        info = data.get_info(_cfg(folder))
    assert info.num_classes == 3 and info.num_train == 12 and info.num_eval == 6
    source = ImageFolderSource.get(str(folder), train_split="train", validate=True, max_pixels=10**6)
    assert source.classes == CLASSES
    bad = source.bad_files("train")
    assert sorted(p.split("/")[-1] for p, _ in bad) == ["broken.jpg", "cut.jpg", "huffman.jpg", "scan.jpg"]
    for name in ("broken.jpg", "cut.jpg", "huffman.jpg", "scan.jpg"):
        assert name in caplog.text
    assert "skipping 4 unusable file(s)" in caplog.text
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
    (batch,) = list(data.eval_iterator(cfg, global_batch_size=8, process_index=0, process_count=1))
    assert batch["mask"].tolist() == [1.0] * 6 + [0.0] * 2
    assert batch["label"][:6].tolist() == [0, 0, 1, 1, 2, 2]
    # Flat colours survive resizing: red channel in [-1, 1] units gives back 40·c + 10·i.
    red = (batch["image"][:6, 4, 4, 0] + 1) / 2 * 255
    np.testing.assert_allclose(red, [0, 10, 40, 50, 80, 90], atol=3)  # JPEG rounding


def test_corrupt_jpegs_pass_a_header_check_but_fail_the_full_decode():
    """What the folder check must catch: PIL opens both files and reads their size, the
    intact original decodes, the broken ones fail only when decoded in full."""
    good = _photo_jpeg()
    for broken in (broken_huffman_table(good), broken_entropy_data(good)):
        with Image.open(io.BytesIO(broken)) as image:
            assert image.size == (120, 90)
            with pytest.raises(OSError):
                image.load()
    with Image.open(io.BytesIO(good)) as image:
        image.load()


def test_unvalidated_corrupt_file_fails_with_its_name(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / split / "a" / "ok.png")
    (tmp_path / "train" / "a" / "scan.jpg").write_bytes(broken_entropy_data(_photo_jpeg()))
    cfg = _cfg(tmp_path, validate_files=False)
    ImageFolderSource._instances.clear()
    it = data.train_iterator(cfg, global_batch_size=2, seed=0, process_index=0, process_count=1)
    with pytest.raises(UserError, match="scan.jpg"):
        next(it)
    assert check_image(str(tmp_path / "train" / "a" / "scan.jpg"), max_pixels=10**6) is not None


def test_empty_class_folder_is_an_error_naming_it(folder, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    (root / "train" / "yak").mkdir()
    (root / "train" / "yak" / "readme.txt").write_text("no images here")
    ImageFolderSource._instances.clear()
    with pytest.raises(UserError, match=r"class folder .*yak holds no images"):
        data.get_info(_cfg(root))


def _one_class_folder(root, **files):
    """train/ and val/ with class `a`: an ordinary PNG plus `files` (name -> writer(path)) in train/a."""
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8), (1, 2, 3)).save(root / split / "a" / "ok.png")
    for name, write in files.items():
        write(root / "train" / "a" / name)
    ImageFolderSource._instances.clear()
    return root


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    """PIL opens a 16-bit grey PNG as mode I;16 and `convert("RGB")` clips it: 99.6% of this ramp
    came out as 255. The 8-bit value must be round(v / 257) in every channel."""
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    _one_class_folder(tmp_path, **{"deep.png": lambda p: Image.fromarray(ramp).save(p)})
    records = ImageFolderSource.get(str(tmp_path), train_split="train", validate=True, max_pixels=10**6).lookup("train")
    (index,) = [i for i, p in enumerate(records.paths) if p.endswith("deep.png")]
    image = records[index]["image"]
    want = np.rint(ramp / 257.0).astype(np.uint8)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], want)


def test_a_fifo_named_like_an_image_is_skipped_and_named(tmp_path, caplog):
    """A FIFO `fifo.jpg` in a class folder made indexing block forever in open()."""
    _one_class_folder(tmp_path, **{"fifo.jpg": lambda p: os.mkfifo(p)})
    fifo = tmp_path / "train" / "a" / "fifo.jpg"
    result = {}
    worker = threading.Thread(target=lambda: result.update(n=data.get_info(_cfg(tmp_path)).num_train), daemon=True)
    with caplog.at_level(logging.WARNING):
        worker.start()
        worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=10)
        pytest.fail("indexing blocked on a FIFO")
    assert result["n"] == 1
    assert f"{fifo}: a FIFO, not a regular file" in caplog.text


def test_an_image_above_the_pixel_limit_is_refused_from_its_header(tmp_path, caplog):
    """A 10000 x 10000 PNG (12 kB on disk, 100 M pixels) went through with PIL's raw
    DecompressionBombWarning at every decode; sixteen of them took 5.9 GB during validation. It is
    refused from its header (nothing decoded), named once in the skip warning, with no PIL warning;
    without validation, reading it is one line naming the file and the setting."""
    bomb = lambda p: Image.new("1", (10000, 10000)).save(p)  # noqa: E731
    _one_class_folder(tmp_path, **{"bomb.png": bomb})
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert data.get_info(_cfg(tmp_path)).num_train == 1
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "bomb.png: 10000x10000 = 100,000,000 pixels, above dataset.max_image_pixels=89,478,485" in caplog.text
    ImageFolderSource._instances.clear()
    src = ImageFolderSource.get(str(tmp_path), train_split="train", validate=False, max_pixels=89_478_485)
    records = src.lookup("train")
    (index,) = [i for i, p in enumerate(records.paths) if p.endswith("bomb.png")]
    with pytest.raises(UserError, match=r"bomb.png is 10000x10000 = 100,000,000 pixels") as info:
        records[index]
    assert "\n" not in str(info.value)
    # A limit raised on purpose lets it through.
    assert check_image(str(tmp_path / "train" / "a" / "bomb.png"), max_pixels=10**8) is None
