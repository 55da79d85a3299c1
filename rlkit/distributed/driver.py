"""``rlkit.distributed.run``: one seed of an agent with a replay server, a learner and N actors on Ray.

The driver (this process) starts Ray (``RayCluster``), then the run's processes as Ray actors:

- the replay server (``ReplayProcess``, on the driver's node, a fixed port; restarted by Ray from its
  last checkpoint if it dies),
- the learner (``LearnerProcess``; never restarted: its death ends the run, ``--resume`` continues it),
- N actors (``ActorProcess``, spread over the cluster's nodes; restarted by Ray if they die),
- the evaluator (``EvaluatorProcess``) and the step counter (``StepCounter``).

It then watches them: every ``metrics_every`` environment steps it writes a line of ``metrics.jsonl``
(training returns, the learner's metrics, a greedy evaluation) and, when due, has the learner checkpoint
itself and the replay. At the budget the actors stop, the learner stops, the final greedy evaluation is
written to ``results.json`` and the final state to ``final_states/``, as on the other backends, and
every process the run started is ended, on success, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlkit.distributed.cluster import LOOPBACK, RayCluster, free_port
from rlkit.distributed.job import DistributedSettings, Job
from rlkit.distributed.learner import LearnerProcess
from rlkit.distributed.processes import ActorProcess, EvaluatorProcess, ReplayProcess, StepCounter

EVAL_SEED = 10_000  # the final evaluation's seed offset, as rlkit.runs.runner's


class RunStopped(RuntimeError):
    """A process the run cannot go on without (the learner, the step counter) is gone."""


def _terminate(signum, frame):  # SIGTERM ends the run as Ctrl-C does: through the finally blocks
    raise KeyboardInterrupt(f"signal {signum}")


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
    here = ray.get_runtime_context().get_node_id()
    on_driver_node = NodeAffinitySchedulingStrategy(here, soft=False)
    near_driver = NodeAffinitySchedulingStrategy(here, soft=True)
    handles: dict[str, Any] = {}
    learner_class = ray.remote(num_cpus=1, num_gpus=settings.learner_gpus, max_restarts=0,
                               max_concurrency=8)(LearnerProcess)
    handles["learner"] = learner = learner_class.options(
        name=job.process_name("learner"), scheduling_strategy=near_driver if not settings.learner_gpus else None,
    ).remote(job, resume)
    metadata = ray.get(learner.restored_metadata.remote())
    if resume:  # the replay server loads the newest checkpoint in its directory: the learner's own
        keep = metadata.get("replay_checkpoint")
        replay_dir = Path(job.run_dir) / "replay"
        for path in (replay_dir.iterdir() if replay_dir.is_dir() else []):
            if path.is_dir() and path.name != keep:
                shutil.rmtree(path, ignore_errors=True)
    host = LOOPBACK if cluster.local else ray.util.get_node_ip_address()
    port = free_port()
    replay_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ReplayProcess)
    handles["replay"] = replay = replay_class.options(scheduling_strategy=on_driver_node).remote(job, port)
    address = f"{host}:{port}"
    log(f"replay server at {address} (Reverb listens on every interface: it has no bind option), "
        f"{ray.get(replay.size.remote())} items")
    counter_class = ray.remote(num_cpus=0, max_restarts=0)(StepCounter)
    handles["counter"] = counter_class.options(
        name=job.process_name("counter"), scheduling_strategy=on_driver_node,
    ).remote(job.total_steps, int(metadata.get("steps", 0)), int(metadata.get("episodes", 0)))
    actor_class = ray.remote(num_cpus=settings.actor_cpus, max_restarts=-1, max_task_retries=-1)(ActorProcess)
    handles["actors"] = [
        actor_class.options(scheduling_strategy="SPREAD").remote(job, i, address)
        for i in range(settings.num_actors)
    ]
    evaluator_class = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(EvaluatorProcess)
    handles["evaluator"] = evaluator_class.options(scheduling_strategy=near_driver).remote(job)
    return {"handles": handles, "address": address, "metadata": metadata}


def run(
    job: Job,
    *,
    metrics_every: int,
    final_eval_episodes: int = 20,
    ray_address: str | None = None,
    resume: bool = False,
    checkpoint_due: Callable[[int], bool] = lambda steps: False,
    on_metrics: Callable[[dict], Any] | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Train ``job`` on Ray; returns the final state, evaluations and counts (see the module docstring).

    ``checkpoint_due(env_steps)`` says after each metrics point whether to checkpoint; ``on_metrics`` gets
    every metrics line as it is written.
    """
    cluster = RayCluster(Path(job.run_dir), ray_address, num_cpus=_local_cpus(job.settings))
    main_thread = threading.current_thread() is threading.main_thread()  # only it may handle signals
    previous = signal.getsignal(signal.SIGTERM)
    handles: list[Any] = []
    try:
        info = cluster.start()  # before Ray is imported here: it reads the variables start() sets
        import ray

        if main_thread:  # after ray.init, which installs a handler of its own that aborts the driver
            signal.signal(signal.SIGTERM, _terminate)

        log(f"Ray {'joined at ' + str(info.get('address')) if not cluster.local else 'started on 127.0.0.1'}; "
            f"session files and logs under {Path(job.run_dir) / 'ray'}")
        started = start_processes(job, cluster, resume, log)
        named = started["handles"]
        handles = [named["learner"], named["replay"], named["counter"], *named["actors"], named["evaluator"]]
        pids = {name: ray.get(named[name].pid.remote()) for name in ("learner", "replay", "counter", "evaluator")}
        pids["actors"] = ray.get([a.pid.remote() for a in named["actors"]])
        log(f"processes: {pids}")
        log(f"actors on nodes: {ray.get([a.node.remote() for a in named['actors']])}")
        return _supervise(job, named, started, pids, metrics_every, final_eval_episodes, checkpoint_due,
                          on_metrics, log)
    except Exception as error:
        if _process_died(error):
            raise RunStopped(f"a process of the run died ({type(error).__name__}); every process of the run was "
                             "stopped; continue from the last checkpoint with --resume") from None
        raise
    finally:
        cluster.stop(handles)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _process_died(error: Exception) -> bool:
    import sys

    exceptions = sys.modules.get("ray.exceptions")
    return exceptions is not None and isinstance(error, exceptions.RayActorError)


def _local_cpus(settings: DistributedSettings) -> int:
    import math
    import os

    return max(os.cpu_count() or 1, 1 + math.ceil(settings.num_actors * settings.actor_cpus))


def _supervise(job, named, started, pids, metrics_every, final_eval_episodes, checkpoint_due, on_metrics, log):
    import ray

    learner, counter, evaluator = named["learner"], named["counter"], named["evaluator"]
    metadata = started["metadata"]
    compile_seconds = ray.get(learner.compile.remote())
    learner_run = learner.run.remote(started["address"])
    actor_runs = [actor.run.remote() for actor in named["actors"]]
    start = time.perf_counter()
    steps = int(metadata.get("steps", 0))
    chunks = int(metadata.get("chunks_done", 0))
    next_point = (steps // metrics_every + 1) * metrics_every
    window_start, window_steps = time.perf_counter(), steps
    returns, lengths = [], []
    history: list[dict] = list(metadata.get("history", []))
    while steps < job.total_steps:
        ready, _ = ray.wait([learner_run], timeout=0.5)
        if ready:
            ray.get(learner_run)  # raises RayActorError if it died
            raise RunStopped("the learner stopped before the budget was spent")
        finished, _ = ray.wait(actor_runs, num_returns=len(actor_runs), timeout=0)
        ray.get(finished)  # an actor that raised (Ray restarts the dead ones and reruns their loop) ends the run
        status = ray.get(counter.take.remote())
        steps = status["steps"]
        returns += status["returns"]
        lengths += status["lengths"]
        if steps < min(next_point, job.total_steps):
            continue
        version, state = ray.get(learner.parameters.remote(-1))
        greedy = ray.get(evaluator.evaluate.remote(state, job.settings.eval_episodes, EVAL_SEED + 1000 * chunks))
        now = time.perf_counter()
        line = {
            "env_steps": float(steps), "episodes": float(status["episodes"]),
            "episode_return": float(np.mean(returns)) if returns else float("nan"),
            "episode_length": float(np.mean(lengths)) if lengths else float("nan"),
            "greedy_return": float(np.mean(greedy)), "parameters_version": float(version),
            "steps_per_second": (steps - window_steps) / max(now - window_start, 1e-9),
            "elapsed_seconds": float(metadata.get("run_seconds", 0.0)) + now - start,
            **ray.get(learner.metrics.remote()),
        }
        history.append(line)
        chunks += 1
        returns, lengths = [], []
        window_start, window_steps = now, steps
        next_point = (steps // metrics_every + 1) * metrics_every
        log(f"{steps:,} steps, {line['updates']:.0f} updates: greedy return {line['greedy_return']:.1f}, "
            f"training return {line['episode_return']:.1f}, {line['steps_per_second']:.0f} steps/s")
        if on_metrics is not None:
            on_metrics(line)
        if steps < job.total_steps and checkpoint_due(steps):
            name, before, after = ray.get(learner.checkpoint.remote(chunks, steps, {
                "steps": steps, "episodes": status["episodes"], "chunks_done": chunks, "history": history,
                "run_seconds": line["elapsed_seconds"], "replay_address": started["address"],
            }))
            log(f"checkpoint at {steps:,} steps (replay {name}: {before}-{after} items)")
    ray.get(actor_runs)
    ray.get(learner.stop.remote())
    updates = ray.get(learner_run)
    run_seconds = float(metadata.get("run_seconds", 0.0)) + time.perf_counter() - start
    final_state = ray.get(learner.final_state.remote())
    eval_start = time.perf_counter()
    final_returns = ray.get(evaluator.evaluate.remote(final_state, final_eval_episodes, EVAL_SEED + job.seed))
    return {
        "state": final_state, "final_returns": np.asarray(final_returns), "env_steps": steps, "updates": updates,
        "history": history, "compile_seconds": compile_seconds, "run_seconds": run_seconds,
        "eval_seconds": time.perf_counter() - eval_start, "pids": pids,
        "resumed_from": metadata.get("chunks_done"),
    }
