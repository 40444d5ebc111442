"""Orbax checkpoints of a fit: the state plus the learning curve and timings so far.

Orbax writes each checkpoint into a temporary folder and renames it when complete,
so a run killed while saving leaves the previous checkpoint loadable (the temporary
folder is deleted when the run starts again). A complete checkpoint that cannot be
read back whole raises :class:`Unreadable`, never half-restored state: a file cut
short fails to parse or to read, and what still reads but differs from what was
saved (a block overwritten, a file from another checkpoint) does not match the
:func:`checksum` saved with it. With several processes every process saves and
restores its own shards, together (the folder must be one all hosts share).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

from lab import distributed


def checksum(tree: Any) -> list[int]:
    r"""Two wrapping ``uint32`` sums per leaf of its 32-bit words ``w_i``:
    :math:`\sum_i w_i` and :math:`\sum_i (i + 1)\, w_i`, on the host.

    Integer sums are exact in any order, so the same state gives the same checksum on
    any mesh and number of processes; a zeroed, cut or shuffled block changes it. No
    compilation: the state is read to host memory (:func:`lab.distributed.fetch`, an
    all-gather only for arrays split over several processes), as saving does anyway.
    """
    out = []
    for leaf in jax.tree.leaves(tree):
        raw = np.frombuffer(distributed.fetch(leaf).tobytes(), np.uint8)
        words = np.pad(raw, (0, -len(raw) % 4)).view(np.uint32)
        weights = np.arange(1, len(words) + 1, dtype=np.uint32)
        out += [int(words.sum(dtype=np.uint32)), int((words * weights).sum(dtype=np.uint32))]
    return out


class Unreadable(Exception):
    """The latest checkpoint of a run cannot be restored (truncated or corrupt)."""


class Saved:
    """The checkpoints of one (method, seed) run in ``directory`` (``None``: none).

    Args:
      directory: where the checkpoints live.
      every: learning-curve points between checkpoints (the last one always saves).
    """

    def __init__(self, directory: str | pathlib.Path | None, every: int):
        self.every, self.since = every, 0
        self.manager = None if directory is None else _manager(directory)

    def restore(self, template: dict) -> tuple[dict, list[dict], list[list[float]]]:
        """``(state, history, chunk_seconds)`` of the latest checkpoint, or a fresh start.

        Raises:
          Unreadable: the latest checkpoint cannot be read back (the manager is closed).
        """
        if self.manager is None or self.manager.latest_step() is None:
            return template, [], []
        latest = self.manager.latest_step()
        import orbax.checkpoint as ocp

        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            restored = self.manager.restore(
                latest,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
            meta = restored["meta"]
            if meta.get("checksum", checksum(restored["state"])) != checksum(restored["state"]):
                raise ValueError("the restored state does not match its checksum")
            return restored["state"], meta["history"], meta["chunk_seconds"]
        except Exception as err:  # orbax, TensorStore and json each raise their own kinds
            self.close()
            first = (str(err).strip().splitlines() or [""])[0][:160]
            raise Unreadable(
                f"checkpoint of step {latest} unreadable ({type(err).__name__}: {first})"
            ) from err

    def maybe_save(self, step: int, last: bool, state: dict, history: list, seconds: list) -> None:
        """Saves every ``every`` calls and at the ``last`` step."""
        self.since += 1
        if self.manager is None or not (self.since >= self.every or last):
            return
        import orbax.checkpoint as ocp

        meta: dict[str, Any] = {
            "history": history,
            "chunk_seconds": seconds,
            "checksum": checksum(state),
        }
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )
        self.manager.wait_until_finished()
        self.since = 0

    def close(self) -> None:
        """Closes the manager (waits for pending writes)."""
        if self.manager is not None:
            self.manager.close()
            self.manager = None


def _manager(directory: str | pathlib.Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)
