"""`validate_config(config)`: the whole config checked against the schema before any work starts.

Types, ranges and names are checked field by field from one table (`FIELDS`, dotted path -> check);
then what one field cannot say alone: a schedule with no steps, an optimizer with no learning rate,
model names against the registry (with close matches), the model built abstractly
(`nnx.eval_shape`: shapes only, no weights) so that the model's own geometry check judges
`dataset.image_size`, a dataset name that looks like a misspelt built-in one, and the mesh against
the devices jax sees. The first problem found is raised as one `UserError` line naming the field,
the bad value and the fix; `nest_jax.main` and `train_and_evaluate` call this first, so a typo costs
no data loading and no compilation. `config.evals` kinds are checked where the evaluators are built.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

from nest_jax.errors import UserError
from nest_jax.paths import as_path
from nest_jax.train import optim
from nest_jax.train.config_base import MODES, base_config
from nest_jax.train.gan import LOSSES
from nest_jax.train.remat import POLICIES

# A check: value -> what is wrong with it ("must be ..."), or None when it is fine. A text with a
# "; " carries its own fix (close names); the others get the schema's default as the fix.
Check = Callable[[Any], str | None]

BUILTIN_DATASETS = ("digits", "shapes", "image_folder")  # nest_jax.data; any other name is a tfds name
DISTILL_KINDS = ("hard", "soft")  # nest_jax.train.losses
_MISSING = object()
# Fields whose schema default is a property of the dataset or model, not a fix to suggest.
_NO_DEFAULT_FIX = {"dataset.image_size", "dataset.num_channels", "model.img_size"}
# Configs (as JSON) whose networks built: `nest_jax.main` and then the training loop validate the
# same config, and the abstract build (about a second for a NesT-B) need not run twice.
_BUILT: set[str] = set()


def number(
    lo: float, hi: float | None = None, *, below_hi: bool = False, optional: bool = False, integral: bool = False
) -> Check:
    """A finite number in [lo, hi] ([lo, hi) with `below_hi`; no upper bound when hi is None), an int
    with `integral`, or None when `optional` (a placeholder field left unset)."""
    top = "" if hi is None else (f" and < {hi}" if below_hi else f" and ≤ {hi}")
    kind, cls = ("an integer", numbers.Integral) if integral else ("a finite number", numbers.Real)
    problem = f"must be {kind} ≥ {lo}{top}" + (" or None" if optional else "")

    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        fine = isinstance(v, cls) and not isinstance(v, bool) and (integral or math.isfinite(v)) and v >= lo
        return None if fine and (hi is None or (v < hi if below_hi else v <= hi)) else problem

    return check


def integer(lo: int, *, optional: bool = False) -> Check:
    """An int ≥ lo (None allowed when `optional`)."""
    return number(lo, optional=optional, integral=True)


def one_of(names: Sequence[str], *, optional: bool = False) -> Check:
    """One of `names`, with the closest ones named when it is not."""

    def check(v: Any) -> str | None:
        if (v is None and optional) or v in names:
            return None
        return f"is not one of {', '.join(names)}{_did_you_mean(v, names)}"

    return check


def _did_you_mean(value: Any, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _optimizer_fields(prefix: str) -> dict[str, Check]:
    return {
        f"{prefix}.name": one_of(optim.OPTIMIZERS),
        f"{prefix}.lr": number(0, optional=True),
        f"{prefix}.base_lr": number(0, optional=True),
        f"{prefix}.base_batch": integer(1),
        f"{prefix}.weight_decay": number(0),
        f"{prefix}.wd_mask": one_of(optim.WD_MASKS),
        f"{prefix}.b1": number(0, 1, below_hi=True),
        f"{prefix}.b2": number(0, 1, below_hi=True),
        f"{prefix}.eps": number(0),
        f"{prefix}.momentum": number(0, 1, below_hi=True),
        f"{prefix}.clip_norm": number(0),
        f"{prefix}.schedule": one_of(optim.SCHEDULES),
        f"{prefix}.warmup_steps": integer(0, optional=True),
        f"{prefix}.warmup_epochs": number(0),
        f"{prefix}.warmup_init_lr": number(0),
        f"{prefix}.min_lr": number(0),
        f"{prefix}.layer_decay": number(0),
        f"{prefix}.ema_decay": number(0, 1, below_hi=True),
        f"{prefix}.accum_steps": integer(1),
        f"{prefix}.mu_dtype": one_of(optim.MU_DTYPES, optional=True),
    }


# Every field whose type and range (or names) are known without building anything, in schema order.
FIELDS: dict[str, Check] = {
    "seed": integer(0),
    "mode": one_of(MODES),
    "task": one_of(("classification", "gan")),
    "model.img_size": integer(1, optional=True),
    "model.remat_policy": one_of(POLICIES),
    "dataset.image_size": integer(1),
    "dataset.num_channels": integer(1),
    "dataset.repeated_aug": integer(1),
    "dataset.eval_resize": one_of(("resize_crop", "resize", "none")),
    "dataset.crop_fraction": number(0, 1),
    "dataset.num_workers": integer(0),
    "dataset.max_image_pixels": integer(1),
    "dataset.augment_on": one_of(("host", "device")),
    "mix.mixup_alpha": number(0),
    "mix.cutmix_alpha": number(0),
    "mix.switch_prob": number(0, 1),
    "mix.label_smoothing": number(0, 1, below_hi=True),
    "mix.sampling": one_of(("nest", "beta")),
    # train.global_batch_size / eval_batch_size: the loop checks them against the mesh
    # (loop.train_and_evaluate: positive multiples of the batch-axis devices and processes).
    "train.num_epochs": number(0),
    "train.num_train_steps": integer(1, optional=True),
    "train.stop_after_steps": integer(1, optional=True),
    "train.log_every_steps": integer(1),
    "train.eval_every_steps": integer(0),
    "train.checkpoint_every_steps": integer(0),
    "train.max_to_keep": integer(0),
    **_optimizer_fields("optimizer"),
    "distill_kl_reduction": one_of(("batchmean", "deit")),
}
GAN_FIELDS: dict[str, Check] = {
    "train.global_batch_size": integer(1),
    "gan.latent_dim": integer(1),
    "gan.loss": one_of(LOSSES),
    "gan.r1_gamma": number(0),
    "gan.ema_decay": number(0, 1, below_hi=True),
    "gan.ema_start_step": integer(0),
    **_optimizer_fields("gan.g_optimizer"),
    **_optimizer_fields("gan.d_optimizer"),
}


def validate_config(config: Any, *, check_dataset: bool = True) -> None:
    """Raises `UserError` (one line: field, bad value, fix) at the first field the run cannot use.

    config: a config built on `config_base.base_config()`; fields it lacks are not checked.
    check_dataset: False when the caller supplies its own data module (then `dataset.name` is its
    business, not `nest_jax.data`'s).
    """
    from nest_jax.data.preprocess import NORMALIZATION  # same layer; numpy/PIL only

    gan = _get(config, "task") == "gan"
    normalize = one_of((*NORMALIZATION, "cifar"))  # "cifar": the CIFAR-10 or -100 figures by dataset name
    for path, check in {**FIELDS, "dataset.normalize": normalize, **(GAN_FIELDS if gan else {})}.items():
        _check(config, path, check)
    epochs = _get(config, "train.num_epochs")
    if _get(config, "mode") == "train" and _get(config, "train.num_train_steps") is None and epochs == 0:
        raise _fail(
            "train.num_epochs",
            epochs,
            "with train.num_train_steps unset leaves nothing to train",
            "set --config.train.num_train_steps=N or --config.train.num_epochs=E (E > 0)",
        )
    for prefix in ("gan.g_optimizer", "gan.d_optimizer") if gan else ("optimizer",):
        if _get(config, f"{prefix}.lr") is None and _get(config, f"{prefix}.base_lr") is None:
            raise _fail(
                f"{prefix}.lr",
                None,
                f"and {prefix}.base_lr=None: no learning rate",
                f"set --config.{prefix}.lr=0.001, or --config.{prefix}.base_lr (scaled by batch / base_batch)",
            )
    if check_dataset:
        _check_dataset_name(config)
    _check_mesh(config)
    _check_models(config, gan)
    _check_task_reads(config, gan)


# What a GAN run does not read, with where its own setting is (a classifier reads no `gan` field): a
# value other than the schema's default there would be silently ignored, so it is refused.
_CLASSIFIER_ONLY = {
    "model": "the GAN's networks are gan.generator and gan.discriminator",
    "optimizer": "the GAN's optimizers are gan.g_optimizer and gan.d_optimizer",
    "mix": "a GAN trains on unmixed images",
    "distill": "a GAN has no distillation teachers",
    "distill_kl_reduction": "a GAN has no distillation teachers",
    "init_from": "a GAN starts from scratch",
}
_GAN_OPTIMIZER_UNREAD = {
    "ema_decay": "the EMA generator follows gan.ema_decay",
    "warmup_epochs": "a GAN's warmup is counted in steps: set warmup_steps",
    "schedule": "a GAN's learning rates are constant after warmup_steps",
}


def _check_task_reads(config: Any, gan: bool) -> None:
    """One line for the first field set away from the schema's default that the run's task would
    ignore (`model.name` may name a GAN's generator, as configs/*_gan.py do)."""
    if gan and _get(config, "dataset.augment_on") == "device":
        raise _fail("dataset.augment_on", "device", "is for task='classification'", 'set it to "host"')
    if gan:
        unread = list(_CLASSIFIER_ONLY.items()) + [
            (f"gan.{net}.{k}", why)
            for net in ("g_optimizer", "d_optimizer")
            for k, why in _GAN_OPTIMIZER_UNREAD.items()
        ]
    else:
        unread = [("gan", "only a GAN run reads config.gan: set --config.task=gan")]
    task, default = _get(config, "task"), base_config()
    for section, why in unread:
        for path, value in _leaves(_get(config, section), section):
            want = _get(default, path)
            if path == "model.name" or _plain(value) == _plain(want):
                continue
            problem = f"is not read by task={task!r} ({why})"
            if want is _MISSING:  # an entry the schema does not have (a distillation teacher)
                entry = ".".join(path.split(".")[: section.count(".") + 2])
                raise UserError(f"{entry} {problem}; remove it")
            raise _fail(path, value, problem, f"leave it at the schema's default, {want!r}")


def _plain(value: Any) -> Any:
    """An (empty) ConfigDict as a dict: ConfigDict equality also compares the locked flag."""
    return value.to_dict() if hasattr(value, "to_dict") else value


def _leaves(node: Any, path: str) -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf under `node` (itself when it is one)."""
    if not hasattr(node, "keys") or not node.keys():
        return [] if node is _MISSING else [(path, node)]
    return [leaf for k in node.keys() for leaf in _leaves(node[k], f"{path}.{k}")]


def _get(config: Any, path: str) -> Any:
    node = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node


def _fail(path: str, value: Any, problem: str, fix: str = "") -> UserError:
    return UserError(f"{path}={value!r} {problem}{'; ' + fix if fix else ''}")


def _check(config: Any, path: str, check: Check) -> None:
    value = _get(config, path)
    if value is _MISSING:
        return
    problem = check(value)
    if problem is None:
        return
    default = _get(base_config(), path)
    if "; " in problem or path in _NO_DEFAULT_FIX or default is _MISSING or check(default) is not None:
        fix = ""
    elif default is None:
        fix = f"set --config.{path}=None to leave it unset (the schema's default)"
    else:
        fix = f"set --config.{path}={default} (the schema's default)"
    raise _fail(path, value, problem, fix)


def _check_model_name(path: str, name: Any) -> None:
    from nest_jax.models import list_models

    names = list_models()
    if name not in names:
        hint = _did_you_mean(name, names)
        raise _fail(path, name, f"is not a registered model{hint} (nest_jax.models.list_models() names them all)")


def _check_models(config: Any, gan: bool) -> None:
    """Names against the registry, then each trained network built abstractly: its own config
    (ViTConfig, NestConfig, ...) judges the image size and the overrides."""
    from flax import nnx

    if gan:
        from nest_jax.train.gan import build_discriminator, build_generator

        builds = {"gan.generator": build_generator, "gan.discriminator": build_discriminator}
    else:
        from nest_jax.train.trainer import build_model

        builds = {"model": lambda c, rngs: build_model(c, 10, rngs)}  # the class count shapes no geometry
    for group in builds:
        _check_model_name(f"{group}.name", _get(config, f"{group}.name"))
    for token, teacher in (_get(config, "distill") or {}).items():
        _check_model_name(f"distill.{token}.model", teacher.model)
        _check(config, f"distill.{token}.kind", one_of(DISTILL_KINDS))
    key = config.to_json_best_effort(sort_keys=True) if hasattr(config, "to_json_best_effort") else None
    if key is not None and key in _BUILT:
        return
    for group, build in builds.items():
        try:
            nnx.eval_shape(lambda build=build: build(config, nnx.Rngs(0)))
        except (ValueError, TypeError) as e:
            img = _get(config, "model.img_size") if group == "model" else None
            where = f"model.img_size={img}" if img else f"dataset.image_size={config.dataset.image_size}"
            also = f" and its {group}.overrides" if _get(config, f"{group}.overrides") else ""
            message = " ".join(str(e).split())
            raise UserError(
                f"{group}.name={_get(config, f'{group}.name')!r} cannot be built with {where}{also}: {message}"
            ) from e
    if key is not None:
        _BUILT.add(key)


def _check_dataset_name(config: Any) -> None:
    """Only a name close to a built-in one that is not a tfds dataset prepared under `data_dir`
    is refused: which tfds names exist cannot be known offline."""
    name = _get(config, "dataset.name")
    if name is _MISSING or name in BUILTIN_DATASETS:
        return
    if not name:
        raise _fail(
            "dataset.name", name, "names no dataset", f"set it to one of {', '.join(BUILTIN_DATASETS)} or a tfds name"
        )
    close = difflib.get_close_matches(name, BUILTIN_DATASETS, n=1, cutoff=0.75)
    if not close:
        return
    data_dir = _get(config, "dataset.data_dir") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    folder = name.split(":")[0].split("/")[0]
    if (as_path(data_dir) / folder).exists():
        return  # a prepared tfds dataset that happens to look like a built-in name
    raise _fail(
        "dataset.name",
        name,
        f"is not a built-in dataset; did you mean {close[0]}? (a tfds name must be prepared first: "
        f"tfds build {folder} --data_dir={data_dir} --file_format=array_record)",
    )


def _check_mesh(config: Any) -> None:
    """The product of the mesh axes must be the device count (-1: the devices the others leave)."""
    axes = _get(config, "mesh.axes")
    if axes is _MISSING:
        return
    axes = dict(axes)
    for name, size in axes.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or (size < 1 and size != -1):
            raise _fail(f"mesh.axes.{name}", size, "must be an integer ≥ 1, or -1 for the devices the others leave")
    flexible = -1 in axes.values()
    if list(axes.values()).count(-1) > 1:
        raise _fail("mesh.axes", axes, "has more than one -1", "leave -1 on one axis (data) and give the others sizes")
    import jax

    if _get(config, "distributed.enabled") and not jax.distributed.is_initialized():
        return  # the device count is known only after jax.distributed.initialize; checked again then
    devices = jax.device_count()
    known = math.prod(s for s in axes.values() if s != -1)
    if (devices % known == 0) if flexible else (known == devices):
        return
    free = next((n for n, s in axes.items() if s == -1), "data" if "data" in axes else next(iter(axes)))
    others = math.prod(s for n, s in axes.items() if n != free and s != -1)
    fix = (
        f"set --config.mesh.axes.{free}=-1 (the devices the other axes leave)"
        if devices % others == 0
        else "make the product of the axes divide the device count"
    )
    raise _fail("mesh.axes", axes, f"needs {known}{' × k' if flexible else ''} devices, jax sees {devices}", fix)
