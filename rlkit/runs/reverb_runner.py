"""``python -m rlkit train --backend reverb``: the host path's run driver (Reverb world only).

Each seed is one ``rlkit.loops.reverb_experiment.HostExperiment`` (an in-process Reverb server, a
host actor on a dm_env environment and a learner, interleaved); the seeds run one after another.
The records are the device path's: the same progress lines, ``metrics.jsonl`` (one line per chunk,
per-seed values, ``null`` for seeds that have not reached it yet; rewritten after every chunk) and
``results.json``. Checkpoints hold the agent state of the seed under way (orbax, ``OUT/checkpoints``)
and its replay (Reverb's checkpointer, ``OUT/replay/seed_S``), so ``--resume`` continues with the
buffer it had. A resumed seed starts a new episode where the killed one was mid-episode, and
Reverb's sampling is not seeded, so a resumed run is not bit-identical to an uninterrupted one.

Nothing here imports Reverb or TensorFlow until ``train_command`` has checked that they are there.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.runs.rundir import REPLAY_DIR

WORLD_HINT = (
    "--backend reverb needs the Reverb world (dm-reverb and TensorFlow), which this Python environment "
    "does not have; run the same command there: bash scripts/run.sh reverb python -m rlkit train ... "
    "--backend reverb"
)


def require_reverb() -> None:
    """A clear ValueError (never an ImportError trace) outside the Reverb world."""
    if importlib.util.find_spec("reverb") is None or importlib.util.find_spec("tensorflow") is None:
        raise ValueError(WORLD_HINT)


def replay_checkpoints(directory: Path) -> list[Path]:
    """Reverb checkpoint directories under ``directory``, oldest first (their names are timestamps)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir())


def keep_replay_checkpoints(directory: Path, keep: Collection[str]) -> None:
    """Delete the Reverb checkpoints under ``directory`` whose names are not in ``keep``."""
    for path in replay_checkpoints(directory):
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


class MetricsTable:
    """``metrics.jsonl`` in the device layout, for seeds that run one after another.

    ``history[seed_index][chunk]`` holds a chunk's metrics; the file is rewritten (atomically) after
    every chunk with one line per chunk any seed has reached, per-seed values ``null`` where a seed
    has not reached it yet, so ``rlkit plot`` reads it at any time.
    """

    def __init__(self, run_dir: Path, num_seeds: int, history: list[list[dict]] | None = None, on_add=None):
        self.path = run_dir / "metrics.jsonl"
        self.num_seeds = num_seeds
        self.history = history if history is not None else [[] for _ in range(num_seeds)]
        self.on_add = on_add  # (seed_index, metrics) -> None, e.g. a W&B writer

    def add(self, seed_index: int, metrics: dict[str, float]) -> None:
        from rlkit.runs.records import jsonable

        self.history[seed_index].append(jsonable(dict(metrics)))  # JSON-able: it goes into checkpoints
        self.write()
        if self.on_add is not None:
            self.on_add(seed_index, metrics)

    def lines(self) -> list[dict]:
        from rlkit.runs.records import jsonable
        from rlkit.runs.runner import summarize_chunk

        out = []
        for chunk in range(max((len(h) for h in self.history), default=0)):
            rows = [h[chunk] if chunk < len(h) else None for h in self.history]
            names = sorted({name for row in rows if row is not None for name in row})
            per_seed = {
                name: np.asarray([_number(None if row is None else row.get(name)) for row in rows], np.float64)
                for name in names
            }
            mean = summarize_chunk({k: v for k, v in per_seed.items() if k not in ("elapsed_seconds", "chunk")})
            out.append(jsonable({
                "chunk": chunk, "env_steps": int(np.nanmax(per_seed["env_steps"])),
                "elapsed_seconds": float(np.nanmean(per_seed["elapsed_seconds"])),  # per seed: they run in turn
                "steps_per_second": mean["steps_per_second"], "mean": mean,
                "per_seed": {k: v for k, v in per_seed.items() if k not in ("elapsed_seconds",)},
            }))
        return out

    def write(self) -> None:
        tmp = self.path.with_suffix(".jsonl.tmp")
        text = "".join(json.dumps(line, allow_nan=False) + "\n" for line in self.lines())
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


def _versions() -> dict[str, str]:
    from rlkit.runs import records

    out = records.versions()
    for name in ("dm-reverb", "tensorflow-cpu", "tensorflow", "gymnasium", "dm-control", "mujoco"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def train_command(args: argparse.Namespace) -> int:
    """``rlkit train --backend reverb``: validate everything, then train the seeds one after another."""
    from rlkit import agents, presets
    from rlkit import config as cfg
    from rlkit.envs import environment_spec, make_host
    from rlkit.loops.device import plan_chunks
    from rlkit.replay.device import check_spec
    from rlkit.runs import rundir
    from rlkit.runs.checkpoint import CHECKPOINT_DIR, Checkpointer
    from rlkit.runs.runner import EVAL_SEED

    # Everything is validated before Reverb is imported or anything compiles.
    require_reverb()
    cfg.check_seeds(args.first_seed, args.seeds)
    if args.eval_episodes < 1:
        raise ValueError(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    if args.chunks < 1:
        raise ValueError(f"--chunks must be >= 1, got {args.chunks}")
    if getattr(args, "observe", None):
        raise ValueError("--observe: applies to the device backend only (gymnax environments)")
    agent_module = agents.get(args.agent)
    config = cfg.override(presets.config_for(args.agent, args.env), dict(args.overrides))
    spec = agent_module.experience(config)
    if spec.needs_dataset:
        raise ValueError(f"agent {args.agent} learns only from a dataset, on the device backend: rlkit train --dataset D")
    host_envs, per_item = getattr(args, "host_envs", 1), getattr(args, "transitions_per_item", 1)
    if host_envs < 1 or spec.steps_per_iteration % host_envs:
        raise ValueError(
            f"--host-envs={host_envs} must be >= 1 and divide num_envs * num_steps = {spec.steps_per_iteration} "
            "(the environment steps between learner iterations)"
        )
    if per_item != 1 and spec.kind != "transitions":
        raise ValueError(f"--transitions-per-item applies to transition replay only; agent {args.agent} learns "
                         f"from {spec.kind} (leave it at 1)")
    if per_item < 1 or spec.batch_size % per_item:
        raise ValueError(f"--transitions-per-item={per_item} must be >= 1 and divide batch_size={spec.batch_size}")
    check_spec(spec)  # replay sizes, sequence lengths and periods: the device's checks (no Reverb needed)
    try:
        env = make_host(args.env, seed=args.first_seed)
    except (ValueError, ImportError) as error:  # ImportError: dm_control or its rendering backend
        raise ValueError(f"{error} (--backend reverb runs host environments)") from None
    env_spec = environment_spec(env)
    del env
    plan = plan_chunks(args.steps, spec.steps_per_iteration, args.chunks)
    agent_module.make(config, env_spec, plan.total_steps)  # checks the agent fits the environment
    if spec.min_size >= plan.total_steps:
        raise ValueError(
            f"steps={args.steps} ends before learning starts (learning_starts/batch_size need {spec.min_size} "
            "steps)"
        )
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    steps_per_chunk = plan.iterations_per_chunk * plan.steps_per_iteration
    identity = {
        "agent": args.agent, "env": args.env, "config": cfg.to_dict(config), "seeds": seeds,
        "total_steps": plan.total_steps, "num_chunks": plan.num_chunks, "eval_episodes": args.eval_episodes,
        "backend": "reverb", "host_envs": host_envs, "transitions_per_item": per_item,
    }
    rundir.check_run_options(args)
    from rlkit.runs import compile_cache

    cache_dir = compile_cache.chosen_directory(disabled=getattr(args, "no_compile_cache", False))
    if cache_dir is not None:  # the actor's and learner's programs, loaded again for every later seed and run
        compile_cache.enable(cache_dir)
    opened = rundir.open_run_dir(args.out, identity, resume=args.resume, overwrite=args.overwrite,
                                 own_dirs=(CHECKPOINT_DIR, REPLAY_DIR, rundir.FINAL_STATES_DIR))
    if opened.complete:
        return rundir.print_complete(opened.path)
    run_dir = opened.path
    args = argparse.Namespace(**{**vars(args), "resume": opened.resume})  # False where --resume starts afresh
    checkpointer = Checkpointer(
        run_dir, identity, every_steps=args.checkpoint_every_steps,
        every_minutes=args.checkpoint_every_minutes, keep=args.keep_checkpoints,
    )
    try:
        return _train(
            args, agent_module, config, env_spec, plan, seeds, steps_per_chunk, run_dir, identity,
            checkpointer, EVAL_SEED,
        )
    finally:
        checkpointer.close()


def _train(
    args, agent_module, config, env_spec, plan, seeds, steps_per_chunk, run_dir, identity,
    checkpointer, eval_seed,
) -> int:
    import jax

    from rlkit.runs import records, rundir

    num_chunks = plan.num_chunks
    started = time.time()
    if not args.quiet:
        print(
            f"rlkit train: {args.agent} on {args.env}, host loop with an in-process Reverb server, "
            f"{len(seeds)} seed(s) one after another, {plan.total_steps:,} steps each in {num_chunks} chunks; "
            "starting Reverb...", file=sys.stderr, flush=True,
        )
    # Reverb and TensorFlow load here (rlax first: TensorFlow Probability needs it before TensorFlow).
    from rlkit.loops import reverb_experiment
    from rlkit.runs.checkpoint import has_checkpoints

    run = {  # what a checkpoint records besides the agent state (JSON)
        "seed_index": 0, "seed_chunks": 0, "finished": [], "run_seconds": 0.0, "compile_seconds": 0.0,
        "seed_seconds": 0.0, "counters": None, "replay_checkpoint": None,
    }
    history = None
    resumed_from = None
    if args.resume:
        agent = agent_module.make(config, env_spec, plan.total_steps)
        state = agent.init(jax.random.key(0, impl=reverb_experiment.KEY_IMPL))
        key = jax.random.key(0, impl=reverb_experiment.KEY_IMPL)
        like = {"agent_state": state, "actor_key": key, "learner_key": key}
        restored = checkpointer.restore_latest(like)
        run.update({k: restored.metadata[k] for k in run})
        history = restored.metadata["history"]
        resumed_from = restored.chunks_done
    trackers = []  # the W&B writer, once opened
    table = MetricsTable(run_dir, len(seeds), history,
                         on_add=lambda i, metrics: [t.write_seed(seeds[i], metrics) for t in trackers])
    table.write()  # a resumed run's metrics.jsonl goes back to where its checkpoint was
    done_steps = run["seed_index"] * plan.total_steps + run["seed_chunks"] * steps_per_chunk
    progress = records.Progress(len(seeds) * plan.total_steps, quiet=args.quiet, initial=done_steps)
    if args.resume:
        progress.note(f"resumed from {checkpointer.directory / str(resumed_from)}")
    succeeded = False
    try:
        if getattr(args, "wandb", False):
            from rlkit.runs.wandb_logger import WandbWriter

            trackers.append(WandbWriter(run_dir, identity, seeds, project=args.wandb_project,
                                        entity=args.wandb_entity, group=args.wandb_group, mode=args.wandb_mode))
        try:
            _train_seeds(
                args, agent_module, config, plan, seeds, steps_per_chunk, run_dir, checkpointer, eval_seed,
                reverb_experiment, run, table, progress, restored if args.resume else None,
            )
        except reverb_experiment.reverb_replay.ReplayUnavailable as error:  # the replay stopped answering
            resumable = "--resume continues from the last checkpoint" if has_checkpoints(run_dir) else \
                "no checkpoint was written yet"
            raise ValueError(f"the replay stopped answering ({error}); {resumable}") from None
        progress.close()
        per_seed = np.asarray([np.mean(f["eval_returns"]) for f in run["finished"]])
        rundir.finish_run(
            run_dir, identity, per_seed, compile_seconds=run["compile_seconds"], run_seconds=run["run_seconds"],
            eval_seconds=sum(f["eval_seconds"] for f in run["finished"]), resumed_from=resumed_from,
            started=started, versions=_versions(), extra={"per_seed": run["finished"]}, metrics_path=table.path,
        )
        if trackers:
            from rlkit.runs.wandb_logger import learning_curves

            trackers[0].finish(per_seed, learning_curves(run_dir))
        succeeded = True
    finally:
        progress.close()
        for tracker in trackers:
            tracker.close(exit_code=0 if succeeded else 1)
    return 0


def _train_seeds(
    args, agent_module, config, plan, seeds, steps_per_chunk, run_dir, checkpointer, eval_seed,
    reverb_experiment, run, table, progress, restored,
) -> None:
    """Train the seeds from ``run["seed_index"]`` on, one after another, updating ``run`` and ``table``."""
    from rlkit.runs import rundir
    from rlkit.runs.checkpoint import save_state

    num_chunks = plan.num_chunks
    boards = {}
    for seed_index in range(run["seed_index"], len(seeds)):
        seed = seeds[seed_index]
        replay_dir = run_dir / REPLAY_DIR / f"seed_{seed}"
        resuming = args.resume and seed_index == run["seed_index"] and run["seed_chunks"] > 0
        if resuming:
            if not (replay_dir / run["replay_checkpoint"]).is_dir():  # checked before anything is deleted
                raise ValueError(
                    f"--resume: the replay checkpoint {replay_dir / run['replay_checkpoint']} is missing; "
                    "start a new --out"
                )
            keep_replay_checkpoints(replay_dir, [run["replay_checkpoint"]])  # and drop any a kill left unnamed
        else:
            shutil.rmtree(replay_dir, ignore_errors=True)
            run.update(seed_index=seed_index, seed_chunks=0, seed_seconds=0.0, counters=None, replay_checkpoint=None)
        replay_dir.mkdir(parents=True, exist_ok=True)
        settings = reverb_experiment.HostSettings(
            num_envs=getattr(args, "host_envs", 1), transitions_per_item=getattr(args, "transitions_per_item", 1)
        )
        experiment = reverb_experiment.HostExperiment(
            agent_module, config, args.env, seed=seed, total_steps=plan.total_steps,
            replay_checkpoint_dir=str(replay_dir), settings=settings,
        )
        try:
            if resuming:
                experiment.restore(restored.run_state, run["counters"])
                progress.note(f"seed {seed}: replay restored with {experiment.table_size():,} items")
            compile_seconds = experiment.compile()
            run["compile_seconds"] += compile_seconds
            progress.note(f"seed {seed}: compiled in {compile_seconds:.1f} s; training")
            if args.tensorboard:
                boards[seed] = seed_board(run_dir, seed, experiment.env_steps if resuming else None)
            for chunk in range(run["seed_chunks"], num_chunks):
                start = time.perf_counter()
                metrics = experiment.train(steps_per_chunk)
                seconds = time.perf_counter() - start
                run["run_seconds"] += seconds
                run["seed_seconds"] += seconds
                metrics["elapsed_seconds"] = run["seed_seconds"]  # this seed's training time so far
                table.add(seed_index, metrics)
                done_steps = seed_index * plan.total_steps + experiment.env_steps
                progress.update(done_steps, metrics["steps_per_second"], metrics["episode_return"])
                if seed in boards:
                    for name, value in metrics.items():
                        if np.isfinite(value):
                            boards[seed].add_scalar(name, value, int(metrics["env_steps"]))
                    boards[seed].flush()
                run["seed_chunks"] = chunk + 1
                if chunk + 1 < num_chunks and checkpointer.due(done_steps, final=False):
                    run["counters"] = experiment.counters()
                    run["replay_checkpoint"] = Path(experiment.checkpoint_replay()).name
                    checkpointer.save(seed_index * num_chunks + chunk + 1, experiment.run_state(), done_steps,
                                      {**run, "env_steps": done_steps, "history": table.history})
                    # Only once the checkpoint naming the new replay is saved: a kill before leaves the old pair.
                    keep_replay_checkpoints(replay_dir, [p.name for p in replay_checkpoints(replay_dir)]
                                             [-args.keep_checkpoints:])
                    progress.note(f"checkpoint: seed {seed}, {experiment.env_steps:,} steps")
            progress.note(f"seed {seed}: evaluating {args.eval_episodes} episodes with the deterministic policy")
            eval_start = time.perf_counter()
            returns = experiment.evaluate(args.eval_episodes, seed=eval_seed + seed)
            run["finished"].append({
                "seed": seed, "eval_returns": returns.tolist(), "eval_seconds": time.perf_counter() - eval_start,
                "compile_seconds": compile_seconds, "env_steps": experiment.env_steps,
                "updates": experiment.updates, "episodes": experiment.episodes,
            })
            progress.note(f"seed {seed}: final greedy return {returns.mean():.2f}")
            save_state(run_dir / rundir.FINAL_STATES_DIR / f"seed_{seed}", experiment.state)
            # The seed is done: save its final state (the replay is no longer needed).
            run.update(seed_index=seed_index + 1, seed_chunks=0, seed_seconds=0.0, counters=None,
                       replay_checkpoint=None)
            checkpointer.save((seed_index + 1) * num_chunks, experiment.run_state(), done_steps,
                              {**run, "env_steps": done_steps, "history": table.history})
        finally:
            experiment.close()
            if seed in boards:
                boards.pop(seed).close()
        shutil.rmtree(replay_dir, ignore_errors=True)


def seed_board(run_dir: Path, seed: int, resumed_steps: int | None) -> Any:
    """The TensorBoard writer of one seed of a host run (``OUT/tensorboard/seed_S``)."""
    from rlkit.runs.tensorboard import TENSORBOARD_DIR, summary_writer

    return summary_writer(run_dir / TENSORBOARD_DIR / f"seed_{seed}", resumed_steps)
