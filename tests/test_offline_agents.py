"""BC, CQL and IQL: pure and jittable for both action kinds, and each one's defining behaviour on a
hand-made batch (CQL keeps the greedy action on the data; IQL prefers the better action, BC the more
frequent one)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import agents, envs
from rlkit.agents import bc, cql, iql
from rlkit.types import Transition

TINY = {"bc": bc.Config(batch_size=4, hidden_sizes=(8,)), "cql": cql.Config(batch_size=4, hidden_sizes=(8,)),
        "iql": iql.Config(batch_size=4, hidden_sizes=(8,))}


def batch_for(spec, actions, rewards, discount=0.0, obs=None):
    size = len(rewards)
    obs = jnp.ones((size, *spec.observation_shape)) if obs is None else obs
    return Transition(obs_tm1=obs, action_tm1=jnp.asarray(actions), reward_t=jnp.asarray(rewards, jnp.float32),
                      discount_t=jnp.full(size, discount, jnp.float32), obs_t=obs + 0.1, last_t=jnp.ones(size, bool))


def same(a, b):
    return jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_init_act_update_are_pure_and_jit(name, env_id):
    spec = envs.make(env_id).spec
    agent = agents.get(name).make(TINY[name], spec)
    state = jax.jit(agent.init)(jax.random.key(0))
    assert same(state, jax.jit(agent.init)(jax.random.key(0)))
    act = jax.jit(agent.act, static_argnames="deterministic")
    obs = jax.random.normal(jax.random.key(3), (5, *spec.observation_shape))
    greedy = act(state, obs, (), jax.random.key(1), deterministic=True).action
    assert same(greedy, act(state, obs, (), jax.random.key(7), deterministic=True).action)
    sampled = act(state, obs, (), jax.random.key(1)).action
    if spec.action_kind == "discrete":
        assert greedy.shape == (5,) and jnp.issubdtype(greedy.dtype, jnp.integer)
        actions = jnp.array([0, 1, 1, 0])
    else:
        assert greedy.shape == sampled.shape == (5, spec.num_actions)
        assert np.all(np.abs(sampled) <= spec.action_high) and np.all(np.abs(greedy) <= spec.action_high)
        actions = jnp.array([[-2.0], [0.5], [2.0], [0.0]])
    batch = batch_for(spec, actions, [1.0, 0.0, -1.0, 0.5], discount=0.99,
                      obs=jax.random.normal(jax.random.key(4), (4, *spec.observation_shape)))
    update = jax.jit(agent.update)
    new_state, metrics = update(state, batch, jax.random.key(2))
    assert same((new_state, metrics), update(state, batch, jax.random.key(2)))
    assert all(np.isfinite(value) for value in jax.tree.leaves(metrics)), metrics
    assert not same(new_state.params, state.params) and int(new_state.grad_steps) == 1


def train(agent, batch, steps: int, key=jax.random.key(0)):
    @jax.jit
    def run(state):
        return jax.lax.fori_loop(0, steps, lambda i, s: agent.update(s, batch, jax.random.fold_in(key, i))[0], state)

    return run(agent.init(key))


def test_cql_keeps_the_greedy_action_on_the_data_and_plain_q_learning_does_not():
    """All data takes action 0 for reward 0: Q-learning alone never learns action 1's value, the penalty does."""
    spec = envs.make("CartPole-v1").spec
    obs = jax.random.normal(jax.random.key(5), (32, *spec.observation_shape))
    batch = batch_for(spec, jnp.zeros(32, jnp.int32), jnp.zeros(32), discount=0.0, obs=obs)
    greedy = {}
    for coef in (0.0, 1.0):
        config = cql.Config(batch_size=32, hidden_sizes=(16,), learning_rate=1e-2, penalty_coef=coef)
        agent = cql.make(config, spec)
        state = train(agent, batch, 200)
        greedy[coef] = np.asarray(agent.act(state, obs, (), jax.random.key(0), deterministic=True).action)
    assert (greedy[1.0] == 0).all()
    assert (greedy[0.0] == 1).any(), "without the penalty the unseen action should win somewhere"


def test_cql_penalty_is_the_soft_maximum_minus_the_data_value():
    q = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    penalty = cql.discrete_penalty(2.0)(q, jnp.array([2, 1]))
    expected = 2.0 * (np.log(np.exp([1.0, 2.0, 3.0]).sum()) - 3.0), 2.0 * np.log(3.0)
    np.testing.assert_allclose(penalty, expected, rtol=1e-6)


def test_iql_prefers_the_better_action_where_bc_copies_the_more_frequent_one():
    """One state, action 0 pays 1 and action 1 pays 0, but the data takes action 1 three times as often."""
    spec = envs.make("CartPole-v1").spec
    actions = jnp.array([0, 1, 1, 1] * 8)
    batch = batch_for(spec, actions, (actions == 0).astype(jnp.float32))
    obs = jnp.ones((1, *spec.observation_shape))
    chosen = {}
    for name, config in (("iql", iql.Config(batch_size=32, hidden_sizes=(16,), learning_rate=1e-2, temperature=10.0)),
                         ("bc", bc.Config(batch_size=32, hidden_sizes=(16,), learning_rate=1e-2))):
        agent = agents.get(name).make(config, spec)
        state = train(agent, batch, 300)
        chosen[name] = int(agent.act(state, obs, (), jax.random.key(0), deterministic=True).action[0])
    assert chosen == {"iql": 0, "bc": 1}


def test_offline_configs_name_the_bad_field():
    for module, field, value in ((bc, "batch_size", 0), (cql, "penalty_coef", -1.0), (iql, "expectile", 1.5),
                                 (iql, "num_critics", 0), (cql, "tau", 0.0)):
        with pytest.raises(ValueError, match=field):
            module.Config(**{field: value})
