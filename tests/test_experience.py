"""The experience layer: extras kept by every store, sequences, priorities, carry resets, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_env import ToyChain

from rlkit import RunConfig, make_trainer
from rlkit.envs import wrap
from rlkit.loops.device import ActorState, example_step, rollout
from rlkit.replay import device as device_replay
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, WeightedBatch


def counting_agent(action: int = 0) -> Agent:
    """A recurrent agent whose carry counts the steps since its episode started.

    It returns its *input* carry in ``extras["count"]``, as recurrent agents do, so the count stored
    with each step must equal the environment's time since reset (ToyChain's second observation).
    """

    def act(state, obs, carry, key, deterministic=False):
        return ActOutput(jnp.full(obs.shape[:1], action, jnp.int32), carry + 1, {"count": carry, "tag": 10 * obs[:, 1]})

    def update(state, batch, key):
        return state, {}

    return Agent(init=lambda key: (), act=act, update=update, init_carry=lambda n: jnp.zeros((n,), jnp.int32))


@pytest.fixture(scope="module")
def toy():
    return wrap(ToyChain())


def toy_rollout(toy, agent, num_envs=3, steps=13):
    obs, env_state = jax.vmap(toy.reset)(jax.random.split(jax.random.key(0), num_envs))
    start = ActorState(env_state, obs, agent.init_carry(num_envs))
    _, trajectory, _ = jax.jit(lambda s, k: rollout(toy, agent, (), s, k, steps))(start, jax.random.key(1))
    return trajectory


@pytest.mark.parametrize("action", [0, 1])  # truncated every 5 steps; terminated every 3
def test_device_rollout_resets_the_carry_exactly_at_episode_starts(toy, action):
    trajectory = toy_rollout(toy, counting_agent(action))
    time = np.asarray(trajectory.obs[..., 1]).astype(int)
    np.testing.assert_array_equal(np.asarray(trajectory.extras["count"]), time)
    assert time.max() == (2 if action else 4) and (time == 0).sum() > 3  # several episodes, all reset


def spec(kind, **kw):
    base = dict(num_envs=3, rollout_length=13, batch_size=64, buffer_size=3 * 26, min_size=3)
    return ExperienceSpec(kind=kind, **{**base, **kw})


def test_transition_replay_keeps_extras(toy):
    agent = counting_agent()
    feeder = device_replay.make(spec("transitions", n_step=2), example_step(agent, (), toy.spec))
    state = feeder.add(feeder.init(), toy_rollout(toy, agent))
    batch, _ = feeder.sample(state, None, jax.random.key(2))
    np.testing.assert_array_equal(batch.extras["tag"], 10 * batch.obs_tm1[:, 1])
    np.testing.assert_array_equal(batch.extras["count"], batch.obs_tm1[:, 1])


def test_sequence_replay_returns_time_major_stretches_with_episode_ends_marked(toy):
    agent = counting_agent()
    feeder = device_replay.make(spec("sequences", sequence_length=7, sequence_period=2), example_step(agent, (), toy.spec))
    state = feeder.add(feeder.init(), toy_rollout(toy, agent))
    batch, indices = feeder.sample(state, None, jax.random.key(3))
    assert batch.obs.shape == (7, 64, 2) and indices == ()
    done = np.asarray(batch.terminated | batch.truncated)
    time, next_time = np.asarray(batch.obs[..., 1]), np.asarray(batch.next_obs[..., 1])
    # Within an episode the next step's observation is this step's next_obs; after a marked end, a reset.
    follows = np.asarray(batch.obs[1:] == batch.next_obs[:-1]).all(-1)
    np.testing.assert_array_equal(follows, ~done[:-1])
    np.testing.assert_array_equal(time[1:][done[:-1]], 0)
    np.testing.assert_array_equal(next_time, time + 1)
    assert done.any() and (batch.extras["count"] == batch.obs[..., 1]).all()


def test_prioritized_sampling_draws_an_item_100x_as_often():
    """One item of 100 with 100x the others' priority: drawn ~100x as often as an average other item."""
    example = jax.tree.map(lambda x: x[0, 0], toy_like_steps(1, 1))
    replay_spec = ExperienceSpec(
        "transitions", num_envs=1, rollout_length=100, batch_size=256, buffer_size=100, min_size=1,
        prioritized=True, priority_exponent=1.0, importance_exponent=1.0,
    )
    feeder = device_replay.make(replay_spec, example)
    state = feeder.add(feeder.init(), toy_like_steps(100, 1))
    state = feeder.set_priorities(state, jnp.arange(100), jnp.where(jnp.arange(100) == 17, 100.0, 1.0))

    @jax.jit
    def draw(key):
        batch, indices = feeder.sample(state, None, key)
        return indices, batch.importance_weights, batch.experience.reward_t

    indices, weights, rewards = jax.vmap(draw)(jax.random.split(jax.random.key(0), 400))  # 102,400 draws
    counts = np.bincount(np.asarray(indices).ravel(), minlength=100)
    ratio = counts[17] / np.delete(counts, 17).mean()
    # p(17) = 100/199: ~51,457 draws of it, ~517 of each other (sd ~23), so the ratio is 100 +- ~5.
    assert 85 <= ratio <= 115, ratio
    np.testing.assert_array_equal(np.asarray(rewards), np.asarray(indices).astype(np.float32))  # item i holds step i
    heavy = np.asarray(indices) == 17
    np.testing.assert_allclose(np.asarray(weights)[heavy], 0.01, rtol=1e-4)  # (min P / P) ** 1
    np.testing.assert_allclose(np.asarray(weights)[~heavy], 1.0, rtol=1e-4)
    assert isinstance(feeder.sample(state, None, jax.random.key(1))[0], WeightedBatch)


def toy_like_steps(steps, envs):
    """``[steps, envs]`` steps whose reward is the step index (nothing ends)."""
    from rlkit.types import Trajectory

    t = jnp.broadcast_to(jnp.arange(steps, dtype=jnp.float32)[:, None], (steps, envs))
    obs = jnp.stack([t, t], -1)
    false = jnp.zeros((steps, envs), bool)
    return Trajectory(obs, jnp.zeros((steps, envs), jnp.int32), t, false, false, obs + 1, {})


@dataclasses.dataclass(frozen=True)
class NoConfig:
    """A config with no fields, for the test agents."""


def leaf_priorities(replay_state) -> np.ndarray:
    """The priorities of every item of a prioritized device replay (the sum tree's leaves)."""
    tree = replay_state.sum_tree_state
    return np.asarray(tree.nodes)[2**tree.tree_depth - 1:]


class PriorityAgent:
    """A module whose update returns a priority per sampled transition: its reward (the step index)."""

    @staticmethod
    def experience(config):
        return ExperienceSpec("transitions", num_envs=2, rollout_length=4, batch_size=8, buffer_size=64, min_size=8,
                              prioritized=True, priority_exponent=1.0)

    @staticmethod
    def make(config, spec, total_steps=None):
        def act(state, obs, carry, key, deterministic=False):
            return ActOutput(jnp.zeros(obs.shape[:1], jnp.int32), carry, {})

        def update(state, batch, key):
            experience = batch.experience
            return state + 1, {"priorities": experience.obs_tm1[:, 1] + 1.0, "weight": jnp.mean(batch.importance_weights)}

        return Agent(init=lambda key: jnp.zeros((), jnp.int32), act=act, update=update)


def test_the_loop_writes_priorities_back(toy):
    trainer = make_trainer(PriorityAgent, NoConfig(), toy, RunConfig(total_steps=8 * 20, num_chunks=2, eval_episodes=1))
    run_state, metrics = jax.jit(trainer.train)(jax.random.key(0), {})
    priorities = leaf_priorities(run_state.replay_state)
    seen = priorities[priorities > 0]
    # Items were given 1 + time (1..5): the leaves are no longer all equal to the initial priority.
    assert len(np.unique(seen)) > 1 and set(np.round(np.unique(seen), 4)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.asarray(metrics["weight"])[-1] < 1.0  # importance weights arrive, below 1 once priorities differ


def test_bad_experience_is_refused_before_compiling(toy):
    too_long = spec("sequences", sequence_length=40, sequence_period=1, buffer_size=3 * 26)
    with pytest.raises(ValueError, match="sequence_length=40 is longer than the buffer"):
        device_replay.check_spec(too_long)
    with pytest.raises(ValueError, match="sequence_length and sequence_period must be >= 1"):
        device_replay.check_spec(spec("sequences"))

    class RecurrentOnTransitions:
        experience = staticmethod(lambda config: spec("transitions"))
        make = staticmethod(lambda config, env_spec, total_steps=None: counting_agent())

    with pytest.raises(ValueError, match="recurrent .* 'transitions'"):
        make_trainer(RecurrentOnTransitions, NoConfig(), toy, RunConfig(total_steps=3 * 13 * 4))


def test_observe_hides_components():
    from rlkit import envs

    masked = envs.make("CartPole-v1", observe=(0, 2))
    assert masked.spec.observation_shape == (2,) and masked.spec == EnvSpec((2,), "discrete", 2)
    full = envs.make("CartPole-v1")
    obs, _ = masked.reset(jax.random.key(0))
    full_obs, _ = full.reset(jax.random.key(0))
    np.testing.assert_array_equal(obs, full_obs[jnp.asarray([0, 2])])
    with pytest.raises(ValueError, match=r"observe: \(0, 4\) must be distinct indices in \[0, 4\)"):
        envs.make("CartPole-v1", observe=(0, 4))


@pytest.mark.parametrize("name,env_id", [("dqn", "CartPole-v1"), ("c51", "CartPole-v1"), ("sac", "Pendulum-v1"),
                                         ("td3", "Pendulum-v1")])
def test_every_transition_replay_agent_learns_from_prioritized_replay(name, env_id):
    """``prioritized=True``: the agent returns |TD| priorities, the loop writes them back, weights reach the loss."""
    from rlkit import agents, envs

    small = dict(num_envs=2, buffer_size=128, batch_size=8, learning_starts=16, hidden_sizes=(8,), prioritized=True)
    config = agents.get(name).Config(**small, **({"num_atoms": 5} if name == "c51" else {}))
    env = envs.make(env_id)
    trainer = make_trainer(agents.get(name), config, env, RunConfig(total_steps=96, num_chunks=1, eval_episodes=1))
    run_state, metrics = jax.jit(trainer.train)(jax.random.key(0), {})
    leaves = leaf_priorities(run_state.replay_state)
    assert len(np.unique(leaves[leaves > 0])) > 2, leaves  # TD-error priorities, not one insert value
    assert "priorities" not in metrics and np.isfinite(np.asarray(metrics["loss"])).all()
