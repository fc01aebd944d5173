"""Checksums of every array of a train state, written with each checkpoint and checked at restore.

Orbax guarantees that a checkpoint is complete (it is renamed into place only when written), not
that its bytes are the ones written: a flipped bit in compressed array data can still decode, into
different numbers. Each checkpoint therefore carries one 32-bit checksum per leaf,

    checksum(x) = Σ_i w_i · (2i + 1)   (mod 2³²),

where w_i are the leaf's elements reinterpreted as unsigned integers of their own width (a bitcast,
so -0.0, NaN payloads and every mantissa bit count) and i is the element's flat index. A single
flipped bit changes one w_i by ±2^k, and an odd multiplier keeps that change non-zero modulo 2³², so
every single-bit error is caught; swapped elements change the sum through their weights. The sums
are computed on the device in the same jitted pass as the finiteness check, so a save fetches a few
bytes per leaf and the host never sees the arrays.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ALGORITHM = "bitcast-u32-odd-weighted-sum/1"
_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _checksum(x: jax.Array) -> jax.Array:
    """The weighted sum of the leaf's bits as a flat uint32 vector (8-byte elements split into two words)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    w = jax.lax.bitcast_convert_type(x, _UINT.get(x.dtype.itemsize, jnp.uint32)).reshape(-1).astype(jnp.uint32)
    weights = jnp.arange(w.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(w * weights, dtype=jnp.uint32)


@jax.jit
def finite_and_checksums(tree: Any) -> tuple[jax.Array, list[jax.Array]]:
    """(every float element of `tree` is finite, [checksum of each leaf in tree order])."""
    leaves = jax.tree.leaves(tree)
    finite = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok = jnp.all(jnp.stack(finite)) if finite else jnp.array(True)
    return ok, [_checksum(x) for x in leaves]


def leaf_names(tree: Any) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def record(tree: Any, sums: list) -> dict:
    """The JSON saved beside a checkpoint: {algorithm, sums: {leaf name: int}}."""
    return {"algorithm": ALGORITHM, "sums": dict(zip(leaf_names(tree), (int(s) for s in np.asarray(sums))))}


def mismatch(tree: Any, saved: dict) -> str | None:
    """None when every leaf of the restored `tree` has the checksum `saved` records; else one line."""
    if saved.get("algorithm") != ALGORITHM:
        return f"its checksums use {saved.get('algorithm')!r}, not {ALGORITHM!r}"
    _, sums = finite_and_checksums(tree)
    want = saved.get("sums", {})
    for name, got in zip(leaf_names(tree), np.asarray(jax.device_get(sums))):
        if name not in want:
            return f"no checksum recorded for {name}"
        if int(got) != int(want[name]):
            return f"array {name} does not match its checksum (the data changed after it was written)"
    return None
