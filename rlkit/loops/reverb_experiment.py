"""Any agent through Reverb in one process: an in-process server, a host actor and a learner.

Reverb world only (imports ``rlkit.replay.reverb``)::

    experiment = HostExperiment(dqn, config, "gym:CartPole-v1", seed=0, total_steps=100_000)
    metrics = experiment.train(10_000)          # environment steps; the chunk's metrics
    returns = experiment.evaluate(32)           # greedy returns of fresh evaluation episodes
    experiment.close()

    result = train_with_reverb(dqn, config, "gym:CartPole-v1", total_steps=100_000, seed=0)

Any agent module (or ``SimpleNamespace(make=..., experience=...)``) runs here, on any dm_env
environment: the agent comes from ``make(config, environment_spec(env), total_steps)``, exactly as the
device loop builds it. Its ``experience(config).kind`` picks the feeder (``REVERB_FEEDERS``): the
example step, the table, the writer and the sampler (transitions, sequences, or a queue of rollouts).

The actor steps ``HostSettings.num_envs`` environments side by side (one jitted ``act`` for all of
them) and writes their steps, with what ``act`` returned in ``extras``, to a Reverb table. The two
sides are interleaved in one thread as the device loop interleaves them: for the replay kinds, every
``spec.steps_per_iteration`` environment steps, once ``spec.min_size`` steps' items are in, the learner
samples ``spec.updates_per_rollout`` batches and runs the jitted ``agent.update`` on each, and the
actor acts with the new state from its next step (every ``push_every`` learner iterations). The
table's ``SampleToInsertRatio`` limiter holds the same replay ratio as the device loop, so a learner
that falls behind (or runs ahead) blocks instead of silently changing the ratio; with the
interleaving it never has to. With ``spec.prioritized`` the batch comes as ``WeightedBatch`` and the
``metrics["priorities"]`` an update returns are written back to the table. For "rollout" (on-policy
agents) the learner updates whenever ``spec.num_envs`` rollouts are in the queue.

Randomness is seeded (environment, initial state, action and update keys, all of XLA's "rbg"
generator), but Reverb's sampling is not seedable, so two runs differ in which items each batch holds.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import dm_env
import jax
import numpy as np

from rlkit.envs import environment_spec, make_host
from rlkit.loops.environment_loop import KEY_IMPL, Actor, evaluate_actor
from rlkit.loops.reverb_feeders import REVERB_FEEDERS, HostSettings, example_step, example_transition
from rlkit.replay import reverb as reverb_replay
from rlkit.types import AgentFactory, Transition

__all__ = ["HostExperiment", "HostSettings", "env_factory", "example_step", "example_transition", "train_with_reverb"]

reverb = reverb_replay.reverb

EnvFactory = Callable[[int], dm_env.Environment]  # seed -> a fresh environment


def env_factory(env: str | EnvFactory) -> EnvFactory:
    """``make_host``'s ids (``gym:...``, ``gymnax:...``, ``dm_control:...``) or a ``seed -> env`` callable."""
    if isinstance(env, str):
        return lambda seed: make_host(env, seed=seed)
    return env


class HostExperiment:
    """One seed of an agent on a host environment, learning through an in-process Reverb server.

    Args:
      agent_module: ``make`` and ``experience`` (an ``rlkit.agents`` module, or any ``AgentFactory``).
      config: the agent's config.
      env: a host environment id for ``make_host``, or a ``seed -> dm_env.Environment`` callable.
      seed: seeds the environment, the initial agent state, and the action and update keys.
      total_steps: the run's length, for the agent's schedules (``make``'s ``total_steps``).
      settings: the host loop's ``HostSettings``.
      replay_checkpoint_dir: if given, the server checkpoints its tables there
        (``checkpoint_replay``) and, when it holds a checkpoint, starts from the latest one.
      eval_seed: evaluation environments and keys are seeded from it (default ``seed + 10_000``).

    On-policy agents (experience "rollout", e.g. PPO) learn from ``spec.num_envs`` rollouts of
    ``rollout_length`` steps, taken from the queue as soon as that many are in. With fewer host
    environments than ``num_envs`` the rollouts of one update come one after another from the same
    environments, so most were collected by an older policy than the newest: slightly stale data,
    which PPO's clipped ratio tolerates (use ``num_envs`` host environments to learn as on the device).
    """

    def __init__(
        self, agent_module: AgentFactory, config: Any, env: str | EnvFactory, seed: int = 0,
        total_steps: int | None = None, settings: HostSettings = HostSettings(),
        replay_checkpoint_dir: str | None = None, eval_seed: int | None = None,
    ):
        self.spec = spec = agent_module.experience(config)
        if spec.needs_dataset:
            raise ValueError("this agent learns only from a dataset, on the device backend: rlkit train --dataset D")
        if spec.kind not in REVERB_FEEDERS:
            raise ValueError(f"experience kind: {spec.kind!r} is not one of {list(REVERB_FEEDERS)}")
        self.feeder = feeder = REVERB_FEEDERS[spec.kind](spec, settings)
        self.config, self.settings, self.seed = config, settings, seed
        self.make_env = env_factory(env)
        self.envs = [self.make_env(seed + i) for i in range(settings.num_envs)]
        self.env = self.envs[0]
        self.env_spec = environment_spec(self.env)
        self.agent = agent_module.make(config, self.env_spec, total_steps)
        init_key, actor_key, self.learner_key = jax.random.split(jax.random.key(seed, impl=KEY_IMPL), 3)
        self.state = self.agent.init(init_key)
        self.example = feeder.example(self.agent, self.state, self.env_spec)
        self.prioritized = feeder.prioritized
        self.samples_per_insert = (
            reverb_replay.default_samples_per_insert(spec) if settings.samples_per_insert is None
            else settings.samples_per_insert
        )
        tables = feeder.tables(self.example, self.samples_per_insert, feeder.error_buffer(self.samples_per_insert))
        checkpointer = None
        if replay_checkpoint_dir is not None:
            checkpointer = reverb.checkpointers.DefaultCheckpointer(str(replay_checkpoint_dir))
        self.server = reverb.Server(tables, port=None, checkpointer=checkpointer)
        self.address = f"localhost:{self.server.port}"  # loopback only
        self.client = reverb.Client(self.address)
        self.writer = feeder.writer(self.client, self.example)
        self.sampler = feeder.sampler(self.client, self.example)
        self.actor = Actor(self.agent, self.state, adder=self.writer, key=actor_key)
        self._update = feeder.learner_update(self.agent)
        self._eval_actor: Actor | None = None
        self._next_batch: tuple | None = None  # (keys, probabilities, batch) prefetched for the next update
        self._priorities: jax.Array | None = None  # the last update's metrics["priorities"], not yet written
        self.eval_seed = seed + 10_000 if eval_seed is None else eval_seed
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.evaluations = 0
        self.learning = False
        self._items_taken = 0  # rollouts the learner took from the queue (on-policy)
        self._next_learn = self.spec.steps_per_iteration  # env_steps at which the learner next runs
        self._observations: np.ndarray | None = None  # what each environment acts on next
        # One group acts alone; two let XLA compute one group's actions while Python steps the other's.
        self._groups = [np.asarray(g) for g in np.array_split(np.arange(settings.num_envs), min(2, settings.num_envs))]
        self._pending: dict[int, tuple] = {}  # (actions, extras) dispatched for each group's next step
        self._first = np.ones(settings.num_envs, bool)
        self._episode_return = np.zeros(settings.num_envs)
        self._episode_length = np.zeros(settings.num_envs, np.int64)

    # -- compiling ------------------------------------------------------------------------------

    def compile(self) -> float:
        """Compile the actor's ``act`` and the learner's ``update`` now; returns the seconds it took."""
        start = time.perf_counter()
        for size in sorted({len(group) for group in self._groups}):
            self.actor.compile(np.zeros(self.env_spec.observation_shape, np.float32), num_envs=size)
        probabilities = np.ones(self.feeder.items_per_batch, np.float32)
        jax.block_until_ready(self._update(self.state, self.feeder.zero_batch(self.example), probabilities,
                                           self.learner_key))
        return time.perf_counter() - start

    # -- training -------------------------------------------------------------------------------

    def train(self, num_steps: int, learn: bool = True) -> dict[str, float]:
        """Run ``num_steps`` environment steps (all environments together, rounded up to whole steps of
        every environment), learning as they come; the steps' metrics.

        Returns the means over this call of ``episode_return`` and ``episode_length`` (episodes that
        ended in it; NaN if none) and of the agent's update metrics (absent before learning starts), with
        ``episodes``, ``updates`` and ``env_steps`` (totals so far) and ``steps_per_second``. With
        ``learn=False`` the learner is paused: the actor only fills the table (whose ratio limiter then
        blocks inserts a little past ``min_size``, unless ``samples_per_insert=0``; a rollout queue
        blocks them once full).
        """
        spec, actor, envs, writer = self.spec, self.actor, self.envs, self.writer
        num_envs = len(envs)
        returns, lengths, metrics_list = [], [], []
        start = time.perf_counter()
        if self._observations is None:  # a fresh start (or a restore): every environment starts an episode
            self._observations = np.stack([env.reset().observation for env in envs])
            self._first = np.ones(num_envs, bool)
            self._episode_return = np.zeros(num_envs)
            self._episode_length = np.zeros(num_envs, np.int64)
            self._pending = {}
        observations, first = self._observations, self._first
        # With two groups of environments, XLA computes one group's actions while Python steps the other.
        for g, group in enumerate(self._groups):
            if g not in self._pending:
                self._pending[g] = actor.dispatch_actions(observations[group], first[group], g)
        steps_done = 0
        while steps_done < num_steps:
            for g, group in enumerate(self._groups):
                actions, extras = self._pending.pop(g)
                actions, extras = np.asarray(actions), jax.tree.map(np.asarray, extras)
                size = len(group)
                next_observations = np.empty((size, *observations.shape[1:]), observations.dtype)
                rewards = np.empty(size, np.float32)
                discounts = np.empty(size, np.float32)
                ended = []
                for j in range(size):
                    timestep = envs[group[j]].step(actions[j])
                    next_observations[j] = timestep.observation
                    rewards[j] = timestep.reward
                    discounts[j] = timestep.discount
                    if timestep.step_type == dm_env.StepType.LAST:
                        ended.append(j)
                last = np.zeros(size, bool)
                last[ended] = True
                # obs_t is the observation each action led to: the final one where an episode ended.
                writer.add_batch(
                    Transition(observations[group], actions, rewards, discounts, next_observations, last, extras),
                    group,
                )
                self._episode_return[group] += rewards
                self._episode_length[group] += 1
                for j in ended:
                    i = group[j]
                    returns.append(float(self._episode_return[i]))
                    lengths.append(int(self._episode_length[i]))
                    self._episode_return[i], self._episode_length[i] = 0.0, 0
                    next_observations[j] = envs[i].reset().observation
                observations[group] = next_observations
                first[group] = last
                self.episodes += len(ended)
                self.env_steps += size
                steps_done += size
                if self.feeder.on_policy:
                    if learn:
                        metrics_list.extend(self._learn_from_queue())
                else:
                    while self.env_steps >= self._next_learn:  # every steps_per_iteration environment steps
                        if learn:
                            metrics_list.extend(self._learn())
                        self._next_learn += spec.steps_per_iteration
                self._pending[g] = actor.dispatch_actions(next_observations, last, g)
                if steps_done >= num_steps:
                    break
        self._observations, self._first = observations, first
        seconds = time.perf_counter() - start
        out = {"env_steps": float(self.env_steps)}
        out["episode_return"] = float(np.mean(returns)) if returns else float("nan")
        out["episode_length"] = float(np.mean(lengths)) if lengths else float("nan")
        out["episodes"] = float(len(returns))
        if metrics_list:
            values = jax.device_get(metrics_list)
            out.update({name: float(np.mean([m[name] for m in values])) for name in values[0]})
        out["updates"] = float(self.updates)
        out["steps_per_second"] = steps_done / max(seconds, 1e-9)
        return out

    def _learn(self) -> list[dict]:
        """One learner iteration: ``updates_per_rollout`` updates, if the table holds ``min_size`` steps' items."""
        if not self.learning:
            if self.writer.items_written < self.feeder.min_items:
                return []
            self.writer.flush()  # the limiter counts confirmed items only
            self.learning = True
        metrics = []
        for _ in range(self.spec.updates_per_rollout):
            drawn = self._next_batch if self._next_batch is not None else self.sampler.sample()
            metrics.append(self._update_on(drawn))
            if self.settings.prefetch:
                # The update runs on XLA's threads (dispatch is asynchronous); sample the next batch meanwhile.
                self._next_batch = self.sampler.sample()
            self._write_priorities(drawn[0])
        if (self.updates // self.spec.updates_per_rollout) % self.settings.push_every == 0:
            self.actor.update_state(self.state)
        return metrics

    def _learn_from_queue(self) -> list[dict]:
        """On-policy: ``updates_per_rollout`` updates on every ``num_envs`` rollouts the queue holds."""
        metrics = []
        while self.writer.items_written - self._items_taken >= self.feeder.items_per_batch:
            self.writer.flush()  # the rollouts must be in the queue before the sampler takes them
            self.learning = True
            drawn = self.sampler.sample()
            self._items_taken += self.feeder.items_per_batch
            for _ in range(self.spec.updates_per_rollout):
                metrics.append(self._update_on(drawn))
            if (self.updates // self.spec.updates_per_rollout) % self.settings.push_every == 0:
                self.actor.update_state(self.state)
        return metrics

    def _update_on(self, drawn: tuple) -> dict:
        """Dispatch one update on a sampled ``(keys, probabilities, batch)``; keeps its priorities for
        ``_write_priorities``; returns its metrics (without ``priorities``)."""
        _, probabilities, batch = drawn
        self.state, metrics, self._priorities, self.learner_key = self._update(
            self.state, batch, np.asarray(probabilities, np.float32), self.learner_key
        )
        self.updates += 1
        return metrics

    def _write_priorities(self, keys: np.ndarray) -> None:
        """Write the last update's ``metrics["priorities"]`` back to the sampled items (prioritized replay);
        new items then get the largest priority written so far."""
        priorities, self._priorities = self._priorities, None
        if priorities is None or not self.prioritized:
            return
        per_item = self.feeder.item_priorities(np.asarray(priorities))
        self.sampler.update_priorities(keys, per_item)
        self.writer.priority = max(self.writer.priority, float(per_item.max()))

    def learner_steps(self, num_updates: int) -> float:
        """``num_updates`` learner updates without acting (benchmarks); returns their seconds."""
        start = time.perf_counter()
        for _ in range(num_updates):
            drawn = self.sampler.sample()
            self._update_on(drawn)
            self._write_priorities(drawn[0])
        jax.block_until_ready(self.state)
        return time.perf_counter() - start

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, episodes: int, seed: int | None = None) -> np.ndarray:
        """Returns of ``episodes`` greedy episodes in a fresh environment seeded ``seed``.

        By default each call uses a new seed derived from ``eval_seed``, so evaluations of a run never
        repeat one another's episodes, and the same evaluation of the same state gives the same returns.
        """
        if seed is None:
            seed = self.eval_seed + 1000 * self.evaluations
        self.evaluations += 1
        if self._eval_actor is None:
            self._eval_actor = Actor(self.agent, self.state, deterministic=True)
        actor = self._eval_actor
        actor.update_state(self.state)
        return evaluate_actor(actor, self.make_env(seed), episodes, seed)

    # -- checkpoints ----------------------------------------------------------------------------

    def run_state(self) -> dict[str, Any]:
        """The run's JAX state: agent state and the action and update keys (for orbax)."""
        return {"agent_state": self.state, "actor_key": self.actor.key, "learner_key": self.learner_key}

    def counters(self) -> dict[str, Any]:
        """The run's host counters (JSON-able)."""
        return {
            "env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes,
            "evaluations": self.evaluations, "learning": self.learning, "insert_priority": self.writer.priority,
        }

    def restore(self, run_state: dict[str, Any], counters: dict[str, Any]) -> None:
        """Continue from ``run_state()`` and ``counters()`` of an earlier run (its replay comes from the server's
        checkpoint). The episode under way then was lost: the next step starts a new one."""
        self.state = run_state["agent_state"]
        self.actor.update_state(self.state)
        self.actor.key = run_state["actor_key"]
        self.learner_key = run_state["learner_key"]
        self.env_steps, self.updates = int(counters["env_steps"]), int(counters["updates"])
        self.episodes, self.evaluations = int(counters["episodes"]), int(counters["evaluations"])
        self.learning = bool(counters["learning"])
        self.writer.priority = float(counters.get("insert_priority", 1.0))
        if self.feeder.on_policy:  # the rollouts the checkpoint left in the queue are the learner's next ones
            self._items_taken = self.writer.items_written - self.table_size()
        # Fresh environments, seeded apart from the first ones, for the new episodes.
        reseed = self.seed + 7919 * (1 + self.env_steps)
        self.envs = [self.make_env((reseed + i) % (2**31 - 1)) for i in range(self.settings.num_envs)]
        self.env = self.envs[0]
        self._observations = None
        self._pending = {}
        self._next_batch = None
        self._next_learn = (self.env_steps // self.spec.steps_per_iteration + 1) * self.spec.steps_per_iteration
        self.writer.end_episode()

    def checkpoint_replay(self) -> str:
        """Flush the writer and checkpoint the server's tables; returns the checkpoint's path."""
        self.writer.flush()
        return self.client.checkpoint()

    def table_size(self) -> int:
        return int(self.client.server_info(timeout=int(self.settings.timeout_s))["replay"].current_size)

    def close(self) -> None:
        """Close the writer and stop the server."""
        if self.server is None:
            return
        try:
            self.writer.close()
        except reverb_replay.ReplayUnavailable:
            pass
        finally:
            server, self.server = self.server, None
            server.stop()
            del server  # released now, while the interpreter is whole (its __del__ returns the port)


def train_with_reverb(
    agent_module: AgentFactory,
    config: Any,
    env: str | EnvFactory = "gym:CartPole-v1",
    total_steps: int = 100_000,
    seed: int = 0,
    eval_every: int = 10_000,
    eval_episodes: int = 5,
    final_eval_episodes: int = 20,
    stop_at_return: float | None = None,
    settings: HostSettings = HostSettings(),
    log: Callable[[str], Any] | None = print,
) -> dict:
    """Train one seed through an in-process Reverb server, evaluating every ``eval_every`` steps.

    ``stop_at_return``: stop early after the first evaluation whose mean greedy return reaches it.
    Whether it stopped early or not, the run ends with a final greedy evaluation of
    ``final_eval_episodes`` fresh episodes (never seen by an earlier evaluation).

    Returns ``{"state", "evaluations": [(env_steps, mean_return)], "final_returns", "final_return",
    "env_steps", "updates", "compile_seconds", "seconds"}``.
    """
    experiment = HostExperiment(agent_module, config, env, seed=seed, total_steps=total_steps, settings=settings)
    try:
        compile_seconds = experiment.compile()
        start = time.perf_counter()
        evaluations: list[tuple[int, float]] = []
        while experiment.env_steps < total_steps:
            metrics = experiment.train(min(eval_every, total_steps - experiment.env_steps))
            mean_return = float(np.mean(experiment.evaluate(eval_episodes)))
            evaluations.append((experiment.env_steps, mean_return))
            if log is not None:
                log(f"host {experiment.env_steps} steps, {experiment.updates} updates: greedy return "
                    f"{mean_return:.1f}, training return {metrics['episode_return']:.1f}, "
                    f"{metrics['steps_per_second']:.0f} steps/s, {time.perf_counter() - start:.0f} s")
            if stop_at_return is not None and mean_return >= stop_at_return:
                break
        final_returns = experiment.evaluate(final_eval_episodes)
        if log is not None:
            log(f"host final greedy return {final_returns.mean():.1f} over {final_eval_episodes} episodes")
        return {
            "state": experiment.state, "evaluations": evaluations, "final_returns": final_returns,
            "final_return": float(final_returns.mean()), "env_steps": experiment.env_steps,
            "updates": experiment.updates, "compile_seconds": compile_seconds,
            "seconds": time.perf_counter() - start,
        }
    finally:
        experiment.close()
