"""The host side of a run: compile once, call one jitted chunk at a time, evaluate.

Between chunks the host receives the chunk's metrics (per seed) and hands them
to a callback (logging, progress); nothing is called back from inside the scan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.loops.device import RunState, Trainer

EVAL_SEED = 10_000  # evaluation keys are seeded apart from the training keys
ChunkCallback = Callable[[int, dict[str, np.ndarray], float], None]


class TrainingResult(NamedTuple):
    """What a finished run returns.

    Attributes:
      run_state: the final run state, leading axis over runs (seeds x hparams).
      eval_returns: ``[runs, eval_episodes]`` returns of the deterministic policy.
      compile_seconds: wall time to compile init and the chunk and run init (the evaluation
        compiles in the background while training).
      run_seconds: wall time of all training chunks.
      eval_seconds: wall time of the final evaluation.
      total_steps: environment steps per run.
      compile_breakdown: compile seconds per program ("init", "chunk", "eval", "wall").
    """

    run_state: RunState
    eval_returns: np.ndarray
    compile_seconds: float
    run_seconds: float
    eval_seconds: float
    total_steps: int
    compile_breakdown: dict[str, float] = {}

    @property
    def steps_per_second(self) -> float:
        """Environment steps per second over all vmapped runs."""
        return self.eval_returns.shape[0] * self.total_steps / max(self.run_seconds, 1e-9)


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """One independent PRNG key per seed."""
    return jax.vmap(jax.random.key)(jnp.asarray(list(seeds), dtype=jnp.uint32))


class CompiledRun(NamedTuple):
    """A run ready to go: the initial run state and the compiled chunk and evaluation.

    Attributes:
      run_state: the initial run state (leading axis over runs).
      hparams: per-run hyperparameter arrays.
      eval_keys: one evaluation key per run.
      chunk: compiled ``(run_state, hparams) -> (run_state, metrics)``; donates ``run_state``.
      evaluate: compiled ``(agent_state, eval_keys, hparams) -> returns``.
      seconds: compile seconds of each program ("init", "chunk", "eval"; "eval" appears once
        the background compile finishes) and "wall", the time until training can start
        (init run included).
      sharding: how the runs axis is split over devices (``runs_sharding``), or None on one device.
    """

    run_state: RunState
    hparams: dict[str, jax.Array]
    eval_keys: jax.Array
    chunk: Any
    evaluate: Any
    seconds: dict[str, float]
    sharding: Any = None


def runs_sharding(runs: int, devices: int | None) -> Any:
    """The runs axis split over the first ``devices`` devices (each trains its own runs, nothing is
    exchanged), or None for one device; a one-line error unless ``devices`` exist and divide ``runs``."""
    if devices is None or devices == 1:
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    available = jax.devices()
    if not 1 <= devices <= len(available):
        raise ValueError(f"--devices {devices}: this machine has {len(available)} {jax.default_backend()} device(s)")
    if runs % devices:
        raise ValueError(f"--devices {devices} must divide the number of runs, {runs} (seeds x hyperparameters)")
    return NamedSharding(Mesh(np.asarray(available[:devices]), ("runs",)), PartitionSpec("runs"))


def _single_run(fn: Callable, shared: int = 0) -> Callable:
    """``jax.vmap(fn)`` for a leading axis of size 1, without the vmap (the last ``shared`` arguments have none).

    XLA compiles a vmapped program of batch size 1 about twice as slowly and runs it about a
    quarter slower than the plain one; this drops the axis on the way in and adds it back on
    the way out, so results keep the shapes of the vmapped path. (The values are the same
    computation, but XLA may round differently in the last bits, as it may between any two
    different batch sizes.)
    """

    def run_one(*args):
        split = len(args) - shared
        out = fn(*jax.tree.map(lambda x: x[0], args[:split]), *args[split:])
        return jax.tree.map(lambda x: x[None], out)

    return run_one


def batched(fn: Callable, runs: int, shared: int = 0) -> Callable:
    """``fn`` over a leading axis of ``runs`` runs: ``jax.vmap``, or ``_single_run`` for one.

    The last ``shared`` arguments are the same for every run and have no runs axis (a dataset).
    """
    if runs == 1:
        return _single_run(fn, shared)
    return lambda *args: jax.vmap(fn, in_axes=(0,) * (len(args) - shared) + (None,) * shared)(*args)


class _Deferred:
    """A compiled function still compiling in the background; the first call waits for it."""

    def __init__(self, future: Future):
        self._future = future

    def __call__(self, *args):
        return self._future.result()(*args)


# On CPU, LLVM optimization level 1 instead of XLA's default 2: rlkit's programs spend their time
# in matrix products and small kernels that level 2 does not make faster (measured: PPO, PQN, SAC
# and TD3 ran as fast against rejax), while it cuts compile time by about a fifth. See README, Benchmarks.
CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 1}


def default_compiler_options() -> dict[str, Any]:
    """XLA options ``compile_training`` uses by default: ``CPU_COMPILER_OPTIONS`` on CPU, none elsewhere."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else {}


def compile_training(
    trainer: Trainer,
    seeds: Sequence[int],
    hparams: Mapping[str, Sequence[float]] | None = None,
    eval_seed: int = EVAL_SEED,
    compiler_options: Mapping[str, Any] | None = None,
    devices: int | None = None,
) -> CompiledRun:
    """Initialize ``len(seeds)`` vmapped runs and compile their chunk and evaluation ahead of time.

    ``compiler_options`` are XLA options for all three programs (``None``: ``default_compiler_options()``;
    ``{}``: XLA's defaults). ``devices`` > 1 splits the runs over that many devices (``runs_sharding``).
    """
    wall_start = time.perf_counter()
    options = default_compiler_options() if compiler_options is None else dict(compiler_options)
    keys = seed_keys(seeds)
    hp = {name: jnp.asarray(values, jnp.float32) for name, values in (hparams or {}).items()}
    for name, values in hp.items():
        if values.shape != (len(seeds),):
            raise ValueError(f"hparams[{name!r}] needs one value per run ({len(seeds)}), got shape {values.shape}")
    eval_keys = seed_keys([eval_seed + s for s in seeds])  # the same seed evaluates alike
    sharding = runs_sharding(len(seeds), devices)
    on_runs: dict[str, Any] = {}  # where each program's inputs and outputs live, when sharded
    if sharding is not None:
        keys, hp, eval_keys = jax.device_put((keys, hp, eval_keys), sharding)
        shared = type(sharding)(sharding.mesh, type(sharding.spec)())  # the trainer's data, whole on every device
        on_runs = {"init": {"out_shardings": sharding}, "eval": {"out_shardings": sharding},
                   "chunk": {"in_shardings": (sharding, sharding, shared), "out_shardings": sharding}}

    init_fn = jax.jit(batched(trainer.init, len(seeds)), **on_runs.get("init", {}))
    # The trainer's data (an offline run's dataset) is an argument of the chunk, shared by the runs, not a
    # constant compiled into it: the program stays small and the compile cache serves any dataset of its shapes.
    chunk_fn = jax.jit(batched(trainer.run_chunk, len(seeds), shared=1), donate_argnums=0, **on_runs.get("chunk", {}))
    eval_fn = jax.jit(batched(trainer.evaluate, len(seeds)), **on_runs.get("eval", {}))
    abstract = jax.eval_shape(init_fn, keys, hp)

    def timed(phase: str, lowered: Callable[[], Any]):
        start = time.perf_counter()
        compiled = lowered().compile(compiler_options=options)
        seconds[phase] = time.perf_counter() - start
        return compiled

    # Init and the chunk compile side by side (XLA compiles outside the GIL). The evaluation is
    # needed only at the end, so it starts compiling once the chunk is ready and carries on in the
    # background while the first chunks train; it is waited for only when first called. (XLA's CPU
    # compiler already keeps two cores busy, so starting it earlier delays the chunk as much.)
    seconds: dict[str, float] = {}
    pool = ThreadPoolExecutor(max_workers=2)
    init = pool.submit(timed, "init", lambda: init_fn.lower(keys, hp))
    chunk = pool.submit(timed, "chunk", lambda: chunk_fn.lower(abstract, hp, trainer.data))
    run_state = jax.block_until_ready(init.result()(keys, hp))
    compiled_chunk = chunk.result()

    def chunk(run_state: RunState, hparams: dict[str, jax.Array]):
        return compiled_chunk(run_state, hparams, trainer.data)

    # Compiled for where the agent state lives (one device, or split over devices by the runs or the data axis).
    placed = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), run_state.agent_state)
    evaluate = _Deferred(pool.submit(timed, "eval", lambda: eval_fn.lower(placed, eval_keys, hp)))
    pool.shutdown(wait=False)
    seconds["wall"] = time.perf_counter() - wall_start
    return CompiledRun(run_state, hp, eval_keys, chunk, evaluate, seconds, sharding)


def run_training(
    trainer: Trainer,
    seeds: Sequence[int],
    hparams: Mapping[str, Sequence[float]] | None = None,
    on_chunk: ChunkCallback | None = None,
    eval_seed: int = EVAL_SEED,
    *,
    restore: Callable[[RunState], tuple[RunState, int]] | None = None,
    after_chunk: Callable[[int, RunState], None] | None = None,
    devices: int | None = None,
) -> TrainingResult:
    """Train ``len(seeds)`` runs vmapped in one compile; ``hparams`` vary per run.

    ``hparams`` maps float config fields to one value per run (same length as
    ``seeds``). ``on_chunk(index, metrics, elapsed_seconds)`` is called after
    each chunk with numpy metrics of shape ``[runs]``. To resume, ``restore``
    maps the freshly initialized run state to ``(saved run state, chunks already done)``;
    ``after_chunk(chunks_done, run_state)`` runs after each chunk (checkpoints), before
    the run state is donated to the next one. ``devices`` > 1 splits the runs over that many
    devices, each training its own runs (``runs_sharding``).
    """
    compiled = compile_training(trainer, seeds, hparams, eval_seed, devices=devices)
    run_state, hp = compiled.run_state, compiled.hparams
    first_chunk = 0
    if restore is not None:
        placement = jax.tree.map(lambda x: x.sharding, run_state)
        run_state, first_chunk = restore(run_state)
        run_state = jax.device_put(run_state, placement)  # a checkpoint comes back whole, on one device

    start = time.perf_counter()
    for index in range(first_chunk, trainer.plan.num_chunks):
        run_state, metrics = compiled.chunk(run_state, hp)
        metrics = jax.device_get(metrics)
        if on_chunk is not None:
            on_chunk(index, metrics, time.perf_counter() - start)
        if after_chunk is not None:
            after_chunk(index + 1, run_state)
    jax.block_until_ready(run_state)
    run_seconds = time.perf_counter() - start

    start = time.perf_counter()
    eval_returns = np.asarray(jax.device_get(compiled.evaluate(run_state.agent_state, compiled.eval_keys, hp)))
    eval_seconds = time.perf_counter() - start
    return TrainingResult(
        run_state, eval_returns, compiled.seconds["wall"], run_seconds, eval_seconds,
        trainer.plan.total_steps, compiled.seconds,
    )


def summarize_chunk(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Mean over runs of each chunk metric, ignoring runs without a value (NaN)."""
    out = {}
    for name, value in metrics.items():
        arr = np.asarray(value, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    return out
