"""Sequences through Reverb: the sliding-window writer, its tables, the time-major sampler, extras kept."""

import jax
import numpy as np
import pytest

from rlkit.types import ExperienceSpec, Trajectory, Transition

pytestmark = pytest.mark.reverb

GAMMA = 0.9


@pytest.fixture(scope="module")
def rr(reverb_module):
    from rlkit.replay import reverb as rr

    return rr


def steps_of(num_envs, t, ends):
    """Step ``t`` of ``num_envs`` environments as a ``Transition [N]``: obs ``[env, t]``, nested extras that name
    the step, and ``ends[env] = {t: "terminated" | "truncated"}``."""
    kinds = [ends[env].get(t) for env in range(num_envs)]
    env = np.arange(num_envs, dtype=np.float32)
    return Transition(
        obs_tm1=np.stack([env, np.full(num_envs, t, np.float32)], 1),
        action_tm1=np.full(num_envs, t % 2, np.int32),
        reward_t=np.full(num_envs, t, np.float32),
        discount_t=np.asarray([0.0 if k == "terminated" else 1.0 for k in kinds], np.float32),
        obs_t=np.stack([env, np.full(num_envs, t + 0.5, np.float32)], 1),
        last_t=np.asarray([k is not None for k in kinds]),
        extras={"carry": {"h": np.stack([env, np.full(num_envs, t, np.float32)], 1)},
                "step": np.full(num_envs, 1000 * t, np.int64) + np.arange(num_envs)},
    )


def example_step():
    return Trajectory(np.zeros(2, np.float32), np.int32(0), np.float32(0), np.bool_(False), np.bool_(False),
                      np.zeros(2, np.float32), {"carry": {"h": np.zeros(2, np.float32)}, "step": np.int64(0)})


def drain(sampler, num_items):
    """Every item of a uniform table, by key: sample (with replacement) until each was seen."""
    items = {}
    for _ in range(300):
        keys, _, batch = sampler.sample()
        for i, key in enumerate(keys):
            items[int(key)] = jax.tree.map(lambda x: x[:, i], batch)  # time-major: [L, B] -> [L]
        if len(items) == num_items:
            return list(items.values())
    raise AssertionError(f"saw {len(items)} of {num_items} items")


def test_sequence_writer_respects_length_and_period_and_marks_episode_ends(rr, reverb_module):
    reverb = reverb_module
    num_envs, length, period, num_steps = 2, 5, 3, 20
    spec = ExperienceSpec(kind="sequences", num_envs=num_envs, rollout_length=1, batch_size=8, buffer_size=1000,
                          min_size=1, sequence_length=length, sequence_period=period)
    ends = [{6: "terminated", 13: "truncated"}, {9: "terminated"}]
    server = reverb.Server(rr.make_tables(spec, example_step(), samples_per_insert=0), port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.SequenceWriter(client, length, period, flush_every=4, example=example_step())
        for t in range(num_steps):
            writer.add_batch(steps_of(num_envs, t, ends), env_ids=[10, 11])
        writer.flush()
        starts = list(range(0, num_steps - length + 1, period))  # 0, 3, ..., 15: the window slides over ends
        assert writer.items_written == num_envs * len(starts) and writer.steps_written == num_envs * num_steps
        sampler = rr.SequenceSampler(client, "replay", 8, example_step(), length, timeout_s=10)
        keys, probabilities, batch = sampler.sample()
        assert keys.shape == probabilities.shape == (8,)
        assert batch.obs.shape == (length, 8, 2) and batch.extras["carry"]["h"].shape == (length, 8, 2)
        assert batch.extras["step"].dtype == np.int64 and batch.terminated.dtype == np.bool_
        seen, crossing = set(), 0
        for item in drain(sampler, writer.items_written):
            env, times = int(item.obs[0, 0]), item.obs[:, 1].astype(int)
            assert np.all(item.obs[:, 0] == env)  # one environment's stream
            np.testing.assert_array_equal(times, np.arange(times[0], times[0] + length))  # consecutive steps
            seen.add((env, int(times[0])))
            # The extras went with each step, exactly; the episode ends are marked where they happened.
            np.testing.assert_array_equal(item.extras["step"], 1000 * times + env)
            np.testing.assert_array_equal(item.extras["carry"]["h"], np.stack([np.full(length, env), times], 1))
            np.testing.assert_array_equal(item.next_obs[:, 1], times + 0.5)
            np.testing.assert_array_equal(item.terminated, [ends[env].get(t) == "terminated" for t in times])
            np.testing.assert_array_equal(item.truncated, [ends[env].get(t) == "truncated" for t in times])
            crossing += bool(np.any((item.terminated | item.truncated)[:-1]))  # a new episode starts inside
        assert seen == {(env, s) for env in range(num_envs) for s in starts}
        assert crossing == 5  # env 0: starts 3, 6 (t=6), 9, 12 (t=13); env 1: start 6 (t=9)
        writer.close()
    finally:
        server.stop()


def test_rollout_queue_hands_out_whole_rollouts_in_order(rr, reverb_module):
    reverb = reverb_module
    length = 4
    spec = ExperienceSpec(kind="rollout", num_envs=2, rollout_length=length)
    (table,) = rr.make_tables(spec, example_step())
    server = reverb.Server([table], port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.SequenceWriter(client, length, length, flush_every=1, example=example_step())
        for t in range(3 * length):
            step = jax.tree.map(lambda x: x[0], steps_of(1, t, [{5: "truncated"}]))
            writer(step)  # the Actor's adder path: one unbatched Transition
        writer.flush()
        assert writer.items_written == 3
        sampler = rr.SequenceSampler(client, "replay", 2, example_step(), length, timeout_s=10, max_in_flight=2)
        _, _, batch = sampler.sample()
        np.testing.assert_array_equal(batch.obs[:, :, 1], np.arange(2 * length).reshape(2, length).T)
        np.testing.assert_array_equal(batch.truncated[:, 1], [False, True, False, False])  # step 5
        assert client.server_info(timeout=5)["replay"].current_size <= 1  # sampling took them out
    finally:
        server.stop()


def test_transition_writer_keeps_the_first_steps_extras(rr, reverb_module):
    reverb = reverb_module
    spec = ExperienceSpec(kind="transitions", num_envs=2, rollout_length=1, batch_size=8, buffer_size=1000,
                          min_size=1, n_step=3, gamma=GAMMA)
    example = Transition(np.zeros(2, np.float32), np.int32(0), np.float32(0), np.float32(0), np.zeros(2, np.float32),
                         np.bool_(False), example_step().extras)
    server = reverb.Server(rr.make_tables(spec, example, samples_per_insert=0), port=None)
    try:
        client = reverb.Client(f"127.0.0.1:{server.port}")
        writer = rr.TransitionWriter(client, spec, flush_every=4, example=example)
        ends = [{4: "terminated", 9: "truncated"}, {9: "truncated"}]
        for t in range(10):
            writer.add_batch(steps_of(2, t, ends))
        writer.flush()
        assert writer.items_written == 20
        sampler = rr.Sampler(client, "replay", 8, example, timeout_s=10)
        items = {}
        while len(items) < 20:
            keys, _, batch = sampler.sample()
            items.update({int(k): jax.tree.map(lambda x: x[i], batch) for i, k in enumerate(keys)})
        for item in items.values():
            env, t = int(item.obs_tm1[0]), int(item.obs_tm1[1])
            assert int(item.extras["step"]) == 1000 * t + env  # the extras that went with action_tm1
            np.testing.assert_array_equal(item.extras["carry"]["h"], [env, t])
            stop = min([e for e in ends[env] if e >= t] + [t + 2])  # the n-step window stops at an episode end
            assert item.obs_t[1] == stop + 0.5
    finally:
        server.stop()


def test_sequence_settings_are_checked(rr):
    spec = ExperienceSpec(kind="sequences", num_envs=1, rollout_length=1, batch_size=4, buffer_size=50,
                          sequence_length=100, sequence_period=10)
    with pytest.raises(ValueError, match=r"sequence_length=100 is longer than the buffer \(buffer_size=50"):
        rr.make_tables(spec, example_step())
    with pytest.raises(ValueError, match="sequence_length and sequence_period must be >= 1"):
        rr.make_tables(spec._replace(sequence_length=0), example_step())
    with pytest.raises(ValueError, match="transitions_per_item applies to kind 'transitions' only"):
        rr.make_tables(spec._replace(sequence_length=10), example_step(), transitions_per_item=2)
