"""Command line: ``python -m rlkit train --agent ppo --env CartPole-v1 --seeds 8 --steps 500000 --out DIR``."""

from __future__ import annotations

import argparse
import platform
import sys
import textwrap
import time

import numpy as np


def _steps(text: str) -> int:
    """Parse a step count such as ``500000`` or ``5e5``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps expects a number such as 500000 or 5e5, got {text!r}") from None
    if not value.is_integer() or value <= 0:
        raise argparse.ArgumentTypeError(f"--steps must be a positive whole number, got {text!r}")
    return int(value)


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set expects name=value, got {text!r}")
    return name.strip(), value.strip()


def _catalogue() -> str:
    from rlkit import agents, envs

    lines = ["agents:"]
    for name, module in agents.REGISTRY.items():
        summary = (module.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<8} {summary}")
    lines.append("environments (gymnax, on device):")
    lines.extend(textwrap.wrap(", ".join(envs.env_ids()), 96, initial_indent="  ", subsequent_indent="  ",
                                break_on_hyphens=False))
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
    train.add_argument("--seeds", type=int, default=1, help="number of seeds, trained vmapped (default 1)")
    train.add_argument("--first-seed", type=int, default=0, help="first seed; seeds are consecutive (default 0)")
    train.add_argument("--steps", type=_steps, required=True, help="environment steps per seed, e.g. 5e5")
    train.add_argument("--out", required=True, help="run directory for results.json and metrics.jsonl")
    train.add_argument(
        "--set", dest="overrides", type=_assignment, action="append", default=[], metavar="NAME=VALUE",
        help="override a field of the agent's config (repeatable), e.g. --set learning_rate=3e-4",
    )
    train.add_argument("--eval-episodes", type=int, default=32, help="final evaluation episodes per seed")
    train.add_argument("--chunks", type=int, default=10, help="about how many chunks (log points) per run")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument("--overwrite", action="store_true", help="replace the records of an earlier run in --out")
    plot = commands.add_parser(
        "plot", help="plot learning curves and tabulate final-return IQMs of run directories",
        description="Plot each run's mean learning curve across seeds with a 95% bootstrap band, and print "
                    "the IQM of the per-seed final evaluation returns with its 95% bootstrap interval "
                    "(Agarwal et al., 2021).",
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by 'train --out'")
    plot.add_argument("--out", default="learning_curves.png", help="PNG to write (default learning_curves.png)")
    plot.add_argument("--metric", default="episode_return", help="per-chunk metric to plot (default episode_return)")
    return parser


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "rlax", "gymnax", "numpy", "rlkit"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def train_command(args: argparse.Namespace) -> int:
    from rlkit import agents, envs
    from rlkit import config as cfg
    from rlkit.loops.device import RunConfig, make_trainer
    from rlkit.runs import records
    from rlkit.runs.runner import run_training, summarize_chunk
    from rlkit.stats import mean_interval

    # Everything is validated before anything compiles.
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    agent_module = agents.get(args.agent)
    config = cfg.override(agent_module.Config(), dict(args.overrides))
    env = envs.make(args.env)
    run = RunConfig(total_steps=args.steps, num_chunks=args.chunks, eval_episodes=args.eval_episodes)
    trainer = make_trainer(agent_module, config, env, run)
    run_dir = records.prepare_run_dir(args.out, overwrite=args.overwrite)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    if not args.quiet:
        print(
            f"rlkit train: {args.agent} on {args.env}, {len(seeds)} seed(s), "
            f"{trainer.plan.total_steps:,} steps each in {trainer.plan.num_chunks} chunks; compiling...",
            file=sys.stderr, flush=True,
        )
    progress = records.Progress(trainer.plan.total_steps, quiet=args.quiet)
    writer = records.MetricsWriter(run_dir)
    last_time = [0.0]

    def on_chunk(index: int, metrics: dict, elapsed: float) -> None:
        env_steps = int(np.max(metrics["env_steps"]))
        chunk_steps = trainer.plan.updates_per_chunk * trainer.plan.steps_per_update * len(seeds)
        sps = chunk_steps / max(elapsed - last_time[0], 1e-9)
        last_time[0] = elapsed
        mean = summarize_chunk(metrics)
        writer.write({
            "chunk": index, "env_steps": env_steps, "elapsed_seconds": elapsed, "steps_per_second": sps,
            "mean": mean, "per_seed": {k: np.asarray(v) for k, v in metrics.items()},
        })
        progress.update(env_steps, sps, mean["episode_return"])

    started = time.time()
    try:
        result = run_training(trainer, seeds, on_chunk=on_chunk)
    finally:
        progress.close()
        writer.close()

    per_seed = result.eval_returns.mean(axis=1)
    estimate = mean_interval(per_seed)
    print(records.format_eval_table(seeds, per_seed, estimate))
    print(
        f"compile {result.compile_seconds:.1f} s | run {result.run_seconds:.1f} s | "
        f"{result.steps_per_second:,.0f} steps/s | eval {result.eval_seconds:.1f} s"
    )
    path = records.write_results(run_dir, {
        "agent": args.agent,
        "env": args.env,
        "config": cfg.to_dict(config),
        "seeds": seeds,
        "total_steps": result.total_steps,
        "eval_episodes": args.eval_episodes,
        "final_eval_return": {
            "per_seed": per_seed, "mean": estimate.mean, "ci95": [estimate.low, estimate.high],
        },
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "eval_seconds": result.eval_seconds,
        "steps_per_second": result.steps_per_second,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "versions": _versions(),
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
    except (ValueError, FileExistsError) as error:
        print(f"rlkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
