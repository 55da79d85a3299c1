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


@jax.custom_batching.custom_vmap
def _orthonormal(matrix: jax.Array) -> jax.Array:
    """The Q of ``matrix``'s QR decomposition, signs fixed so that R's diagonal is positive."""
    q, r = jnp.linalg.qr(matrix)
    return q * jnp.sign(jnp.diagonal(r))


@_orthonormal.def_vmap
def _orthonormal_vmap(axis_size, in_batched, matrices):
    # One LAPACK call per matrix, never a batched one: jaxlib's batched CPU QR splits the batch over
    # XLA's thread pool and waits for it, which deadlocked when two such QRs ran at once on a 2-core
    # machine (vmapped seeds initializing two layers side by side).
    return jax.lax.map(_orthonormal, matrices), True


def orthogonal(scale: float = 1.0):
    """Orthogonal initialization (Saxe et al., 2014) for ``[..., out]`` kernels, as flax's
    ``nn.initializers.orthogonal`` draws it, but safe to vmap over seeds on a CPU (see ``_orthonormal``)."""

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = jax.random.normal(key, (cols, rows) if rows < cols else (rows, cols), dtype)
        q = _orthonormal(a)
        return scale * jnp.reshape(q.T if rows < cols else q, shape)

    return init


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


def _padded(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """``x [N, H, W, C]`` padded as XLA pads a "SAME" convolution (output size ``ceil(size / stride)``)."""
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def _patches(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """The ``kernel x kernel`` patches of ``x [N, H, W, C]`` at ``stride``: ``[N, H', W', kernel * kernel * C]``,
    ordered as a ``[kernel, kernel, C, out]`` kernel flattens."""
    rows, cols = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
    return jnp.concatenate([
        x[:, i:i + stride * (rows - 1) + 1:stride, j:j + stride * (cols - 1) + 1:stride, :]
        for i in range(kernel) for j in range(kernel)
    ], axis=-1)


class Conv(nn.Module):
    """A 2-D convolution of ``x [N, height, width, channels]``: kernel ``[k, k, channels, features]``
    (orthogonal initialization), bias, ``VALID`` or ``SAME`` padding.

    On a CPU it runs as patches times the flattened kernel: XLA's CPU convolution inside a
    ``lax.scan`` (the training loop) was about 15x slower than this matmul (0.37 s against 0.025 s
    for one gradient of the MinAtar torso on 2,048 observations). Elsewhere ``lax.conv_general_dilated``.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: str = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", orthogonal(np.sqrt(2)), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if jax.default_backend() != "cpu":
            strides = (self.stride, self.stride)
            layout = ("NHWC", "HWIO", "NHWC")
            y = jax.lax.conv_general_dilated(x, kernel, strides, self.padding, dimension_numbers=layout)
        else:
            x = _padded(x, self.kernel, self.stride) if self.padding == "SAME" else x
            y = _patches(x, self.kernel, self.stride) @ kernel.reshape(-1, self.features)
        return y + bias


def _minatar_cnn(x: jax.Array) -> jax.Array:
    """Young & Tian, "MinAtar", 2019 (https://arxiv.org/abs/1903.03176): one 3x3 convolution, 16 channels."""
    return nn.relu(Conv(16, 3)(x))


def _nature_cnn(x: jax.Array) -> jax.Array:
    """Mnih et al., "Human-level control through deep RL", 2015: 8x8/4 (32), 4x4/2 (64), 3x3/1 (64)."""
    for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        x = nn.relu(Conv(features, kernel, stride)(x))
    return x


def _impala_resnet(x: jax.Array) -> jax.Array:
    """Espeholt et al., "IMPALA", 2018 (https://arxiv.org/abs/1802.01561): three stacks (16, 32, 32 channels)
    of a 3x3 convolution, a 3x3/2 max-pool and two residual blocks."""
    for features in (16, 32, 32):
        x = Conv(features, 3, padding="SAME")(x)
        x = nn.max_pool(x, (3, 3), (2, 2), "SAME")
        for _ in range(2):
            h = Conv(features, 3, padding="SAME")(nn.relu(x))
            x = x + Conv(features, 3, padding="SAME")(nn.relu(h))
    return nn.relu(x)


IMAGE_TORSOS = {"minatar_cnn": _minatar_cnn, "nature_cnn": _nature_cnn, "impala_resnet": _impala_resnet}
TORSOS = ("mlp", *IMAGE_TORSOS)
# The smallest image (height and width) each image torso's VALID convolutions leave a pixel of.
_SMALLEST_IMAGE = {"minatar_cnn": 3, "nature_cnn": 36, "impala_resnet": 1}


def check_torso(torso: str, observation_shape: tuple[int, ...] | None = None) -> None:
    """Raise a one-line ValueError if ``torso`` is unknown or cannot read ``observation_shape``.

    ``mlp`` reads any shape (it flattens the observation); an image torso needs ``[height, width,
    channels]`` at least as large as its convolutions. ``observation_shape=None`` checks the name only.
    """
    if torso not in TORSOS:
        raise ValueError(f"torso: {torso!r} is not one of {list(TORSOS)}")
    if torso == "mlp" or observation_shape is None:
        return
    smallest = _SMALLEST_IMAGE[torso]
    if len(observation_shape) != 3 or min(observation_shape[:2]) < smallest:
        raise ValueError(
            f"torso: {torso!r} reads images [height, width, channels] of at least {smallest}x{smallest}, "
            f"but the environment's observations have shape {tuple(observation_shape)}; use torso 'mlp' for them"
        )


def torso_fields(torso: str, spec) -> dict:
    """The ``torso`` and ``observation_ndim`` fields of a network for ``spec``'s observations (checked)."""
    check_torso(torso, tuple(spec.observation_shape))
    return {"torso": torso, "observation_ndim": len(spec.observation_shape)}


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


class Encoder(nn.Module):
    """An observation ``[..., *observation_shape]`` as flat features ``[..., features]``.

    ``torso``: ``mlp`` only flattens; an image torso (``minatar_cnn``, ``nature_cnn``,
    ``impala_resnet``) runs its convolutions on ``[..., height, width, channels]`` first.
    ``observation_ndim``: how many trailing axes one observation has (the rest are batch axes).
    """

    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        batch_shape = obs.shape[: obs.ndim - self.observation_ndim]
        if self.torso != "mlp":
            obs = IMAGE_TORSOS[self.torso](obs.reshape(-1, *obs.shape[len(batch_shape):]))
        return obs.reshape(*batch_shape, -1)


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
