"""Writes notebooks/05_robustness.ipynb (kept as code so the notebook's source is reviewable)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md("""# 05 · Robustness: occlusion, shuffling, corruptions, an adversarial patch, shape bias

The analyses of *Intriguing Properties of Vision Transformers* (Naseer et al. 2021) on models
trained here in seconds: a small ViT and a small NesT on scikit-learn's digits (32 px), and two
small ViTs on the procedural shapes × textures set — one on natural images (shape and texture
agree), one on stylized images (random textures) — whose shape bias we then measure on
cue-conflict images. Every analysis is `nest_jax.analysis.<module>.run_*(model, batches, mean=,
std=)` on images in [0, 1]; the plots are `nest_jax.viz.robustness`. See docs/robustness.md.""")
code("""import os, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
REPO = os.path.abspath(".."); sys.path.insert(0, REPO)
from nest_jax.models import create_model
from nest_jax.analysis import occlusion, patch_shuffle, corruption_eval, adversarial_patch, shape_bias
from nest_jax.analysis import per_block_tokens
from nest_jax.viz import robustness as viz
from nest_jax.data.shapes import ShapesTexturesSource
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
T0 = time.time()""")
md("""## Data and a minimal training loop
Digits: the 1,797 8×8 images with nest_jax's fixed split (stratified, `random_state=0`), resized to
32 px and made RGB. The loop is plain optax (AdamW, no augmentation) on the whole model.""")
code("""from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
d = load_digits()
x = np.asarray(jax.image.resize(jnp.asarray(d.images / 16.0, jnp.float32)[..., None], (len(d.images), 32, 32, 1), "bilinear"))
x = np.clip(np.repeat(x, 3, -1), 0, 1)
x_tr, x_te, y_tr, y_te = train_test_split(x, d.target.astype(np.int32), test_size=0.25, stratify=d.target, random_state=0)

def train(model, x, y, steps=150, lr=2e-3, bs=64, seed=0):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=0.05)
    opt = tx.init(params)
    @jax.jit
    def step(params, opt, xb, yb):
        def loss(p):
            logits = nnx.merge(graphdef, p, rest)((xb - jnp.asarray(MEAN)) / jnp.asarray(STD))
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        l, g = jax.value_and_grad(loss)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, l
    rng = np.random.default_rng(seed)
    for i in range(steps):
        idx = rng.integers(0, len(x), bs)
        params, opt, l = step(params, opt, x[idx], y[idx])
    return nnx.merge(graphdef, params, rest)

def batches(x, y, bs=150):
    return [{"image": x[i:i + bs], "label": y[i:i + bs]} for i in range(0, len(x), bs)]

vit = train(create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, dim=32, depth=3,
                         num_heads=2, mlp_dim=64), x_tr, y_tr)
nest = train(create_model("nest_tiny_cifar", num_classes=10, img_size=32, patch_size=2, block_size=4,
                          dims=(32, 32, 32), depths=(1, 1, 1), heads=(2, 2, 2)), x_tr, y_tr)
test = batches(x_te, y_te)
models = {"ViT": vit, "NesT": nest}
clean = {n: occlusion.run_occlusion(m, test, mean=MEAN, std=STD, ratios=(0.0,), repeats=1)["top1"][0]
         for n, m in models.items()}
print("clean test top-1:", {n: round(a, 4) for n, a in clean.items()}, f"({time.time() - T0:.0f} s)")""")
md("""## Occlusion and patch shuffling
Random PatchDrop on the 8×8 grid of 4-px cells (the ViT's patches): every image draws its own
random order of the cells and drops a growing share of it; three orders per image give the mean and
its standard error (the error bars). Then the paper's shuffle grids that divide 32 px, two
permutations each. Salient PatchDrop uses the ViT's own class-token
attention, for both models.""")
code("""occ = {n: occlusion.run_occlusion(m, test, mean=MEAN, std=STD, grid=(8, 8), ratios=(0.0, 0.25, 0.5, 0.75, 0.9),
                                 repeats=3) for n, m in models.items()}
shuf = {n: patch_shuffle.run_patch_shuffle(m, test, mean=MEAN, std=STD, repeats=2) for n, m in models.items()}
sal = {n: occlusion.run_salient_occlusion(m, test, mean=MEAN, std=STD, saliency_model=vit, lambdas=(0.3, 0.5, 0.7, 0.9))
       for n, m in models.items()}
for n in models:
    print(f"{n:5s} PatchDrop 50%: {occ[n]['top1'][2]:.3f} ± {occ[n]['top1_sem'][2]:.3f}  shuffle 4x4: {shuf[n]['top1'][3]:.3f}  "
          f"salient drop λ=0.5: {sal[n]['salient_drop_top1'][1]:.3f}  non-salient: {sal[n]['non_salient_drop_top1'][1]:.3f}")
viz.plot_occlusion(occ)""")
code("""viz.plot_shuffle(shuf)""")
md("""## Common corruptions
All 15 ImageNet-C corruptions at severity 3 (the full table runs severities 1–5; here one severity
keeps the notebook short, so the CE values are severity-3 CEs against AlexNet's severity-3 errors).""")
code("""corr = {n: corruption_eval.run_corruptions(m, test[:1], mean=MEAN, std=STD, severities=(3,)) for n, m in models.items()}
print(f"{'corruption':18s}" + "".join(f"{n:>10s}" for n in models))
for c in corruption_eval.C.CORRUPTIONS:
    print(f"{c:18s}" + "".join(f"{corr[n]['top1'][c][0]:10.3f}" for n in models))
print("mCE (severity 3):", {n: round(r['mce'], 1) for n, r in corr.items()})
viz.plot_corruption_errors(corr)""")
md("""## A universal adversarial patch
A square covering 10% of the image, two random positions per image and step, 40 Adam steps against
the ViT on training images; the fooling rate is measured on the test images it classifies correctly,
beside that of the random patch the optimization started from (same size and positions).""")
code("""adv = adversarial_patch.run_adversarial_patch(vit, batches(x_tr[:600], y_tr[:600], 100), test, mean=MEAN, std=STD,
                                              fraction=0.1, steps=40, return_patch=True)
print(f"fooling rate {adv['fooling_rate']:.3f} on {adv['evaluated']} images (patch {adv['patch_side']} px); "
      f"the random patch: {adv['random_fooling_rate']:.3f}")
img = x_te[:1]
patched = adversarial_patch.paste(jnp.asarray(img), jnp.asarray(adv["patch"]), jnp.asarray(adv["mask"]),
                                  jnp.asarray([[4, 20]]), jnp.zeros(1))
viz.plot_patched_images([img[0], np.asarray(patched[0]), adv["patch"]], ["clean", "patched", "patch"])""")
md("""## Shape bias on the procedural shapes × textures set
One ViT trained on natural images (shape k with texture k: either cue works), one on stylized
images (random textures: only the shape predicts). Both are scored on cue-conflict images.""")
code("""def shapes(variant, split, n):
    a = ShapesTexturesSource(num_classes=8, image_size=32, variant=variant, num_train=2000, num_test=400).arrays(split, n)
    return a["image"].astype(np.float32) / 255.0, a["label"], a["texture_label"]
cue_x, cue_y, cue_t = shapes("cue_conflict", "test", 400)
cue = [{"image": cue_x, "label": cue_y, "texture_label": cue_t}]
bias, acc = {}, {}
for variant in ("natural", "stylized"):
    xs, ys, _ = shapes(variant, "train", 2000)
    m = train(create_model("vit_tiny_patch16_224", num_classes=8, img_size=32, patch_size=4, dim=32, depth=3,
                           num_heads=2, mlp_dim=64), xs, ys, steps=200)
    nx, ny, _ = shapes("natural", "test", 400)
    acc[variant] = occlusion.run_occlusion(m, batches(nx, ny), mean=MEAN, std=STD, ratios=(0.0,))["top1"][0]
    bias[f"ViT ({variant})"] = shape_bias.run_shape_bias(m, cue, mean=MEAN, std=STD)
    print(f"trained on {variant:8s}: natural test top-1 {acc[variant]:.3f}, shape bias {bias[f'ViT ({variant})']['shape_bias']:.3f}")
viz.plot_shape_bias(bias)""")
code("""print(f"notebook finished in {time.time() - T0:.0f} s")""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "05_robustness.ipynb")
