"""The on-device training loop: pure, jittable, scanned, vmappable over seeds and hyperparameters.

One loop iteration: ``rollout_length`` environment steps on
``num_envs`` environments with ``agent.act``; then either ``agent.update`` on
the fresh rollout (on-policy) or ``replay.add`` and ``updates_per_rollout``
sampled updates (off-policy). A *chunk* is a ``lax.scan`` over several loop
iterations that returns per-chunk means only, so memory stays bounded however long
the run; the host takes control between chunks (logging, evaluation,
checkpoints). ``Trainer.train(key, hparams)`` is the whole run as one pure
function.

``hparams`` maps float fields of the agent's config (``learning_rate``,
``ent_coef``, ...) to scalars that override the config *inside* the trace, so
``jax.vmap`` over a vector of learning rates compiles once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from rlkit import config as cfg
from rlkit import parallel
from rlkit.envs.device import DeviceEnv, EpisodeState
from rlkit.replay import device as device_replay
from rlkit.types import Agent, AgentFactory, AgentState, EnvSpec, ExperienceSpec, Trajectory

HParams = Mapping[str, jax.Array]
MAX_STEPS_PER_RUN = 2**31 - 1  # environment steps per run, counted in int32 on the device


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How long to train and how often the host takes control.

    Attributes:
      total_steps: environment steps (all envs) to train for; rounded down to
        whole loop iterations (the exact figure is ``Trainer.plan.total_steps``).
      num_chunks: about how many chunks to split the run into (logging points).
      eval_episodes: episodes of the deterministic policy in each evaluation.
    """

    total_steps: int
    num_chunks: int = 10
    eval_episodes: int = 32

    def __post_init__(self):
        if not isinstance(self.total_steps, int) or self.total_steps <= 0:
            raise ValueError(f"steps (total_steps) must be a positive integer, got {self.total_steps!r}")
        if self.total_steps > MAX_STEPS_PER_RUN:
            raise ValueError(f"steps (total_steps)={self.total_steps:,}: at most {MAX_STEPS_PER_RUN:,} per run, "
                             "which the device loop's int32 step counters hold; train longer as several runs")
        if self.num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {self.num_chunks}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")


class ChunkPlan(NamedTuple):
    """A run cut into chunks of loop iterations (a rollout, then learning), one jitted scan each."""

    num_chunks: int
    iterations_per_chunk: int
    steps_per_iteration: int

    @property
    def total_steps(self) -> int:
        return self.num_chunks * self.iterations_per_chunk * self.steps_per_iteration


def plan_chunks(total_steps: int, steps_per_iteration: int, target_chunks: int) -> ChunkPlan:
    """Split ``total_steps // steps_per_iteration`` loop iterations into equal chunks.

    Prefers a chunk count near ``target_chunks`` that divides the iterations
    exactly; otherwise drops the remainder (fewer than one chunk's iterations).
    """
    iterations = total_steps // steps_per_iteration
    if iterations < 1:
        raise ValueError(
            f"steps={total_steps} is fewer than one loop iteration "
            f"(num_envs * num_steps = {steps_per_iteration})"
        )
    target = max(1, min(target_chunks, iterations))
    for chunks in [*range(target, max(1, target // 2) - 1, -1), *range(target + 1, 4 * target + 1)]:
        if chunks <= iterations and iterations % chunks == 0:
            return ChunkPlan(chunks, iterations // chunks, steps_per_iteration)
    return ChunkPlan(target, iterations // target, steps_per_iteration)


class ActorState(NamedTuple):
    """Where the environments are: their states, the next observations, the actor's carry."""

    env_state: EpisodeState
    obs: jax.Array
    carry: Any


class RunState(NamedTuple):
    """Everything a run is: one pytree to vmap, donate and checkpoint."""

    agent_state: AgentState
    actor: ActorState
    replay_state: Any  # () for on-policy agents
    key: jax.Array
    env_steps: jax.Array


class EpisodeStats(NamedTuple):
    return_sum: jax.Array
    length_sum: jax.Array
    count: jax.Array


def rollout(
    env: DeviceEnv, agent: Agent, agent_state: AgentState, start: ActorState,
    key: jax.Array, num_steps: int,
) -> tuple[ActorState, Trajectory, EpisodeStats]:
    """Step ``num_envs`` environments ``num_steps`` times with ``agent.act``."""
    num_envs = start.obs.shape[0]
    fresh_carry = agent.init_carry(num_envs)

    def step(actor: ActorState, step_key):
        act_key, env_key = jax.random.split(step_key)
        out = agent.act(agent_state, actor.obs, actor.carry, act_key)
        env_state, result = env.step_batch(jax.random.split(env_key, num_envs), actor.env_state, out.action)
        done = result.terminated | result.truncated
        carry = jax.tree.map(
            lambda fresh, c: jnp.where(done.reshape(-1, *[1] * (c.ndim - 1)), fresh, c),
            fresh_carry, out.carry,
        )
        transition = Trajectory(
            actor.obs, out.action, result.reward, result.terminated, result.truncated,
            result.next_obs, out.extras,
        )
        stats = EpisodeStats(result.episode_return, result.episode_length, done)
        return ActorState(env_state, result.obs, carry), (transition, stats)

    end, (trajectory, stats) = jax.lax.scan(step, start, jax.random.split(key, num_steps))
    return end, trajectory, jax.tree.map(jnp.sum, stats)  # summed once, not every step


def evaluate_policy(
    env: DeviceEnv, agent: Agent, agent_state: AgentState, key: jax.Array, num_episodes: int,
    deterministic: bool = True,
) -> jax.Array:
    """Undiscounted returns of ``num_episodes`` episodes of the deterministic policy (with
    ``deterministic=False``, of the policy's sampled actions, as it acts while training)."""
    reset_key, key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))

    class Loop(NamedTuple):
        actor: ActorState
        returns: jax.Array
        done: jax.Array
        t: jax.Array
        key: jax.Array

    def cond(loop: Loop):
        return (loop.t < env.max_episode_steps) & ~jnp.all(loop.done)

    def body(loop: Loop):
        key, act_key, env_key = jax.random.split(loop.key, 3)
        out = agent.act(agent_state, loop.actor.obs, loop.actor.carry, act_key, deterministic=deterministic)
        # No auto-reset: a finished episode's environment keeps stepping, masked out.
        env_state, obs, reward, terminated, truncated = jax.vmap(env.step_without_reset)(
            jax.random.split(env_key, num_episodes), loop.actor.env_state, out.action
        )
        returns = loop.returns + jnp.where(loop.done, 0.0, reward)
        done = loop.done | terminated | truncated
        return Loop(ActorState(env_state, obs, out.carry), returns, done, loop.t + 1, key)

    start = Loop(
        ActorState(env_state, obs, agent.init_carry(num_episodes)),
        jnp.zeros(num_episodes), jnp.zeros(num_episodes, bool), jnp.zeros((), jnp.int32), key,
    )
    return jax.lax.while_loop(cond, body, start).returns


class Trainer(NamedTuple):
    """A run's pure functions; vmap them over seeds (keys) and hyperparameters.

    Attributes:
      init: ``(key, hparams) -> RunState``.
      run_chunk: ``(run_state, hparams, data) -> (run_state, metrics)``; metrics are chunk means;
        ``data`` defaults to ``Trainer.data``.
      evaluate: ``(agent_state, key, hparams) -> returns [eval_episodes]``.
      train: ``(key, hparams) -> (run_state, metrics [num_chunks])``, the whole run.
      plan: the chunking of the run.
      experience: how the loop feeds the agent.
      data: arrays every run reads and none owns (an offline run's dataset, on the device once): the
        runner passes them to ``run_chunk`` unbatched, as an input rather than a compiled constant.
    """

    init: Callable[[jax.Array, HParams], RunState]
    run_chunk: Callable[..., tuple[RunState, dict]]
    evaluate: Callable[[AgentState, jax.Array, HParams], jax.Array]
    train: Callable[[jax.Array, HParams], tuple[RunState, dict]]
    plan: ChunkPlan
    experience: ExperienceSpec
    data: Any = ()


def example_step(agent: Agent, agent_state: AgentState, spec: EnvSpec) -> Trajectory:
    """One unbatched step of zeros with the shapes and dtypes a rollout stores (extras included)."""
    obs = jnp.zeros(spec.observation_shape, jnp.float32)
    out = jax.eval_shape(lambda: agent.act(agent_state, obs[None], agent.init_carry(1), jax.random.key(0)))
    zeros = lambda s: jnp.zeros(s.shape[1:], s.dtype)  # noqa: E731  (drop the batch axis of one)
    return Trajectory(
        obs, zeros(out.action), jnp.zeros(()), jnp.zeros((), bool), jnp.zeros((), bool), obs,
        jax.tree.map(zeros, out.extras),
    )


def make_trainer(
    agent_module: AgentFactory, config: Any, env: DeviceEnv, run: RunConfig, dataset: Any = None,
    data_parallel: int | None = None,
) -> Trainer:
    """Wire an agent module (anything with ``make``/``experience``), its config and an environment.

    Everything is validated here, before anything compiles. The feeder comes from
    ``rlkit.replay.FEEDERS`` by the experience kind. With a ``dataset`` (``rlkit.datasets.Dataset``)
    the run is offline (``rlkit.loops.offline``): no rollouts, and ``run.total_steps`` counts gradient steps.
    ``data_parallel=N`` splits each run's environments over N devices and averages the gradients
    (``rlkit.loops.data_parallel``).
    """
    if data_parallel is not None and data_parallel > 1:
        if dataset is not None:
            raise ValueError("--split envs: an offline run has no environments to split; split the seeds (--split runs)")
        from rlkit.loops.data_parallel import make_data_parallel_trainer

        return make_data_parallel_trainer(agent_module, config, env, run, data_parallel)
    if dataset is not None:
        from rlkit.loops.offline import make_offline_trainer

        return make_offline_trainer(agent_module, config, env, run, dataset)
    experience = agent_module.experience(config)
    if experience.needs_dataset:
        raise ValueError("this agent learns only from a dataset: rlkit train --dataset DATASET, or "
                         "make_trainer(..., dataset=rlkit.datasets.load(DATASET)); record one with rlkit collect")
    device_replay.check_spec(experience)
    plan = plan_chunks(run.total_steps, experience.steps_per_iteration, run.num_chunks)
    # Building the agent once checks that it fits the environment (e.g. action space).
    agent = agent_module.make(config, env.spec, plan.total_steps)
    if experience.kind == "transitions" and jax.tree.leaves(agent.init_carry(1)):
        raise ValueError(
            "experience kind: this agent is recurrent (init_carry returns a state) but asks for 'transitions', "
            "which keep no sequences to unroll it on; use 'sequences' or 'rollout'"
        )
    if experience.kind != "rollout" and experience.min_size >= plan.total_steps:
        raise ValueError(
            f"steps={run.total_steps} ends before learning starts "
            f"(learning_starts/batch_size need {experience.min_size} transitions)"
        )
    allowed = set(cfg.vmappable_fields(config))

    def build(hparams: HParams):
        unknown = set(hparams) - allowed
        if unknown:
            raise ValueError(
                f"hparams {sorted(unknown)} cannot vary inside one compile; "
                f"numeric fields that can: {sorted(allowed)}"
            )
        run_config = dataclasses.replace(config, **hparams) if hparams else config
        agent = agent_module.make(run_config, env.spec, plan.total_steps)
        spec = agent_module.experience(run_config)
        return agent, spec

    def make_feeder(agent: Agent, spec: ExperienceSpec, agent_state: AgentState) -> device_replay.Feeder:
        return device_replay.make(spec, example_step(agent, agent_state, env.spec))

    def init(key, hparams: HParams = {}) -> RunState:
        agent, spec = build(hparams)
        agent_key, env_key, key = jax.random.split(key, 3)
        env_key, key = parallel.device_key(env_key), parallel.device_key(key)  # the agent's stays shared
        agent_state = agent.init(agent_key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(env_key, spec.num_envs))
        actor = ActorState(env_state, obs, agent.init_carry(spec.num_envs))
        replay_state = make_feeder(agent, spec, agent_state).init()
        return RunState(agent_state, actor, replay_state, key, jnp.zeros((), jnp.int32))

    def learn(agent: Agent, spec: ExperienceSpec, feeder, agent_state, replay_state, fresh: Trajectory, key):
        """``updates_per_rollout`` updates on batches from ``feeder``; priorities written back.

        Returns ``(agent_state, replay_state, metrics)``.
        """
        if not feeder.stores:  # on-policy: one update on the fresh rollout, with the step's key
            agent_state, metrics = agent.update(agent_state, fresh, key)
            metrics.pop("priorities", None)
            return agent_state, replay_state, metrics

        # Only prioritized replay changes the buffer here; only then is it carried (and copied) through.
        def one_update(state, k):
            agent_state, written = state
            sample_key, update_key = jax.random.split(k)
            batch, indices = feeder.sample(written if spec.prioritized else replay_state, fresh, sample_key)
            agent_state, metrics = agent.update(agent_state, batch, update_key)
            priorities = metrics.pop("priorities", None)
            if spec.prioritized and priorities is not None:
                chex.assert_equal_shape([priorities, indices])  # one priority per sampled item
                written = feeder.set_priorities(written, indices, priorities)
            return (agent_state, written), metrics

        initial = (agent_state, replay_state if spec.prioritized else ())
        if spec.updates_per_rollout == 1:  # one update takes the step's key itself
            (agent_state, written), metrics = one_update(initial, key)
        else:
            keys = jax.random.split(key, spec.updates_per_rollout)
            (agent_state, written), metrics = jax.lax.scan(one_update, initial, keys)
            metrics = jax.tree.map(jnp.mean, metrics)
        return agent_state, (written if spec.prioritized else replay_state), metrics

    def iteration(agent: Agent, spec: ExperienceSpec, run_state: RunState):
        key, rollout_key, learn_key = jax.random.split(run_state.key, 3)
        actor, trajectory, episodes = rollout(
            env, agent, run_state.agent_state, run_state.actor, rollout_key, spec.rollout_length
        )
        env_steps = run_state.env_steps + spec.steps_per_iteration
        feeder = make_feeder(agent, spec, run_state.agent_state)
        replay_state = feeder.add(run_state.replay_state, trajectory)
        if not feeder.stores:  # on-policy: every rollout is learned from
            agent_state, replay_state, metrics = learn(
                agent, spec, feeder, run_state.agent_state, replay_state, trajectory, learn_key
            )
            learned = jnp.ones(())
        else:
            # As in learn: the buffer goes through the cond only where the updates change it.
            def step(agent_state, written):
                agent_state, replay, metrics = learn(
                    agent, spec, feeder, agent_state, written if spec.prioritized else replay_state, trajectory,
                    learn_key,
                )
                return agent_state, (replay if spec.prioritized else ()), metrics

            def wait(agent_state, written):
                shapes = jax.eval_shape(step, agent_state, written)[2]
                return agent_state, written, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

            ready = (env_steps >= spec.min_size) & feeder.can_sample(replay_state)
            agent_state, written, metrics = jax.lax.cond(
                ready, step, wait, run_state.agent_state, replay_state if spec.prioritized else ()
            )
            replay_state = written if spec.prioritized else replay_state
            learned = ready.astype(jnp.float32)
        new_run_state = RunState(agent_state, actor, replay_state, key, env_steps)
        return new_run_state, (metrics, learned, episodes)

    def run_chunk(run_state: RunState, hparams: HParams = {}, data: Any = ()):
        del data  # an online run learns from its own rollouts
        agent, spec = build(hparams)
        run_state, (metrics, learned, episodes) = jax.lax.scan(
            lambda state, _: iteration(agent, spec, state), run_state, None, length=plan.iterations_per_chunk
        )
        num_learned = jnp.sum(learned)
        summary = {
            name: jnp.where(num_learned > 0, jnp.sum(value * learned) / jnp.maximum(num_learned, 1), jnp.nan)
            for name, value in metrics.items()
        }
        count = jnp.sum(episodes.count)
        summary["episode_return"] = jnp.where(count > 0, jnp.sum(episodes.return_sum) / jnp.maximum(count, 1), jnp.nan)
        summary["episode_length"] = jnp.where(count > 0, jnp.sum(episodes.length_sum) / jnp.maximum(count, 1), jnp.nan)
        summary["episodes"] = count
        summary["env_steps"] = run_state.env_steps
        return run_state, summary

    def evaluate(agent_state: AgentState, key: jax.Array, hparams: HParams = {}) -> jax.Array:
        agent, _ = build(hparams)
        return evaluate_policy(env, agent, agent_state, key, run.eval_episodes)

    def train(key, hparams: HParams = {}):
        run_state = init(key, hparams)
        return jax.lax.scan(lambda state, _: run_chunk(state, hparams), run_state, None, length=plan.num_chunks)

    return Trainer(init, run_chunk, evaluate, train, plan, experience)
