"""Off-policy agents through Reverb in one process: an in-process server, a host actor and a learner.

Reverb world only (imports ``rlkit.replay.reverb``)::

    experiment = HostExperiment(dqn, config, "gym:CartPole-v1", seed=0, total_steps=100_000)
    metrics = experiment.train(10_000)          # environment steps; the chunk's metrics
    returns = experiment.evaluate(32)           # greedy returns of fresh evaluation episodes
    experiment.close()

    result = train_with_reverb(dqn, config, "gym:CartPole-v1", total_steps=100_000, seed=0)

Any agent module (or ``SimpleNamespace(make=..., experience=...)``) whose ``experience(config)`` is
``kind="transitions"`` runs here, on any dm_env environment: the agent comes from
``make(config, environment_spec(env), total_steps)``, exactly as the device loop builds it.

The actor steps ``HostSettings.num_envs`` environments side by side (one jitted ``act`` for all of
them) and writes their n-step transitions to a Reverb table with ``TransitionWriter``, packing
``HostSettings.transitions_per_item`` of them into each item. The two sides are
interleaved in one thread as the device loop interleaves them: every ``spec.steps_per_update``
environment steps, once ``spec.min_size`` items are in, the learner samples
``spec.updates_per_rollout`` batches and runs the jitted ``agent.update`` on each, and the actor
acts with the new state from its next step (every ``push_every`` learner iterations). The table's
``SampleToInsertRatio`` limiter holds the same replay ratio, ``batch_size * updates_per_rollout /
steps_per_update`` samples per insert, so a learner that falls behind (or runs ahead) blocks
instead of silently changing the ratio; with the interleaving it never has to.

Randomness is seeded (environment, initial state, action and update keys, all of XLA's "rbg"
generator), but Reverb's uniform sampling is not seedable, so two runs differ in which transitions
each batch holds.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import dm_env
import jax
import jax.numpy as jnp
import numpy as np

from rlkit.envs import environment_spec, make_host
from rlkit.loops.host import KEY_IMPL, Actor, EnvironmentLoop
from rlkit.replay import reverb as reverb_replay
from rlkit.types import AgentFactory, Transition

reverb = reverb_replay.reverb

EnvFactory = Callable[[int], dm_env.Environment]  # seed -> a fresh environment


@dataclasses.dataclass(frozen=True)
class HostSettings:
    """How the host loop runs, beyond the agent's config.

    Attributes:
      push_every: learner iterations between the actor's state refreshes (1: act with the newest).
      samples_per_insert: the table's ratio; default the device loop's replay ratio; 0 keeps no ratio
        (inserts never block: for ``train(learn=False)`` beyond ``min_size``, e.g. benchmarks).
      flush_every: items the writer leaves unconfirmed at most.
      timeout_s: how long a sample, a flush or a priority update may wait for the server.
      max_in_flight: samples the sampler prefetches (default twice the batch size).
      prefetch: sample the learner's next batch while its update computes (the batch then lacks the
        transitions of the next ``steps_per_update`` steps; the table's limiter allows for it).
      num_envs: host environments the actor steps side by side, acting for all of them in one jitted
        call (seeded ``seed``, ``seed + 1``, ...). Environment steps count all of them.
      transitions_per_item: transitions packed into each Reverb item (``make_tables``); must divide
        ``batch_size``. With ``num_envs`` of them, one item holds one step of every environment.
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


def env_factory(env: str | EnvFactory) -> EnvFactory:
    """``make_host``'s ids (``gym:...``, ``gymnax:...``, ``dm_control:...``) or a ``seed -> env`` callable."""
    if isinstance(env, str):
        return lambda seed: make_host(env, seed=seed)
    return env


def example_transition(agent, agent_state, spec) -> Transition:
    """One unbatched ``Transition`` of zeros with the dtypes and shapes the actor writes."""
    obs = np.zeros(spec.observation_shape, np.float32)
    action = jax.eval_shape(
        lambda: agent.act(agent_state, jnp.asarray(obs)[None], agent.init_carry(1), jax.random.key(0)).action
    )
    return Transition(
        obs_tm1=obs, action_tm1=np.zeros(action.shape[1:], action.dtype), reward_t=np.float32(0),
        discount_t=np.float32(0), obs_t=obs, last_t=np.bool_(False),
    )


class HostExperiment:
    """One seed of an off-policy agent on a host environment, learning through an in-process Reverb server.

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
    """

    def __init__(
        self, agent_module: AgentFactory, config: Any, env: str | EnvFactory, seed: int = 0,
        total_steps: int | None = None, settings: HostSettings = HostSettings(),
        replay_checkpoint_dir: str | None = None, eval_seed: int | None = None,
    ):
        self.spec = agent_module.experience(config)
        if self.spec.kind != "transitions":
            raise ValueError(
                f"the host (Reverb) loop runs off-policy agents, whose experience is 'transitions'; "
                f"this agent's is {self.spec.kind!r} (train it with the device backend)"
            )
        self.config, self.settings, self.seed = config, settings, seed
        per_item = reverb_replay.check_transitions_per_item(self.spec, settings.transitions_per_item)
        self.make_env = env_factory(env)
        self.envs = [self.make_env(seed + i) for i in range(settings.num_envs)]
        self.env = self.envs[0]
        self.env_spec = environment_spec(self.env)
        self.agent = agent_module.make(config, self.env_spec, total_steps)
        init_key, actor_key, self.learner_key = jax.random.split(jax.random.key(seed, impl=KEY_IMPL), 3)
        self.state = self.agent.init(init_key)
        self.example = example_transition(self.agent, self.state, self.env_spec)
        spec = self.spec
        self.samples_per_insert = (
            reverb_replay.default_samples_per_insert(spec) if settings.samples_per_insert is None
            else settings.samples_per_insert
        )
        max_in_flight = settings.max_in_flight or 2 * spec.batch_size // per_item
        # Slack for the interleaving, in items: the first update waits for a whole iteration (of every
        # environment), the writer holds back n-step windows, staged and unconfirmed items, the sampler
        # prefetches (see the module docstring).
        slack_items = (
            (max(spec.steps_per_update, settings.num_envs) + settings.num_envs * spec.n_step) / per_item
            + 1 + settings.flush_every
        )
        error_buffer = 2.0 * (self.samples_per_insert * slack_items + max_in_flight + spec.batch_size / per_item)
        tables = reverb_replay.make_tables(
            spec, self.example, samples_per_insert=self.samples_per_insert, error_buffer=error_buffer,
            transitions_per_item=per_item,
        )
        checkpointer = None
        if replay_checkpoint_dir is not None:
            checkpointer = reverb.checkpointers.DefaultCheckpointer(str(replay_checkpoint_dir))
        self.server = reverb.Server(tables, port=None, checkpointer=checkpointer)
        self.address = f"localhost:{self.server.port}"  # loopback only
        self.client = reverb.Client(self.address)
        self.writer = reverb_replay.TransitionWriter(
            self.client, spec, flush_every=settings.flush_every, timeout_ms=int(1000 * settings.timeout_s),
            example=self.example, transitions_per_item=per_item,
        )
        self.sampler = reverb_replay.Sampler(
            self.client, "replay", spec.batch_size, self.example, timeout_s=settings.timeout_s,
            max_in_flight=max_in_flight, transitions_per_item=per_item,
        )
        self.actor = Actor(self.agent, self.state, adder=self.writer, key=actor_key)
        agent = self.agent

        def update(state, batch, key):  # the key splits inside the jit: outside, a split costs ~1 ms on a CPU
            key, update_key = jax.random.split(key)
            state, metrics = agent.update(state, batch, update_key)
            return state, metrics, key

        self._update = jax.jit(update)
        self._eval_actor: Actor | None = None
        self._next_batch: Transition | None = None
        self.eval_seed = seed + 10_000 if eval_seed is None else eval_seed
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.evaluations = 0
        self.learning = False
        self._next_learn = self.spec.steps_per_update  # env_steps at which the learner next runs
        self._observations: np.ndarray | None = None  # what each environment acts on next
        # One group acts alone; two let XLA compute one group's actions while Python steps the other's.
        self._groups = [np.asarray(g) for g in np.array_split(np.arange(settings.num_envs), min(2, settings.num_envs))]
        self._pending: dict[int, jax.Array] = {}  # actions dispatched for each group's next step
        self._first = np.ones(settings.num_envs, bool)
        self._episode_return = np.zeros(settings.num_envs)
        self._episode_length = np.zeros(settings.num_envs, np.int64)
        self.timers = {"sample": 0.0, "update": 0.0}  # seconds the learner spent sampling, dispatching updates

    # -- compiling ------------------------------------------------------------------------------

    def compile(self) -> float:
        """Compile the actor's ``act`` and the learner's ``update`` now; returns the seconds it took."""
        start = time.perf_counter()
        for size in sorted({len(group) for group in self._groups}):
            self.actor.compile(self.example.obs_tm1, num_envs=size)
        batch = jax.tree.map(lambda x: np.stack([x] * self.spec.batch_size), self.example)
        jax.block_until_ready(self._update(self.state, batch, self.learner_key))
        return time.perf_counter() - start

    # -- training -------------------------------------------------------------------------------

    def train(self, num_steps: int, learn: bool = True) -> dict[str, float]:
        """Run ``num_steps`` environment steps (all environments together, rounded up to whole steps of
        every environment), learning as they come; the steps' metrics.

        Returns the means over this call of ``episode_return`` and ``episode_length`` (episodes that
        ended in it; NaN if none) and of the agent's update metrics (absent before learning starts), with
        ``episodes``, ``updates`` and ``env_steps`` (totals so far) and ``steps_per_second``. With
        ``learn=False`` the learner is paused: the actor only fills the table (whose ratio limiter then
        blocks inserts a little past ``min_size``, unless ``samples_per_insert=0``).
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
                self._pending[g] = actor.dispatch_actions(observations[group], first[group], g)[0]
        steps_done = 0
        while steps_done < num_steps:
            for g, group in enumerate(self._groups):
                actions = np.asarray(self._pending.pop(g))
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
                    Transition(observations[group], actions, rewards, discounts, next_observations, last), group
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
                while self.env_steps >= self._next_learn:  # every steps_per_update environment steps
                    if learn:
                        metrics_list.extend(self._learn())
                    self._next_learn += spec.steps_per_update
                self._pending[g] = actor.dispatch_actions(next_observations, last, g)[0]
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
        """One learner iteration: ``updates_per_rollout`` updates, if the table holds ``min_size`` items."""
        if not self.learning:
            if self.writer.transitions_written < self.spec.min_size:
                return []
            self.writer.flush()  # the limiter counts confirmed items only
            self.learning = True
        metrics = []
        for _ in range(self.spec.updates_per_rollout):
            sampled = time.perf_counter()
            batch = self._next_batch if self._next_batch is not None else self.sampler.sample()[2]
            updated = time.perf_counter()
            self.state, update_metrics, self.learner_key = self._update(self.state, batch, self.learner_key)
            self.timers["sample"] += updated - sampled
            self.timers["update"] += time.perf_counter() - updated
            metrics.append(update_metrics)
            self.updates += 1
            if self.settings.prefetch:
                # The update runs on XLA's threads (dispatch is asynchronous); sample the next batch meanwhile.
                prefetched = time.perf_counter()
                self._next_batch = self.sampler.sample()[2]
                self.timers["sample"] += time.perf_counter() - prefetched
        if (self.updates // self.spec.updates_per_rollout) % self.settings.push_every == 0:
            self.actor.update_state(self.state)
        return metrics

    def learner_steps(self, num_updates: int) -> float:
        """``num_updates`` learner updates without acting (benchmarks); returns their seconds."""
        start = time.perf_counter()
        for _ in range(num_updates):
            _, _, batch = self.sampler.sample()
            self.state, _, self.learner_key = self._update(self.state, batch, self.learner_key)
            self.updates += 1
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
        actor.key = jax.random.key(seed, impl=KEY_IMPL)
        records = EnvironmentLoop(self.make_env(seed), actor, logger=lambda record: None).run(num_episodes=episodes)
        return np.asarray([r["episode_return"] for r in records], np.float64)

    # -- checkpoints ----------------------------------------------------------------------------

    def carry(self) -> dict[str, Any]:
        """The run's JAX state: agent state and the action and update keys (for orbax)."""
        return {"agent_state": self.state, "actor_key": self.actor.key, "learner_key": self.learner_key}

    def counters(self) -> dict[str, Any]:
        """The run's host counters (JSON-able)."""
        return {
            "env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes,
            "evaluations": self.evaluations, "learning": self.learning,
        }

    def restore(self, carry: dict[str, Any], counters: dict[str, Any]) -> None:
        """Continue from ``carry()`` and ``counters()`` of an earlier run (its replay comes from the server's
        checkpoint). The episode under way then was lost: the next step starts a new one."""
        self.state = carry["agent_state"]
        self.actor.update_state(self.state)
        self.actor.key = carry["actor_key"]
        self.learner_key = carry["learner_key"]
        self.env_steps, self.updates = int(counters["env_steps"]), int(counters["updates"])
        self.episodes, self.evaluations = int(counters["episodes"]), int(counters["evaluations"])
        self.learning = bool(counters["learning"])
        # Fresh environments, seeded apart from the first ones, for the new episodes.
        reseed = self.seed + 7919 * (1 + self.env_steps)
        self.envs = [self.make_env((reseed + i) % (2**31 - 1)) for i in range(self.settings.num_envs)]
        self.env = self.envs[0]
        self._observations = None
        self._pending = {}
        self._next_batch = None
        self._next_learn = (self.env_steps // self.spec.steps_per_update + 1) * self.spec.steps_per_update
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
