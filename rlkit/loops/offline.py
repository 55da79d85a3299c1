"""Offline runs: the device trainer fed from a dataset, and episodes recorded on the device.

``make_offline_trainer(agent_module, config, env, run, dataset)`` returns the same ``Trainer`` as the
online loop (``rlkit.loops.device.make_trainer(..., dataset=...)`` calls it), so the runner, checkpoints,
``--resume``, seeds and float hyperparameters vmapped in one compile all work unchanged. The differences:

- no rollout: one loop iteration is one ``agent.update`` on a batch drawn uniformly from the dataset
  (n-step transitions folded within episodes, as the online replay does), so ``run.total_steps`` and
  the plan count *gradient steps*;
- the dataset is held once on the device, outside the run state (``Trainer.data``, an input of the
  compiled chunk, not a constant in it): vmapped runs share it and checkpoints do not copy it (a
  resumed run must be given the same dataset, which its identity records);
- an agent with schedules in environment steps (DQN's learning-rate annealing) is built with the
  horizon its gradient steps would take online (``agent_horizon``);
- each chunk ends with a short greedy evaluation in the environment (``CHUNK_EVAL_EPISODES``), the
  chunk's ``episode_return``; the final evaluation is the usual ``eval_episodes``.

``collect_episodes`` runs a trained agent on ``num_episodes`` environments side by side (no auto-reset)
and returns the episodes for ``rlkit.datasets.save``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlkit import config as cfg
from rlkit.envs.device import DeviceEnv
from rlkit.loops import device as loop
from rlkit.replay.device import n_step_transition
from rlkit.types import Agent, AgentFactory, AgentState, ExperienceSpec, Transition

CHUNK_EVAL_EPISODES = 8  # greedy episodes at the end of each chunk of an offline run


class OfflineRunState(NamedTuple):
    """An offline run: the agent, the sampling key and the gradient steps taken."""

    agent_state: AgentState
    key: jax.Array
    grad_steps: jax.Array


def check_agent(agent_name: str, agent_module: AgentFactory, config: Any) -> None:
    """A one-line error unless the agent learns from uniformly drawn transitions (what a dataset of steps holds)."""
    experience = agent_module.experience(config)
    if experience.kind != "transitions":
        raise ValueError(f"--dataset: agent {agent_name} learns from {experience.kind!r}, but offline runs feed "
                         "transitions; use bc, cql, iql or another replay agent (dqn, sac, td3)")
    if experience.prioritized:
        raise ValueError("--dataset: offline runs draw batches uniformly; set prioritized=false")


def agent_horizon(experience: ExperienceSpec, grad_steps: int) -> int:
    """The environment steps an online run takes for ``grad_steps`` updates: the ``total_steps`` an agent's
    schedules (counted in updates) are built for, so that they span the offline run's gradient steps."""
    per_update = experience.steps_per_iteration / max(experience.updates_per_rollout, 1)
    return int(grad_steps * per_update) + experience.min_size


def make_offline_trainer(
    agent_module: AgentFactory, config: Any, env: DeviceEnv, run: loop.RunConfig, dataset: Any
) -> loop.Trainer:
    """The trainer of an offline run on ``dataset`` (an ``rlkit.datasets.Dataset``); validated before compiling."""
    experience = agent_module.experience(config)
    check_agent(getattr(agent_module, "__name__", "agent").rsplit(".", 1)[-1], agent_module, config)
    dataset.check_fits(env.spec, env.env_id)
    dataset = dataset.shaped(env.spec.observation_shape)
    if experience.batch_size > dataset.num_steps:
        raise ValueError(f"batch_size={experience.batch_size} is larger than the dataset's {dataset.num_steps} steps")
    plan = loop.plan_chunks(run.total_steps, 1, run.num_chunks)  # an iteration is one gradient step
    agent = agent_module.make(config, env.spec, agent_horizon(experience, plan.total_steps))
    extras = jax.eval_shape(lambda: loop.example_step(agent, agent.init(jax.random.key(0)), env.spec)).extras
    if jax.tree.leaves(extras) or jax.tree.leaves(agent.init_carry(1)):
        raise ValueError("--dataset: this agent keeps extras or a recurrent state that a dataset of steps does not "
                         "hold; use bc, cql, iql or another feedforward replay agent")
    steps = jax.tree.map(jnp.asarray, dataset.transitions())
    allowed = set(cfg.vmappable_fields(config))

    def build(hparams: loop.HParams):
        unknown = set(hparams) - allowed
        if unknown:
            raise ValueError(f"hparams {sorted(unknown)} cannot vary inside one compile; "
                             f"numeric fields that can: {sorted(allowed)}")
        run_config = dataclasses.replace(config, **hparams) if hparams else config
        run_experience = agent_module.experience(run_config)
        return agent_module.make(run_config, env.spec, agent_horizon(run_experience, plan.total_steps)), run_experience

    def sample(data: Transition, key: jax.Array, batch_size: int, n_step: int, gamma: Any) -> Transition:
        """``batch_size`` n-step transitions starting at uniform steps; none reaches past an episode end."""
        starts = jax.random.randint(key, (batch_size,), 0, dataset.num_steps)
        indices = jnp.minimum(starts[:, None] + jnp.arange(n_step), dataset.num_steps - 1)  # [B, n]
        sequences = jax.tree.map(lambda x: x[indices], data)
        return jax.vmap(n_step_transition, in_axes=(0, None))(sequences, gamma)

    def init(key, hparams: loop.HParams = {}) -> OfflineRunState:
        agent, _ = build(hparams)
        agent_key, key = jax.random.split(key)
        return OfflineRunState(agent.init(agent_key), key, jnp.zeros((), jnp.int32))

    def iteration(agent: Agent, spec, data: Transition, run_state: OfflineRunState):
        key, sample_key, update_key = jax.random.split(run_state.key, 3)
        batch = sample(data, sample_key, spec.batch_size, spec.n_step, spec.gamma)
        agent_state, metrics = agent.update(run_state.agent_state, batch, update_key)
        return OfflineRunState(agent_state, key, run_state.grad_steps + 1), metrics

    def run_chunk(run_state: OfflineRunState, hparams: loop.HParams = {}, data: Transition = steps):
        agent, spec = build(hparams)
        run_state, metrics = jax.lax.scan(
            lambda state, _: iteration(agent, spec, data, state), run_state, None, length=plan.iterations_per_chunk
        )
        eval_key, key = jax.random.split(run_state.key)
        returns = loop.evaluate_policy(env, agent, run_state.agent_state, eval_key, CHUNK_EVAL_EPISODES)
        summary = jax.tree.map(jnp.mean, metrics)
        summary.update(episode_return=jnp.mean(returns), grad_steps=run_state.grad_steps)
        return run_state._replace(key=key), summary

    def evaluate(agent_state: AgentState, key: jax.Array, hparams: loop.HParams = {}) -> jax.Array:
        agent, _ = build(hparams)
        return loop.evaluate_policy(env, agent, agent_state, key, run.eval_episodes)

    def train(key, hparams: loop.HParams = {}):
        run_state = init(key, hparams)
        return jax.lax.scan(lambda state, _: run_chunk(state, hparams), run_state, None, length=plan.num_chunks)

    return loop.Trainer(init, run_chunk, evaluate, train, plan, experience, data=steps)


POLICIES = "greedy, sample or epsilon=E (E in [0, 1])"


def parse_policy(text: str) -> tuple[bool, float]:
    """``(deterministic, epsilon)`` of ``greedy``, ``sample`` or ``epsilon=E`` (greedy, else a uniform action)."""
    if text == "greedy":
        return True, 0.0
    if text == "sample":
        return False, 0.0
    name, _, value = text.partition("=")
    try:
        epsilon = float(value)
    except ValueError:
        epsilon = -1.0
    if name != "epsilon" or not 0 <= epsilon <= 1:
        raise ValueError(f"--policy: {text!r} is not one of {POLICIES}")
    return True, epsilon


def collect_episodes(
    env: DeviceEnv, agent: Agent, agent_state: AgentState, key: jax.Array, num_episodes: int, policy: str = "greedy",
) -> list[Any]:
    """``num_episodes`` episodes of ``agent`` acting by ``policy``, stepped side by side on the device.

    Returns ``rlkit.datasets.Episode``s (numpy). Each environment stops at its episode's end (no auto-reset),
    so an episode keeps its final observation and its terminated/truncated flag.
    """
    from rlkit.datasets import Episode

    deterministic, epsilon = parse_policy(policy)
    spec = env.spec

    @jax.jit
    def record(key):
        reset_key, key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))

        def step(loop_state, key):
            env_state, obs, carry, done = loop_state
            act_key, explore_key, random_key, env_key = jax.random.split(key, 4)
            out = agent.act(agent_state, obs, carry, act_key, deterministic=deterministic)
            if spec.action_kind == "discrete":
                uniform = jax.random.randint(random_key, out.action.shape, 0, spec.num_actions)
            else:
                uniform = jax.random.uniform(random_key, out.action.shape, minval=spec.action_low,
                                             maxval=spec.action_high)
            explore = jax.random.uniform(explore_key, (num_episodes,)) < epsilon
            action = jnp.where(explore.reshape(-1, *[1] * (out.action.ndim - 1)), uniform, out.action)
            env_state, next_obs, reward, terminated, truncated = jax.vmap(env.step_without_reset)(
                jax.random.split(env_key, num_episodes), env_state, action
            )
            kept = (obs, action, reward, terminated, truncated, next_obs, done)
            return (env_state, next_obs, out.carry, done | terminated | truncated), kept

        start = (env_state, obs, agent.init_carry(num_episodes), jnp.zeros(num_episodes, bool))
        _, kept = jax.lax.scan(step, start, jax.random.split(key, env.max_episode_steps))
        return kept

    obs, action, reward, terminated, truncated, next_obs, done_before = jax.device_get(record(key))
    episodes = []
    for i in range(num_episodes):
        length = int(np.sum(~done_before[:, i]))  # the steps up to and including the one that ended it
        cut = truncated[:length, i].copy()
        if length and not (terminated[length - 1, i] or cut[-1]):
            cut[-1] = True  # stopped at max_episode_steps without the environment's flag: a time limit
        episodes.append(Episode(
            observations=np.concatenate([obs[:length, i], next_obs[length - 1:length, i]]),
            actions=action[:length, i], rewards=reward[:length, i],
            terminations=terminated[:length, i], truncations=cut,
        ))
    return episodes
