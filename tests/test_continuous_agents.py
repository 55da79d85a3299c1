"""SAC, TD3, DDPG, D4PG and MPO: init/act/update jit and are pure, vmap over seeds, act within bounds, configs checked."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import RunConfig, agents, envs, make_trainer, run_training
from rlkit.agents import d4pg, ddpg, mpo, sac, td3
from rlkit.types import Transition

SMALL = {"hidden_sizes": (8,), "buffer_size": 64, "batch_size": 4, "learning_starts": 4}
TINY = {
    "sac": sac.Config(**SMALL),
    "td3": td3.Config(**SMALL, policy_delay=1),  # the actor learns on the first update too
    "ddpg": ddpg.Config(**SMALL),
    "d4pg": d4pg.Config(**SMALL, num_atoms=11, v_min=-5.0, v_max=0.0),
    "mpo": mpo.Config(**SMALL, num_samples=4, target_update_period=1),  # targets copied every update
}


@pytest.fixture(scope="module")
def pendulum():
    return envs.make("Pendulum-v1")


def fake_batch(spec, size=4, key=jax.random.key(0)):
    obs_key, action_key = jax.random.split(key)
    obs = jax.random.normal(obs_key, (size, *spec.observation_shape))
    action = jax.random.uniform(action_key, (size, spec.num_actions), minval=spec.action_low, maxval=spec.action_high)
    return Transition(
        obs_tm1=obs, action_tm1=action, reward_t=jnp.linspace(-1.0, 0.0, size),
        discount_t=jnp.array([0.99, 0.0, 0.99, 0.99])[:size], obs_t=obs + 0.1,
        last_t=jnp.array([False, True, True, False])[:size],
    )


def same(a, b):
    return jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))


@pytest.mark.parametrize("name", sorted(TINY))
def test_init_act_update_are_pure_and_jit(name, pendulum):
    spec = pendulum.spec
    agent = agents.get(name).make(TINY[name], spec, total_steps=1000)
    state = jax.jit(agent.init)(jax.random.key(0))
    assert same(state, jax.jit(agent.init)(jax.random.key(0)))

    act = jax.jit(agent.act, static_argnames="deterministic")
    obs = jax.random.normal(jax.random.key(3), (5, *spec.observation_shape)) * 10
    for deterministic in (False, True):
        out = act(state, obs, (), jax.random.key(1), deterministic=deterministic)
        assert out.action.shape == (5, spec.num_actions) and out.action.dtype == jnp.float32
        assert np.all(out.action >= spec.action_low) and np.all(out.action <= spec.action_high)
        assert same(out, act(state, obs, (), jax.random.key(1), deterministic=deterministic))
    greedy = act(state, obs, (), jax.random.key(1), deterministic=True).action
    assert same(greedy, act(state, obs, (), jax.random.key(7), deterministic=True).action)

    batch = fake_batch(spec)
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for part in ("actor", "critic"):
        changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new_state.params[part], state.params[part])
        assert any(jax.tree.leaves(changed)), f"one update must change the {part} parameters"
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new_state.target_params, state.target_params)
    assert any(jax.tree.leaves(changed)), "the targets move by Polyak averaging"
    assert int(new_state.grad_steps) == 1
    assert "loss" in metrics and all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    again, _ = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert same(new_state, again)


@pytest.mark.parametrize("name", sorted(TINY))
def test_vmap_over_seeds(name, pendulum):
    spec = pendulum.spec
    agent = agents.get(name).make(TINY[name], spec)
    # jitted: one compile, where the vmapped calls alone ran op by op
    states = jax.jit(jax.vmap(agent.init))(jax.random.split(jax.random.key(0), 3))
    leaves = jax.tree.leaves(states.params)
    assert all(leaf.shape[0] == 3 for leaf in leaves)
    assert any(not np.array_equal(leaf[0], leaf[1]) for leaf in leaves)
    obs = jnp.ones((3, 2, *spec.observation_shape))
    act = jax.jit(jax.vmap(agent.act, in_axes=(0, 0, None, 0)))
    out = act(states, obs, (), jax.random.split(jax.random.key(1), 3))
    assert out.action.shape == (3, 2, spec.num_actions)


@pytest.mark.parametrize("name", sorted(TINY))
def test_uniform_actions_until_the_first_update(name, pendulum):
    spec = pendulum.spec
    agent = agents.get(name).make(TINY[name], spec)
    state = agent.init(jax.random.key(0))
    obs = jnp.zeros((512, *spec.observation_shape))
    warmup = agent.act(state, obs, (), jax.random.key(1)).action
    assert warmup.std() > 0.9 * (spec.action_high - spec.action_low) / np.sqrt(12)  # uniform over the range
    learning = agent.act(state._replace(grad_steps=jnp.ones((), jnp.int32)), obs, (), jax.random.key(1)).action
    assert learning.std() < warmup.std()


def test_twin_critics_and_ddpg_defaults(pendulum):
    for name, critics in (("sac", 2), ("td3", 2), ("ddpg", 1)):
        state = agents.get(name).make(TINY[name], pendulum.spec).init(jax.random.key(0))
        assert all(leaf.shape[0] == critics for leaf in jax.tree.leaves(state.params["critic"]))
    default = ddpg.Config()
    assert (default.num_critics, default.target_noise, default.policy_delay) == (1, 0.0, 1)
    assert isinstance(default, td3.Config) and ddpg.make is td3.make


def test_ddpg_trains_through_the_loop_with_vmapped_hyperparameters(pendulum):
    config = dataclasses.replace(TINY["ddpg"], learning_starts=16)
    trainer = make_trainer(ddpg, config, pendulum, RunConfig(total_steps=64, num_chunks=2, eval_episodes=2))
    hparams = {"learning_rate": [1e-3, 1e-2], "exploration_noise": [0.1, 0.3], "tau": [0.005, 0.5]}
    result = run_training(trainer, [0, 1], hparams=hparams)
    assert result.eval_returns.shape == (2, 2) and np.isfinite(result.eval_returns).all()
    assert np.all(np.asarray(result.run_state.agent_state.grad_steps) == 64 - 16 + 1)


def test_td3_delays_the_actor(pendulum):
    agent = td3.make(dataclasses.replace(TINY["td3"], policy_delay=2), pendulum.spec)
    state = agent.init(jax.random.key(0))
    update = jax.jit(agent.update)
    first, _ = update(state, fake_batch(pendulum.spec), jax.random.key(1))
    assert same(first.params["actor"], state.params["actor"]) and same(first.target_params, state.target_params)
    second, _ = update(first, fake_batch(pendulum.spec), jax.random.key(2))
    assert not same(second.params["actor"], first.params["actor"])


def test_sac_vmaps_over_float_hyperparameters(pendulum):
    def run(learning_rate, tau, init_alpha):
        config = dataclasses.replace(TINY["sac"], learning_rate=learning_rate, tau=tau, init_alpha=init_alpha)
        agent = sac.make(config, pendulum.spec)
        return agent.update(agent.init(jax.random.key(0)), fake_batch(pendulum.spec), jax.random.key(1))[1]

    metrics = jax.jit(jax.vmap(run))(jnp.array([1e-3, 1e-2]), jnp.array([0.005, 0.5]), jnp.array([1.0, 0.1]))
    assert metrics["alpha"].shape == (2,) and np.allclose(metrics["alpha"], [1.0, 0.1])


@pytest.mark.parametrize("name", ["sac", "td3", "ddpg"])
def test_rejects_discrete_actions(name, cartpole):
    with pytest.raises(ValueError, match=f"agent {name}: needs a continuous action space"):
        agents.get(name).make(agents.get(name).Config(), cartpole.spec)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        sac.Config(learning_rate=0.0)
    with pytest.raises(ValueError, match="tau must lie in"):
        sac.Config(tau=0.0)
    with pytest.raises(ValueError, match="init_alpha must be > 0"):
        sac.Config(init_alpha=-1.0)
    with pytest.raises(ValueError, match="num_critics must be >= 1"):
        sac.Config(num_critics=0)
    with pytest.raises(ValueError, match="policy_delay must be >= 1"):
        td3.Config(policy_delay=0)
    with pytest.raises(ValueError, match="target_noise must be >= 0"):
        td3.Config(target_noise=-0.1)
    with pytest.raises(ValueError, match="exploration_noise must be >= 0"):
        ddpg.Config(exploration_noise=-1.0)
    with pytest.raises(ValueError, match="num_envs=3 must divide buffer_size=100000"):
        td3.Config(num_envs=3)
    with pytest.raises(ValueError, match="learning_starts=10 must be <= buffer_size=8"):
        ddpg.Config(buffer_size=8, learning_starts=10)
    with pytest.raises(ValueError, match="updates_per_step must be >= 1"):
        sac.Config(updates_per_step=0)
    with pytest.raises(ValueError, match="activation"):
        td3.Config(activation="sigmoid-ish")


def test_experience_maps_the_replay_ratio():
    spec = sac.experience(sac.Config(num_envs=4, num_steps=2, updates_per_step=3, learning_starts=100))
    assert (spec.kind, spec.num_envs, spec.rollout_length, spec.updates_per_rollout) == ("transitions", 4, 2, 6)
    assert spec.min_size == 256  # at least one batch
    assert td3.experience(td3.Config(updates_per_step=2)).updates_per_rollout == 2


def test_d4pg_critic_is_a_distribution_and_its_config_is_checked(pendulum):
    agent = d4pg.make(TINY["d4pg"], pendulum.spec)
    state = agent.init(jax.random.key(0))
    critic_head = state.params["critic"]["params"]["Dense_0"]["kernel"]  # the output layer, after MLP_0
    assert critic_head.shape[-1] == 11  # logits over the atoms (stacked over one critic)
    new_state, metrics = jax.jit(agent.update)(state, fake_batch(pendulum.spec), jax.random.key(1))
    assert -5.0 <= float(metrics["q_mean"]) <= 0.0 and np.isfinite(float(metrics["loss"]))
    assert not same(new_state.params["actor"], state.params["actor"])
    assert agents.d4pg.experience(TINY["d4pg"]).n_step == 5
    for bad, message in (({"num_critics": 2}, "num_critics: a categorical critic is one critic"),
                         ({"distribution": "none"}, "d4pg is 'categorical'"),
                         ({"v_min": 1.0, "v_max": 0.0}, "v_max - v_min must be > 0")):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(TINY["d4pg"], **bad)


def test_mpo_learns_its_dual_variables_and_keeps_the_policy_near_its_target(pendulum):
    """The temperature and the Lagrange multipliers are state the update moves; one update keeps the
    policy within a small KL of the target policy it started from."""
    agent = mpo.make(dataclasses.replace(TINY["mpo"], target_update_period=100), pendulum.spec)
    state = agent.init(jax.random.key(0))
    new_state, metrics = jax.jit(agent.update)(state, fake_batch(pendulum.spec), jax.random.key(1))
    for name in ("temperature", "alpha_mean", "alpha_stddev"):
        assert not np.array_equal(new_state.params["duals"][name], state.params["duals"][name]), name
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert 0.0 <= float(metrics["kl_mean"]) < 0.1 and float(metrics["temperature"]) > 0
    assert same(new_state.target_params, state.target_params)  # copied only every target_update_period
    assert mpo.gaussian_kl(jnp.zeros(2), jnp.ones(2), jnp.zeros(2), jnp.ones(2)).tolist() == [0.0, 0.0]
