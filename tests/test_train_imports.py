"""The on-device training code is importable without TensorFlow (the data pipelines' dependency)."""

import subprocess
import sys

CODE = """
import sys
sys.modules['tensorflow'] = None  # any `import tensorflow` now raises ImportError
import nest_jax.train.trainer, nest_jax.train.mixing, nest_jax.train.sharding, nest_jax.train.optim
import nest_jax.train.init_from, nest_jax.train.distill
import jax, numpy as np
from nest_jax.train.config_base import base_config
from nest_jax.train.sharding import make_mesh
c = base_config()
c.model.name = 'vit_tiny_patch16_224'
c.model.overrides = dict(patch_size=4, dim=16, depth=1, num_heads=2, mlp_dim=32)
c.dataset.update(dict(image_size=8, num_channels=3))
c.mix.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1))
c.optimizer.lr = 1e-3
tr = nest_jax.train.trainer.make_trainer(c, make_mesh({'data': 1}, jax.devices()[:1]), num_classes=4,
                                         num_train_steps=2, warmup_steps=0)
batch = {'image': jax.ShapeDtypeStruct((4, 8, 8, 3), np.float32), 'label': jax.ShapeDtypeStruct((4,), np.int32)}
tr.train_step.trace(tr.abstract_state, batch, jax.eval_shape(tr.init_rest), {})  # traces the mixing too
assert 'nest_jax.data' not in sys.modules, 'nest_jax.train imported nest_jax.data'
assert sys.modules['tensorflow'] is None
print('ok')
"""


def test_train_modules_import_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
