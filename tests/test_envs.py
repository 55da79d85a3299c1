import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from toy_env import ToyChain

from rlkit import envs
from rlkit.agents import ppo
from rlkit.loops.device import ActorState, rollout
from rlkit.replay import n_step_transition, transitions
from rlkit.types import ActOutput, Agent

pytestmark = pytest.mark.both_worlds  # environments on gymnax, gymnasium and numpy versions of each world


def constant_agent(action: int) -> Agent:
    def act(state, obs, carry, key, deterministic=False):
        return ActOutput(jnp.full(obs.shape[:1], action, jnp.int32), carry, {})

    return Agent(init=lambda key: (), act=act, update=lambda s, b, k: (s, {}))


def toy_rollout(action: int, num_steps: int = 7):
    env = envs.wrap(ToyChain())
    obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 1))
    start = ActorState(state, obs, ())
    _, trajectory, stats = rollout(env, constant_agent(action), (), start, jax.random.key(1), num_steps)
    return jax.tree.map(lambda x: np.asarray(x)[:, 0], trajectory), stats


def test_truncation_keeps_final_observation_and_bootstraps():
    traj, stats = toy_rollout(action=0)
    # Step index 4 is the 5th step: the time limit.
    assert traj.truncated.tolist() == [False, False, False, False, True, False, False]
    assert not traj.terminated.any()
    np.testing.assert_array_equal(traj.next_obs[4], [0.0, 5.0])  # final obs, not the reset one
    np.testing.assert_array_equal(traj.obs[5], [0.0, 0.0])  # then the env was reset
    trans = jax.tree.map(np.asarray, transitions(traj))
    assert trans.discount_t[4] == 1.0 and trans.last_t[4]
    assert int(stats.count) == 1 and float(stats.return_sum) == 5.0 and int(stats.length_sum) == 5


def test_termination_does_not_bootstrap():
    traj, _ = toy_rollout(action=1)
    assert traj.terminated.tolist() == [False, False, True, False, False, True, False]
    assert not traj.truncated.any()
    np.testing.assert_array_equal(traj.next_obs[2], [3.0, 3.0])
    trans = jax.tree.map(np.asarray, transitions(traj))
    assert trans.discount_t[2] == 0.0 and trans.discount_t[1] == 1.0


def test_advantages_bootstrap_at_truncation_only():
    gamma, value = 0.5, 10.0
    for action, end, bootstrap in [(0, 4, True), (1, 2, False)]:
        traj, _ = toy_rollout(action)
        v = jnp.full(traj.reward.shape, value)
        adv = ppo.advantages(
            jnp.asarray(traj.reward), jnp.asarray(traj.terminated), jnp.asarray(traj.truncated),
            v, v, gamma, 1.0,
        )
        expected = 1.0 + (gamma * value if bootstrap else 0.0) - value
        assert float(adv[end]) == pytest.approx(expected)
        # One step earlier the recursion continues inside the episode.
        assert float(adv[end - 1]) == pytest.approx(1.0 + gamma * value - value + gamma * expected)


def test_q_targets_bootstrap_at_truncation_only():
    gamma, q_next = 0.5, jnp.array([2.0, 4.0])
    for action, end, expected in [(0, 4, 1.0 + gamma * 4.0), (1, 2, 1.0)]:
        traj, _ = toy_rollout(action)
        one = jax.tree.map(lambda x: jnp.asarray(x)[end : end + 1], transitions(traj))
        t = n_step_transition(one, gamma)
        td = rlax.q_learning(jnp.zeros(2), t.action_tm1, t.reward_t, t.discount_t, q_next)
        assert float(td) == pytest.approx(expected)


def test_n_step_stops_at_episode_end():
    traj, _ = toy_rollout(action=1)  # terminates at index 2 and 5
    seq = jax.tree.map(lambda x: jnp.asarray(x)[0:3], transitions(traj))
    t = n_step_transition(seq, 0.5)
    assert float(t.reward_t) == pytest.approx(1 + 0.5 + 0.25)
    assert float(t.discount_t) == 0.0
    seq = jax.tree.map(lambda x: jnp.asarray(x)[2:5], transitions(traj))  # crosses the end at 2
    t = n_step_transition(seq, 0.5)
    assert float(t.reward_t) == 1.0 and float(t.discount_t) == 0.0
    traj0, _ = toy_rollout(action=0)  # truncation at 4: bootstrap with gamma**2 from the final obs
    seq = jax.tree.map(lambda x: jnp.asarray(x)[3:6], transitions(traj0))
    t = n_step_transition(seq, 0.5)
    assert float(t.reward_t) == pytest.approx(1.5)
    assert float(t.discount_t) == pytest.approx(0.25)
    np.testing.assert_array_equal(t.obs_t, [0.0, 5.0])


def test_unknown_env_names_close_matches():
    with pytest.raises(ValueError, match="CartPole-v1"):
        envs.make("CartPole-v0")
    with pytest.raises(ValueError, match="unknown environment id"):
        envs.make("NoSuchEnv")


def test_specs_and_observation_shapes():
    cartpole = envs.make("CartPole-v1")
    assert cartpole.spec.observation_shape == (4,) and cartpole.spec.action_kind == "discrete"
    assert cartpole.spec.num_actions == 2
    pendulum = envs.make("Pendulum-v1")
    assert pendulum.spec.action_kind == "continuous" and pendulum.spec.num_actions == 1
    np.testing.assert_allclose(pendulum.spec.action_high, [2.0])
    breakout = envs.make("Breakout-MinAtar")
    obs, _ = breakout.reset(jax.random.key(0))
    assert obs.shape == breakout.spec.observation_shape == (10, 10, 4) and obs.dtype == jnp.float32  # an image
    assert "Catch-bsuite" in envs.env_ids() and "SpaceInvaders-MinAtar" in envs.env_ids()


def test_a_reset_ratio_shares_fresh_episodes_and_leaves_the_rest_as_vmap_steps_them():
    """reset_ratio 4 on 8 CartPoles that all reach a 5-step limit together: two fresh episodes per step, the
    k-th environment to end starts number k mod 2; every other field is what ``jax.vmap(step)`` gives."""
    base = envs.make("CartPole-v1")
    params = base.default_params.replace(max_steps_in_episode=5)
    pooled = envs.DeviceEnv(base.env, params, "CartPole-v1", reset_ratio=4)
    num_envs = 8
    _, start = jax.vmap(pooled.reset)(jax.random.split(jax.random.key(0), num_envs))

    def body(state, key):
        act_key, step_key = jax.random.split(key)
        action = jax.random.randint(act_key, (num_envs,), 0, 2)
        keys = jax.random.split(step_key, num_envs)
        exact = jax.vmap(pooled.step)(keys, state, action)  # a reset for every environment
        state, step = pooled.step_batch(keys, state, action)
        return state, (step, exact[1], state, exact[0])

    _, (step, exact, state, exact_state) = jax.jit(lambda s: jax.lax.scan(
        body, s, jax.random.split(jax.random.key(1), 12)))(start)
    done = np.asarray(step.terminated | step.truncated)
    assert done.sum(axis=1).max() >= 3, "no step where several environments end together"
    for name in ("reward", "terminated", "truncated", "next_obs", "episode_return", "episode_length"):
        np.testing.assert_array_equal(getattr(step, name), getattr(exact, name), err_msg=name)
    np.testing.assert_array_equal(np.asarray(step.obs)[~done], np.asarray(exact.obs)[~done])
    for leaf, exact_leaf in zip(jax.tree.leaves(state), jax.tree.leaves(exact_state)):
        np.testing.assert_array_equal(np.asarray(leaf)[~done], np.asarray(exact_leaf)[~done])
    for t in np.flatnonzero(done.sum(axis=1) >= 3):
        ended = np.flatnonzero(done[t])
        obs = np.asarray(step.obs)[t, ended]
        np.testing.assert_array_equal(obs[0::2], np.broadcast_to(obs[0], obs[0::2].shape))  # fresh episode 0
        np.testing.assert_array_equal(obs[1::2], np.broadcast_to(obs[1], obs[1::2].shape))  # fresh episode 1
        assert not np.array_equal(obs[0], obs[1])
    with pytest.raises(ValueError, match=r"reset_ratio must be an integer >= 1 \(1: a reset per environment\), got 0"):
        envs.make("CartPole-v1", reset_ratio=0)
