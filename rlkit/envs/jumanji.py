"""Jumanji (Bonnet et al., 2024, https://arxiv.org/abs/2306.09884) behind gymnax's interface.

``rlkit.make_env("jumanji:Snake-v1")`` (any id in ``GAMES``). Jumanji ends an episode at its time
limit as a termination (discount 0); this adapter lifts that limit and keeps it itself, as a
truncation that bootstraps. ``terminated`` is every other end (Snake hits itself or a wall, Maze
reaches its target).

Observations: Jumanji's named fields without ``step_count`` and ``action_mask``. A single field keeps
its shape (Snake's grid is a 12x12x5 image; a 2-D board gets one channel), several are joined into
one float vector (Maze: positions and walls). Action masks are not applied: the agent learns what an
action a mask rules out does (Snake dies of it; in a Maze it stays where it is).

Needs the ``jumanji`` extra (``pip install 'rlkit[jumanji]'``; the core world has it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from gymnax.environments import environment, spaces

from rlkit.envs.suite import NEVER, StepLimit, TimedState, require, step_limit

GAMES = ("Snake-v1", "Maze-v0")  # the ones with a time limit the adapter can lift
HIDDEN_FIELDS = ("step_count", "action_mask")


def _observation(observation: Any) -> jax.Array:
    """One float32 array from a Jumanji observation (see the module docstring)."""
    fields = {k: v for k, v in observation._asdict().items() if k not in HIDDEN_FIELDS}
    leaves = jax.tree.leaves(fields)
    if len(leaves) == 1:
        (leaf,) = leaves
        leaf = leaf[..., None] if leaf.ndim == 2 else leaf
        return jnp.asarray(leaf, jnp.float32)
    return jnp.concatenate([jnp.ravel(jnp.asarray(x, jnp.float32)) for x in leaves])


class Jumanji(environment.Environment):
    """One Jumanji environment, ``terminated`` and ``truncated`` (time limit) apart."""

    def __init__(self, game: str):
        import jumanji

        super().__init__()
        self.game = game
        self.time_limit = int(jumanji.make(game).time_limit)
        self.inner = jumanji.make(game, time_limit=NEVER)
        self.action_count = int(self.inner.action_spec.num_values)

    @property
    def default_params(self) -> StepLimit:
        return StepLimit(self.time_limit)

    def step_env(self, key: jax.Array, state: TimedState, action: jax.Array, params: StepLimit):
        inner, timestep = self.inner.step(state.inner, action)
        reward = jnp.asarray(timestep.reward, jnp.float32)
        return _observation(timestep.observation), TimedState(inner, state.time + 1), reward, timestep.last(), {}

    def reset_env(self, key: jax.Array, params: StepLimit):
        inner, timestep = self.inner.reset(key)
        return _observation(timestep.observation), TimedState(inner, jnp.zeros((), jnp.int32))

    def action_space(self, params: StepLimit | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.action_count)

    def observation_space(self, params: StepLimit) -> spaces.Box:
        shape = jax.eval_shape(lambda key: self.reset_env(key, params)[0], jax.random.key(0)).shape
        return spaces.Box(-jnp.inf, jnp.inf, shape, jnp.float32)

    @property
    def name(self) -> str:
        return self.game


def make(game: str, max_steps_in_episode: int | None = None) -> tuple[Jumanji, StepLimit]:
    """The Jumanji environment ``game`` (one of ``GAMES``), episodes of ``max_steps_in_episode``
    steps (Jumanji's own time limit unless given); a one-line error without jumanji."""
    require("jumanji", f"jumanji:{game}", "jumanji")
    env = Jumanji(game)
    return env, StepLimit(step_limit(env.time_limit, max_steps_in_episode))
