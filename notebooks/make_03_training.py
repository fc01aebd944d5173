"""Writes notebooks/03_training.ipynb (kept as code so the notebook's source is reviewable)."""

import nbformat as nbf

cells = []
md = lambda s: cells.append(nbf.v4.new_markdown_cell(s))
code = lambda s: cells.append(nbf.v4.new_code_cell(s))

md("""# 03 · Training: a short digits run, its checkpoints and its TensorBoard logs

The default main job is `python -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=...`
(a 0.37M-parameter NesT on scikit-learn's digits at 32 px, ≥ 99% test accuracy in a few minutes on
a laptop CPU). Here we call the same `train_and_evaluate(config, workdir)` from Python, shortened
to 64 steps (about 3 epochs) so the notebook runs in well under two minutes, print the metrics as
they are written, then open the workdir: the orbax checkpoints (restore one and evaluate it) and the
TensorBoard event files (plot the loss curve).""")
code("""import os, sys, re, tempfile, importlib.util, logging
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
import jax, numpy as np
import matplotlib.pyplot as plt
REPO = os.path.abspath("..")
sys.path.insert(0, REPO)

spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", "digits_nest_tiny.py"))
cfg_module = importlib.util.module_from_spec(spec); spec.loader.exec_module(cfg_module)
config = cfg_module.get_config()
config.train.num_train_steps = 64         # the full job: 20 epochs = 420 steps
config.train.log_every_steps = 8
config.train.eval_every_steps = 32
config.train.checkpoint_every_steps = 32
config.train.max_to_keep = 3
config.optimizer.warmup_epochs = 0.25
workdir = tempfile.mkdtemp(prefix="nest_digits_")
print(config.model.name, dict(config.model.overrides), "| workdir", workdir)""")
md("""## Train, with live metrics
The trainer writes its metrics to TensorBoard event files and `metrics.jsonl` in the workdir and to
the `absl` log, one line per write (`[step] name=value, ...`). A small logging handler prints
those lines as they arrive (and keeps them for the plot below); the rest of the log is muted.""")
code("""from absl import logging as absl_logging
from nest_jax.train import train_and_evaluate

live = []   # (step, {name: value})
class MetricLines(logging.Handler):
    def emit(self, record):
        m = re.match(r"\\[(\\d+)\\] (.*)", record.getMessage())
        if m:
            vals = dict(kv.split("=") for kv in m.group(2).split(", "))
            vals = {k: float(v) for k, v in vals.items() if k.startswith(("train_loss", "train_acc", "eval_top1"))}
            if vals:
                live.append((int(m.group(1)), vals))
                print(f"step {int(m.group(1)):4d}  " + "  ".join(f"{k}={v:.4f}" for k, v in vals.items()), flush=True)
absl_logger = logging.getLogger("absl")
absl_logger.handlers[:] = [MetricLines()]
absl_logger.propagate = False
absl_logging.set_verbosity("info")

import time
t0 = time.time()
result = train_and_evaluate(config, workdir)
print(f"trained {result['step']} steps in {time.time() - t0:.0f} s (compile included): "
      f"test top-1 {result['eval_top1']:.4f}, test loss {result['eval_loss']:.4f}")""")
code("""steps = [s for s, v in live if "train_loss" in v]
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].plot(steps, [v["train_loss"] for s, v in live if "train_loss" in v]); ax[0].set(xlabel="step", title="train loss (live log)")
ev = [(s, v["eval_top1"]) for s, v in live if "eval_top1" in v]
ax[1].plot(*zip(*ev), "o-"); ax[1].set(xlabel="step", title="test top-1", ylim=(0, 1))
plt.tight_layout(); plt.show()""")
md("""## The checkpoints
`<workdir>/checkpoints/<step>` holds the whole train state (params, AdamW moments, step, rng);
orbax writes each into a temporary directory and renames it when complete. Every checkpoint (steps 32 and
64) is kept here (`max_to_keep=3`). We rebuild the trainer from the config (shapes and shardings only), restore the
*earliest* kept checkpoint and evaluate it: it must reproduce the accuracy logged at that step.""")
code("""from nest_jax import data
from nest_jax.train.checkpoint import Checkpointer
from nest_jax.train.evaluators import EvalData, build_evaluators
from nest_jax.train.loop import schedule_lengths, mesh_axes
from nest_jax.train.sharding import make_mesh
from nest_jax.train.trainer import make_trainer

for name in sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int):
    path = os.path.join(workdir, "checkpoints", name)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
    print(f"checkpoints/{name:>4s}  {size / 1e6:5.2f} MB")

info = data.get_info(config.dataset)
num_steps, warmup, _ = schedule_lengths(config, info.num_train)
mesh = make_mesh(mesh_axes(config))
trainer = make_trainer(config, mesh, num_classes=info.num_classes, num_train_steps=num_steps, warmup_steps=warmup)
ckpt = Checkpointer(workdir)
first = min(ckpt.all_steps())
state = ckpt.restore(trainer.abstract_state, trainer.state_shardings, step=first)
ckpt.close()
print("restored step", int(state["step"]), "| state keys", sorted(state))
# The evaluators of config.evals, built as the training loop builds them (model_fn: state -> model).
rest = trainer.init_rest()
evaluators = build_evaluators(config, lambda s: trainer.model(s["params"], s.get("batch_stats"), rest),
                              EvalData(config, data, mesh))
restored = evaluators["val"].run(state, first)
logged = dict(ev)[first]
print(f"restored checkpoint {first}: test top-1 {restored['eval_top1']:.4f} (logged during training: {logged:.4f})")
# Training, checkpoints and evaluation ran without TensorFlow (the event-file reader below may load it).
print("TensorFlow imported:", "tensorflow" in sys.modules)""")
md("""## The TensorBoard logs
The same scalars are in `<workdir>/events.out.tfevents.*` (open them with `tensorboard --logdir`;
nest_jax writes them with tensorboardX, no TensorFlow needed) and in `<workdir>/metrics.jsonl`. Here we
read the event files with TensorBoard's `EventAccumulator`.""")
code("""from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
print("event files:", events)
acc = EventAccumulator(workdir, size_guidance={"scalars": 0}); acc.Reload()
print("tags:", sorted(acc.Tags()["scalars"]))
series = {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
          for tag in ("train_loss", "eval_loss", "eval_top1", "train_lr")}
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].plot(*zip(*series["train_loss"]), label="train (mean over 8 steps)")
ax[0].plot(*zip(*series["eval_loss"]), "o-", label="test")
ax[0].set(xlabel="step", ylabel="cross-entropy", yscale="log", title="loss (from the event files)"); ax[0].legend()
ax[1].plot(*zip(*series["train_lr"])); ax[1].set(xlabel="step", title="learning rate: warmup + cosine")
plt.tight_layout(); plt.show()
print(f"event-file test top-1 at step {series['eval_top1'][-1][0]}: {series['eval_top1'][-1][1]:.4f}")""")

nb = nbf.v4.new_notebook(
    cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
)
nbf.write(nb, __file__.replace("make_03_training.py", "03_training.ipynb"))
