"""Do the continuous-control agents learn? Presets, fixed seeds, fixed thresholds.

Each test trains 4 seeds vmapped in one compile on its (agent, Pendulum-v1) preset and step
budget (``rlkit.presets``) and checks the mean final greedy evaluation return (32 episodes per
seed). For scale: SB3 reports about -157 (SAC) and -152 (TD3) on Pendulum at 2e4 steps.
"""

import numpy as np
import pytest

from rlkit import RunConfig, agents, make_env, make_trainer, presets, run_training

pytestmark = pytest.mark.learning

SEEDS = [0, 1, 2, 3]


def final_eval(agent, env_id="Pendulum-v1"):
    preset = presets.get(agent, env_id)
    trainer = make_trainer(
        agents.get(agent), presets.config_for(agent, env_id), make_env(env_id),
        RunConfig(total_steps=preset.steps, num_chunks=2),
    )
    result = run_training(trainer, SEEDS)
    per_seed = result.eval_returns.mean(axis=1)
    print(f"{agent} on {env_id}, {trainer.plan.total_steps} steps: eval per seed {np.round(per_seed, 1).tolist()}, "
          f"compile {result.compile_seconds:.1f} s, run {result.run_seconds:.1f} s")
    return preset.steps, per_seed


def test_sac_learns_pendulum_within_2e4_steps():
    steps, per_seed = final_eval("sac")
    assert steps <= 20_000
    assert per_seed.mean() >= -250, per_seed


@pytest.mark.slow_learning
def test_d4pg_learns_pendulum_within_3e4_steps():
    steps, per_seed = final_eval("d4pg")
    assert steps <= 30_000
    assert per_seed.mean() >= -250, per_seed


@pytest.mark.slow_learning
def test_mpo_learns_pendulum_within_3e4_steps():
    steps, per_seed = final_eval("mpo")
    assert steps <= 30_000
    assert per_seed.mean() >= -250, per_seed


def test_td3_learns_pendulum_within_3e4_steps():
    steps, per_seed = final_eval("td3")
    assert steps <= 30_000
    assert per_seed.mean() >= -250, per_seed
