"""Checkpoints prove their integrity and retention deletes only what nest_jax wrote: a changed bit
in array data is caught by the per-array checksums, max_to_keep=0 keeps everything, and a user's
files inside or at the place of a checkpoint folder survive."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nest_jax.errors import UserError
from nest_jax.train import integrity
from nest_jax.train.checkpoint import Checkpointer, CorruptCheckpointError


def _state(scale: float) -> dict:
    w = jnp.sin(jnp.arange(4096, dtype=jnp.float32) * 0.37) * scale
    return {"params": {"w": w.reshape(64, 64), "b": jnp.full((7,), scale)}, "step": jnp.array(int(scale), jnp.int32)}


def _abstract():
    s = _state(1.0)
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), s), jax.tree.map(lambda a: a.sharding, s)


def _save(workdir, steps, max_to_keep=3):
    ckpt = Checkpointer(workdir, max_to_keep=max_to_keep)
    for step in steps:
        ckpt.save(step, _state(float(step)))
    ckpt.close()


def test_checksum_catches_every_single_bit_flip_and_a_swap():
    """The checksum against a NumPy float64-free reference: flip each bit of a few elements (and
    swap two elements); every change moves the sum."""
    x = np.random.default_rng(0).standard_normal(300).astype(np.float32)
    base = int(integrity.finite_and_checksums({"x": jnp.asarray(x)})[1][0])
    words = x.view(np.uint32).astype(np.uint64)
    want = int(np.sum(words * (2 * np.arange(x.size, dtype=np.uint64) + 1)) % 2**32)
    assert base == want
    for index in (0, 7, 299):
        for bit in range(32):
            y = x.copy().view(np.uint32)
            y[index] ^= np.uint32(1 << bit)
            got = int(integrity.finite_and_checksums({"x": jnp.asarray(y.view(np.float32))})[1][0])
            assert got != base, (index, bit)
    swapped = x.copy()
    swapped[[3, 9]] = swapped[[9, 3]]
    assert int(integrity.finite_and_checksums({"x": jnp.asarray(swapped)})[1][0]) != base


def test_a_flipped_bit_in_array_data_is_caught_and_the_checkpoint_set_aside(tmp_path):
    """One bit flipped in the newest checkpoint's compressed array data: orbax decodes it (into other
    numbers) and training used to resume on it. Now the checksums refuse it, it is moved aside and
    the previous checkpoint is restored."""
    _save(tmp_path, [1, 2])
    abstract, shardings = _abstract()
    data_files = sorted((tmp_path / "checkpoints" / "2" / "default").rglob("d/*"), key=lambda p: -p.stat().st_size)
    original = data_files[0].read_bytes()
    caught = None
    for offset in range(len(original) // 2, len(original)):  # the first flip that still decodes
        flipped = bytearray(original)
        flipped[offset] ^= 0x10
        data_files[0].write_bytes(bytes(flipped))
        ckpt = Checkpointer(tmp_path)
        try:
            ckpt.restore(abstract, shardings, step=2)
        except CorruptCheckpointError as e:
            caught = e
        except Exception:  # noqa: BLE001 -- this flip broke decoding: orbax itself notices, try another
            pass
        finally:
            ckpt.close(quiet=True)
        if caught is not None:
            break
    assert caught is not None, "no single-byte flip decoded without error"
    assert "does not match its checksum" in str(caught)
    ckpt = Checkpointer(tmp_path)
    step, state = ckpt.restore_latest(abstract, shardings)
    ckpt.close()
    assert step == 1 and float(state["params"]["b"][0]) == 1.0
    assert (tmp_path / "checkpoints" / "2.corrupt").is_dir()


def test_max_to_keep_zero_keeps_every_checkpoint(tmp_path):
    """max_to_keep=0 deleted every checkpoint, the old ones included (orbax keeps none)."""
    _save(tmp_path, [1, 2], max_to_keep=3)
    _save(tmp_path, [3, 4], max_to_keep=0)
    assert Checkpointer(tmp_path).all_steps() == [1, 2, 3, 4]


def test_negative_max_to_keep_is_one_line():
    with pytest.raises(UserError, match=r"train.max_to_keep=-1 must be 0 \(keep every checkpoint\)"):
        Checkpointer("/nonexistent/never/created", max_to_keep=-1, create=False)


def test_retention_deletes_only_what_nest_jax_wrote(tmp_path):
    """A user's notes inside an old step folder were deleted with it, and a file named like the next
    step was replaced by the checkpoint."""
    folder = tmp_path / "checkpoints"
    _save(tmp_path, [5], max_to_keep=2)
    (folder / "5" / "mynotes.txt").write_text("why run 5 matters")
    (folder / "40").write_text("not a checkpoint")
    _save(tmp_path, [10, 20, 30, 40], max_to_keep=2)
    assert Checkpointer(tmp_path).all_steps() == [30, 40]
    assert (folder / "5.kept" / "mynotes.txt").read_text() == "why run 5 matters"
    assert sorted(p.name for p in (folder / "5.kept").iterdir()) == ["mynotes.txt"]
    assert (folder / "40.displaced").read_text() == "not a checkpoint"
    assert not (folder / "10").exists() and not (folder / "20").exists()
