"""Kill a training process with SIGKILL mid-run, resume it, and get the uninterrupted run bit for bit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from rlkit.runs.checkpoint import load

TINY = {
    "ppo": ["--agent", "ppo", "--steps", "131072", "--chunks", "32", "--set", "num_envs=4", "--set", "num_steps=32",
            "--set", "num_minibatches=2", "--set", "num_epochs=2", "--set", "hidden_sizes=16,16"],
    "dqn": ["--agent", "dqn", "--steps", "40000", "--chunks", "20", "--set", "num_envs=4", "--set", "num_steps=1",
            "--set", "buffer_size=4000", "--set", "learning_starts=400", "--set", "batch_size=32",
            "--set", "hidden_sizes=16,16", "--set", "target_update_freq=200"],
    # Offline: gradient steps on a dataset of random-policy episodes (the dataset_args fixture adds it).
    "cql": ["--agent", "cql", "--steps", "4000", "--chunks", "20", "--set", "batch_size=32",
            "--set", "hidden_sizes=16,16"],
}
# One run's 4 environments split over 4 (fake CPU) devices: the run state has a device axis.
TINY["ppo_split"] = [*TINY["ppo"], "--devices", "4", "--split", "envs"]
TIMING = ("elapsed_seconds", "steps_per_second")


def train(out: Path, agent: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlkit", "train", "--env", "CartPole-v1", "--seeds", "2", "--eval-episodes", "4",
            "--quiet", "--checkpoint-every-steps", "1", "--keep-checkpoints", "2", "--out", str(out),
            *TINY[agent], *extra]


@pytest.fixture
def dataset_args(request, tmp_path_factory) -> list[str]:
    """``--dataset D`` for the offline agent: 40 episodes of an untrained policy; nothing for the others."""
    if request.node.callspec.params["agent"] != "cql":
        return []
    pytest.importorskip("minari")
    from rlkit import agents, datasets, make_env
    from rlkit.loops.offline import collect_episodes

    env = make_env("CartPole-v1")
    agent = agents.bc.make(agents.bc.Config(hidden_sizes=(8,)), env.spec)
    episodes = collect_episodes(env, agent, agent.init(jax.random.key(0)), jax.random.key(1), 40, "sample")
    path = datasets.save(tmp_path_factory.mktemp("data") / "random-v0", episodes, env.spec, {"env": "CartPole-v1"})
    return ["--dataset", str(path)]


def committed_checkpoints(out: Path) -> list[int]:
    directory = out / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def metrics_without_timing(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


@pytest.mark.parametrize("agent", ["ppo", "dqn", "cql", "ppo_split"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, agent, dataset_args, monkeypatch):
    if agent == "ppo_split":
        monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
        monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(train(whole, agent, *dataset_args), check=True, capture_output=True, timeout=300)

    process = subprocess.Popen(train(killed, agent, *dataset_args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not committed_checkpoints(killed):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    stopped_at = max(committed_checkpoints(killed))
    assert stopped_at < int(TINY[agent][TINY[agent].index("--chunks") + 1])

    # Without --resume the directory is refused, not overwritten.
    refused = subprocess.run(train(killed, agent, *dataset_args), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    subprocess.run(train(killed, agent, *dataset_args, "--resume"), check=True, capture_output=True, timeout=300)
    resumed_results = json.loads((killed / "results.json").read_text())
    whole_results = json.loads((whole / "results.json").read_text())
    assert resumed_results["resumed_from_chunk"] >= stopped_at
    assert resumed_results["final_eval_return"] == whole_results["final_eval_return"]
    assert metrics_without_timing(killed) == metrics_without_timing(whole)

    final_killed, meta_killed = load(killed)
    final_whole, meta_whole = load(whole)
    assert meta_killed["chunks_done"] == meta_whole["chunks_done"]
    leaves_killed, leaves_whole = jax.tree.leaves(final_killed), jax.tree.leaves(final_whole)
    assert len(leaves_killed) == len(leaves_whole) > 0
    for a, b in zip(leaves_killed, leaves_whole):
        np.testing.assert_array_equal(a, b)  # parameters, optimizer, envs, replay, keys: all of it


def test_resume_refuses_a_different_run(tmp_path):
    out = tmp_path / "run"
    base = ["--agent", "ppo", "--steps", "2048", "--chunks", "4", "--set", "num_envs=4", "--set", "num_steps=32",
            "--set", "hidden_sizes=8"]
    cmd = [sys.executable, "-m", "rlkit", "train", "--env", "CartPole-v1", "--quiet", "--eval-episodes", "2",
           "--checkpoint-every-steps", "1", "--out", str(out)]
    subprocess.run([*cmd, *base], check=True, capture_output=True, timeout=300)
    os.remove(out / "results.json")  # pretend it stopped after its last checkpoint
    other = subprocess.run([*cmd, *base, "--set", "learning_rate=1e-3", "--resume"], capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2
    assert "a different run" in other.stderr and "config.learning_rate" in other.stderr
    # A corrupt checkpoint is a clear error, never a silent restart from zero.
    latest = max(committed_checkpoints(out))
    for path in (out / "checkpoints" / str(latest)).rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    broken = subprocess.run([*cmd, *base, "--resume"], capture_output=True, text=True, timeout=300)
    assert broken.returncode == 2 and "unreadable" in broken.stderr, broken.stderr[-2000:]


def test_a_checkpoint_keeps_prng_keys_and_empty_arrays(tmp_path):
    """Orbax refuses zero-size arrays, which MJX physics states (Brax) hold; they come back as they were."""
    from rlkit.runs.checkpoint import restore_state, save_state

    state = {"key": jax.random.key(3), "empty": np.zeros((2, 0), np.float32), "weights": np.arange(3, dtype=np.float32)}
    save_state(tmp_path / "state", state)
    like = {"key": jax.random.key(0), "empty": np.zeros((2, 0), np.float32), "weights": np.zeros(3, np.float32)}
    restored = restore_state(tmp_path / "state", like)
    assert restored["empty"].shape == (2, 0) and restored["empty"].dtype == np.float32
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(state["key"]))
    np.testing.assert_array_equal(restored["weights"], state["weights"])


def test_the_checkpoint_schedule_fires_past_each_multiple_without_drift():
    """Distributed runs check at metrics lines a few steps past each multiple; the checkpoints must not drift."""
    from rlkit.runs.checkpoint import Schedule

    schedule, fired = Schedule(every_steps=10_000, every_minutes=None), []
    for steps in range(5_003, 60_000, 5_000):
        if schedule.due(steps):
            schedule.saved(steps)
            fired.append(steps)
    assert fired == [10_003, 20_003, 30_003, 40_003, 50_003]
    assert not Schedule(every_steps=None, every_minutes=None).due(10**9)
