"""Every shipped config (configs/*.py) with each of its get_config arguments, made small enough to
build and step on a CPU in seconds: `config_for_test(path, arg, tmp_path)`."""

import importlib.util
import os

import ml_collections
import numpy as np
from PIL import Image

from tests._data_cfg import write_tfds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")

# configs/<file>: the get_config arguments to cover (None: get_config() takes none).
CONFIG_ARGS = {
    "cifar10_nest.py": ["tiny", "small", "base"],
    "cifar100_nest.py": ["tiny", "small", "base"],
    "digits_deit_distilled.py": [None],
    "digits_nest_tiny.py": [None],
    "digits_vit.py": [None],
    "image_folder_example.py": [None],
    "imagenet_deit.py": ["tiny", "small", "base", "tiny_distilled", "small_distilled", "base_distilled"],
    "imagenet_nest.py": ["tiny", "small", "base"],
    "vit_b16_finetune_384.py": ["imagenet2012"],  # the argument is the tfds dataset name
}

SMALL_IMAGE = 32  # NesT's ImageNet hierarchy (patch 4, 3 levels) fits it with block_size 2
# tfds datasets written for the tests: splits and image sizes (ImageNet's vary, as real ones do).
TFDS_DATA = {
    "cifar10": (dict(train=16, test=12), ((32, 32),)),
    "cifar100": (dict(train=16, test=12), ((32, 32),)),
    "imagenet2012": (dict(train=16, validation=12), ((40, 52), (61, 37), (36, 36))),
}


def load_config(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()


def write_image_folder(root: str) -> None:
    """root/{train,val}/{cat,dog}/: a JPEG, a PNG and a grey PNG per class, assorted sizes."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i, (ext, mode, size) in enumerate(
                (("jpg", "RGB", (48, 40)), ("png", "RGB", (33, 50)), ("png", "L", (40, 40)))
            ):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).convert(mode).save(os.path.join(d, f"{i}.{ext}"))


def _small_nest(overrides, model_name: str) -> None:
    if model_name.startswith("nest_") and not model_name.endswith("_cifar"):
        overrides["block_size"] = SMALL_IMAGE // 16  # patch 4 · block · 2² = image size


def config_for_test(config_path: str, arg: str | None, tmp_path) -> ml_collections.ConfigDict:
    """The config `config_path` (a file name in configs/ or a path) with argument `arg`, its data
    written under tmp_path/data (a tfds array_record dataset or an image folder; digits need
    none), images at most 32 px (models resized to match: ViT/DeiT img_size, NesT block_size),
    global and eval batches of 8, 2 training steps, no periodic eval or checkpoint, in-process
    data loading. Teachers keep their (possibly empty) checkpoint path."""
    path = config_path if os.path.sep in config_path else os.path.join(CONFIG_DIR, config_path)
    c = load_config(path, arg)
    ds = c.dataset
    data_root = os.path.join(str(tmp_path), "data")
    if ds.name in TFDS_DATA:
        splits, sizes = TFDS_DATA[ds.name]
        write_tfds(ds.name, data_root, splits, sizes=sizes)
        ds.data_dir = data_root
    elif ds.name == "image_folder":
        ds.data_dir = os.path.join(data_root, "folder")
        if not os.path.isdir(ds.data_dir):
            write_image_folder(ds.data_dir)
    if ds.image_size > SMALL_IMAGE:
        ds.image_size = SMALL_IMAGE
        if c.model.get("img_size", None):
            c.model.img_size = SMALL_IMAGE
        _small_nest(c.model.overrides, c.model.name)
        for token in c.get("distill", {}):
            teacher = c.distill[token]
            _small_nest(teacher.overrides, teacher.model)
            if teacher.get("img_size", None):
                teacher.img_size = SMALL_IMAGE
    ds.num_workers = 0
    c.train.global_batch_size = 8
    c.train.eval_batch_size = 8
    c.train.num_train_steps = 2
    c.train.log_every_steps = 1
    c.train.eval_every_steps = 0
    c.train.checkpoint_every_steps = 0
    return c
