"""rlkit.replay.reverb: n-step items from a host actor, dead servers, the sampler and its rate limiter."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rlkit import envs
from rlkit.agents import dqn
from rlkit.loops.environment_loop import Actor, EnvironmentLoop
from rlkit.types import ExperienceSpec, Trajectory, Transition

pytestmark = pytest.mark.reverb

GAMMA = 0.9


@pytest.fixture(scope="module")
def rr(reverb_module):
    from rlkit.replay import reverb as rr

    return rr


def index(tree, i):
    """Entry ``i`` of every leaf."""
    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


def assert_trees_close(got, expected, rtol=1e-6, what=""):
    """Same structure, every leaf equal within ``rtol``; names the leaf that differs."""
    assert jax.tree.structure(got) == jax.tree.structure(expected), what
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=rtol, err_msg=f"{what} {jax.tree_util.keystr(path)}")


def example_transition(obs_size=4):
    return Transition(
        obs_tm1=np.zeros(obs_size, np.float32), action_tm1=np.int32(0), reward_t=np.float32(0),
        discount_t=np.float32(0), obs_t=np.zeros(obs_size, np.float32), last_t=np.bool_(False),
    )


def spec_for(n_step, buffer_size=1000, min_size=1, batch_size=8):
    return ExperienceSpec(
        kind="transitions", num_envs=1, rollout_length=1, batch_size=batch_size, buffer_size=buffer_size,
        min_size=min_size, n_step=n_step, gamma=GAMMA,
    )


class Policy:
    """A scripted agent-like policy: keep CartPole up (push towards the pole), or always push right."""

    def __init__(self, balance):
        self.balance = balance

    def __call__(self, obs):
        return np.int32(1 if (not self.balance or obs[2] + 0.5 * obs[3] > 0) else 0)


def run_episodes(adder, balance, max_episode_steps, episodes, seed):
    import gymnasium

    env = envs.GymWrapper(gymnasium.make("CartPole-v1", max_episode_steps=max_episode_steps), seed=seed)
    agent = dqn.make(dqn.Config(num_envs=1, hidden_sizes=(8,)), envs.environment_spec(env))
    actor = Actor(agent, agent.init(jax.random.key(0)), adder=adder)
    policy = Policy(balance)
    actor.select_action = policy  # scripted actions; observe/adder are the Actor's own
    steps = []

    def record(transition):
        steps.append(transition)
        adder(transition)

    actor.adder = record
    records = EnvironmentLoop(env, actor, logger=lambda r: None).run(num_episodes=episodes)
    return steps, records


def drain(rr, client, table, example):
    """Every item of a uniform table: sample (with replacement) until each key was seen."""
    size = client.server_info(timeout=5)[table].current_size
    sampler = rr.Sampler(client, table, 64, example, timeout_s=10)
    items = {}
    for _ in range(200):
        keys, _, batch = sampler.sample()
        for i, key in enumerate(keys):
            items[int(key)] = index(batch, i)
        if len(items) == size:
            return list(items.values())
    raise AssertionError(f"saw {len(items)} of {size} items")


def device_fold(steps, n, gamma):
    """rlkit.replay.n_step_transition over every start, the window padded past the stream's end."""
    from rlkit.replay import n_step_transition

    stacked = jax.tree.map(lambda *x: np.stack(x), *steps)
    out = []
    for t in range(len(steps)):
        idx = np.minimum(np.arange(t, t + n), len(steps) - 1)
        out.append(jax.tree.map(np.asarray, n_step_transition(jax.tree.map(lambda x: x[idx], stacked), gamma)))
    return out


def sort_key(tr):
    return tuple(np.round(np.concatenate([tr.obs_tm1, [tr.action_tm1]]), 6))


def test_n_step_fold_equals_device_fold(rr):
    rng = np.random.default_rng(0)
    steps = [
        Transition(rng.normal(size=3).astype(np.float32), np.int32(i % 2), np.float32(rng.normal()),
                   np.float32(0.0 if i == 6 else 1.0), rng.normal(size=3).astype(np.float32), np.bool_(i in (3, 6, 9)))
        for i in range(10)
    ]
    for n in (1, 2, 3, 5):
        expected = device_fold(steps, n, GAMMA)
        for t in range(len(steps)):
            end = next((k for k in range(t, min(t + n, len(steps))) if steps[k].last_t), min(t + n, len(steps)) - 1)
            got = rr.n_step_fold(steps[t : end + 1], GAMMA)
            assert_trees_close(got, expected[t], what=f"n={n} t={t}")


@pytest.mark.parametrize("n_step", [1, 3])
def test_actor_writes_truncations_terminations_and_n_step_items(rr, reverb_module, n_step):
    reverb = reverb_module
    spec, example = spec_for(n_step), example_transition()
    # A loose limiter: this test inserts everything before sampling.
    server = reverb.Server(rr.make_tables(spec, example, samples_per_insert=1.0, error_buffer=1e4), port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.TransitionWriter(client, spec, flush_every=4, example=example)
        truncated, _ = run_episodes(writer, balance=True, max_episode_steps=5, episodes=2, seed=1)
        terminated, records = run_episodes(writer, balance=False, max_episode_steps=500, episodes=2, seed=2)
        writer.flush()
        assert truncated[4].last_t and truncated[4].discount_t == 1.0  # truncation bootstraps
        assert terminated[-1].last_t and terminated[-1].discount_t == 0.0 and records[-1]["episode_length"] < 500
        steps = truncated + terminated
        assert writer.items_written == len(steps)  # one item per step, shorter ones at episode ends
        got = sorted(drain(rr, client, "replay", example), key=sort_key)
        assert len(got) == len(steps)
        expected = sorted(device_fold(steps, n_step, GAMMA), key=sort_key)
        for g, e in zip(got, expected):
            assert_trees_close(g, e)
        if n_step == 1:
            ends = [g for g in got if g.last_t]
            np.testing.assert_allclose(sorted(float(g.discount_t) for g in ends), [0, 0, GAMMA, GAMMA], rtol=1e-6)
        writer.close()
    finally:
        server.stop()


@pytest.mark.parametrize("n_step", [1, 3])
def test_add_batch_writes_each_environments_n_step_transitions_k_to_an_item(rr, reverb_module, n_step):
    reverb = reverb_module
    num_envs, per_item, num_steps = 3, 4, 12
    spec = ExperienceSpec(kind="transitions", num_envs=num_envs, rollout_length=1, batch_size=8,
                          buffer_size=1000, min_size=1, n_step=n_step, gamma=GAMMA)
    example = example_transition()
    tables = rr.make_tables(spec, example, samples_per_insert=1.0, error_buffer=1e4, transitions_per_item=per_item)
    server = reverb.Server(tables, port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.TransitionWriter(client, spec, flush_every=2, example=example, transitions_per_item=per_item)
        rng = np.random.default_rng(0)
        streams = [[] for _ in range(num_envs)]
        for t in range(num_steps):
            # Episodes end at different steps in each environment (env 0 terminates, the others truncate);
            # every episode ends at the last step, so every transition is complete.
            last = np.array([t % 5 == 4, t % 7 == 6, False]) | (t == num_steps - 1)
            terminated = last & (np.arange(num_envs) == 0)
            batch = Transition(
                obs_tm1=rng.normal(size=(num_envs, 4)).astype(np.float32),
                action_tm1=(np.arange(num_envs) + 10 * t).astype(np.int32),
                reward_t=rng.normal(size=num_envs).astype(np.float32),
                discount_t=np.where(terminated, 0.0, 1.0).astype(np.float32),
                obs_t=rng.normal(size=(num_envs, 4)).astype(np.float32),
                last_t=last,
            )
            writer.add_batch(batch)
            for i in range(num_envs):
                streams[i].append(index(batch, i))
        writer.flush()
        assert writer.transitions_written == num_envs * num_steps
        assert writer.items_written == num_envs * num_steps // per_item
        assert client.server_info(timeout=5)["replay"].current_size == writer.items_written

        sampler = rr.Sampler(client, "replay", 8, example, timeout_s=10, transitions_per_item=per_item)
        items = {}
        for _ in range(200):
            keys, probabilities, batch = sampler.sample()
            assert keys.shape == (2,) and probabilities.shape == (2,) and batch.obs_tm1.shape == (8, 4)
            for j, key in enumerate(keys):
                rows = slice(j * per_item, (j + 1) * per_item)
                items[int(key)] = [index(batch, k) for k in range(rows.start, rows.stop)]
            if len(items) == writer.items_written:
                break
        got = sorted((tr for item in items.values() for tr in item), key=sort_key)
        expected = sorted((tr for stream in streams for tr in device_fold(stream, n_step, GAMMA)), key=sort_key)
        assert len(got) == len(expected) == num_envs * num_steps
        for g, e in zip(got, expected):
            assert_trees_close(g, e)
        writer.close()
    finally:
        server.stop()


def test_transitions_per_item_must_divide_the_batch(rr):
    spec = ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=8, buffer_size=100)
    with pytest.raises(ValueError, match="transitions_per_item=3 must divide batch_size=8"):
        rr.make_tables(spec, example_transition(), transitions_per_item=3)
    with pytest.raises(ValueError, match="transitions_per_item=3 must divide batch_size=8"):
        rr.Sampler("127.0.0.1:1", "replay", 8, example_transition(), transitions_per_item=3)


SERVER_SCRIPT = """
import sys, time
import rlax  # before reverb
import reverb
spec = eval(sys.argv[1])
server = reverb.Server([reverb.Table.queue('q', 1000)], port=None)
print(server.port, flush=True)
time.sleep(600)
"""


def start_server_process():
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT.replace("spec = eval(sys.argv[1])\n", "")],
        stdout=subprocess.PIPE, text=True,
    )
    port = int(proc.stdout.readline())
    return proc, port


def test_killed_server_raises_replay_unavailable_not_hang(rr, reverb_module):
    reverb = reverb_module
    spec, example = spec_for(1), example_transition()
    proc, port = start_server_process()
    try:
        client = reverb.Client(f"127.0.0.1:{port}")
        writer = rr.TransitionWriter(client, spec, table="q", flush_every=4, timeout_ms=2000)
        sampler = rr.Sampler(client, "q", 2, example, timeout_s=2)
        step = example_transition()._replace(last_t=np.bool_(False), discount_t=np.float32(1))
        for _ in range(6):
            writer(step)
        writer.flush()
        _, _, batch = sampler.sample()
        assert batch.obs_tm1.shape == (2, 4)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        start = time.monotonic()
        with pytest.raises(rr.ReplayUnavailable, match=f"127.0.0.1:{port}.*2000 ms"):
            for _ in range(3):
                writer(step)
            writer.flush()
        assert time.monotonic() - start < 15
        start = time.monotonic()
        with pytest.raises(rr.ReplayUnavailable):
            writer(step)  # a broken writer stays broken, at once
        assert time.monotonic() - start < 1
        start = time.monotonic()
        with pytest.raises(rr.ReplayUnavailable, match=f"127.0.0.1:{port}.*does not answer"):
            for _ in range(3):  # samples prefetched before the kill may still come out first
                sampler.sample()
        assert time.monotonic() - start < 15
        start = time.monotonic()
        with pytest.raises(rr.ReplayUnavailable, match=f"127.0.0.1:{port}.*does not answer"):
            rr.Sampler(f"127.0.0.1:{port}", "q", 2, example, timeout_s=2).sample()
        assert time.monotonic() - start < 15
    finally:
        proc.kill()
        proc.wait(10)


def test_private_sampler_returns_info_then_data(rr, reverb_module):
    reverb = reverb_module
    server = reverb.Server([reverb.Table.queue("q", 10)], port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        client.insert([np.arange(3, dtype=np.float32), np.int32(7)], {"q": 1.0})
        sampler, num_info = rr._new_sampler(client, "q", 1)
        sample = sampler.GetNextTrajectory()
        assert num_info == 5 and len(sample) == num_info + 2
        assert float(sample[1]) == 1.0  # probability
        np.testing.assert_array_equal(np.asarray(sample[num_info]).reshape(3), np.arange(3, dtype=np.float32))
        assert int(np.asarray(sample[num_info + 1]).reshape(())) == 7
    finally:
        server.stop()


def test_sampler_batches_and_rate_limiter(rr, reverb_module):
    reverb = reverb_module
    spec, example = spec_for(1, min_size=20, batch_size=8), example_transition()
    tables = rr.make_tables(spec, example, samples_per_insert=1.0, error_buffer=100.0)
    server = reverb.Server(tables, port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.TransitionWriter(client, spec, flush_every=4, example=example)
        sampler = rr.Sampler(f"127.0.0.1:{server.port}", "replay", 8, example, timeout_s=1)
        for i in range(10):
            writer(Transition(np.full(4, i, np.float32), np.int64(i % 2), np.float64(1), np.float32(1),
                              np.full(4, i + 1, np.float32), np.bool_(False)))
        writer.flush()
        start = time.monotonic()
        with pytest.raises(rr.ReplayNotReady, match="holds 10 items"):
            sampler.sample()  # min_size=20 not reached: the limiter blocks
        assert time.monotonic() - start < 5
        for i in range(10, 30):
            writer(Transition(np.full(4, i, np.float32), np.int32(i % 2), np.float32(1), np.float32(1),
                              np.full(4, i + 1, np.float32), np.bool_(i == 29)))
        writer.flush()
        keys, probabilities, batch = sampler.sample(timeout_s=10)
        assert keys.shape == (8,) and keys.dtype == np.uint64
        np.testing.assert_allclose(probabilities, 1 / 30)
        assert batch.extras == {}
        shapes = {f: (np.shape(x), np.asarray(x).dtype) for f, x in batch._asdict().items() if f != "extras"}
        assert shapes == {
            "obs_tm1": ((8, 4), np.float32), "action_tm1": ((8,), np.int32), "reward_t": ((8,), np.float32),
            "discount_t": ((8,), np.float32), "obs_t": ((8, 4), np.float32), "last_t": ((8,), np.bool_),
        }
        np.testing.assert_array_equal(batch.obs_t, batch.obs_tm1 + 1)
        np.testing.assert_allclose(batch.discount_t, GAMMA)
    finally:
        server.stop()


def test_prioritized_table_update_priorities(rr, reverb_module):
    reverb = reverb_module
    spec, example = spec_for(1, min_size=1, batch_size=4), example_transition()
    server = reverb.Server(rr.make_tables(spec, example, prioritized=True, samples_per_insert=1.0,
                                          error_buffer=1000.0), port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.TransitionWriter(client, spec, example=example)
        for i in range(4):
            writer(example._replace(obs_tm1=np.full(4, i, np.float32)))
        writer.flush()
        sampler = rr.Sampler(client, "replay", 4, example, timeout_s=5)
        index = {}  # key -> the item's obs value; sample until all 4 items were seen
        while len(index) < 4:
            keys, _, batch = sampler.sample()
            index.update({int(k): float(o) for k, o in zip(keys, batch.obs_tm1[:, 0])})
        keys = np.asarray(list(index), np.uint64)
        sampler.update_priorities(keys, [100.0 if index[int(k)] == 2 else 1e-6 for k in keys])
        # A fresh sampler: the old one's prefetched samples were drawn with the old priorities.
        _, probabilities, batch = rr.Sampler(client, "replay", 4, example, timeout_s=5).sample()
        assert (batch.obs_tm1[:, 0] == 2).mean() >= 0.75 and probabilities.max() > 0.9
    finally:
        server.stop()


def test_rollout_kind_is_a_queue_of_packed_rollouts(rr, reverb_module):
    spec = ExperienceSpec(kind="rollout", num_envs=1, rollout_length=16)
    (table,) = rr.make_tables(spec, example_transition(), name="rollouts")
    assert table.name == "rollouts"
    assert table.info.signature.shape == (16 * rr.ItemCodec(example_transition()).size,)
    assert table.info.max_size == 8 and table.info.rate_limiter_info.min_size_to_sample == 1


ACTOR_SCRIPT = """
import os, signal, subprocess, sys, time
import jax, numpy as np
import rlax  # before reverb
import reverb
from rlkit import envs
from rlkit.agents import dqn
from rlkit.loops.environment_loop import Actor, EnvironmentLoop
from rlkit.replay import reverb as rr

server = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
port = int(server.stdout.readline())
env = envs.make_host("gym:CartPole-v1", seed=0)
config = dqn.Config(num_envs=1, hidden_sizes=(8,))
agent = dqn.make(config, envs.environment_spec(env))
writer = rr.TransitionWriter(reverb.Client(f"127.0.0.1:{port}"), dqn.experience(config), table="q",
                             flush_every=8, timeout_ms=2000)
steps = []

def adder(transition):
    steps.append(transition)
    if len(steps) == 200:
        os.kill(server.pid, signal.SIGKILL)  # the server dies under the running actor
        server.wait()
        print("killed", flush=True)
    writer(transition)

actor = Actor(agent, agent.init(jax.random.key(0)), adder=adder)
start = time.monotonic()
try:
    EnvironmentLoop(env, actor, logger=lambda r: None).run(num_steps=100_000)
except rr.ReplayUnavailable as error:
    print(f"ReplayUnavailable after {len(steps) - 200} more steps and {time.monotonic() - start:.1f} s: {error}",
          flush=True)
    sys.exit(0)  # the interpreter must also exit: abandoned Reverb objects never block it
print("no error", flush=True)
sys.exit(1)
"""


def test_killing_the_server_under_a_running_actor_raises_and_exits(rr):
    """The actor's loop raises ReplayUnavailable within the flush timeout, and the process exits (no hang)."""
    server = SERVER_SCRIPT.replace("spec = eval(sys.argv[1])\n", "")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", ACTOR_SCRIPT, server], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "killed" in done.stdout and "ReplayUnavailable after" in done.stdout and "2000 ms" in done.stdout
    assert time.monotonic() - start < 60


def test_update_priorities_on_a_killed_server_raises_in_bounded_time(rr, reverb_module):
    reverb = reverb_module
    proc, port = start_server_process()
    try:
        client = reverb.Client(f"127.0.0.1:{port}")
        client.insert([np.zeros(3, np.float32)], {"q": 1.0})
        sampler = rr.Sampler(client, "q", 1, example_transition(), timeout_s=2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        start = time.monotonic()
        with pytest.raises(rr.ReplayUnavailable, match="priorities"):
            sampler.update_priorities(np.asarray([1], np.uint64), [2.0])
        assert time.monotonic() - start < 15
    finally:
        proc.kill()
        proc.wait(10)


NESTED_EXTRAS = {"log_prob": np.float32(-0.7), "carry": {"h": np.zeros(3, np.float32), "c": np.zeros((2, 3), np.float64)},
                 "option": np.int8(3)}


@pytest.mark.parametrize("example", [
    example_transition(),
    Transition(np.arange(6, dtype=np.float64).reshape(2, 3), np.array([1.5, -2.0], np.float32), np.float64(0.1),
               np.float16(0.5), np.full((2, 2), 255, np.uint8), np.bool_(True), NESTED_EXTRAS),
    Trajectory(np.zeros(4, np.float32), np.int32(1), np.float32(0), np.bool_(False), np.bool_(True),
               np.ones(4, np.float32), NESTED_EXTRAS),
], ids=["transition", "transition-nested-extras", "trajectory-step"])
def test_item_codec_round_trips_every_dtype_and_extras_exactly(rr, example):
    codec = rr.ItemCodec(example)
    items = [jax.tree.map(lambda x: np.asarray(x) + np.asarray(i).astype(np.asarray(x).dtype), example)
             for i in range(3)]
    packed = np.stack([codec.pack(item) for item in items])
    assert packed.dtype == np.uint8 and packed.shape == (3, codec.size)
    np.testing.assert_array_equal(codec.pack_batch(jax.tree.map(lambda *x: np.stack(x), *items)), packed)
    batch = codec.unpack(packed)
    assert type(batch) is type(example) and jax.tree.structure(batch) == jax.tree.structure(example)
    for (path, value), reference in zip(jax.tree_util.tree_flatten_with_path(batch)[0], jax.tree.leaves(example)):
        reference = np.asarray(reference)
        assert value.dtype == reference.dtype and value.shape == (3, *reference.shape), path
    for i, item in enumerate(items):
        jax.tree.map(np.testing.assert_array_equal, index(batch, i), item)
    with pytest.raises(ValueError, match="leaf shapes"):
        codec.pack(example._replace(obs=np.zeros(5)) if isinstance(example, Trajectory)
                   else example._replace(obs_tm1=np.zeros(5)))
    with pytest.raises(ValueError, match="structure"):
        codec.pack(example._replace(extras={"other": np.float32(0)}))
