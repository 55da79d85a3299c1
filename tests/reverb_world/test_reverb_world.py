"""The Reverb world: rlkit's device experience round-trips through a loopback Reverb server."""

import jax
import numpy as np
import pytest

from rlkit import envs
from rlkit.agents import dqn
from rlkit.loops.device import ActorState, rollout
from rlkit.replay import transitions

pytestmark = pytest.mark.reverb


def test_transitions_round_trip_through_reverb(reverb_module):
    reverb = reverb_module
    env = envs.make("CartPole-v1")
    agent = dqn.make(dqn.Config(num_envs=1, hidden_sizes=(8,)), env.spec)
    state = agent.init(jax.random.key(0))
    obs, env_state = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 1))
    _, trajectory, _ = rollout(env, agent, state, ActorState(env_state, obs, ()), jax.random.key(2), 40)
    steps = jax.tree.map(lambda x: np.asarray(x)[:, 0], transitions(trajectory))
    fields = [field for field in steps._fields if field != "extras"]  # DQN's extras are empty
    assert steps.extras == {}

    server = reverb.Server(tables=[reverb.Table.queue("transitions", 100)], port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        with client.trajectory_writer(num_keep_alive_refs=1) as writer:
            for t in range(40):
                writer.append({k: getattr(steps, k)[t] for k in fields} | {"index": np.int32(t)})
                writer.create_item(
                    "transitions", priority=1.0,
                    trajectory={k: writer.history[k][-1] for k in (*fields, "index")},
                )
            writer.flush(timeout_ms=5000)
        assert client.server_info(timeout=5)["transitions"].current_size == 40
        for t, sample in enumerate(client.sample("transitions", num_samples=40, emit_timesteps=False)):
            data = dict(zip(sorted((*fields, "index")), sample.data))
            assert int(data["index"]) == t  # a queue keeps insertion order
            for field in fields:
                np.testing.assert_array_equal(data[field], getattr(steps, field)[t])
    finally:
        server.stop()
        del server
