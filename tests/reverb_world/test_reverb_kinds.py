"""HostExperiment for every experience kind: PPO from a queue of rollouts, the kind checks, the CLI."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit.agents import ppo

pytestmark = pytest.mark.reverb

TINY_PPO = ppo.Config(num_envs=4, num_steps=16, num_epochs=1, num_minibatches=2, hidden_sizes=(8,))


def test_a_queue_of_rollouts_feeds_ppo(reverb_module):
    from rlkit.loops.reverb_experiment import HostExperiment, HostSettings

    batches = []

    def make(config, env_spec, total_steps=None):
        agent = ppo.make(config, env_spec, total_steps)

        def update(state, rollout, key):
            batches.append((rollout.obs.shape, sorted(rollout.extras)))  # at trace time
            state, metrics = agent.update(state, rollout, key)
            # Each column is one environment's consecutive steps: next_obs[t] is obs[t + 1] within an episode.
            done = rollout.terminated | rollout.truncated
            gap = jnp.abs(rollout.next_obs[:-1] - rollout.obs[1:]).max(-1)
            return state, {**metrics, "continuity_error": jnp.max(jnp.where(done[:-1], 0.0, gap))}

        return agent._replace(update=update)

    module = types.SimpleNamespace(make=make, experience=ppo.experience)
    # Two host environments, PPO's num_envs = 4: every update takes 4 rollouts of 16 steps from the queue.
    experiment = HostExperiment(module, TINY_PPO, "gym:CartPole-v1", seed=0, total_steps=400,
                                settings=HostSettings(num_envs=2, timeout_s=10))
    try:
        experiment.compile()
        before = experiment.state.params
        metrics = experiment.train(400)
        assert batches and all(b == ((16, 4, 4), ["log_prob", "value"]) for b in batches)
        # 200 steps per environment: 12 rollouts each, 24 in all, 6 updates of 4.
        assert experiment.writer.items_written == 24 and experiment.updates == 6
        assert experiment.table_size() == 0
        assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["approx_kl"])
        assert metrics["continuity_error"] == 0.0
        changed = [np.any(np.asarray(a) != np.asarray(b))
                   for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(experiment.state.params))]
        assert any(changed) and np.all(np.isfinite(experiment.evaluate(1)))
    finally:
        experiment.close()


def test_transitions_per_item_is_for_transitions_only(reverb_module):
    from rlkit.loops.reverb_experiment import HostExperiment, HostSettings

    with pytest.raises(ValueError, match="transitions_per_item applies to 'transitions' experience only; this "
                                         "agent's is 'rollout'"):
        HostExperiment(ppo, TINY_PPO, "gym:CartPole-v1", settings=HostSettings(transitions_per_item=2))


def test_train_backend_reverb_runs_ppo(tmp_path, reverb_module):
    from rlkit.cli import main

    out = tmp_path / "ppo"
    code = main(["train", "--backend", "reverb", "--agent", "ppo", "--env", "gym:CartPole-v1", "--steps", "256",
                 "--chunks", "2", "--eval-episodes", "1", "--quiet", "--out", str(out), "--set", "num_envs=2",
                 "--set", "num_steps=16", "--set", "num_epochs=1", "--set", "hidden_sizes=8"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["backend"] == "reverb" and results["per_seed"][0]["updates"] == 256 // 32


def test_recurrent_ppo_trains_through_a_reverb_queue(reverb_module):
    from rlkit.agents import recurrent_ppo
    from rlkit.loops.reverb_experiment import HostExperiment, HostSettings

    config = recurrent_ppo.Config(num_envs=4, num_steps=16, num_minibatches=2, num_epochs=1, memory_size=8,
                                  hidden_sizes=(8,))
    experiment = HostExperiment(recurrent_ppo, config, "gym:CartPole-v1", seed=0, total_steps=512,
                                settings=HostSettings(num_envs=4, timeout_s=10))
    try:
        experiment.compile()
        before = experiment.state
        metrics = experiment.train(512)
        # 128 steps per environment: 8 rollouts each, 32 in all, 8 updates of 4.
        assert experiment.updates == 8 and np.isfinite(metrics["loss"])
        changed = [np.any(np.asarray(a) != np.asarray(b))
                   for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(experiment.state.params))]
        assert any(changed) and np.all(np.isfinite(experiment.evaluate(1)))
    finally:
        experiment.close()
