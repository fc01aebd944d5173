"""GradCAT: gradient-based class-aware tree traversal over NesT's block hierarchy (Zhang et al. 2022, §5, Alg. 1).

NesT's block aggregation merges 2×2 blocks of level l into one block of level l+1, so the blocks
form a 4-ary tree: the root is the single block of the top level, the leaves the blocks of level 0.
GradCAT explains a class logit Y_c by walking that tree from the root down, at each step moving to
the child block that carries the most evidence for c.

Scoring rule used here (no official code exists; the paper's Algorithm 1 is the only description):

    node score  s_l(i, j) = Σ_{tokens t in block (i, j)} Σ_{channels k}  A_l[t, k] · ∂Y_c/∂A_l[t, k]

A_l is level l's output map (after its transformer layers, before the next aggregation / the final
LayerNorm): exactly `features[l]` of the model. ∂Y_c/∂A_l comes from ONE `jax.grad` with respect to
the model's `taps` (zero arrays added to every level's map), which gives every level at once.
From the current node at level l+1, the walk moves to the child (of its 2×2 children at level l)
with the largest s_l; the child index is raster order inside the 2×2: 0 = top-left, 1 = top-right,
2 = bottom-left, 3 = bottom-right.

How this follows Algorithm 1 and where it decides:
- Algorithm 1 forms a "target value map" h_l = α_l · ∂Y_c/∂α_l (activation times gradient, the
  Grad-CAM product), reduces it per 2×2 partition of the current node and takes the argmax. The
  reduction over channels and tokens is a sum here; a mean over the equally sized children would
  pick the same child. The sign is + (the first-order Taylor contribution of the block to Y_c): with
  an argmax, a minus sign would walk towards evidence AGAINST the class, which contradicts the
  paper's description of the method as class-aware with selected regions lying on the object.
  Readers of the printed algorithm who see a minus there can pass `negate=True` for the other sign.
- Algorithm 1 scores the 2×2 partitions of the CURRENT node's own map (`source="parent"`); the
  default here scores each child on the CHILD level's map (`source="child"`), the reading of the
  paper's text ("score each child block by activation × gradient"). They differ in one important place: on the top level's raw map the score is
  ≈ 0 for every token, because Y_c reads A_top only through the final LayerNorm, which is invariant
  to scaling a token (Euler: A·∂LN(A)/∂A = 0; only the ε of the norm leaves a residue). The "parent"
  rule therefore scores the top block on the map AFTER the final LayerNorm, where A·∂Y/∂A equals
  the class activation map divided by the token count (see cam.py). `scores[-1]` (raw top map) is
  kept as computed so that this degeneracy is visible.
- The tree is exact for the block grids, but the 3×3 aggregation kernels (conv and max-pool) let a
  parent see one token row/column of its neighbours' children: the tree is the receptive-field core.

Everything here is a pure function of (model, images): `gradcat` is `nnx.jit`-compiled and batched.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


@flax.struct.dataclass
class GradCATResult:
    """Per image b (batch B), L levels, level l's block grid (gh_l, gw_l), bottom level first.

    target: (B,) class explained.        logits: (B, classes).
    scores: tuple of L arrays (B, gh_l, gw_l): every node's score s_l (bottom level first, like
      `features`; scores[-1] is the root, ≈ 0 by LayerNorm invariance, see the module docstring).
    path: (B, L-1) child index 0..3 taken at each step, top → bottom (path[:, 0] leaves the root).
    nodes: (B, L, 2) (row, col) of the chosen block at each level, top → bottom (nodes[:, 0] = root).
    boxes: (B, L, 4) pixel box (y0, x0, y1, x1), half-open, of each chosen node, top → bottom.
    """

    target: Array
    logits: Array
    scores: tuple[Array, ...]
    path: Array
    nodes: Array
    boxes: Array


def _grids(config) -> list[tuple[int, int]]:
    return [tuple(g) for g in config.blocks_per_level]


def block_sum(token_map: Array, grid: tuple[int, int]) -> Array:
    """Sums a token map over the tokens of each block.  (B, H, W) -> (B, gh, gw)."""
    bsz, h, w = token_map.shape
    gh, gw = grid
    return token_map.reshape(bsz, gh, h // gh, gw, w // gw).sum(axis=(2, 4))


def class_gradients(model, images: Array, target: Array | None = None):
    """Level maps A_l, their gradients ∂Y_c/∂A_l and the logits, from one forward+backward pass.

    images: (B, H, W, 3); target: (B,) int or None (= the predicted class).
    Returns (features, grads, logits, target): features/grads lists of (B, H_l, W_l, C_l).
    """
    cfg, b = model.config, images.shape[0]
    shapes = [(b, gh * cfg.block_size, gw * cfg.block_size, d) for (gh, gw), d in zip(_grids(cfg), cfg.dims)]
    taps = [jnp.zeros(s, images.dtype) for s in shapes]  # level maps (B, H_l, W_l, C_l)

    def objective(taps):
        logits, inter = model(images, train=False, capture=("features",), taps=taps)
        # argmax is piecewise constant, so choosing the class inside the differentiated function
        # leaves the gradient of Y_c untouched. Images are independent (no batch statistics in
        # eval mode), so the sum over the batch gives each image its own gradient.
        c = jnp.argmax(jax.lax.stop_gradient(logits), -1) if target is None else target
        y = jnp.take_along_axis(logits, c[:, None], axis=-1).sum()
        return y, (inter["features"], logits, c)

    grads, (features, logits, c) = jax.grad(objective, has_aux=True)(taps)
    return features, grads, logits, c


def node_scores(features, grads, config, *, negate: bool = False) -> list[Array]:
    """s_l = Σ over each block's tokens and channels of A_l·∂Y_c/∂A_l.  -> L arrays (B, gh_l, gw_l)."""
    sign = -1.0 if negate else 1.0
    return [block_sum(sign * (a * g).sum(-1), grid) for a, g, grid in zip(features, grads, _grids(config))]


def traverse(child_scores: list[Array]) -> tuple[Array, Array]:
    """Walks a 4-ary tree of score grids from the root down, taking the best child each step.

    child_scores: L-1 arrays, top → bottom, the k-th shaped (B, 2^(k+1), 2^(k+1)) (the block grid
      of the level the k-th step lands on; a square grid doubling each step, as NesT's).
    Returns path (B, L-1) child indices in raster order, nodes (B, L, 2) (row, col), top → bottom.
    """
    bsz = child_scores[0].shape[0]
    row = jnp.zeros((bsz,), jnp.int32)
    col = jnp.zeros((bsz,), jnp.int32)
    path, nodes = [], [jnp.stack([row, col], -1)]
    for s in child_scores:
        gh, gw = s.shape[1] // 2, s.shape[2] // 2
        quads = s.reshape(bsz, gh, 2, gw, 2).transpose(0, 1, 3, 2, 4)  # (B, parent rows, cols, 2, 2)
        children = quads[jnp.arange(bsz), row, col].reshape(bsz, 4)
        k = jnp.argmax(children, -1).astype(jnp.int32)
        row, col = 2 * row + k // 2, 2 * col + k % 2
        path.append(k)
        nodes.append(jnp.stack([row, col], -1))
    return jnp.stack(path, 1), jnp.stack(nodes, 1)


def node_boxes(nodes: Array, img_size: int) -> Array:
    """Pixel boxes of the chosen nodes.  nodes (B, L, 2) top → bottom -> (B, L, 4) (y0, x0, y1, x1)."""
    edge = img_size // (2 ** jnp.arange(nodes.shape[1]))  # block edge in pixels, root = whole image
    y0, x0 = nodes[..., 0] * edge, nodes[..., 1] * edge
    return jnp.stack([y0, x0, y0 + edge, x0 + edge], -1).astype(jnp.int32)


def _parent_rule_scores(model, features, grads, logits_target, negate: bool) -> list[Array]:
    """Algorithm 1's literal rule: score the 2×2 quadrants of each level's OWN map.

    For the top level the map after the final LayerNorm is used (its A·∂Y/∂A = CAM/N; the raw one is
    ≈ 0). Returns L-1 arrays top → bottom, the k-th on the grid of the level the k-th step lands on.
    """
    c = logits_target
    top = model.norm(features[-1])  # (B, H, W, C): the head reads mean_t(top) @ W + b
    w = model.head.kernel[...][:, c].T  # (B, C)
    n = top.shape[1] * top.shape[2]
    maps = [(top * w[:, None, None, :]).sum(-1) / n]  # A·∂Y/∂A on the normalized map
    maps += [(a * g).sum(-1) for a, g in zip(features[-2:0:-1], grads[-2:0:-1])]
    sign = -1.0 if negate else 1.0
    out = []
    for m in maps:
        g = 2 * m.shape[1] // model.config.block_size  # quadrants of every block of this level
        out.append(sign * block_sum(m, (g, g)))
    return out


@nnx.jit(static_argnames=("source", "negate"))
def gradcat(
    model, images: Array, *, target: Array | None = None, source: str = "child", negate: bool = False
) -> GradCATResult:
    """GradCAT for a batch.  images: (B, H, W, 3) -> GradCATResult (see the module docstring).

    target: (B,) class per image, or None for each image's predicted class.
    source: "child" (default: choose a child by its own block score on the level below) or "parent"
      (Algorithm 1's literal reading: by the quadrant of the current node's map).
    negate: flip the sign of the gradient (walks towards evidence against the class; see above).
    """
    if source not in ("child", "parent"):
        raise ValueError(f"source must be 'child' or 'parent', got {source!r}")
    c = model.config
    features, grads, logits, tgt = class_gradients(model, images, target)
    scores = node_scores(features, grads, c, negate=negate)
    steps = scores[-2::-1] if source == "child" else _parent_rule_scores(model, features, grads, tgt, negate)
    path, nodes = traverse(list(steps))
    size = c.img_size if isinstance(c.img_size, int) else c.img_size[0]
    return GradCATResult(
        target=tgt, logits=logits, scores=tuple(scores), path=path, nodes=nodes, boxes=node_boxes(nodes, size)
    )
