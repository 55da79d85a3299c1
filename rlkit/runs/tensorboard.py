"""Optional TensorBoard logging of chunk metrics (``pip install rlkit[tensorboard]``: tensorboardX).

tensorboardX writes TensorBoard event files without TensorFlow, so the core world stays free of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.runs.rundir import TENSORBOARD_DIR


def summary_writer(directory: Path, resumed_steps: int | None) -> Any:
    """A tensorboardX writer into ``directory``. A run resumed from a checkpoint at ``resumed_steps``
    hides what the stopped run wrote after it (like ``metrics.jsonl``) and keeps the checkpoint's own
    point: TensorBoard hides every event at or after the purge step."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ValueError(
            "--tensorboard needs tensorboardX: pip install 'rlkit[tensorboard]' (or tensorboardX)"
        ) from error
    return SummaryWriter(str(directory), purge_step=None if resumed_steps is None else int(resumed_steps) + 1)


class TensorBoardWriter:
    """Writes each chunk's metrics as scalars: ``NAME/mean`` and ``NAME/seed_S`` at the env step."""

    def __init__(self, run_dir: Path, seeds: Sequence[int], resumed_steps: int | None = None):
        self.seeds = list(seeds)
        self._writer = summary_writer(run_dir / TENSORBOARD_DIR, resumed_steps)

    def write(self, env_steps: int, mean: Mapping[str, float], per_seed: Mapping[str, np.ndarray]) -> None:
        for name, value in mean.items():
            if np.isfinite(value):
                self._writer.add_scalar(f"{name}/mean", value, env_steps)
        if len(self.seeds) > 1:
            for name, values in per_seed.items():
                for seed, value in zip(self.seeds, np.asarray(values, dtype=np.float64)):
                    if np.isfinite(value):
                        self._writer.add_scalar(f"{name}/seed_{seed}", value, env_steps)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
