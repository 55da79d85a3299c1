"""The agent interface and the experience types every part of rlkit shares.

An agent is three pure functions over one pytree, in the manner of optax's
``GradientTransformation``::

    agent = rlkit.agents.ppo.make(config, spec)
    state = agent.init(key)                                    # AgentState pytree
    out = agent.act(state, obs, carry, key)                    # ActOutput
    state, metrics = agent.update(state, batch, key)           # learn from a batch

``update`` never steps an environment and never owns a buffer: it consumes a
batch of experience (a ``Trajectory`` for on-policy agents, a ``Transition``
batch for off-policy ones), so the same agent runs in the jitted device loop and
in a host loop that feeds Reverb.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Protocol

import jax

PyTree = Any
AgentState = PyTree
Carry = PyTree  # recurrent actor state; () for feedforward agents
Metrics = dict[str, jax.Array]


class EnvSpec(NamedTuple):
    """What an agent needs to know about an environment.

    Attributes:
      observation_shape: shape of one (flattened) observation.
      action_kind: "discrete" or "continuous".
      num_actions: number of discrete actions, or the size of a continuous action.
      action_low: lower bound of a continuous action (None for discrete).
      action_high: upper bound of a continuous action (None for discrete).
    """

    observation_shape: tuple[int, ...]
    action_kind: Literal["discrete", "continuous"]
    num_actions: int
    action_low: Any = None
    action_high: Any = None


class ActOutput(NamedTuple):
    """What ``act`` returns for a batch of observations.

    Attributes:
      action: one action per observation.
      carry: the next recurrent state (``()`` for feedforward agents).
      extras: per-observation arrays the update needs later, e.g. PPO's
        ``log_prob`` and ``value``; stored in ``Trajectory.extras``.
    """

    action: jax.Array
    carry: Carry = ()
    extras: dict[str, jax.Array] = {}


class Transition(NamedTuple):
    """One environment step, as off-policy agents learn from it.

    All fields have a leading batch axis when batched.

    Attributes:
      obs_tm1: observation the action was taken in.
      action_tm1: the action taken.
      reward_t: reward received for it.
      discount_t: 0 where the episode terminated (no bootstrap), 1 otherwise,
        including at a time-limit truncation; an n-step transition folds
        ``gamma ** n`` in here (see ``rlkit.replay.n_step_transition``).
      obs_t: the next observation; at the end of an episode the *final*
        observation, never the reset one, so truncation bootstraps correctly.
      last_t: True where the episode ended at this step (terminated or truncated);
        n-step returns never reach across it.
    """

    obs_tm1: jax.Array
    action_tm1: jax.Array
    reward_t: jax.Array
    discount_t: jax.Array
    obs_t: jax.Array
    last_t: jax.Array


class Trajectory(NamedTuple):
    """A rollout with a leading time axis ``[T, num_envs, ...]``.

    Attributes:
      obs: observation each action was taken in.
      action: the action taken.
      reward: reward for the action.
      terminated: the episode reached a terminal state (do not bootstrap).
      truncated: the episode hit its time limit (bootstrap from ``next_obs``).
      next_obs: the observation that followed each action; at episode ends the
        final observation (before auto-reset).
      extras: what ``act`` returned in ``ActOutput.extras``.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    extras: dict[str, jax.Array]


class ExperienceSpec(NamedTuple):
    """How the loop feeds an agent's ``update``; each agent module derives it from its config.

    Attributes:
      kind: "rollout" (on-policy: the fresh ``Trajectory`` goes straight to
        ``update``) or "transitions" (off-policy: a replay buffer of
        ``Transition`` and sampled batches).
      num_envs: environments stepped in parallel.
      rollout_length: environment steps per env between updates.
      batch_size: transitions per update batch (off-policy).
      buffer_size: replay capacity in transitions (off-policy).
      min_size: transitions collected before the first update (off-policy).
      updates_per_rollout: updates after each rollout (the replay ratio).
      n_step: length of the n-step return the replay assembles.
      gamma: discount used to fold n-step returns.
    """

    kind: Literal["rollout", "transitions"]
    num_envs: int
    rollout_length: int
    batch_size: int = 0
    buffer_size: int = 0
    min_size: int = 0
    updates_per_rollout: int = 1
    n_step: int = 1
    gamma: float = 0.99

    @property
    def steps_per_update(self) -> int:
        """Environment steps (all envs) consumed per loop iteration."""
        return self.num_envs * self.rollout_length


class InitFn(Protocol):
    def __call__(self, key: jax.Array) -> AgentState: ...


class ActFn(Protocol):
    def __call__(
        self,
        state: AgentState,
        observation: jax.Array,
        carry: Carry,
        key: jax.Array,
        deterministic: bool = False,
    ) -> ActOutput: ...


class UpdateFn(Protocol):
    def __call__(
        self, state: AgentState, batch: PyTree, key: jax.Array
    ) -> tuple[AgentState, Metrics]: ...


class InitCarryFn(Protocol):
    def __call__(self, batch_size: int) -> Carry: ...


def no_carry(batch_size: int) -> Carry:
    """The recurrent state of a feedforward agent: nothing."""
    del batch_size
    return ()


class Agent(NamedTuple):
    """An agent: pure functions over one ``AgentState`` pytree.

    Attributes:
      init: ``(key) -> state``.
      act: ``(state, observation, carry, key, deterministic=False) -> ActOutput``;
        observations are batched over environments; ``deterministic`` is a Python
        bool (greedy / mean action for evaluation).
      update: ``(state, batch, key) -> (state, metrics)``; learns from a batch
        and returns scalar metrics.
      init_carry: ``(batch_size) -> carry``, the recurrent state at an episode
        start; feedforward agents keep the default, which returns ``()``.
    """

    init: InitFn
    act: ActFn
    update: UpdateFn
    init_carry: InitCarryFn = no_carry


class AgentFactory(Protocol):
    """What the loop needs of an agent module (or any object): ``make`` and ``experience``.

    ``rlkit.agents.ppo`` is one; so is ``SimpleNamespace(make=make, experience=experience)``
    in a baseline file. Float config fields may arrive as JAX tracers when a run vmaps over
    hyperparameters, so ``make`` must not branch in Python on them.
    """

    def make(self, config: Any, spec: EnvSpec, total_steps: int | None = None) -> Agent: ...

    def experience(self, config: Any) -> ExperienceSpec: ...
