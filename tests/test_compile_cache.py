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


def test_second_run_with_other_seeds_and_floats_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = train(tmp_path / "first", cache)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "0 program(s) loaded" in first.stdout and any(cache.iterdir())
    # Other seeds and another learning rate: runtime inputs of the same programs.
    second = train(tmp_path / "second", cache, "--first-seed", "1", "--set", "learning_rate=1e-3")
    assert second.returncode == 0, second.stderr[-2000:]
    record = json.loads((tmp_path / "second" / "results.json").read_text())["compile_cache"]
    assert record["directory"] == str(cache) and record["programs_compiled"] == 0
    assert record["programs_loaded"] >= 3  # init, chunk, evaluation at least
    assert f"{record['programs_loaded']} program(s) loaded, 0 compiled" in second.stdout
    off = train(tmp_path / "off", cache, "--no-compile-cache", "--first-seed", "1", "--set", "learning_rate=1e-3")
    assert off.returncode == 0 and "compile cache" not in off.stdout
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("second", "off")}
    assert results["off"]["compile_cache"]["directory"] is None
    # The programs loaded for the second run compute what freshly compiled ones do.
    assert results["off"]["final_eval_return"] == results["second"]["final_eval_return"]


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


def test_every_preset_traces_with_all_its_floats_as_program_inputs():
    """``rlkit train`` passes every float of the config as a runtime input (one compile serves other values)."""
    import jax
    import numpy as np

    from rlkit import agents, config, envs, make_env, make_trainer, presets
    from rlkit.runs.runner import batched, seed_keys

    # Which floats are inputs depends on the config, not the environment: the suites' presets (Brax: a 17 s
    # import) share PPO's fields with the gymnax ones, and tests/test_suites.py traces their environments.
    pairs = sorted({(agent, env_id) for agent, env_id in presets.PRESETS if env_id in envs.env_ids()
                    and ":" not in env_id
                    and not agents.get(agent).experience(presets.config_for(agent, env_id)).needs_dataset})
    # The MinAtar games share their settings (and shapes, but the channels): one game per agent is enough.
    pairs = [(agent, env_id) for agent, env_id in pairs
             if env_id not in presets.MINATAR_GAMES or env_id == presets.MINATAR_GAMES[0]]
    assert len(pairs) >= 10, pairs
    for agent, env_id in pairs:
        module, cfg = agents.get(agent), presets.config_for(agent, env_id)
        trainer = make_trainer(module, cfg, make_env(env_id), RunConfig(total_steps=presets.get(agent, env_id).steps))
        floats = {name: np.full(2, getattr(cfg, name), np.float32) for name in config.vmappable_fields(cfg)}
        state = jax.eval_shape(batched(trainer.init, 2), seed_keys([0, 1]), floats)
        jax.eval_shape(batched(trainer.run_chunk, 2, shared=1), state, floats, trainer.data)
        jax.eval_shape(batched(trainer.evaluate, 2), state.agent_state, seed_keys([0, 1]), floats)


def test_an_in_process_train_leaves_jax_cache_settings_as_it_found_them(tmp_path, monkeypatch):
    """Tests and notebooks call rlkit.cli.main in-process: later compiles must not be written to the cache."""
    import jax

    from rlkit.runs import compile_cache

    enabled = []
    monkeypatch.setattr(compile_cache, "enable", lambda directory, real=compile_cache.enable: enabled.append(
        (real(directory), jax.config.jax_compilation_cache_dir)))
    monkeypatch.setenv("RLKIT_COMPILE_CACHE", str(tmp_path / "cache"))
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    (tmp_path / "file").write_text("")  # --out under a file: refused after the cache is turned on
    out = str(tmp_path / "file" / "run")
    assert main(["train", "--agent", "ppo", "--env", "CartPole-v1", "--steps", "1e3", "--out", out]) == 2
    assert enabled and enabled[0][1] == str(tmp_path / "cache")
    assert (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs) == before
