"""A tiny gymnax environment whose episodes end in a known way.

Observation ``[position, time]``. Action 1 moves the position up by one, action 0
does nothing; every step pays reward 1. Reaching position 3 *terminates*; the
time limit of 5 steps *truncates*. So "always 1" terminates after 3 steps and
"always 0" is truncated after 5.
"""

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ToyState(environment.EnvState):
    position: jax.Array
    time: jax.Array


@struct.dataclass
class ToyParams(environment.EnvParams):
    max_steps_in_episode: int = 5
    goal: int = 3


class ToyChain(environment.Environment):
    @property
    def default_params(self):
        return ToyParams()

    def step_env(self, key, state, action, params):
        state = ToyState(position=state.position + action, time=state.time + 1)
        terminated = state.position >= params.goal
        return self.get_obs(state), state, jnp.float32(1.0), terminated, {}

    def reset_env(self, key, params):
        state = ToyState(position=jnp.int32(0), time=jnp.int32(0))
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jnp.stack([state.position, state.time]).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 10.0, (2,), jnp.float32)
