"""Suites beyond gymnax behind the same DeviceEnv: Brax, Craftax and Jumanji (each an extra, in the core world's
lock). For each: the time limit is a truncation with the final observation kept; and PPO trains in the jitted
loop over two seeds on one of them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import RunConfig, make_env, make_trainer, run_training
from rlkit.agents import ppo

LIMIT = 8  # steps per episode
SUITES = {  # id: (package, observation shape, actions); a random policy survives some episodes to the limit
    "craftax:Craftax-Classic-Symbolic-v1": ("craftax", (1345,), 17),
    "brax:inverted_pendulum": ("brax", (4,), 1),
    "jumanji:Snake-v1": ("jumanji", (12, 12, 5), 4),
}


@pytest.fixture(scope="module", params=list(SUITES))
def suite_env(request):
    package, shape, actions = SUITES[request.param]
    pytest.importorskip(package)
    env = make_env(request.param, max_steps_in_episode=LIMIT)
    assert env.spec.observation_shape == shape and env.spec.num_actions == actions and env.max_episode_steps == LIMIT
    return env


def _random_actions(env, key, shape):
    if env.spec.action_kind == "discrete":
        return jax.random.randint(key, shape, 0, env.spec.num_actions)
    return jax.random.uniform(key, (*shape, env.spec.num_actions), minval=-1.0, maxval=1.0)


def test_a_suite_truncates_at_its_step_limit_and_keeps_the_final_observation(suite_env):
    env, num_envs, num_steps = suite_env, 8, 4 * LIMIT
    _, state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), num_envs))

    def body(state, key):
        act_key, step_key = jax.random.split(key)
        action = _random_actions(env, act_key, (num_envs,))
        return env.step_batch(jax.random.split(step_key, num_envs), state, action)  # as the loop steps them

    rollout = jax.jit(lambda s, k: jax.lax.scan(body, s, jax.random.split(k, num_steps)))
    _, steps = rollout(state, jax.random.key(1))
    truncated, terminated = np.asarray(steps.truncated), np.asarray(steps.terminated)
    length = np.asarray(steps.episode_length)
    assert not (truncated & terminated).any()
    assert truncated.any(), "no episode of the random policy reached the step limit"
    np.testing.assert_array_equal(length[truncated], LIMIT)  # a truncation is exactly the limit
    assert (length[terminated] <= LIMIT).all() and (length[~(truncated | terminated)] == 0).all()
    t, e = np.argwhere(truncated)[0]  # the final observation is kept apart from the reset one that follows it
    assert not np.array_equal(steps.next_obs[t, e], steps.obs[t, e])
    running = ~(truncated | terminated)
    np.testing.assert_array_equal(np.asarray(steps.next_obs)[running], np.asarray(steps.obs)[running])
    assert np.isfinite(np.asarray(steps.reward)).all() and steps.obs.dtype == jnp.float32


def test_craftax_generates_a_world_per_16_environments_each_step():
    pytest.importorskip("craftax")
    assert make_env("craftax:Craftax-Classic-Symbolic-v1").reset_ratio == 16
    assert make_env("craftax:Craftax-Classic-Symbolic-v1", reset_ratio=1).reset_ratio == 1


# On Jumanji's image-shaped observations only: Brax's and Craftax's compiles cost CI 2.4 minutes (on a slow
# 2-core machine) and their adapters are the same DeviceEnv the truncation test above drives.
@pytest.mark.parametrize("suite_env", ["jumanji:Snake-v1"], indirect=True)
def test_ppo_trains_on_a_suite_in_the_jitted_loop_over_two_seeds(suite_env):
    config = ppo.Config(num_envs=4, num_steps=16, num_minibatches=2, num_epochs=1, hidden_sizes=(16,))
    trainer = make_trainer(ppo, config, suite_env, RunConfig(total_steps=2 * 4 * 16, num_chunks=2, eval_episodes=2))
    seen = []
    result = run_training(trainer, seeds=[0, 1], on_chunk=lambda chunk, metrics, seconds: seen.append(metrics))
    assert result.eval_returns.shape == (2, 2) and np.isfinite(result.eval_returns).all()
    assert len(seen) == 2 and np.asarray(seen[-1]["episode_length"]).shape == (2,)  # one mean per seed
    lengths, episodes = np.asarray(seen[-1]["episode_length"]), np.asarray(seen[-1]["episodes"])
    assert ((lengths >= 1) & (lengths <= LIMIT)).all()
    assert (episodes >= 4 * 16 // LIMIT).all()  # 4 envs x 16 steps per chunk, episodes of at most LIMIT steps
    assert (np.asarray(result.run_state.agent_state.iterations) == 2).all()
