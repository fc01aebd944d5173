"""The on-device training code is importable without TensorFlow (the data pipelines' dependency)."""
import subprocess
import sys

CODE = """
import sys
sys.modules['tensorflow'] = None  # any `import tensorflow` now raises ImportError
import nest_jax.train.trainer, nest_jax.train.mixing, nest_jax.train.sharding, nest_jax.train.optim
import nest_jax.train.init_from, nest_jax.train.distill
assert 'nest_jax.data' not in sys.modules, 'nest_jax.train imported nest_jax.data'
assert sys.modules['tensorflow'] is None
print('ok')
"""


def test_train_modules_import_without_tensorflow():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
