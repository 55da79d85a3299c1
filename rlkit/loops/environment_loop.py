"""The host loop: an ``Actor`` around any rlkit agent and Acme's one-line ``EnvironmentLoop``.

::

    env = rlkit.envs.make_host("gym:CartPole-v1")
    agent = rlkit.agents.dqn.make(config, rlkit.envs.environment_spec(env))
    actor = Actor(agent, agent.init(jax.random.key(0)), adder=replay_writer)
    EnvironmentLoop(env, actor).run(num_episodes=10)

The agent is the same ``Agent`` the device loop runs: the actor calls its jitted
``act`` on a batch of one observation, and hands each step to ``adder`` as a numpy
``Transition`` (where a replay writer, e.g. Reverb's, plugs in); a learner pushes
fresh parameters back with ``update_state``. Where several environments are stepped
side by side, ``select_actions`` acts for all of them in one jitted call.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import dm_env
import jax
import jax.numpy as jnp
import numpy as np

from rlkit.types import Agent, AgentState, Transition

Adder = Callable[[Transition], Any]
Logger = Callable[[dict], Any]
KEY_IMPL = "rbg"  # the host loop's PRNG: one act per step, and threefry's keys dominate a small act on a CPU


class Actor:
    """Acts with an agent in host environments: one at a time (``select_action``, for
    ``EnvironmentLoop``), or a batch of them in one jitted call (``select_actions``).

    Args:
      agent: any rlkit ``Agent``.
      state: its ``AgentState`` (parameters); replace it with ``update_state``.
      seed: seeds the action keys (XLA's "rbg" generator: on a CPU, a step's keys cost a quarter of
        threefry's).
      deterministic: greedy / mean actions (evaluation).
      adder: called with each step's ``Transition`` (numpy, unbatched).
      key: the first action key (instead of ``seed``); ``actor.key`` is the current one.
    """

    def __init__(
        self, agent: Agent, state: AgentState, seed: int = 0, deterministic: bool = False,
        adder: Adder | None = None, key: jax.Array | None = None,
    ):
        self.agent = agent
        self.state = state
        self.adder = adder
        self.last_extras: dict[str, np.ndarray] = {}  # what act returned for the last action
        self.key = jax.random.key(seed, impl=KEY_IMPL) if key is None else key
        self._carry = agent.init_carry(1)
        self._observation: np.ndarray | None = None

        def act(state, observation, carry, key):
            key, act_key = jax.random.split(key)  # inside the jit: one dispatch per step, not two
            out = agent.act(state, observation[None], carry, act_key, deterministic)
            return key, out.action[0], out.carry, jax.tree.map(lambda x: x[0], out.extras)

        def act_batch(state, observations, carry, first, key):
            key, act_key = jax.random.split(key)
            fresh = agent.init_carry(observations.shape[0])
            carry = jax.tree.map(  # environments starting an episode start from a fresh carry
                lambda f, c: jnp.where(first.reshape(-1, *[1] * (c.ndim - 1)), f, c), fresh, carry
            )
            out = agent.act(state, observations, carry, act_key, deterministic)
            return key, out.action, out.carry, out.extras

        self._act = jax.jit(act)
        self._act_batch = jax.jit(act_batch)
        self._batch_carries: dict[int, Any] = {}  # select_actions' recurrent carry per group of environments
        self._batch_sizes: dict[int, int] = {}

    def observe_first(self, timestep: dm_env.TimeStep) -> None:
        """Start an episode: reset the recurrent carry and remember the first observation."""
        self._carry = self.agent.init_carry(1)
        self._observation = np.asarray(timestep.observation)

    def select_action(self, observation: np.ndarray) -> np.ndarray:
        """The agent's action for one observation (the carry advances)."""
        self.key, action, self._carry, extras = self._act(
            self.state, np.asarray(observation), self._carry, self.key
        )
        self.last_extras = jax.tree.map(np.asarray, extras) if extras else {}
        return np.asarray(action)

    def select_actions(self, observations: np.ndarray, first: np.ndarray, group: int = 0) -> np.ndarray:
        """Actions for a batch of environments, ``observations [N, ...]``, in one jitted call.

        ``first [N]`` (bool) marks the environments whose episode starts with this observation: their
        recurrent carry restarts. Each ``group`` of environments keeps its own recurrent carry, apart
        from ``select_action``'s. ``last_extras`` holds the batch's extras afterwards.
        """
        actions, extras = self.dispatch_actions(observations, first, group)
        self.last_extras = jax.tree.map(np.asarray, extras) if extras else {}
        return np.asarray(actions)

    def dispatch_actions(self, observations: np.ndarray, first: np.ndarray, group: int = 0) -> tuple[jax.Array, Any]:
        """``select_actions`` without waiting: returns ``(actions, extras)`` as JAX arrays still being computed.

        XLA computes them on its own threads while the caller goes on (e.g. steps another group of
        environments); ``np.asarray(actions)`` waits for them.
        """
        observations = np.asarray(observations)
        carry = self._batch_carries.get(group)
        if carry is None or self._batch_sizes.get(group) != observations.shape[0]:
            self._batch_sizes[group] = observations.shape[0]
            carry = self.agent.init_carry(observations.shape[0])
        self.key, actions, self._batch_carries[group], extras = self._act_batch(
            self.state, observations, carry, np.asarray(first, bool), self.key
        )
        return actions, extras

    def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> Transition:
        """Record the step ``action`` led to; returns it (and hands it to ``adder``).

        ``discount_t`` is the environment's discount (0 at termination, 1 at a
        truncation); ``obs_t`` is the observation of ``next_timestep``, the final
        one at the end of an episode; ``extras`` what ``act`` returned with the action
        (``select_action``'s last call).
        """
        if self._observation is None:
            raise RuntimeError("Actor.observe before observe_first: start each episode with observe_first")
        obs_t = np.asarray(next_timestep.observation)
        transition = Transition(
            obs_tm1=self._observation,
            action_tm1=np.asarray(action),
            reward_t=np.asarray(next_timestep.reward, np.float32).reshape(()),
            discount_t=np.asarray(next_timestep.discount, np.float32).reshape(()),
            obs_t=obs_t,
            last_t=np.asarray(next_timestep.last()),
            extras=self.last_extras,
        )
        self._observation = obs_t
        if self.adder is not None:
            self.adder(transition)
        return transition

    def compile(self, observation: np.ndarray, num_envs: int | None = None) -> float:
        """Compile ``act`` for ``observation``'s shape now (the actor's keys and carry are untouched); seconds.

        With ``num_envs``, compile ``select_actions`` for that many environments instead.
        """
        start = time.perf_counter()
        if num_envs is None:
            out = self._act(self.state, np.asarray(observation), self._carry, self.key)
        else:
            observations = np.stack([np.asarray(observation)] * num_envs)
            first = np.ones(num_envs, bool)
            out = self._act_batch(self.state, observations, self.agent.init_carry(num_envs), first, self.key)
        jax.block_until_ready(out)
        return time.perf_counter() - start

    def update_state(self, new_state: AgentState) -> None:
        """Act with fresh agent state (parameters from a learner) from the next action on."""
        self.state = new_state


def evaluate_actor(actor: Actor, environment: dm_env.Environment, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes of ``actor`` in ``environment``, its action keys seeded ``seed``."""
    actor.key = jax.random.key(seed, impl=KEY_IMPL)
    records = EnvironmentLoop(environment, actor, logger=lambda record: None).run(num_episodes=episodes)
    return np.asarray([r["episode_return"] for r in records], np.float64)


def print_logger(record: dict) -> None:
    """The default logger: one line per episode."""
    print(
        f"episode {record['episodes']}: return {record['episode_return']:.2f}, "
        f"length {record['episode_length']}, {record['steps_per_second']:.0f} steps/s, "
        f"{record['total_steps']} steps"
    )


class EnvironmentLoop:
    """Run an actor in a dm_env environment, episode by episode, logging each episode.

    Args:
      environment: any ``dm_env.Environment``.
      actor: anything with ``observe_first``, ``select_action`` and ``observe``.
      logger: a callable taking each episode's record (a dict); prints a line by default.
    """

    def __init__(self, environment: dm_env.Environment, actor: Actor, logger: Logger | None = None):
        self.environment = environment
        self.actor = actor
        self.logger = print_logger if logger is None else logger
        self.episodes = 0
        self.total_steps = 0

    def run_episode(self) -> dict:
        """One whole episode; returns (and logs) its record."""
        start = time.perf_counter()
        timestep = self.environment.reset()
        self.actor.observe_first(timestep)
        episode_return, episode_length = 0.0, 0
        while not timestep.last():
            action = self.actor.select_action(timestep.observation)
            timestep = self.environment.step(action)
            self.actor.observe(action, next_timestep=timestep)
            episode_return += float(np.sum(timestep.reward))
            episode_length += 1
        self.episodes += 1
        self.total_steps += episode_length
        record = {
            "episodes": self.episodes,
            "episode_return": episode_return,
            "episode_length": episode_length,
            "steps_per_second": episode_length / max(time.perf_counter() - start, 1e-9),
            "total_steps": self.total_steps,
        }
        self.logger(record)
        return record

    def run(self, num_episodes: int | None = None, num_steps: int | None = None) -> list[dict]:
        """Run whole episodes until ``num_episodes`` episodes or ``num_steps`` steps (this call's).

        With ``num_steps`` the episode under way is finished, so a run may go past it.
        Returns each episode's record.
        """
        if num_episodes is None and num_steps is None:
            raise ValueError("EnvironmentLoop.run: give num_episodes or num_steps (it never runs forever)")
        for name, value in (("num_episodes", num_episodes), ("num_steps", num_steps)):
            if value is not None and value < 1:
                raise ValueError(f"EnvironmentLoop.run: {name} must be >= 1, got {value}")
        records: list[dict] = []
        steps = 0
        while not (
            (num_episodes is not None and len(records) >= num_episodes)
            or (num_steps is not None and steps >= num_steps)
        ):
            records.append(self.run_episode())
            steps += records[-1]["episode_length"]
        return records
