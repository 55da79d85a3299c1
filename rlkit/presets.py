"""Reference settings for each (agent, environment) pair we test, in one place.

``python -m rlkit train``, ``sweep``, ``scripts/bench.py`` and the learning tests all start
from ``config_for(agent, env_id)``: the agent's ``Config()`` defaults with the pair's preset
applied, then any ``--set`` overrides. A pair without a preset gets the plain defaults.

Each preset records the step budget it was tuned for and the mean final greedy return it
reached there (fixed seeds 0-3 unless the note says otherwise), so a reader can tell what a
preset is good for without running it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple


class Preset(NamedTuple):
    """Settings for one (agent, env) pair.

    Attributes:
      settings: config fields that differ from the agent's defaults.
      steps: the step budget these settings were tuned for (gradient steps for the offline agents).
      note: where the settings come from and what they reached.
    """

    settings: Mapping[str, Any]
    steps: int
    note: str = ""


PRESETS: dict[tuple[str, str], Preset] = {
    ("ppo", "CartPole-v1"): Preset({}, 500_000, "the defaults; 500.0 on seeds 0-3 at 5e5 steps"),
    ("dqn", "CartPole-v1"): Preset(
        {"target_update_freq": 1000},
        500_000,
        "495.7 mean on seeds 0-15 at 5e5 steps (lowest 465.8); with the default target period of 500 "
        "one seed in eight collapses late (465.0 on seeds 0-7, 430.1 on seeds 0-3 in one compile, 448.8 "
        "in another: which seed collapses depends on XLA's rounding)",
    ),
    ("c51", "CartPole-v1"): Preset(
        {"v_min": 0.0, "v_max": 100.0, "num_atoms": 21, "hidden_sizes": (64, 64)},
        500_000,
        "support [0, 100] covers the discounted returns; 500.0 on seeds 0-3 at 5e5 steps "
        "(51 atoms also 500.0, about twice as slow on CPU)",
    ),
    ("rainbow", "CartPole-v1"): Preset(
        {"v_min": 0.0, "v_max": 100.0, "num_atoms": 21, "hidden_sizes": (64, 64)},
        300_000,
        "C51's support and network with Rainbow's components: 500.0 on seeds 0-3 at 3e5 steps (and at 5e5)",
    ),
    ("qrdqn", "CartPole-v1"): Preset(
        {"num_atoms": 11, "huber_kappa": 10.0, "learning_rate": 5e-4, "target_update_freq": 1000},
        500_000,
        "500.0 on seeds 0-7 at 5e5 steps with DQN's 256x256 network (with 64x64: 424-493 on seeds "
        "0-3, one seed collapsing late, depending on XLA's rounding); with huber_kappa=1 and DQN's "
        "learning rate the values diverge on CartPole's returns of up to 100",
    ),
    ("recurrent_ppo", "CartPole-v1"): Preset(
        {"num_envs": 64, "num_steps": 32, "num_minibatches": 2, "learning_rate": 1e-3, "memory_size": 64,
         "hidden_sizes": (64,)},
        1_000_000,
        "tuned with the velocities hidden (--observe 0,2): 467 mean (500, 500, 374, 495) on seeds 0-3 at 1e6 "
        "steps; feedforward PPO on the same masked task: 42",
    ),
    ("impala", "CartPole-v1"): Preset(
        {}, 500_000,
        "the defaults (policy_lag=1): 490.0 on seeds 0-3, 464.6 on seeds 4-7 at 5e5 steps; without V-trace's "
        "correction 477.9 on seeds 0-3 (CartPole's policy moves little per update: see README)",
    ),
    ("r2d2", "CartPole-v1"): Preset(
        {"core": "gru"},
        500_000,
        "tuned with the velocities hidden (--observe 0,2): 465 mean (500, 500, 498, 364) on seeds 0-3 at 5e5 "
        "steps with a GRU core; the paper's LSTM core reached 313 there",
    ),
    ("pqn", "CartPole-v1"): Preset({}, 500_000, "the defaults; 500.0 on seeds 0-3 (and 4-7) at 5e5 steps"),
    # The host path (--backend reverb): one gymnasium env, every transition through Reverb.
    ("dqn", "gym:CartPole-v1"): Preset(
        {"num_envs": 1, "num_steps": 2, "batch_size": 64, "learning_starts": 1_000, "learning_rate": 2.3e-3,
         "anneal_lr": True, "n_step": 1, "target_update_freq": 256, "epsilon_end": 0.04,
         "epsilon_decay_steps": 8_000, "hidden_sizes": (256, 256)},
        50_000,
        "rl-baselines3-zoo's CartPole DQN (an update every 2 steps, batch 64, target copied every 256 "
        "steps, epsilon to 0.04 over 8k steps), lr annealed; final greedy 500, 120, 500 on seeds 0-2 at "
        "5e4 steps (seed 1 held 500 from 35k to 45k, then collapsed); stopped at the first 5-episode "
        "greedy >= 495 (22.5k-30k steps, 1e5-step schedule), 496-500 over 20 fresh episodes on seeds 0-3",
    ),
    ("impala", "gym:CartPole-v1"): Preset(
        {"policy_lag": 0},
        500_000,
        "the host path (--backend reverb, 16 host envs): the queue is the lag, so policy_lag=0; final greedy "
        "493, 490, 488, 489 over 20 fresh episodes on seeds 0-3 at 5e5 steps, 15-19 s each at about 27k steps/s",
    ),
    ("r2d2", "gymnax:MemoryChain-bsuite"): Preset(
        {"num_envs": 8, "num_steps": 4, "buffer_size": 20_000, "learning_starts": 1_000, "batch_size": 32,
         "sequence_length": 12, "sequence_period": 6, "burn_in": 2, "n_step": 3, "target_update_freq": 500,
         "memory_size": 32, "hidden_sizes": (32,), "core": "gru"},
        30_000,
        "the host path (--backend reverb, 8 host envs); bsuite's memory chain, 5 steps of memory, chance 0: "
        "a 50-episode greedy mean >= 0.95 first at 5k steps on seeds 0-3, then 1.0 over 100 fresh episodes "
        "(feedforward DQN on the device: 0.0)",
    ),
    ("sac", "dm_control:cartpole-balance"): Preset(
        {"num_envs": 2, "batch_size": 128, "hidden_sizes": (64, 64), "buffer_size": 50_000,
         "learning_starts": 2_000, "learning_rate": 1e-3, "tau": 0.02},
        50_000,
        "Acme's quickstart task on the host path; num_envs=2 with one host env: an update every 2 steps. "
        "A 2-episode greedy return >= 850 first at 15k-20k steps on seeds 0-2, then 889-956 over 5 fresh "
        "episodes (a uniform policy: about 400)",
    ),
    ("ppo", "Pendulum-v1"): Preset(
        {"num_envs": 16, "num_steps": 64, "gamma": 0.95, "learning_rate": 1e-3, "ent_coef": 0.0,
         "normalize_observations": True, "normalize_rewards": True},
        1_000_000,
        "continuous PPO, clipped Gaussian; -162 mean (-151..-176) on seeds 0-3 at 1e6 steps "
        "(gymnax-blines: -130 at 1e6)",
    ),
    ("sac", "Pendulum-v1"): Preset(
        {"num_envs": 4, "updates_per_step": 2, "hidden_sizes": (64, 64), "buffer_size": 20_000,
         "batch_size": 128, "learning_starts": 1_000, "learning_rate": 1e-3, "tau": 0.02},
        20_000,
        "one update per 2 transitions; -148 mean on seeds 0-3, -141 on 4-7, -152 on 8-11 at 2e4 "
        "steps (SB3 SAC: -157 at 2e4)",
    ),
    ("td3", "Pendulum-v1"): Preset(
        {"num_envs": 4, "updates_per_step": 2, "hidden_sizes": (64, 64), "buffer_size": 30_000,
         "batch_size": 128, "learning_starts": 1_000, "learning_rate": 1e-3},
        30_000,
        "one critic update per 2 transitions; -150 mean on seeds 0-3, -145 on 4-7 at 3e4 steps "
        "(SB3 TD3: -152 at 2e4)",
    ),
    # Offline (--dataset): steps are gradient steps; the datasets are those tests/test_learning_offline.py
    # records (50 greedy episodes of the PPO preset; 25 greedy + 25 epsilon=0.5 episodes of it; for
    # Pendulum, 50 episodes of the SAC preset's greedy policy with a uniform action at half the steps).
    ("bc", "CartPole-v1"): Preset(
        {"hidden_sizes": (64, 64)}, 2_000,
        "500.0 on seeds 0-3 from 50 expert episodes, and from the mixed episodes, at 2e3 gradient steps",
    ),
    ("cql", "CartPole-v1"): Preset(
        {"hidden_sizes": (64, 64)}, 5_000,
        "500.0 on seeds 0-3 from the mixed episodes (and from the expert ones) at 5e3 gradient steps; "
        "without the penalty (penalty_coef=0, offline double DQN): 44.6 mixed, 9.3 expert",
    ),
    ("bc", "Pendulum-v1"): Preset(
        {"hidden_sizes": (64, 64)}, 5_000,
        "-148 on seeds 0-3 from 50 episodes of the SAC preset sampling its actions; -495 from the noisy ones",
    ),
    ("cql", "Pendulum-v1"): Preset(
        {"hidden_sizes": (64, 64), "learning_rate": 1e-3, "batch_size": 128, "num_sampled_actions": 4}, 10_000,
        "-183 on seeds 0-3 from the noisy SAC episodes at 1e4 gradient steps (75 s for the 4 seeds on 2 CPU "
        "cores); batch 256 with 10 sampled actions: -148 at 1.5e4, seven times slower",
    ),
    ("iql", "Pendulum-v1"): Preset(
        {"hidden_sizes": (64, 64), "learning_rate": 1e-3, "temperature": 10.0}, 15_000,
        "-198 on seeds 0-3 from the noisy SAC episodes at 1.5e4 gradient steps (BC: -495); with the paper's "
        "lr 3e-4 and temperature 3 the critics had not converged there (-330 at lr 1e-3, temperature 3; "
        "-280 with expectile 0.9)",
    ),
    ("ddpg", "Pendulum-v1"): Preset(
        {"num_envs": 4, "updates_per_step": 2, "hidden_sizes": (64, 64), "buffer_size": 30_000,
         "batch_size": 128, "learning_starts": 1_000, "learning_rate": 1e-3},
        30_000,
        "td3's preset; -147 mean on seeds 0-3 at 3e4 steps",
    ),
    ("d4pg", "Pendulum-v1"): Preset(
        {"num_envs": 4, "updates_per_step": 2, "hidden_sizes": (64, 64), "buffer_size": 30_000,
         "batch_size": 128, "learning_starts": 1_000, "learning_rate": 1e-3, "v_min": -1000.0, "v_max": 0.0},
        30_000,
        "ddpg's preset with a 51-atom critic on [-1000, 0] and 5-step returns: -147.5 mean on seeds 0-3 "
        "at 3e4 steps (ddpg: -147)",
    ),
    ("mpo", "Pendulum-v1"): Preset(
        {"num_envs": 4, "updates_per_step": 2, "hidden_sizes": (64, 64), "buffer_size": 30_000,
         "batch_size": 128, "learning_starts": 1_000, "learning_rate": 1e-3, "epsilon_mean": 0.01},
        30_000,
        "td3's replay settings, the mean's KL bound 1e-2: -180 mean on seeds 0-3 at 3e4 steps (-160 without the "
        "uniform warm-up); with Acme's 1e-3 the policy moved more slowly (-224, one seed -394, without warm-up)",
    ),
}

# MinAtar (Young & Tian, 2019, https://arxiv.org/abs/1903.03176): 10x10 images with a channel per object
# kind, read by the paper's CNN (one 3x3 convolution with 16 channels, then 128 units).
MINATAR_GAMES = ("Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar")
_MINATAR_TORSO = {"torso": "minatar_cnn", "hidden_sizes": (128,), "activation": "relu"}
_MINATAR_PPO = {"num_envs": 64, "num_steps": 128, "num_minibatches": 8, "learning_rate": 5e-4, **_MINATAR_TORSO}
_MINATAR_DQN = {"num_envs": 8, "num_steps": 1, "buffer_size": 100_000, "batch_size": 64, "learning_starts": 5_000,
                "learning_rate": 2.5e-4, "anneal_lr": False, "target_update_freq": 8_000, "epsilon_end": 0.1,
                "epsilon_decay_steps": 100_000, **_MINATAR_TORSO}
_MINATAR_PQN = {"num_envs": 128, "num_steps": 32, "num_epochs": 2, "num_minibatches": 16, "learning_rate": 2.5e-4,
                "td_lambda": 0.65, "reward_scale": 1.0, "epsilon_end": 0.01, "epsilon_decay_steps": 1_000_000,
                **_MINATAR_TORSO}
for _game in MINATAR_GAMES:
    PRESETS[("ppo", _game)] = Preset(
        _MINATAR_PPO, 10_000_000,
        "gymnax-blines' PPO rollout (64 envs x 128 steps, 8 minibatches, lr 5e-4) with the MinAtar CNN; "
        "Breakout: 4.1 and 4.4 on seeds 0-1 at 2e5 steps (the CI test), 9.0 and 6.5 at 6e5",
    )
    PRESETS[("dqn", _game)] = Preset(
        _MINATAR_DQN, 10_000_000,
        "Young & Tian's DQN (buffer 1e5, lr 2.5e-4, epsilon to 0.1 over 1e5 steps, 5,000 uniform steps first, "
        "a target copy every 1,000 updates) with 8 envs and a batch of 64 per update of 8 steps",
    )
    PRESETS[("pqn", _game)] = Preset(
        _MINATAR_PQN, 10_000_000,
        "purejaxql's MinAtar shape (128 envs x 32 steps, Q(lambda=0.65), epsilon to 0.01 over the first "
        "tenth of 1e7 steps) with the MinAtar CNN",
    )


PRESETS[("ppo", "brax:inverted_pendulum")] = Preset(
    {"num_envs": 16, "num_steps": 64, "learning_rate": 1e-3, "ent_coef": 0.0, "normalize_observations": True},
    500_000,
    "continuous PPO on Brax's MJX inverted pendulum (the brax extra), episodes of 1,000 steps; "
    "a training return of 1,000 first near 2e5 steps on seed 0",
)


def get(agent: str, env_id: str) -> Preset | None:
    """The preset for ``(agent, env_id)``, or None."""
    return PRESETS.get((agent, env_id))


def config_for(agent: str, env_id: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The agent's Config with the pair's preset (if any), then ``overrides`` (typed values)."""
    from rlkit import agents

    module = agents.get(agent)
    preset = get(agent, env_id)
    values = {**(preset.settings if preset else {}), **(overrides or {})}
    return dataclasses.replace(module.Config(), **values)
