"""Optional TensorBoard logging of chunk metrics (``pip install rlkit[tensorboard]``: tensorboardX).

tensorboardX writes TensorBoard event files without TensorFlow, so the core world stays free of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

TENSORBOARD_DIR = "tensorboard"


class TensorBoardWriter:
    """Writes each chunk's metrics as scalars: ``NAME/mean`` and ``NAME/seed_S`` at the env step."""

    def __init__(self, run_dir: Path, seeds: Sequence[int], purge_step: int | None = None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ValueError(
                "--tensorboard needs tensorboardX: pip install 'rlkit[tensorboard]' (or tensorboardX)"
            ) from error
        self.seeds = list(seeds)
        # purge_step drops events a killed run wrote after its last checkpoint, like metrics.jsonl.
        self._writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge_step)

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
