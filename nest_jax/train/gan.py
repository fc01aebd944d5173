"""The sharded GAN train state and train step: two networks, two optimizers, an EMA generator.

State (a pure pytree, checkpointed as is): {"step", "rng" (raw key), "g", "d" (parameter dicts),
"g_opt", "d_opt", "g_ema" (float32 copy of "g"), optional "g_stats" / "d_stats" (batch norm
statistics, spectral-norm power iterates)}. Shardings come from shapes only (as `trainer.py`), the
state is created already sharded and every step is one `jax.jit` with donated state. The training
loop (`loop.train_and_evaluate`) runs it like the classifier's; evaluators see the EMA generator.

One step = one discriminator update on (real batch, G(z)) then one generator update on fresh z:
  hinge (Lim & Ye 2017; Miyato et al. 2018):  L_D = E[relu(1 − D(x))] + E[relu(1 + D(G(z)))],
                                               L_G = −E[D(G(z))]
  non-saturating (Goodfellow et al. 2014):     L_D = E[softplus(−D(x))] + E[softplus(D(G(z)))],
                                               L_G = E[softplus(−D(G(z)))]
  R1 (Mescheder et al. 2018, eq. 9):           + γ/2 · E[‖∇_x D(x)‖²] on real images.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from nest_jax.errors import UserError
from nest_jax.train import optim
from nest_jax.train import sharding as shd
from nest_jax.train.trainer import Network, TaskTrainer, dtype_kwargs

LOSSES = ("hinge", "non_saturating")


def build_network(config: Any, rngs: nnx.Rngs, *, role: str) -> nnx.Module:
    """`config.gan[role]`: the generator (z -> image) or the discriminator (image -> one logit)."""
    from nest_jax.models import create_model

    net, chans = config.gan[role], int(config.dataset.num_channels)
    io = dict(latent_dim=int(config.gan.latent_dim), out_chans=chans) if role == "generator" else dict(in_chans=chans)
    size = config.dataset.image_size
    return create_model(net.name, num_classes=1, img_size=size, rngs=rngs, **io, **dtype_kwargs(net.overrides))


build_generator = functools.partial(build_network, role="generator")
build_discriminator = functools.partial(build_network, role="discriminator")


def _apply(net: Network, params, stats, x, rest, key, train: bool):
    """-> (output, new stats). Fresh RNG-stream Variables are reseeded with `key` (dropout)."""
    model = net.merge(params, stats, rest)
    if key is not None:
        nnx.reseed(model, dropout=key)
    return model(x, train=train), net.stats(model)


def _loss_kind(kind: str) -> bool:
    """True for hinge, False for non-saturating; a UserError for anything else."""
    if kind not in LOSSES:
        raise UserError(f"gan.loss must be one of {LOSSES}, got {kind!r}")
    return kind == "hinge"


def d_losses(kind: str, real_logits, fake_logits):
    if _loss_kind(kind):
        return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def g_loss(kind: str, fake_logits):
    return -jnp.mean(fake_logits) if _loss_kind(kind) else jnp.mean(jax.nn.softplus(-fake_logits))


def _with_stats(state: dict, g_stats, d_stats) -> dict:
    """`state` with "g_stats" / "d_stats" set to those that are not None (the networks that have any)."""
    return dict(state, **{k: v for k, v in (("g_stats", g_stats), ("d_stats", d_stats)) if v is not None})


@dataclasses.dataclass
class GanTrainer(TaskTrainer):
    """The GAN task; its `init_rest()` is (generator rest, discriminator rest), its train step
    (state, batch, rests) -> (state, metrics)."""

    generator: Network
    discriminator: Network

    # The FID curve and the sample grids start at initialization: the loop evaluates step 0 too.
    evaluate_at_start = True

    def parameters(self, state: dict) -> dict:
        return {"generator": state["g"], "discriminator": state["d"]}

    def eval_model(self, state: dict, rests: tuple) -> nnx.Module:
        """The EMA generator, z: (B, latent_dim) -> images (B, H, W, C) in [-1, 1]; under jit too."""
        return self.generator.merge(state["g_ema"], state.get("g_stats"), rests[0])


def make_gan_trainer(config: Any, mesh: Mesh) -> GanTrainer:
    cfg = config.gan
    seed = int(config.seed)
    kind = cfg.loss
    _loss_kind(kind)  # a bad name fails before anything is built
    r1 = float(cfg.r1_gamma)
    ema_decay, ema_start = float(cfg.ema_decay), int(cfg.ema_start_step)
    latent = int(cfg.latent_dim)
    G = Network(lambda: build_generator(config, nnx.Rngs(params=seed, dropout=seed + 1)))
    D = Network(lambda: build_discriminator(config, nnx.Rngs(params=seed + 10, dropout=seed + 11)))
    txs = {}
    for name, net in (("g", G), ("d", D)):
        opt = cfg[f"{name}_optimizer"]
        # The GAN's schedules have no length: constant, or a warmup into a constant.
        schedule = optim.make_schedule(opt, peak_lr=float(opt.lr), total_steps=10**9, warmup_steps=opt.warmup_steps)
        txs[name] = optim.make_optimizer(opt, nnx.to_pure_dict(net.abstract_params), schedule=schedule)

    def init():
        (g, g_stats), (d, d_stats) = G.init(), D.init()
        state = {
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed + 2)),
            "g": g,
            "d": d,
            "g_opt": txs["g"].init(g),
            "d_opt": txs["d"].init(d),
            "g_ema": jax.tree.map(lambda p: p.astype(jnp.float32), g),
        }
        return _with_stats(state, g_stats, d_stats)

    abstract_state = jax.eval_shape(init)
    g_sh = shd.config_param_shardings(config, G.abstract_params, mesh)
    d_sh = shd.config_param_shardings(config, D.abstract_params, mesh)
    repl = shd.replicated(mesh)
    state_sh = {
        "step": repl,
        "rng": repl,
        "g": g_sh,
        "d": d_sh,
        "g_ema": g_sh,
        "g_opt": shd.like_params(abstract_state["g_opt"], g_sh, mesh),
        "d_opt": shd.like_params(abstract_state["d_opt"], d_sh, mesh),
    }
    for k in ("g_stats", "d_stats"):
        if k in abstract_state:
            state_sh[k] = jax.tree.map(lambda _: repl, abstract_state[k])
    rest_fn = lambda: (G.rest(), D.rest())  # noqa: E731
    rest_sh = jax.tree.map(lambda _: repl, jax.eval_shape(rest_fn))
    batch_sh = shd.batch_sharding(mesh)

    def train_step(state, batch, rests):
        g_rest, d_rest = rests
        step = state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        k_zd, k_zg, k_gd, k_dd, k_gg, k_dg = jax.random.split(key, 6)
        real = batch["image"]
        b = real.shape[0]
        g_stats, d_stats = state.get("g_stats"), state.get("d_stats")

        # ---- discriminator update (G's statistics are only updated by the generator update) ----
        fake, _ = _apply(G, state["g"], g_stats, jax.random.normal(k_zd, (b, latent)), g_rest, k_gd, True)
        both = jnp.concatenate([real, jax.lax.stop_gradient(fake).astype(real.dtype)], axis=0)

        def d_loss_fn(d_params):
            def logits_sum(x):
                logits, stats = _apply(D, d_params, d_stats, x, d_rest, k_dd, True)
                return logits.sum(), (logits, stats)

            if r1:
                (_, (logits, stats)), gx = jax.value_and_grad(logits_sum, has_aux=True)(both)
                penalty = jnp.mean(jnp.sum(jnp.square(gx[:b].astype(jnp.float32)), axis=(1, 2, 3)))
            else:
                _, (logits, stats) = logits_sum(both)
                penalty = jnp.zeros((), jnp.float32)
            logits = logits.astype(jnp.float32)[:, 0]
            loss = d_losses(kind, logits[:b], logits[b:]) + 0.5 * r1 * penalty
            return loss, (logits, stats, penalty)

        (d_loss, (logits, new_d_stats, penalty)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state["d"])
        d_updates, d_opt = txs["d"].update(d_grads, state["d_opt"], state["d"])
        d_params = optax.apply_updates(state["d"], d_updates)

        # ---- generator update against the updated discriminator (power iterates not advanced) ----
        def g_loss_fn(g_params):
            fake, stats = _apply(G, g_params, g_stats, jax.random.normal(k_zg, (b, latent)), g_rest, k_gg, True)
            f_logits, _ = _apply(D, d_params, new_d_stats, fake, d_rest, k_dg, True)
            return g_loss(kind, f_logits.astype(jnp.float32)[:, 0]), stats

        # Note: D runs in train mode inside the G step (dropout as in the D step) but its updated
        # power iterates are discarded: only the discriminator update advances them.
        (gl, new_g_stats), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state["g"])
        g_updates, g_opt = txs["g"].update(g_grads, state["g_opt"], state["g"])
        g_params = optax.apply_updates(state["g"], g_updates)
        decay = jnp.where(step >= ema_start, ema_decay, 0.0) if ema_decay else 0.0
        g_ema = optim.ema_update(state["g_ema"], g_params, decay)

        new = dict(state, step=step + 1, g=g_params, d=d_params, g_opt=g_opt, d_opt=d_opt, g_ema=g_ema)
        metrics = {
            "d_loss": d_loss,
            "g_loss": gl,
            "d_real": jnp.mean(logits[:b]),
            "d_fake": jnp.mean(logits[b:]),
            "r1": penalty,
            "g_grad_norm": optax.tree.norm(g_grads),
            "d_grad_norm": optax.tree.norm(d_grads),
            "loss": d_loss + gl,
        }
        return _with_stats(new, new_g_stats, new_d_stats), metrics

    jit_train = jax.jit(
        train_step, in_shardings=(state_sh, batch_sh, rest_sh), out_shardings=(state_sh, repl), donate_argnums=(0,)
    )
    return GanTrainer(
        mesh=mesh,
        state_shardings=state_sh,
        batch_sharding=batch_sh,
        abstract_state=abstract_state,
        init_state=jax.jit(init, out_shardings=state_sh),
        init_rest=jax.jit(rest_fn, out_shardings=rest_sh),
        train_step=jit_train,
        generator=G,
        discriminator=D,
    )
