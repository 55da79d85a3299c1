"""Using a finished run: rlkit.load, rlkit eval and rlkit export; run directories that survive being killed early."""

import csv
import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import rlkit
from rlkit.cli import main
from rlkit.runs.checkpoint import has_checkpoints

TINY = ["--agent", "ppo", "--env", "CartPole-v1", "--chunks", "2", "--eval-episodes", "3", "--quiet",
        "--set", "num_envs=4", "--set", "num_steps=32", "--set", "hidden_sizes=16,16"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny PPO run of two seeds, trained to the end once for the module."""
    out = tmp_path_factory.mktemp("runs") / "ppo"
    assert main(["train", *TINY, "--seeds", "2", "--steps", "2048", "--out", str(out)]) == 0
    return out


def eval_table(printed: str) -> dict[int, float]:
    rows = [line.split() for line in printed.splitlines()]
    return {int(row[0]): float(row[1]) for row in rows if len(row) == 2 and row[0].isdigit()}


def test_eval_prints_the_returns_results_json_holds(finished_run, capsys):
    results = json.loads((finished_run / "results.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(finished_run)]) == 0
    printed = eval_table(capsys.readouterr().out)
    assert printed == {seed: round(value, 2) for seed, value in zip(results["seeds"],
                                                                   results["final_eval_return"]["per_seed"])}
    assert main(["eval", str(finished_run), "--seed", "1", "--episodes", "5"]) == 0
    assert list(eval_table(capsys.readouterr().out)) == [1]
    assert main(["eval", str(finished_run), "--seed", "7"]) == 2
    assert "--seed 7: the run in" in capsys.readouterr().err
    # Sampled actions: the policy as it acted in training, another set of returns than the greedy one.
    assert main(["eval", str(finished_run), "--policy", "sample", "--episodes", "8"]) == 0
    out = capsys.readouterr().out
    sampled = eval_table(out)
    assert list(sampled) == results["seeds"] and "8 sample episode(s) per seed" in out
    assert all(0 < value <= 500 for value in sampled.values())


def test_load_returns_the_agent_its_final_states_and_the_environment(finished_run):
    run = rlkit.load(finished_run)
    assert run.seeds == [0, 1] and run.backend == "device" and run.config.hidden_sizes == (16, 16)
    params = jax.tree.leaves(run.agent_state)
    assert params and all(leaf.shape[0] == 2 for leaf in params)
    assert not all(np.array_equal(a[0], a[1]) for a in params), "the two seeds trained to the same state"
    obs, _ = run.env.reset(jax.random.key(0))
    out = run.agent.act(run.state(1), obs[None], run.agent.init_carry(1), jax.random.key(1), deterministic=True)
    assert out.action.shape == (1,) and int(out.action[0]) in (0, 1)
    returns = rlkit.evaluate_trained(run)
    expected = json.loads((finished_run / "results.json").read_text())["final_eval_return"]["per_seed"]
    np.testing.assert_allclose(returns.mean(axis=1), expected, rtol=1e-6)
    # The same episodes (keys) with sampled actions: other returns (fixed seeds, so always the same ones).
    assert not np.array_equal(rlkit.evaluate_trained(run, 8, policy="sample"), rlkit.evaluate_trained(run, 8))


def test_load_falls_back_to_the_last_checkpoint_and_says_when_both_are_gone(finished_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "final_states")  # as a run from before final states were kept
    expected = json.loads((copy / "results.json").read_text())["final_eval_return"]["per_seed"]
    np.testing.assert_allclose(rlkit.evaluate_trained(rlkit.load(copy)).mean(axis=1), expected, rtol=1e-6)
    shutil.rmtree(copy / "checkpoints")
    assert main(["eval", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "neither final_states/ nor checkpoints/" in err and len(err.strip().splitlines()) == 1


def test_run_directory_rules(tmp_path, capsys):
    """What --out may hold for a fresh run, checked before anything compiles or is removed."""
    out = tmp_path / "run"
    line = ["train", *TINY, "--steps", "2048", "--out", str(out)]
    assert main([*line, "--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"agent": "dqn", "env": "CartPole-v1"}))
    (out / "keep.txt").write_text("mine")
    assert main(line) == 2
    assert "run.json names another run" in capsys.readouterr().err
    (out / "run.json").unlink()
    (out / "metrics.jsonl").write_text("{}\n")
    assert main([*line, "--resume"]) == 2
    assert "records of an unknown run and no checkpoint" in capsys.readouterr().err
    assert main([*line, "--overwrite", "--keep-checkpoints", "0"]) == 2  # a bad option: nothing removed
    assert "--keep-checkpoints must be >= 1" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == "{}\n" and (out / "keep.txt").exists()


def test_export_writes_a_row_per_seed_and_chunk(finished_run, tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    assert main(["export", str(finished_run), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * 2 and {row["seed"] for row in rows} == {"0", "1"}
    assert rows[-1]["env_steps"] == "2048" and rows[0]["agent"] == "ppo" and float(rows[0]["loss"]) != 0
    assert main(["export", str(finished_run), "--out", str(tmp_path / "x.txt")]) == 2


def test_resume_of_a_finished_run_succeeds_without_training(finished_run, capsys):
    before = (finished_run / "results.json").read_text()
    start = time.perf_counter()
    assert main(["train", *TINY, "--seeds", "2", "--steps", "2048", "--out", str(finished_run), "--resume"]) == 0
    assert "already complete" in capsys.readouterr().out
    assert time.perf_counter() - start < 5 and (finished_run / "results.json").read_text() == before
    # Another run's command line is refused, naming what differs.
    assert main(["train", *TINY, "--seeds", "3", "--steps", "2048", "--out", str(finished_run), "--resume"]) == 2
    assert "holds a different run: seeds was [0, 1], now [0, 1, 2]" in capsys.readouterr().err


@pytest.mark.parametrize("below_file, message", [("", "is a file, not a directory"), ("run", "cannot be written")])
def test_an_unusable_out_is_a_one_line_error_before_compiling(tmp_path, capsys, below_file, message):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / below_file if below_file else tmp_path / "file"
    start = time.perf_counter()
    assert main(["train", *TINY, "--steps", "5e5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - start < 5


def test_sigkill_before_the_first_checkpoint_then_resume_finishes(tmp_path):
    """Killed before any checkpoint: the same command plus --resume starts afresh and writes results."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rlkit", "train", *TINY, "--steps", "1048576", "--chunks", "64",
               "--checkpoint-every-minutes", "60", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no metrics appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (out / "results.json").exists() and not has_checkpoints(out), "it got too far to test this"
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "already holds metrics.jsonl" in refused.stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "holds no checkpoint of this run yet; starting it afresh" in resumed.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["resumed_from_chunk"] is None and results["total_steps"] == 1048576
    assert len(metrics.read_text().splitlines()) == 64


def gif_frames(path) -> int:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "GIF"
        return image.n_frames


def test_render_writes_a_frame_per_step_of_the_episodes_it_reports(finished_run, tmp_path, capsys):
    out = tmp_path / "episode.gif"
    assert main(["render", str(finished_run), "--out", str(out), "--seed", "1", "--episodes", "2"]) == 0
    printed = capsys.readouterr().out
    lengths = [int(x) for x in printed.split("episode lengths ")[1].split(", returns")[0].split(", ")]
    assert len(lengths) == 2 and all(length >= 1 for length in lengths)
    assert gif_frames(out) == sum(lengths) and f"{sum(lengths)} frames" in printed
    assert main(["render", str(finished_run), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--out must name a .gif file" in capsys.readouterr().err


@pytest.mark.parametrize("env_id", ["Breakout-MinAtar", "Catch-bsuite", "Pendulum-v1"])
def test_render_draws_grid_and_classic_environments(env_id, tmp_path):
    from rlkit import agents, envs, render

    env = envs.make(env_id)
    render.renderable(env)
    agent = agents.get("ppo").make(agents.get("ppo").Config(hidden_sizes=(8,)), env.spec, 1000)
    episodes = render.record_episodes(env, agent, agent.init(jax.random.key(0)), jax.random.key(1), 1)
    assert 1 <= episodes[0].length <= env.max_episode_steps
    path = tmp_path / "episode.gif"
    assert render.write_gif(env, episodes[:1], path) == episodes[0].length == gif_frames(path)


def test_render_refuses_what_it_cannot_draw():
    from rlkit import envs, render

    with pytest.raises(ValueError, match="no renderer for MemoryChain-bsuite"):
        render.renderable(envs.make("MemoryChain-bsuite"))


def test_render_host_episodes_of_gymnasium_classic_control(tmp_path):
    """A Reverb run plays on its host environment: gymnasium's CartPole, drawn from its state."""
    from rlkit import agents, render
    from rlkit.envs import environment_spec, make_host

    make = lambda seed: make_host("gym:CartPole-v1", seed=seed)  # noqa: E731
    module = agents.get("dqn")
    agent = module.make(module.Config(hidden_sizes=(8,)), environment_spec(make(0)), 1000)
    state = agent.init(jax.random.key(0))
    frames, lengths, returns = render.record_host_episodes("gym:CartPole-v1", make, agent, state, 3, episodes=2)
    assert len(lengths) == 2 and len(frames) == sum(lengths) and returns == [float(n) for n in lengths]
    assert render.save_gif(frames, tmp_path / "host.gif", fps=30) == gif_frames(tmp_path / "host.gif") == sum(lengths)


def test_render_dm_control_without_an_opengl_backend_names_what_is_missing(monkeypatch):
    from rlkit import render
    from rlkit.envs import make_host

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(ValueError, match="MUJOCO_GL=egl"):
        render.host_camera("dm_control:cartpole-balance", make_host("dm_control:cartpole-balance"))
    with pytest.raises(ValueError, match="no renderer for the host environment gym:Taxi-v3"):
        render.host_camera("gym:Taxi-v3", None)
