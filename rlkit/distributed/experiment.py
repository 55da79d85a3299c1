"""``rlkit.distributed.run``: a distributed run with the records of every other backend.

::

    from rlkit import distributed, presets
    from rlkit.agents import dqn

    config = presets.config_for("dqn", "gym:CartPole-v1")
    result = distributed.run(dqn, config, "gym:CartPole-v1", total_steps=150_000, num_actors=2, out="runs/dqn")

The run directory gets ``run.json``, ``metrics.jsonl`` (one line every ``metrics_every`` steps),
``results.json`` (the final greedy evaluation), ``final_states/seed_S`` (for ``rlkit eval``, ``render``
and ``rlkit.load``), the learner's and the replay's checkpoints, and Ray's session files and logs.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlkit.distributed.cluster import RAY_DIR
from rlkit.distributed.job import DistributedSettings, Job
from rlkit.runs.checkpoint import CHECKPOINT_DIR
from rlkit.runs.rundir import FINAL_STATES_DIR, REPLAY_DIR
from rlkit.types import KINDS

BACKEND = "distributed"
OWN_DIRS = (CHECKPOINT_DIR, REPLAY_DIR, FINAL_STATES_DIR, RAY_DIR)  # what --overwrite replaces


def check(agent_module: Any, config: Any, env: str, total_steps: int, settings: DistributedSettings) -> Any:
    """Everything checked before any process starts; returns the agent's experience spec."""
    from rlkit.envs import environment_spec, make_host

    spec = agent_module.experience(config)
    if spec.needs_dataset:
        raise ValueError(f"agent {agent_module.__name__.rsplit('.', 1)[-1]} learns only from a dataset, on the "
                         "device backend: rlkit train --dataset D")
    if spec.kind not in KINDS:
        raise ValueError(f"--backend distributed: experience kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    try:
        env_spec = environment_spec(make_host(env, seed=0))
    except (ValueError, ImportError) as error:  # ImportError: dm_control or its rendering backend
        raise ValueError(f"{error} (--backend distributed runs host environments)") from None
    agent_module.make(config, env_spec, total_steps)  # the agent fits the environment
    if spec.min_size >= total_steps:
        raise ValueError(f"steps={total_steps} ends before learning starts (learning_starts/batch_size need "
                         f"{spec.min_size} steps)")
    return spec


def run(
    agent_module: Any,
    config: Any,
    env: str,
    total_steps: int,
    *,
    out: str | Path,
    num_actors: int | None = None,
    seed: int = 0,
    settings: DistributedSettings | None = None,
    metrics_every: int | None = None,
    final_eval_episodes: int = 20,
    checkpoint_every_steps: int | None = None,
    checkpoint_every_minutes: float | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    identity_extra: dict | None = None,
    tensorboard: bool = False,
    wandb: dict | None = None,
    quiet: bool = False,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train one seed with a replay server, a learner and ``num_actors`` actors on Ray; write the records.

    ``num_actors`` (default ``settings.num_actors``, 2 without ``settings``) may be given or be in ``settings``.

    ``metrics_every`` (default a tenth of the budget): environment steps between metrics lines, each with a
    greedy evaluation of ``settings.eval_episodes`` episodes. ``checkpoint_every_steps`` and
    ``checkpoint_every_minutes``: the learner and the replay checkpoint at the first metrics line past each
    multiple of the steps, or once the minutes have passed since the last checkpoint (default: neither, so
    no checkpoints); ``resume``
    continues the run in ``out`` from its last checkpoint. ``tensorboard`` also writes the metrics lines to
    ``OUT/tensorboard/seed_S``; ``wandb`` (``WandbWriter``'s keyword arguments: project, entity, group, mode)
    logs them to Weights & Biases. Returns the driver's result (final state, final returns, steps, updates,
    timings) with ``run_dir``.
    """
    from rlkit import config as cfg
    from rlkit.distributed import driver
    from rlkit.runs import rundir
    from rlkit.runs.checkpoint import Schedule, check_schedule, save_state
    from rlkit.runs.reverb_runner import MetricsTable

    if settings is None:
        settings = DistributedSettings() if num_actors is None else DistributedSettings(num_actors=num_actors)
    elif num_actors not in (None, settings.num_actors):
        raise ValueError(f"num_actors={num_actors} and settings.num_actors={settings.num_actors}: give one of them")
    if metrics_every is None:
        metrics_every = max(1, total_steps // 10)
    if metrics_every < 1 or total_steps < 1:
        raise ValueError(f"total_steps and metrics_every must be >= 1, got {total_steps} and {metrics_every}")
    check_schedule(checkpoint_every_steps, checkpoint_every_minutes)
    rundir.check_trackers(tensorboard, wandb is not None)
    check(agent_module, config, env, total_steps, settings)
    name = agent_module.__name__.rsplit(".", 1)[-1]
    identity = {
        "agent": name, "env": env, "config": cfg.to_dict(config), "seeds": [seed], "total_steps": total_steps,
        "num_chunks": -(-total_steps // metrics_every), "eval_episodes": final_eval_episodes, "backend": BACKEND,
        "actors": settings.num_actors, "envs_per_actor": settings.envs_per_actor, **(identity_extra or {}),
    }
    opened = rundir.open_run_dir(out, identity, resume=resume, overwrite=overwrite, own_dirs=OWN_DIRS)
    if opened.complete:
        rundir.print_complete(opened.path)
        return {"run_dir": opened.path, "complete": True}
    run_dir = opened.path
    job = Job(agent_module.__name__, config, env, total_steps, seed, str(run_dir.resolve()), identity, settings,
              name=f"rlkit-{uuid.uuid4().hex[:8]}")
    table = MetricsTable(run_dir, 1)
    started = time.time()
    schedule = Schedule(checkpoint_every_steps, checkpoint_every_minutes)

    resumed_steps = None
    if opened.resume:
        from rlkit.runs.checkpoint import load

        _, metadata = load(run_dir)
        resumed_steps = int(metadata.get("steps", 0))
        table.history[0] = list(metadata.get("history", []))
        schedule.saved(resumed_steps)
        table.write()
    trackers = _trackers(run_dir, identity, seed, tensorboard, wandb, resumed_steps)

    def on_metrics(line: dict) -> None:
        table.add(0, line)
        for tracker in trackers:
            tracker(line)

    succeeded = False
    try:
        result = driver.run_job(
            job, metrics_every=metrics_every, final_eval_episodes=final_eval_episodes, ray_address=ray_address,
            resume=opened.resume, checkpoints=schedule, on_metrics=on_metrics, quiet=quiet, log=log,
        )
        save_state(run_dir / rundir.FINAL_STATES_DIR / f"seed_{seed}", result["state"])
        per_seed = np.asarray([np.mean(result["final_returns"])])
        rundir.finish_run(
            run_dir, identity, per_seed, compile_seconds=result["compile_seconds"],
            run_seconds=result["run_seconds"], eval_seconds=result["eval_seconds"],
            resumed_from=result["resumed_from"], started=started, versions=_versions(),
            metrics_path=table.path,
            extra={"per_seed": [{"seed": seed, "eval_returns": result["final_returns"].tolist(),
                                 "env_steps": result["env_steps"], "updates": result["updates"]}]},
        )
        for tracker in trackers:
            getattr(tracker, "finish", lambda *a: None)(per_seed)
        succeeded = True
    finally:
        for tracker in trackers:
            tracker.close(0 if succeeded else 1)
    return {**result, "run_dir": run_dir, "complete": True}


def _versions() -> dict[str, str]:
    import importlib.metadata

    from rlkit.runs.reverb_runner import _versions as reverb_versions

    out = reverb_versions()
    out["ray"] = importlib.metadata.version("ray")
    return out


class _Board:
    """The metrics lines as TensorBoard scalars against environment steps."""

    def __init__(self, run_dir: Path, seed: int, resumed_steps: int | None):
        from rlkit.runs.reverb_runner import seed_board

        self.writer = seed_board(run_dir, seed, resumed_steps)

    def __call__(self, line: dict) -> None:
        for name, value in line.items():
            if np.isfinite(value):
                self.writer.add_scalar(name, value, int(line["env_steps"]))
        self.writer.flush()

    def close(self, exit_code: int) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, identity: dict, seed: int, options: dict):
        from rlkit.runs.wandb_logger import WandbWriter

        self.seed, self.run_dir = seed, run_dir
        self.writer = WandbWriter(run_dir, identity, [seed], **options)

    def __call__(self, line: dict) -> None:
        self.writer.write_seed(self.seed, line)

    def finish(self, per_seed: np.ndarray) -> None:
        from rlkit.runs.wandb_logger import learning_curves

        self.writer.finish(per_seed, learning_curves(self.run_dir))

    def close(self, exit_code: int) -> None:
        self.writer.close(exit_code=exit_code)


def _trackers(run_dir: Path, identity: dict, seed: int, tensorboard: bool, wandb: dict | None,
              resumed_steps: int | None) -> list:
    trackers: list = []
    if tensorboard:  # a resumed run rewrites what came after its checkpoint
        trackers.append(_Board(run_dir, seed, resumed_steps))
    if wandb is not None:
        trackers.append(_Wandb(run_dir, identity, seed, wandb))
    return trackers
