"""The driver of a distributed run: one seed with a replay server, a learner and N actors on Ray.

``run_job`` starts Ray (``RayCluster``), then the run's processes as Ray actors:

- the replay server (``ReplayProcess``, on the driver's node, a fixed port; restarted by Ray from its
  last checkpoint if it dies),
- the learner (``LearnerProcess``; never restarted: its death ends the run, ``--resume`` continues it),
- N actors (``ActorProcess``, spread over the cluster's nodes; restarted by Ray if they die),
- the evaluator (``EvaluatorProcess``) and the step counter (``StepCounter``).

It then watches them: every ``metrics_every`` environment steps it writes a metrics line (training
returns, the learner's metrics, a greedy evaluation) and, when due, has the learner checkpoint itself
and the replay. At the budget the actors stop, the learner stops and the final greedy evaluation runs.
Every process the run started is ended on success, on error, on Ctrl-C and on SIGTERM; a run that
makes no progress for ``stall_seconds`` is stopped with a message naming what it waited for.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlkit.distributed.cluster import LOOPBACK, RayCluster, free_port
from rlkit.distributed.job import DistributedSettings, Job, replay_directory
from rlkit.distributed.learner import LearnerProcess
from rlkit.distributed.processes import ActorProcess, EvaluatorProcess, ReplayProcess, StepCounter
from rlkit.runs.checkpoint import Schedule
from rlkit.runs.runner import EVAL_SEED

CALL_TIMEOUT_S = 300.0  # the longest the driver waits for one call (a checkpoint, an evaluation, a start)


class RunStopped(RuntimeError):
    """The run cannot go on (a process it needs died or failed, or it made no progress); every process of the
    run was ended."""


def _terminate(signum, frame):  # SIGTERM ends the run as Ctrl-C does: through the finally blocks
    raise KeyboardInterrupt(f"signal {signum}")


def _check_resources(job: Job, gpus: float) -> None:
    """A cluster without room for the learner and the actors would wait for ever: say so instead."""
    import ray

    available = ray.cluster_resources()
    settings = job.settings
    cpus = 1 + settings.num_actors * settings.actor_cpus
    if available.get("CPU", 0) < cpus or available.get("GPU", 0) < gpus:
        raise ValueError(f"the Ray cluster has {available.get('CPU', 0):g} CPUs and {available.get('GPU', 0):g} GPUs; "
                         f"the run needs {cpus:g} CPUs (1 for the learner, {settings.actor_cpus:g} for each of "
                         f"{settings.num_actors} actors) and {gpus:g} GPUs")


def _keep_replay_checkpoint(job: Job, name: str | None) -> None:
    """Before a resumed replay server starts: keep only the checkpoint the learner's checkpoint names."""
    from rlkit.runs.reverb_runner import keep_replay_checkpoints

    directory = replay_directory(job)
    if name is None or not (directory / name).is_dir():
        raise ValueError(f"--resume: the replay checkpoint {directory / str(name)} that the learner's last checkpoint "
                         "names is missing; start a new --out")
    keep_replay_checkpoints(directory, [name])


def start_processes(job: Job, cluster: RayCluster, resume: bool, log: Callable[[str], Any]) -> dict[str, Any]:
    """Start the learner (restoring it with ``resume``), the replay server, the counter, the actors and the
    evaluator; returns their handles, the replay's address and the learner's restored metadata.

    Placement: the replay server and the counter on the driver's node (the replay's address and port
    must survive its restarts), the learner there too unless it asks for an accelerator, the evaluator
    there when it fits, and the actors spread over the cluster's nodes.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    settings = job.settings
    gpus = settings.learner_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    _check_resources(job, gpus)
    # With an accelerator for the learner, JAX in the other processes stays on the CPU (it would take the GPU's memory).
    cpu_only = {"runtime_env": {"env_vars": {"JAX_PLATFORMS": "cpu"}}} if gpus else {}
    here = ray.get_runtime_context().get_node_id()
    on_driver_node = NodeAffinitySchedulingStrategy(here, soft=False)
    near_driver = NodeAffinitySchedulingStrategy(here, soft=True)
    handles: dict[str, Any] = {}
    learner_class = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0, max_concurrency=8)(LearnerProcess)
    handles["learner"] = learner = learner_class.options(
        name=job.process_name("learner"), scheduling_strategy=None if gpus else near_driver,
    ).remote(job, resume)
    metadata = ray.get(learner.restored_metadata.remote(), timeout=CALL_TIMEOUT_S)
    if resume:  # the replay server loads the newest checkpoint in its directory: make it the learner's own
        _keep_replay_checkpoint(job, metadata.get("replay_checkpoint"))
    host = LOOPBACK if cluster.local else ray.util.get_node_ip_address()
    port = free_port()
    replay_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ReplayProcess)
    handles["replay"] = replay = replay_class.options(scheduling_strategy=on_driver_node, **cpu_only).remote(job, port)
    address = f"{host}:{port}"
    log(f"replay server at {address} (Reverb listens on every interface: it has no bind option), "
        f"{ray.get(replay.size.remote(), timeout=CALL_TIMEOUT_S)} items")
    counter_class = ray.remote(num_cpus=0, max_restarts=0)(StepCounter)
    handles["counter"] = counter_class.options(
        name=job.process_name("counter"), scheduling_strategy=on_driver_node, **cpu_only,
    ).remote(job.total_steps, int(metadata.get("steps", 0)), int(metadata.get("episodes", 0)))
    actor_class = ray.remote(num_cpus=settings.actor_cpus, max_restarts=-1, max_task_retries=-1)(ActorProcess)
    start_steps = int(metadata.get("steps", 0))  # a resumed run's actors play other episodes than the first run's
    handles["actors"] = [
        actor_class.options(scheduling_strategy="SPREAD", **cpu_only).remote(job, i, address, start_steps)
        for i in range(settings.num_actors)
    ]
    evaluator_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(EvaluatorProcess)
    handles["evaluator"] = evaluator_class.options(scheduling_strategy=near_driver, **cpu_only).remote(job)
    return {"handles": handles, "address": address, "metadata": metadata}


def run_job(
    job: Job,
    *,
    metrics_every: int,
    final_eval_episodes: int = 20,
    ray_address: str | None = None,
    resume: bool = False,
    checkpoints: Schedule | None = None,
    on_metrics: Callable[[dict], Any] | None = None,
    quiet: bool = False,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train ``job`` on Ray; returns the final state, evaluations and counts (see the module docstring).

    ``checkpoints`` says after each metrics line whether to checkpoint (None: never); ``on_metrics`` gets
    every metrics line as it is written; ``quiet`` keeps the processes' own log lines off the terminal.
    """
    cluster = RayCluster(Path(job.run_dir), ray_address, num_cpus=_local_cpus(job.settings), quiet=quiet)
    main_thread = threading.current_thread() is threading.main_thread()  # only it may handle signals
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    handles: list[Any] = []
    roles: dict[str, str] = {}
    try:
        info = cluster.start()  # before Ray is imported here: it reads the variables start() sets
        import ray

        if main_thread:  # after ray.init, which installs a handler of its own that aborts the driver
            signal.signal(signal.SIGTERM, _terminate)
        where = f"joined at {info.get('address')}" if not cluster.local else (
            f"started on 127.0.0.1; session files and logs under {Path(job.run_dir) / 'ray'}")
        log(f"Ray {where}")
        started = start_processes(job, cluster, resume, log)
        named = started["handles"]
        handles = [named["learner"], named["replay"], named["counter"], *named["actors"], named["evaluator"]]
        roles = {named[role]._actor_id.hex(): role for role in ("learner", "replay", "counter", "evaluator")}
        roles.update({actor._actor_id.hex(): f"actor {i}" for i, actor in enumerate(named["actors"])})
        pids = {name: ray.get(named[name].pid.remote(), timeout=CALL_TIMEOUT_S)
                for name in ("learner", "replay", "counter", "evaluator")}
        pids["actors"] = ray.get([a.pid.remote() for a in named["actors"]], timeout=CALL_TIMEOUT_S)
        log(f"processes: {pids}")
        log(f"actors on nodes: {ray.get([a.node.remote() for a in named['actors']], timeout=CALL_TIMEOUT_S)}")
        return _supervise(job, named, started, pids, metrics_every, final_eval_episodes, checkpoints,
                          on_metrics, log)
    except Exception as error:
        stopped = _stopped(error, roles, Path(job.run_dir))
        if stopped is not None:
            raise stopped from None
        raise
    finally:
        if main_thread:  # a second Ctrl-C or SIGTERM must not cut the shutdown short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            cluster.stop(handles)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous[0])
                signal.signal(signal.SIGINT, previous[1])


def _stopped(error: Exception, roles: dict[str, str], run_dir: Path) -> RunStopped | None:
    """A one-line ``RunStopped`` for a process that died or failed (None for any other error)."""
    from rlkit.runs.checkpoint import has_checkpoints

    exceptions = sys.modules.get("ray.exceptions")
    if exceptions is None:
        return None
    hint = ("continue from the last checkpoint with --resume" if has_checkpoints(run_dir)
            else "no checkpoint was written yet (--checkpoint-every-steps or -minutes)")
    if isinstance(error, exceptions.RayActorError):
        role = roles.get(str(getattr(error, "actor_id", "")), "a process")
        return RunStopped(f"{role} of the run died; every process of the run was stopped; {hint}")
    if isinstance(error, exceptions.GetTimeoutError):
        return RunStopped(f"a process of the run did not answer within {CALL_TIMEOUT_S:.0f} s; every process of "
                          f"the run was stopped; {hint}")
    if isinstance(error, exceptions.RayTaskError):
        cause = error.cause if error.cause is not None else error
        where = getattr(error, "function_name", "") or "a process"
        last = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
        return RunStopped(f"{where} failed: {type(cause).__name__}: {last}; every process of the run was stopped; "
                          f"{hint}")
    return None


def _local_cpus(settings: DistributedSettings) -> int:
    import math
    import os

    return max(os.cpu_count() or 1, 1 + math.ceil(settings.num_actors * settings.actor_cpus))


def _supervise(job, named, started, pids, metrics_every, final_eval_episodes, checkpoints, on_metrics, log):
    import ray

    learner, counter, evaluator = named["learner"], named["counter"], named["evaluator"]
    metadata = started["metadata"]
    compile_seconds = ray.get(learner.compile.remote(), timeout=CALL_TIMEOUT_S)
    learner_run = learner.run.remote(started["address"])
    actor_runs = [actor.run.remote() for actor in named["actors"]]
    start = time.perf_counter()
    steps = int(metadata.get("steps", 0))
    lines_written = int(metadata.get("chunks_done", 0))  # metrics lines (a checkpoint's "chunks")
    next_line = (steps // metrics_every + 1) * metrics_every
    window_start, window_steps = time.perf_counter(), steps
    last_progress, progress_steps = time.monotonic(), steps
    returns, lengths = [], []
    history: list[dict] = list(metadata.get("history", []))
    while steps < job.total_steps:
        ready, _ = ray.wait([learner_run], timeout=0.5)
        if ready:
            ray.get(learner_run)  # raises RayActorError if it died
            raise RunStopped("the learner stopped before the budget was spent")
        finished, _ = ray.wait(actor_runs, num_returns=len(actor_runs), timeout=0)
        ray.get(finished)  # an actor that raised (Ray restarts the dead ones and reruns their loop) ends the run
        status = ray.get(counter.take.remote(), timeout=CALL_TIMEOUT_S)
        steps = status["steps"]
        returns += status["returns"]
        lengths += status["lengths"]
        if steps > progress_steps:
            last_progress, progress_steps = time.monotonic(), steps
        elif time.monotonic() - last_progress > job.settings.stall_seconds:
            raise RunStopped(f"no environment steps for {job.settings.stall_seconds:.0f} s (at {steps:,}): the actors "
                             "cannot act or the replay server does not take their items; every process was stopped")
        if steps < min(next_line, job.total_steps):
            continue
        version, state, _ = ray.get(learner.published_state.remote(-1), timeout=CALL_TIMEOUT_S)
        greedy = ray.get(evaluator.evaluate.remote(state, job.settings.eval_episodes, EVAL_SEED + 1000 * lines_written),
                         timeout=CALL_TIMEOUT_S)
        now = time.perf_counter()
        line = {
            "env_steps": float(steps), "episodes": float(len(returns)), "total_episodes": float(status["episodes"]),
            "episode_return": float(np.mean(returns)) if returns else float("nan"),
            "episode_length": float(np.mean(lengths)) if lengths else float("nan"),
            "greedy_return": float(np.mean(greedy)), "parameters_version": float(version),
            "steps_per_second": (steps - window_steps) / max(now - window_start, 1e-9),
            "elapsed_seconds": float(metadata.get("run_seconds", 0.0)) + now - start,
            **ray.get(learner.metrics.remote(), timeout=CALL_TIMEOUT_S),
        }
        history.append(line)
        lines_written += 1
        returns, lengths = [], []
        window_start, window_steps = now, steps
        next_line = (steps // metrics_every + 1) * metrics_every
        log(f"{steps:,} steps, {line['updates']:.0f} updates: greedy return {line['greedy_return']:.1f}, "
            f"training return {line['episode_return']:.1f}, {line['steps_per_second']:.0f} steps/s")
        if on_metrics is not None:
            on_metrics(line)
        if steps < job.total_steps and checkpoints is not None and checkpoints.due(steps):
            if _checkpoint(named, started, lines_written, steps, status, history, line["elapsed_seconds"], log):
                checkpoints.saved(steps)  # a failed one is tried again at the next line
        last_progress = time.monotonic()  # the evaluation and the checkpoint are not a stall
    # The budget is spent: each actor sees it at its next report. One that cannot come back (its node gone and
    # no room elsewhere) is not waited for beyond a minute; it is ended with the rest.
    _, missing = ray.wait(actor_runs, num_returns=len(actor_runs), timeout=60)
    if missing:
        log(f"{len(missing)} actor(s) did not stop within 60 s of the budget; ending them")
    ray.get(learner.stop.remote(), timeout=CALL_TIMEOUT_S)
    ray.wait([learner_run], timeout=10)  # its last sample may wait for items that will not come: not needed
    run_seconds = float(metadata.get("run_seconds", 0.0)) + time.perf_counter() - start
    final_state, updates = ray.get(learner.final_state.remote(), timeout=CALL_TIMEOUT_S)
    eval_start = time.perf_counter()
    final_returns = ray.get(evaluator.evaluate.remote(final_state, final_eval_episodes, EVAL_SEED + job.seed),
                            timeout=CALL_TIMEOUT_S)
    return {
        "state": final_state, "final_returns": np.asarray(final_returns), "env_steps": steps, "updates": updates,
        "history": history, "compile_seconds": compile_seconds, "run_seconds": run_seconds,
        "eval_seconds": time.perf_counter() - eval_start, "pids": pids,
        "resumed_from": metadata.get("chunks_done"),
    }


def _checkpoint(named, started, lines_written, steps, status, history, run_seconds, log) -> bool:
    """The learner checkpoints the replay, then itself; a failure (the replay server restarting) is logged
    and returns False."""
    import ray

    try:
        name, before, after = ray.get(named["learner"].checkpoint.remote(lines_written, steps, {
            "steps": steps, "episodes": status["episodes"], "chunks_done": lines_written, "history": history,
            "run_seconds": run_seconds, "replay_address": started["address"],
        }), timeout=CALL_TIMEOUT_S)
        log(f"checkpoint at {steps:,} steps (replay {name}: {before}-{after} items)")
        return True
    except ray.exceptions.RayTaskError as error:
        log(f"checkpoint at {steps:,} steps failed, the run goes on: {error.cause!r}")
        return False
