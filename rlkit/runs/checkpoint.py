"""Checkpoints of a whole run: the run state of every vmapped seed, between chunks.

The run state (agent and optimizer state, environment states, replay buffer, random keys,
step counters) is copied to the host and written with orbax-checkpoint under
``RUN_DIR/checkpoints/<chunks done>``, atomically (orbax commits a finished directory),
keeping the last ``keep``. Beside it, JSON metadata says what run it belongs to (agent,
env, config, seeds, chunk plan) and where the logger was (metrics lines written, run
seconds so far), so ``--resume`` continues exactly where the run stopped and refuses a
checkpoint of a different run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

CHECKPOINT_DIR = "checkpoints"


class Restored(NamedTuple):
    run_state: Any
    chunks_done: int
    metadata: dict[str, Any]


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host_leaf(x: Any) -> Any:
    """A leaf as orbax writes it: a PRNG key as its raw uint32 data, an empty array as nothing (orbax
    refuses zero-size arrays, and MJX physics states hold some)."""
    if _is_key(x):
        return jax.random.key_data(x)
    return None if x.size == 0 else x


def _to_host(run_state: Any) -> Any:
    """Numpy copies of the run state's arrays as orbax writes them (``_host_leaf``)."""
    return jax.device_get(jax.tree.map(_host_leaf, run_state))


def restore_target(like: Any) -> Any:
    """The shapes and dtypes orbax restores for a state shaped like ``like`` (``_host_leaf``'s form)."""
    shapes = jax.eval_shape(lambda tree: jax.tree.map(_host_leaf, tree), like)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), shapes)


def _from_host(saved: Any, like: Any) -> Any:
    """Arrays shaped like ``like``: keys re-wrapped with ``like``'s PRNG implementation, empty arrays made again."""

    def restore(reference, value):
        if reference is None:
            return None
        if value is None:
            return jnp.zeros(reference.shape, reference.dtype)
        if _is_key(reference):
            return jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(reference))
        return jnp.asarray(value, dtype=reference.dtype)

    return jax.tree.map(restore, like, saved, is_leaf=lambda x: x is None)


def has_checkpoints(run_dir: str | Path) -> bool:
    directory = Path(run_dir) / CHECKPOINT_DIR
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_schedule(every_steps: int | None, every_minutes: float | None, keep: int = 1) -> None:
    """One-line errors for checkpoint options out of range (``--checkpoint-every-*``, ``--keep-checkpoints``)."""
    if keep < 1:
        raise ValueError(f"--keep-checkpoints must be >= 1, got {keep}")
    if every_steps is not None and every_steps <= 0:
        raise ValueError(f"--checkpoint-every-steps must be > 0, got {every_steps}")
    if every_minutes is not None and every_minutes <= 0:
        raise ValueError(f"--checkpoint-every-minutes must be > 0, got {every_minutes}")


class Schedule:
    """When to checkpoint: at the first check past each multiple of ``every_steps`` steps (so the
    checkpoints do not drift where checks land past the multiples), or once ``every_minutes`` minutes
    have passed since the last checkpoint; either may be None (never by that measure)."""

    def __init__(self, every_steps: int | None, every_minutes: float | None):
        self.every_steps = every_steps
        self.every_seconds = None if every_minutes is None else 60.0 * every_minutes
        self.saved(0)

    def due(self, steps: int) -> bool:
        if self.every_steps is not None and steps // self.every_steps > self._last_multiple:
            return True
        return self.every_seconds is not None and time.monotonic() - self._last_time >= self.every_seconds

    def saved(self, steps: int) -> None:
        """A checkpoint was written (or restored) at ``steps``: the next one counts from here."""
        self._last_multiple = 0 if self.every_steps is None else steps // self.every_steps
        self._last_time = time.monotonic()


class Checkpointer:
    """Saves the run state every ``every_steps`` environment steps or ``every_minutes`` minutes.

    ``identity`` is the JSON-able description of the run (agent, env, config, seeds, plan)
    that a resumed run must match exactly.
    """

    def __init__(
        self,
        run_dir: str | Path,
        identity: Mapping[str, Any],
        every_steps: int | None = None,
        every_minutes: float | None = 10.0,
        keep: int = 3,
    ):
        import orbax.checkpoint as ocp

        check_schedule(every_steps, every_minutes, keep)
        self._ocp = ocp
        self.directory = (Path(run_dir) / CHECKPOINT_DIR).resolve()
        self.identity = dict(identity)
        self.schedule = Schedule(every_steps, every_minutes)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def due(self, steps: int, final: bool) -> bool:
        """Whether a checkpoint is due after a chunk that ended at ``steps`` (environment or gradient steps)."""
        return final or self.schedule.due(steps)

    def save(self, chunks_done: int, run_state: Any, steps: int, progress: Mapping[str, Any]) -> None:
        """Write the run state after ``chunks_done`` chunks (a blocking save: the run state is donated next)."""
        ocp = self._ocp
        metadata = {"identity": self.identity, "chunks_done": chunks_done, "steps": steps, **progress}
        self._manager.save(
            chunks_done,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_host(run_state)), metadata=ocp.args.JsonSave(metadata)
            ),
        )
        self._manager.wait_until_finished()
        self.schedule.saved(steps)

    def restore_latest(self, like: Any) -> Restored:
        """The newest checkpoint, checked against this run's identity; ``like`` is a fresh run state."""
        ocp = self._ocp
        step = self._manager.latest_step()
        if step is None:
            raise ValueError(f"--resume: {self.directory} holds no checkpoint to resume from")
        try:
            metadata = self._manager.restore(
                step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
            ).metadata
        except Exception as error:  # orbax raises many types for unreadable files
            raise ValueError(
                f"--resume: checkpoint {self.directory / str(step)} is unreadable ({error}); "
                f"remove it to fall back to an older one, or start a new --out"
            ) from error
        changed = differences(metadata.get("identity", {}), self.identity)
        if changed:
            raise ValueError(
                f"--resume: the checkpoint in {self.directory} belongs to a different run: "
                + "; ".join(changed)
            )
        try:
            saved = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(restore_target(like)))
            ).state
        except Exception as error:
            raise ValueError(
                f"--resume: checkpoint {self.directory / str(step)} does not fit this run's state "
                f"({type(error).__name__}: {error})"
            ) from error
        self.schedule.saved(int(metadata.get("steps", metadata.get("env_steps", 0))))  # env_steps: before offline runs
        return Restored(_from_host(saved, like), int(metadata["chunks_done"]), metadata)

    def close(self) -> None:
        self._manager.close()


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two run identities, field by field."""
    out = []
    for name in sorted(set(saved) | set(current)):
        if name == "config":
            old, new = saved.get(name, {}), current.get(name, {})
            for field in sorted(set(old) | set(new)):
                if old.get(field) is None and new.get(field) == "inf":
                    continue  # written before configs kept non-finite floats (config.from_dict reads null as inf)
                if old.get(field) != new.get(field):
                    out.append(f"config.{field} was {old.get(field)!r}, now {new.get(field)!r}")
        elif saved.get(name) != current.get(name):
            out.append(f"{name} was {saved.get(name)!r}, now {current.get(name)!r}")
    return out


def load(run_dir: str | Path, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """A saved run state as numpy arrays (keys as raw data) and its metadata; the latest by default.

    For inspection (final parameters, comparing runs); ``--resume`` goes through ``Checkpointer``.
    """
    import orbax.checkpoint as ocp

    directory = (Path(run_dir) / CHECKPOINT_DIR).resolve()
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"{directory} holds no checkpoint")
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), metadata=ocp.args.JsonRestore())
        )
        return restored.state, restored.metadata
    finally:
        manager.close()


def save_state(path: str | Path, tree: Any) -> None:
    """Write one pytree (a finished seed's agent state) with orbax, replacing what was there."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(Path(path).resolve(), _to_host(tree), force=True)
        checkpointer.wait_until_finished()


def restore_state(path: str | Path, like: Any) -> Any:
    """A pytree written by ``save_state``, shaped like ``like`` (a freshly initialized one)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.restore(Path(path).resolve(), restore_target(like))
    return _from_host(saved, like)
