"""Optimizers from `config.optimizer`: AdamW / SGD(+Nesterov) / LAMB, warmup + cosine/linear decay,
global-norm clipping, weight-decay masks, layer-wise lr decay, gradient accumulation.

Parameters are pure dicts (`nnx.to_pure_dict`), paths '/'-joined like "layers/0/attn/qkv".
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from nest_jax.train.sharding import path_str

OPTIMIZERS = ("adamw", "sgd", "lamb")  # config.optimizer.name
SCHEDULES = ("cosine", "linear", "constant")  # config.optimizer.schedule (after the linear warmup)
WD_MASKS = ("nest", "timm", "all", "none")  # config.optimizer.wd_mask: see decay_mask
MU_DTYPES = ("bfloat16", "float32")  # config.optimizer.mu_dtype, or None


def resolve_lr(opt: Any, global_batch_size: int) -> float:
    """Peak lr: `lr` if set, else `base_lr × global_batch / base_batch` (NesT: 2.5e-4 per 256)."""
    if opt.lr is not None:
        return float(opt.lr)
    return float(opt.base_lr) * global_batch_size / float(opt.base_batch)


def make_schedule(opt: Any, *, peak_lr: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from `warmup_init_lr` to the peak, then cosine/linear decay to `min_lr`."""
    init, end = float(opt.warmup_init_lr), float(opt.min_lr)
    kind = opt.schedule
    warmup_steps = min(int(warmup_steps), max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup_steps, 1)
    warm = optax.linear_schedule(init, peak_lr, max(warmup_steps, 1))
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end / peak_lr if peak_lr else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(peak_lr, end, decay_steps)
    elif kind == "constant":
        decay = optax.constant_schedule(peak_lr)
    else:
        raise ValueError(f"optimizer.schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    if warmup_steps == 0:
        return decay
    return optax.join_schedules([warm, decay], [warmup_steps])


def _paths(params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(lambda p, _: path_str(p), params)


def is_position_embedding(path: str) -> bool:
    return "pos_embed" in path.split("/")[-1] or path.split("/")[-1] == "pos_embedding"


def decay_mask(params: Any, kind: str) -> Any:
    """Boolean tree: True where weight decay applies.

    nest: every parameter except the position embeddings (the official NesT rule: biases and
      norms are decayed). timm: no decay on biases (any rank, e.g. qkv_bias (3, h, d)), norm
      scales, 1-D parameters, prefix tokens and position embeddings. all / none: as named.
    """

    def one(path: str, leaf) -> bool:
        last = path.split("/")[-1]
        if kind == "all":
            return True
        if kind == "none":
            return False
        if kind == "nest":
            return not is_position_embedding(path)
        if kind == "timm":
            return not (
                jnp.ndim(leaf) <= 1
                or last.endswith("bias")
                or last.endswith("_token")
                or is_position_embedding(path)
                or last == "scale"
            )
        raise ValueError(f"optimizer.wd_mask must be one of {', '.join(WD_MASKS)}, got {kind!r}")

    return jax.tree.map(one, _paths(params), params)


def layer_ids(params: Any) -> tuple[Any, int]:
    """Layer index per parameter for layer-wise lr decay, and the number of layers + 2.

    Transformer layers ("…layers/<i>/…", numbered globally in path order across NesT levels) get
    1..n; the stem (patch/position embedding, prefix tokens) 0; the rest (final norm, heads) n+1.
    Per-level parameters that are neither (a NesT level's position embedding or aggregation) take
    the id of the first layer of their level.
    """
    paths = jax.tree.leaves(_paths(params))
    layer_rx = re.compile(r"^(.*?)layers/(\d+)/")
    keys = sorted({(m.group(1), int(m.group(2))) for p in paths if (m := layer_rx.match(p))})
    index = {k: i + 1 for i, k in enumerate(keys)}
    first_of_prefix: dict[str, int] = {}
    for (prefix, _), i in index.items():
        first_of_prefix.setdefault(prefix, i)
    n = len(keys)

    def one(path: str) -> int:
        m = layer_rx.match(path)
        if m:
            return index[(m.group(1), int(m.group(2)))]
        top = path.split("/")[0]
        if top in ("patch_embed", "stem", "pos_embed") or top.endswith("_token"):
            return 0
        for prefix, i in sorted(first_of_prefix.items(), key=lambda kv: -len(kv[0])):
            if prefix and path.startswith(prefix):
                return i
        return n + 1

    return jax.tree.map(one, _paths(params)), n + 2


def scale_by_tree(factors: Any) -> optax.GradientTransformation:
    """Multiplies each update by a constant per-parameter factor (layer-wise lr decay)."""

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, f: u * f, updates, factors), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(opt: Any, params: Any, *, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optax chain of `config.optimizer` for `params` (arrays or ShapeDtypeStructs).

    Order: clip (global norm of the raw gradient) -> optimizer with decoupled decay and the lr
    schedule -> layer-wise lr decay factor -> gradient accumulation wrapper (MultiSteps: the
    schedule counts optimizer updates, i.e. every `accum_steps` micro-batches).

    Every field is read from `opt` as given: `config_base.base_config().optimizer` holds the defaults
    (eps 1e-8 for every optimizer; the LAMB paper used 1e-6: set it). `mu_dtype` ("bfloat16" or
    None) stores AdamW's first moment in that dtype (optax `mu_dtype`); the second moment stays
    float32, where bf16's 8-bit mantissa would distort the 1/√ν scaling.
    """
    name = opt.name
    wd = float(opt.weight_decay)
    mask = decay_mask(params, opt.wd_mask)
    adam = dict(b1=float(opt.b1), b2=float(opt.b2), eps=float(opt.eps), weight_decay=wd, mask=mask)  # AdamW and LAMB
    parts = []
    if opt.clip_norm:
        parts.append(optax.clip_by_global_norm(float(opt.clip_norm)))
    if name == "adamw":
        if opt.mu_dtype is not None and opt.mu_dtype not in MU_DTYPES:
            raise ValueError(f"optimizer.mu_dtype must be one of {', '.join(MU_DTYPES)} or None, got {opt.mu_dtype!r}")
        parts.append(optax.adamw(schedule, **adam, mu_dtype=None if opt.mu_dtype is None else jnp.dtype(opt.mu_dtype)))
    elif name == "lamb":
        parts.append(optax.lamb(schedule, **adam))
    elif name == "sgd":
        if wd:  # coupled L2 (added to the gradient before momentum), as torch.optim.SGD
            parts.append(optax.add_decayed_weights(wd, mask=mask))
        parts.append(optax.sgd(schedule, momentum=float(opt.momentum) or None, nesterov=bool(opt.nesterov)))
    else:
        raise ValueError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    if opt.layer_decay and float(opt.layer_decay) != 1.0:
        ids, count = layer_ids(params)
        decay = float(opt.layer_decay)
        parts.append(scale_by_tree(jax.tree.map(lambda i: decay ** (count - 1 - i), ids)))
    tx = optax.chain(*parts)
    accum = int(opt.accum_steps)
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """Exponential moving average of the parameters, kept in float32."""
    return jax.tree.map(lambda e, p: e * decay + (1.0 - decay) * p.astype(e.dtype), ema, params)
