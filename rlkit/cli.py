"""Command line: ``python -m rlkit train --agent ppo --env CartPole-v1 --seeds 8 --steps 500000 --out DIR``."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from rlkit import sweep
from rlkit.config import parse_assignment, parse_indices, parse_steps


def _catalogue() -> str:
    from rlkit import agents, envs

    lines = ["agents:"]
    for name, module in agents.REGISTRY.items():
        summary = (module.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<8} {summary}")
    lines.append("environments (gymnax, on device):")
    lines.extend(textwrap.wrap(", ".join(envs.env_ids()), 96, initial_indent="  ", subsequent_indent="  ",
                                break_on_hyphens=False))
    lines.append("host environments (--backend reverb, Reverb world):")
    lines.append("  gym:ID (gymnasium, e.g. gym:CartPole-v1), gymnax:ID, dm_control:DOMAIN-TASK (e.g. "
                 "dm_control:cartpole-balance)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    epilog = _catalogue()
    parser = argparse.ArgumentParser(
        prog="python -m rlkit", description="rlkit: functional, pure-JAX reinforcement learning.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train an agent on several seeds in one compile",
        description="Train an agent, vmapped over seeds, then evaluate its deterministic policy.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--agent", required=True, help="agent name (see the list below)")
    train.add_argument("--env", required=True, help="environment id (see the list below)")
    train.add_argument(
        "--observe", type=parse_indices, default=None, metavar="I,J,...",
        help="device backend: keep only these components of the flat observation, e.g. --observe 0,2 on "
             "CartPole-v1 shows cart position and pole angle and hides the velocities (a memory task)",
    )
    train.add_argument(
        "--backend", choices=("device", "reverb"), default="device",
        help="device (default): the jitted on-device loop over gymnax environments, seeds vmapped; reverb: the "
             "host loop over a dm_env environment (gym:ID, gymnax:ID, dm_control:DOMAIN-TASK) with an "
             "in-process Reverb replay (transitions, sequences or a queue of rollouts), seeds one after "
             "another; needs the Reverb world: bash scripts/run.sh reverb python -m rlkit train ... --backend reverb",
    )
    train.add_argument(
        "--seeds", type=int, default=1,
        help="number of seeds (default 1): vmapped in one compile on the device backend, run one after "
             "another on the reverb backend",
    )
    train.add_argument("--first-seed", type=int, default=0, help="first seed; seeds are consecutive (default 0)")
    train.add_argument(
        "--host-envs", type=int, default=1, metavar="N",
        help="reverb backend: host environments stepped side by side, one jitted act call for all (default 1); "
             "must divide num_envs * num_steps",
    )
    train.add_argument(
        "--transitions-per-item", type=int, default=1, metavar="K",
        help="reverb backend: transitions packed into each Reverb item (default 1); must divide batch_size",
    )
    train.add_argument("--steps", type=parse_steps, required=True, help="environment steps per seed, e.g. 5e5")
    train.add_argument("--out", required=True, help="run directory for results.json and metrics.jsonl")
    train.add_argument(
        "--set", dest="overrides", type=parse_assignment, action="append", default=[], metavar="NAME=VALUE",
        help="override a field of the agent's config (repeatable), e.g. --set learning_rate=3e-4",
    )
    train.add_argument("--eval-episodes", type=int, default=32, help="final evaluation episodes per seed")
    train.add_argument("--chunks", type=int, default=10, help="about how many chunks (log points) per run")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument("--tensorboard", action="store_true", help="also log chunk metrics to OUT/tensorboard")
    train.add_argument("--overwrite", action="store_true", help="replace the records of an earlier run in --out")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument(
        "--checkpoint-every-steps", type=parse_steps, default=None, metavar="N",
        help="checkpoint between chunks every N environment steps (default: by time only)",
    )
    train.add_argument(
        "--checkpoint-every-minutes", type=float, default=10.0, metavar="M",
        help="checkpoint between chunks every M minutes (default 10); the end is always saved",
    )
    train.add_argument("--keep-checkpoints", type=int, default=3, metavar="K", help="keep the last K (default 3)")
    plot = commands.add_parser(
        "plot", help="plot learning curves and tabulate final-return IQMs of run directories",
        description="Plot each run's mean learning curve across seeds with a 95% bootstrap band, and print "
                    "the IQM of the per-seed final evaluation returns with its 95% bootstrap interval "
                    "(Agarwal et al., 2021).",
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by 'train --out'")
    plot.add_argument("--out", default="learning_curves.png", help="PNG to write (default learning_curves.png)")
    plot.add_argument("--metric", default="episode_return", help="per-chunk metric to plot (default episode_return)")
    sweep.add_parser(commands, epilog=epilog)
    return parser


def train_command(args: argparse.Namespace) -> int:
    if getattr(args, "backend", "device") == "reverb":  # the host path; imports Reverb only after checking
        from rlkit.runs import host

        return host.train_command(args)
    from rlkit import agents, envs, presets
    from rlkit import config as cfg
    from rlkit.loops.device import RunConfig, make_trainer
    from rlkit.runs import records
    from rlkit.runs.checkpoint import CHECKPOINT_DIR, Checkpointer, has_checkpoints
    from rlkit.runs.runner import run_training, summarize_chunk
    from rlkit.runs.tensorboard import TensorBoardWriter
    from rlkit.stats import mean_interval

    # Everything is validated before anything compiles.
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    agent_module = agents.get(args.agent)
    config = cfg.override(presets.config_for(args.agent, args.env), dict(args.overrides))
    env = envs.make(args.env, observe=args.observe)
    run = RunConfig(total_steps=args.steps, num_chunks=args.chunks, eval_episodes=args.eval_episodes)
    trainer = make_trainer(agent_module, config, env, run)
    plan = trainer.plan
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    finished = (Path(args.out) / records.RESULTS_FILE).exists()
    if has_checkpoints(args.out) and not (args.resume or args.overwrite or finished):
        raise FileExistsError(
            f"--out {args.out}: holds checkpoints of an unfinished run; pass --resume to continue it, "
            f"or choose another directory"
        )
    if args.resume and not has_checkpoints(args.out):
        raise ValueError(f"--resume: {args.out} holds no checkpoint to resume from")
    run_dir = records.prepare_run_dir(args.out, overwrite=args.overwrite, resume=args.resume)
    if args.overwrite and not args.resume:
        shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    identity = {
        "agent": args.agent, "env": args.env, "config": cfg.to_dict(config), "seeds": seeds,
        **({"observe": list(args.observe)} if args.observe else {}),
        "total_steps": plan.total_steps, "num_chunks": plan.num_chunks, "eval_episodes": args.eval_episodes,
    }
    checkpointer = Checkpointer(
        run_dir, identity, every_steps=args.checkpoint_every_steps,
        every_minutes=args.checkpoint_every_minutes, keep=args.keep_checkpoints,
    )

    progress = records.Progress(plan.total_steps, quiet=args.quiet)
    progress.note(
        f"rlkit train: {args.agent} on {args.env}, {len(seeds)} seed(s), {plan.total_steps:,} steps "
        f"each in {plan.num_chunks} chunks; compiling..."
    )
    resumed = {"chunks_done": 0, "run_seconds": 0.0, "metrics_lines": None}

    def restore(fresh_carry):
        restored = checkpointer.restore_latest(fresh_carry)
        resumed.update(restored.metadata)
        progress.note(f"resumed from {checkpointer.directory / str(restored.chunks_done)}")
        return restored.carry, restored.chunks_done

    writer = None
    board = None
    last = {"elapsed": 0.0, "env_steps": 0}

    def on_chunk(index: int, metrics: dict, elapsed: float) -> None:
        nonlocal writer, board
        if writer is None:  # opened after a restore, so it knows where the logger was
            writer = records.MetricsWriter(run_dir, keep_lines=resumed["metrics_lines"])
            if args.tensorboard:
                board = TensorBoardWriter(run_dir, seeds, purge_step=resumed.get("env_steps") if args.resume else None)
        env_steps = int(np.max(metrics["env_steps"]))
        chunk_steps = plan.updates_per_chunk * plan.steps_per_update * len(seeds)
        sps = chunk_steps / max(elapsed - last["elapsed"], 1e-9)
        last.update(elapsed=elapsed, env_steps=env_steps)
        mean = summarize_chunk(metrics)
        writer.write({
            "chunk": index, "env_steps": env_steps, "elapsed_seconds": resumed["run_seconds"] + elapsed,
            "steps_per_second": sps, "mean": mean, "per_seed": {k: np.asarray(v) for k, v in metrics.items()},
        })
        progress.update(env_steps, sps, mean["episode_return"])
        if board is not None:
            board.write(env_steps, mean, metrics)
        if index + 1 == plan.num_chunks:
            progress.note(f"evaluating {args.eval_episodes} episodes x {len(seeds)} seed(s) with the deterministic policy")

    def after_chunk(chunks_done: int, carry) -> None:
        if checkpointer.due(last["env_steps"], final=chunks_done == plan.num_chunks):
            checkpointer.save(chunks_done, carry, last["env_steps"], {
                "env_steps": last["env_steps"], "metrics_lines": writer.lines,
                "run_seconds": resumed["run_seconds"] + last["elapsed"],
            })

    started = time.time()
    try:
        result = run_training(
            trainer, seeds, on_chunk=on_chunk, restore=restore if args.resume else None,
            after_chunk=after_chunk,
        )
    finally:
        progress.close()
        checkpointer.close()
        if writer is not None:
            writer.close()
        if board is not None:
            board.close()

    per_seed = result.eval_returns.mean(axis=1)
    estimate = mean_interval(per_seed)
    run_seconds = resumed["run_seconds"] + result.run_seconds
    print(records.format_eval_table(seeds, per_seed, estimate))
    print(
        f"compile {result.compile_seconds:.1f} s | run {run_seconds:.1f} s | "
        f"{len(seeds) * result.total_steps / max(run_seconds, 1e-9):,.0f} steps/s | eval {result.eval_seconds:.1f} s"
    )
    path = records.write_results(run_dir, {
        **identity,
        "final_eval_return": {
            "per_seed": per_seed, "mean": estimate.mean, "ci95": [estimate.low, estimate.high],
        },
        "compile_seconds": result.compile_seconds,
        "run_seconds": run_seconds,
        "eval_seconds": result.eval_seconds,
        "steps_per_second": len(seeds) * result.total_steps / max(run_seconds, 1e-9),
        "resumed_from_chunk": resumed["chunks_done"] if args.resume else None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "versions": records.versions(),
    })
    print(f"wrote {path} and {run_dir / records.METRICS_FILE}")
    return 0


def plot_command(args: argparse.Namespace) -> int:
    from rlkit import plot

    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must name a .png file, got {args.out!r}")
    try:
        runs = [plot.load_run(run_dir, args.metric) for run_dir in args.run_dirs]
        info = plot.plot_runs(runs, args.metric, args.out)
    except OSError as error:  # a missing run dir or records file, an unwritable --out
        raise ValueError(str(error)) from error
    print(plot.format_iqm_table(runs))
    width, height = info["size"]
    print(f"wrote {info['path']} ({info['curves']} curve(s) of {args.metric}, {width}x{height} px)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return train_command(args)
        if args.command == "plot":
            return plot_command(args)
        if args.command == "sweep":
            return sweep.command(args)
    except (ValueError, FileExistsError) as error:
        print(f"rlkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
