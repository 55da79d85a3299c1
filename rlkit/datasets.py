"""Datasets of recorded episodes in Minari's format, for offline RL and imitation.

A dataset is a directory Minari reads (``minari.MinariDataset(path)``, or ``minari.load_dataset(id)``
when it lies under ``$MINARI_DATASETS_PATH`` with its id as its name): ``data/metadata.json`` and
``data/main_data.hdf5``, one group per episode holding ``T + 1`` observations (the last one the final
observation, so a truncated episode bootstraps from it), ``T`` actions, rewards, terminations and
truncations. rlkit adds, in the metadata, the environment id, the policy that acted and its mean
return (``metadata["rlkit"]``); datasets from elsewhere load as they are, checked by shape only.

::

    dataset = rlkit.datasets.load("runs/cartpole-expert-v0")       # or a Minari id
    dataset.check_fits(env.spec, env.env_id)                      # one-line errors, before compiling

Needs the ``offline`` extra (``pip install 'rlkit[offline]'``: minari with h5py); Minari needs numpy 2,
so the Reverb world (numpy 1.26) has no datasets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rlkit.types import EnvSpec, Transition

DATASET_ID = re.compile(r"[\w.-]+-v\d+")  # Minari's NAME-vVERSION, the directory's name


class Dataset(NamedTuple):
    """Every step of a dataset's episodes, concatenated in episode order (numpy, leading axis ``[steps]``).

    Attributes:
      observations: the observation each action was taken in.
      actions: the actions (int32 for a discrete space, float32 ``[steps, A]`` for a continuous one).
      rewards: reward for each action.
      terminations: the episode reached a terminal state here (no bootstrap).
      truncations: the episode was cut here (time limit), bootstrapping from ``next_observations``.
      next_observations: the observation each action led to (the final one at an episode end).
      episode_lengths: ``[episodes]``, steps per episode, in order.
      metadata: Minari's metadata (``metadata.get("rlkit", {})`` holds env, policy, mean_return).
      path: where it was read from.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    next_observations: np.ndarray
    episode_lengths: np.ndarray
    metadata: dict[str, Any]
    path: Path

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_ends(self) -> np.ndarray:
        """``[steps]``: True at the last step of every episode (cut, terminated or truncated)."""
        ends = np.zeros(self.num_steps, bool)
        ends[np.cumsum(self.episode_lengths) - 1] = True
        return ends

    def episode_returns(self) -> np.ndarray:
        """``[episodes]``: undiscounted return of each episode."""
        return np.add.reduceat(self.rewards, np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]))

    def shaped(self, observation_shape: tuple[int, ...]) -> Dataset:
        """The dataset with its observations in ``observation_shape``: a flat recording reshaped (``check_fits``
        first)."""
        size = len(self.rewards)
        return self._replace(observations=self.observations.reshape(size, *observation_shape),
                             next_observations=self.next_observations.reshape(size, *observation_shape))

    def check_fits(self, spec: EnvSpec, env_id: str) -> None:
        """Raise a one-line ValueError unless the dataset fits ``spec`` and was recorded on ``env_id``'s task.

        ``gym:ID`` and ``gymnax:ID`` (host environments of Reverb runs) count as the device's ``ID``.
        """
        name = f"dataset {self.path}"
        recorded = self.metadata.get("rlkit", {}).get("env")
        if recorded is not None and _task(recorded) != _task(env_id):
            raise ValueError(f"{name}: recorded on {recorded}, not on --env {env_id}")
        shape, flat = tuple(spec.observation_shape), (int(np.prod(spec.observation_shape)),)
        if self.observations.shape[1:] not in (shape, flat):  # flat: recorded before images kept their shape
            raise ValueError(f"{name}: observations of shape {self.observations.shape[1:]}, but {env_id}'s are "
                             f"{tuple(spec.observation_shape)}")
        discrete = _action_kind(self.actions) == "discrete"
        if (spec.action_kind == "discrete") != discrete:
            raise ValueError(f"{name}: {'discrete' if discrete else 'continuous'} actions, but {env_id}'s are "
                             f"{spec.action_kind}")
        if discrete and (self.actions.min() < 0 or self.actions.max() >= spec.num_actions):
            raise ValueError(f"{name}: actions {self.actions.min()}..{self.actions.max()} outside {env_id}'s "
                             f"{spec.num_actions} actions")
        if not discrete and self.actions.shape[1:] != (spec.num_actions,):
            raise ValueError(f"{name}: actions of shape {self.actions.shape[1:]}, but {env_id}'s are "
                             f"({spec.num_actions},)")
        if not discrete:
            low, high = np.asarray(spec.action_low, np.float32), np.asarray(spec.action_high, np.float32)
            slack = 1e-5 * np.maximum(1.0, np.abs(np.stack([low, high])))  # float rounding of a stored bound
            if np.any(self.actions < low - slack[0]) or np.any(self.actions > high + slack[1]):
                raise ValueError(f"{name}: actions {self.actions.min():.3g}..{self.actions.max():.3g} outside "
                                 f"{env_id}'s bounds [{np.min(low):.3g}, {np.max(high):.3g}]")

    def transitions(self) -> Transition:
        """The steps as one-step ``Transition [steps]`` (discount 0 at termination; ``last_t`` at episode ends)."""
        return Transition(
            obs_tm1=self.observations, action_tm1=self.actions, reward_t=self.rewards,
            discount_t=1.0 - self.terminations.astype(np.float32), obs_t=self.next_observations,
            last_t=self.episode_ends | self.terminations | self.truncations,
        )


def identity(dataset: Dataset) -> dict[str, Any]:
    """What a run records of its dataset, so ``--resume`` refuses another one: id, size and a content hash.

    Not its path: the same dataset moved, or found by its id on another machine, resumes the run.
    """
    import hashlib

    digest = hashlib.sha256()
    for array in dataset[:7]:  # every array field, the episode lengths included
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"id": dataset.metadata.get("dataset_id"), "steps": dataset.num_steps,
            "episodes": int(len(dataset.episode_lengths)), "sha256": digest.hexdigest()[:16]}


def _task(env_id: str) -> str:
    """The task an id names: ``gym:CartPole-v1`` (a Reverb run's) and ``gymnax:`` ids are the device's ``CartPole-v1``."""
    for prefix in ("gym:", "gymnax:"):
        if env_id.startswith(prefix):
            return env_id[len(prefix):]
    return env_id


def _action_kind(actions: np.ndarray) -> str:
    return "discrete" if np.issubdtype(actions.dtype, np.integer) else "continuous"


def require_minari():
    """Minari, or a one-line error naming the extra that brings it."""
    try:
        import minari
    except ImportError:
        raise ValueError("datasets need the offline extra: pip install 'rlkit[offline]' (minari with h5py; "
                         "core world only, as Minari needs numpy 2)") from None
    return minari


def resolve(path_or_id: str | Path) -> Path:
    """The directory of a dataset given as a path, or as a Minari id in Minari's local datasets root."""
    path = Path(path_or_id)
    if (path / "data").is_dir():
        return path
    if not path.exists() and DATASET_ID.fullmatch(path.name):
        from minari.storage import get_dataset_path

        local = Path(get_dataset_path(str(path_or_id)))
        if (local / "data").is_dir():
            return local
    raise ValueError(f"dataset {path_or_id}: no Minari dataset there (a directory holding data/metadata.json, "
                     "or a dataset id under $MINARI_DATASETS_PATH); record one with rlkit collect")


def load(path_or_id: str | Path) -> Dataset:
    """Read a Minari dataset into one ``Dataset``; a corrupted, empty or unsupported one is a one-line error."""
    minari = require_minari()
    path = resolve(path_or_id)
    try:
        data = minari.MinariDataset(path / "data")
        metadata = json.loads((path / "data" / "metadata.json").read_text())
        episodes = list(data.iterate_episodes())
    except Exception as error:  # h5py and Minari raise many kinds for a damaged file  # noqa: BLE001
        raise ValueError(f"dataset {path}: cannot be read ({type(error).__name__}: {error})".splitlines()[0]) from None
    if not episodes:
        raise ValueError(f"dataset {path}: holds no episodes")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in Dataset._fields[:6]}
    lengths = []
    for episode in episodes:
        observations, actions = episode.observations, episode.actions
        if not isinstance(observations, np.ndarray) or not isinstance(actions, np.ndarray):
            raise ValueError(f"dataset {path}: observations and actions must be arrays (Box or Discrete spaces), "
                             f"got {type(observations).__name__} and {type(actions).__name__}")
        steps = len(episode.rewards)
        if steps == 0 or len(observations) != steps + 1 or len(actions) != steps:
            raise ValueError(f"dataset {path}: episode {episode.id} has {len(observations)} observations and "
                             f"{len(actions)} actions for {steps} rewards (wanted steps + 1, steps)")
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(actions)
        parts["rewards"].append(episode.rewards)
        parts["terminations"].append(episode.terminations)
        parts["truncations"].append(episode.truncations)
        lengths.append(steps)
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    discrete = np.issubdtype(joined["actions"].dtype, np.integer)
    if discrete and joined["actions"].size != len(joined["rewards"]):
        raise ValueError(f"dataset {path}: discrete actions of shape {joined['actions'].shape[1:]} per step; "
                         "one action index per step is allowed")
    return Dataset(
        observations=_float32_steps(joined["observations"]),
        actions=joined["actions"].reshape(-1).astype(np.int32) if discrete else
        joined["actions"].reshape(len(joined["rewards"]), -1).astype(np.float32),
        rewards=joined["rewards"].astype(np.float32),
        terminations=joined["terminations"].astype(bool),
        truncations=joined["truncations"].astype(bool),
        next_observations=_float32_steps(joined["next_observations"]),
        episode_lengths=np.asarray(lengths, np.int64),
        metadata=metadata, path=path,
    )


def _float32_steps(observations: np.ndarray) -> np.ndarray:
    """``[steps, *observation_shape]`` float32 observations (scalar ones as ``[steps, 1]``), shapes kept."""
    observations = observations.astype(np.float32)
    return observations[:, None] if observations.ndim == 1 else observations


class Episode(NamedTuple):
    """One recorded episode: ``T + 1`` observations, ``T`` of everything else (numpy)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray


def check_out(out: str | Path, overwrite: bool = False) -> Path:
    """The dataset directory ``out`` after checking its name and that it may be written; one-line errors."""
    path = Path(out)
    if not DATASET_ID.fullmatch(path.name):
        raise ValueError(f"--out {out}: a dataset directory is named by its Minari id, NAME-vVERSION "
                         "(e.g. cartpole-expert-v0)")
    if path.exists() and not overwrite:
        raise ValueError(f"--out {out}: already exists; pass --overwrite to replace it")
    if path.exists() and not (path / "data").is_dir():
        raise ValueError(f"--out {out}: exists and is not a dataset, so --overwrite will not remove it")
    return path


def save(out: str | Path, episodes: list[Episode], spec: EnvSpec, info: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``episodes`` as a Minari (HDF5) dataset in the directory ``out`` (named ``NAME-vVERSION``).

    ``info`` (env id, policy, source run, ...) is stored as ``metadata["rlkit"]`` with the mean return.
    The dataset is written beside ``out`` and renamed into place, so a failed write leaves nothing half-done.
    """
    import shutil
    import tempfile

    minari = require_minari()
    import gymnasium  # a dependency of Minari's
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path = check_out(out, overwrite)
    if not episodes:
        raise ValueError("--episodes: nothing to write, no episodes were recorded")
    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, tuple(spec.observation_shape), np.float32)
    if spec.action_kind == "discrete":
        action_space = gymnasium.spaces.Discrete(spec.num_actions)
    else:
        action_space = gymnasium.spaces.Box(np.asarray(spec.action_low, np.float32),
                                            np.asarray(spec.action_high, np.float32), dtype=np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Absolute: Minari's size bookkeeping joins a relative data path twice.
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)).resolve()
    except OSError as error:
        raise ValueError(f"--out {out}: cannot be written ({error.strerror or error})") from None
    try:
        storage = MinariStorage.new(staging / "data", observation_space=observation_space,
                                    action_space=action_space, data_format="hdf5")
        returns = [float(np.sum(e.rewards)) for e in episodes]
        storage.update_metadata({
            "dataset_id": path.name, "minari_version": minari.__version__, "algorithm_name": f"rlkit {info.get('agent', '')}".strip(),
            "description": f"{len(episodes)} episodes of {info.get('env')} by the {info.get('policy')} policy "
                           f"of {info.get('agent')} (mean return {np.mean(returns):.1f}), recorded by rlkit collect",
            "rlkit": {**info, "mean_return": float(np.mean(returns)), "episodes": len(episodes)},
        })
        storage.update_episodes([
            EpisodeBuffer(id=i, observations=e.observations, actions=e.actions, rewards=list(e.rewards),
                          terminations=list(e.terminations), truncations=list(e.truncations))
            for i, e in enumerate(episodes)
        ])
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    except OSError as error:
        raise ValueError(f"--out {out}: cannot be written ({error.strerror or error})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


class EpisodeRecorder:
    """An adder for the host ``Actor`` that keeps whole episodes, to ``save`` as a dataset.

    ``Actor(agent, state, adder=recorder)``; ``recorder.episodes`` holds each finished episode.
    A step with ``discount_t == 0`` terminated its episode; any other ``last_t`` truncated it.
    """

    def __init__(self):
        self.episodes: list[Episode] = []
        self._steps: list[Transition] = []

    def __call__(self, step: Transition) -> None:
        self._steps.append(step)
        if bool(step.last_t):
            steps, self._steps = self._steps, []
            terminated = np.asarray([s.discount_t == 0 for s in steps])
            self.episodes.append(Episode(
                observations=np.stack([s.obs_tm1 for s in steps] + [steps[-1].obs_t]).astype(np.float32),
                actions=np.stack([s.action_tm1 for s in steps]),
                rewards=np.asarray([s.reward_t for s in steps], np.float32),
                terminations=terminated,
                truncations=~terminated & np.asarray([bool(s.last_t) for s in steps]),
            ))
