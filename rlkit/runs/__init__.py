"""Running experiments on the host: the chunk driver, run directories, metrics, progress."""

from rlkit.runs.records import MetricsWriter, Progress, write_results
from rlkit.runs.runner import (
    CompiledRun,
    TrainingResult,
    compile_training,
    run_training,
    seed_keys,
    summarize_chunk,
)

__all__ = [
    "CompiledRun", "MetricsWriter", "Progress", "compile_training", "TrainingResult", "run_training",
    "seed_keys", "summarize_chunk", "write_results",
]
