"""The jitted loop: seeds, hyperparameter vmaps, chunking, the whole-run function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import RunConfig, make_trainer, run_training, seed_keys
from rlkit.agents import dqn, ppo
from rlkit.loops.device import plan_chunks

PPO_TINY = ppo.Config(num_envs=4, num_steps=16, num_minibatches=2, num_epochs=2, hidden_sizes=(16,))
DQN_TINY = dqn.Config(num_envs=4, num_steps=1, buffer_size=400, batch_size=16, learning_starts=100, hidden_sizes=(16,),
                      target_update_freq=40, n_step=2)


@pytest.fixture(scope="module")
def ppo_trainer(cartpole):
    return make_trainer(ppo, PPO_TINY, cartpole, RunConfig(total_steps=64 * 8, num_chunks=2, eval_episodes=4))


@pytest.fixture(scope="module")
def ppo_seed_run(ppo_trainer):
    return run_training(ppo_trainer, seeds=[0, 1, 0])


def params_of(run_state, index):
    return jax.tree.map(lambda x: np.asarray(x[index]), run_state.agent_state.params)


def trees_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_same_seed_is_bit_identical_and_seeds_differ(ppo_seed_run):
    run_state = ppo_seed_run.run_state
    assert trees_equal(params_of(run_state, 0), params_of(run_state, 2))
    assert not trees_equal(params_of(run_state, 0), params_of(run_state, 1))
    np.testing.assert_array_equal(ppo_seed_run.eval_returns[0], ppo_seed_run.eval_returns[2])
    assert ppo_seed_run.eval_returns.shape == (3, 4)
    assert int(run_state.env_steps[0]) == ppo_seed_run.total_steps == 512


def test_whole_run_function_matches_chunked_runner(ppo_trainer, ppo_seed_run):
    # The same computation in one program; XLA may round the last bit differently when the
    # chunk's scan sits inside another, so compare to float32 precision, not bit for bit.
    run_state, metrics = jax.jit(jax.vmap(ppo_trainer.train))(seed_keys([0, 1, 0]), {})
    for run in range(3):
        for ours, theirs in zip(jax.tree.leaves(params_of(run_state, run)), jax.tree.leaves(params_of(ppo_seed_run.run_state, run))):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(run_state.env_steps), [512, 512, 512])
    assert metrics["env_steps"].shape == (3, ppo_trainer.plan.num_chunks)


def test_vmapping_learning_rates_compiles_once(cartpole):
    traces = []

    class Counting:
        """The PPO module with a make() that counts how often it is traced."""

        Config = ppo.Config
        experience = staticmethod(ppo.experience)

        @staticmethod
        def make(config, spec, total_steps=None):
            traces.append(config.learning_rate)
            return ppo.make(config, spec, total_steps)

    trainer = make_trainer(Counting, PPO_TINY, cartpole, RunConfig(total_steps=64 * 4, num_chunks=2, eval_episodes=2))
    traces.clear()
    rates = [1e-4, 3e-4, 1e-3, 3e-3]
    result = run_training(trainer, seeds=[0, 0, 0, 0], hparams={"learning_rate": rates})
    chunk_traces = [lr for lr in traces if isinstance(lr, jax.core.Tracer)]
    # init, run_chunk and evaluate are each traced exactly once for all four rates.
    assert len(chunk_traces) == 3, traces
    leaves = [params_of(result.run_state, i) for i in range(4)]
    assert not trees_equal(leaves[0], leaves[1]) and not trees_equal(leaves[2], leaves[3])


def test_off_policy_loop_learns_after_warmup(cartpole):
    trainer = make_trainer(dqn, DQN_TINY, cartpole, RunConfig(total_steps=4 * 60, num_chunks=3, eval_episodes=2))
    chunks = []
    result = run_training(trainer, seeds=[0, 1], on_chunk=lambda i, m, t: chunks.append(m))
    assert len(chunks) == 3
    assert np.isnan(chunks[0]["loss"]).all()  # 80 steps < learning_starts=100: no update yet
    assert np.isfinite(chunks[-1]["loss"]).all()
    assert (np.asarray(result.run_state.agent_state.grad_steps) > 0).all()
    assert int(result.run_state.env_steps[0]) == 240


def test_plan_chunks_and_step_validation(cartpole):
    assert plan_chunks(499_712, 512, 20) == (16, 61, 512)
    plan = plan_chunks(500_000, 10, 20)
    assert plan.total_steps == 500_000 and plan.num_chunks == 20
    with pytest.raises(ValueError, match="fewer than one loop iteration"):
        make_trainer(ppo, PPO_TINY, cartpole, RunConfig(total_steps=10))
    with pytest.raises(ValueError, match="steps .* must be a positive integer"):
        RunConfig(total_steps=0)
    with pytest.raises(ValueError, match="ends before learning starts"):
        make_trainer(dqn, DQN_TINY, cartpole, RunConfig(total_steps=80))
    with pytest.raises(ValueError, match="cannot vary inside one compile"):
        trainer = make_trainer(ppo, PPO_TINY, cartpole, RunConfig(total_steps=128))
        trainer.init(jax.random.key(0), {"num_envs": jnp.float32(2)})
