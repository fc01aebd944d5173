"""Writes notebooks/04_representations.ipynb (kept as code so the notebook's source is reviewable)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md("""# 04 · Representations: do (tiny) vision transformers see like CNNs?

Raghu et al. (2021) compared ViTs and ResNets with centered kernel alignment (CKA), mean attention
distances, the ratio of norms of the residual stream to its branches, and linear probes. This
notebook runs the same analyses with `nest_jax.analysis` on four small models trained here on
scikit-learn's digits (32 px, 1,347 training images): a ViT with a class token, a ViT with global
average pooling (GAP), a small ResNet and a NesT. Each trains for a few dozen steps, so the models
are weak and the numbers are an illustration of the tools, not a reproduction of the paper (see
`docs/representations.md` for what reproduces at this scale).""")
code("""import os, sys, json, tempfile, importlib.util, logging, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax, numpy as np
from IPython.display import Image, display
REPO = os.path.abspath("..")
sys.path.insert(0, REPO)
logging.getLogger("absl").setLevel(logging.WARNING)

def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", name + ".py"))
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m.get_config()

STEPS = 60
def shorten(c):
    c.train.num_train_steps = STEPS
    c.train.log_every_steps = STEPS
    c.train.checkpoint_every_steps = STEPS
    c.optimizer.warmup_epochs = 0.3
    return c

small_vit = dict(patch_size=4, dim=48, depth=4, num_heads=2, mlp_dim=96, drop_path_rate=0.0)
configs = {}
configs["vit_cls"] = shorten(load("digits_vit")); configs["vit_cls"].model.overrides = dict(small_vit)
configs["vit_gap"] = shorten(load("digits_vit"))
configs["vit_gap"].model.overrides = dict(small_vit, pool="gap", prefix_tokens=())
for k in ("vit_cls", "vit_gap"):
    configs[k].optimizer.lr = 3e-3
configs["resnet"] = shorten(load("digits_vit")); configs["resnet"].model.name = "resnet50"
configs["resnet"].model.overrides = dict(layers=(1, 1, 1), widths=(48, 96, 192))
configs["nest"] = shorten(load("digits_nest_tiny"))
configs["nest"].model.overrides = dict(patch_size=4, block_size=4, dims=(48, 48), depths=(2, 2), heads=(2, 2),
                                       drop_path_rate=0.0)
for k, c in configs.items():
    print(k, c.model.name, dict(c.model.overrides))""")
md("""## Train the four models
`train_and_evaluate(config, workdir)` is the main job (`python -m nest_jax.main`) called from Python.""")
code("""from nest_jax.train import train_and_evaluate
workdirs, acc = {}, {}
for k, c in configs.items():
    workdirs[k] = tempfile.mkdtemp(prefix=f"rep_{k}_")
    t0 = time.time()
    r = train_and_evaluate(c, workdirs[k])
    acc[k] = r["eval_top1"]
    print(f"{k:8s} {STEPS} steps in {time.time() - t0:4.0f} s: test top-1 {acc[k]:.3f}")""")
md("""## Load the checkpoints and run the analyses
`build_subject` is what `python -m nest_jax.analyze` uses: it rebuilds the model from the config
and loads the workdir's latest checkpoint (parameters and BatchNorm statistics). `analyse` builds
each analysis as the evaluator a training config would (`config.evals`, settings such as
`pool="mean"` as keyword arguments), runs it on both models over the 450 test digits, and writes
JSON, PNG and TensorBoard files. The same could be run from a shell:

    python -m nest_jax.analyze cka --config=configs/digits_vit.py --checkpoint=WORKDIR --out=DIR""")
code("""from nest_jax import data
from nest_jax.analyze.__main__ import build_subject
from nest_jax.analyze.loop import analyse
subjects = {k: build_subject(c, workdirs[k], "nest_jax", k, 10)[0] for k, c in configs.items()}
out = tempfile.mkdtemp(prefix="rep_out_")
res = {}
res["vit"] = analyse(["cka", "attention_distance", "norm_ratio", "probes", "localization"],
                     [subjects["vit_cls"], subjects["resnet"]], configs["vit_cls"], out=out, data=data,
                     batch_size=150, options={"pool": "mean"})
res["gap"] = analyse(["probes", "localization", "attention_distance"], [subjects["vit_gap"], subjects["nest"]],
                     configs["vit_gap"], out=out, data=data, batch_size=150)
print(sorted(f for f in os.listdir(out) if f.endswith(".png")))""")
md("""## CKA: ViT layer × layer, ResNet block × block, and ViT × ResNet
Minibatch CKA (Nguyen et al. 2021): unbiased HSIC terms summed over the three batches of 150
images, here on the mean of each layer's spatial tokens (`pool="mean"`). The paper's finding (a)
is that ViTs have a more uniform structure (high CKA between lower and higher layers) than the
ResNet's stage-wise grid.""")
code("""m = res["vit"]["cka"]
for k in ("vit_cls", "resnet"):
    a = np.asarray(m[k]["matrix"]); off = a[~np.eye(len(a), dtype=bool)]
    print(f"{k}: {len(a)} layers, diagonal {np.diag(a).min():.4f}..{np.diag(a).max():.4f}, mean off-diagonal CKA {off.mean():.3f}")
print("vit_cls x resnet shape", np.asarray(m["vit_cls|resnet"]["matrix"]).shape)
for f in ("cka_vit_cls", "cka_resnet", "cka_vit_cls_vs_resnet"):
    display(Image(os.path.join(out, f + ".png")))""")
md("""## Mean attention distance
Per head, the attention-weighted distance between patch centres in input pixels (prefix tokens
removed; rows not renormalized). NesT attends inside 4×4-token blocks, so its level-0 heads can
only look 4–12 px away; level-1 tokens are 8 px apart.""")
code("""for key, label in (("vit", "vit_cls"), ("gap", "vit_gap"), ("gap", "nest")):
    d = res[key]["attention_distance"][label]["per_head"]
    print(f"{label:8s} per-layer mean distance (px):", [round(float(np.mean(x)), 2) for x in d])
display(Image(os.path.join(out, "attention_distance_vit_cls.png")))""")
md("""## Ratio of norms ‖z‖ / ‖f(z)‖
Large ratios mean the skip connection carries the representation and the branch adds little.""")
code("""r = res["vit"]["norm_ratio"]
for label in ("vit_cls", "resnet"):
    for branch, groups in r[label].items():
        for group, v in groups.items():
            print(f"{label:8s} {branch + '/' + group:14s}", [round(float(x), 2) for x in v])
display(Image(os.path.join(out, "norm_ratio_vit_cls.png")))""")
md("""## Linear probes and localization: class token vs GAP
Ridge probes fitted on half of the test split and tested on the other half, per layer; per-token
probes on the final layer's spatial tokens; and localization: CKA between each final token and the
input patches at every position.""")
code("""for key, label in (("vit", "vit_cls"), ("gap", "vit_gap")):
    p = res[key]["probes"][label]
    loc = res[key]["localization"][label]["own_patch_is_most_similar"]
    print(f"{label}: ridge/mean per layer {[round(float(x), 3) for x in p['layers']['ridge_mean']]}, "
          f"per-token probe mean {p['per_token_mean']:.3f}, tokens most similar to their own patch {loc:.2f}")
display(Image(os.path.join(out, "localization_vit_cls.png")))
display(Image(os.path.join(out, "localization_vit_gap.png")))""")
md("""The TensorBoard event files in the output directory hold the same figures
(`tensorboard --logdir DIR/tensorboard`).""")
code("""print("event files:", sorted(os.listdir(os.path.join(out, "tensorboard")))[:1])
print("accuracies:", {k: round(v, 3) for k, v in acc.items()})""")

nb = nbf.v4.new_notebook()
nb.cells = cells
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, __file__.replace("make_04_representations.py", "04_representations.ipynb"))
