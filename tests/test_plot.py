"""The plot command and its statistics, on small fake run dirs (no training)."""

import struct

import numpy as np
import pytest
from scipy import stats as scipy_stats

from rlkit import plot
from rlkit.cli import main
from rlkit.runs import records
from rlkit.stats import Estimate, bootstrap_interval, curve_band, iqm

SEEDS, CHUNKS = 3, 5


def write_fake_run(run_dir, agent, env, scale, final):
    """Records exactly as `rlkit train` writes them: NaN returns before the first episodes end."""
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = records.MetricsWriter(run_dir)
    for chunk in range(CHUNKS):
        returns = scale * (chunk + 1) + np.arange(SEEDS, dtype=np.float64)
        if chunk == 0:
            returns[:] = np.nan            # no episode has ended in any seed yet
        elif chunk == 1:
            returns[0] = np.nan            # one seed still without a finished episode
        writer.write({
            "chunk": chunk, "env_steps": 1000 * (chunk + 1), "elapsed_seconds": 0.1 * (chunk + 1),
            "steps_per_second": 1e4, "mean": {"episode_return": float(np.nanmean(returns)) if chunk else np.nan},
            "per_seed": {"episode_return": returns, "loss": np.full(SEEDS, 0.5),
                         "env_steps": np.full(SEEDS, 1000 * (chunk + 1))},
        })
    writer.close()
    records.write_results(run_dir, {
        "agent": agent, "env": env, "seeds": list(range(SEEDS)),
        "final_eval_return": {"per_seed": np.asarray(final, dtype=np.float64), "mean": float(np.mean(final)),
                              "ci95": [0.0, 0.0]},
    })
    return run_dir


@pytest.fixture
def run_dirs(tmp_path):
    return (write_fake_run(tmp_path / "ppo-cartpole", "ppo", "CartPole-v1", 10.0, [480.0, 500.0, 20.0]),
            write_fake_run(tmp_path / "dqn-cartpole", "dqn", "CartPole-v1", 5.0, [100.0, 200.0, 300.0]))


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_iqm_is_the_25_percent_trimmed_mean():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)          # mean of 3, 4, 5, 6
    assert iqm([9, 1, 1000, 2, 3, 4, 5, -50]) == pytest.approx(3.5)      # order does not matter
    assert iqm([1, 2, 30]) == pytest.approx(11.0)                        # n < 4: nothing is cut
    x = np.random.default_rng(0).normal(size=11)
    assert iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25))
    np.testing.assert_allclose(iqm(np.array([[1, 2, 3, 4], [0, 0, 8, 8]]), axis=1), [2.5, 4.0])
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_interval_contains_the_statistic_and_is_reproducible():
    values = [480.0, 500.0, 20.0, 495.0, 470.0, 350.0, 500.0, 120.0]
    estimate = bootstrap_interval(values, iqm)
    assert isinstance(estimate, Estimate) and estimate.n == 8
    assert estimate.mean == pytest.approx(iqm(values))
    assert min(values) <= estimate.low <= estimate.mean <= estimate.high <= max(values)
    assert bootstrap_interval(values, iqm) == estimate                   # fixed seed
    assert bootstrap_interval(values, iqm, seed=1) != estimate
    # A statistic without axis= goes through the loop and gives the same numbers.
    assert bootstrap_interval(values, lambda v: iqm(v)) == estimate
    wide = bootstrap_interval(values, np.mean, confidence=0.99)
    narrow = bootstrap_interval(values, np.mean, confidence=0.5)
    assert wide.low <= narrow.low <= narrow.high <= wide.high
    assert bootstrap_interval([7.0], iqm) == Estimate(7.0, 7.0, 7.0, 1)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([1.0, np.nan], iqm)


def test_curve_band_shapes_and_nans():
    x = np.array([[np.nan, 1.0, 2.0, 3.0],
                  [np.nan, np.nan, 4.0, 5.0],
                  [np.nan, np.nan, 6.0, 7.0]])
    mean, low, high = curve_band(x)
    assert mean.shape == low.shape == high.shape == (4,)
    assert np.isnan([mean[0], low[0], high[0]]).all()                   # no seed has a value
    assert mean[1] == low[1] == high[1] == 1.0                           # one seed: no spread
    np.testing.assert_allclose(mean[2:], [4.0, 5.0])                     # NaNs ignored per point
    assert (low[2:] < mean[2:]).all() and (mean[2:] < high[2:]).all()
    assert (low[2:] >= 2.0).all() and (high[2:] <= 7.0).all()
    again = curve_band(x, max_block=1)                                   # blocking changes nothing
    for a, b in zip((mean, low, high), again):
        np.testing.assert_array_equal(a, b)
    # A column with every seed equal has a zero-width band.
    _, low, high = curve_band(np.full((5, 3), 2.5))
    np.testing.assert_array_equal(low, high)


def test_load_run_reads_the_records(run_dirs):
    run = plot.load_run(run_dirs[0])
    assert (run.name, run.agent, run.env) == ("ppo-cartpole", "ppo", "CartPole-v1")
    np.testing.assert_array_equal(run.steps, [1000, 2000, 3000, 4000, 5000])
    assert run.values.shape == (SEEDS, CHUNKS)
    assert np.isnan(run.values[:, 0]).all() and np.isnan(run.values[0, 1])
    np.testing.assert_array_equal(run.values[:, -1], [50.0, 51.0, 52.0])
    np.testing.assert_array_equal(run.final_eval, [480.0, 500.0, 20.0])
    assert plot.load_run(run_dirs[0], "loss").values.shape == (SEEDS, CHUNKS)


def test_plot_runs_writes_a_png_of_the_requested_size(run_dirs, tmp_path):
    runs = [plot.load_run(d) for d in run_dirs]
    out = tmp_path / "plots" / "curves.png"
    info = plot.plot_runs(runs, "episode_return", out, width_px=640, height_px=480)
    assert info == {"curves": 2, "path": str(out), "size": (640, 480)}
    assert png_size(out) == (640, 480)


def test_cli_plot_prints_an_iqm_table(run_dirs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    assert main(["plot", str(run_dirs[0]), str(run_dirs[1]), "--out", str(out)]) == 0
    assert png_size(out) == (1200, 800)
    printed = capsys.readouterr().out
    assert "IQM" in printed and "2 curve(s)" in printed
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if "cartpole" in line.split()[0]}
    assert set(rows) == {"ppo-cartpole", "dqn-cartpole"}
    # run, agent, env, seeds, IQM, [low, high], mean; n = 3 < 4, so the IQM is the mean.
    assert rows["ppo-cartpole"][1:5] == ["ppo", "CartPole-v1", "3", "333.33"]
    assert rows["dqn-cartpole"][1:5] == ["dqn", "CartPole-v1", "3", "200.00"]
    assert rows["dqn-cartpole"][-1] == "200.00"


@pytest.mark.parametrize("which, message", [
    ("missing", "does not exist"),
    ("no-results", "has no results.json"),
    ("metric", "unknown metric 'episode_reward'"),
])
def test_cli_plot_errors(run_dirs, tmp_path, capsys, which, message):
    args = ["plot", str(run_dirs[0]), "--out", str(tmp_path / "x.png")]
    if which == "missing":
        args.insert(2, str(tmp_path / "nope"))
    elif which == "no-results":
        (run_dirs[1] / records.RESULTS_FILE).unlink()
        args.insert(2, str(run_dirs[1]))
    else:
        args += ["--metric", "episode_reward"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlkit plot: error: ") and message in err
    if which == "metric":
        assert "metrics present: env_steps, episode_return, loss" in err
    assert not (tmp_path / "x.png").exists()
