"""Orbax checkpoints of a fit: the state plus the learning curve and timings so far.

Orbax writes each checkpoint into a temporary folder and renames it when complete,
so a run killed while saving leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax


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
        """``(state, history, chunk_seconds)`` of the latest checkpoint, or a fresh start."""
        if self.manager is None or self.manager.latest_step() is None:
            return template, [], []
        latest = self.manager.latest_step()
        import orbax.checkpoint as ocp

        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self.manager.restore(
            latest,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        meta = restored["meta"]
        return restored["state"], meta["history"], meta["chunk_seconds"]

    def maybe_save(self, step: int, last: bool, state: dict, history: list, seconds: list) -> None:
        """Saves every ``every`` calls and at the ``last`` step."""
        self.since += 1
        if self.manager is None or not (self.since >= self.every or last):
            return
        import orbax.checkpoint as ocp

        meta: dict[str, Any] = {"history": history, "chunk_seconds": seconds}
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


def _manager(directory: str | pathlib.Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)
