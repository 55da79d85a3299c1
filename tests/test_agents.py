"""Shape-and-purity tests: init/act/update jit, vmap over seeds, one update changes the parameters."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import agents, envs
from rlkit.agents import dqn, ppo
from rlkit.replay import n_step_transition, transitions
from rlkit.types import Trajectory

TINY = {
    "ppo": ppo.Config(num_envs=2, num_steps=8, num_minibatches=2, num_epochs=1, hidden_sizes=(8,)),
    "dqn": dqn.Config(num_envs=2, buffer_size=64, batch_size=4, learning_starts=4, hidden_sizes=(8,),
                      target_update_freq=2),
}


def fake_rollout(spec, extras, length=8, num_envs=2, key=jax.random.key(0)):
    obs = jax.random.normal(key, (length, num_envs, *spec.observation_shape))
    return Trajectory(
        obs=obs, action=jnp.zeros((length, num_envs), jnp.int32), reward=jnp.ones((length, num_envs)),
        terminated=jnp.zeros((length, num_envs), bool).at[3].set(True),
        truncated=jnp.zeros((length, num_envs), bool).at[5].set(True),
        next_obs=obs + 0.1, extras=extras,
    )


def batch_for(name, agent, state, spec):
    obs = jnp.ones((2, *spec.observation_shape))
    out = jax.jit(agent.act)(state, obs, (), jax.random.key(1))
    extras = jax.tree.map(lambda x: jnp.broadcast_to(x, (8, *x.shape)), out.extras)
    rollout = fake_rollout(spec, extras)
    if name == "ppo":
        return rollout
    seq = jax.tree.map(lambda x: x[:1], transitions(rollout))  # [1, envs] -> n=1 sequences
    return jax.vmap(n_step_transition, in_axes=(1, None))(seq, 0.99)


@pytest.mark.parametrize("name", sorted(TINY))
def test_init_act_update_are_pure_and_jit(name, cartpole):
    module = agents.get(name)
    agent = module.make(TINY[name], cartpole.spec, total_steps=1000)
    state = jax.jit(agent.init)(jax.random.key(0))
    again = jax.jit(agent.init)(jax.random.key(0))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state, again))

    obs = jnp.ones((2, *cartpole.spec.observation_shape))
    out = jax.jit(agent.act, static_argnames="deterministic")(state, obs, (), jax.random.key(1))
    assert out.action.shape == (2,) and jnp.issubdtype(out.action.dtype, jnp.integer)
    greedy = jax.jit(agent.act, static_argnames="deterministic")(state, obs, (), jax.random.key(1), deterministic=True)
    assert greedy.action.shape == (2,)

    batch = batch_for(name, agent, state, cartpole.spec)
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new_state.params, state.params)
    assert any(jax.tree.leaves(changed)), "one update must change the parameters"
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    # Pure: the same inputs give the same outputs.
    again, _ = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), new_state, again))


@pytest.mark.parametrize("name", sorted(TINY))
def test_vmap_over_seeds(name, cartpole):
    agent = agents.get(name).make(TINY[name], cartpole.spec, total_steps=1000)
    # jitted: one compile, where the vmapped calls alone ran op by op
    states = jax.jit(jax.vmap(agent.init))(jax.random.split(jax.random.key(0), 3))
    leaves = jax.tree.leaves(states.params)
    assert all(leaf.shape[0] == 3 for leaf in leaves)
    assert any(not np.array_equal(leaf[0], leaf[1]) for leaf in leaves)
    obs = jnp.ones((3, 2, *cartpole.spec.observation_shape))
    act = jax.jit(jax.vmap(agent.act, in_axes=(0, 0, None, 0)))
    out = act(states, obs, (), jax.random.split(jax.random.key(1), 3))
    assert out.action.shape == (3, 2)


def test_dqn_rejects_continuous_actions():
    pendulum = envs.make("Pendulum-v1")
    with pytest.raises(ValueError, match="discrete action space"):
        dqn.make(dqn.Config(), pendulum.spec)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"num_minibatches=3 must divide num_envs \* num_steps=512"):
        ppo.Config(num_envs=4, num_steps=128, num_minibatches=3)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        ppo.Config(learning_rate=0.0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        dqn.Config(learning_rate=-1e-3)
    with pytest.raises(ValueError, match="num_envs=7 must divide buffer_size=50000"):
        dqn.Config(num_envs=7)
    with pytest.raises(ValueError, match="gamma must lie in"):
        dqn.Config(gamma=1.5)
    with pytest.raises(ValueError, match="activation"):
        ppo.Config(activation="sigmoid-ish")
    with pytest.raises(ValueError, match="unknown agent 'ppo2'.*Did you mean ppo"):
        agents.get("ppo2")


def test_dueling_and_n_step_dqn_update(cartpole):
    config = dataclasses.replace(TINY["dqn"], dueling=True, n_step=3, double_q=False)
    agent = dqn.make(config, cartpole.spec, total_steps=1000)
    state = agent.init(jax.random.key(0))
    batch = batch_for("dqn", agent, state, cartpole.spec)
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert np.isfinite(float(metrics["loss"]))
    assert int(new_state.grad_steps) == 1


def test_ppo_continuous_actions():
    pendulum = envs.make("Pendulum-v1")
    config = dataclasses.replace(
        TINY["ppo"], normalize_observations=True, normalize_rewards=True, init_log_std=0.5
    )
    agent = ppo.make(config, pendulum.spec, total_steps=1000)
    state = jax.jit(agent.init)(jax.random.key(0))
    obs = 3.0 * jnp.ones((2, *pendulum.spec.observation_shape))
    act = jax.jit(agent.act, static_argnames="deterministic")
    out = act(state, obs, (), jax.random.key(1))
    assert out.action.shape == (2, 1) and out.action.dtype == jnp.float32
    assert jnp.all(jnp.abs(out.action) <= 2.0), "actions are clipped to the bounds"
    assert out.extras["raw_action"].shape == (2, 1)
    greedy = act(state, obs, (), jax.random.key(5), deterministic=True)
    assert jnp.array_equal(greedy.action, act(state, obs, (), jax.random.key(6), deterministic=True).action)

    extras = jax.tree.map(lambda x: jnp.broadcast_to(x, (8, *x.shape)), out.extras)
    rollout = fake_rollout(pendulum.spec, extras)._replace(action=jnp.broadcast_to(out.action, (8, 2, 1)))
    new_state, metrics = jax.jit(agent.update)(state, rollout, jax.random.key(2))
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new_state.params, state.params)
    assert all(jax.tree.leaves(changed)), "every parameter, log_std included, moves"
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    # Normalization statistics live in the state and follow the rollout.
    np.testing.assert_allclose(new_state.obs_moments.mean, rollout.obs.reshape(-1, 3).mean(0), rtol=1e-3, atol=1e-3)
    assert float(new_state.return_moments.count) > float(state.return_moments.count)
    again, _ = jax.jit(agent.update)(state, rollout, jax.random.key(2))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), new_state, again))
    states = jax.vmap(agent.init)(jax.random.split(jax.random.key(0), 2))
    kernel = states.params["params"]["actor"]["Dense_0"]["kernel"]
    assert not np.array_equal(kernel[0], kernel[1])
