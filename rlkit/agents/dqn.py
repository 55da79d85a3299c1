"""Deep Q-Networks with double Q-learning, a dueling head, n-step returns and a target network.

Mnih et al., "Human-level control through deep reinforcement learning", 2015;
van Hasselt et al., "Deep Reinforcement Learning with Double Q-learning", 2016;
Wang et al., "Dueling Network Architectures for Deep RL", 2016. Losses from rlax.

``noisy`` replaces the output layers by noisy ones (Fortunato et al., "Noisy Networks for
Exploration", 2018), which explore by learned weight noise; ``rlkit.agents.rainbow`` combines
all of these with prioritized replay.

``distribution`` switches to a distributional value: "categorical" is C51 (Bellemare
et al., "A Distributional Perspective on Reinforcement Learning", 2017), "quantile" is
QR-DQN (Dabney et al., "Distributional Reinforcement Learning with Quantile Regression",
2018); ``rlkit.agents.c51`` and ``rlkit.agents.qrdqn`` are this module with their defaults.
Actions are greedy in the expected value.

``update`` learns from a batch of (n-step) ``Transition`` whose ``discount_t``
already holds ``gamma ** n`` (0 at termination, so truncation bootstraps).
Exploration is epsilon-greedy, epsilon decaying linearly with the environment
steps learned from.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from rlkit import config as cfg
from rlkit.networks import DistributionalQNetwork, QNetwork, activation_fn
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import (
    ActOutput,
    Agent,
    EnvSpec,
    ExperienceSpec,
    Transition,
    epsilon_greedy,
    split_weights,
    weighted_mean,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """DQN settings; names follow rejax where they overlap.

    The defaults solve CartPole-v1 on every seed we tried within 5e5 steps (a final greedy
    return of 500); the smaller 120-84 network of CleanRL and PureJaxRL learned too, but its
    final greedy policy collapsed on some seeds.

    ``target_update_freq`` and ``epsilon_decay_steps`` count environment steps
    (all environments together); ``learning_starts`` transitions are collected
    with a uniform policy before the first update.

    ``distribution``: "none" (scalar Q-values), "categorical" (``num_atoms`` atoms
    evenly spaced on [``v_min``, ``v_max``]) or "quantile" (``num_atoms`` quantiles,
    Huber threshold ``huber_kappa``).
    """

    num_envs: int = 10
    num_steps: int = 4  # env steps per env between updates
    buffer_size: int = 50_000
    batch_size: int = 256
    learning_starts: int = 10_000
    learning_rate: float = 1e-3
    anneal_lr: bool = True  # linearly to 0 over the run (needs the run's total_steps)
    gamma: float = 0.99
    n_step: int = 1
    double_q: bool = True
    dueling: bool = False
    target_update_freq: int = 500
    tau: float = 1.0  # 1.0: copy the online weights; < 1: Polyak averaging
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 100_000
    max_grad_norm: float = 10.0
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet
    distribution: str = "none"  # "none" | "categorical" (C51) | "quantile" (QR-DQN)
    num_atoms: int = 51  # atoms (categorical) or quantiles (quantile)
    v_min: float = -10.0  # categorical support
    v_max: float = 10.0
    huber_kappa: float = 1.0  # quantile Huber loss threshold
    prioritized: bool = False  # proportional prioritized replay (Schaul et al., 2016), |TD error| priorities
    priority_exponent: float = 0.6
    importance_exponent: float = 0.4
    noisy: bool = False  # noisy output layers (Fortunato et al., 2018): exploration by learned weight noise
    noise_scale: float = 0.5  # sigma_0 of the noisy layers

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "batch_size", "n_step", "target_update_freq"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        cfg.check_divides("num_envs", self.num_envs, "buffer_size", self.buffer_size)
        if self.buffer_size // self.num_envs < self.n_step + 1:
            raise ValueError(
                f"buffer_size={self.buffer_size} holds too few steps per env for n_step={self.n_step}"
            )
        if self.learning_starts > self.buffer_size:
            raise ValueError(
                f"learning_starts={self.learning_starts} must be <= buffer_size={self.buffer_size}"
            )
        cfg.check_non_negative("learning_starts", self.learning_starts)
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("tau", self.tau, closed_low=False)
        cfg.check_unit_interval("epsilon_start", self.epsilon_start)
        cfg.check_unit_interval("epsilon_end", self.epsilon_end)
        cfg.check_positive("epsilon_decay_steps", self.epsilon_decay_steps)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution: {self.distribution!r} is not one of {list(DISTRIBUTIONS)}")
        if self.distribution != "none" and self.num_atoms < 2:
            raise ValueError(f"num_atoms must be >= 2, got {self.num_atoms}")
        cfg.check_positive("v_max - v_min", self.v_max - self.v_min)
        cfg.check_positive("huber_kappa", self.huber_kappa)
        cfg.check_non_negative("noise_scale", self.noise_scale)
        cfg.check_priorities(self)


DISTRIBUTIONS = ("none", "categorical", "quantile")


class DQNState(NamedTuple):
    params: dict
    target_params: dict
    opt_state: optax.OptState
    grad_steps: jax.Array  # gradient steps taken


def experience(config: Config) -> ExperienceSpec:
    """Uniform replay of n-step transitions, one update per collected batch."""
    return ExperienceSpec(
        kind="transitions",
        num_envs=config.num_envs,
        rollout_length=config.num_steps,
        batch_size=config.batch_size,
        buffer_size=config.buffer_size,
        min_size=max(config.learning_starts, config.batch_size),
        n_step=config.n_step,
        gamma=config.gamma,
        **cfg.priority_settings(config),
    )


QRegularizer = Callable[[jax.Array, jax.Array], jax.Array]  # (q_tm1 [B, A], action_tm1 [B]) -> [B]


def require_discrete_actions(config, spec: EnvSpec, alternatives: str = "sac, td3 or ppo") -> None:
    """A one-line ValueError unless ``spec``'s actions are discrete, naming ``config``'s agent and the
    ``alternatives`` that fit the environment."""
    if spec.action_kind != "discrete":
        agent_name = type(config).__module__.rsplit(".", 1)[-1]  # dqn, c51, qrdqn, rainbow, cql
        raise ValueError(
            f"agent {agent_name}: needs a discrete action space, but the environment's is "
            f"{spec.action_kind} (shape ({spec.num_actions},)); use {alternatives} for it"
        )


def q_network(config: Config, spec: EnvSpec) -> QNetwork | DistributionalQNetwork:
    """Scalar action values, or per-action atoms (categorical) or quantiles (quantile)."""
    noisy = {"noisy": config.noisy, "sigma0": config.noise_scale, **torso_fields(config.torso, spec)}
    if config.distribution == "none":
        return QNetwork(spec.num_actions, config.hidden_sizes, config.activation, config.dueling, **noisy)
    return DistributionalQNetwork(
        spec.num_actions, config.num_atoms, config.hidden_sizes, config.activation, config.dueling, **noisy
    )


def forward(network, params, obs: jax.Array, noise_key: jax.Array | None = None) -> jax.Array:
    """The network's output; a noisy network draws its noise from ``noise_key`` (None: its mean)."""
    if noise_key is None:
        return network.apply(params, obs)
    return network.apply(params, obs, noise=True, rngs={"noise": noise_key})


def atoms(config: Config) -> jax.Array:
    """The categorical support: ``num_atoms`` values evenly spaced on [v_min, v_max]."""
    return jnp.linspace(config.v_min, config.v_max, config.num_atoms)


def q_values(config: Config, output: jax.Array) -> jax.Array:
    """Expected action values ``[..., num_actions]`` from the network's output."""
    if config.distribution == "categorical":
        return jnp.sum(jax.nn.softmax(output) * atoms(config), axis=-1)
    if config.distribution == "quantile":
        return jnp.mean(output, axis=-1)
    return output


def distributional_loss(config: Config, out_tm1, out_t_target, out_t_selector, batch: Transition) -> jax.Array:
    """Per-transition C51 cross-entropy or QR-DQN quantile Huber loss ``[B]`` (rlax)."""
    a_tm1, r_t, d_t = batch.action_tm1, batch.reward_t, batch.discount_t
    if config.distribution == "categorical":
        support = atoms(config)
        if config.double_q:
            return jax.vmap(rlax.categorical_double_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0, 0))(
                support, out_tm1, a_tm1, r_t, d_t, support, out_t_target, q_values(config, out_t_selector)
            )
        return jax.vmap(rlax.categorical_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0))(
            support, out_tm1, a_tm1, r_t, d_t, support, out_t_target
        )
    # rlax wants [quantiles, actions] and branches in Python on its Huber threshold, so
    # pass kappa = 1 on values scaled by 1 / kappa: kappa**2 * L_1(x / kappa) = L_kappa(x).
    kappa = config.huber_kappa
    taus = (jnp.arange(config.num_atoms) + 0.5) / config.num_atoms  # quantile midpoints
    loss = jax.vmap(rlax.quantile_q_learning, in_axes=(0, None, 0, 0, 0, 0, 0, None))(
        jnp.swapaxes(out_tm1, -1, -2) / kappa, taus, a_tm1, r_t / kappa, d_t,
        jnp.swapaxes(out_t_selector, -1, -2), jnp.swapaxes(out_t_target, -1, -2) / kappa, 1.0,
    )
    return kappa**2 * loss


def q_loss(params, target_params, batch: Transition, weights, key, *, config: Config, network,
           q_regularizer: QRegularizer | None = None) -> tuple[jax.Array, dict]:
    """The batch's (importance-weighted) mean TD or distributional loss, and metrics with the priorities."""
    # A noisy network draws independent noise for the online, target and selecting passes.
    keys = list(jax.random.split(key, 3)) if config.noisy else [None] * 3
    out_tm1 = forward(network, params, batch.obs_tm1, keys[0])
    out_t_target = forward(network, target_params, batch.obs_t, keys[1])
    out_t_selector = forward(network, params, batch.obs_t, keys[2]) if config.double_q else out_t_target
    q_tm1 = q_values(config, out_tm1)
    if config.distribution != "none":
        per_item = distributional_loss(config, out_tm1, out_t_target, out_t_selector, batch)
        priorities = per_item  # the distributional loss itself, as in Rainbow
    else:
        transition = (q_tm1, batch.action_tm1, batch.reward_t, batch.discount_t, out_t_target)
        if config.double_q:
            td = jax.vmap(rlax.double_q_learning)(*transition, out_t_selector)
        else:
            td = jax.vmap(rlax.q_learning)(*transition)
        per_item, priorities = 0.5 * jnp.square(td), jnp.abs(td)
    metrics = {}
    if q_regularizer is not None:
        penalty = q_regularizer(q_tm1, batch.action_tm1)
        per_item = per_item + penalty
        metrics["penalty"] = jnp.mean(penalty)
    loss = weighted_mean(per_item, weights)
    metrics.update(loss=loss, q_mean=jnp.mean(q_tm1))
    if config.prioritized:
        metrics["priorities"] = jax.lax.stop_gradient(priorities) + 1e-6
    return loss, metrics


def env_steps_per_update(config: Config) -> int:
    """Environment steps (all environments together) between two updates."""
    return config.num_envs * config.num_steps


def make_optimizer(config: Config, total_steps: int | None) -> optax.GradientTransformation:
    """Adam after global-norm clipping; with ``anneal_lr``, the rate falls linearly to 0 over the run's updates."""
    learning_rate = config.learning_rate
    if config.anneal_lr and total_steps:
        updates = max(1, (total_steps - config.learning_starts) // env_steps_per_update(config))
        learning_rate = optax.linear_schedule(config.learning_rate, 0.0, updates)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))


def epsilon_schedule(config: Config) -> optax.Schedule:
    """Exploration's epsilon by gradient steps taken: linear from ``epsilon_start`` to ``epsilon_end``."""
    decay_updates = max(1, config.epsilon_decay_steps // env_steps_per_update(config))
    return optax.linear_schedule(config.epsilon_start, config.epsilon_end, decay_updates)


def refresh_target(config: Config, grad_steps: jax.Array, params, target_params):
    """Every ``target_update_freq`` environment steps: the online weights (``tau = 1``) or a Polyak step."""
    refresh = grad_steps % max(1, config.target_update_freq // env_steps_per_update(config)) == 0
    return jax.tree.map(
        lambda online, target: jnp.where(refresh, config.tau * online + (1 - config.tau) * target, target),
        params, target_params,
    )


def make(
    config: Config, spec: EnvSpec, total_steps: int | None = None, q_regularizer: QRegularizer | None = None
) -> Agent:
    """Build DQN for ``spec`` (discrete actions only); ``total_steps`` sets the annealing horizon.

    ``q_regularizer`` adds a per-transition term of the online action values to the loss (CQL's
    conservative penalty, ``rlkit.agents.cql``).
    """
    require_discrete_actions(config, spec)
    network = q_network(config, spec)
    optimizer = make_optimizer(config, total_steps)
    epsilon = epsilon_schedule(config)
    loss_grad = jax.grad(
        functools.partial(q_loss, config=config, network=network, q_regularizer=q_regularizer), has_aux=True
    )

    def init(key):
        params = network.init(key, jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return DQNState(params, params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        noise_key = None
        if config.noisy and not deterministic:  # explore with fresh weight noise; evaluate the mean network
            key, noise_key = jax.random.split(key)
        greedy = jnp.argmax(q_values(config, forward(network, state.params, observation, noise_key)), axis=-1)
        if deterministic:
            return ActOutput(greedy, carry, {})
        return ActOutput(epsilon_greedy(key, greedy, epsilon(state.grad_steps), spec.num_actions), carry, {})

    def update(state, batch, key):
        batch, weights = split_weights(batch)
        grads, metrics = loss_grad(state.params, state.target_params, batch, weights, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = state.grad_steps + 1
        target_params = refresh_target(config, count, params, state.target_params)
        metrics["epsilon"] = epsilon(count)
        return DQNState(params, target_params, opt_state, count), metrics

    return Agent(init=init, act=act, update=update)
