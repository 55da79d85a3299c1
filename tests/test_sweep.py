"""Grid sweeps: parsing, validation before compiling, grouping by compile, ranking, sweep.json."""

import argparse
import json
import time
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from rlkit import agents, sweep, sweep_command
from rlkit.agents import ppo
from rlkit.stats import Estimate

TINY = ["--set", "num_steps=16", "--set", "num_minibatches=2", "--set", "num_epochs=1", "--set", "hidden_sizes=8",
        "--steps", "256", "--seeds", "2", "--eval-episodes", "2", "--chunks", "2", "--quiet"]


def sweep_args(argv):
    parser = argparse.ArgumentParser(prog="python -m rlkit")
    sweep_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["sweep", *argv])


def test_parse_and_expand_grid():
    grid = sweep.parse_grid(ppo.Config, [
        "learning_rate=1e-4, 3e-4", "hidden_sizes=(8,8),(16,)", "anneal_lr=true,false", "num_envs=2",
    ])
    assert grid == {
        "learning_rate": [1e-4, 3e-4], "hidden_sizes": [(8, 8), (16,)], "anneal_lr": [True, False], "num_envs": [2],
    }
    combos = sweep.expand_grid(grid)
    assert len(combos) == 8
    assert combos[0] == {"learning_rate": 1e-4, "hidden_sizes": (8, 8), "anneal_lr": True, "num_envs": 2}
    assert combos[1]["anneal_lr"] is False and combos[-1]["learning_rate"] == 3e-4
    assert sweep.parse_grid(ppo.Config, ["hidden_sizes=8,16"]) == {"hidden_sizes": [(8,), (16,)]}
    assert sweep.expand_grid({}) == [{}]


@pytest.mark.parametrize("specs, message", [
    (["lr=1e-3"], "has no field 'lr'; fields: num_envs, num_steps"),
    (["num_envs=2,x"], "--grid num_envs=x: expected a value of type"),
    (["learning_rate"], "--grid expects name=v1,v2"),
    (["learning_rate=1e-3,"], "empty value"),
    (["learning_rate=1e-3,0.001"], "value 0.001 is listed twice"),
    (["ent_coef=0", "ent_coef=0.1"], "given twice"),
    (["hidden_sizes=(8,8"], "unbalanced"),
])
def test_parse_grid_errors(specs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        sweep.parse_grid(ppo.Config, specs)


def test_numeric_fields_vary_within_a_group_and_others_split_groups():
    combos = sweep.expand_grid({"num_envs": [2, 4], "learning_rate": [1e-3, 3e-3], "ent_coef": [0.0, 0.01]})
    groups = sweep.split_numeric(ppo.Config(), combos)
    assert [group.fixed for group in groups] == [{"num_envs": 2}, {"num_envs": 4}]
    assert all(len(group.combos) == 4 for group in groups)
    seeds, hparams = sweep.group_runs(groups[0].combos, groups[0].fixed, num_seeds=3)
    assert seeds == [0, 1, 2] * 4  # every combination on the same seeds
    assert set(hparams) == {"learning_rate", "ent_coef"}
    assert hparams["learning_rate"] == [1e-3] * 6 + [3e-3] * 6
    assert hparams["ent_coef"] == ([0.0] * 3 + [0.01] * 3) * 2
    only_floats = sweep.split_numeric(ppo.Config(), sweep.expand_grid({"gamma": [0.9, 0.99]}))
    assert len(only_floats) == 1 and only_floats[0].fixed == {}


def test_invalid_combination_is_named():
    combos = sweep.expand_grid({"num_envs": [8, 3], "num_minibatches": [4]})
    with pytest.raises(ValueError, match="grid combination num_envs=3 num_minibatches=4 is invalid: num_minibatches=4 must divide"):
        sweep.validate_combinations(ppo.Config(num_steps=10), combos)


@pytest.mark.parametrize("argv, message", [
    (["--grid", "lr=1e-3,3e-3"], "has no field 'lr'"),
    (["--grid", "learning_rate=1e-3,fast"], "--grid learning_rate=fast: expected a value of type"),
    (["--grid", "num_minibatches=2,3", "--set", "num_envs=2"], "grid combination num_minibatches=3 is invalid"),
    (["--grid", "learning_rate=1e-3,0"], "grid combination learning_rate=0 is invalid: learning_rate must be > 0"),
    (["--grid", "num_envs=2,64", "--set", "num_steps=16", "--steps", "256"], "with num_envs=64: steps=256 is fewer"),
    (["--grid", "learning_rate=1e-3", "--set", "learning_rate=1e-3"], "given in both --set and --grid"),
    (["--grid", "learning_rate=1e-3", "--seeds", "0"], "--seeds must be >= 1"),
])
def test_bad_input_fails_before_compiling(tmp_path, cartpole, argv, message):
    args = sweep_args(["--agent", "ppo", "--env", "CartPole-v1", "--steps", "5e5", *argv, "--out", str(tmp_path / "x")])
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        sweep_command.command(args)
    assert time.perf_counter() - start < 5, "errors must come before anything compiles"
    assert not (tmp_path / "x").exists()


def test_an_unwritable_out_is_refused_before_compiling(tmp_path, cartpole):
    (tmp_path / "file").write_text("")
    args = sweep_args(["--agent", "ppo", "--env", "CartPole-v1", "--steps", "5e5", "--grid", "learning_rate=1e-3",
                       "--out", str(tmp_path / "file" / "sweep")])
    start = time.perf_counter()
    with pytest.raises(ValueError, match="cannot be written"):
        sweep_command.command(args)
    assert time.perf_counter() - start < 5, "errors must come before anything compiles"


def fake_result(values, returns, group=0):
    report = sweep.GroupReport(group, {}, 1, len(returns), 64, 1.0, 0.5, 0.1)
    returns = np.asarray(returns, float)
    return sweep.Result(values, returns, Estimate(returns.mean(), returns.min(), returns.max(), len(returns)),
                        float(returns.mean()), report)


def test_rank_and_table():
    results = [fake_result({"learning_rate": 1e-3}, [10, 20]), fake_result({"learning_rate": 3e-3}, [30, 50], 1)]
    ranked = sweep.rank(results)
    assert [r.values["learning_rate"] for r in ranked] == [3e-3, 1e-3]
    lines = sweep_command.format_table(ranked, ["learning_rate"]).splitlines()
    assert lines[0].split()[:3] == ["rank", "learning_rate", "mean"]
    assert lines[2].split()[:3] == ["1", "0.003", "40.00"] and lines[2].endswith("30.0 50.0")
    assert "in 2 compile(s)" in sweep_command.format_summary(results, 2, 3.0)


def test_tiny_sweep_end_to_end(tmp_path, monkeypatch, capsys):
    traced_num_envs = []

    def counting_make(config, spec, total_steps=None):
        if isinstance(config.learning_rate, jax.core.Tracer):  # traced inside a compile
            traced_num_envs.append(config.num_envs)
        return ppo.make(config, spec, total_steps)

    counting = SimpleNamespace(Config=ppo.Config, experience=ppo.experience, make=counting_make)
    monkeypatch.setitem(agents.REGISTRY, "ppo", counting)
    out = tmp_path / "sweep"
    argv = ["--agent", "ppo", "--env", "CartPole-v1", "--grid", "learning_rate=1e-3,3e-3", "--grid", "num_envs=2,4",
            *TINY, "--out", str(out)]
    assert sweep_command.command(sweep_args(argv)) == 0

    # One compile per num_envs value: init, chunk and eval each traced once per group.
    assert sorted(traced_num_envs) == [2, 2, 2, 4, 4, 4]
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line[:4].strip().isdigit()]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert {(row[1], row[2]) for row in rows} == {("0.001", "2"), ("0.003", "2"), ("0.001", "4"), ("0.003", "4")}
    assert "4 combination(s) x 2 seed(s) = 8 runs in 2 compile(s)" in printed

    record = json.loads((out / "sweep.json").read_text())
    assert record["agent"] == "ppo" and record["env"] == "CartPole-v1" and record["seeds"] == [0, 1]
    assert record["grid"] == {"learning_rate": [1e-3, 3e-3], "num_envs": [2, 4]}
    assert record["base_config"]["hidden_sizes"] == [8] and record["eval_episodes"] == 2
    results = record["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4] and len({json.dumps(r["values"]) for r in results}) == 4
    means = [r["mean"] for r in results]
    assert means == sorted(means, reverse=True)
    for r in results:
        assert len(r["per_seed"]) == 2 and r["mean"] == pytest.approx(np.mean(r["per_seed"]))
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
        assert r["group"] == (0 if r["values"]["num_envs"] == 2 else 1)
    assert record["compiles"] == 2
    assert [g["fixed"] for g in record["groups"]] == [{"num_envs": 2}, {"num_envs": 4}]
    for group in record["groups"]:
        assert group["runs"] == 4 and group["total_steps"] == 256
        assert group["compile_seconds"] > 0 and group["run_seconds"] > 0
    assert not list(out.glob("*.tmp"))

    # A second sweep into the same directory is refused before compiling.
    start = time.perf_counter()
    with pytest.raises(FileExistsError, match="already holds sweep.json"):
        sweep_command.command(sweep_args(argv))
    assert time.perf_counter() - start < 5


def test_cli_reports_sweep_errors(capsys):
    from rlkit import cli

    code = cli.main(["sweep", "--agent", "ppo", "--env", "CartPole-v1", "--steps", "256", "--grid", "lr=1"])
    assert code == 2
    assert "rlkit sweep: error: --grid lr:" in capsys.readouterr().err
