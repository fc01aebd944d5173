"""Writes notebooks/01_models.ipynb (kept as code so the notebook's source is reviewable)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md("""# 01 · Models: create, import timm weights, look at a real photo

This notebook creates nest_jax models, imports timm-format weights, runs a real photo from
scikit-image's sample images and shows an attention map. Nothing is downloaded: the "timm
checkpoint" here is a randomly initialised timm model saved to a `.safetensors` file, so the
predictions are meaningless; with a real checkpoint file the same `load_timm` call gives a
trained model (logits agree with timm within 1e-4, as the test suite checks).""")
code("""import os, tempfile
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import numpy as np
import jax, jax.numpy as jnp
import matplotlib.pyplot as plt
from flax import nnx
from nest_jax.models import create_model, list_models
print(len(list_models()), "models, e.g.", list_models("deit_tiny*"))""")
md(
    "## Create models\n`create_model(name, *, num_classes, img_size, rngs, **overrides)`; parameter counts equal the published ones."
)
code("""def count(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

for name in ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "nest_tiny"]:
    abstract = nnx.eval_shape(lambda: create_model(name))   # shapes only, no memory
    print(f"{name:34s} {count(abstract):>12,d} parameters")""")
md(
    "## Import timm-format weights\nA timm state dict (`.pth` read with `weights_only=True`, or `.safetensors`) maps onto our layout (fused qkv `(D, 3, heads, head_dim)`, HWIO convs, `(in, out)` dense kernels)."
)
code("""import torch, timm
from safetensors.torch import save_file
from nest_jax.convert.timm import load_timm

torch.manual_seed(0)
tmodel = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
path = os.path.join(tempfile.mkdtemp(), "deit_tiny.safetensors")
save_file({k: v.contiguous() for k, v in tmodel.state_dict().items()}, path)

model = create_model("deit_tiny_patch16_224", rngs=nnx.Rngs(0))   # exact GELU, as timm
load_timm(model, path)
print("loaded", path)""")
md(
    "## A real photo\nscikit-image's `chelsea` (a cat), resized to 224 px and normalised with the ImageNet mean/std that DeiT uses."
)
code("""from skimage import data, transform
img = transform.resize(data.chelsea(), (224, 224), anti_aliasing=True).astype(np.float32)
mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
x = jnp.asarray(((img - mean) / std)[None], jnp.float32)          # (1, 224, 224, 3), NHWC

logits = model(x)
with torch.inference_mode():
    ref = tmodel(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)).numpy()
print("max |nest_jax - timm| =", float(np.abs(np.asarray(logits) - ref).max()))
print("top-5 classes (random weights, so not meaningful):", np.argsort(-np.asarray(logits)[0])[:5])""")
md(
    "## Intermediates and an attention map\n`capture=` returns per-layer outputs, attention weights, residual branches, prefix tokens and feature maps in one dict. Below: the class token's attention to the patches in the last layer, averaged over heads."
)
code("""logits, inter = model(x, capture=("attention", "layers", "tokens"))
att = inter["attention"][-1]                  # (B, heads, 1+196, 1+196)
print(len(inter["layers"]), "layers;", "attention", att.shape, "; tokens:", list(inter["tokens"]))
cls_to_patches = np.asarray(att[0, :, 0, 1:].mean(0)).reshape(14, 14)
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(img); axes[0].set_title("input"); axes[0].axis("off")
axes[1].imshow(img); axes[1].imshow(transform.resize(cls_to_patches, (224, 224), order=0), alpha=0.6, cmap="inferno")
axes[1].set_title("last-layer cls attention"); axes[1].axis("off")
plt.show()""")
md(
    "With random weights the map is close to uniform; with trained DeiT weights it concentrates on the object.\n\n## Use as a pure function\nAny model splits into a graph definition and parameters, so it works under plain `jax.jit` / `jax.grad` / `jax.vmap`:"
)
code("""graphdef, params, rest = nnx.split(model, nnx.Param, ...)

@jax.jit
def apply(params, x):
    return nnx.merge(graphdef, params, rest)(x)

print(float(jnp.abs(apply(params, x) - logits).max()))""")

nb = nbf.v4.new_notebook(
    cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
)
nbf.write(nb, "notebooks/01_models.ipynb")
