"""``python -m rlkit train --backend distributed``: a replay server, a learner and N actors on Ray.

One seed per run (``--first-seed``); ``--chunks`` sets how many metrics lines (each with a greedy
evaluation) the run writes, ``--checkpoint-every-steps`` when the learner and the replay checkpoint.
Reverb world only, with Ray (``rlkit[distributed]``); nothing here imports either until the arguments
are checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

WORLD_HINT = (
    "--backend distributed needs the Reverb world with Ray (dm-reverb, TensorFlow and ray), which this Python "
    "environment does not have; run the same command there: bash scripts/run.sh reverb python -m rlkit train ... "
    "--backend distributed"
)


def train_command(args: argparse.Namespace) -> int:
    from rlkit import agents, presets
    from rlkit import config as cfg
    from rlkit.runs import rundir

    if any(importlib.util.find_spec(name) is None for name in ("reverb", "tensorflow", "ray")):
        raise ValueError(WORLD_HINT)
    if args.seeds != 1:
        raise ValueError(f"--seeds={args.seeds}: a distributed run trains one seed (choose it with --first-seed)")
    cfg.check_seeds(args.first_seed, args.seeds)
    if args.actors < 1:
        raise ValueError(f"--actors must be >= 1, got {args.actors}")
    if args.chunks < 1 or args.eval_episodes < 1:
        raise ValueError("--chunks and --eval-episodes must be >= 1")
    if getattr(args, "observe", None):
        raise ValueError("--observe: applies to the device backend only (gymnax environments)")
    if getattr(args, "transitions_per_item", 1) != 1:
        raise ValueError("--transitions-per-item: the reverb backend's option")
    if args.host_envs < 1:
        raise ValueError(f"--host-envs must be >= 1, got {args.host_envs}")
    rundir.check_run_options(args)
    agent_module = agents.get(args.agent)
    config = cfg.override(presets.config_for(args.agent, args.env), dict(args.overrides))
    import rlax  # noqa: F401  (TensorFlow Probability's JAX substrate loads before TensorFlow)

    from rlkit import distributed

    settings = distributed.DistributedSettings(num_actors=args.actors, envs_per_actor=args.host_envs,
                                               keep_checkpoints=args.keep_checkpoints)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        result = distributed.run(
            agent_module, config, args.env, args.steps, out=args.out, seed=args.first_seed, settings=settings,
            metrics_every=max(1, args.steps // args.chunks), final_eval_episodes=args.eval_episodes,
            checkpoint_every_steps=args.checkpoint_every_steps, checkpoint_every_minutes=args.checkpoint_every_minutes,
            ray_address=args.ray_address, resume=args.resume, overwrite=args.overwrite, log=log, quiet=args.quiet, tensorboard=getattr(args, "tensorboard", False),
            wandb=None if not getattr(args, "wandb", False) else {
                "project": args.wandb_project, "entity": args.wandb_entity, "group": args.wandb_group,
                "mode": args.wandb_mode},
        )
    except distributed.RunStopped as error:
        print(f"rlkit train: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the driver raises it): every process was ended on the way out
        print("rlkit train: interrupted; every process of the run was stopped (continue from the last checkpoint "
              "with --resume)", file=sys.stderr, flush=True)
        return 130
    return 0 if result.get("complete") else 1
