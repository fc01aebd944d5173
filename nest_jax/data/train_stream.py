"""The infinite training stream on grain: batch k is a pure function of (seed, k); `start_step`
and `set_state` resume.

Epochs — every epoch is a full permutation of the split, `np.random.default_rng([seed, epoch])
.permutation(N)`, the same on every process. Epoch slots are dealt to processes round-robin:
process p of P takes slots p, p+P, p+2P, …, so the processes' parts are disjoint and together
cover the epoch. Batches run across epoch boundaries (no example is dropped at an epoch's end).

Repeated augmentation (DeiT's RASampler, Hoffer et al. 2020; r = `repeated_aug`) — slot s of an
epoch holds permutation entry ⌊s / r⌋, so each image appears r times in a row; dealt round-robin,
the r copies land on r different processes when P > 1 (in the same batch when P = 1). With r > 1
each process keeps ⌊N/P⌋ slots per epoch, so an epoch still holds ≈ N samples (N/r distinct
images), as in DeiT.

Augmentation randomness — an example's augmentation draws from generators seeded by
(seed, epoch, slot, stage) (preprocess.example_rng): it does not depend on the process count,
the worker count or how far a previous run got.

Batches — element k of a `grain.MapDataset` is the whole batch k, built by `TrainBatches` (load
b = local-batch records by index, augment each, stack). With `num_workers` > 0, grain's
`mp_prefetch` builds batches in that many worker processes, batch k in worker k mod W, and
returns them in order: the stream is the same for every worker count. The iterator's state is
{"step": k} (the next batch), so resuming needs nothing but the step.
"""

from __future__ import annotations

import functools

import numpy as np

from nest_jax.data import preprocess

_FOREVER = 2**62


def epoch_length(num_examples: int, process_index: int, process_count: int, repeated_aug: int) -> int:
    """Examples per epoch on one process."""
    if repeated_aug > 1:
        return num_examples // process_count
    return len(range(process_index, num_examples, process_count))


def stack(examples: list) -> np.ndarray | dict:
    """Stacks a list of arrays, or of equally nested dicts of arrays, along a new first axis."""
    if isinstance(examples[0], dict):
        return {k: stack([e[k] for e in examples]) for k in examples[0]}
    return np.stack(examples)


class TrainBatches:
    """Batch number k → {"image": float32 (b, S, S, C) normalized, "label": int32 (b,)}; with
    `augment_on="device"`, "image" is the uint8 / float [0, 1] crop and "augment" holds the
    device stages' random choices (preprocess.device_choices), stacked.

    Picklable (sent to grain's worker processes); the augmentation chain and the epoch
    permutations are rebuilt lazily in each process."""

    def __init__(
        self, records, ds_cfg, *, local_batch: int, seed: int, process_index: int, process_count: int, repeated_aug: int
    ):
        self.records, self.ds_cfg = records, ds_cfg
        self.n = len(records)
        self.b, self.seed, self.r = local_batch, int(seed), int(repeated_aug)
        self.p, self.num_p = process_index, process_count
        self.length = epoch_length(self.n, process_index, process_count, self.r)
        if self.length < 1:
            raise ValueError(
                f"split {ds_cfg.train_split!r} has no examples for process {process_index} of {process_count}"
            )
        self._augment = None

    def __getstate__(self):
        return dict(self.__dict__, _augment=None)

    @functools.lru_cache(maxsize=2)  # noqa: B019 (one pipeline per run) a batch spans at most two epochs
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def sample(self, i: int) -> tuple[int, int, int]:
        """Local sample i of this process → (epoch, slot in the global epoch, record index)."""
        epoch, offset = divmod(i, self.length)
        slot = self.p + offset * self.num_p
        return epoch, slot, int(self.permutation(epoch)[slot // self.r])

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        if self._augment is None:
            self._augment = preprocess.train_fn(self.ds_cfg)
        examples, labels = [], []
        for i in range(k * self.b, (k + 1) * self.b):
            epoch, slot, index = self.sample(i)
            record = self.records[index]
            examples.append(self._augment(record["image"], (self.seed, epoch, slot)))
            labels.append(record["label"])
        batch = stack(examples)  # host chain: the images; device chain: {"image", "augment"}
        return dict(batch if isinstance(batch, dict) else {"image": batch}, label=np.asarray(labels, np.int32))


def _own_arrays(batch):
    return {k: _own_arrays(v) if isinstance(v, dict) else np.array(v) for k, v in batch.items()}


def grain_iterator(dataset, num_workers: int):
    """Iterates a grain MapDataset in order: in this process (num_workers = 0) or in
    `num_workers` processes (grain mp_prefetch; each element is built whole by one worker)."""
    import grain

    ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller
            flags.FLAGS.mark_as_parsed()  # (tests, notebooks) may not have parsed any
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
        # Workers hand back shared-memory arrays; copy them into ordinary arrays.
        ds = ds.map(_own_arrays)
    return iter(ds)


class TrainIterator:
    """Infinite iterator over training batches with get_state() / set_state() ({"step": k}).

    The grain iterator (and its worker processes) starts on the first `next`, and again after
    `set_state`."""

    def __init__(self, batches: TrainBatches, *, start_step: int, num_workers: int):
        self.batches, self.num_workers = batches, int(num_workers)
        self.step = int(start_step)
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            import grain

            ds = grain.MapDataset.range(self.step, _FOREVER).map(self.batches)
            self._it = grain_iterator(ds, self.num_workers)
        batch = next(self._it)
        self.step += 1
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position: the next batch's number and the stream's seed."""
        return {"step": self.step, "seed": self.batches.seed}

    def set_state(self, state: dict) -> None:
        if int(state.get("seed", self.batches.seed)) != self.batches.seed:
            raise ValueError(f"input state is for seed {state['seed']}, this stream has seed {self.batches.seed}")
        self.close()
        self.step = int(state["step"])

    def close(self) -> None:
        """Stops the worker processes (if any); a later `next` starts them again."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: grain's modules may already be gone
            pass


def train_iterator(
    source, ds_cfg, *, local_batch: int, seed: int, start_step: int, process_index: int, process_count: int
) -> TrainIterator:
    batches = TrainBatches(
        source.lookup(ds_cfg.train_split),
        ds_cfg,
        local_batch=local_batch,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        repeated_aug=int(ds_cfg.repeated_aug),
    )
    return TrainIterator(batches, start_step=start_step, num_workers=int(ds_cfg.num_workers))
