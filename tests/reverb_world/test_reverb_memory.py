"""The agents that learn from sequences and stale behaviour, through Reverb (host actor, queue or table).

Marked ``reverb`` and ``learning``: they run in the Reverb world only. One seed each, fixed; Reverb's
sampling is not seedable, so the thresholds leave room. Every threshold is checked on a final greedy
evaluation of fresh episodes, after training stopped.
"""

import pytest

pytestmark = [pytest.mark.reverb, pytest.mark.learning]


def test_impala_through_a_reverb_queue_solves_gym_cartpole(reverb_module):
    from rlkit import presets
    from rlkit.agents import impala
    from rlkit.loops.reverb_experiment import HostSettings, train_with_reverb

    # 16 gymnasium CartPoles, one rollout of 32 steps each per update, through a FIFO queue: the lag is
    # the queue's, so the preset sets policy_lag=0. The whole budget, 5e5 steps (about 20 s).
    config = presets.config_for("impala", "gym:CartPole-v1")
    assert config.policy_lag == 0 and config.off_policy_correction
    steps = presets.get("impala", "gym:CartPole-v1").steps
    result = train_with_reverb(
        impala, config, "gym:CartPole-v1", total_steps=steps, seed=0, eval_every=100_000, eval_episodes=5,
        final_eval_episodes=20, settings=HostSettings(num_envs=config.num_envs),
    )
    assert result["final_return"] >= 450, (result["final_returns"], result["evaluations"])


def test_r2d2_through_reverb_remembers_bsuite_memory_chain(reverb_module):
    from rlkit import presets
    from rlkit.agents import r2d2
    from rlkit.loops.reverb_experiment import HostSettings, train_with_reverb

    # bsuite's memory chain (gymnax, 5 steps of memory): the context bit is seen at the start only, and
    # the last action is rewarded +1 if it names it, -1 if not. Chance is 0 (feedforward DQN gets 0.0);
    # remembering gives 1. Stops at the first 50-episode greedy mean >= 0.95 (at 5k steps, seeds 0-3).
    config = presets.config_for("r2d2", "gymnax:MemoryChain-bsuite")
    steps = presets.get("r2d2", "gymnax:MemoryChain-bsuite").steps
    assert steps <= 30_000
    result = train_with_reverb(
        r2d2, config, "gymnax:MemoryChain-bsuite", total_steps=steps, seed=0, eval_every=5_000,
        eval_episodes=50, stop_at_return=0.95, final_eval_episodes=100, settings=HostSettings(num_envs=8),
    )
    assert result["final_return"] >= 0.5, (result["final_returns"].mean(), result["evaluations"])

