"""Every device of a machine: runs split over 4 (fake CPU) devices train as they do on one."""

import os
import subprocess
import sys
import textwrap

FOUR_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}


def run_on_four_devices(script: str) -> None:
    """Run ``script`` in a fresh interpreter that sees 4 CPU devices; it fails by raising."""
    done = subprocess.run([sys.executable, "-c", script], env=FOUR_DEVICES, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(done.stdout)

SHARDED_AND_NOT = textwrap.dedent("""
    import jax, numpy as np
    from rlkit import RunConfig, agents, make_env, make_trainer, run_training

    assert len(jax.devices()) == 4, jax.devices()
    config = agents.ppo.Config(num_envs=4, num_steps=16, num_minibatches=2, num_epochs=1, hidden_sizes=(16,))
    trainer = make_trainer(agents.ppo, config, make_env("CartPole-v1"),
                           RunConfig(total_steps=4096, num_chunks=2, eval_episodes=4))
    seeds = list(range(8))
    rates = {"learning_rate": [3e-4, 1e-3] * 4}
    one = run_training(trainer, seeds, rates)
    four = run_training(trainer, seeds, rates, devices=4)
    leaves = jax.tree.leaves(four.run_state.agent_state)
    assert all(len(leaf.sharding.device_set) == 4 for leaf in leaves), [leaf.sharding for leaf in leaves]
    assert all(leaf.addressable_shards[0].data.shape[0] == 2 for leaf in leaves)  # two runs per device
    np.testing.assert_allclose(four.eval_returns, one.eval_returns, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(four.run_state.agent_state), jax.tree.leaves(one.run_state.agent_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert len(set(np.round(one.eval_returns.mean(1), 3))) > 1, "the runs should differ from each other"
    for devices, message in ((3, "must divide the number of runs, 8"), (8, "this machine has 4 cpu device")):
        try:
            run_training(trainer, seeds, devices=devices)
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"devices={devices} was accepted")
    print("per seed", one.eval_returns.mean(1).round(1).tolist())
""")


def test_runs_split_over_four_devices_train_as_on_one():
    run_on_four_devices(SHARDED_AND_NOT)


def test_train_refuses_devices_it_cannot_use(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlkit", "train", "--agent", "ppo", "--env", "CartPole-v1",
                           "--seeds", "3", "--devices", "2", "--steps", "1000", "--out", str(tmp_path / "run")],
                          env=FOUR_DEVICES, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--devices 2 must divide the number of runs, 3" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


DATA_PARALLEL = textwrap.dedent("""
    import jax, numpy as np
    from rlkit import RunConfig, agents, make_env, make_trainer, run_training

    env = make_env("CartPole-v1")
    # PPO's defaults (8 environments x 64 steps): two environments per device; 2 seeds vmapped.
    trainer = make_trainer(agents.ppo, agents.ppo.Config(), env, RunConfig(total_steps=500_000), data_parallel=4)
    assert trainer.plan.total_steps == 499_712 and trainer.plan.steps_per_iteration == 512, trainer.plan
    chunks = []
    result = run_training(trainer, [0, 1], on_chunk=lambda i, metrics, s: chunks.append(metrics))
    per_seed = result.eval_returns.mean(1)
    print("per seed", per_seed.round(1).tolist(), "compile", round(result.compile_seconds, 1),
          "run", round(result.run_seconds, 1))
    assert per_seed.mean() >= 475, per_seed
    assert chunks[-1]["env_steps"].tolist() == [499_712, 499_712], chunks[-1]["env_steps"]  # all devices' steps
    for leaf in jax.tree.leaves(result.run_state.agent_state.params):
        assert leaf.shape[:2] == (2, 4) and len(leaf.sharding.device_set) == 4, (leaf.shape, leaf.sharding)
        copies = np.asarray(leaf)
        assert np.array_equal(copies, np.broadcast_to(copies[:, :1], copies.shape)), "devices' parameters differ"
    observations = np.asarray(result.run_state.actor.obs)  # [seeds, devices, envs per device, 4]
    assert len({row.tobytes() for row in observations[0]}) == 4, "every device should step its own environments"
    # Whole-batch statistics from the devices' shares: the moments of all 16 rows, 4 rows per device.
    from jax.sharding import Mesh, PartitionSpec
    from rlkit import parallel

    rows = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)

    def share(x):
        with parallel.over_devices():
            mean, var = parallel.moments(x)
            return mean[None], var[None], np.full((1,), 1) * parallel.count(x.shape[0])

    mean, var, count = jax.shard_map(share, mesh=Mesh(np.asarray(jax.devices()), (parallel.DATA_AXIS,)),
                                     in_specs=PartitionSpec(parallel.DATA_AXIS),
                                     out_specs=PartitionSpec(parallel.DATA_AXIS), check_vma=False)(rows)
    np.testing.assert_allclose(np.asarray(mean), np.broadcast_to(rows.mean(0), (4, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(var), np.broadcast_to(rows.var(0), (4, 3)), rtol=1e-5, atol=1e-6)
    assert np.asarray(count).tolist() == [16] * 4
    for agent, config, message in (
        (agents.dqn, agents.dqn.Config(), "dqn cannot split one run over devices"),
        (agents.ppo, agents.ppo.Config(num_envs=6), "num_envs=6 must be divisible by --devices 4"),
        (agents.ppo, agents.ppo.Config(num_envs=8, num_minibatches=4, num_steps=1), "one device's share"),
    ):
        try:
            make_trainer(agent, config, env, RunConfig(total_steps=100_000), data_parallel=4)
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"{message!r} was accepted")
""")


def test_one_run_split_over_four_devices_learns_cartpole():
    """Data parallel: each of 4 devices steps one of PPO's 4 environments; gradients averaged."""
    run_on_four_devices(DATA_PARALLEL)
