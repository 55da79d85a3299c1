"""`python -m rlkit train --backend reverb`: records, checkpoints with the replay, resume after SIGKILL."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.reverb

TINY = ["--agent", "dqn", "--env", "gym:CartPole-v1", "--backend", "reverb", "--eval-episodes", "2",
        "--set", "learning_starts=300", "--set", "batch_size=16", "--set", "hidden_sizes=16,16",
        "--set", "buffer_size=5000", "--set", "num_steps=4"]


def train(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlkit", "train", "--out", str(out), *TINY, *extra]


def committed_checkpoints(out: Path) -> list[int]:
    directory = out / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def test_train_backend_reverb_writes_the_device_records(tmp_path, reverb_module):
    out = tmp_path / "run"
    done = subprocess.run(train(out, "--seeds", "2", "--steps", "1200", "--chunks", "3"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mean" in done.stdout and "95% CI" in done.stdout and "steps/s" in done.stdout
    assert "one after another" in done.stderr and "seed 1: final greedy return" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["backend"] == "reverb" and results["env"] == "gym:CartPole-v1" and results["seeds"] == [0, 1]
    assert results["total_steps"] == 1200 and results["config"]["batch_size"] == 16
    assert len(results["final_eval_return"]["per_seed"]) == 2
    for key in ("compile_seconds", "run_seconds", "steps_per_second"):
        assert results[key] > 0
    for seed in results["per_seed"]:  # one update every 4 steps once min_size (300) items are in
        assert (1200 - 300) // 4 - 3 <= seed["updates"] <= (1200 - 300) // 4 + 1
    assert "dm-reverb" in results["versions"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["env_steps"] for line in lines] == [400, 800, 1200]
    assert len(lines[-1]["per_seed"]["episode_return"]) == 2 and "loss" in lines[-1]["mean"]
    assert not (out / "replay").exists() or not any((out / "replay").iterdir())  # finished seeds drop theirs

    from rlkit.plot import load_run  # the device layout: rlkit plot reads it

    run = load_run(out)
    assert run.values.shape == (2, 3) and list(run.final_eval) == results["final_eval_return"]["per_seed"]

    # rlkit eval loads each seed's final state and replays its evaluation: the same returns.
    again = subprocess.run([sys.executable, "-m", "rlkit", "eval", str(out)], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    table = [line.split() for line in again.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])]
    expected = [f"{value:.2f}" for value in results["final_eval_return"]["per_seed"]]
    assert [row[1] for row in table] == expected, again.stdout
    assert "reverb backend" in again.stdout
    import rlkit  # sampled actions on the host path: the same episodes (seeded), other returns

    trained = rlkit.load(out)
    sampled = rlkit.evaluate_trained(trained, 4, policy="sample")
    assert sampled.shape == (2, 4) and not np.array_equal(sampled, rlkit.evaluate_trained(trained, 4))
    gif = tmp_path / "episode.gif"
    shown = subprocess.run([sys.executable, "-m", "rlkit", "render", str(out), "--out", str(gif), "--seed", "1"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    length = int(shown.stdout.split("episode lengths ")[1].split(",")[0])
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == length >= 1


def test_sigkill_then_resume_keeps_the_replay(tmp_path, reverb_module):
    out = tmp_path / "killed"
    command = train(out, "--seeds", "1", "--steps", "6000", "--chunks", "6", "--checkpoint-every-steps", "1")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not committed_checkpoints(out):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    stopped_at = max(committed_checkpoints(out))
    assert stopped_at < 6 and any((out / "replay" / "seed_0").iterdir())

    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    other = subprocess.run([*command, "--resume", "--set", "learning_rate=0.1"], capture_output=True, text=True,
                           timeout=120)
    assert other.returncode == 2 and "different run" in other.stderr and "learning_rate" in other.stderr

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The buffer came back: stopped_at chunks of 1000 steps, less the n-step tail, were in it.
    restored = [line for line in resumed.stderr.splitlines() if "replay restored with" in line]
    assert restored, resumed.stderr[-3000:]
    items = int(restored[0].split("replay restored with")[1].split()[0].replace(",", ""))
    assert 1000 * stopped_at - 3 <= items <= 1000 * stopped_at
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from_chunk"] == stopped_at and results["total_steps"] == 6000
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["env_steps"] for line in lines] == [1000 * (i + 1) for i in range(6)]
    assert (6000 - 300) // 4 - 6 <= results["per_seed"][0]["updates"] <= (6000 - 300) // 4 + 1


def test_backend_reverb_validates_before_starting(tmp_path, capsys, reverb_module):
    from rlkit.cli import main

    cases = [
        (["--agent", "ppo", "--env", "gym:CartPole-v1", "--transitions-per-item", "2"],
         "--transitions-per-item applies to transition replay only; agent ppo learns from rollout"),
        (["--agent", "dqn", "--env", "CartPole-v1"], "prefixes"),
        (["--agent", "dqn", "--env", "gym:CartPol-v1"], "Did you mean CartPole-v1"),
        (["--agent", "dqn", "--env", "gym:CartPole-v1", "--first-seed", "-3"], "--first-seed -3: seeds must lie"),
        (["--agent", "dqn", "--env", "gym:Pendulum-v1"], "discrete action space"),
        (["--agent", "dqn", "--env", "gym:CartPole-v1", "--set", "learning_starts=5000"], "before learning starts"),
        (["--agent", "dqn", "--env", "gym:CartPole-v1", "--host-envs", "3"], "--host-envs=3 must be >= 1 and divide"),
        (["--agent", "dqn", "--env", "gym:CartPole-v1", "--transitions-per-item", "5"],
         "--transitions-per-item=5 must be >= 1 and divide batch_size=64"),
        (["--agent", "bc", "--env", "gym:CartPole-v1"], "learns only from a dataset, on the device backend"),
        (["--agent", "dqn", "--env", "gym:CartPole-v1", "--dataset", "d-v0"], "--dataset: the device backend's"),
        (["--agent", "dqn", "--env", "gym:CartPole-v1", "--devices", "2"], "--devices: the device backend's"),
    ]
    for args, message in cases:
        start = time.perf_counter()
        code = main(["train", "--backend", "reverb", *args, "--steps", "1000", "--out", str(tmp_path / "x")])
        assert code == 2 and message in capsys.readouterr().err, args
        assert time.perf_counter() - start < 10
        assert not (tmp_path / "x").exists()


def test_a_replay_that_stops_answering_is_a_one_line_error(tmp_path, capsys, monkeypatch, reverb_module):
    from rlkit.cli import main
    from rlkit.loops import reverb_experiment

    def stuck(self, steps):
        raise reverb_experiment.reverb_replay.ReplayUnavailable("no answer from the table within 5 s")

    monkeypatch.setattr(reverb_experiment.HostExperiment, "train", stuck)
    code = main(["train", *TINY, "--steps", "1000", "--out", str(tmp_path / "run"), "--quiet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and error.startswith("rlkit train: error: the replay stopped answering (no answer"), error
    assert error.endswith("no checkpoint was written yet") and not (tmp_path / "run" / "results.json").exists()


def test_a_resumed_tensorboard_log_keeps_the_checkpoints_point_and_hides_what_came_after(tmp_path, reverb_module):
    """What TensorBoard shows after a resume (its reader applies the purge; the Reverb world has it via TF)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlkit.runs.tensorboard import summary_writer

    first = summary_writer(tmp_path, resumed_steps=None)
    for step in (10, 20, 30):  # a checkpoint at 20, then killed after writing 30
        first.add_scalar("return", float(step), step)
    first.close()
    time.sleep(1.1)  # the event files are named by the second they were opened in, and read in that order
    resumed = summary_writer(tmp_path, resumed_steps=20)
    resumed.add_scalar("return", -30.0, 30)
    resumed.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("return")] == [(10, 10.0), (20, 20.0), (30, -30.0)]
