"""The single-file baselines keep working: each builds on its environments and trains a few steps.

Each file is imported as a module (not run as a script, to share this process's JAX), shrunk to
a tiny config, trained for a few hundred steps with ``rlkit.run_training`` and checked for finite
returns and moved parameters. Whether they *learn* is what their docstrings' commands show.
"""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import rlkit

BASELINES = Path(__file__).resolve().parents[1] / "baselines"

# Fields shrunk where a baseline's Config has them; everything else keeps its default.
TINY = {
    "num_envs": 2, "num_steps": 8, "num_minibatches": 2, "num_epochs": 1, "hidden_size": 8,
    "hidden_sizes": (8,), "buffer_size": 256, "batch_size": 8, "learning_starts": 32,
    "target_update_freq": 16, "epsilon_decay_steps": 64,
}

# Which environments each baseline must handle (the Reverb baseline is tested in the Reverb world).
CASES = [
    ("ppo", "CartPole-v1"),
    ("ppo", "Pendulum-v1"),
    ("dqn", "CartPole-v1"),
    ("pqn", "CartPole-v1"),
    ("recurrent_ppo", "CartPole-v1"),
    ("sac", "Pendulum-v1"),
    ("td3", "Pendulum-v1"),
]


def load(name: str):
    path = BASELINES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_device_baseline_is_covered():
    files = {p.stem for p in BASELINES.glob("*.py")} - {"dqn_reverb"}
    assert files == {name for name, _ in CASES}, "add new baselines to CASES"


@pytest.mark.parametrize("name,env_id", CASES)
def test_baseline_trains_a_few_steps(name, env_id):
    module = load(name)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    config = module.Config(**{k: v for k, v in TINY.items() if k in fields})
    agent_module = type("Baseline", (), {"make": staticmethod(module.make), "experience": staticmethod(module.experience)})
    env = rlkit.make_env(env_id)
    trainer = rlkit.make_trainer(agent_module, config, env, rlkit.RunConfig(total_steps=256, num_chunks=2, eval_episodes=2))
    result = rlkit.run_training(trainer, seeds=[0])
    assert np.isfinite(result.eval_returns).all()
    before = jax.tree.leaves(trainer.init(rlkit.seed_keys([0])[0]).agent_state)
    after = jax.tree.leaves(result.run_state.agent_state)
    moved = [not np.allclose(a, b[0]) for a, b in zip(before, after) if np.issubdtype(a.dtype, np.floating)]
    assert any(moved), "training must change the parameters"
