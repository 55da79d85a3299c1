"""Prioritized replay through Reverb: proportional sampling, importance weights, priorities written back."""

import types

import dm_env
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dm_env import specs

from rlkit.types import ActOutput, Agent, ExperienceSpec, Transition, split_weights

pytestmark = pytest.mark.reverb


def test_an_item_with_100x_the_priority_is_drawn_100x_as_often(reverb_module):
    from rlkit.replay import reverb as rr

    reverb = reverb_module
    spec = ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=500, buffer_size=1000,
                          min_size=1, prioritized=True, priority_exponent=1.0)
    example = Transition(np.zeros(1, np.float32), np.int32(0), np.float32(0), np.float32(1), np.zeros(1, np.float32),
                         np.bool_(False))
    server = reverb.Server(rr.make_tables(spec, example, samples_per_insert=0), port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.TransitionWriter(client, spec, example=example)
        for i in range(100):  # item 0 has priority 100, the 99 others priority 1
            writer.priority = 100.0 if i == 0 else 1.0
            writer(example._replace(obs_tm1=np.full(1, i, np.float32)))
        writer.flush()
        sampler = rr.Sampler(client, "replay", 500, example, timeout_s=10, max_in_flight=1000)
        counts = np.zeros(100)
        for _ in range(40):  # 20,000 draws
            _, probabilities, batch = sampler.sample()
            counts += np.bincount(batch.obs_tm1[:, 0].astype(int), minlength=100)
            np.testing.assert_allclose(probabilities[batch.obs_tm1[:, 0] == 0], 100 / 199, rtol=1e-5)
        # P(item 0) = 100/199, so its count is Binomial(20000, 0.503): 10,050 +- 71. The ratio
        # 99 * c / (20000 - c) is then 100 +- 1.4 (delta method); [70, 140] is more than 20 sigma wide
        # either side, yet a sampler that ignored the priorities (ratio 1) or squared them (10,000) fails.
        ratio = counts[0] / counts[1:].mean()
        assert 70 <= ratio <= 140, (ratio, counts[:5])
        assert counts.sum() == 20_000 and np.all(counts[1:] > 0)
    finally:
        server.stop()


class CounterEnv(dm_env.Environment):
    """Observation ``[count, time]``: ``count`` goes up by one every step, across episodes (7 steps, truncated)."""

    def __init__(self, seed=0):
        self.count, self.time = 0, 0

    def _observation(self):
        return np.asarray([self.count, self.time], np.float32)

    def reset(self):
        self.time = 0
        return dm_env.restart(self._observation())

    def step(self, action):
        self.count, self.time = self.count + 1, self.time + 1
        if self.time == 7:
            return dm_env.truncation(1.0, self._observation())
        return dm_env.transition(1.0, self._observation())

    def observation_spec(self):
        return specs.Array((2,), np.float32)

    def action_spec(self):
        return specs.DiscreteArray(2)


def stub_agent(spec: ExperienceSpec):
    """An agent whose ``act`` puts the step's count in ``extras`` and whose ``update`` asks for priority 10 for
    the items whose (first) step's count is a multiple of ``10 * period`` (a tenth of the items), 1 for the others."""
    sequences = spec.kind == "sequences"
    modulus = 10 * (spec.sequence_period if sequences else 1)

    def make(config, env_spec, total_steps=None):
        def act(state, obs, carry, key, deterministic=False):
            count = obs[:, 0]
            return ActOutput(jnp.zeros(obs.shape[0], jnp.int32), carry, {"count": count, "nested": {"twice": 2 * count}})

        def update(state, batch, key):
            experience, weights = split_weights(batch)
            obs = experience.obs[..., 0] if sequences else experience.obs_tm1[:, 0]
            extras = experience.extras
            marked = jnp.mod(extras["count"][0] if sequences else extras["count"], modulus) == 0
            weights = jnp.ones(marked.shape) if weights is None else weights
            metrics = {
                "marked": jnp.mean(marked),
                "extras_match": jnp.mean((extras["count"] == obs) & (extras["nested"]["twice"] == 2 * obs)),
                # Priorities are 1 or 10 (alpha 1), so every weight (min P / P) ** beta is 1 or 0.1 ** beta.
                "weights_valid": jnp.mean((jnp.abs(weights - 1) < 1e-5)
                                          | (jnp.abs(weights - 0.1**spec.importance_exponent) < 1e-5)),
                "weight_max": jnp.max(weights),
                "weight_min": jnp.min(weights),
                "consecutive": jnp.mean(obs[1:] - obs[:-1] == 1) if sequences else jnp.float32(1),
                "priorities": jnp.where(marked, 10.0, 1.0),
            }
            return state + 1, metrics

        return Agent(init=lambda key: jnp.zeros((), jnp.int32), act=act, update=update)

    return types.SimpleNamespace(make=make, experience=lambda config: spec)


@pytest.mark.parametrize("kind", ["transitions", "sequences"])
@pytest.mark.parametrize("prioritized", [True, False], ids=["prioritized", "uniform"])
def test_priorities_written_back_by_the_learner_change_what_is_sampled(reverb_module, kind, prioritized):
    from rlkit.loops.reverb_experiment import HostExperiment, HostSettings

    spec = ExperienceSpec(
        kind=kind, num_envs=1, rollout_length=4, batch_size=16 if kind == "transitions" else 8, buffer_size=10_000,
        min_size=64, sequence_length=4, sequence_period=2, prioritized=prioritized, priority_exponent=1.0,
        importance_exponent=0.5,
    )
    experiment = HostExperiment(stub_agent(spec), None, CounterEnv, seed=0, settings=HostSettings(timeout_s=10))
    try:
        experiment.compile()
        experiment.train(600)
        metrics = experiment.train(1_400)
        # Learning starts at min_size = 64 steps: 64 transitions, or 32 sequences (steps 0-3, 2-5, ..., 62-65)
        # complete at step 66, so from the iteration at step 68.
        first = 64 if kind == "transitions" else 68
        assert experiment.updates == (2_000 - first) // 4 + 1
        assert metrics["extras_match"] == 1.0 and metrics["consecutive"] == 1.0  # extras came back with their steps
        assert "priorities" not in metrics
        if prioritized:
            # Marked items (a tenth) now carry 10x the priority: 0.4 of each batch (measured; new items come in
            # unmarked at priority 10 too), where a uniform replay gives a tenth (0.10 measured).
            assert metrics["marked"] > 0.3, metrics
            # Importance weights (min P / P) ** 0.5: 1 for priority 1, sqrt(0.1) for 10, normalised to max 1;
            # nearly every batch holds both (weight_min measured 0.32-0.34).
            assert metrics["weights_valid"] == 1.0 and metrics["weight_max"] == pytest.approx(1.0, abs=1e-6)
            assert metrics["weight_min"] < 0.4, metrics
            assert experiment.writer.priority == 10.0  # new items come in at the largest priority written
        else:
            assert metrics["marked"] < 0.2 and metrics["weight_min"] == 1.0, metrics
    finally:
        experiment.close()


def test_importance_weights_reach_update_only_for_prioritized_replay(reverb_module):
    from rlkit.loops.reverb_experiment import HostExperiment

    seen = []
    for prioritized in (False, True):
        spec = ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=4, buffer_size=100,
                              min_size=8, prioritized=prioritized)
        module = stub_agent(spec)
        make = module.make

        def spy(config, env_spec, total_steps=None, make=make):
            agent = make(config, env_spec, total_steps)
            return agent._replace(update=lambda state, batch, key: (seen.append(type(batch).__name__) or
                                                                  agent.update(state, batch, key)))

        experiment = HostExperiment(types.SimpleNamespace(make=spy, experience=module.experience), None, CounterEnv)
        try:
            experiment.compile()
        finally:
            experiment.close()
    assert seen == ["Transition", "WeightedBatch"]


def test_packed_items_share_one_weight_and_take_their_largest_priority(reverb_module):
    from rlkit.loops.reverb_feeders import HostSettings, TransitionFeeder

    spec = ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=4, buffer_size=100,
                          prioritized=True, importance_exponent=0.5)
    feeder = TransitionFeeder(spec, HostSettings(transitions_per_item=2))  # a batch of 4 is 2 items of 2
    agent = Agent(init=None, act=None, update=lambda state, batch, key: (state, {
        "weights": batch.importance_weights, "priorities": batch.experience * 10.0}))
    update = feeder.learner_update(agent)
    _, metrics, priorities, _ = update(0, jnp.arange(4.0), np.asarray([0.1, 0.4], np.float32), jax.random.key(0))
    np.testing.assert_allclose(metrics["weights"], [1, 1, 0.5, 0.5], rtol=1e-6)  # (0.1 / 0.4) ** 0.5
    assert "priorities" not in metrics
    np.testing.assert_allclose(feeder.item_priorities(np.asarray(priorities)), [10, 30])
