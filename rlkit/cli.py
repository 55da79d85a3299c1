"""Command line: ``python -m rlkit train --agent ppo --env CartPole-v1 --seeds 8 --steps 500000 --out DIR``."""

from __future__ import annotations

import argparse
import sys
import textwrap

from rlkit import sweep_command
from rlkit.config import parse_assignment, parse_indices, parse_steps
from rlkit.runs import collect, compile_cache


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
        help="device backend: keep only these components of a vector observation, e.g. --observe 0,2 on "
             "CartPole-v1 shows cart position and pole angle and hides the velocities (a memory task)",
    )
    train.add_argument(
        "--backend", choices=("device", "reverb", "distributed"), default="device",
        help="device (default): the jitted on-device loop over gymnax environments, seeds vmapped; reverb: the "
             "host loop over a dm_env environment (gym:ID, gymnax:ID, dm_control:DOMAIN-TASK) with an "
             "in-process Reverb replay (transitions, sequences or a queue of rollouts), seeds one after "
             "another; needs the Reverb world: bash scripts/run.sh reverb python -m rlkit train ... --backend reverb; "
             "distributed: a Reverb server, a learner and --actors N actor processes on Ray (Reverb world, one seed)",
    )
    train.add_argument("--actors", type=int, default=2, metavar="N", help="distributed backend: actor processes "
                       "(default 2)")
    train.add_argument("--ray-address", default=None, metavar="HOST:PORT", help="distributed backend: join this "
                       "Ray cluster (default: RAY_ADDRESS, else a private Ray on 127.0.0.1)")
    train.add_argument(
        "--seeds", type=int, default=1,
        help="number of seeds (default 1): vmapped in one compile on the device backend, run one after "
             "another on the reverb backend",
    )
    train.add_argument("--first-seed", type=int, default=0, help="first seed; seeds are consecutive (default 0)")
    train.add_argument("--devices", type=int, default=None, metavar="N",
                       help="use N devices, as --split says (default: one)")
    train.add_argument("--split", choices=("runs", "envs"), default="runs",
                       help="with --devices N: 'runs' gives each device its own seeds (N must divide --seeds); "
                            "'envs' splits every run's environments over the N devices and averages the gradients "
                            "(ppo, recurrent_ppo, impala; N must divide num_envs)")
    train.add_argument(
        "--host-envs", type=int, default=1, metavar="N",
        help="reverb backend: host environments stepped side by side, one jitted act call for all (default 1); "
             "must divide num_envs * num_steps; distributed backend: per actor",
    )
    train.add_argument(
        "--transitions-per-item", type=int, default=1, metavar="K",
        help="reverb backend: transitions packed into each Reverb item (default 1); must divide batch_size",
    )
    train.add_argument("--steps", type=parse_steps, required=True,
                       help="environment steps per seed, e.g. 5e5; with --dataset, gradient steps")
    train.add_argument(
        "--dataset", default=None, metavar="DATASET",
        help="train offline on a Minari dataset (a directory or a Minari id; record one with rlkit collect): no "
             "environment steps, --steps counts gradient steps, the environment only evaluates (agents bc, cql, "
             "iql, or a replay agent such as dqn or sac); needs rlkit[offline]",
    )
    train.add_argument("--out", required=True, help="run directory for results.json and metrics.jsonl")
    train.add_argument(
        "--set", dest="overrides", type=parse_assignment, action="append", default=[], metavar="NAME=VALUE",
        help="override a field of the agent's config (repeatable), e.g. --set learning_rate=3e-4",
    )
    train.add_argument("--eval-episodes", type=int, default=32, help="final evaluation episodes per seed")
    train.add_argument("--chunks", type=int, default=10, help="about how many chunks (log points) per run")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument(
        "--no-compile-cache", action="store_true",
        help="compile every program afresh instead of loading it from the persistent compile cache "
             "(default: on, in $RLKIT_COMPILE_CACHE or ~/.cache/rlkit/jax; RLKIT_COMPILE_CACHE=off also turns it off)",
    )
    train.add_argument("--tensorboard", action="store_true", help="also log chunk metrics to OUT/tensorboard")
    train.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (needs rlkit[wandb])")
    train.add_argument("--wandb-project", default="rlkit", help="W&B project (default rlkit)")
    train.add_argument("--wandb-entity", default=None, help="W&B entity (default: your default entity)")
    train.add_argument("--wandb-group", default=None, help="W&B group, e.g. one per sweep or experiment")
    train.add_argument(
        "--wandb-mode", choices=("online", "offline", "disabled"), default=None,
        help="W&B mode (default: WANDB_MODE, else online); offline needs no account or network",
    )
    train.add_argument("--overwrite", action="store_true", help="replace the records of an earlier run in --out")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its latest checkpoint; with no checkpoint yet it starts afresh, on a "
             "finished run it prints the results and exits 0 (so a requeued job always does the right thing)",
    )
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
    evaluate = commands.add_parser(
        "eval", help="evaluate a finished run's final policy again, without training",
        description="Load a finished run (device or Reverb backend) and print the greedy return per seed (with "
                    "--policy sample, the return with sampled actions); with the run's episode count and seeds "
                    "the greedy returns are those results.json holds.",
    )
    evaluate.add_argument("--policy", choices=("greedy", "sample"), default="greedy",
                          help="greedy (default) or sample: actions drawn from the policy, as in training")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'train --out'")
    evaluate.add_argument("--episodes", type=int, default=None, help="episodes per seed (default: the run's)")
    evaluate.add_argument("--seed", type=int, action="append", default=None, metavar="S",
                          help="evaluate only this training seed (repeatable; default: all of the run's)")
    render = commands.add_parser(
        "render", help="write a GIF of a finished run's greedy episodes",
        description="Load a finished run and draw greedy episodes of one seed's final policy, a frame per step: "
                    "classic control from the state, MinAtar and other grid environments from the image, "
                    "dm_control tasks through MuJoCo's camera (needs MUJOCO_GL=egl or osmesa).",
    )
    render.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'train --out'")
    render.add_argument("--out", default="episode.gif", help="GIF to write (default episode.gif)")
    render.add_argument("--seed", type=int, default=None, metavar="S", help="training seed (default: the run's first)")
    render.add_argument("--episodes", type=int, default=1, metavar="K", help="episodes, one after another (default 1)")
    render.add_argument("--fps", type=int, default=30, help="frames per second, at most 50 (default 30)")
    export = commands.add_parser(
        "export", help="write run directories' metrics.jsonl as one CSV table (a row per run, seed and chunk)",
    )
    export.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by 'train --out'")
    export.add_argument("--out", default="metrics.csv", help="CSV file to write (default metrics.csv)")
    collect.add_parser(commands)
    sweep_command.add_parser(commands, epilog=epilog)
    return parser


def train_command(args: argparse.Namespace) -> int:
    backend = getattr(args, "backend", "device")
    if backend != "device" and (args.dataset is not None or args.devices is not None):
        raise ValueError(f"--{'dataset' if args.dataset is not None else 'devices'}: the device backend's option "
                         f"(drop --backend {backend})")
    if backend == "distributed":  # actors and a learner on Ray; imports Reverb and Ray only after checking
        from rlkit.runs import distributed_runner

        return distributed_runner.train_command(args)
    if getattr(args, "backend", "device") == "reverb":  # the host path; imports Reverb only after checking
        from rlkit.runs import reverb_runner

        return reverb_runner.train_command(args)
    from rlkit.runs import device_runner

    return device_runner.train_command(args)


def plot_command(args: argparse.Namespace) -> int:
    from rlkit import plot

    _check_suffix(args.out, ".png")
    try:
        runs = [plot.load_run(run_dir, args.metric) for run_dir in args.run_dirs]
        info = plot.plot_runs(runs, args.metric, args.out)
    except OSError as error:  # a missing run dir or records file, an unwritable --out
        raise ValueError(str(error)) from error
    print(plot.format_iqm_table(runs))
    width, height = info["size"]
    print(f"wrote {info['path']} ({info['curves']} curve(s) of {args.metric}, {width}x{height} px)")
    return 0


def _check_suffix(out: str, suffix: str) -> None:
    if not out.lower().endswith(suffix):
        raise ValueError(f"--out must name a {suffix} file, got {out!r}")


def eval_command(args: argparse.Namespace) -> int:
    from rlkit.runs import records, trained
    from rlkit.stats import mean_interval

    run = trained.load(args.run_dir)
    seeds = run.seeds if args.seed is None else args.seed
    returns = trained.evaluate_trained(run, args.episodes, seeds, args.policy)
    per_seed = returns.mean(axis=1)
    print(records.format_eval_table(seeds, per_seed, mean_interval(per_seed)))
    print(f"{returns.shape[1]} {args.policy} episode(s) per seed of {run.results['agent']} on {run.results['env']} "
          f"({run.backend} backend), from {run.run_dir}")
    return 0


def render_command(args: argparse.Namespace) -> int:
    import jax

    from rlkit import render
    from rlkit.runs import trained
    from rlkit.runs.runner import EVAL_SEED

    _check_suffix(args.out, ".gif")
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if not 1 <= args.fps <= 50:  # GIF frame delays are in hundredths; viewers slow down shorter ones
        raise ValueError(f"--fps must be in [1, 50], got {args.fps}")
    run = trained.load(args.run_dir)
    seed = run.seeds[0] if args.seed is None else args.seed
    state = run.state(seed)
    if run.backend == "device":
        render.renderable(run.env)
        episodes = render.record_episodes(run.env, run.agent, state, jax.random.key(EVAL_SEED + seed), args.episodes)
        lengths, returns = [e.length for e in episodes], [e.episode_return for e in episodes]
        write = lambda: render.write_gif(run.env, episodes, args.out, fps=args.fps)  # noqa: E731
    else:
        images, lengths, returns = render.record_host_episodes(run.results["env"], run.env, run.agent, state,
                                                               EVAL_SEED + seed, args.episodes)
        write = lambda: render.save_gif(images, args.out, args.fps)  # noqa: E731
    try:
        frames = write()
    except OSError as error:
        raise ValueError(f"--out {args.out}: cannot be written ({error.strerror or error})") from None
    print(f"wrote {args.out}: {frames} frames, seed {seed}, episode lengths {', '.join(map(str, lengths))}, "
          f"returns {', '.join(f'{r:.1f}' for r in returns)}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from rlkit import plot

    _check_suffix(args.out, ".csv")
    try:
        path, rows = plot.export_csv(args.run_dirs, args.out)
    except OSError as error:
        raise ValueError(str(error)) from error
    print(f"wrote {path} ({rows} rows)")
    return 0


COMMANDS = {"train": train_command, "plot": plot_command, "eval": eval_command, "render": render_command,
            "export": export_command, "collect": collect.command, "sweep": sweep_command.command}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
    except (ValueError, FileExistsError) as error:
        print(f"rlkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        compile_cache.restore()  # an in-process command (a test, a notebook) leaves JAX's settings as it found them
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
