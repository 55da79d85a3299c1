"""Do the offline agents learn from recorded data? The whole cycle, fixed seeds, fixed thresholds.

Each dataset is recorded by the test itself from a short online run: ``rlkit train`` then
``rlkit collect`` for the expert CartPole data (the commands a user runs), ``collect_episodes``
for the mixed datasets. The offline agents train 4 seeds vmapped in one compile on their
presets (``--steps`` are gradient steps) and are judged by the mean final greedy return.
"""

import subprocess
import sys

import jax
import numpy as np
import pytest

from rlkit import RunConfig, agents, datasets, load, make_env, make_trainer, presets, run_training
from rlkit.loops.offline import collect_episodes
from rlkit.runs.collect import COLLECT_SEED

pytestmark = pytest.mark.learning
minari = pytest.importorskip("minari")

SEEDS = [0, 1, 2, 3]


def rlkit(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "rlkit", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def trained_run(tmp_path_factory, agent: str, env_id: str) -> str:
    out = tmp_path_factory.mktemp("online") / f"{agent}-{env_id}"
    steps = presets.get(agent, env_id).steps
    rlkit("train", "--agent", agent, "--env", env_id, "--seeds", "1", "--steps", str(steps), "--quiet",
          "--out", str(out))
    return str(out)


def mixed(run_dir: str, out, env_id: str, policies: list[str], episodes_each: int):
    """Episodes of one trained policy acting in several ways, saved as one dataset."""
    run = load(run_dir)
    recorded = []
    for index, policy in enumerate(policies):
        recorded += collect_episodes(run.env, run.agent, run.state(0), jax.random.key(100 + index), episodes_each,
                                     policy)
    return datasets.load(datasets.save(out, recorded, run.env.spec, {"env": env_id, "policy": "+".join(policies)}))


def offline(agent: str, dataset, env_id: str, **overrides) -> np.ndarray:
    preset = presets.get(agent, env_id)
    config = presets.config_for(agent, env_id, overrides)
    trainer = make_trainer(agents.get(agent), config, make_env(env_id),
                           RunConfig(total_steps=preset.steps, num_chunks=2), dataset=dataset)
    result = run_training(trainer, SEEDS)
    per_seed = result.eval_returns.mean(axis=1)
    print(f"{agent}{overrides or ''} on {dataset.path.name} ({dataset.num_steps} steps), {preset.steps} gradient "
          f"steps: {np.round(per_seed, 1).tolist()}, compile {result.compile_seconds:.1f} s, "
          f"run {result.run_seconds:.1f} s")
    return per_seed


@pytest.fixture(scope="module")
def cartpole_expert(tmp_path_factory):
    return trained_run(tmp_path_factory, "ppo", "CartPole-v1")


def test_bc_imitates_50_expert_cartpole_episodes(cartpole_expert, tmp_path):
    printed = rlkit("collect", cartpole_expert, "--episodes", "50", "--policy", "greedy",
                    "--out", str(tmp_path / "cartpole-expert-v0"))
    dataset = datasets.load(tmp_path / "cartpole-expert-v0")
    assert len(dataset.episode_lengths) == 50 and "50 episodes" in printed
    assert dataset.metadata["rlkit"]["policy"] == "greedy" and dataset.metadata["rlkit"]["env"] == "CartPole-v1"
    # Minari's own reader gives back exactly the episodes the command recorded (the same keys record them again).
    run = load(cartpole_expert)
    recorded = collect_episodes(run.env, run.agent, run.state(0), jax.random.key(COLLECT_SEED), 50, "greedy")
    opened = minari.MinariDataset(tmp_path / "cartpole-expert-v0" / "data")
    for episode, expected in zip(opened.iterate_episodes(), recorded, strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(episode, field), getattr(expected, field), err_msg=field)
    assert offline("bc", dataset, "CartPole-v1").mean() >= 475


def test_cql_on_mixed_cartpole_data_beats_plain_offline_q_learning(cartpole_expert, tmp_path):
    dataset = mixed(cartpole_expert, tmp_path / "cartpole-mixed-v0", "CartPole-v1", ["greedy", "epsilon=0.5"], 25)
    cql = offline("cql", dataset, "CartPole-v1")
    bc = offline("bc", dataset, "CartPole-v1")
    without_penalty = offline("cql", dataset, "CartPole-v1", penalty_coef=0.0)  # offline double DQN
    print(f"mixed CartPole: CQL {cql.mean():.1f}, BC {bc.mean():.1f}, without the penalty {without_penalty.mean():.1f}")
    assert cql.mean() >= 400 and cql.mean() >= bc.mean()
    assert without_penalty.mean() < cql.mean()


@pytest.fixture(scope="module")
def noisy_pendulum(tmp_path_factory):
    """A noisy SAC policy: its greedy action, or a uniform random one at half the steps; and BC on it."""
    sac = trained_run(tmp_path_factory, "sac", "Pendulum-v1")
    dataset = mixed(sac, tmp_path_factory.mktemp("data") / "pendulum-noisy-v0", "Pendulum-v1", ["epsilon=0.5"], 50)
    return dataset, offline("bc", dataset, "Pendulum-v1")


@pytest.mark.slow_learning
@pytest.mark.parametrize("agent", ["iql", "cql"])
def test_iql_and_continuous_cql_on_noisy_pendulum_data_beat_bc(noisy_pendulum, agent):
    dataset, bc = noisy_pendulum
    returns = offline(agent, dataset, "Pendulum-v1")
    print(f"noisy Pendulum: {agent} {returns.mean():.1f}, BC {bc.mean():.1f}")
    assert returns.mean() >= -300 and returns.mean() > bc.mean()
