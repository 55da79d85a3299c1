"""Environments on the device: gymnax 1.x behind one small, explicit wrapper.

``DeviceEnv`` keeps gymnax's explicit ``state``/``params`` style and adds what a
training loop needs: float32 observations in their own shape (an image stays ``[height,
width, channels]``; flattening is a torso's choice), episode statistics, and the
final observation of an episode kept apart from the auto-reset one, so a
time-limit truncation can bootstrap from it while a termination does not.

``observe`` makes an environment partially observable: ``make("CartPole-v1",
observe=(0, 2))`` shows cart position and pole angle and hides both velocities,
a memory task for recurrent agents.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from rlkit.envs import brax, craftax, jumanji
from rlkit.types import EnvSpec


class EpisodeState(NamedTuple):
    """The wrapped environment state plus running episode statistics."""

    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class EnvStep(NamedTuple):
    """The result of one ``DeviceEnv.step``.

    Attributes:
      obs: the observation to act on next (the reset observation after an episode end).
      reward: reward for the action.
      terminated: the episode reached a terminal state.
      truncated: the episode hit its time limit (and did not terminate).
      next_obs: the observation the action led to, before any auto-reset.
      episode_return: return of the episode that ended here (0 where it did not).
      episode_length: length of the episode that ended here (0 where it did not).
    """

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


def _check_observe(observe: Any, size: int, env_id: str) -> tuple[int, ...]:
    indices = tuple(int(i) for i in observe)
    if not indices or any(not 0 <= i < size for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(
            f"observe: {tuple(observe)} must be distinct indices in [0, {size}) of {env_id}'s {size} "
            f"observation components"
        )
    return indices


class DeviceEnv:
    """A single gymnax environment with float32 observations and episode statistics.

    Vectorize with ``jax.vmap`` over keys, states and actions (params shared), or step a batch with
    ``step_batch``. ``observe``: indices of a vector observation to keep (None: all of it).
    ``reset_ratio``: ``step_batch`` generates ``ceil(num_envs / reset_ratio)`` fresh episodes per step
    instead of one per environment (an optimistic reset, for environments whose reset is costly);
    1 (the default) gives every environment its own.
    """

    def __init__(self, env: Any, params: Any, env_id: str | None = None, observe: tuple[int, ...] | None = None,
                 reset_ratio: int = 1):
        if not isinstance(reset_ratio, int) or reset_ratio < 1:
            raise ValueError(f"reset_ratio must be an integer >= 1 (1: a reset per environment), got {reset_ratio!r}")
        self.reset_ratio = reset_ratio
        self.env = env
        self.default_params = params
        self.env_id = env_id or type(env).__name__
        spec = _spec_from_gymnax(env, params)
        self._shape = spec.observation_shape  # the environment's own, before ``observe``
        if observe is not None and len(spec.observation_shape) != 1:
            raise ValueError(
                f"observe: picks components of a vector observation, but {self.env_id}'s observations have "
                f"shape {spec.observation_shape}"
            )
        self.observe = None if observe is None else _check_observe(observe, spec.observation_shape[0], self.env_id)
        if self.observe is not None:
            spec = spec._replace(observation_shape=(len(self.observe),))
        self.spec = spec

    def _observation(self, obs: jax.Array) -> jax.Array:
        obs = jnp.reshape(obs, self._shape).astype(jnp.float32)
        return obs if self.observe is None else obs[np.asarray(self.observe)]

    @property
    def max_episode_steps(self) -> int:
        return int(self.default_params.max_steps_in_episode)

    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, EpisodeState]:
        params = self.default_params if params is None else params
        obs, env_state = self.env.reset(key, params)
        zero = jnp.zeros((), jnp.float32)
        return self._observation(obs), EpisodeState(env_state, zero, jnp.zeros((), jnp.int32))

    def step(
        self, key: jax.Array, state: EpisodeState, action: jax.Array, params: Any = None
    ) -> tuple[EpisodeState, EnvStep]:
        params = self.default_params if params is None else params
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params
        )
        return self._episode_step(state, env_state, obs, reward, terminated, truncated, info["final_observation"])

    def step_batch(
        self, keys: jax.Array, states: EpisodeState, actions: jax.Array, params: Any = None
    ) -> tuple[EpisodeState, EnvStep]:
        """``jax.vmap(self.step)`` over ``[num_envs]`` keys, states and actions; with ``reset_ratio`` > 1,
        only ``ceil(num_envs / reset_ratio)`` resets are computed per step, and the k-th environment to end
        in a step starts the (k mod that)-th of them, so two ending together may start the same episode
        (Craftax's optimistic reset; gymnax's ``step`` computes a reset for every environment every step)."""
        num_envs = keys.shape[0]
        resets = -(-num_envs // self.reset_ratio)
        if resets >= num_envs:
            return jax.vmap(self.step, in_axes=(0, 0, 0, None))(keys, states, actions, params)
        params = self.default_params if params is None else params
        step_keys, reset_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        obs_st, state_st, reward, terminated, _ = jax.vmap(self.env.step_env, in_axes=(0, 0, 0, None))(
            step_keys, states.env_state, actions, params
        )
        truncated = jax.vmap(self.env.is_truncated, in_axes=(0, None))(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = jax.vmap(self.env.reset_env, in_axes=(0, None))(reset_keys[:resets], params)
        slot = (jnp.cumsum(done) - 1) % resets  # which fresh episode each ending environment starts

        def pick(fresh: jax.Array, stepped: jax.Array) -> jax.Array:
            return jnp.where(done.reshape(-1, *[1] * (stepped.ndim - 1)), fresh[slot], stepped)

        env_state = jax.tree.map(pick, state_re, state_st)
        obs = jax.tree.map(pick, obs_re, obs_st)
        return jax.vmap(self._episode_step)(states, env_state, obs, reward, terminated, truncated, obs_st)

    def _episode_step(self, state: EpisodeState, env_state: Any, obs: Any, reward: jax.Array,
                      terminated: jax.Array, truncated: jax.Array, final_obs: Any) -> tuple[EpisodeState, EnvStep]:
        """One environment's step after gymnax's auto-reset: float32 observations, the truncation apart
        from a termination, the final observation, and the episode statistics."""
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.logical_and(jnp.asarray(truncated, bool), ~terminated)
        done = terminated | truncated
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        step = EnvStep(
            obs=self._observation(obs),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            next_obs=self._observation(final_obs),
            episode_return=jnp.where(done, episode_return, 0.0),
            episode_length=jnp.where(done, episode_length, 0),
        )
        new_state = EpisodeState(
            env_state,
            jnp.where(done, 0.0, episode_return),
            jnp.where(done, 0, episode_length),
        )
        return new_state, step

    def step_without_reset(
        self, key: jax.Array, state: EpisodeState, action: jax.Array, params: Any = None
    ) -> tuple[EpisodeState, jax.Array, jax.Array, jax.Array, jax.Array]:
        """One step with no auto-reset: ``(state, next_obs, reward, terminated, truncated)``.

        For loops that stop using an environment once its episode ends (evaluation): they skip
        the reset that ``step`` computes every step. Episode statistics are not kept.
        """
        params = self.default_params if params is None else params
        obs, env_state, reward, terminated, _ = self.env.step_env(key, state.env_state, action, params)
        terminated = jnp.asarray(terminated, bool)
        truncated = jnp.logical_and(jnp.asarray(self.env.is_truncated(env_state, params), bool), ~terminated)
        new_state = EpisodeState(env_state, state.episode_return, state.episode_length)
        return new_state, self._observation(obs), jnp.asarray(reward, jnp.float32), terminated, truncated


def _spec_from_gymnax(env: Any, params: Any) -> EnvSpec:
    obs_shape = tuple(int(d) for d in env.observation_space(params).shape) or (1,)
    action_space = env.action_space(params)
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(obs_shape, "discrete", int(action_space.n))
    if isinstance(action_space, spaces.Box):
        shape = tuple(action_space.shape) or (1,)
        low = np.broadcast_to(np.asarray(action_space.low, np.float32), shape)
        high = np.broadcast_to(np.asarray(action_space.high, np.float32), shape)
        return EnvSpec(obs_shape, "continuous", int(np.prod(shape)), low, high)
    raise ValueError(
        f"action space {action_space!r} is not supported: rlkit handles Discrete and Box"
    )


SUITES = {"brax": brax, "craftax": craftax, "jumanji": jumanji}  # prefix: adapter module (each an extra)
SUITE_IDS = tuple(f"{prefix}:{game}" for prefix, suite in SUITES.items() for game in suite.GAMES)


def env_ids() -> list[str]:
    """Every environment id ``make`` accepts: gymnax's, then the optional suites' (prefixed)."""
    import gymnax

    return [*gymnax.registered_envs, *SUITE_IDS]


def make(env_id: str, observe: tuple[int, ...] | None = None, reset_ratio: int | None = None,
         **env_kwargs: Any) -> DeviceEnv:
    """Make a device environment from a gymnax id (classic control, bsuite, MinAtar, misc) or a suite's
    prefixed id (``brax:inverted_pendulum``, ``craftax:Craftax-Classic-Symbolic-v1``, ``jumanji:Snake-v1``;
    each suite needs its extra). ``env_kwargs`` go to gymnax or the suite's adapter (for the suites:
    ``max_steps_in_episode``, and Brax's ``backend``).

    ``observe`` keeps only those components of a vector observation (partial observability).
    ``reset_ratio`` (``DeviceEnv``): environments per fresh episode generated in a step; by default 1,
    and the suite's ``RESET_RATIO`` where it has one (Craftax: 16, since its world generation costs
    more than many steps).

    Raises:
      ValueError: for an unknown id, naming the closest known ids.
    """
    import gymnax

    known = env_ids()
    if env_id not in known:
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"env: unknown environment id {env_id!r}.{hint} "
            f"Known ids: {', '.join(known)}."
        )
    prefix, _, game = env_id.partition(":")
    if prefix in SUITES:
        suite = SUITES[prefix]
        ratio = getattr(suite, "RESET_RATIO", 1) if reset_ratio is None else reset_ratio
        return DeviceEnv(*suite.make(game, **env_kwargs), env_id, observe, ratio)
    env, params = gymnax.make(env_id, **env_kwargs)
    return DeviceEnv(env, params, env_id, observe, 1 if reset_ratio is None else reset_ratio)


def wrap(env: Any, params: Any = None, env_id: str | None = None) -> DeviceEnv:
    """Wrap any gymnax-1.x-style environment (e.g. a custom or test environment)."""
    return DeviceEnv(env, env.default_params if params is None else params, env_id)
