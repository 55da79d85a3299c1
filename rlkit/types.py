"""The agent interface and the experience types every part of rlkit shares.

An agent is pure functions over one pytree, in the manner of optax's
``GradientTransformation`` (``init``, ``act``, ``update``, and ``init_carry`` for
the recurrent state at an episode start)::

    agent = rlkit.agents.ppo.make(config, spec)
    state = agent.init(key)                                    # AgentState pytree
    out = agent.act(state, obs, carry, key)                    # ActOutput
    state, metrics = agent.update(state, batch, key)           # learn from a batch

``update`` never steps an environment and never owns a buffer: it consumes a
batch of experience (a ``Trajectory`` for on-policy agents and for sequence
replay, a ``Transition`` batch for off-policy ones; either wrapped in a
``WeightedBatch`` when the replay is prioritized), so the same agent runs in the
jitted device loop and in a host loop that feeds Reverb. Whatever ``act`` returns
in ``extras`` is stored with the step by every store and comes back in batches.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, Protocol

import jax
import jax.numpy as jnp

PyTree = Any
AgentState = PyTree
Carry = PyTree  # recurrent actor state; () for feedforward agents
Metrics = dict[str, jax.Array]


class EnvSpec(NamedTuple):
    """What an agent needs to know about an environment.

    Attributes:
      observation_shape: shape of one observation (an image keeps ``[height, width, channels]``).
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
      extras: what ``act`` returned for ``action_tm1`` (``ActOutput.extras``).
    """

    obs_tm1: jax.Array
    action_tm1: jax.Array
    reward_t: jax.Array
    discount_t: jax.Array
    obs_t: jax.Array
    last_t: jax.Array
    extras: dict[str, Any] = {}


class Trajectory(NamedTuple):
    """Consecutive steps with a leading time axis ``[T, batch, ...]``: a rollout or sampled sequences.

    Episode ends inside it are marked by ``terminated | truncated``; the step after one
    starts a new episode (and a recurrent carry restarts there).

    Attributes:
      obs: observation each action was taken in.
      action: the action taken.
      reward: reward for the action.
      terminated: the episode reached a terminal state (do not bootstrap).
      truncated: the episode hit its time limit (bootstrap from ``next_obs``).
      next_obs: the observation that followed each action; at episode ends the
        final observation (before auto-reset).
      extras: what ``act`` returned in ``ActOutput.extras`` (a recurrent agent's
        input carry, behaviour logits, values).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    extras: dict[str, jax.Array]


def episode_starts(trajectory: Trajectory) -> jax.Array:
    """``[T, B]``: True where a step starts a new episode inside ``trajectory`` (after a marked end).

    Never at step 0: whatever came before the first step is the stored carry's business.
    """
    done = trajectory.terminated | trajectory.truncated
    return jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]])


Kind = Literal["rollout", "transitions", "sequences"]
KINDS: tuple[str, ...] = ("rollout", "transitions", "sequences")


class ExperienceSpec(NamedTuple):
    """How the loop feeds an agent's ``update``; each agent module derives it from its config.

    Attributes:
      kind: "rollout" (on-policy: the fresh ``Trajectory [rollout_length, num_envs]``
        goes straight to ``update``), "transitions" (a replay of ``Transition`` and
        sampled batches ``[batch_size]``) or "sequences" (a replay of steps sampled as
        ``Trajectory [sequence_length, batch_size]``, starts ``sequence_period`` apart).
      num_envs: environments stepped in parallel.
      rollout_length: environment steps per env in each loop iteration (then learning).
      batch_size: transitions or sequences per update batch (replay kinds).
      buffer_size: replay capacity in steps (replay kinds).
      min_size: steps collected before the first update (replay kinds).
      updates_per_rollout: ``Agent.update`` calls after each rollout (the replay ratio).
      n_step: length of the n-step return the transition replay assembles.
      gamma: discount used to fold n-step returns.
      sequence_length: steps per sampled sequence ("sequences").
      sequence_period: steps between the starts of two sequences ("sequences").
      prioritized: sample proportionally to priorities (Schaul et al., 2016); the
        batch arrives as ``WeightedBatch`` and ``update`` may return
        ``metrics["priorities"] [batch_size]``, which the loop writes back.
      priority_exponent: alpha: items are drawn with probability ``p**alpha / sum``.
      importance_exponent: beta: importance weights ``(min P / P) ** beta`` in a batch.
      needs_dataset: the agent learns only from a recorded dataset (behaviour cloning, IQL);
        ``make_trainer`` refuses to run it without one.
      data_parallel: one run may be split over devices (``make_trainer(..., data_parallel=N)``):
        the agent averages its gradients and whole-batch statistics with ``rlkit.parallel`` and
        its config sizes the run by ``num_envs``, which the loop divides among the devices.
    """

    kind: Kind
    num_envs: int
    rollout_length: int
    batch_size: int = 0
    buffer_size: int = 0
    min_size: int = 0
    updates_per_rollout: int = 1
    n_step: int = 1
    gamma: float = 0.99
    sequence_length: int = 0
    sequence_period: int = 0
    prioritized: bool = False
    priority_exponent: float = 0.6
    importance_exponent: float = 0.4
    needs_dataset: bool = False
    data_parallel: bool = False

    @property
    def steps_per_iteration(self) -> int:
        """Environment steps (all envs) consumed per loop iteration."""
        return self.num_envs * self.rollout_length


class WeightedBatch(NamedTuple):
    """A batch from a prioritized replay: the experience and one importance weight per item.

    Attributes:
      experience: a ``Transition [B]`` or a ``Trajectory [L, B]``.
      importance_weights: ``[B]``, at most 1, correcting the bias of prioritized sampling.
    """

    experience: Any
    importance_weights: jax.Array


def split_weights(batch: Any) -> tuple[Any, jax.Array | None]:
    """``(experience, importance_weights)`` of a sampled batch; the weights are None for uniform replay."""
    if isinstance(batch, WeightedBatch):
        return batch.experience, batch.importance_weights
    return batch, None


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """``mean(weights * values)`` over the batch axis (the plain mean when ``weights`` is None)."""
    if weights is None:
        return jnp.mean(values)
    return jnp.mean(weights.reshape(weights.shape + (1,) * (values.ndim - 1)) * values)


def epsilon_greedy(key: jax.Array, greedy: jax.Array, epsilon: jax.Array, num_actions: int) -> jax.Array:
    """``greedy`` actions, each replaced by a uniform random one with probability ``epsilon`` (a scalar or one
    per action). rlax has the same in ``rlax.epsilon_greedy``, through distrax, which value agents need not load.
    """
    explore_key, action_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, jax.random.randint(action_key, greedy.shape, 0, num_actions), greedy)


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
    """An agent: four pure functions over one ``AgentState`` pytree.

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
