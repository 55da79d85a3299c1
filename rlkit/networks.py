"""Networks shared by the agents (flax.linen, orthogonal initialization): a torso (``rlkit.torsos.Encoder``
then an MLP) and policy, value and Q heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlkit.initializers import orthogonal
from rlkit.torsos import Encoder

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu, "swish": nn.swish}


def activation_fn(name: str):
    """The activation called ``name``; raises a ValueError naming the allowed ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: {name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _dense(features: int, scale: float = np.sqrt(2)) -> nn.Dense:
    return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros)


class NoisyDense(nn.Module):
    """A dense layer with learned, factorised Gaussian noise on its weights and bias.

    Fortunato et al., "Noisy Networks for Exploration", 2018 (https://arxiv.org/abs/1706.10295):
    ``y = x (mu_w + sigma_w * f(e_in) f(e_out)^T) + mu_b + sigma_b * f(e_out)`` with
    ``f(e) = sign(e) sqrt(|e|)``, ``e`` standard normal from the "noise" rng stream, one draw per
    call for the whole batch; ``sigma`` starts at ``sigma0 / sqrt(inputs)``. With ``noise=False``
    the layer is its mean (``mu``), which is how a noisy network is evaluated greedily.
    """

    features: int
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, noise: bool) -> jax.Array:
        inputs = x.shape[-1]
        bound = 1.0 / np.sqrt(inputs)
        uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)  # noqa: E731
        sigma = lambda key, shape: jnp.full(shape, self.sigma0 * bound, jnp.float32)  # noqa: E731
        mu_kernel = self.param("mu_kernel", uniform, (inputs, self.features))
        mu_bias = self.param("mu_bias", uniform, (self.features,))
        sigma_kernel = self.param("sigma_kernel", sigma, (inputs, self.features))
        sigma_bias = self.param("sigma_bias", sigma, (self.features,))
        mean = x @ mu_kernel + mu_bias
        if not noise:
            return mean
        in_key, out_key = jax.random.split(self.make_rng("noise"))
        scaled = lambda e: jnp.sign(e) * jnp.sqrt(jnp.abs(e))  # noqa: E731
        e_in, e_out = scaled(jax.random.normal(in_key, (inputs,))), scaled(jax.random.normal(out_key, (self.features,)))
        # x (sigma * e_in e_out^T) = ((x * e_in) sigma) * e_out: no [inputs, features] noise matrix.
        return mean + ((x * e_in) @ sigma_kernel) * e_out + sigma_bias * e_out


def _output_layer(h: jax.Array, features: int, noisy: bool, sigma0: float, noise: bool) -> jax.Array:
    """A Q-network's output layer: orthogonal dense, or ``NoisyDense`` for a noisy network."""
    return NoisyDense(features, sigma0)(h, noise) if noisy else _dense(features, 1.0)(h)


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


def _torso(module: nn.Module, obs: jax.Array, layer_norm: bool = False) -> jax.Array:
    """``module``'s torso on ``obs``: its ``Encoder`` (``torso``, ``observation_ndim``), then its ``MLP``
    (``hidden_sizes``, ``activation``). Called inside ``module``'s compact ``__call__``."""
    features = Encoder(module.torso, module.observation_ndim)(obs)
    return MLP(module.hidden_sizes, module.activation, layer_norm)(features)


class CategoricalActorCritic(nn.Module):
    """Separate policy and value torsos; returns (logits, value); ``value(obs)`` runs the critic alone."""

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"
    observation_ndim: int = 1

    def setup(self):
        self.actor_encoder = Encoder(self.torso, self.observation_ndim)
        self.actor = MLP(self.hidden_sizes, self.activation)
        self.policy_head = _dense(self.num_actions, 0.01)
        self.critic_encoder = Encoder(self.torso, self.observation_ndim)
        self.critic = MLP(self.hidden_sizes, self.activation)
        self.value_head = _dense(1, 1.0)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.policy_head(self.actor(self.actor_encoder(obs))), self.value(obs)

    def value(self, obs: jax.Array) -> jax.Array:
        return jnp.squeeze(self.value_head(self.critic(self.critic_encoder(obs))), -1)


class GaussianActorCritic(nn.Module):
    """Separate policy and value torsos for continuous actions; returns (mean, log_std, value).

    ``log_std`` is one learned vector, independent of the state; ``value(obs)`` runs the critic alone.
    """

    action_size: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    torso: str = "mlp"
    observation_ndim: int = 1

    def setup(self):
        self.actor_encoder = Encoder(self.torso, self.observation_ndim)
        self.actor = MLP(self.hidden_sizes, self.activation)
        self.mean_head = _dense(self.action_size, 0.01)
        self.log_std = self.param("log_std", lambda _, shape: jnp.full(shape, self.init_log_std), (self.action_size,))
        self.critic_encoder = Encoder(self.torso, self.observation_ndim)
        self.critic = MLP(self.hidden_sizes, self.activation)
        self.value_head = _dense(1, 1.0)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        return self.mean_head(self.actor(self.actor_encoder(obs))), self.log_std, self.value(obs)

    def value(self, obs: jax.Array) -> jax.Array:
        return jnp.squeeze(self.value_head(self.critic(self.critic_encoder(obs))), -1)


class QNetwork(nn.Module):
    """Action values from a torso (``Encoder`` then an MLP); with ``dueling`` a value + advantage head
    (Wang et al., 2016).

    ``noisy``: the output layers are ``NoisyDense`` (noise drawn when called with ``noise=True``).
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "relu"
    dueling: bool = False
    layer_norm: bool = False
    noisy: bool = False
    sigma0: float = 0.5
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, noise: bool = False) -> jax.Array:
        h = _torso(self, obs, self.layer_norm)
        if not self.dueling:
            return _output_layer(h, self.num_actions, self.noisy, self.sigma0, noise)
        value = _output_layer(h, 1, self.noisy, self.sigma0, noise)
        advantage = _output_layer(h, self.num_actions, self.noisy, self.sigma0, noise)
        return value + advantage - jnp.mean(advantage, axis=-1, keepdims=True)


class CategoricalActor(nn.Module):
    """Action logits ``[..., num_actions]`` from a torso (``Encoder`` then an MLP): a softmax policy (behaviour
    cloning, IQL)."""

    num_actions: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return _dense(self.num_actions, 0.01)(_torso(self, obs))


class DistributionalQNetwork(nn.Module):
    """``num_atoms`` outputs per action, ``[..., num_actions, num_atoms]``: C51 logits or QR-DQN quantiles.

    With ``dueling`` a value + advantage head per atom (as in Rainbow, Hessel et al., 2018);
    ``noisy`` as in ``QNetwork``.
    """

    num_actions: int
    num_atoms: int
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "relu"
    dueling: bool = False
    layer_norm: bool = False
    noisy: bool = False
    sigma0: float = 0.5
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, noise: bool = False) -> jax.Array:
        h = _torso(self, obs, self.layer_norm)
        shape = (*h.shape[:-1], self.num_actions, self.num_atoms)
        out = _output_layer(h, self.num_actions * self.num_atoms, self.noisy, self.sigma0, noise).reshape(shape)
        if not self.dueling:
            return out
        value = _output_layer(h, self.num_atoms, self.noisy, self.sigma0, noise)[..., None, :]
        return value + out - jnp.mean(out, axis=-2, keepdims=True)


class SquashedGaussianActor(nn.Module):
    """A diagonal Gaussian policy head for SAC; returns ``(mean, log_std)`` before the tanh squash.

    ``log_std`` is bounded smoothly to ``[log_std_min, log_std_max]`` (a rescaled tanh).
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = _torso(self, obs)
        mean = _dense(self.action_dim, 0.01)(h)
        log_std = jnp.tanh(_dense(self.action_dim, 0.01)(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1.0)
        return mean, log_std


class GaussianActor(nn.Module):
    """A Gaussian policy with a ``tanh`` mean in ``[-1, 1]`` and one learned, state-independent log-std (IQL's).

    Returns ``(mean, log_std)``, ``log_std`` clipped to ``[log_std_min, log_std_max]`` and broadcast to the mean.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = jnp.tanh(_dense(self.action_dim, 0.01)(_torso(self, obs)))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.broadcast_to(jnp.clip(log_std, self.log_std_min, self.log_std_max), mean.shape)


class DeterministicActor(nn.Module):
    """A deterministic policy for DDPG and TD3: ``tanh`` of an MLP head, in ``[-1, 1]``."""

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        h = _torso(self, obs)
        return jnp.tanh(_dense(self.action_dim, 0.01)(h))


class ContinuousQNetwork(nn.Module):
    """``Q(s, a)`` for continuous actions: an MLP over the observation's features (its ``Encoder``) and the
    action, concatenated.

    With ``num_atoms`` > 0, logits ``[..., num_atoms]`` of a categorical return distribution (D4PG).
    """

    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    num_atoms: int = 0
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        h = MLP(self.hidden_sizes, self.activation)(
            jnp.concatenate([Encoder(self.torso, self.observation_ndim)(obs), action], axis=-1)
        )
        if self.num_atoms:
            return _dense(self.num_atoms, 1.0)(h)
        return jnp.squeeze(_dense(1, 1.0)(h), -1)


class ActorAndCritic(NamedTuple):
    """An off-policy agent's actor and critic for bounded continuous actions (SAC, TD3, MPO), and the
    bounds its actions in ``[-1, 1]`` map to (``center + half * action``)."""

    actor: nn.Module
    critic: nn.Module
    center: np.ndarray
    half: np.ndarray

    def critics(self, critic_params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """Every critic's output ``[num_critics, B, ...]``, for critic parameters stacked on a leading axis."""
        return jax.vmap(self.critic.apply, in_axes=(0, None, None))(critic_params, obs, action)

    def unit_action(self, env_action: jax.Array) -> jax.Array:
        """An environment action in ``[-1, 1]`` units."""
        return (env_action - self.center) / self.half

    def env_action(self, action: jax.Array) -> jax.Array:
        """An action in ``[-1, 1]`` units in the environment's bounds."""
        return self.center + self.half * action


def _recurrent_core(kind: str, size: int) -> nn.RNNCellBase:
    """A GRU or LSTM cell with rlkit's orthogonal recurrent kernel (safe to vmap over seeds)."""
    cells = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}
    if kind not in cells:
        raise ValueError(f"core: {kind!r} is not one of {sorted(cells)}")
    return cells[kind](size, recurrent_kernel_init=orthogonal(1.0))


def zero_memory(kind: str, size: int, batch_size: int):
    """The recurrent state at an episode start: ``[batch, size]`` for a GRU, a pair of them for an LSTM."""
    zeros = jnp.zeros((batch_size, size), jnp.float32)
    return (zeros, zeros) if kind == "lstm" else zeros


class RecurrentActorCritic(nn.Module):
    """One step of a torso (``Encoder`` then an MLP), a recurrent core and policy and value heads.

    ``(memory, obs) -> (memory, policy_output, value)``: ``policy_output`` is logits, or for
    ``continuous`` a ``(mean, log_std)`` pair (a learned, state-independent log-std).
    """

    num_actions: int
    memory_size: int = 128
    hidden_sizes: Sequence[int] = (128,)
    activation: str = "tanh"
    core: str = "gru"
    continuous: bool = False
    init_log_std: float = 0.0
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, memory, obs: jax.Array):
        act = activation_fn(self.activation)
        memory, h = _recurrent_core(self.core, self.memory_size)(memory, _torso(self, obs))
        policy = _dense(self.num_actions, 0.01)(act(_dense(self.memory_size)(h)))
        value = jnp.squeeze(_dense(1, 1.0)(act(_dense(self.memory_size)(h))), -1)
        if self.continuous:
            log_std = self.param("log_std", lambda _, shape: jnp.full(shape, self.init_log_std), (self.num_actions,))
            policy = (policy, jnp.broadcast_to(log_std, policy.shape))
        return memory, policy, value


class RecurrentQNetwork(nn.Module):
    """One step of a torso (``Encoder`` then an MLP), an LSTM (or GRU) core and a Q head:
    ``(memory, obs) -> (memory, q)``.

    With ``dueling`` a value + advantage head (Wang et al., 2016), as in R2D2.
    """

    num_actions: int
    memory_size: int = 128
    hidden_sizes: Sequence[int] = (128,)
    activation: str = "relu"
    core: str = "lstm"
    dueling: bool = False
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, memory, obs: jax.Array):
        x = _torso(self, obs)
        memory, h = _recurrent_core(self.core, self.memory_size)(memory, x)
        if not self.dueling:
            return memory, _dense(self.num_actions, 1.0)(h)
        value = _dense(1, 1.0)(h)
        advantage = _dense(self.num_actions, 1.0)(h)
        return memory, value + advantage - jnp.mean(advantage, axis=-1, keepdims=True)


def unroll(step, memory, obs: jax.Array, starts: jax.Array, fresh):
    """Run ``step(memory, obs_t) -> (memory, outputs)`` over ``obs [T, B, ...]`` from ``memory``.

    Where ``starts [T, B]`` is True the memory restarts from ``fresh`` first (an episode began), as
    the loop restarted it while acting. Returns ``(outputs, memory_after)``, each stacked over time.
    """

    def body(memory, inputs):
        obs_t, start_t = inputs
        memory = jax.tree.map(lambda f, m: jnp.where(start_t.reshape(-1, *[1] * (m.ndim - 1)), f, m), fresh, memory)
        memory, outputs = step(memory, obs_t)
        return memory, (outputs, memory)

    _, (outputs, memory_after) = jax.lax.scan(body, memory, (obs, starts))
    return outputs, memory_after
