"""rlkit: a functional, pure-JAX reinforcement-learning research kit.

An agent is ``Agent(init, act, update, init_carry)``, four pure functions over one
pytree; the training loop is a jitted ``lax.scan`` that vmaps over seeds and
hyperparameters. The core never imports TensorFlow or Reverb.
"""

from rlkit import lazy_imports

lazy_imports.defer()  # before gymnax and rlax are imported: see rlkit.lazy_imports

from rlkit import agents, config, datasets, envs, networks, presets, replay  # noqa: E402
from rlkit.agents import dqn, ppo
from rlkit.envs import make as make_env
from rlkit.loops.device import RunConfig, RunState, Trainer, evaluate_policy, make_trainer
from rlkit.runs.runner import CompiledRun, TrainingResult, compile_training, run_training, seed_keys
from rlkit.runs.trained import TrainedRun, evaluate_trained, load
from rlkit.stats import mean_interval
from rlkit.types import (
    ActOutput,
    Agent,
    AgentFactory,
    EnvSpec,
    ExperienceSpec,
    Trajectory,
    Transition,
)

__version__ = "0.1.0"

__all__ = [
    "ActOutput", "Agent", "AgentFactory", "CompiledRun", "EnvSpec", "ExperienceSpec", "RunConfig", "RunState", "Trainer",
    "TrainedRun", "TrainingResult", "Trajectory", "Transition", "agents", "compile_training", "config", "datasets", "dqn", "envs", "evaluate_policy",
    "evaluate_trained", "load", "make_env", "make_trainer", "mean_interval", "networks", "ppo", "presets", "replay", "run_training", "seed_keys",
]
