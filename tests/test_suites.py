"""Suites beyond gymnax behind the same DeviceEnv: Craftax (the craftax extra, in the core world's lock)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import RunConfig, make_env, make_trainer, run_training
from rlkit.agents import ppo

pytest.importorskip("craftax")  # the craftax extra: the core world has it, the Reverb world does not
pytestmark = pytest.mark.once  # the same in both worlds

CRAFTAX = "craftax:Craftax-Classic-Symbolic-v1"
LIMIT = 8  # steps per episode: every episode of these tests ends by truncation, not by death


@pytest.fixture(scope="module")
def craftax_env():
    return make_env(CRAFTAX, max_steps_in_episode=LIMIT)


def test_craftax_truncates_at_its_step_limit_and_keeps_the_final_observation(craftax_env):
    env = craftax_env
    assert env.spec.observation_shape == (1345,) and env.spec.num_actions == 17 and env.max_episode_steps == LIMIT
    obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2))

    def body(state, key):
        state, step = jax.vmap(env.step)(jax.random.split(key, 2), state, jnp.zeros(2, jnp.int32))  # noop
        return state, step

    _, steps = jax.jit(lambda s, k: jax.lax.scan(body, s, jax.random.split(k, LIMIT + 2)))(state, jax.random.key(1))
    truncated, terminated = np.asarray(steps.truncated), np.asarray(steps.terminated)
    assert truncated[:, 0].tolist() == [i == LIMIT - 1 for i in range(LIMIT + 2)] and not terminated.any()
    assert np.asarray(steps.episode_length)[LIMIT - 1].tolist() == [LIMIT, LIMIT]
    end = LIMIT - 1  # the final observation is kept apart from the reset one that follows it
    assert not np.array_equal(steps.next_obs[end], steps.obs[end])
    np.testing.assert_array_equal(steps.next_obs[end + 1], steps.obs[end + 1])  # mid-episode: one and the same


def test_ppo_trains_on_craftax_in_the_jitted_loop_over_two_seeds(craftax_env):
    config = ppo.Config(num_envs=4, num_steps=16, num_minibatches=2, num_epochs=1, hidden_sizes=(16,))
    trainer = make_trainer(ppo, config, craftax_env, RunConfig(total_steps=2 * 4 * 16, num_chunks=2, eval_episodes=2))
    seen = []
    result = run_training(trainer, seeds=[0, 1], on_chunk=lambda chunk, metrics, seconds: seen.append(metrics))
    assert result.eval_returns.shape == (2, 2) and np.isfinite(result.eval_returns).all()
    assert len(seen) == 2 and np.asarray(seen[-1]["episode_length"]).shape == (2,)  # one mean per seed
    np.testing.assert_allclose(seen[-1]["episode_length"], LIMIT)  # every episode ran to the limit
    assert np.all(np.asarray(seen[-1]["episodes"]) == 4 * 16 // LIMIT)  # 4 envs x 16 steps per chunk
    assert (np.asarray(result.run_state.agent_state.iterations) == 2).all()
