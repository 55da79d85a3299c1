"""Recurrent PPO, IMPALA and R2D2: what each stores at acting time is what its update reads back."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_experience import leaf_priorities
from toy_env import ToyChain

from rlkit import RunConfig, make_env, make_trainer, run_training
from rlkit.agents import impala, r2d2, recurrent_ppo
from rlkit.envs import wrap
from rlkit.loops.device import ActorState, rollout

RPPO_TINY = recurrent_ppo.Config(num_envs=4, num_steps=16, num_minibatches=2, num_epochs=1, hidden_sizes=(8,),
                                 memory_size=8)
R2D2_TINY = r2d2.Config(num_envs=4, num_steps=4, buffer_size=400, batch_size=8, learning_starts=64,
                        sequence_length=8, sequence_period=4, burn_in=2, n_step=3, memory_size=8,
                        hidden_sizes=(8,), target_update_freq=32)
IMPALA_TINY = impala.Config(num_envs=4, num_steps=8, hidden_sizes=(8,), policy_lag=2)


def toy_rollout(agent, state, num_envs, steps):
    """A rollout on ToyChain, whose episodes end every few steps (terminations and truncations)."""
    env = wrap(ToyChain())
    obs, env_state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), num_envs))
    start = ActorState(env_state, obs, agent.init_carry(num_envs))
    return jax.jit(lambda s, k: rollout(env, agent, state, s, k, steps)[1])(start, jax.random.key(1))


@pytest.mark.parametrize("core", ["gru", "lstm"])
def test_recurrent_ppo_update_replays_the_memory_acting_used(core):
    """One minibatch step at the acting parameters: every probability ratio is 1 exactly when the update's
    unroll (from the stored first memory, restarted at episode starts) reproduces what acting computed."""
    config = dataclasses.replace(RPPO_TINY, num_minibatches=1, core=core)
    agent = recurrent_ppo.make(config, wrap(ToyChain()).spec)
    state = agent.init(jax.random.key(0))
    trajectory = toy_rollout(agent, state, config.num_envs, config.num_steps)
    assert bool((trajectory.terminated | trajectory.truncated).any())
    _, metrics = jax.jit(agent.update)(state, trajectory, jax.random.key(2))
    assert float(metrics["approx_kl"]) < 1e-7 and float(metrics["clip_fraction"]) == 0.0


def test_impala_stores_behaviour_logits_and_lags_its_policy():
    env = wrap(ToyChain())
    lagless = impala.make(dataclasses.replace(IMPALA_TINY, policy_lag=0), env.spec)
    state = lagless.init(jax.random.key(0))
    _, metrics = jax.jit(lagless.update)(state, toy_rollout(lagless, state, 4, 8), jax.random.key(2))
    assert float(metrics["rho_mean"]) == pytest.approx(1.0, abs=1e-6)  # behaviour = learner: ratios of 1
    lagged = impala.make(IMPALA_TINY, env.spec)
    state = lagged.init(jax.random.key(0))
    update = jax.jit(lagged.update)
    first_params = state.params
    for i in range(3):
        state, _ = update(state, toy_rollout(lagged, state, 4, 8), jax.random.key(i))
    # After 3 updates with a lag of 2 the acting parameters are the ones after the first update.
    acting = jax.tree.map(lambda q: q[0], state.lagged_params)
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), acting, first_params))
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), acting, state.params))


@pytest.mark.parametrize("module,config", [(recurrent_ppo, RPPO_TINY), (r2d2, R2D2_TINY), (impala, IMPALA_TINY)],
                         ids=["recurrent_ppo", "r2d2", "impala"])
def test_trains_in_the_device_loop_on_masked_cartpole(module, config):
    env = make_env("CartPole-v1", observe=(0, 2))
    trainer = make_trainer(module, config, env, RunConfig(total_steps=1024, num_chunks=2, eval_episodes=2))
    result = run_training(trainer, seeds=[0, 1])
    assert np.isfinite(result.eval_returns).all() and result.eval_returns.shape == (2, 2)
    state = result.run_state.agent_state  # recurrent PPO counts iterations; R2D2 and IMPALA, gradient steps
    assert (np.asarray(state.iterations if module is recurrent_ppo else state.grad_steps) > 0).all()


def test_r2d2_returns_one_priority_per_sequence_and_the_loop_writes_them_back():
    env = make_env("CartPole-v1", observe=(0, 2))
    trainer = make_trainer(r2d2, R2D2_TINY, env, RunConfig(total_steps=512, num_chunks=1, eval_episodes=1))
    run_state, metrics = jax.jit(trainer.train)(jax.random.key(0), {})
    assert "priorities" not in metrics
    written = leaf_priorities(run_state.replay_state)
    assert len(np.unique(np.round(written[written > 0], 5))) > 2  # TD-error priorities, not the insert default


def test_bad_recurrent_configs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"burn_in=8 must lie in \[0, sequence_length=8\)"):
        r2d2.Config(sequence_length=8, burn_in=8)
    with pytest.raises(ValueError, match="num_minibatches=3 must divide num_envs=4"):
        recurrent_ppo.Config(num_envs=4, num_steps=6, num_minibatches=3)
    with pytest.raises(ValueError, match="core: 'rnn' is not one of"):
        recurrent_ppo.Config(core="rnn")
    with pytest.raises(ValueError, match="agent r2d2: needs a discrete action space"):
        r2d2.make(R2D2_TINY, make_env("Pendulum-v1").spec)
    with pytest.raises(ValueError, match="sequence_length=40 is longer than the buffer"):
        make_trainer(r2d2, r2d2.Config(buffer_size=16 * 20, learning_starts=100), make_env("CartPole-v1"),
                     RunConfig(total_steps=100_000))
