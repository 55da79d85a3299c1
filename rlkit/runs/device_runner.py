"""``python -m rlkit train`` (the default device backend): the jitted on-device loop's run driver.

The seeds (and any vmapped floats) train in one compiled program, chunk by chunk, with the records every
backend writes: progress lines, ``metrics.jsonl``, ``results.json``, checkpoints for ``--resume``, the
final agent states for ``rlkit.load``, and the TensorBoard and W&B options. ``rlkit.cli`` checks the
backend and calls ``train_command``; everything is validated before anything compiles.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rlkit.runs import compile_cache


def train_command(args: argparse.Namespace) -> int:
    import jax

    from rlkit import agents, envs, presets
    from rlkit import config as cfg
    from rlkit.loops.device import RunConfig, make_trainer
    from rlkit.runs import records, rundir
    from rlkit.runs.checkpoint import Checkpointer, save_state
    from rlkit.runs.runner import run_training, runs_sharding, summarize_chunk
    from rlkit.runs.tensorboard import TensorBoardWriter
    from rlkit.runs.trained import ALL_SEEDS

    # Everything is validated before anything compiles.
    cfg.check_seeds(args.first_seed, args.seeds)
    agent_module = agents.get(args.agent)
    config = cfg.override(presets.config_for(args.agent, args.env), dict(args.overrides))
    env = envs.make(args.env, observe=args.observe)
    run = RunConfig(total_steps=args.steps, num_chunks=args.chunks, eval_episodes=args.eval_episodes)
    dataset = None
    if args.dataset is not None:
        from rlkit import datasets

        dataset = datasets.load(args.dataset)
    split_envs = args.devices if args.split == "envs" and (args.devices or 1) > 1 else None
    trainer = make_trainer(agent_module, config, env, run, dataset=dataset, data_parallel=split_envs)
    plan = trainer.plan
    steps_name = "env_steps" if dataset is None else "grad_steps"
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    identity = {
        "agent": args.agent, "env": args.env, "config": cfg.to_dict(config), "seeds": seeds,
        **({"observe": list(args.observe)} if args.observe else {}),
        "total_steps": plan.total_steps, "num_chunks": plan.num_chunks, "eval_episodes": args.eval_episodes,
        **({} if dataset is None else {"dataset": datasets.identity(dataset)}),
        **({} if split_envs is None else {"envs_split_over_devices": split_envs}),  # the run state's shape
    }
    rundir.check_run_options(args)
    runs_devices = None if split_envs else args.devices
    runs_sharding(len(seeds), runs_devices)  # devices that exist and divide the seeds, before compiling
    cache_dir = compile_cache.chosen_directory(disabled=args.no_compile_cache)
    if cache_dir is not None:
        compile_cache.enable(cache_dir)
    opened = rundir.open_run_dir(args.out, identity, resume=args.resume, overwrite=args.overwrite)
    if opened.complete:
        return rundir.print_complete(opened.path)
    run_dir, resuming = opened.path, opened.resume
    checkpointer = Checkpointer(
        run_dir, identity, every_steps=args.checkpoint_every_steps,
        every_minutes=args.checkpoint_every_minutes, keep=args.keep_checkpoints,
    )

    progress = records.Progress(plan.total_steps, quiet=args.quiet, runs=len(seeds))
    source = "" if dataset is None else f" offline from {dataset.path} ({dataset.num_steps:,} steps)"
    progress.note(
        f"rlkit train: {args.agent} on {args.env}{source}, {len(seeds)} seed(s), {plan.total_steps:,} "
        f"{'steps' if dataset is None else 'gradient steps'} each in {plan.num_chunks} chunks; compiling..."
    )
    resumed = {"chunks_done": 0, "run_seconds": 0.0, "metrics_lines": None}

    def restore(fresh):
        restored = checkpointer.restore_latest(fresh)
        resumed.update(restored.metadata)
        progress.note(f"resumed from {checkpointer.directory / str(restored.chunks_done)}")
        return restored.run_state, restored.chunks_done

    writer = None
    board = None
    tracker = None
    last = {"elapsed": 0.0, "steps": 0}

    def on_chunk(index: int, metrics: dict, elapsed: float) -> None:
        nonlocal writer, board
        if writer is None:  # opened after a restore, so it knows where the logger was
            writer = records.MetricsWriter(run_dir, keep_lines=resumed["metrics_lines"])
            if args.tensorboard:
                resumed_steps = resumed.get("steps", resumed.get("env_steps")) if resuming else None
                board = TensorBoardWriter(run_dir, seeds, resumed_steps=resumed_steps)
        steps = int(np.max(metrics[steps_name]))
        chunk_steps = plan.iterations_per_chunk * plan.steps_per_iteration * len(seeds)
        sps = chunk_steps / max(elapsed - last["elapsed"], 1e-9)
        last.update(elapsed=elapsed, steps=steps)
        mean = summarize_chunk(metrics)
        writer.write({
            "chunk": index, steps_name: steps, "elapsed_seconds": resumed["run_seconds"] + elapsed,
            "steps_per_second": sps, "mean": mean, "per_seed": {k: np.asarray(v) for k, v in metrics.items()},
        })
        progress.update(steps, sps, mean["episode_return"])
        if board is not None:
            board.write(steps, mean, metrics)
        if tracker is not None:
            tracker.write(steps, mean, metrics)
        if index + 1 == plan.num_chunks:
            progress.note(f"evaluating {args.eval_episodes} episodes x {len(seeds)} seed(s) with the deterministic policy")

    def after_chunk(chunks_done: int, run_state) -> None:
        if checkpointer.due(last["steps"], final=chunks_done == plan.num_chunks):
            checkpointer.save(chunks_done, run_state, last["steps"], {
                "metrics_lines": writer.lines,
                "run_seconds": resumed["run_seconds"] + last["elapsed"],
            })

    started = time.time()
    succeeded = False
    try:
        if args.wandb:
            from rlkit.runs.wandb_logger import WandbWriter

            tracker = WandbWriter(run_dir, identity, seeds, project=args.wandb_project, entity=args.wandb_entity,
                                  group=args.wandb_group, mode=args.wandb_mode)
        with compile_cache.CacheCounter() as cached:
            # Every float of the config is an input of the programs, not a constant compiled into them, so
            # the same command with another learning rate (or seed) loads its programs from the compile cache.
            floats = {name: [getattr(config, name)] * len(seeds) for name in cfg.vmappable_fields(config)}
            result = run_training(
                trainer, seeds, floats, on_chunk=on_chunk, restore=restore if resuming else None,
                after_chunk=after_chunk, devices=runs_devices,
            )
        progress.close()  # before the table, so a terminal's progress bar is gone
        agent_state = result.run_state.agent_state
        if split_envs:  # every device holds the same parameters: keep one copy
            agent_state = jax.tree.map(lambda x: x[:, 0], agent_state)
        save_state(run_dir / rundir.FINAL_STATES_DIR / ALL_SEEDS, agent_state)  # for rlkit.load
        per_seed = result.eval_returns.mean(axis=1)
        hits, misses = cached.count()
        rundir.finish_run(
            run_dir, identity, per_seed, compile_seconds=result.compile_seconds,
            run_seconds=resumed["run_seconds"] + result.run_seconds, eval_seconds=result.eval_seconds,
            resumed_from=resumed["chunks_done"] if resuming else None, started=started, versions=records.versions(),
            extra={"compile_cache": {"directory": None if cache_dir is None else str(cache_dir),
                                     "programs_loaded": hits, "programs_compiled": misses}},
        )
        if cache_dir is not None:
            print(f"compile cache {cache_dir}: {hits} program(s) loaded, {misses} compiled and stored")
        if tracker is not None:
            from rlkit.runs.wandb_logger import learning_curves

            tracker.finish(per_seed, learning_curves(run_dir))
        succeeded = True
    finally:
        progress.close()
        checkpointer.close()
        for closable in (writer, board):
            if closable is not None:
                closable.close()
        if tracker is not None:
            tracker.close(exit_code=0 if succeeded else 1)
    return 0
