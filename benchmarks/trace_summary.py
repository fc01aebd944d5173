"""Where the time of a traced step goes: a summary of a `jax.profiler` Perfetto trace.

    python benchmarks/trace_summary.py DIR [--steps N] [--top 15]

DIR is the folder given to `jax.profiler.trace(DIR, create_perfetto_trace=True)` (gpu_train.py
--profile writes one). The trace's events are grouped by process: a device's process
("/device:GPU:0", …) holds one thread per stream ("Stream #…") with one event per kernel, besides
summary rows (XLA modules, XLA ops); the host's process ("/host:CPU") the Python thread and the
runtime's threads. Printed (and returned by `summarize`):

  window_ms       first to last kernel on the devices' streams (of any event when there is none)
  busy_ms         time at least one device stream runs a kernel (the union of their intervals)
  busy_fraction   busy_ms / window_ms: near 1, the device is the bottleneck (the gap to another
                  framework is in the kernels); well below 1, the device waits for the host
                  (kernel launches, synchronization)
  top             the kernels (or host ops) with the most total time, with their share of busy_ms
  host_call_ms    total time of the host's calls into the compiled program (`ExecuteHelper…`)
  threads         total event time per (process, thread), to read a trace of another layout

Per step: divide by --steps, the number of steps the trace holds.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os


def load_events(trace_dir: str) -> tuple[list[dict], dict, dict]:
    """The complete events ('X') of the newest Perfetto trace under trace_dir, the process names
    {pid: name} and the thread names {(pid, tid): name}."""
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(files[-1]) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    meta = [e for e in events if e.get("ph") == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in meta if e.get("name") == "thread_name"}
    return [e for e in events if e.get("ph") == "X" and "dur" in e], processes, threads


def union_ms(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals in µs, as ms."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total / 1e3


def summarize(trace_dir: str, steps: int = 1, top: int = 15) -> dict:
    events, processes, threads = load_events(trace_dir)
    thread = lambda e: threads.get((e["pid"], e.get("tid")), "")  # noqa: E731
    device = [e for e in events if "/device:" in processes.get(e["pid"], "")]
    kernels = [e for e in device if thread(e).startswith("Stream")]
    timed = kernels or events
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in timed]
    window = (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e3
    busy = union_ms(spans)
    per_name = collections.Counter()
    for e in timed:
        per_name[e["name"]] += float(e["dur"]) / 1e3
    per_thread = collections.Counter()
    for e in events:
        per_thread[f"{processes.get(e['pid'], e['pid'])} | {thread(e)}"] += float(e["dur"]) / 1e3
    host_calls = sum(float(e["dur"]) for e in events if e["name"].startswith("CommonPjRtLoadedExecutable::Execute"))
    return dict(
        steps=steps,
        device_processes=sorted({processes[e["pid"]] for e in device}),
        window_ms=round(window / steps, 3),
        busy_ms=round(busy / steps, 3),
        busy_fraction=round(busy / window, 3) if window else None,
        host_call_ms=round(host_calls / 1e3 / steps, 3),
        top=[
            (name, round(ms / steps, 3), round(ms / busy, 3) if busy else None)
            for name, ms in per_name.most_common(top)
        ],
        threads=[(name, round(ms / steps, 3)) for name, ms in per_thread.most_common(top)],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace_dir")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    print(json.dumps(summarize(args.trace_dir, args.steps, args.top), indent=1))


if __name__ == "__main__":
    main()
