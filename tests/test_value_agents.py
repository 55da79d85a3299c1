"""C51, QR-DQN, Rainbow and PQN: init/act/update jit and are pure, vmap over seeds, learn in one update,
validate their configs, and PQN's Q(lambda) returns treat truncation and termination apart."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import agents, envs
from rlkit.agents import c51, dqn, pqn, qrdqn, rainbow
from rlkit.networks import DistributionalQNetwork, QNetwork
from rlkit.replay import n_step_transition, transitions
from rlkit.types import Trajectory

TINY = {
    "c51": c51.Config(num_envs=2, buffer_size=64, batch_size=4, learning_starts=4, hidden_sizes=(8,),
                      target_update_freq=2, num_atoms=11),
    "qrdqn": qrdqn.Config(num_envs=2, buffer_size=64, batch_size=4, learning_starts=4, hidden_sizes=(8,),
                          target_update_freq=2, num_atoms=8),
    "pqn": pqn.Config(num_envs=2, num_steps=8, num_minibatches=2, num_epochs=1, hidden_sizes=(8,)),
    "rainbow": rainbow.Config(num_envs=2, buffer_size=64, batch_size=4, learning_starts=4, hidden_sizes=(8,),
                              target_update_freq=2, num_atoms=11, n_step=1),
}
jit_act = jax.jit(lambda agent, *args, **kw: agent.act(*args, **kw), static_argnums=0,
                  static_argnames="deterministic")


def fake_rollout(spec, length=8, num_envs=2, key=jax.random.key(0)):
    obs = jax.random.normal(key, (length, num_envs, *spec.observation_shape))
    return Trajectory(
        obs=obs, action=jnp.arange(length * num_envs).reshape(length, num_envs) % 2,
        reward=jnp.ones((length, num_envs)),
        terminated=jnp.zeros((length, num_envs), bool).at[3].set(True),
        truncated=jnp.zeros((length, num_envs), bool).at[5].set(True),
        next_obs=obs + 0.1, extras={},
    )


def batch_for(name, spec, n_step=1):
    rollout = fake_rollout(spec)
    if name == "pqn":
        return rollout
    windows = jnp.arange(rollout.reward.shape[0] - n_step + 1)[:, None] + jnp.arange(n_step)
    # [windows, n, envs, ...] -> [windows * envs, n, ...]: every n-step sequence of the rollout
    seq = jax.tree.map(
        lambda x: jnp.swapaxes(x[windows], 1, 2).reshape(-1, n_step, *x.shape[2:]), transitions(rollout)
    )
    return jax.vmap(n_step_transition, in_axes=(0, None))(seq, 0.99)


def equal(a, b):
    return jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b))


@pytest.mark.parametrize("name", sorted(TINY))
def test_init_act_update_are_pure_and_jit(name, cartpole):
    agent = agents.get(name).make(TINY[name], cartpole.spec, total_steps=1000)
    state = jax.jit(agent.init)(jax.random.key(0))
    assert equal(state, jax.jit(agent.init)(jax.random.key(0)))

    obs = jnp.ones((2, *cartpole.spec.observation_shape))
    out = jit_act(agent, state, obs, (), jax.random.key(1))
    assert out.action.shape == (2,) and jnp.issubdtype(out.action.dtype, jnp.integer)
    greedy = jit_act(agent, state, obs, (), jax.random.key(1), deterministic=True)
    assert greedy.action.shape == (2,) and bool(jnp.all(greedy.action == greedy.action[0]))

    batch = batch_for(name, cartpole.spec)
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new_state.params, state.params)
    assert any(jax.tree.leaves(changed)), "one update must change the parameters"
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    again, _ = jax.jit(agent.update)(state, batch, jax.random.key(2))
    assert equal(new_state, again)


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


@pytest.mark.parametrize("name", ["c51", "qrdqn"])
def test_distributional_variants_update(name, cartpole):
    """Plain Q-learning targets, a dueling head and 3-step returns work for both distributions."""
    config = dataclasses.replace(TINY[name], dueling=True, n_step=3, double_q=False, tau=0.5)
    agent = agents.get(name).make(config, cartpole.spec, total_steps=1000)
    state = agent.init(jax.random.key(0))
    heads = state.params["params"]
    assert heads["Dense_0"]["kernel"].shape[-1] == 2 * config.num_atoms  # advantage per action and atom
    assert heads["Dense_1"]["kernel"].shape[-1] == config.num_atoms  # value per atom
    new_state, metrics = jax.jit(agent.update)(state, batch_for(name, cartpole.spec, n_step=3), jax.random.key(2))
    assert np.isfinite(float(metrics["loss"])) and int(new_state.grad_steps) == 1
    assert not equal(new_state.target_params, state.target_params)  # refreshed every update here


def test_qrdqn_huber_kappa_scales_like_rlax(cartpole):
    """The kappa-rescaled rlax call equals rlax's own Huber threshold, and kappa may be a tracer."""
    import rlax

    config = dataclasses.replace(TINY["qrdqn"], double_q=False)
    batch = batch_for("qrdqn", cartpole.spec)
    agent = qrdqn.make(config, cartpole.spec)
    state = agent.init(jax.random.key(0))
    network = DistributionalQNetwork(2, config.num_atoms, config.hidden_sizes)
    out_tm1 = jnp.swapaxes(network.apply(state.params, batch.obs_tm1), -1, -2) * 10
    out_t = jnp.swapaxes(network.apply(state.params, batch.obs_t), -1, -2) * 10
    taus = (jnp.arange(config.num_atoms) + 0.5) / config.num_atoms
    quantile_loss = jax.jit(jax.vmap(rlax.quantile_q_learning, in_axes=(0, None, 0, 0, 0, 0, 0, None)),
                            static_argnums=7)  # compiled: op by op, the vmapped loss took half a minute
    for kappa in (0.5, 2.0):
        expected = quantile_loss(out_tm1, taus, batch.action_tm1, batch.reward_t, batch.discount_t, out_t, out_t, kappa)
        scaled = kappa**2 * quantile_loss(
            out_tm1 / kappa, taus, batch.action_tm1, batch.reward_t / kappa, batch.discount_t, out_t,
            out_t / kappa, 1.0,
        )
        np.testing.assert_allclose(scaled, expected, rtol=1e-5)

    def loss(kappa):
        traced = dataclasses.replace(config, huber_kappa=kappa)
        return qrdqn.make(traced, cartpole.spec).update(state, batch, jax.random.key(0))[1]["loss"]

    losses = jax.jit(jax.vmap(loss))(jnp.array([0.5, 2.0]))
    assert losses.shape == (2,) and bool(jnp.all(jnp.isfinite(losses)))


def test_float_fields_can_be_traced(cartpole):
    """C51's support and PQN's lambda and reward scale vary inside one compile (vmapped hparams)."""
    c51_batch, pqn_batch = batch_for("c51", cartpole.spec), fake_rollout(cartpole.spec)

    def c51_loss(v_min, v_max):
        config = dataclasses.replace(TINY["c51"], v_min=v_min, v_max=v_max)
        agent = c51.make(config, cartpole.spec)
        return agent.update(agent.init(jax.random.key(0)), c51_batch, jax.random.key(1))[1]["loss"]

    def pqn_loss(td_lambda, reward_scale):
        config = dataclasses.replace(TINY["pqn"], td_lambda=td_lambda, reward_scale=reward_scale)
        agent = pqn.make(config, cartpole.spec)
        return agent.update(agent.init(jax.random.key(0)), pqn_batch, jax.random.key(1))[1]["loss"]

    losses = jax.jit(jax.vmap(c51_loss))(jnp.array([-10.0, 0.0]), jnp.array([10.0, 100.0]))
    assert bool(jnp.all(jnp.isfinite(losses))) and losses[0] != losses[1]
    losses = jax.jit(jax.vmap(pqn_loss))(jnp.array([0.5, 0.9]), jnp.array([0.1, 1.0]))
    assert bool(jnp.all(jnp.isfinite(losses))) and losses[0] != losses[1]


def test_distributional_greedy_action_is_argmax_of_expected_value(cartpole):
    """C51 acts on sum(softmax(logits) * atoms), QR-DQN on the mean of the quantiles."""
    for name in ("c51", "qrdqn"):
        config = TINY[name]
        agent = agents.get(name).make(config, cartpole.spec)
        state = agent.init(jax.random.key(3))
        obs = jax.random.normal(jax.random.key(4), (16, *cartpole.spec.observation_shape)) * 3
        network = DistributionalQNetwork(2, config.num_atoms, config.hidden_sizes)
        out = network.apply(state.params, obs)
        if name == "c51":
            q = jnp.sum(jax.nn.softmax(out) * jnp.linspace(config.v_min, config.v_max, config.num_atoms), -1)
        else:
            q = out.mean(-1)
        greedy = agent.act(state, obs, (), jax.random.key(0), deterministic=True).action
        np.testing.assert_array_equal(greedy, jnp.argmax(q, -1))


def test_pqn_truncation_bootstraps_and_termination_does_not():
    """Hand-computed Q(lambda) returns over one rollout with a termination at t=1 and a truncation at t=3."""
    gamma, lam = 0.5, 0.5
    reward = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
    terminated = jnp.array([False, True, False, False, False])
    truncated = jnp.array([False, False, False, True, False])
    v = jnp.array([10.0, 20.0, 30.0, 40.0, 50.0])  # max_a Q(next_obs); at t=1 and t=3 the final obs
    g4 = 5 + gamma * 50  # the rollout's last step bootstraps: 30
    g3 = 4 + gamma * 40  # truncated: bootstraps from its final observation, no lambda past it: 24
    g2 = 3 + gamma * ((1 - lam) * 30 + lam * g3)  # 3 + 0.5 * (15 + 12) = 16.5
    g1 = 2.0  # terminated: no bootstrap
    g0 = 1 + gamma * ((1 - lam) * 10 + lam * g1)  # 1 + 0.5 * (5 + 1) = 4
    returns = pqn.q_lambda_returns(reward, terminated, truncated, v, gamma, lam)
    np.testing.assert_allclose(returns, [g0, g1, g2, g3, g4], rtol=1e-6)
    # Both at once is a termination.
    both = pqn.q_lambda_returns(reward, terminated, truncated | terminated, v, gamma, lam)
    np.testing.assert_allclose(both[1], 2.0)
    # lambda = 0 is one-step Q-learning; lambda = 1 sums rewards to the episode end.
    np.testing.assert_allclose(pqn.q_lambda_returns(reward, terminated, truncated, v, gamma, 0.0)[0], 1 + gamma * 10)
    np.testing.assert_allclose(pqn.q_lambda_returns(reward, terminated, truncated, v, gamma, 1.0)[0], 1 + gamma * 2)


def test_pqn_reward_scale_scales_the_targets(cartpole):
    """With reward_scale the update regresses on returns of the scaled rewards (vmapped, one compile)."""
    agent = pqn.make(TINY["pqn"], cartpole.spec)
    state = agent.init(jax.random.key(0))
    rollout = fake_rollout(cartpole.spec)

    def q_mean_after(scale):
        config = dataclasses.replace(TINY["pqn"], reward_scale=scale, learning_rate=0.05)
        new_state, _ = pqn.make(config, cartpole.spec).update(state, rollout, jax.random.key(1))
        return jnp.mean(jnp.max(QNetwork(2, (8,), layer_norm=True).apply(new_state.params, rollout.obs), -1))

    small, large = jax.jit(jax.vmap(q_mean_after))(jnp.array([0.01, 10.0]))  # one compile
    assert float(large) > float(small)


def test_discrete_only_agents_reject_pendulum():
    pendulum = envs.make("Pendulum-v1")
    for name in ("c51", "qrdqn", "pqn"):
        with pytest.raises(ValueError, match=f"agent {name}: needs a discrete action space"):
            agents.get(name).make(agents.get(name).Config(), pendulum.spec)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"v_max - v_min must be > 0"):
        c51.Config(v_min=10.0, v_max=-10.0)
    with pytest.raises(ValueError, match="num_atoms must be >= 2"):
        c51.Config(num_atoms=1)
    with pytest.raises(ValueError, match="distribution: c51 is 'categorical'"):
        c51.Config(distribution="quantile")
    with pytest.raises(ValueError, match="huber_kappa must be > 0"):
        qrdqn.Config(huber_kappa=0.0)
    with pytest.raises(ValueError, match="distribution: qrdqn is 'quantile'"):
        qrdqn.Config(distribution="none")
    with pytest.raises(ValueError, match="distribution: 'gaussian' is not one of"):
        dqn.Config(distribution="gaussian")
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        qrdqn.Config(learning_rate=0.0)
    with pytest.raises(ValueError, match=r"num_minibatches=3 must divide num_envs \* num_steps=2048"):
        pqn.Config(num_minibatches=3)
    with pytest.raises(ValueError, match="td_lambda must lie in"):
        pqn.Config(td_lambda=1.5)
    with pytest.raises(ValueError, match="reward_scale must be > 0"):
        pqn.Config(reward_scale=0.0)
    with pytest.raises(ValueError, match="epsilon_end must lie in"):
        pqn.Config(epsilon_end=-0.1)
    with pytest.raises(ValueError, match="num_epochs must be >= 1"):
        pqn.Config(num_epochs=0)
    with pytest.raises(ValueError, match="activation"):
        pqn.Config(activation="sigmoid-ish")


def test_registered_with_cartpole_presets():
    from rlkit import presets

    for name in ("c51", "qrdqn", "pqn"):
        assert agents.get(name) is agents.REGISTRY[name]
        preset = presets.get(name, "CartPole-v1")
        assert preset is not None and preset.steps == 500_000
        config = presets.config_for(name, "CartPole-v1")
        assert isinstance(config, agents.get(name).Config)


def test_pqn_baseline_returns_match_the_agent(monkeypatch):
    """baselines/pqn.py writes the Q(lambda) returns out; they equal rlkit.agents.pqn's.

    (tests/test_baselines.py trains the baseline for a few steps.)
    """
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "baselines" / "pqn.py"
    spec = importlib.util.spec_from_file_location("baseline_pqn_returns", path)
    baseline = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, baseline)  # dataclasses look their module up
    spec.loader.exec_module(baseline)
    reward, v = jax.random.normal(jax.random.key(0), (2, 9))
    terminated = jnp.zeros(9, bool).at[2].set(True)
    truncated = jnp.zeros(9, bool).at[5].set(True).at[2].set(True)
    np.testing.assert_allclose(
        baseline.q_lambda_returns(reward, terminated, truncated, v, 0.9, 0.7),
        pqn.q_lambda_returns(reward, terminated, truncated, v, 0.9, 0.7), rtol=1e-6,
    )


def test_rainbow_explores_by_weight_noise_and_evaluates_the_mean_network(cartpole):
    """Noisy output layers: acting draws fresh noise per key, the greedy action uses the mean weights,
    and an update moves the noise scales too."""
    config = dataclasses.replace(TINY["rainbow"], hidden_sizes=(16,))
    agent = rainbow.make(config, cartpole.spec, total_steps=1000)
    state = agent.init(jax.random.key(0))
    heads = state.params["params"]
    assert {"mu_kernel", "sigma_kernel", "mu_bias", "sigma_bias"} <= set(heads["NoisyDense_0"])
    obs = jax.random.normal(jax.random.key(3), (64, *cartpole.spec.observation_shape))
    acted = [jit_act(agent, state, obs, (), jax.random.key(k)).action for k in range(8)]
    assert len({tuple(np.asarray(a)) for a in acted}) > 1, "the noise should change some actions"
    greedy = [jit_act(agent, state, obs, (), jax.random.key(k), deterministic=True).action for k in range(2)]
    assert np.array_equal(greedy[0], greedy[1])
    quiet = rainbow.make(dataclasses.replace(config, noise_scale=0.0), cartpole.spec, total_steps=1000)
    quiet_state = quiet.init(jax.random.key(0))
    assert np.array_equal(jit_act(quiet, quiet_state, obs, (), jax.random.key(5)).action,
                          jit_act(quiet, quiet_state, obs, (), jax.random.key(5), deterministic=True).action)
    new_state, metrics = jax.jit(agent.update)(state, batch_for("rainbow", cartpole.spec), jax.random.key(2))
    assert not np.array_equal(new_state.params["params"]["NoisyDense_0"]["sigma_kernel"], heads["NoisyDense_0"]["sigma_kernel"])
    assert np.isfinite(float(metrics["loss"])) and "priorities" in metrics
