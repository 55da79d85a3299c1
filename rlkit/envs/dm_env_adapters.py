"""Environments on the host: dm_env adapters for gymnasium, gymnax and dm_control.

Every adapter follows dm_env (and Acme): ``reset()`` gives a FIRST step (reward and
discount None); ``step(action)`` a MID step, or a LAST step with discount 0.0 where
the episode terminated and 1.0 where a time limit truncated it; the ``step`` after a
LAST starts a new episode. Observations are float32 arrays in the environment's own
shape (an image stays ``[height, width, channels]``; flattening is a torso's choice),
rewards and discounts float32 scalars, so ``environment_spec(env)`` builds the same
agents as the device loop does. ``FlatObservation`` concatenates nested observations.
"""

from __future__ import annotations

import difflib
import operator
import warnings
from typing import Any

import dm_env
import jax
import jax.numpy as jnp
import numpy as np
from dm_env import specs

from rlkit.envs import device
from rlkit.types import EnvSpec

HOST_PREFIXES = ("gym:", "gymnax:", "dm_control:")


class _FlatEnvironment(dm_env.Environment):
    """Shared float32 reward/discount specs and time-step constructors."""

    def reward_spec(self):
        return specs.Array((), np.float32, name="reward")

    def discount_spec(self):
        return specs.BoundedArray((), np.float32, 0.0, 1.0, name="discount")

    @staticmethod
    def _time_step(obs, reward, terminated: bool, truncated: bool) -> dm_env.TimeStep:
        obs = _float32(obs)
        if type(reward) is float or type(reward) is int:  # the common case, kept cheap
            reward = np.float32(reward)
        else:
            reward = np.asarray(reward, np.float32).reshape(())
        if terminated:
            return dm_env.TimeStep(_LAST, reward, _ZERO, obs)
        return dm_env.TimeStep(_LAST if truncated else _MID, reward, _ONE, obs)


_LAST, _MID = dm_env.StepType.LAST, dm_env.StepType.MID
_ZERO, _ONE = np.float32(0.0), np.float32(1.0)


def _float32(obs: Any) -> np.ndarray:
    """``obs`` as a float32 array of its own shape (a scalar as shape ``(1,)``)."""
    if type(obs) is np.ndarray and obs.dtype == np.float32 and obs.ndim >= 1:
        return obs  # already float32 (e.g. CartPole): no copy, no view
    obs = np.asarray(obs, np.float32)
    return obs.reshape(1) if obs.ndim == 0 else obs


def _bounded_spec(low, high, shape, name: str) -> specs.Array:
    """A float32 spec of ``shape`` (``(1,)`` for a scalar) from box bounds; BoundedArray unless every bound is
    infinite."""
    shape = tuple(int(d) for d in shape) or (1,)
    with np.errstate(over="ignore"):
        low = np.broadcast_to(np.asarray(low, np.float32), shape)
        high = np.broadcast_to(np.asarray(high, np.float32), shape)
    if np.isinf(low).all() and np.isinf(high).all():
        return specs.Array(shape, np.float32, name=name)
    return specs.BoundedArray(shape, np.float32, low, high, name=name)


class GymWrapper(_FlatEnvironment):
    """A gymnasium environment behind dm_env; ``seed`` seeds its first reset."""

    def __init__(self, environment: Any, seed: int | None = None):
        from gymnasium import spaces

        self.environment = environment
        self._seed = seed
        self._needs_reset = True
        obs_space, action_space = environment.observation_space, environment.action_space
        if not isinstance(obs_space, spaces.Box):
            raise ValueError(
                f"GymWrapper: observation space {obs_space!r} is not supported; rlkit handles Box "
                "observations (wrap the env in gymnasium.wrappers.FlattenObservation first)"
            )
        self._observation_spec = _bounded_spec(obs_space.low, obs_space.high, obs_space.shape, "observation")
        self._discrete = isinstance(action_space, spaces.Discrete)
        if self._discrete:
            self._action_spec = specs.DiscreteArray(int(action_space.n), name="action")
            self._action_start = int(action_space.start)
        elif isinstance(action_space, spaces.Box):
            self._action_spec = specs.BoundedArray(
                action_space.shape, np.float32, action_space.low, action_space.high, name="action"
            )
        else:
            raise ValueError(
                f"GymWrapper: action space {action_space!r} is not supported; rlkit handles Discrete and Box"
            )
        self._action_space = action_space

    def reset(self) -> dm_env.TimeStep:
        if self._seed is not None:
            obs, _ = self.environment.reset(seed=self._seed)
            self._seed = None  # seed once; later resets continue the seeded generator
        else:
            obs, _ = self.environment.reset()
        self._needs_reset = False
        return dm_env.restart(_float32(obs))

    def step(self, action) -> dm_env.TimeStep:
        if self._needs_reset:
            return self.reset()
        obs, reward, terminated, truncated, _ = self.environment.step(self._to_gym_action(action))
        self._needs_reset = bool(terminated or truncated)
        return self._time_step(obs, reward, bool(terminated), bool(truncated))

    def _to_gym_action(self, action):
        if self._discrete:
            try:  # a Python or numpy integer scalar: the common case, kept cheap
                return operator.index(action) + self._action_start
            except TypeError:
                return int(np.asarray(action).reshape(())) + self._action_start
        space = self._action_space
        return np.asarray(action, space.dtype).reshape(space.shape)

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec

    def close(self):
        self.environment.close()


class GymnaxWrapper(_FlatEnvironment):
    """One gymnax environment (an id or a ``DeviceEnv``) behind dm_env, jitted, numpy out.

    The gymnax auto-reset is kept: at a LAST step the wrapper returns the final
    observation and holds the reset one for the FIRST step that follows.
    """

    def __init__(self, environment: str | device.DeviceEnv, seed: int = 0):
        self.device_env = device.make(environment) if isinstance(environment, str) else environment
        env = self.device_env
        self._key = jax.random.key(seed)
        self._state = None
        self._pending_first_obs = None  # reset observation held after a LAST step
        obs_space = env.env.observation_space(env.default_params)
        if env.observe is None:
            self._observation_spec = _bounded_spec(obs_space.low, obs_space.high, obs_space.shape, "observation")
        else:  # the components ``observe`` keeps
            self._observation_spec = specs.Array(env.spec.observation_shape, np.float32, name="observation")
        spec = env.spec
        if spec.action_kind == "discrete":
            self._action_spec = specs.DiscreteArray(spec.num_actions, name="action")
        else:
            self._action_spec = specs.BoundedArray(
                (spec.num_actions,), np.float32, spec.action_low, spec.action_high, name="action"
            )

        def reset(key):
            key, reset_key = jax.random.split(key)
            return (key, *env.reset(reset_key))

        def step(key, state, action):
            key, step_key = jax.random.split(key)
            return (key, *env.step(step_key, state, action))

        self._reset, self._step = jax.jit(reset), jax.jit(step)

    def reset(self) -> dm_env.TimeStep:
        self._key, obs, self._state = self._reset(self._key)
        self._pending_first_obs = None
        return dm_env.restart(_float32(obs))

    def step(self, action) -> dm_env.TimeStep:
        if self._state is None:
            return self.reset()
        if self._pending_first_obs is not None:
            obs, self._pending_first_obs = self._pending_first_obs, None
            return dm_env.restart(_float32(obs))
        dtype = jnp.int32 if isinstance(self._action_spec, specs.DiscreteArray) else jnp.float32
        self._key, self._state, result = self._step(self._key, self._state, jnp.asarray(action, dtype))
        terminated, truncated = bool(result.terminated), bool(result.truncated)
        if terminated or truncated:
            self._pending_first_obs = result.obs
        return self._time_step(result.next_obs, result.reward, terminated, truncated)

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec


class FlatObservation(_FlatEnvironment):
    """Concatenate a dm_env environment's (nested) observations into one float32 vector."""

    def __init__(self, environment: dm_env.Environment):
        self.environment = environment
        size = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(environment.observation_spec()))
        self._observation_spec = specs.Array((size,), np.float32, name="observation")

    def _flat(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
        leaves = [np.asarray(x, np.float32).reshape(-1) for x in jax.tree.leaves(timestep.observation)]
        obs = np.concatenate(leaves) if leaves else np.zeros((0,), np.float32)
        if timestep.first():
            return dm_env.restart(obs)
        reward = np.asarray(timestep.reward, np.float32).reshape(())
        return timestep._replace(observation=obs, reward=reward, discount=np.float32(timestep.discount))

    def reset(self):
        return self._flat(self.environment.reset())

    def step(self, action):
        return self._flat(self.environment.step(action))

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self.environment.action_spec()

    def close(self):
        self.environment.close()


def environment_spec(environment: dm_env.Environment) -> EnvSpec:
    """What an agent needs to know about a dm_env environment (Acme's ``make_environment_spec``)."""
    obs_spec, action_spec = environment.observation_spec(), environment.action_spec()
    if not isinstance(obs_spec, specs.Array):
        raise ValueError(
            f"environment_spec: the observation spec is {type(obs_spec).__name__}, not one array; "
            "wrap the environment in rlkit.envs.FlatObservation"
        )
    observation_shape = tuple(int(d) for d in obs_spec.shape)
    if isinstance(action_spec, specs.DiscreteArray):
        return EnvSpec(observation_shape, "discrete", int(action_spec.num_values))
    if isinstance(action_spec, specs.Array) and np.issubdtype(action_spec.dtype, np.floating):
        shape = tuple(action_spec.shape) or (1,)
        bounded = isinstance(action_spec, specs.BoundedArray)
        low = action_spec.minimum if bounded else -np.inf
        high = action_spec.maximum if bounded else np.inf
        low = np.broadcast_to(np.asarray(low, np.float32), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(high, np.float32), shape).reshape(-1)
        return EnvSpec(observation_shape, "continuous", int(np.prod(shape)), low, high)
    raise ValueError(
        f"environment_spec: action spec {action_spec!r} is not supported; rlkit handles "
        "DiscreteArray and floating-point (Bounded)Array actions"
    )


def make_host(env_id: str, seed: int = 0) -> dm_env.Environment:
    """Make a host (dm_env) environment from ``gym:ID``, ``gymnax:ID`` or ``dm_control:DOMAIN-TASK``.

    Raises:
      ValueError: for an unknown prefix or id, naming what is allowed.
      ImportError: for ``dm_control:`` when dm-control is not installed.
    """
    prefix, _, name = env_id.partition(":")
    if prefix == "gym" and name:
        return GymWrapper(_make_gymnasium(name), seed=seed)
    if prefix == "gymnax" and name:
        try:
            return GymnaxWrapper(name, seed=seed)
        except ValueError as error:
            raise ValueError(f"make_host({env_id!r}): {error}") from None
    if prefix == "dm_control" and name:
        return _make_dm_control(name, seed)
    raise ValueError(
        f"make_host: unknown environment id {env_id!r}; use one of the prefixes "
        f"{', '.join(HOST_PREFIXES)} (e.g. gym:CartPole-v1, gymnax:CartPole-v1, dm_control:cartpole-balance)"
    )


def _make_gymnasium(name: str):
    import gymnasium

    known = sorted(gymnasium.registry)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"make_host: unknown gymnasium id {name!r}.{hint} Registered ids: {', '.join(known)}."
        )
    try:
        return gymnasium.make(name)
    except gymnasium.error.DependencyNotInstalled as error:  # e.g. Box2D for LunarLander
        raise ValueError(f"make_host: gymnasium's {name} needs a package this Python lacks ({error})") from None


def _make_dm_control(name: str, seed: int) -> dm_env.Environment:
    try:
        with warnings.catch_warnings():  # dm_control's import probes GLFW for rendering; we never render
            warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
            from dm_control import suite
    except ImportError as error:
        import importlib.util
        import os

        if importlib.util.find_spec("dm_control") is not None and os.environ.get("MUJOCO_GL"):
            raise ImportError(f"make_host('dm_control:{name}'): dm_control did not import with "
                              f"MUJOCO_GL={os.environ['MUJOCO_GL']}, a rendering backend this machine cannot load "
                              f"({error}); unset MUJOCO_GL, or install that backend") from error
        raise ImportError(
            f"make_host('dm_control:{name}') needs dm-control, which is not installed: "
            f"install rlkit's `envs` extra (pip install 'rlkit[envs]') ({error})"
        ) from error
    domain, _, task = name.partition("-")
    if (domain, task) not in suite.ALL_TASKS:
        known = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
        raise ValueError(f"make_host: unknown dm_control task {name!r}; known: {', '.join(known)}")
    return FlatObservation(suite.load(domain, task, task_kwargs={"random": seed}))
