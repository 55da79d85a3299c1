"""Training loops: the jitted on-device loop (``device``)."""

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

__all__ = [
    "ActorState", "ChunkPlan", "RunConfig", "TrainCarry", "Trainer", "evaluate_policy",
    "make_trainer", "plan_chunks", "rollout",
]
