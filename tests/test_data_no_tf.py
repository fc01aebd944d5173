"""The input pipeline runs with TensorFlow unavailable (the default install has none)."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_digits_pipeline_runs_with_tensorflow_import_blocked():
    out = _run("""
        import sys
        sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
        import nest_jax.data as d
        from tests._data_cfg import FULL_AUGMENT, dataset_config
        cfg = dataset_config(image_size=16, augment=FULL_AUGMENT)
        batch = next(d.train_iterator(cfg, global_batch_size=8, seed=0, process_index=0,
                                      process_count=1))
        assert batch["image"].shape == (8, 16, 16, 1), batch["image"].shape
        next(d.eval_iterator(cfg, global_batch_size=8, process_index=0, process_count=1))
        assert sys.modules["tensorflow"] is None
        print("ok")
    """)
    assert out.strip() == "ok"


def test_folder_and_tfds_pipelines_run_with_tensorflow_not_installed(tmp_path):
    """TensorFlow hidden from the import system as if not installed (tensorflow_datasets then
    runs in its TF-free mode): an image folder and a mocked tfds dataset, train and eval."""
    out = _run(f"""
        import importlib.machinery, sys

        class NoTF(importlib.machinery.PathFinder):
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.partition(".")[0] == "tensorflow":
                    return None
                return super().find_spec(name, path, target)

        sys.meta_path[:] = [NoTF if f is importlib.machinery.PathFinder else f
                            for f in sys.meta_path]
        import numpy as np
        from PIL import Image
        import nest_jax.data as d
        from tests._data_cfg import FULL_AUGMENT, dataset_config, mock_tfds

        root = {str(tmp_path)!r}
        import os
        for split in ("train", "val"):
            for c in ("a", "b"):
                os.makedirs(os.path.join(root, "folder", split, c))
                for i in range(2):
                    Image.new("RGB", (20 + i, 17), (50 * i, 9, 200)).save(
                        os.path.join(root, "folder", split, c, f"{{i}}.jpg"))
        cfg = dataset_config("image_folder", data_dir=os.path.join(root, "folder"),
                             eval_split="val", image_size=16, num_channels=3,
                             normalize="imagenet", augment=dict(inception_crop=True, flip=True,
                             color_jitter=0.3, random_erasing=0.25,
                             randaugment=FULL_AUGMENT["randaugment"]))
        assert next(d.train_iterator(cfg, global_batch_size=4, seed=0, process_index=0,
                                     process_count=1))["image"].shape == (4, 16, 16, 3)
        assert next(d.eval_iterator(cfg, global_batch_size=4, process_index=0,
                                    process_count=1))["mask"].sum() == 4
        with mock_tfds("cifar10", os.path.join(root, "tfds"), 6):
            cfg = dataset_config("cifar10", data_dir=os.path.join(root, "tfds"), image_size=32,
                                 num_channels=3, normalize="cifar", eval_resize="none",
                                 augment=FULL_AUGMENT)
            assert next(d.train_iterator(cfg, global_batch_size=4, seed=0, process_index=0,
                                         process_count=1))["image"].shape == (4, 32, 32, 3)
            assert next(d.eval_iterator(cfg, global_batch_size=4, process_index=0,
                                        process_count=1))["mask"].sum() == 4
        assert not [m for m in sys.modules if m.partition(".")[0] == "tensorflow"]
        print("ok")
    """)
    assert out.strip().endswith("ok")
