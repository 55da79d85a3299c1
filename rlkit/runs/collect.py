"""``rlkit collect RUN_DIR --out DATASET``: record a finished run's policy as a Minari dataset.

A device run's episodes are stepped side by side on the device (``rlkit.loops.offline.collect_episodes``);
a Reverb run's in its host environment, through the host ``Actor`` with an ``EpisodeRecorder`` adder.
The dataset records the environment id, the run, the seed and the policy that acted, and its mean return.
"""

from __future__ import annotations

import argparse

COLLECT_SEED = 20_000  # collection keys are seeded apart from training and evaluation keys


def add_parser(commands: argparse._SubParsersAction) -> None:
    collect = commands.add_parser(
        "collect", help="record a finished run's policy as a Minari dataset (for --dataset)",
        description="Run a finished run's final policy for --episodes episodes and write them as a Minari "
                    "dataset: a directory named NAME-vVERSION that minari.MinariDataset reads (and "
                    "minari.load_dataset, under $MINARI_DATASETS_PATH). Needs rlkit[offline].",
    )
    collect.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'train --out'")
    collect.add_argument("--out", required=True, metavar="DATASET", help="dataset directory, e.g. data/cartpole-expert-v0")
    collect.add_argument("--episodes", type=int, default=50, help="episodes to record (default 50)")
    collect.add_argument(
        "--policy", default="greedy",
        help="greedy (default), sample (the agent's exploring policy) or epsilon=E (greedy, but a uniform "
             "random action with probability E at each step; device runs)",
    )
    collect.add_argument("--seed", type=int, default=None, metavar="S", help="training seed (default: the run's first)")
    collect.add_argument("--collect-seed", type=int, default=0, metavar="K",
                         help="seeds the episodes (default 0); another K records other episodes")
    collect.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def command(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from rlkit import datasets
    from rlkit.loops.offline import collect_episodes, parse_policy
    from rlkit.runs import trained

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    deterministic, epsilon = parse_policy(args.policy)
    datasets.check_out(args.out, args.overwrite)  # before anything runs
    datasets.require_minari()
    run = trained.load(args.run_dir)
    seed = run.seeds[0] if args.seed is None else args.seed
    state = run.state(seed)
    key_seed = COLLECT_SEED + 1_000 * args.collect_seed + seed
    if run.backend == "device":
        episodes = collect_episodes(run.env, run.agent, state, jax.random.key(key_seed), args.episodes, args.policy)
        spec = run.env.spec
    else:
        if epsilon > 0:
            raise ValueError("--policy epsilon=E: Reverb runs record greedy or sample only")
        episodes, spec = _host_episodes(run, state, deterministic, key_seed, args.episodes)
    info = {"env": run.results["env"], "agent": run.results["agent"], "policy": args.policy, "backend": run.backend,
            "run_dir": str(run.run_dir.resolve()), "seed": seed, "collect_seed": args.collect_seed}
    path = datasets.save(args.out, episodes, spec, info, overwrite=args.overwrite)
    returns = np.asarray([float(np.sum(e.rewards)) for e in episodes])
    steps = sum(len(e.rewards) for e in episodes)
    print(f"wrote {path}: {len(episodes)} episodes, {steps:,} steps of {run.results['env']} by the {args.policy} "
          f"policy of {run.results['agent']} (seed {seed}), mean return {returns.mean():.1f} "
          f"(min {returns.min():.1f}, max {returns.max():.1f})")
    return 0


def _host_episodes(run, state, deterministic: bool, key_seed: int, num_episodes: int):
    """Episodes of the host ``Actor`` in the run's host environment, recorded by an ``EpisodeRecorder``."""
    from rlkit.datasets import EpisodeRecorder
    from rlkit.envs import environment_spec
    from rlkit.loops.environment_loop import Actor, EnvironmentLoop

    environment = run.env(key_seed)
    recorder = EpisodeRecorder()
    actor = Actor(run.agent, state, seed=key_seed, deterministic=deterministic, adder=recorder)
    EnvironmentLoop(environment, actor, logger=lambda record: None).run(num_episodes=num_episodes)
    return recorder.episodes, environment_spec(environment)
