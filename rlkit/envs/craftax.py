"""Craftax (Matthews et al., 2024, https://arxiv.org/abs/2402.16801) behind gymnax's interface, for ``DeviceEnv``.

``rlkit.make_env("craftax:Craftax-Classic-Symbolic-v1")`` (or ``craftax:Craftax-Symbolic-v1``). Craftax's own
environments end an episode with one ``done`` that mixes the time limit with death; this adapter wraps the
environment without auto-reset and splits them: ``terminated`` is death (or lava), the time limit is
``is_truncated`` (``max_steps_in_episode``, Craftax's ``max_timesteps``), so a truncation bootstraps from
the final observation as on every other environment. gymnax's ``step`` adds the auto-reset.

Needs the ``craftax`` extra (``pip install 'rlkit[craftax]'``; the core world has it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rlkit.envs.suite import NEVER, require, step_limit

GAMES = ("Craftax-Classic-Symbolic-v1", "Craftax-Symbolic-v1")
# DeviceEnv.step_batch's default: one new world per 16 environments each step. Generating a world costs
# more than many steps, and gymnax's auto-reset would generate one for every environment every step.
RESET_RATIO = 16


@struct.dataclass
class CraftaxParams:
    """Craftax's parameters (its time limit lifted) and the episode's step limit."""

    inner: Any
    max_steps_in_episode: int


class Craftax(environment.Environment):
    """One Craftax game, ``terminated`` (death) and ``truncated`` (time limit) apart."""

    def __init__(self, game: str):
        from craftax.craftax_env import make_craftax_env_from_name

        super().__init__()
        self.game = game
        self.inner = make_craftax_env_from_name(game, auto_reset=False)

    @property
    def default_params(self) -> CraftaxParams:
        params = self.inner.default_params
        return CraftaxParams(params.replace(max_timesteps=NEVER), int(params.max_timesteps))

    def step_env(self, key: jax.Array, state: Any, action: jax.Array, params: CraftaxParams):
        obs, state, reward, terminated, _ = self.inner.step_env(key, state, action, params.inner)
        return obs, state, reward, terminated, {}  # DeviceEnv casts the reward to float32

    def reset_env(self, key: jax.Array, params: CraftaxParams):
        return self.inner.reset_env(key, params.inner)

    def is_truncated(self, state: Any, params: CraftaxParams) -> jax.Array:
        return state.timestep >= params.max_steps_in_episode

    def action_space(self, params: CraftaxParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.inner.num_actions)

    def observation_space(self, params: CraftaxParams) -> spaces.Box:
        shape = tuple(self.inner.observation_space(params.inner).shape)
        return spaces.Box(0.0, 1.0, shape, jnp.float32)

    @property
    def name(self) -> str:
        return self.game


def make(game: str, max_steps_in_episode: int | None = None) -> tuple[Craftax, CraftaxParams]:
    """The Craftax ``game`` (one of ``GAMES``) and its parameters (Craftax's step limit unless
    ``max_steps_in_episode``); a one-line error without craftax."""
    require("craftax", f"craftax:{game}", "craftax")
    env = Craftax(game)
    params = env.default_params
    return env, params.replace(max_steps_in_episode=step_limit(params.max_steps_in_episode, max_steps_in_episode))
