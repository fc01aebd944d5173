"""The sharded train state and train step, built from a config and a mesh.

State (a pure pytree, checkpointed as is): {"step": int32, "params": pure dict, "opt_state",
"rng": uint32[2] raw key, optional "ema" (params-shaped) and "batch_stats"}. Shardings are derived
from shapes only; the state is created already sharded by `jax.jit(init, out_shardings=...)`.
The model's graph (`graphdef`) and its RNG-stream variables (`rest`, reseeded every step) stay
outside the state: they are a deterministic function of the config.

The train step never waits for the host: mixing selects between its branches instead of
branching (`mixing.mix_batch`), device augmentation between its ops, the EMA under gradient
accumulation is a `where`, and metrics stay on device until the loop reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx import traversals
from jax.sharding import Mesh

from nest_jax.train import losses, optim
from nest_jax.train import sharding as shd
from nest_jax.train.mixing import mix_batch

_AUGMENT_STREAM = 1  # fold_in tag of the device augmentation's key

DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16, "float32": jnp.float32}


def dtype_kwargs(overrides: Any) -> dict:
    """A model's config overrides as `create_model` keyword arguments (dtype strings -> jnp dtypes)."""
    kw = dict(overrides or {})
    for key in ("dtype", "param_dtype"):
        if isinstance(kw.get(key), str):
            kw[key] = DTYPES[kw[key]]
    return kw


def model_kwargs(config: Any, num_classes: int) -> dict:
    """`create_model` keyword arguments from config.model."""
    kw = dtype_kwargs(config.model.overrides)
    if config.model.get("pretrained"):  # the architecture fields named weights need (e.g. NesT's GELU)
        from nest_jax.convert.hub import model_kwargs as pretrained_kwargs

        kw = {**pretrained_kwargs(config.model.name, config.model.pretrained), **kw}
    kw.setdefault("in_chans", int(config.dataset.num_channels))
    kw["num_classes"] = num_classes
    kw["img_size"] = config.model.img_size or config.dataset.image_size
    return kw


def build_model(config: Any, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    from nest_jax.models import create_model

    model = create_model(config.model.name, rngs=rngs, **model_kwargs(config, num_classes))
    if config.model.remat:
        from nest_jax.train.remat import remat_layers

        remat_layers(model, policy=config.model.remat_policy)
    return model


def params_state(template_flat: list, pure: dict) -> nnx.State:
    """Pure dict -> nnx.State shaped like the template's flat state (for `nnx.merge`)."""
    flat = traversals.flatten_mapping(pure)
    return nnx.from_flat_state([(k, v.replace(flat[k])) for k, v in template_flat])


class Network:
    """An nnx model split at the jit boundary: its graph and the templates of its parameters and
    statistics, from shapes only. A train state holds the pure dicts; `merge` turns them back into
    the `nnx.Module` (the one way a train state becomes a model: train steps, evaluators, analyses).

    build: () -> nnx.Module, deterministic (fixed seeds): `init` and `rest` call it again.
    """

    def __init__(self, build: Callable[[], nnx.Module]):
        self.build = build
        self.graphdef, params, stats, _ = nnx.split(nnx.eval_shape(build), nnx.Param, nnx.BatchStat, ...)
        self.abstract_params = params  # nnx.State: the Variables carry the sharding names
        self.params_flat, self.stats_flat = list(nnx.to_flat_state(params)), list(nnx.to_flat_state(stats))

    def init(self) -> tuple[dict, dict | None]:
        """(params, batch statistics or None when the model has none) of a freshly built model."""
        _, params, stats, _ = nnx.split(self.build(), nnx.Param, nnx.BatchStat, ...)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(stats) if self.stats_flat else None

    def rest(self) -> nnx.State:
        """The variables outside params and statistics (RNG streams), as `merge` needs them."""
        return nnx.split(self.build(), nnx.Param, nnx.BatchStat, ...)[3]

    def merge(self, params: dict, stats: dict | None, rest: nnx.State) -> nnx.Module:
        """The model with these parameters and statistics; works inside and outside `jax.jit`."""
        rest = jax.tree.map(lambda v: v, rest)  # fresh RNG-stream Variables: reseeding mutates them
        return nnx.merge(
            self.graphdef, params_state(self.params_flat, params), params_state(self.stats_flat, stats or {}), rest
        )

    def stats(self, model: nnx.Module) -> dict | None:
        """The model's batch statistics as a pure dict (None when it has none)."""
        return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)) if self.stats_flat else None


@dataclasses.dataclass
class TaskTrainer:
    """What the training loop needs of every task: shardings, the jitted init and train step.
    A task adds `parameters(state)`, `eval_model(state, rest)` and `evaluate_at_start`."""

    mesh: Mesh
    state_shardings: Any
    batch_sharding: Any
    abstract_state: Any
    init_state: Callable[[], dict]
    init_rest: Callable[[], Any]  # the RNG-stream variables outside the state
    train_step: Callable  # (state, batch, rest, ...) -> (state, metrics)


@dataclasses.dataclass
class Trainer(TaskTrainer):
    """The classification task: `model(params, batch_stats, rest)` merges a train state's pure
    dicts (params or EMA, batch statistics or None, `init_rest()`) back into the `nnx.Module` that
    evaluators and analyses run; it works inside and outside `jax.jit`.
    """

    schedule: optax.Schedule
    teachers: dict  # token -> (graphdef, rest, teacher cfg)
    model: Callable[..., nnx.Module]  # (params, batch_stats or None, rest) -> nnx.Module

    evaluate_at_start = False  # a classifier at initialization is at chance: nothing to evaluate

    def parameters(self, state: dict) -> dict:
        return state["params"]

    def eval_model(self, state: dict, rest: Any) -> nnx.Module:
        """The model of a state's {"params", optional "batch_stats"}: what evaluators run."""
        return self.model(state["params"], state.get("batch_stats"), rest)


def make_trainer(
    config: Any, mesh: Mesh, *, num_classes: int, num_train_steps: int, warmup_steps: int, teachers: dict | None = None
) -> Trainer:
    """teachers: token -> (teacher graphdef, rest state, cfg) from `distill.load_teachers`."""
    teachers = teachers or {}
    seed = int(config.seed)
    opt = config.optimizer
    accum = max(int(opt.accum_steps), 1)
    ema_decay = float(opt.ema_decay)
    mix = config.mix
    mix_kw = dict(
        num_classes=num_classes,
        mixup_alpha=float(mix.mixup_alpha),
        cutmix_alpha=float(mix.cutmix_alpha),
        switch_prob=float(mix.switch_prob),
        label_smoothing=float(mix.label_smoothing),
        sampling=mix.sampling,
    )

    net = Network(lambda: build_model(config, num_classes, nnx.Rngs(params=seed, dropout=seed + 1)))
    pure_abs = nnx.to_pure_dict(net.abstract_params)
    peak = optim.resolve_lr(opt, int(config.train.global_batch_size))
    schedule = optim.make_schedule(
        opt, peak_lr=peak, total_steps=max(num_train_steps // accum, 1), warmup_steps=warmup_steps // accum
    )
    tx = optim.make_optimizer(opt, pure_abs, schedule=schedule)

    def init():
        params, stats = net.init()
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": tx.init(params),
            "rng": jax.random.key_data(jax.random.key(seed + 2)),
        }
        if stats is not None:
            state["batch_stats"] = stats
        if ema_decay:
            state["ema"] = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return state

    abstract_state = jax.eval_shape(init)
    p_sh = shd.config_param_shardings(config, net.abstract_params, mesh)
    repl = shd.replicated(mesh)
    state_sh = {k: shd.like_params(v, p_sh, mesh, pure_abs) for k, v in abstract_state.items() if k != "params"}
    state_sh["params"] = p_sh
    if "ema" in state_sh:
        state_sh["ema"] = p_sh
    rest_sh = jax.tree.map(lambda _: repl, jax.eval_shape(net.rest))
    batch_sh = shd.batch_sharding(mesh)

    device_augment = None
    if config.dataset.augment_on == "device":  # the data package only when asked for (same layer)
        from nest_jax.data.device_augment import DeviceAugment

        device_augment = DeviceAugment.from_config(config.dataset)

    def train_step(state, batch, rest, teacher_params):
        step = state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        k_mix, k_drop = jax.random.split(key)
        images = batch["image"]
        if device_augment is not None:  # its own key: the host path's mixing and dropout keys stay as they are
            images = device_augment(jax.random.fold_in(key, _AUGMENT_STREAM), images, batch["augment"])
        images, targets = mix_batch(k_mix, images, batch["label"], **mix_kw)  # alphas 0: only smoothing
        # Teachers are frozen and see exactly the student's (mixed) inputs.
        t_logits = {}
        for token, (t_graph, _, t_cfg) in teachers.items():
            t_model = nnx.merge(t_graph, *teacher_params[token])
            t_logits[token] = (t_model(images, train=False), t_cfg)

        def loss_fn(params):
            model = net.merge(params, state.get("batch_stats"), rest)
            nnx.reseed(model, dropout=k_drop)
            logits, recorded = model(images, train=True, capture="heads")
            out = recorded["heads"] if len(recorded["heads"]) > 1 else logits
            loss, logits = losses.classification_loss(
                out, targets, teachers=t_logits, kl_reduction=config.distill_kl_reduction
            )
            return loss, (logits, net.stats(model))

        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = dict(state, step=step + 1, params=params, opt_state=opt_state)
        if stats is not None:
            new["batch_stats"] = stats
        if ema_decay:
            ema = optim.ema_update(state["ema"], params, ema_decay)
            if accum > 1:  # only optimizer updates move the average
                ema = jax.tree.map(lambda a, b: jnp.where(tx.has_updated(opt_state), a, b), ema, state["ema"])
            new["ema"] = ema
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1)),
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(step // accum),  # the schedule counts optimizer updates
        }
        return new, metrics

    # Teacher parameters arrive already placed (see distill.load_teachers): their shardings are inferred.
    jit_train = jax.jit(
        train_step,
        in_shardings=(state_sh, batch_sh, rest_sh, None),
        out_shardings=(state_sh, repl),
        donate_argnums=(0,),
    )
    return Trainer(
        mesh=mesh,
        state_shardings=state_sh,
        batch_sharding=batch_sh,
        init_state=jax.jit(init, out_shardings=state_sh, compiler_options=_run_once_options(mesh)),
        init_rest=jax.jit(net.rest, out_shardings=rest_sh),
        train_step=jit_train,
        schedule=schedule,
        abstract_state=abstract_state,
        teachers=teachers,
        model=net.merge,
    )


def _run_once_options(mesh: Mesh) -> dict | None:
    """Compiler options for functions that run once (the state initializer): on CPU, LLVM's
    optimizer costs more than it saves there (a NesT-digits initializer compiles in 6 s instead
    of 11 s and runs in milliseconds either way); other backends keep their defaults."""
    return {"xla_backend_optimization_level": 0} if mesh.devices.flat[0].platform == "cpu" else None


def shard_batch(batch: dict, sharding) -> dict:
    """Host-local numpy batch -> global arrays split over the data axes (multi-host safe)."""

    def one(x):
        global_shape = (x.shape[0] * jax.process_count(),) + tuple(x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(one, batch)
