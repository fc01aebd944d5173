"""NesT on CIFAR-100: the CIFAR-10 recipe (configs/cifar10_nest.py) on cifar100.

    python -m nest_jax.main --config=configs/cifar100_nest.py:tiny --workdir=/tmp/nest_cifar100

Paper top-1: 78.69 / 81.70 / 82.56 (tiny / small / base).
"""

import importlib.util
import os


def get_config(arg: str = "tiny"):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_nest.py")
    spec = importlib.util.spec_from_file_location("cifar10_nest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg, dataset="cifar100")
