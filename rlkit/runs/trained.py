"""A finished ``train`` run loaded back: its agent, final state per seed and environment.

``load(RUN_DIR)`` reads what the run recorded (``results.json`` names the agent, environment,
config and seeds) and the final agent state of every seed: ``final_states/all_seeds`` of a device
run (its last checkpoint for runs from before those were kept), ``final_states/seed_S`` of a
Reverb run. ``evaluate_trained`` replays the final greedy evaluation with the
same keys, so ``rlkit eval RUN_DIR`` prints the returns ``results.json`` holds for the same seeds
and episode count. Nothing here needs Reverb: a Reverb run is evaluated on its host environment
with the host ``Actor``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from rlkit.types import Agent, AgentState

HOST_BACKENDS = ("reverb", "distributed")  # runs whose final states act in host environments
ALL_SEEDS = "all_seeds"  # final_states/all_seeds: a device run's final agent states, leading axis over seeds


class TrainedRun(NamedTuple):
    """A finished run, ready for ``agent.act``.

    Attributes:
      agent: the agent, built for the run's environment and step budget.
      agent_state: the final agent state of every seed, leading axis over ``seeds``.
      env: the device environment (``rlkit.envs.make``'s), or for a Reverb run a
        ``seed -> dm_env.Environment`` factory of its host environment.
      config: the agent's config as trained.
      seeds: the run's seeds, in the order of ``agent_state``'s leading axis.
      backend: ``"device"``, ``"reverb"`` or ``"distributed"`` (the last two act in host environments).
      results: the run's ``results.json``.
      run_dir: where it was loaded from.
    """

    agent: Agent
    agent_state: AgentState
    env: Any
    config: Any
    seeds: list[int]
    backend: str
    results: dict[str, Any]
    run_dir: Path

    def state(self, seed: int) -> AgentState:
        """The final agent state of one seed (no leading axis)."""
        return jax.tree.map(lambda x: x[self.index(seed)], self.agent_state)

    def index(self, seed: int) -> int:
        if seed not in self.seeds:
            raise ValueError(f"--seed {seed}: the run in {self.run_dir} trained seeds {self.seeds}")
        return self.seeds.index(seed)


def _results(run_dir: Path) -> dict[str, Any]:
    from rlkit.runs.records import RESULTS_FILE

    path = run_dir / RESULTS_FILE
    try:
        present = path.exists()
    except OSError as error:
        raise ValueError(f"RUN_DIR {run_dir}: cannot be read ({error.strerror or error})") from None
    if not present:
        what = "no such directory" if not run_dir.is_dir() else f"no {RESULTS_FILE}: the run has not finished"
        raise ValueError(f"RUN_DIR {run_dir}: {what} (train it to the end, or --resume it)")
    return json.loads(path.read_text(encoding="utf-8"))


def _config(module: Any, saved: dict[str, Any]) -> Any:
    """The agent's Config from its JSON form, validated as it was."""
    from rlkit.config import from_dict

    return from_dict(module.Config, saved)


def load(run_dir: str | Path) -> TrainedRun:
    """Load a finished run's agent, final state per seed and environment (device or Reverb runs)."""
    from rlkit import agents

    run_dir = Path(run_dir)
    results = _results(run_dir)
    module = agents.get(results["agent"])
    config = _config(module, results["config"])
    if results.get("backend", "device") in HOST_BACKENDS:
        return _load_host(run_dir, results, module, config)
    return _load_device(run_dir, results, module, config)


def _device_env(results: dict[str, Any]) -> Any:
    from rlkit import envs

    observe = results.get("observe")
    return envs.make(results["env"], observe=tuple(observe) if observe else None)


def _online_trainer(results: dict[str, Any], module: Any, config: Any, env: Any) -> Any:
    from rlkit.loops.device import RunConfig, make_trainer

    run = RunConfig(total_steps=results["total_steps"], num_chunks=results["num_chunks"],
                    eval_episodes=results["eval_episodes"])
    return make_trainer(module, config, env, run)


def _load_device(run_dir: Path, results: dict[str, Any], module: Any, config: Any) -> TrainedRun:
    from rlkit.runs.checkpoint import restore_state
    from rlkit.runs.rundir import FINAL_STATES_DIR
    from rlkit.runs.runner import seed_keys

    env = _device_env(results)
    seeds = list(results["seeds"])
    offline = "dataset" in results
    horizon = results["total_steps"]  # the plan's environment steps, or offline its gradient steps
    if offline:
        from rlkit.loops.offline import agent_horizon

        horizon = agent_horizon(module.experience(config), horizon)
    split = results.get("envs_split_over_devices")  # the saved state is one device's share of the run
    agent = module.make(dataclasses.replace(config, num_envs=config.num_envs // split) if split else config,
                        env.spec, horizon)
    final = run_dir / FINAL_STATES_DIR / ALL_SEEDS
    if offline and not final.is_dir():
        raise ValueError(f"{run_dir}: an offline run without {FINAL_STATES_DIR}/{ALL_SEEDS} (it did not finish); "
                         "finish it with --resume")
    if final.is_dir():  # the agent states alone, written at the end of the run
        like = jax.eval_shape(jax.vmap(agent.init), seed_keys(seeds))
        try:
            state = restore_state(final, like)
        except Exception as error:  # orbax raises many types for a tree of another shape
            raise _does_not_fit(run_dir, error) from None
    else:  # an online run from before final states were kept: its last checkpoint
        state = _from_last_checkpoint(run_dir, _online_trainer(results, module, config, env), seeds).agent_state
    return TrainedRun(agent, jax.tree.map(np.asarray, state), env, config, seeds, "device", results, run_dir)


def _from_last_checkpoint(run_dir: Path, trainer: Any, seeds: list[int]) -> Any:
    import orbax.checkpoint as ocp

    from rlkit.runs.checkpoint import CHECKPOINT_DIR, restore_target
    from rlkit.runs.runner import seed_keys

    directory = (run_dir / CHECKPOINT_DIR).resolve()
    if not directory.is_dir():
        raise ValueError(f"RUN_DIR {run_dir}: neither final_states/ nor checkpoints/ is there (were they "
                         "deleted?); the trained state is gone")
    raw = restore_target(jax.eval_shape(lambda k: jax.vmap(trainer.init)(k, {}), seed_keys(seeds)))
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        step = manager.latest_step()
        if step != trainer.plan.num_chunks:
            found = "no checkpoint" if step is None else f"its last checkpoint is after chunk {step}"
            raise ValueError(f"RUN_DIR {run_dir}: {found}, not one after the final chunk "
                             f"{trainer.plan.num_chunks}; the final state is missing")
        try:
            return manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(raw))).state
        except Exception as error:  # orbax raises many types for a tree of another shape
            raise _does_not_fit(run_dir, error) from None
    finally:
        manager.close()


def _load_host(run_dir: Path, results: dict[str, Any], module: Any, config: Any) -> TrainedRun:
    from rlkit.envs import environment_spec, make_host
    from rlkit.loops.environment_loop import KEY_IMPL
    from rlkit.runs.checkpoint import restore_state
    from rlkit.runs.rundir import FINAL_STATES_DIR

    env_id = results["env"]
    make_env: Callable[[int], Any] = lambda seed: make_host(env_id, seed=seed)  # noqa: E731
    try:
        spec = environment_spec(make_env(0))
    except ImportError as error:  # gymnasium or dm-control missing in this environment
        raise ValueError(f"RUN_DIR {run_dir}: its environment {env_id} needs a package this Python lacks "
                         f"({error})") from None
    agent = module.make(config, spec, results["total_steps"])
    like = agent.init(jax.random.key(0, impl=KEY_IMPL))
    seeds = list(results["seeds"])
    states = []
    for seed in seeds:
        path = run_dir / FINAL_STATES_DIR / f"seed_{seed}"
        if not path.is_dir():
            raise ValueError(f"RUN_DIR {run_dir}: no final state for seed {seed} ({path}); runs trained before "
                             "rlkit saved final states cannot be loaded")
        try:
            states.append(restore_state(path, like))
        except Exception as error:
            raise _does_not_fit(run_dir, error) from None
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)
    return TrainedRun(agent, stacked, make_env, config, seeds, results["backend"], results, run_dir)


def _does_not_fit(run_dir: Path, error: Exception) -> ValueError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(f"RUN_DIR {run_dir}: the saved agent state does not fit this rlkit's ({first[:160]}); "
                      "was it written by another rlkit version? results.json names the versions")


POLICIES = ("greedy", "sample")


def evaluate_trained(run: TrainedRun, episodes: int | None = None, seeds: Sequence[int] | None = None,
                     policy: str = "greedy") -> np.ndarray:
    """Returns ``[len(seeds), episodes]`` with the keys the run's final evaluation used.

    ``episodes`` defaults to the run's ``eval_episodes`` and ``seeds`` to all of its seeds; with
    both at their defaults and the ``greedy`` policy the per-seed means equal ``results.json``'s.
    ``policy="sample"`` draws each action from the policy as it acts while training: epsilon-greedy at
    the schedule's final epsilon for value-based agents (R2D2's per-environment epsilons spread over the
    episodes), IMPALA's lagged parameters where it has a ``policy_lag``.
    """
    from rlkit.runs.runner import EVAL_SEED

    episodes = run.results["eval_episodes"] if episodes is None else episodes
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    if policy not in POLICIES:
        raise ValueError(f"--policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    deterministic = policy == "greedy"
    seeds = run.seeds if seeds is None else list(seeds)
    indices = [run.index(seed) for seed in seeds]
    if run.backend in HOST_BACKENDS:
        return _evaluate_host(run, episodes, seeds, indices, EVAL_SEED, deterministic)
    return _evaluate_device(run, episodes, seeds, indices, EVAL_SEED, deterministic)


def _evaluate_host(run: TrainedRun, episodes: int, seeds: list[int], indices: list[int], eval_seed: int,
                   deterministic: bool):
    from rlkit.loops.environment_loop import Actor, evaluate_actor

    out = []
    for seed, index in zip(seeds, indices):
        state = jax.tree.map(lambda x: x[index], run.agent_state)
        actor = Actor(run.agent, state, deterministic=deterministic)
        out.append(evaluate_actor(actor, run.env(eval_seed + seed), episodes, eval_seed + seed))
    return np.stack(out)


def _evaluate_device(run: TrainedRun, episodes: int, seeds: list[int], indices: list[int], eval_seed: int,
                     deterministic: bool):
    from rlkit.loops.device import evaluate_policy
    from rlkit.runs.runner import batched, default_compiler_options, seed_keys

    state = jax.tree.map(lambda x: x[np.asarray(indices)], run.agent_state)
    keys = seed_keys([eval_seed + seed for seed in seeds])

    def evaluate(agent_state, key):
        return evaluate_policy(run.env, run.agent, agent_state, key, episodes, deterministic)

    evaluate_fn = jax.jit(batched(evaluate, len(seeds)))
    compiled = evaluate_fn.lower(state, keys).compile(compiler_options=default_compiler_options())
    return np.asarray(compiled(state, keys))
