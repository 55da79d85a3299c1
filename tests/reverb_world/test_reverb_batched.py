"""The batched host experiment: several environments per actor call, several transitions per Reverb item.

(The writer and sampler with several transitions per item are tested in test_reverb_replay.py.)
"""

import numpy as np
import pytest

from rlkit.agents import dqn

pytestmark = pytest.mark.reverb


def test_host_settings_check_the_batching(reverb_module):
    from rlkit.loops.reverb_experiment import HostExperiment, HostSettings

    config = dqn.Config(num_envs=1, num_steps=1, batch_size=8, buffer_size=100, learning_starts=16, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="transitions_per_item=3 must divide batch_size=8"):
        HostExperiment(dqn, config, "gym:CartPole-v1", settings=HostSettings(transitions_per_item=3))
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        HostSettings(num_envs=0)


def test_host_experiment_steps_several_environments_with_one_act_call(reverb_module):
    from rlkit.loops.reverb_experiment import HostExperiment, HostSettings

    config = dqn.Config(num_envs=4, num_steps=1, batch_size=8, buffer_size=400, learning_starts=40,
                        hidden_sizes=(8,), epsilon_decay_steps=100)
    experiment = HostExperiment(dqn, config, "gym:CartPole-v1", seed=0, total_steps=400,
                                settings=HostSettings(num_envs=4, transitions_per_item=4, timeout_s=10))
    try:
        experiment.compile()
        calls = []
        dispatch = experiment.actor.dispatch_actions
        experiment.actor.dispatch_actions = lambda obs, first, group: calls.append((group, obs.shape)) or dispatch(
            obs, first, group)
        metrics = experiment.train(200)
        # Two groups of 2 environments take turns: one act call per group step (and one ahead for each).
        assert experiment.env_steps == 200 and calls == [(0, (2, 4)), (1, (2, 4))] * 51
        assert experiment.writer.transitions_written == 200 and experiment.writer.items_written == 50
        assert experiment.table_size() == 50
        # The learner runs every steps_per_iteration = 4 environment steps once 40 transitions are in.
        assert experiment.updates == (200 - 40) // 4 + 1
        assert np.isfinite(metrics["loss"]) and metrics["episodes"] > 0
        assert np.all(np.isfinite(experiment.evaluate(2)))
    finally:
        experiment.close()
