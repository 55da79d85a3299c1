"""The learner of a distributed run: samples the replay server, runs the agent's jitted ``update``, publishes
its state to the actors and checkpoints itself with the replay.

It is a threaded Ray actor: ``run`` loops in one thread while the actors call ``published_state`` and the
driver calls ``metrics``, ``checkpoint``, ``stop`` and ``final_state`` in others; the agent state, the
update count and the metric sums change under one lock. Ray never restarts it: a learner that dies ends
the run (the driver stops every process), and ``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.distributed.job import Job, build, replay_directory
from rlkit.distributed.processes import log

FOLD_EVERY = 256  # updates whose metrics are kept as arrays before they are summed on the host


class LearnerProcess:
    """Args: job; resume: start from the newest checkpoint in ``RUN_DIR/checkpoints`` (its metadata is
    ``restored_metadata()``)."""

    def __init__(self, job: Job, resume: bool = False):
        import jax

        from rlkit.loops.environment_loop import KEY_IMPL
        from rlkit.loops.reverb_feeders import REVERB_FEEDERS, HostSettings
        from rlkit.runs.checkpoint import Checkpointer

        built = build(job)
        self.job, self.built = job, built
        # A sample waits timeout_s at most, so a learner waiting for the actors retries rarely (each retry leaves a
        # Reverb sampler behind); stopping does not wait for it (the driver takes final_state meanwhile).
        self.feeder = REVERB_FEEDERS[built.spec.kind](built.spec, HostSettings(timeout_s=job.settings.timeout_s,
                                                                               prefetch=False))
        self._update = self.feeder.learner_update(built.agent)
        self.updates_per_batch = built.spec.updates_per_rollout if self.feeder.on_policy else 1
        self.state = built.state
        self.key = jax.random.fold_in(jax.random.key(job.seed, impl=KEY_IMPL), 0)
        self.updates = 0
        self.priority_writes = 0  # batches whose priorities went back to the replay (prioritized replay)
        self.insert_priority = 1.0  # new items' priority: the largest the learner wrote (prioritized replay)
        self.metadata: dict[str, Any] = {}
        self.keep = job.settings.keep_checkpoints
        self.checkpointer = Checkpointer(job.run_dir, job.identity, every_steps=None, every_minutes=None,
                                         keep=self.keep)
        if resume:
            restored = self.checkpointer.restore_latest({"agent_state": self.state, "learner_key": self.key})
            self.state, self.key = restored.run_state["agent_state"], restored.run_state["learner_key"]
            self.metadata = dict(restored.metadata)
            self.updates = int(self.metadata.get("updates", 0))
            # A checkpoint from before the count was kept: every batch's priorities were written, bar failures.
            self.priority_writes = int(self.metadata.get("priority_writes", self.updates))
            self.insert_priority = float(self.metadata.get("insert_priority", 1.0))
        self._lock = threading.Lock()
        self._published: tuple[int, Any] = (-1, None)  # (version, the agent state of that version)
        self._published_host = None  # its numpy copy, once asked for
        self._publish()
        self._pending: list[dict] = []  # the metrics of the last updates, still arrays
        self._sums: dict[str, float] = {}
        self._count = 0
        self._stop = threading.Event()
        self.client = None
        log(f"learner started (pid {os.getpid()}){' from a checkpoint' if resume else ''}")

    def pid(self) -> int:
        return os.getpid()

    def restored_metadata(self) -> dict[str, Any]:
        return self.metadata

    def _publish(self) -> None:
        """Make the current agent state the published one (its arrays are immutable: no copy is made here)."""
        with self._lock:
            self._published = (self.updates, self.state)
            self._published_host = None

    def published_state(self, known_version: int) -> tuple[int, Any, float]:
        """``(version, state, insert_priority)``: the newest published state's version, the state itself as
        numpy arrays (None when it is ``known_version``), and the priority new items should get (prioritized
        replay). Copied to the host once per version, when first asked for."""
        import jax

        with self._lock:
            version, state = self._published
            host = self._published_host
        if version == known_version:
            return version, None, self.insert_priority
        if host is None:
            host = jax.device_get(state)
            with self._lock:
                if self._published[0] == version:
                    self._published_host = host
        return version, host, self.insert_priority

    def compile(self) -> float:
        import jax

        start = time.perf_counter()
        probabilities = np.ones(self.feeder.items_per_batch, np.float32)
        jax.block_until_ready(self._update(self.state, self.feeder.zero_batch(self.built.example), probabilities,
                                           self.key))
        return time.perf_counter() - start

    def run(self, replay_address: str) -> int:
        """Learn until ``stop``; returns the number of updates."""
        from rlkit.replay import reverb as reverb_replay

        self.client = reverb_replay.reverb.Client(replay_address)
        sampler = self.feeder.sampler(self.client, self.built.example)
        publish_every = self.job.settings.publish_every
        waiting_since = None
        while not self._stop.is_set():
            try:
                keys, probabilities, batch = sampler.sample()
            except reverb_replay.ReplayNotReady:
                continue  # the rate limiter waits for the actors
            except reverb_replay.ReplayUnavailable as error:
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log(f"learner: {error}; waiting for the replay server")
                time.sleep(0.5)
                continue
            if waiting_since is not None:
                log(f"learner: the replay server answers again after {time.monotonic() - waiting_since:.1f} s")
                waiting_since = None
            probabilities = np.asarray(probabilities, np.float32)
            for _ in range(self.updates_per_batch):  # on-policy agents take several epochs of one batch
                with self._lock:
                    self.state, metrics, priorities, self.key = self._update(self.state, batch, probabilities,
                                                                             self.key)
                    self.updates += 1
                    self._pending.append(metrics)
                    if len(self._pending) >= FOLD_EVERY:
                        self._fold()
            if priorities is not None and self.feeder.prioritized:
                per_item = self.feeder.item_priorities(np.asarray(priorities))
                try:
                    sampler.update_priorities(keys, per_item)
                    with self._lock:  # read with `updates`: the write of a batch follows its update
                        self.priority_writes += 1
                        self.insert_priority = max(self.insert_priority, float(per_item.max()))
                except reverb_replay.ReplayUnavailable as error:
                    log(f"learner: priorities not written ({error})")
            if self.updates - self._published[0] >= publish_every:
                self._publish()
        return self.updates

    def _fold(self) -> None:
        """Sum the pending metrics on the host (under the lock)."""
        import jax

        for metrics in jax.device_get(self._pending):
            for name, value in metrics.items():
                self._sums[name] = self._sums.get(name, 0.0) + float(value)
        self._count += len(self._pending)
        self._pending = []

    def metrics(self) -> dict[str, float]:
        """Means of the update metrics since the last call, the number of updates so far and, with
        prioritized replay, of the batches whose priorities were written back."""
        with self._lock:
            self._fold()
            sums, count, self._sums, self._count = self._sums, self._count, {}, 0
            out = {"updates": float(self.updates)}
            if self.feeder.prioritized:
                out["priority_writes"] = float(self.priority_writes)
        out.update({name: total / count for name, total in sums.items()} if count else {})
        return out

    def checkpoint(self, lines_written: int, env_steps: int, progress: dict[str, Any]) -> tuple[str, int, int]:
        """Checkpoint the replay's tables, then the learner's state with ``progress``; returns the replay
        checkpoint's name and the table's sizes just before and after it (the actors go on inserting)."""
        from rlkit.replay import reverb as reverb_replay

        client = self.client or reverb_replay.reverb.Client(progress["replay_address"])
        before = int(client.server_info(timeout=10)["replay"].current_size)
        replay_path = Path(client.checkpoint())
        after = int(client.server_info(timeout=10)["replay"].current_size)
        with self._lock:
            run_state = {"agent_state": self.state, "learner_key": self.key}
            counts = {"updates": self.updates, "priority_writes": self.priority_writes,
                      "insert_priority": self.insert_priority}
        self.checkpointer.save(lines_written, run_state, env_steps, {
            **progress, **counts, "replay_checkpoint": replay_path.name,
        })
        from rlkit.runs.reverb_runner import keep_replay_checkpoints, replay_checkpoints

        directory = replay_directory(self.job)
        newest = [p.name for p in replay_checkpoints(directory)[-self.keep:]]  # names are timestamps
        keep_replay_checkpoints(directory, {*newest, replay_path.name})
        return replay_path.name, before, after

    def final_state(self) -> tuple[Any, int]:
        """The agent state (numpy) and the number of updates."""
        import jax

        with self._lock:
            return jax.device_get(self.state), self.updates

    def stop(self) -> None:
        self._stop.set()
