"""Optional Weights & Biases logging of a run (``pip install 'rlkit[wandb]'``).

One W&B run per ``rlkit train``: the identity (agent, env, config, seeds, plan) as its config,
every chunk's metrics against ``env_steps`` (``grad_steps`` offline; ``NAME/mean`` and ``NAME/seed_S`` on the device; the
Reverb backend, whose seeds run one after another, logs ``NAME/seed_S``), and at the end
the final greedy returns in the summary with the learning-curve image. Files go under
``RUN_DIR/wandb``. ``mode="offline"`` (or ``WANDB_MODE=offline``) needs no account and no network;
``wandb sync RUN_DIR/wandb/offline-run-*`` uploads such a run later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

WANDB_DIR = "wandb"
MODES = ("online", "offline", "disabled")


class WandbWriter:
    """Logs chunk metrics and the final results of one run to W&B."""

    def __init__(
        self, run_dir: Path, identity: Mapping[str, Any], seeds: Sequence[int], *, project: str,
        entity: str | None = None, group: str | None = None, mode: str | None = None,
    ):
        if mode is not None and mode not in MODES:
            raise ValueError(f"--wandb-mode must be one of {', '.join(MODES)}, got {mode!r}")
        try:
            import wandb
        except ImportError:
            raise ValueError("--wandb needs wandb: pip install 'rlkit[wandb]' (or wandb)") from None
        self.seeds = list(seeds)
        self.run_dir = run_dir
        (run_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
        try:
            self._run = wandb.init(
                project=project, entity=entity, group=group, name=run_dir.resolve().name, dir=str(run_dir),
                config=dict(identity), mode=mode, reinit="create_new",
            )
        except Exception as error:  # wandb's UsageError, CommError, ... (no API key, no network)
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise ValueError(f"--wandb: W&B did not start ({type(error).__name__}: {first}); run `wandb login`, "
                             "or pass --wandb-mode offline") from None
        self.step_name = "grad_steps" if "dataset" in identity else "env_steps"  # offline runs take no env steps
        self._run.define_metric(self.step_name)
        self._run.define_metric("*", step_metric=self.step_name)  # resumed runs may log a step again
        self._wandb = wandb

    def write(self, steps: int, mean: Mapping[str, float], per_seed: Mapping[str, np.ndarray]) -> None:
        row: dict[str, float] = {self.step_name: steps}
        row.update({f"{name}/mean": float(value) for name, value in mean.items() if np.isfinite(value)})
        for name, values in per_seed.items():
            for seed, value in zip(self.seeds, np.asarray(values, dtype=np.float64)):
                if np.isfinite(value):
                    row[f"{name}/seed_{seed}"] = float(value)
        self._run.log(row)

    def write_seed(self, seed: int, metrics: Mapping[str, float]) -> None:
        """One chunk of one seed (the Reverb backend trains its seeds one after another)."""
        row: dict[str, float] = {"env_steps": float(metrics["env_steps"])}
        row.update({f"{name}/seed_{seed}": float(v) for name, v in metrics.items()
                    if name != "env_steps" and np.isfinite(v)})
        self._run.log(row)

    def finish(self, per_seed_return: np.ndarray, curves_png: Path | None = None) -> None:
        """The final greedy returns into the summary, and the learning curves as an image."""
        summary = {"final_eval_return/mean": float(np.mean(per_seed_return))}
        summary.update({f"final_eval_return/seed_{s}": float(v) for s, v in zip(self.seeds, per_seed_return)})
        self._run.summary.update(summary)
        if curves_png is not None and curves_png.exists():
            self._run.log({"learning_curves": self._wandb.Image(str(curves_png))})

    def close(self, exit_code: int = 0) -> None:
        """End the W&B run; a nonzero ``exit_code`` marks it failed (training raised)."""
        self._run.finish(exit_code=exit_code)


def learning_curves(run_dir: Path) -> Path | None:
    """The run's learning-curve PNG (``rlkit plot`` on this run alone), or None if it cannot be drawn."""
    from rlkit import plot

    try:
        path = run_dir / WANDB_DIR / "learning_curves.png"
        plot.plot_runs([plot.load_run(run_dir)], plot.DEFAULT_METRIC, path)
        return path
    except (OSError, ValueError):
        return None
