"""One run split data-parallel over devices: each device steps its share of the environments.

``make_trainer(..., data_parallel=N)`` (``rlkit train --devices N --split envs``) builds the
ordinary trainer for one device's share of a run (``num_envs / N`` environments, the same
number of loop iterations) and runs it under ``jax.shard_map`` on a mesh of N devices:

- every leaf of the run state gets a leading device axis, split over the mesh;
- the agent's parameters and optimizer state start from the same key on every device and stay
  identical, because the agent averages its gradients with ``lax.pmean`` before the optimizer
  (``rlkit.parallel.average_gradients``); whole-batch statistics (advantage and observation
  normalization) are averaged the same way;
- environments and actions draw from keys of each device's own (``rlkit.parallel.device_key``);
- the chunk's metrics are combined over the devices (episode means weighted by episode counts,
  step counts summed), so the host sees one run, as on one device.

A minibatch of PPO is then ``num_minibatches``-th of the whole batch, made of equal shares of
every device's rollout. Only agents whose ``ExperienceSpec.data_parallel`` is set take part
(they size the run by ``num_envs``); replay agents split over seeds instead (``--split runs``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from rlkit import parallel
from rlkit.loops import device as loop

SPLIT = PartitionSpec(parallel.DATA_AXIS)  # one slice of the leading axis per device
WHOLE = PartitionSpec()  # the same value on every device


def check_split(agent_name: str, config: Any, experience: Any, devices: int) -> None:
    """One-line errors, before anything compiles, unless this run can be split over ``devices``."""
    if not experience.data_parallel:
        raise ValueError(f"--split envs: {agent_name} cannot split one run over devices (agents that can: ppo, "
                         "recurrent_ppo, impala); split the seeds instead (--split runs)")
    available = len(jax.devices())
    if not 1 <= devices <= available:
        raise ValueError(f"--devices {devices}: this machine has {available} {jax.default_backend()} device(s)")
    if experience.num_envs % devices:
        raise ValueError(f"num_envs={experience.num_envs} must be divisible by --devices {devices} "
                         "(each device steps num_envs / devices environments)")


def combine_metrics(summary: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """One run's chunk metrics from every device's: episode means weighted by the devices' episode
    counts, counts and steps summed, learner statistics averaged."""
    axis = parallel.DATA_AXIS
    count = summary["episodes"]
    total = jax.lax.psum(count, axis)
    out = {}
    for name, value in summary.items():
        if name in ("episode_return", "episode_length"):
            weighted = jax.lax.psum(jnp.where(count > 0, value * count, 0.0), axis)
            out[name] = jnp.where(total > 0, weighted / jnp.maximum(total, 1), jnp.nan)
        elif name in ("episodes", "env_steps"):
            out[name] = jax.lax.psum(value, axis)
        else:
            out[name] = jax.lax.pmean(value, axis)
    return out


def make_data_parallel_trainer(
    agent_module: Any, config: Any, env: Any, run: loop.RunConfig, devices: int
) -> loop.Trainer:
    """The trainer of one run whose environments are split over the first ``devices`` devices."""
    experience = agent_module.experience(config)
    check_split(getattr(agent_module, "__name__", "agent").rsplit(".", 1)[-1], config, experience, devices)
    try:
        share = dataclasses.replace(config, num_envs=config.num_envs // devices)
    except ValueError as error:
        raise ValueError(f"--devices {devices}: one device's share of the run ({config.num_envs // devices} "
                         f"environments): {error}") from None
    local = loop.make_trainer(agent_module, share, env, dataclasses.replace(run, total_steps=run.total_steps // devices))
    plan = local.plan._replace(steps_per_iteration=local.plan.steps_per_iteration * devices)
    mesh = Mesh(np.asarray(jax.devices()[:devices]), (parallel.DATA_AXIS,))

    def on_devices(fn, in_specs, out_specs):
        def traced(*args):
            with parallel.over_devices():
                return fn(*args)

        # check_vma=False: library code (rlax's scans) starts loop carries from constants, which JAX's
        # check of device-varying values rejects; what leaves as WHOLE is reduced over the devices first.
        return jax.shard_map(traced, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def own(tree):  # this device's slice, without its axis of one
        return jax.tree.map(lambda x: x[0], tree)

    def stacked(tree):  # a device's value as its slice of the split axis
        return jax.tree.map(lambda x: x[None], tree)

    def init(key: jax.Array, hparams: loop.HParams = {}) -> loop.RunState:
        return on_devices(lambda k, hp: stacked(local.init(k, hp)), (WHOLE, WHOLE), SPLIT)(key, hparams)

    def run_chunk(run_state: loop.RunState, hparams: loop.HParams = {}, data: Any = ()):
        del data  # an online run learns from its own rollouts

        def chunk(state, hp):
            state, summary = local.run_chunk(own(state), hp)
            return stacked(state), combine_metrics(summary)

        return on_devices(chunk, (SPLIT, WHOLE), (SPLIT, WHOLE))(run_state, hparams)

    def evaluate(agent_state: Any, key: jax.Array, hparams: loop.HParams = {}) -> jax.Array:
        return local.evaluate(own(agent_state), key, hparams)  # every device holds the same parameters

    def train(key: jax.Array, hparams: loop.HParams = {}):
        run_state = init(key, hparams)
        return jax.lax.scan(lambda state, _: run_chunk(state, hparams), run_state, None, length=plan.num_chunks)

    return loop.Trainer(init, run_chunk, evaluate, train, plan, experience)
