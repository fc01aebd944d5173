"""Every default lives in one schema, `nest_jax.train.config_base.base_config()`: each shipped config
has exactly its fields (nothing the schema lacks, nothing dropped), the GAN and shapes settings
included, and fields nothing reads are gone from the schema and from every config in the repository."""

import re
from pathlib import Path

import pytest

from nest_jax.overrides import field_paths
from nest_jax.train.config_base import base_config, gan_section
from tests._configs import CONFIG_ARGS, load_config

REPO = Path(__file__).resolve().parents[1]
# Every get_config argument of every shipped config, GAN and shape-token runs included.
ALL_ARGS = {
    **CONFIG_ARGS,
    "cifar10_nest_gan.py": ["nest", "sagan", "nest,fid"],
    "digits_nest_gan.py": [None, "fid"],
    "imagenet64_nest_gan.py": ["nest", "sagan", "nest,fid"],
    "shapes_tokens.py": ["resnet_stylized", "resnet_natural", "deit_shape", "deit_distilled"],
}
# Groups whose keys are open by design: a model's config fields (`overrides`), distillation
# teachers by token, and evaluators by name (their settings are the evaluator's signature).
OPEN = re.compile(r"^(model\.overrides|gan\.(generator|discriminator)\.overrides|distill|evals)\.")


def _fields(config) -> set[str]:
    return {p for p in field_paths(config) if not OPEN.match(p)}


def test_every_config_file_is_covered():
    assert set(ALL_ARGS) == {p.name for p in (REPO / "configs").glob("*.py")}


@pytest.mark.parametrize("name, arg", [(n, a) for n, args in ALL_ARGS.items() for a in args])
def test_config_has_exactly_the_schemas_fields(name, arg):
    """Catches a config that sets a field the schema lacks (the old shapes_* and gan fields, which
    had private defaults where they were read) or that replaces a section by a partial one."""
    config = load_config(str(REPO / "configs" / name), arg)
    schema = _fields(base_config())
    have = _fields(config)
    assert not have - schema, f"{name}:{arg} sets fields the schema lacks: {sorted(have - schema)}"
    assert not schema - have, f"{name}:{arg} drops schema fields: {sorted(schema - have)}"


def test_schema_holds_the_gan_and_shapes_sections_and_no_dead_fields():
    c = base_config()
    assert c.gan.to_dict() == gan_section().to_dict() and c.gan.ema_decay == 0.999
    assert set(c.dataset.shapes) == {
        "variant",
        "num_classes",
        "num_train",
        "num_test",
        "seed",
        "clutter",
        "rotation",
        "min_scale",
        "max_scale",
    }  # each read by nest_jax.data.get_source
    for key in ("validate_files", "image_key", "label_key", "tfrecord"):
        assert key in c.dataset
    assert "local_device_ids" in c.distributed  # read by nest_jax.main.initialize_distributed
    assert c.dataset.augment.min_area == 0.05  # the NesT recipe's; DeiT/ViT configs set 0.08
    assert "shuffle_buffer" not in c.dataset and "cache" not in c.dataset


def test_no_config_in_the_repository_sets_the_dead_dataset_fields():
    """`dataset.shuffle_buffer` / `dataset.cache` were set by 8 configs but read by nothing."""
    dead = re.compile(r"\b(shuffle_buffer|cache)\s*=|[\"'](shuffle_buffer|cache)[\"']\s*:")
    here = Path(__file__).resolve()
    files = [
        p
        for folder in ("configs", "tests", "benchmarks", "notebooks")
        for p in (REPO / folder).rglob("*")
        if p.suffix in (".py", ".ipynb") and p.resolve() != here
    ]
    offenders = [str(p.relative_to(REPO)) for p in files if dead.search(p.read_text())]
    assert not offenders, offenders
