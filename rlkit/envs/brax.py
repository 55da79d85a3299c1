"""Brax (Freeman et al., 2021, https://arxiv.org/abs/2106.13281) on MJX physics, behind gymnax's interface.

``rlkit.make_env("brax:inverted_pendulum")`` (any name in ``GAMES``). The adapter steps Brax's raw
environment, not its ``EpisodeWrapper`` or ``AutoResetWrapper``: ``terminated`` is Brax's ``done`` (a
fall, an unhealthy body), the time limit (1,000 steps, Brax's ``episode_length``) is a truncation
that bootstraps, and the final observation is kept (Brax's auto-reset drops it). Actions are in
[-1, 1]; Brax scales them to each actuator's range.

Needs the ``brax`` extra (``pip install 'rlkit[brax]'``; the core world has it).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces

from rlkit.envs.suite import StepLimit, TimedState, require, step_limit

GAMES = (
    "ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_double_pendulum",
    "inverted_pendulum", "pusher", "reacher", "swimmer", "walker2d",
)
BACKENDS = ("mjx", "generalized", "positional", "spring")
EPISODE_LENGTH = 1000  # Brax's training default


def _quiet_get_environment(game: str, backend: str) -> Any:
    """Brax's environment, without the lines mujoco prints about its optional warp backend and Brax's
    warning that points users to MJX (this adapter runs on MJX)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brax import envs

        return envs.get_environment(game, backend=backend)


class Brax(environment.Environment):
    """One Brax task, ``terminated`` (Brax's ``done``) and ``truncated`` (time limit) apart."""

    def __init__(self, game: str, backend: str = "mjx"):
        super().__init__()
        self.game = game
        self.inner = _quiet_get_environment(game, backend)

    @property
    def default_params(self) -> StepLimit:
        return StepLimit(EPISODE_LENGTH)

    def step_env(self, key: jax.Array, state: TimedState, action: jax.Array, params: StepLimit):
        inner = self.inner.step(state.inner, action)
        return inner.obs, TimedState(inner, state.time + 1), inner.reward, inner.done > 0.5, {}

    def reset_env(self, key: jax.Array, params: StepLimit):
        inner = self.inner.reset(key)
        return inner.obs, TimedState(inner, jnp.zeros((), jnp.int32))

    def action_space(self, params: StepLimit | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.inner.action_size,), jnp.float32)

    def observation_space(self, params: StepLimit) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.inner.observation_size,), jnp.float32)

    @property
    def name(self) -> str:
        return self.game


def make(game: str, max_steps_in_episode: int | None = None, backend: str = "mjx") -> tuple[Brax, StepLimit]:
    """The Brax task ``game`` (one of ``GAMES``) on ``backend`` physics, episodes of
    ``max_steps_in_episode`` steps (1,000 unless given); a one-line error without brax."""
    require("brax", f"brax:{game}", "brax")
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not a Brax backend; use one of {', '.join(BACKENDS)}")
    return Brax(game, backend), StepLimit(step_limit(EPISODE_LENGTH, max_steps_in_episode))
