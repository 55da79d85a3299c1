"""Distributed actors and learners on Ray, with Reverb as the replay service (Reverb world, ``rlkit[distributed]``).

``run(agent_module, config, env, total_steps, out=..., num_actors=N)`` or ``rlkit train ... --backend
distributed --actors N``: a replay server, a learner, N actors, an evaluator and a step counter, each a
Ray actor; Ray places and supervises them (rlkit has no scheduler, RPC or supervisor of its own).
"""

from rlkit.distributed.driver import RunStopped
from rlkit.distributed.experiment import run
from rlkit.distributed.job import DistributedSettings

__all__ = ["DistributedSettings", "RunStopped", "run"]
