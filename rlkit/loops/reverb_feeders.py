"""How the host loop stores and samples each experience kind through Reverb: one feeder per kind.

Reverb world only. ``REVERB_FEEDERS[spec.kind](spec, settings)`` gives the kind's example step, tables,
writer and sampler, and the sizes the loop's rate limiter and learning schedule need:

- "transitions": n-step ``Transition`` items (``TransitionWriter``, ``Sampler``), batches ``[B]``.
- "sequences": items of ``sequence_length`` steps starting ``sequence_period`` apart
  (``SequenceWriter``, ``SequenceSampler``), batches ``Trajectory [L, B]``.
- "rollout": a FIFO queue of ``rollout_length``-step rollouts that do not overlap; the learner takes
  ``num_envs`` of them per update, a ``Trajectory [rollout_length, num_envs]`` (``on_policy``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.loops.device import example_step as device_example_step
from rlkit.replay import reverb as reverb_replay
from rlkit.replay.device import importance_weights
from rlkit.types import Agent, AgentState, EnvSpec, ExperienceSpec, Trajectory, Transition, WeightedBatch


@dataclasses.dataclass(frozen=True)
class HostSettings:
    """How the host loop runs, beyond the agent's config.

    Attributes:
      push_every: learner iterations between the actor's state refreshes (1: act with the newest).
      samples_per_insert: the table's ratio; default the device loop's replay ratio; 0 keeps no ratio
        (inserts never block: for ``train(learn=False)`` beyond ``min_size``, e.g. benchmarks).
      flush_every: items the writer leaves unconfirmed at most.
      timeout_s: how long a sample, a flush or a priority update may wait for the server.
      max_in_flight: samples the sampler prefetches (default twice the batch's items).
      prefetch: sample the learner's next batch while its update computes (the batch then lacks the
        items of the next ``steps_per_iteration`` steps; the table's limiter allows for it). Replay kinds only.
      num_envs: host environments the actor steps side by side, acting for all of them in one jitted
        call (seeded ``seed``, ``seed + 1``, ...). Environment steps count all of them.
      transitions_per_item: transitions packed into each Reverb item (``make_tables``); must divide
        ``batch_size``. With ``num_envs`` of them, one item holds one step of every environment.
        Experience kind "transitions" only.
    """

    push_every: int = 1
    samples_per_insert: float | None = None
    flush_every: int = 16
    timeout_s: float = 30.0
    max_in_flight: int | None = None
    prefetch: bool = True
    num_envs: int = 1
    transitions_per_item: int = 1

    def __post_init__(self):
        for name in ("num_envs", "transitions_per_item"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.push_every < 1:
            raise ValueError(f"push_every must be >= 1, got {self.push_every}")
        if self.samples_per_insert is not None and self.samples_per_insert < 0:
            raise ValueError(f"samples_per_insert must be >= 0, got {self.samples_per_insert}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


def example_step(agent: Agent, agent_state: AgentState, spec: EnvSpec) -> Trajectory:
    """One unbatched ``Trajectory`` step of zeros (numpy) with the dtypes and shapes the actor writes,
    ``extras`` shaped like ``act``'s."""
    return jax.tree.map(np.asarray, device_example_step(agent, agent_state, spec))


def example_transition(agent: Agent, agent_state: AgentState, spec: EnvSpec) -> Transition:
    """One unbatched ``Transition`` of zeros with the dtypes and shapes the actor writes, ``extras`` included."""
    step = example_step(agent, agent_state, spec)
    return Transition(
        obs_tm1=step.obs, action_tm1=step.action, reward_t=np.float32(0), discount_t=np.float32(0),
        obs_t=step.next_obs, last_t=np.bool_(False), extras=step.extras,
    )


class TransitionFeeder:
    """n-step transitions, ``transitions_per_item`` (K) to a Reverb item; batches ``Transition [B]``.

    Attributes the loop reads: ``batch_axes`` (leading axes of an update batch), ``items_per_batch``,
    ``entries_per_item`` (batch entries in one item), ``steps_per_item`` (environment steps per item
    written), ``held_steps`` (steps of an environment a writer holds before their item), ``min_items``
    (items in the table when learning starts), ``max_in_flight`` (items the sampler prefetches),
    ``prioritized``, ``on_policy``.
    """

    on_policy = False

    def __init__(self, spec: ExperienceSpec, settings: HostSettings):
        self.spec, self.settings = spec, settings
        self.entries_per_item = reverb_replay.check_transitions_per_item(spec, settings.transitions_per_item)
        self.steps_per_item = self.entries_per_item
        self.batch_axes = (spec.batch_size,)
        self.items_per_batch = spec.batch_size // self.entries_per_item
        self.held_steps = spec.n_step
        self.min_items = max(1, -(-spec.min_size // self.entries_per_item))

    def example(self, agent: Agent, agent_state: AgentState, env_spec: EnvSpec) -> Any:
        return example_transition(agent, agent_state, env_spec)

    def tables(self, example: Any, samples_per_insert: float, error_buffer: float) -> list:
        return reverb_replay.make_tables(self.spec, example, samples_per_insert=samples_per_insert,
                                         error_buffer=error_buffer, transitions_per_item=self.entries_per_item)

    def writer(self, client, example: Any) -> reverb_replay.ItemWriter:
        return reverb_replay.TransitionWriter(
            client, self.spec, flush_every=self.settings.flush_every, timeout_ms=int(1000 * self.settings.timeout_s),
            example=example, transitions_per_item=self.entries_per_item,
        )

    def sampler(self, client, example: Any) -> reverb_replay.Sampler:
        return reverb_replay.Sampler(
            client, "replay", self.spec.batch_size, example, timeout_s=self.settings.timeout_s,
            max_in_flight=self.max_in_flight, transitions_per_item=self.entries_per_item,
        )

    def item_priorities(self, priorities: np.ndarray) -> np.ndarray:
        """Per-entry priorities ``[B]`` -> one per item: the largest of the item's entries."""
        return np.asarray(priorities, np.float64).reshape(self.items_per_batch, -1).max(axis=1)

    @property
    def prioritized(self) -> bool:
        return self.spec.prioritized and not self.on_policy

    @property
    def max_in_flight(self) -> int:
        if self.on_policy:
            return self.items_per_batch
        return self.settings.max_in_flight or 2 * self.items_per_batch

    def error_buffer(self, samples_per_insert: float) -> float:
        """The rate limiter's slack for the interleaved loop, in items: the first update waits for a whole
        iteration (of every environment), the writer holds back each environment's last steps, unconfirmed
        items, the sampler prefetches."""
        spec, settings = self.spec, self.settings
        slack_items = (
            (max(spec.steps_per_iteration, settings.num_envs) + settings.num_envs * self.held_steps)
            / self.steps_per_item + 1 + settings.flush_every
        )
        return 2.0 * (samples_per_insert * slack_items + self.max_in_flight + self.items_per_batch)

    def zero_batch(self, example: Any) -> Any:
        """An update batch of zeros (``batch_axes`` then ``example``'s shapes), to compile with."""
        return jax.tree.map(lambda x: np.zeros(self.batch_axes + np.shape(x), np.asarray(x).dtype), example)

    def learner_update(self, agent: Agent):
        """The jitted learner step ``(state, batch, probabilities [items], key) -> (state, metrics, priorities,
        key)``: a ``WeightedBatch`` with weights ``(min P / P) ** importance_exponent`` when prioritized, and
        ``metrics["priorities"]`` (None if absent) taken out of the metrics."""
        prioritized, exponent, per_item = self.prioritized, self.spec.importance_exponent, self.entries_per_item

        def update(state, experience, probabilities, key):  # the key splits inside the jit (a split outside
            key, update_key = jax.random.split(key)         # costs ~1 ms on a CPU); so do the weights
            batch = experience
            if prioritized:
                batch = WeightedBatch(experience, jnp.repeat(importance_weights(probabilities, exponent), per_item))
            state, metrics = agent.update(state, batch, update_key)
            priorities = metrics.pop("priorities", None)
            return state, metrics, priorities, key

        return jax.jit(update)


class SequenceFeeder(TransitionFeeder):
    """Sequences of ``sequence_length`` steps starting ``sequence_period`` apart; batches ``Trajectory [L, B]``."""

    def __init__(self, spec: ExperienceSpec, settings: HostSettings):
        if settings.transitions_per_item != 1:
            raise ValueError(f"transitions_per_item applies to 'transitions' experience only; this agent's is "
                             f"{spec.kind!r} (leave it at 1)")
        self.spec, self.settings = spec, settings
        self.length, self.period, batch = self._shape(spec)
        self.entries_per_item, self.steps_per_item = 1, self.period
        self.batch_axes = (self.length, batch)
        self.items_per_batch = batch
        self.held_steps = self.length
        self.min_items = self._min_items(spec)

    def _shape(self, spec: ExperienceSpec) -> tuple[int, int, int]:
        reverb_replay.check_sequences(spec)
        return spec.sequence_length, spec.sequence_period, spec.batch_size

    def _min_items(self, spec: ExperienceSpec) -> int:
        return reverb_replay.min_sequences(spec)

    def example(self, agent: Agent, agent_state: AgentState, env_spec: EnvSpec) -> Any:
        return example_step(agent, agent_state, env_spec)

    def tables(self, example: Any, samples_per_insert: float, error_buffer: float) -> list:
        return reverb_replay.make_tables(self.spec, example, samples_per_insert=samples_per_insert,
                                         error_buffer=error_buffer)

    def writer(self, client, example: Any) -> reverb_replay.ItemWriter:
        return reverb_replay.SequenceWriter(
            client, self.length, self.period, flush_every=self.settings.flush_every,
            timeout_ms=int(1000 * self.settings.timeout_s), example=example,
        )

    def sampler(self, client, example: Any) -> reverb_replay.Sampler:
        return reverb_replay.SequenceSampler(
            client, "replay", self.items_per_batch, example, self.length, timeout_s=self.settings.timeout_s,
            max_in_flight=self.max_in_flight,
        )


class RolloutFeeder(SequenceFeeder):
    """A FIFO queue of rollouts of ``rollout_length`` steps (no overlap); ``num_envs`` of them to an update.

    The queue holds ``2 * (num_envs + host envs)`` rollouts, more than the loop ever leaves in it.
    """

    on_policy = True

    def _shape(self, spec: ExperienceSpec) -> tuple[int, int, int]:
        if spec.rollout_length < 1 or spec.num_envs < 1:
            raise ValueError(f"rollout_length and num_envs must be >= 1, got {spec.rollout_length} and {spec.num_envs}")
        return spec.rollout_length, spec.rollout_length, spec.num_envs

    def _min_items(self, spec: ExperienceSpec) -> int:
        return spec.num_envs

    def tables(self, example: Any, samples_per_insert: float, error_buffer: float) -> list:
        del samples_per_insert, error_buffer  # a queue: sampling takes items out, inserting waits for room
        queue_size = 2 * (self.spec.num_envs + self.settings.num_envs)
        return reverb_replay.make_tables(self.spec, example, queue_size=queue_size)


REVERB_FEEDERS = {"transitions": TransitionFeeder, "sequences": SequenceFeeder, "rollout": RolloutFeeder}
