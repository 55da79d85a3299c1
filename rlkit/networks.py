"""Torsos and heads shared by the agents (flax.linen, orthogonal initialization)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "swish": nn.swish}


def activation_fn(name: str):
    """The activation called ``name``; raises a ValueError naming the allowed ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: {name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _dense(features: int, scale: float = np.sqrt(2)) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.orthogonal(scale),
        bias_init=nn.initializers.zeros,
    )


class MLP(nn.Module):
    """Dense layers with an activation after each (optionally LayerNorm before it)."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        for size in self.hidden_sizes:
            x = _dense(size)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return x


class CategoricalActorCritic(nn.Module):
    """Separate policy and value MLPs; returns (logits, value)."""

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = _dense(self.num_actions, 0.01)(MLP(self.hidden_sizes, self.activation)(obs))
        value = _dense(1, 1.0)(MLP(self.hidden_sizes, self.activation)(obs))
        return logits, jnp.squeeze(value, -1)


class QNetwork(nn.Module):
    """Action values from an MLP torso; with ``dueling`` a value + advantage head (Wang et al., 2016)."""

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "relu"
    dueling: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        h = MLP(self.hidden_sizes, self.activation)(obs)
        if not self.dueling:
            return _dense(self.num_actions, 1.0)(h)
        value = _dense(1, 1.0)(h)
        advantage = _dense(self.num_actions, 1.0)(h)
        return value + advantage - jnp.mean(advantage, axis=-1, keepdims=True)
