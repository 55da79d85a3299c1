"""Training loops: the jitted on-device loop (``device``) and the host loop over dm_env (``host``)."""

from rlkit.loops.device import (
    ActorState,
    ChunkPlan,
    RunConfig,
    TrainCarry,
    Trainer,
    evaluate_policy,
    make_trainer,
    plan_chunks,
    rollout,
)
from rlkit.loops.host import Actor, EnvironmentLoop, print_logger

__all__ = [
    "Actor", "ActorState", "ChunkPlan", "EnvironmentLoop", "RunConfig", "TrainCarry", "Trainer", "evaluate_policy",
    "make_trainer", "plan_chunks", "print_logger", "rollout",
]
