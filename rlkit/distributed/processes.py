"""The processes of a distributed run, besides the learner: the replay server, the actors, the evaluator
and the step counter. Plain classes; ``rlkit.distributed.driver`` makes each a Ray actor.

Every process logs one line when it starts, saying whether Ray restarted it (those lines reach the
driver's terminal, prefixed with the process's name and pid).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from rlkit.distributed.job import Job, build, build_agent, replay_directory


def log(message: str) -> None:
    print(f"[rlkit.distributed] {message}", file=sys.stderr, flush=True)


def restarted() -> bool:
    """Whether Ray restarted the process this runs in (after it died)."""
    import warnings

    import ray

    with warnings.catch_warnings():  # Ray 2.60 warns about an API it uses inside this property
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


class ReplayProcess:
    """The Reverb server, on a fixed port, checkpointing its tables under ``RUN_DIR/replay``.

    Ray restarts it with the same arguments after it dies, so it comes back on the same port and starts
    from its latest checkpoint (Reverb's checkpointer loads it); the actors' writers reconnect by
    themselves. Reverb listens on every interface and has no option to bind one (the port is
    ephemeral in local mode, chosen by the driver).
    """

    def __init__(self, job: Job, port: int):
        from rlkit.loops.reverb_feeders import REVERB_FEEDERS, HostSettings
        from rlkit.replay import reverb as reverb_replay

        built = build(job)
        total_envs = job.settings.num_actors * job.settings.envs_per_actor
        # The rate limiter's slack allows for every actor's unconfirmed items.
        feeder = REVERB_FEEDERS[built.spec.kind](built.spec, HostSettings(num_envs=total_envs, prefetch=False))
        ratio = reverb_replay.default_samples_per_insert(built.spec)
        tables = feeder.tables(built.example, ratio, feeder.error_buffer(ratio))
        directory = replay_directory(job)
        directory.mkdir(parents=True, exist_ok=True)
        checkpointer = reverb_replay.reverb.checkpointers.DefaultCheckpointer(str(directory))
        self.server = reverb_replay.reverb.Server(tables, port=port, checkpointer=checkpointer)
        self.client = reverb_replay.reverb.Client(f"127.0.0.1:{port}")
        self.port = port
        log(f"replay server {'restarted from its checkpoint' if restarted() else 'started'} on port {port} "
            f"(pid {os.getpid()}): {self.size()} items")

    def pid(self) -> int:
        return os.getpid()

    def size(self) -> int:
        return int(self.client.server_info(timeout=10)["replay"].current_size)


class StepCounter:
    """The run's environment steps and training episodes, reported by the actors.

    ``add`` returns the total, which is how actors learn that the budget is spent; the driver drains
    the episode returns for the metrics (``take``).
    """

    def __init__(self, total_steps: int, steps: int = 0, episodes: int = 0):
        self.total_steps = total_steps
        self.steps, self.episodes = steps, episodes
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def add(self, steps: int, returns: list[float], lengths: list[int]) -> int:
        self.steps += steps
        self.episodes += len(returns)
        self.returns.extend(returns)
        self.lengths.extend(lengths)
        return self.steps

    def take(self) -> dict[str, Any]:
        """The totals, and the episodes finished since the last ``take``."""
        out = {"steps": self.steps, "episodes": self.episodes, "returns": self.returns, "lengths": self.lengths}
        self.returns, self.lengths = [], []
        return out

    def pid(self) -> int:
        return os.getpid()


class ActorProcess:
    """One actor: ``envs_per_actor`` host environments, a Reverb writer and the learner's parameters.

    ``run()`` acts until the counter reports the budget spent; every ``refresh_every`` steps it reports
    its steps and finished episodes and takes the learner's newest state (and, for prioritized replay, the
    priority of new items). A flush waits ``timeout_s`` for the server (a restarting replay server, or its
    rate limiter holding inserts back while the learner is busy); after that the writer is abandoned,
    never closed, and replaced by a new one once the server answers, and the steps of the episodes under
    way are dropped. Ray restarts a dead actor, which plays new episodes with the newest state.
    ``start_steps``: the run's steps when this actor was created (a resumed run's actors play other
    episodes than the first run's).
    """

    def __init__(self, job: Job, index: int, replay_address: str, start_steps: int = 0):
        import jax
        import ray

        from rlkit.envs import make_host
        from rlkit.loops.environment_loop import KEY_IMPL, Actor

        built = build(job)
        self.job, self.index, self.built = job, index, built
        # Looked up by name rather than passed: Ray restarts an actor from its arguments, which stay small.
        self.learner = ray.get_actor(job.process_name("learner"))
        self.counter = ray.get_actor(job.process_name("counter"))
        self.replay_address = replay_address
        self.restarted = restarted()
        # Seeded from the run, the actor and the steps done; a restart (not reproducible anyway) draws afresh.
        seed = (job.seed + 1000 * (index + 1) + 7919 * start_steps) % (2**31 - 1)
        if self.restarted:
            seed = int.from_bytes(os.urandom(4), "little") % (2**31 - 1)
        self.envs = [make_host(job.env, seed=seed + i) for i in range(job.settings.envs_per_actor)]
        key = jax.random.fold_in(jax.random.key(job.seed, impl=KEY_IMPL), seed)
        self.actor = Actor(built.agent, built.state, key=key)
        self.version = -1
        self.insert_priority = 1.0
        self.writer = None
        self.steps = 0
        log(f"actor {index} {'restarted' if self.restarted else 'started'} (pid {os.getpid()}, node "
            f"{self.node()})")

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def _connect(self) -> None:
        from rlkit.replay import reverb as reverb_replay

        client = reverb_replay.reverb.Client(self.replay_address)
        self.writer = self.built.feeder.writer(client, self.built.example)  # waits until the server answers
        self.writer.priority = self.insert_priority

    def _refresh(self) -> None:
        import jax
        import ray

        version, state, self.insert_priority = ray.get(self.learner.published_state.remote(self.version))
        if self.writer is not None:
            self.writer.priority = self.insert_priority
        if state is not None:
            self.version = version
            self.actor.update_state(jax.device_put(state))

    def run(self) -> int:
        """Act until the budget is spent; returns this actor's environment steps."""
        import dm_env
        import jax
        import ray

        from rlkit.replay import reverb as reverb_replay
        from rlkit.types import Transition

        envs, actor = self.envs, self.actor
        num_envs = len(envs)
        self._refresh()
        self._connect()
        observations = np.stack([env.reset().observation for env in envs])
        first = np.ones(num_envs, bool)
        episode_return, episode_length = np.zeros(num_envs), np.zeros(num_envs, np.int64)
        returns, lengths, unreported = [], [], 0
        while True:
            actions, extras = actor.dispatch_actions(observations, first)
            actions, extras = np.asarray(actions), jax.tree.map(np.asarray, extras)
            next_observations = np.empty_like(observations)
            rewards, discounts = np.empty(num_envs, np.float32), np.empty(num_envs, np.float32)
            last = np.zeros(num_envs, bool)
            for i, env in enumerate(envs):
                timestep = env.step(actions[i])
                next_observations[i], rewards[i], discounts[i] = timestep.observation, timestep.reward, timestep.discount
                last[i] = timestep.step_type == dm_env.StepType.LAST
            try:
                self.writer.add_batch(Transition(observations, actions, rewards, discounts, next_observations, last,
                                                 extras))
            except reverb_replay.ReplayUnavailable as error:
                log(f"actor {self.index}: {error}; reconnecting")
                self._connect()
            episode_return += rewards
            episode_length += 1
            for i in np.flatnonzero(last):
                returns.append(float(episode_return[i]))
                lengths.append(int(episode_length[i]))
                episode_return[i], episode_length[i] = 0.0, 0
                next_observations[i] = envs[i].reset().observation
            observations, first = next_observations, last
            self.steps += num_envs
            unreported += num_envs
            if unreported >= self.job.settings.refresh_every:
                total = ray.get(self.counter.add.remote(unreported, returns, lengths))
                returns, lengths, unreported = [], [], 0
                if total >= self.job.total_steps:
                    return self.steps
                self._refresh()


class EvaluatorProcess:
    """Greedy evaluation episodes with given parameters, in fresh environments."""

    def __init__(self, job: Job):
        from rlkit.loops.environment_loop import Actor

        self.job = job
        _, _, agent, state = build_agent(job)  # no Reverb: the evaluator only acts
        self.actor = Actor(agent, state, deterministic=True)

    def evaluate(self, state: Any, episodes: int, seed: int) -> list[float]:
        import jax

        from rlkit.envs import make_host
        from rlkit.loops.environment_loop import evaluate_actor

        self.actor.update_state(jax.device_put(state))
        env = make_host(self.job.env, seed=seed)
        try:
            returns = evaluate_actor(self.actor, env, episodes, seed)
        finally:
            env.close()
        return [float(r) for r in returns]

    def pid(self) -> int:
        return os.getpid()
