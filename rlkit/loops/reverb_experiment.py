"""DQN through Reverb in one process: an in-process server, a host actor and a learner, interleaved.

Reverb world only (imports ``rlkit.replay.reverb``)::

    result = train_with_reverb(total_steps=100_000, seed=0)
    result["evaluations"]   # [(env_steps, mean greedy return), ...]

The actor writes n-step transitions with ``TransitionWriter``; every ``config.num_steps`` environment
steps the learner samples one batch (a ``SampleToInsertRatio`` table at ``batch_size / num_steps``
samples per insert keeps the two paced), runs the jitted ``agent.update`` and pushes its state to the
actor every ``push_every`` updates.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from rlkit.agents import dqn
from rlkit.envs import environment_spec, make_host
from rlkit.loops.host import Actor, EnvironmentLoop
from rlkit.replay import reverb as reverb_replay
from rlkit.types import Transition

reverb = reverb_replay.reverb

DEFAULT_CONFIG = dqn.Config(
    num_envs=1, num_steps=4, buffer_size=50_000, batch_size=128, learning_starts=1_000,
    learning_rate=5e-4, anneal_lr=False, gamma=0.99, n_step=3, target_update_freq=500,
    epsilon_start=1.0, epsilon_end=0.02, epsilon_decay_steps=20_000, hidden_sizes=(128, 128),
)


def evaluate(agent, state, env_id: str, episodes: int, seed: int) -> float:
    """Mean greedy return over ``episodes`` episodes of a fresh host environment."""
    env = make_host(env_id, seed=seed)
    actor = Actor(agent, state, seed=seed, deterministic=True)
    records = EnvironmentLoop(env, actor, logger=lambda record: None).run(num_episodes=episodes)
    return float(np.mean([r["episode_return"] for r in records]))


def train_with_reverb(
    env_id: str = "gym:CartPole-v1",
    config: dqn.Config = DEFAULT_CONFIG,
    total_steps: int = 100_000,
    seed: int = 0,
    push_every: int = 4,
    eval_every: int = 10_000,
    eval_episodes: int = 5,
    stop_at_return: float | None = None,
    log=print,
) -> dict:
    """Train DQN on a host environment through an in-process Reverb server; returns a summary dict.

    ``stop_at_return``: stop after the first evaluation whose mean greedy return reaches it.
    Returns ``{"state", "evaluations": [(env_steps, mean_return)], "env_steps", "updates", "seconds"}``.
    """
    env = make_host(env_id, seed=seed)
    agent = dqn.make(config, environment_spec(env), total_steps=total_steps)
    spec = dqn.experience(config)
    state = agent.init(jax.random.key(seed))
    update = jax.jit(agent.update)

    # One item's structure and dtypes, from a real step of the actor.
    probe = Actor(agent, state, seed=seed)
    first = env.reset()
    probe.observe_first(first)
    action = probe.select_action(first.observation)
    example = probe.observe(action, env.step(action))
    example = Transition(*(np.asarray(x) for x in example))
    env = make_host(env_id, seed=seed)  # start the run itself from a fresh seeded environment

    samples_per_insert = spec.batch_size / config.num_steps
    tables = reverb_replay.make_tables(
        spec, example, samples_per_insert=samples_per_insert,
        error_buffer=max(spec.min_size, 4 * spec.batch_size) * samples_per_insert,
    )
    server = reverb.Server(tables, port=None)
    start = time.perf_counter()
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = reverb_replay.TransitionWriter(client, spec, example=example)
        sampler = reverb_replay.Sampler(client, "replay", spec.batch_size, example, timeout_s=30)
        actor = Actor(agent, state, seed=seed, adder=writer)
        key = jax.random.key(seed + 1)
        evaluations: list[tuple[int, float]] = []
        updates, env_steps, learning = 0, 0, False
        timestep = env.reset()
        actor.observe_first(timestep)
        while env_steps < total_steps:
            action = actor.select_action(timestep.observation)
            timestep = env.step(action)
            actor.observe(action, next_timestep=timestep)
            env_steps += 1
            if timestep.last():
                timestep = env.reset()
                actor.observe_first(timestep)
            if not learning and writer.items_written >= spec.min_size:
                writer.flush()  # the limiter counts confirmed items only
                learning = True
            if learning and env_steps % config.num_steps == 0:
                _, _, batch = sampler.sample()
                key, update_key = jax.random.split(key)
                state, _ = update(state, batch, update_key)
                updates += 1
                if updates % push_every == 0:
                    actor.update_state(state)
            if env_steps % eval_every == 0:
                mean_return = evaluate(agent, state, env_id, eval_episodes, seed + 1000 + env_steps)
                evaluations.append((env_steps, mean_return))
                log(f"reverb dqn: {env_steps} steps, {updates} updates, greedy return {mean_return:.1f}, "
                    f"{time.perf_counter() - start:.0f} s")
                if stop_at_return is not None and mean_return >= stop_at_return:
                    break
        writer.close()
    finally:
        server.stop()
    return {
        "state": state, "evaluations": evaluations, "env_steps": env_steps, "updates": updates,
        "seconds": time.perf_counter() - start,
    }
