"""Training loops: the jitted on-device loop (``device``) and the host loop over dm_env (``host``)."""

from rlkit.loops.device import (
    ActorState,
    ChunkPlan,
    RunConfig,
    RunState,
    Trainer,
    evaluate_policy,
    make_trainer,
    plan_chunks,
    rollout,
)
from rlkit.loops.environment_loop import Actor, EnvironmentLoop, print_logger

__all__ = [
    "Actor", "ActorState", "ChunkPlan", "EnvironmentLoop", "RunConfig", "RunState", "Trainer", "evaluate_policy",
    "make_trainer", "plan_chunks", "print_logger", "rollout",
]
