"""The train command: records it writes and the errors it gives before compiling."""

import json
import subprocess
import sys
import time

import pytest

import rlkit
from rlkit.cli import main


def test_train_writes_results_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "--agent", "ppo", "--env", "CartPole-v1", "--seeds", "2", "--steps", "1024",
        "--out", str(out), "--chunks", "2", "--eval-episodes", "3",
        "--set", "num_envs=4", "--set", "num_steps=32", "--set", "hidden_sizes=16,16",
        "--set", "learning_rate=1e-3", "--set", "max_grad_norm=inf", "--tensorboard",
    ])
    assert code == 0
    printed = capsys.readouterr()
    assert "mean" in printed.out and "95% CI" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert results["agent"] == "ppo" and results["env"] == "CartPole-v1"
    assert results["config"]["learning_rate"] == 1e-3 and results["config"]["hidden_sizes"] == [16, 16]
    assert results["config"]["max_grad_norm"] == "inf"  # JSON has no infinity; the run loads back with it
    assert rlkit.load(out).config.max_grad_norm == float("inf")
    assert results["total_steps"] == 1024 and results["seeds"] == [0, 1]
    assert len(results["final_eval_return"]["per_seed"]) == 2
    for key in ("compile_seconds", "run_seconds", "steps_per_second"):
        assert results[key] > 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[-1]["env_steps"] == 1024
    assert len(lines[0]["per_seed"]["episode_return"]) == 2 and "loss" in lines[0]["mean"]
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    data = events[0].read_bytes()
    assert b"episode_return/mean" in data and b"loss/seed_1" in data
    # A second run into the same directory must not clobber the first.
    assert main(["train", "--agent", "ppo", "--env", "CartPole-v1", "--steps", "1024", "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--agent", "ppo", "--env", "CartPol-v1"], "Did you mean CartPole-v1"),
    (["--agent", "dqn", "--env", "Pendulum-v1"], "agent dqn: needs a discrete action space"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--set", "num_minibatches=3"], "num_minibatches=3 must divide"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--set", "learning_rate=0"], "learning_rate must be > 0"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--set", "lr=0.1"], "has no field 'lr'"),
    (["--agent", "sarsa", "--env", "CartPole-v1"], "unknown agent 'sarsa'"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--first-seed", "-1"], "--first-seed -1: seeds must lie in [0, 2**31)"),
])
def test_bad_input_fails_fast_with_a_clear_error(tmp_path, capsys, args, message):
    start = time.perf_counter()
    code = main(["train", *args, "--steps", "5e5", "--out", str(tmp_path / "x")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert time.perf_counter() - start < 5, "errors must come before anything compiles"
    assert not (tmp_path / "x").exists()


def test_steps_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--agent", "ppo", "--env", "CartPole-v1", "--steps", "-5", "--out", "x"])
    assert "--steps must be a positive whole number" in capsys.readouterr().err


def test_help_lists_agents_and_envs():
    out = subprocess.run([sys.executable, "-m", "rlkit", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("ppo", "dqn", "CartPole-v1", "Breakout-MinAtar", "Catch-bsuite", "--set"):
        assert name in out.stdout


@pytest.mark.parametrize("backend", ["reverb", "distributed"])
def test_backend_reverb_outside_the_reverb_world_says_where_to_run_it(tmp_path, capsys, monkeypatch, backend):
    import importlib.util

    if importlib.util.find_spec("reverb") is not None:  # in the Reverb world: pretend it is missing
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "reverb" else real(name, *a))
    code = main(["train", "--agent", "dqn", "--env", "gym:CartPole-v1", "--backend", backend, "--steps", "1000",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs the Reverb world" in err and "bash scripts/run.sh reverb" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_help_explains_the_backends():
    out = subprocess.run([sys.executable, "-m", "rlkit", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--backend {device,reverb,distributed}" in text and "one after another" in text and "gym:ID" in text
    assert "--actors N" in text and "--ray-address" in text and "on Ray" in text


def test_the_progress_line_counts_the_time_left_per_run_against_all_runs_throughput():
    """Steps are per run, steps/s counts every vmapped run: 2 runs at 200 steps/s together, 500 steps left each."""
    import io

    from rlkit.runs.records import Progress

    stream = io.StringIO()
    Progress(1000, stream=stream, runs=2).update(500, 200.0, 1.0)
    assert "ETA 0:05" in stream.getvalue() and "200 steps/s" in stream.getvalue()


def test_a_config_keeps_non_finite_floats_through_json():
    from rlkit.agents import dqn
    from rlkit.config import from_dict, to_dict
    from rlkit.runs.checkpoint import differences

    config = dqn.Config(max_grad_norm=float("inf"), hidden_sizes=(8,))
    saved = json.loads(json.dumps(to_dict(config), allow_nan=False))
    assert saved["max_grad_norm"] == "inf" and from_dict(dqn.Config, saved) == config
    legacy = {**saved, "max_grad_norm": None}  # how results.json held it before: null
    assert from_dict(dqn.Config, legacy) == config
    assert differences({"config": legacy}, {"config": saved}) == []  # such a run still resumes
