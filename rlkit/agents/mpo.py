"""Maximum a Posteriori Policy Optimisation (MPO) for continuous actions.

Abdolmaleki et al., "Maximum a Posteriori Policy Optimisation", 2018
(https://arxiv.org/abs/1806.06920), with the decoupled mean and covariance constraints of
Abdolmaleki et al., "Relative Entropy Regularized Policy Iteration", 2018. Each update:

- **Critic**: TD on n-step transitions, bootstrapping from the target critic's mean over
  ``num_samples`` actions of the target policy at s'.
- **E-step**: ``num_samples`` actions per state from the target policy, weighted by
  ``softmax(Q / temperature)``; the temperature is a dual variable that keeps the KL between
  this non-parametric policy and the target policy within ``epsilon``.
- **M-step**: the policy maximises the weighted log-likelihood of those actions, its mean and
  its standard deviation fitted separately (each against the other's target value), each
  within a KL bound to the target policy (``epsilon_mean`` per action dimension,
  ``epsilon_stddev``) enforced by its own Lagrange multiplier.

The temperature and both multipliers are learned dual variables in the state (softplus of a
raw parameter), trained with the policy by rlax's ``mpo_loss``. The policy is a diagonal
Gaussian with a ``tanh`` mean; its samples are clipped to the action bounds for the critic and
the environment, and greedy acting takes the mean (with ``random_warmup``, actions are uniform
until the first update). Targets are copied every
``target_update_period`` updates.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from rlkit import config as cfg
from rlkit.agents import sac, td3
from rlkit.networks import ActorAndCritic, activation_fn
from rlkit.torsos import check_torso
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Transition, split_weights


@dataclasses.dataclass(frozen=True)
class Config:
    """MPO settings; the constraint and dual defaults are Acme's."""

    num_envs: int = 1
    num_steps: int = 1  # env steps per env between rounds of updates
    updates_per_step: int = 1
    buffer_size: int = 100_000
    batch_size: int = 256
    learning_starts: int = 5_000
    random_warmup: bool = True  # uniform actions until the first update, as TD3's
    learning_rate: float = 1e-4  # policy and critic
    dual_learning_rate: float = 1e-2  # temperature and Lagrange multipliers
    gamma: float = 0.99
    n_step: int = 5
    num_samples: int = 20  # actions per state in the E-step and the critic's target
    epsilon: float = 0.1  # KL bound of the E-step's non-parametric policy
    epsilon_mean: float = 1e-3  # KL bound of the mean's M-step, per action dimension
    epsilon_stddev: float = 1e-6  # KL bound of the standard deviation's M-step
    init_temperature: float = 1.0  # raw values; each dual variable is softplus(raw)
    init_alpha_mean: float = 1.0
    init_alpha_stddev: float = 10.0
    target_update_period: int = 100  # updates between copies of the target networks
    max_grad_norm: float = 40.0
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet
    prioritized: bool = False
    priority_exponent: float = 0.6
    importance_exponent: float = 0.4

    def __post_init__(self):
        cfg.check_counts(self, ("num_envs", "num_steps", "updates_per_step", "batch_size", "n_step", "num_samples",
                                "target_update_period"))
        cfg.check_replay(self)
        for name in ("learning_rate", "dual_learning_rate", "epsilon", "epsilon_mean", "epsilon_stddev",
                     "max_grad_norm"):
            cfg.check_positive(name, getattr(self, name))
        cfg.check_unit_interval("gamma", self.gamma)
        activation_fn(self.activation)
        check_torso(self.torso)
        cfg.check_priorities(self)


class MPOState(NamedTuple):
    params: dict  # {"actor", "critic", "duals": {"temperature", "alpha_mean", "alpha_stddev"}} (raw duals)
    target_params: dict  # {"actor", "critic"}, copied every target_update_period updates
    opt_state: dict  # {"actor" (the policy and the duals), "critic"}
    grad_steps: jax.Array


def experience(config: Config) -> ExperienceSpec:
    """TD3's replay (the same fields): n-step transitions, ``num_steps * updates_per_step`` updates per rollout."""
    return td3.experience(config)


def gaussian_log_prob(action: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Per-dimension log density of a diagonal Gaussian, ``[..., action_dim]``."""
    return -0.5 * ((action - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)


def gaussian_kl(mean_p, std_p, mean_q, std_q) -> jax.Array:
    """Per-dimension ``KL(p || q)`` of diagonal Gaussians, ``[..., action_dim]``."""
    return jnp.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5


def positive(raw: jax.Array) -> jax.Array:
    """A dual variable (temperature or multiplier) from its raw parameter: softplus, kept above 0."""
    return jax.nn.softplus(raw) + 1e-8


def policy(nets: ActorAndCritic, params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The policy's mean (in ``[-1, 1]``) and standard deviation."""
    mean, log_std = nets.actor.apply(params, obs)
    return jnp.tanh(mean), jnp.exp(log_std)


def sample_actions(nets: ActorAndCritic, params, obs: jax.Array, key, num_samples: int):
    """``num_samples`` actions per state, ``[S, B, A]`` in ``[-1, 1]`` units, and the policy's statistics."""
    mean, std = policy(nets, params, obs)
    raw = mean + std * jax.random.normal(key, (num_samples, *mean.shape))
    return raw, mean, std


def sampled_q_values(nets: ActorAndCritic, critic_params, obs: jax.Array, actions: jax.Array) -> jax.Array:
    """``Q(s, a_j)`` for ``actions [S, B, A]`` (clipped to the bounds), ``[S, B]``."""
    clipped = jnp.clip(actions, -1.0, 1.0)
    return jax.vmap(nets.critic.apply, in_axes=(None, None, 0))(critic_params, obs, clipped)


def networks(config: Config, spec: EnvSpec) -> ActorAndCritic:
    """SAC's actor and critic: MPO reads the actor's outputs as a ``tanh`` mean and a deviation, unsquashed."""
    return sac.networks(config, spec, agent="mpo")


def critic_loss(critic_params, target_params, batch: Transition, weights, key, *, config: Config,
                nets: ActorAndCritic) -> tuple[jax.Array, dict]:
    """TD to the target critic's mean over ``num_samples`` actions of the target policy at s'."""
    next_actions, _, _ = sample_actions(nets, target_params["actor"], batch.obs_t, key, config.num_samples)
    v_t = jnp.mean(sampled_q_values(nets, target_params["critic"], batch.obs_t, next_actions), axis=0)
    q_tm1 = nets.critic.apply(critic_params, batch.obs_tm1, nets.unit_action(batch.action_tm1))
    td = jax.vmap(rlax.td_learning)(q_tm1, batch.reward_t, batch.discount_t, v_t)
    loss = 0.5 * jnp.mean(td**2 if weights is None else weights * td**2)
    metrics = {"loss": loss, "q_mean": jnp.mean(q_tm1)}
    if config.prioritized:
        metrics["priorities"] = jax.lax.stop_gradient(jnp.abs(td)) + 1e-6
    return loss, metrics


def policy_loss(trained, target_params, critic_params, obs, key, *, config: Config,
                nets: ActorAndCritic) -> tuple[jax.Array, dict]:
    """E-step weights from the target policy's samples, then the decoupled M-step, via rlax.

    ``trained``: ``{"actor", "duals"}``, what the policy optimizer steps.
    """
    actions, target_mean, target_std = sample_actions(nets, target_params["actor"], obs, key, config.num_samples)
    q = jax.lax.stop_gradient(sampled_q_values(nets, critic_params, obs, actions))  # [S, B]
    online_mean, online_std = policy(nets, trained["actor"], obs)
    # The mean is fitted with the target's deviation, the deviation with the target's mean.
    log_probs = (jnp.sum(gaussian_log_prob(actions, online_mean, target_std), -1)
                 + jnp.sum(gaussian_log_prob(actions, target_mean, online_std), -1))
    kl_mean = gaussian_kl(target_mean, target_std, online_mean, target_std)  # [B, A]
    kl_stddev = jnp.sum(gaussian_kl(target_mean, target_std, target_mean, online_std), -1)  # [B]
    duals = trained["duals"]
    loss, _ = rlax.mpo_loss(
        log_probs, q,
        temperature_constraint=rlax.LagrangePenalty(duals["temperature"], config.epsilon),
        kl_constraints=[
            (kl_mean, rlax.LagrangePenalty(duals["alpha_mean"], config.epsilon_mean, per_dimension=True)),
            (kl_stddev, rlax.LagrangePenalty(jnp.mean(duals["alpha_stddev"]), config.epsilon_stddev)),
        ],
        projection_operator=positive,
    )
    metrics = {"policy_loss": jnp.mean(loss), "temperature": positive(duals["temperature"]),
               "kl_mean": jnp.mean(kl_mean), "kl_stddev": jnp.mean(kl_stddev),
               "action_std": jnp.mean(online_std)}
    return jnp.mean(loss), metrics


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build MPO for ``spec`` (continuous actions with finite bounds)."""
    del total_steps  # no schedules
    nets = networks(config, spec)
    action_dim = spec.num_actions
    policy_optimizer = optax.multi_transform(
        {"actor": optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate)),
         "duals": optax.adam(config.dual_learning_rate)},
        {"actor": "actor", "duals": "duals"},
    )
    critic_optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))
    critic_grad = jax.grad(functools.partial(critic_loss, config=config, nets=nets), has_aux=True)
    policy_grad = jax.grad(functools.partial(policy_loss, config=config, nets=nets), has_aux=True)

    def init(key):
        policy_key, critic_key = jax.random.split(key)
        obs = jnp.zeros((1, *spec.observation_shape), jnp.float32)
        duals = {"temperature": jnp.asarray(config.init_temperature, jnp.float32),
                 "alpha_mean": jnp.full((action_dim,), config.init_alpha_mean, jnp.float32),
                 "alpha_stddev": jnp.full((action_dim,), config.init_alpha_stddev, jnp.float32)}
        params = {"actor": nets.actor.init(policy_key, obs),
                  "critic": nets.critic.init(critic_key, obs, jnp.zeros((1, action_dim)))}
        opt_state = {"actor": policy_optimizer.init({"actor": params["actor"], "duals": duals}),
                     "critic": critic_optimizer.init(params["critic"])}
        return MPOState({**params, "duals": duals}, params, opt_state, jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        mean, std = policy(nets, state.params["actor"], observation)
        if deterministic:
            return ActOutput(nets.env_action(mean), carry, {})
        noise_key, warmup_key = jax.random.split(key)
        action = jnp.clip(mean + std * jax.random.normal(noise_key, mean.shape), -1.0, 1.0)
        if config.random_warmup:
            uniform = jax.random.uniform(warmup_key, action.shape, minval=-1.0, maxval=1.0)
            action = jnp.where(state.grad_steps == 0, uniform, action)
        return ActOutput(nets.env_action(action), carry, {})

    def update(state, batch, key):
        batch, weights = split_weights(batch)
        critic_key, policy_key = jax.random.split(key)
        grads, metrics = critic_grad(state.params["critic"], state.target_params, batch, weights, critic_key)
        updates, critic_opt = critic_optimizer.update(grads, state.opt_state["critic"], state.params["critic"])
        critic_params = optax.apply_updates(state.params["critic"], updates)
        trained = {"actor": state.params["actor"], "duals": state.params["duals"]}
        grads, policy_metrics = policy_grad(trained, state.target_params, critic_params, batch.obs_tm1, policy_key)
        updates, policy_opt = policy_optimizer.update(grads, state.opt_state["actor"], trained)
        trained = optax.apply_updates(trained, updates)
        params = {**trained, "critic": critic_params}
        count = state.grad_steps + 1
        copy = count % config.target_update_period == 0
        online = {"actor": params["actor"], "critic": params["critic"]}
        target_params = jax.tree.map(lambda new, old: jnp.where(copy, new, old), online, state.target_params)
        opt_state = {"actor": policy_opt, "critic": critic_opt}
        return MPOState(params, target_params, opt_state, count), {**metrics, **policy_metrics}

    return Agent(init=init, act=act, update=update)
