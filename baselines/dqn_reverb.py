"""DQN on gymnasium's CartPole through Reverb, in one file: the host path written out.

The same ``rlkit.agents.dqn`` agent the jitted device loop trains, here on the host: a dm_env
environment (gymnasium behind ``rlkit.envs.GymWrapper``), an in-process Reverb server holding the
replay, an ``Actor`` whose adder writes n-step transitions to it, and a learner that samples
batches from it and runs the jitted ``agent.update``. Acme's single-process agent, in the same
order: the actor steps, the adder writes, and every ``num_steps`` environment steps the learner
takes one step and hands its new state to the actor. Reverb world only (import rlax before reverb):

    bash scripts/run.sh reverb python baselines/dqn_reverb.py --steps 50000 --seed 0

``python -m rlkit train --agent dqn --env gym:CartPole-v1 --backend reverb`` runs the same loop
with checkpoints and records (``rlkit.loops.reverb_experiment``).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import rlax  # noqa: F401  (TensorFlow Probability's JAX substrate must load before TensorFlow)

# isort: split
import reverb  # after rlax, on purpose

import rlkit
from rlkit.agents import dqn
from rlkit.envs import environment_spec, make_host
from rlkit.loops import Actor, EnvironmentLoop
from rlkit.replay import reverb as reverb_replay


def example_transition(env_spec: rlkit.EnvSpec) -> rlkit.Transition:
    """One transition of zeros: the dtypes and shapes every Reverb item holds."""
    obs = np.zeros(env_spec.observation_shape, np.float32)
    return rlkit.Transition(obs, np.int32(0), np.float32(0), np.float32(0), obs, np.bool_(False))


class Learner:
    """Samples a batch from Reverb and takes one jitted update step with it."""

    def __init__(self, agent: rlkit.Agent, state, sampler: reverb_replay.Sampler, seed: int):
        self.state, self.sampler = state, sampler
        self.key = jax.random.key(seed)
        self.steps = 0
        self.metrics: dict = {}

        def update(state, batch, key):  # split the key inside the jit: one dispatch per step, not two
            key, update_key = jax.random.split(key)
            state, metrics = agent.update(state, batch, update_key)
            return state, metrics, key

        self.update = jax.jit(update)

    def step(self) -> None:
        _, _, batch = self.sampler.sample()  # numpy Transition batch [batch_size, ...]
        self.state, self.metrics, self.key = self.update(self.state, batch, self.key)
        self.steps += 1


def evaluate(agent: rlkit.Agent, state, episodes: int, seed: int) -> float:
    """Mean return of the greedy policy over fresh episodes."""
    actor = Actor(agent, state, seed=seed, deterministic=True)
    env = make_host("gym:CartPole-v1", seed=seed)
    records = EnvironmentLoop(env, actor, logger=lambda record: None).run(num_episodes=episodes)
    return float(np.mean([record["episode_return"] for record in records]))


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=lambda text: int(float(text)), default=50_000, help="environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=10_000, help="greedy evaluation every N steps")
    args = parser.parse_args(argv)

    # 1. The environment and the agent, exactly as the device loop builds it.
    env = make_host("gym:CartPole-v1", seed=args.seed)
    env_spec = environment_spec(env)
    config = rlkit.presets.config_for("dqn", "gym:CartPole-v1")  # one env, an update every 4 steps
    agent = dqn.make(config, env_spec, total_steps=args.steps)
    spec = dqn.experience(config)  # batch_size, buffer_size, min_size, n_step, gamma
    init_key, actor_key = jax.random.split(jax.random.key(args.seed))
    state = agent.init(init_key)

    # 2. The replay: one Reverb table of n-step transitions; its rate limiter holds the replay ratio.
    example = example_transition(env_spec)
    samples_per_insert = spec.batch_size / spec.steps_per_iteration
    tables = reverb_replay.make_tables(
        spec, example, samples_per_insert=samples_per_insert, error_buffer=64 * samples_per_insert + 4 * spec.batch_size
    )
    server = reverb.Server(tables, port=None)  # listens on all interfaces; we talk to it on loopback
    client = reverb.Client(f"localhost:{server.port}")
    writer = reverb_replay.TransitionWriter(client, spec, example=example)
    learner = Learner(agent, state, reverb_replay.Sampler(client, "replay", spec.batch_size, example), args.seed)

    # 3. The actor: acts with the learner's latest state; its adder writes to Reverb and, every
    #    num_steps environment steps once min_size items are in, lets the learner take a step.
    actor = Actor(agent, state, key=actor_key)
    env_steps = 0

    def adder(transition: rlkit.Transition) -> None:
        nonlocal env_steps
        writer(transition)
        env_steps += 1
        if env_steps % spec.steps_per_iteration == 0 and writer.items_written >= spec.min_size:
            if learner.steps == 0:
                writer.flush()  # the rate limiter counts confirmed items only
            learner.step()
            actor.update_state(learner.state)

    actor.adder = adder
    loop = EnvironmentLoop(env, actor, logger=lambda record: None)

    # 4. Train: whole episodes, an evaluation every eval_every steps.
    start = time.perf_counter()
    try:
        while env_steps < args.steps:
            records = loop.run(num_steps=min(args.eval_every, args.steps - env_steps))
            greedy = evaluate(agent, learner.state, 5, seed=10_000 + env_steps)
            print(
                f"{env_steps:>7} steps | {learner.steps:>6} updates | training return "
                f"{np.mean([r['episode_return'] for r in records]):6.1f} | greedy return {greedy:6.1f} | "
                f"loss {float(learner.metrics.get('loss', np.nan)):.3f} | {env_steps / (time.perf_counter() - start):,.0f} "
                f"steps/s", flush=True,
            )
        writer.close()
    finally:
        server.stop()

    final = evaluate(agent, learner.state, 20, seed=10_000 + args.seed)
    print(f"final greedy return over 20 episodes: {final:.1f}")
    return final


if __name__ == "__main__":
    main()
