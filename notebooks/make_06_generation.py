"""Writes notebooks/06_generation.ipynb (kept as code so the notebook's source is reviewable)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md("""# 06 · Generation: a NesT generator on digits, its samples and its FID curve

The NesT generator builds an image top-down: one block of 4×4 tokens → transformer layers inside
each block → **block de-aggregation** (pixel shuffle turns every block into 2×2 child blocks) → …
→ RGB. Here it trains briefly as a GAN on scikit-learn's digits (32 px, grey) against a small NesT
discriminator (`configs/digits_nest_gan.py`, shortened), and FID is measured along the way with the
features of a digits classifier trained with the main job — also shortened, so the notebook runs in
about two minutes on a laptop CPU. FID from this classifier is comparable only with itself.""")
code("""import os, sys, json, tempfile, time, importlib.util, logging
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax, numpy as np
import matplotlib.pyplot as plt
REPO = os.path.abspath("..")
sys.path.insert(0, REPO)
logging.getLogger("absl").setLevel(logging.ERROR)

def load_config(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", name + ".py"))
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module.get_config()
t_start = time.time()""")
md("""## 1. The feature extractor: a digits classifier from the main job
Forty steps of `configs/digits_nest_tiny.py` (the full job takes 420 and reaches 99%); its workdir
holds `config.json` and the checkpoint that `nest_jax.analysis.fid.classifier_from_workdir` reads.""")
code("""from nest_jax.train import train_and_evaluate
cls_cfg = load_config("digits_nest_tiny")
cls_cfg.train.num_train_steps = 40
cls_cfg.train.log_every_steps = 40
cls_cfg.optimizer.warmup_epochs = 0.25
cls_dir = tempfile.mkdtemp(prefix="digits_cls_")
cls = train_and_evaluate(cls_cfg, cls_dir)
print(f"classifier: test top-1 {cls['eval_top1']:.3f} after {cls['step']} steps")""")
md("""## 2. Train the GAN, with FID and KID every 40 steps
The same training loop as the classifier's: `config.task = "gan"`. Its evaluators (`config.evals`)
see the EMA generator: `samples` writes a grid of it to `samples/` (PNG) and TensorBoard, `fid`
computes the real statistics once (the 1,347 training digits) and, at each evaluation, the
statistics of 500 generated digits; scalars go to `metrics.jsonl`. Both also run at step 0.""")
code("""config = load_config("digits_nest_gan")
config.train.num_train_steps = 120
config.train.log_every_steps = 40
config.train.checkpoint_every_steps = 120
config.evals.samples.every_steps = 120
with config.unlocked():
    config.evals.fid = dict(kind="fid", every_steps=40, prefix="", checkpoint=cls_dir, num_samples=500,
                            kid_subsets=20, kid_subset_size=200)
workdir = tempfile.mkdtemp(prefix="digits_gan_")
t0 = time.time()
result = train_and_evaluate(config, workdir)
rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
curve = [(r["step"], r["fid"], r["kid"]) for r in rows if "fid" in r]
for step, f, k in curve:
    print(f"step {step:4d}  FID {f:8.2f}  KID {k:.3f}")
print(f"trained {result['step']} steps in {time.time() - t0:.0f} s; FID {curve[0][1]:.2f} at init -> {curve[-1][1]:.2f}")""")
md("""## 3. Samples and the FID curve""")
code("""fig, axes = plt.subplots(1, 3, figsize=(12, 4))
names = sorted(os.listdir(os.path.join(workdir, "samples")))
for ax, name in zip(axes[:2], [names[0], names[-1]]):  # initialization and the last step
    ax.imshow(plt.imread(os.path.join(workdir, "samples", name))); ax.set_title(name); ax.axis("off")
steps, fids, _ = zip(*curve)
axes[2].plot(steps, fids, marker="o"); axes[2].set_xlabel("step"); axes[2].set_ylabel("FID (classifier features)")
axes[2].set_yscale("log"); axes[2].grid(alpha=0.3)
plt.tight_layout(); plt.show()
print("sample files:", sorted(os.listdir(os.path.join(workdir, "samples"))))
print(f"notebook time {time.time() - t_start:.0f} s")""")

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
nbf.write(nb, "06_generation.ipynb")
