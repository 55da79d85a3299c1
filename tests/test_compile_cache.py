"""The persistent compile cache: a second run with other seeds loads its programs; step counters fit int32."""

import json
import os
import subprocess
import sys
import time

import pytest

from rlkit.cli import main
from rlkit.loops.device import MAX_STEPS_PER_RUN, RunConfig

TINY = ["--agent", "ppo", "--env", "CartPole-v1", "--steps", "2048", "--chunks", "2", "--eval-episodes", "2",
        "--quiet", "--set", "num_envs=4", "--set", "num_steps=32", "--set", "hidden_sizes=8"]


def train(out, cache, *extra):
    env = {**os.environ, "RLKIT_COMPILE_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "rlkit", "train", *TINY, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=300, env=env)


def test_second_run_with_other_seeds_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = train(tmp_path / "first", cache)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "0 program(s) loaded" in first.stdout and any(cache.iterdir())
    second = train(tmp_path / "second", cache, "--first-seed", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    record = json.loads((tmp_path / "second" / "results.json").read_text())["compile_cache"]
    assert record["directory"] == str(cache) and record["programs_compiled"] == 0
    assert record["programs_loaded"] >= 3  # init, chunk, evaluation at least
    assert f"{record['programs_loaded']} program(s) loaded, 0 compiled" in second.stdout
    off = train(tmp_path / "off", cache, "--no-compile-cache")
    assert off.returncode == 0 and "compile cache" not in off.stdout
    assert json.loads((tmp_path / "off" / "results.json").read_text())["compile_cache"]["directory"] is None


@pytest.mark.once
def test_two_processes_share_one_cache(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "RLKIT_COMPILE_CACHE": str(cache)}
    runs = [subprocess.Popen([sys.executable, "-m", "rlkit", "train", *TINY, "--out", str(tmp_path / f"run{i}"),
                              "--first-seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for i in range(2)]
    try:
        for process in runs:
            assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    finally:
        for process in runs:
            if process.poll() is None:
                process.kill()
    for i in range(2):
        assert json.loads((tmp_path / f"run{i}" / "results.json").read_text())["seeds"] == [i]


def test_a_budget_beyond_int32_step_counters_is_refused_before_compiling(tmp_path, capsys):
    assert RunConfig(total_steps=MAX_STEPS_PER_RUN).total_steps == 2**31 - 1
    with pytest.raises(ValueError, match="at most 2,147,483,647 per run"):
        RunConfig(total_steps=2**31)
    start = time.perf_counter()
    assert main(["train", "--agent", "ppo", "--env", "CartPole-v1", "--steps", "3e9", "--out", str(tmp_path / "x")]) == 2
    assert "int32" in capsys.readouterr().err and time.perf_counter() - start < 5
    assert not (tmp_path / "x").exists()
