"""Image observations: environments keep their shape, and every agent family reads it through a torso."""

import dataclasses

import jax
import numpy as np
import pytest
from test_recurrent_agents import IMPALA_TINY, R2D2_TINY

from rlkit import RunConfig, make_env, make_trainer, run_training
from rlkit.agents import dqn, impala, r2d2


def test_minatar_observations_keep_their_image_shape():
    env = make_env("Breakout-MinAtar")
    assert env.spec.observation_shape == (10, 10, 4)
    obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 3))
    state, step = jax.vmap(env.step)(jax.random.split(jax.random.key(1), 3), state, np.zeros(3, np.int32))
    assert obs.shape == step.obs.shape == step.next_obs.shape == (3, 10, 10, 4)
    assert obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}


def test_observe_is_refused_on_an_image_in_one_line():
    with pytest.raises(ValueError, match=r"observe: picks components of a vector observation, but Breakout-MinAtar's "
                                         r"observations have shape \(10, 10, 4\)"):
        make_env("Breakout-MinAtar", observe=(0, 1))


DQN_TINY = dqn.Config(num_envs=4, num_steps=4, buffer_size=400, batch_size=8, learning_starts=64, hidden_sizes=(8,),
                      target_update_freq=32)


@pytest.mark.parametrize("module, config", [(dqn, DQN_TINY), (r2d2, R2D2_TINY), (impala, IMPALA_TINY)],
                         ids=["dqn", "r2d2", "impala"])
def test_agents_train_on_images_through_the_minatar_cnn(module, config):
    env = make_env("SpaceInvaders-MinAtar")
    config = dataclasses.replace(config, torso="minatar_cnn")
    trainer = make_trainer(module, config, env, RunConfig(total_steps=512, num_chunks=1, eval_episodes=1))
    result = run_training(trainer, seeds=[0, 1])
    assert np.isfinite(result.eval_returns).all() and result.eval_returns.shape == (2, 1)
    params = result.run_state.agent_state.params["params"]
    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
               if "Conv" in jax.tree_util.keystr(path) and leaf.ndim == 5]  # [seeds, 3, 3, channels, 16]
    assert kernels and all(k.shape[1:] == (3, 3, 6, 16) for k in kernels)
    assert (np.asarray(result.run_state.agent_state.grad_steps) > 0).all()
