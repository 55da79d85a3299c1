"""What every process of a distributed run is given (``Job``) and builds from it (``Built``).

A ``Job`` is plain data (the agent module's name, its config, the environment id, paths and sizes), so
Ray sends it to each process; each process then builds the agent, its experience spec, the Reverb
feeder and the example item itself (``build``), exactly as the one-process Reverb loop does.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, NamedTuple


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """How a distributed run is laid out, beyond the agent's config.

    Attributes:
      num_actors: actor processes, each stepping ``envs_per_actor`` host environments.
      envs_per_actor: environments each actor steps side by side (one jitted act for all of them).
      refresh_every: environment steps of one actor between parameter refreshes from the learner (and
        reports to the step counter).
      publish_every: learner updates between the parameters it publishes.
      eval_episodes: greedy episodes the evaluator plays at every metrics point.
      timeout_s: how long an actor's flush waits for the replay server (or its rate limiter) before the
        actor replaces its writer, and how long a learner's sample waits before it tries again.
      stall_seconds: a run whose step count does not move for this long is stopped, saying so.
      actor_cpus: CPUs Ray reserves for each actor process (fractions share a core).
      learner_gpus: accelerators Ray reserves for the learner; default one when the cluster has any, else 0
        (JAX in the Reverb world is a CPU build: the learner computes on an accelerator only where that
        world has JAX's CUDA plugin installed).
      keep_checkpoints: the learner's and the replay's checkpoints kept (the newest).
    """

    num_actors: int = 2
    envs_per_actor: int = 1
    refresh_every: int = 100
    publish_every: int = 10
    eval_episodes: int = 5
    timeout_s: float = 60.0
    stall_seconds: float = 600.0
    actor_cpus: float = 0.5
    learner_gpus: float | None = None
    keep_checkpoints: int = 2

    def __post_init__(self):
        for name in ("num_actors", "envs_per_actor", "refresh_every", "publish_every", "eval_episodes",
                     "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DistributedSettings.{name} must be an integer >= 1, got {value!r}")
        if self.timeout_s <= 0 or self.stall_seconds <= 0 or self.actor_cpus < 0 or (self.learner_gpus or 0) < 0:
            raise ValueError("DistributedSettings: timeout_s and stall_seconds must be > 0, actor_cpus and "
                             "learner_gpus >= 0")


@dataclasses.dataclass(frozen=True)
class Job:
    """One run, as every process needs it."""

    agent: str  # the agent module's import name, e.g. "rlkit.agents.dqn"
    config: Any
    env: str  # a host environment id for make_host, e.g. "gym:CartPole-v1"
    total_steps: int
    seed: int
    run_dir: str
    identity: dict
    settings: DistributedSettings
    name: str = "rlkit"  # names the run's learner and counter, which the actors look up (unique per run)

    def process_name(self, role: str) -> str:
        return f"{self.name}-{role}"


class Built(NamedTuple):
    agent_module: Any
    spec: Any  # ExperienceSpec
    feeder: Any  # a Reverb feeder for the spec's kind
    env_spec: Any
    agent: Any
    state: Any  # a freshly initialized AgentState (seed ``job.seed``)
    example: Any  # one item as the table stores it


def agent_module_named(name: str) -> Any:
    return importlib.import_module(name)


def build_agent(job: Job) -> tuple[Any, Any, Any, Any]:
    """``(agent_module, env_spec, agent, state)``, the state freshly initialized (seed ``job.seed``); no Reverb."""
    import jax

    from rlkit.envs import environment_spec, make_host
    from rlkit.loops.environment_loop import KEY_IMPL

    module = agent_module_named(job.agent)
    env_spec = environment_spec(make_host(job.env, seed=job.seed))
    agent = module.make(job.config, env_spec, job.total_steps)
    return module, env_spec, agent, agent.init(jax.random.key(job.seed, impl=KEY_IMPL))


def build(job: Job) -> Built:
    """The agent, its Reverb feeder and the example item, as in ``HostExperiment`` (imports Reverb)."""
    from rlkit.loops.reverb_feeders import REVERB_FEEDERS, HostSettings

    module, env_spec, agent, state = build_agent(job)
    spec = module.experience(job.config)
    settings = HostSettings(num_envs=job.settings.envs_per_actor, timeout_s=job.settings.timeout_s, prefetch=False)
    feeder = REVERB_FEEDERS[spec.kind](spec, settings)
    return Built(module, spec, feeder, env_spec, agent, state, feeder.example(agent, state, env_spec))


def replay_directory(job: Job) -> Path:
    from rlkit.runs.rundir import REPLAY_DIR

    return Path(job.run_dir) / REPLAY_DIR
