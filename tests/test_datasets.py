"""Datasets for offline RL: Minari's format written and read back exactly, episodes recorded on the device
with their end flags, the host Actor's recorder, and bad datasets refused in one line before compiling."""

import json
import sys

import jax
import numpy as np
import pytest

from rlkit import agents, datasets, make_env
from rlkit.cli import main
from rlkit.datasets import Episode, EpisodeRecorder
from rlkit.loops.device import RunConfig, make_trainer
from rlkit.loops.offline import collect_episodes, parse_policy

minari = pytest.importorskip("minari", reason="Minari needs numpy 2: the core world has datasets, the Reverb world not")

INFO = {"env": "CartPole-v1", "agent": "test", "policy": "by hand"}


def hand_made_episodes() -> list[Episode]:
    """Three CartPole-shaped episodes: terminated, truncated, and terminated after one step."""
    rng = np.random.default_rng(0)
    episodes = []
    for length, terminated in ((7, True), (5, False), (1, True)):
        episodes.append(Episode(
            observations=rng.normal(size=(length + 1, 4)).astype(np.float32),
            actions=rng.integers(0, 2, size=length),
            rewards=rng.normal(size=length).astype(np.float32),
            terminations=np.arange(length) == length - 1 if terminated else np.zeros(length, bool),
            truncations=np.zeros(length, bool) if terminated else np.arange(length) == length - 1,
        ))
    return episodes


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    path = datasets.save(root / "cartpole-test-v0", hand_made_episodes(), make_env("CartPole-v1").spec, INFO)
    return path


def test_minari_reads_what_save_wrote_exactly(saved, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(saved.parent))
    opened = minari.load_dataset("cartpole-test-v0")
    assert opened.total_episodes == 3 and opened.total_steps == 13
    for episode, written in zip(opened.iterate_episodes(), hand_made_episodes()):
        np.testing.assert_array_equal(episode.observations, written.observations)
        np.testing.assert_array_equal(episode.actions, written.actions)
        np.testing.assert_array_equal(episode.rewards, written.rewards)
        np.testing.assert_array_equal(episode.terminations, written.terminations)
        np.testing.assert_array_equal(episode.truncations, written.truncations)
    assert opened.storage.metadata["rlkit"]["policy"] == "by hand"


def test_load_gives_every_step_with_its_next_observation(saved):
    dataset = datasets.load(saved)
    episodes = hand_made_episodes()
    assert dataset.num_steps == 13 and dataset.episode_lengths.tolist() == [7, 5, 1]
    np.testing.assert_array_equal(dataset.observations, np.concatenate([e.observations[:-1] for e in episodes]))
    np.testing.assert_array_equal(dataset.next_observations, np.concatenate([e.observations[1:] for e in episodes]))
    np.testing.assert_allclose(dataset.episode_returns(), [e.rewards.sum() for e in episodes], rtol=1e-6)
    assert dataset.metadata["rlkit"]["mean_return"] == pytest.approx(np.mean([e.rewards.sum() for e in episodes]))
    steps = dataset.transitions()
    # A terminal step does not bootstrap; a truncated one does, from its final observation.
    assert steps.discount_t.tolist() == [1] * 6 + [0] + [1] * 5 + [0]
    assert np.flatnonzero(steps.last_t).tolist() == [6, 11, 12]
    np.testing.assert_array_equal(steps.obs_t[11], episodes[1].observations[-1])


def test_image_episodes_keep_their_shape_and_flat_recordings_are_reshaped(tmp_path):
    spec = make_env("Breakout-MinAtar").spec
    rng = np.random.default_rng(1)
    episode = Episode(observations=(rng.random((4, 10, 10, 4)) > 0.5).astype(np.float32), actions=np.array([0, 1, 2]),
                      rewards=np.ones(3, np.float32), terminations=np.array([False, False, True]),
                      truncations=np.zeros(3, bool))
    info = {**INFO, "env": "Breakout-MinAtar"}
    dataset = datasets.load(datasets.save(tmp_path / "breakout-test-v0", [episode], spec, info))
    assert dataset.observations.shape == dataset.next_observations.shape == (3, 10, 10, 4)
    dataset.check_fits(spec, "Breakout-MinAtar")
    flat = dataset._replace(observations=dataset.observations.reshape(3, 400),
                            next_observations=dataset.next_observations.reshape(3, 400))
    flat.check_fits(spec, "Breakout-MinAtar")  # recorded by an rlkit that flattened images
    np.testing.assert_array_equal(flat.shaped(spec.observation_shape).next_observations, episode.observations[1:])
    with pytest.raises(ValueError, match=r"observations of shape \(399,\)"):
        flat._replace(observations=flat.observations[:, :399]).check_fits(spec, "Breakout-MinAtar")


def test_collected_episodes_end_as_the_environment_ended_them():
    for env_id, ends in (("CartPole-v1", "terminated"), ("Pendulum-v1", "truncated")):
        env = make_env(env_id)
        agent = agents.bc.make(agents.bc.Config(hidden_sizes=(8,)), env.spec)
        state = agent.init(jax.random.key(0))
        episodes = collect_episodes(env, agent, state, jax.random.key(1), 3, "sample")
        for episode in episodes:
            length = len(episode.rewards)
            assert episode.observations.shape == (length + 1, *env.spec.observation_shape)
            flags = episode.terminations if ends == "terminated" else episode.truncations
            assert flags.tolist() == [False] * (length - 1) + [True], (env_id, flags)
            assert not (episode.terminations & episode.truncations).any()
        if env_id == "Pendulum-v1":
            assert [len(e.rewards) for e in episodes] == [200] * 3
    # The same key records the same episodes; another key others.
    again = collect_episodes(env, agent, state, jax.random.key(1), 3, "sample")
    other = collect_episodes(env, agent, state, jax.random.key(2), 3, "sample")
    np.testing.assert_array_equal(again[0].actions, episodes[0].actions)
    assert not np.array_equal(other[0].actions, episodes[0].actions)


def test_policies_parse_or_name_what_is_allowed():
    assert parse_policy("greedy") == (True, 0.0) and parse_policy("sample") == (False, 0.0)
    assert parse_policy("epsilon=0.25") == (True, 0.25)
    for bad in ("epsilon=2", "epsilon=x", "random"):
        with pytest.raises(ValueError, match="greedy, sample or epsilon=E"):
            parse_policy(bad)


def test_the_host_actor_records_whole_episodes(tmp_path):
    from rlkit.envs import environment_spec, make_host
    from rlkit.loops.environment_loop import Actor, EnvironmentLoop

    pytest.importorskip("gymnasium")
    environment = make_host("gym:CartPole-v1", seed=3)
    spec = environment_spec(environment)
    agent = agents.bc.make(agents.bc.Config(hidden_sizes=(8,)), spec)
    recorder = EpisodeRecorder()
    actor = Actor(agent, agent.init(jax.random.key(0)), seed=1, adder=recorder)
    EnvironmentLoop(environment, actor, logger=lambda record: None).run(num_episodes=3)
    assert len(recorder.episodes) == 3
    for episode in recorder.episodes:
        assert len(episode.observations) == len(episode.actions) + 1
        assert episode.terminations[-1] and not episode.terminations[:-1].any() and not episode.truncations.any()
    path = datasets.save(tmp_path / "host-v0", recorder.episodes, spec, {"env": "gym:CartPole-v1", "policy": "sample"})
    assert datasets.load(path).num_steps == sum(len(e.rewards) for e in recorder.episodes)


def fits_error(dataset, env_id: str) -> str:
    with pytest.raises(ValueError) as error:
        dataset.check_fits(make_env(env_id).spec, env_id)
    return str(error.value)


def test_a_dataset_that_does_not_fit_is_refused_in_one_line(saved, tmp_path):
    dataset = datasets.load(saved)
    assert "recorded on CartPole-v1, not on --env Acrobot-v1" in fits_error(dataset, "Acrobot-v1")
    anonymous = dataset._replace(metadata={})
    assert "observations of shape (4,), but Acrobot-v1's are (6,)" in fits_error(anonymous, "Acrobot-v1")
    continuous = anonymous._replace(observations=np.zeros((13, 3), np.float32))
    assert "discrete actions, but Pendulum-v1's are continuous" in fits_error(continuous, "Pendulum-v1")
    too_many = anonymous._replace(actions=anonymous.actions + 5)
    assert "outside CartPole-v1's 2 actions" in fits_error(too_many, "CartPole-v1")

    # Agents that cannot learn from a dataset, and datasets smaller than a batch, before compiling.
    env, run = make_env("CartPole-v1"), RunConfig(total_steps=100, num_chunks=1)
    with pytest.raises(ValueError, match="agent ppo learns from 'rollout'"):
        make_trainer(agents.ppo, agents.ppo.Config(), env, run, dataset=dataset)
    with pytest.raises(ValueError, match="batch_size=256 is larger than the dataset's 13 steps"):
        make_trainer(agents.bc, agents.bc.Config(), env, run, dataset=dataset)
    with pytest.raises(ValueError, match="learns only from a dataset"):
        make_trainer(agents.cql, agents.cql.Config(), env, run)
    with pytest.raises(ValueError, match="set prioritized=false"):
        make_trainer(agents.dqn, agents.dqn.Config(prioritized=True, batch_size=8), env, run, dataset=dataset)
    pendulum = make_env("Pendulum-v1").spec
    wide = anonymous._replace(observations=np.zeros((13, 3), np.float32), actions=np.full((13, 1), 2.5, np.float32))
    with pytest.raises(ValueError, match=r"actions 2.5..2.5 outside Pendulum-v1's bounds \[-2, 2\]"):
        wide.check_fits(pendulum, "Pendulum-v1")
    wide._replace(actions=np.full((13, 1), 2.0, np.float32)).check_fits(pendulum, "Pendulum-v1")


def test_schedules_of_replay_agents_span_the_offline_gradient_steps():
    from rlkit.loops.offline import agent_horizon

    experience = agents.dqn.experience(agents.dqn.Config())  # 10 envs x 4 steps per update, 10,000 to start
    assert agent_horizon(experience, 5_000) == 5_000 * 40 + 10_000  # DQN anneals its lr over 5,000 updates
    assert agent_horizon(agents.bc.experience(agents.bc.Config()), 5_000) == 5_000


def damaged_copies(saved, tmp_path):
    """A dataset whose HDF5 file was cut short, one with no episodes, and a directory that is none."""
    import shutil

    cut = tmp_path / "cut-v0"
    shutil.copytree(saved, cut)
    data = cut / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    empty = tmp_path / "empty-v0"
    shutil.copytree(saved, empty)
    import h5py

    with h5py.File(empty / "data" / "main_data.hdf5", "a") as file:
        for name in list(file):
            del file[name]
    metadata = json.loads((empty / "data" / "metadata.json").read_text())
    metadata.update(total_episodes=0, total_steps=0)
    (empty / "data" / "metadata.json").write_text(json.dumps(metadata))
    return {"cannot be read": cut, "holds no episodes": empty, "no Minari dataset there": tmp_path / "nothing"}


def test_a_damaged_or_missing_dataset_is_a_one_line_error(saved, tmp_path, capsys):
    for message, path in damaged_copies(saved, tmp_path).items():
        with pytest.raises(ValueError, match=message) as error:
            datasets.load(path)
        assert "\n" not in str(error.value)
        code = main(["train", "--agent", "bc", "--env", "CartPole-v1", "--dataset", str(path), "--steps", "100",
                     "--out", str(tmp_path / "run"), "--quiet"])
        captured = capsys.readouterr()
        assert code == 2 and message in captured.err and "Traceback" not in captured.err
        assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert not (tmp_path / "run").exists(), "a refused run wrote its directory"


def test_without_minari_datasets_name_the_extra(monkeypatch, saved):
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(ValueError, match=r"pip install 'rlkit\[offline\]'"):
        datasets.load(saved)


def test_save_refuses_what_it_must_not_write(saved, tmp_path):
    spec = make_env("CartPole-v1").spec
    with pytest.raises(ValueError, match="named by its Minari id"):
        datasets.save(tmp_path / "no_version", hand_made_episodes(), spec, INFO)
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        datasets.save(saved, hand_made_episodes(), spec, INFO)
    with pytest.raises(ValueError, match="nothing to write"):
        datasets.save(tmp_path / "none-v0", [], spec, INFO)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot be written"):
        datasets.save(blocked / "data-v0", hand_made_episodes(), spec, INFO)


def test_an_offline_run_trains_evaluates_and_plots_from_the_shell(saved, tmp_path, capsys):
    from rlkit import plot

    out = tmp_path / "bc"
    assert main(["train", "--agent", "bc", "--env", "CartPole-v1", "--dataset", str(saved), "--steps", "40",
                 "--chunks", "2", "--seeds", "2", "--eval-episodes", "2", "--quiet", "--set", "batch_size=8",
                 "--set", "hidden_sizes=8", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["grad_steps"] for line in lines] == [20, 40] and "env_steps" not in lines[0]
    results = json.loads((out / "results.json").read_text())
    assert results["total_steps"] == 40 and results["dataset"]["steps"] == 13
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    table = {int(row[0]): float(row[1]) for row in printed if len(row) == 2 and row[0].isdigit()}
    assert table == {seed: round(value, 2) for seed, value in zip(results["seeds"],
                                                                 results["final_eval_return"]["per_seed"])}
    run = plot.load_run(out)
    assert run.axis == "grad_steps" and run.steps.tolist() == [20, 40]
    assert main(["export", str(out), "--out", str(tmp_path / "metrics.csv")]) == 0
    import csv

    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [row["grad_steps"] for row in rows] == ["20", "20", "40", "40"] and rows[0]["env_steps"] == ""
    assert float(rows[0]["loss"]) > 0


def test_collect_records_a_reverb_run_through_the_host_actor(tmp_path):
    from rlkit.envs import make_host
    from rlkit.runs.collect import _host_episodes
    from rlkit.runs.trained import TrainedRun

    pytest.importorskip("gymnasium")
    spec = make_env("CartPole-v1").spec
    agent = agents.bc.make(agents.bc.Config(hidden_sizes=(8,)), spec)
    states = jax.vmap(agent.init)(jax.random.split(jax.random.key(0), 1))
    run = TrainedRun(agent, states, lambda seed: make_host("gym:CartPole-v1", seed), agents.bc.Config(), [0],
                     "reverb", {"env": "gym:CartPole-v1", "agent": "bc"}, tmp_path)
    episodes, host_spec = _host_episodes(run, run.state(0), deterministic=False, key_seed=5, num_episodes=4)
    assert len(episodes) == 4 and host_spec.observation_shape == spec.observation_shape
    assert all(e.terminations[-1] for e in episodes)
    path = datasets.save(tmp_path / "host-run-v0", episodes, host_spec, {"env": "gym:CartPole-v1"})
    recorded = datasets.load(path)
    recorded.check_fits(spec, "CartPole-v1")  # gymnasium's CartPole is the device's task
    assert "recorded on gym:CartPole-v1, not on --env Acrobot-v1" in fits_error(recorded, "Acrobot-v1")


def test_offline_runs_vmap_seeds_and_float_hyperparameters(saved):
    from rlkit import run_training

    trainer = make_trainer(agents.bc, agents.bc.Config(batch_size=8, hidden_sizes=(8,)), make_env("CartPole-v1"),
                           RunConfig(total_steps=30, num_chunks=1, eval_episodes=2), dataset=datasets.load(saved))
    losses = []
    for seeds, rates in (([0, 0, 1], [1e-3, 1e-2, 1e-3]), ([0], [1e-3])):
        result = run_training(trainer, seeds, hparams={"learning_rate": rates},
                              on_chunk=lambda index, metrics, elapsed: losses.append(metrics["loss"]))
        assert result.eval_returns.shape == (len(seeds), 2)
    vmapped, alone = losses
    assert vmapped[0] != vmapped[1] and vmapped[0] != vmapped[2]  # another learning rate, another seed
    np.testing.assert_allclose(alone[0], vmapped[0], rtol=1e-5)  # the same run, alone or vmapped
