"""Soft Actor-Critic for continuous actions, with twin critics and automatic entropy tuning.

Haarnoja et al., "Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement Learning
with a Stochastic Actor", 2018 (https://arxiv.org/abs/1801.01290), and "Soft Actor-Critic
Algorithms and Applications", 2018 (https://arxiv.org/abs/1812.05905): a tanh-squashed
Gaussian actor rescaled to the environment's action bounds, the minimum of twin critics in
the target, Polyak-averaged target critics and a learned temperature ``alpha`` driving the
policy entropy towards ``-target_entropy_scale * action_dim``.

``update`` learns from a batch of ``Transition`` whose ``discount_t`` already holds
``gamma ** n`` (0 at termination, so truncation bootstraps). Critics, actor and temperature
take one gradient step each from a single backward pass over the same parameters (the actor
and temperature losses see the critics and ``alpha`` from before the step, as in Brax).
Log-probabilities are those of the squashed action in ``[-1, 1]``, before the rescaling.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

from rlkit import config as cfg
from rlkit.networks import ActorAndCritic, ContinuousQNetwork, SquashedGaussianActor, activation_fn
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Transition, split_weights


@dataclasses.dataclass(frozen=True)
class Config:
    """SAC settings; names follow rejax where they overlap.

    ``tau`` is the Polyak step towards the online critics after every update (rejax's
    ``polyak`` is ``1 - tau``). ``updates_per_step`` gradient steps follow each vectorized
    environment step (rejax's ``num_epochs``), so one update per transition with ``num_envs=4``
    is ``updates_per_step=4``. With ``random_warmup`` actions are uniform until the first
    update, i.e. over the first ``learning_starts`` environment steps (as in SB3).
    """

    num_envs: int = 1
    num_steps: int = 1  # env steps per env between rounds of updates
    updates_per_step: int = 1
    buffer_size: int = 100_000
    batch_size: int = 256
    learning_starts: int = 5_000
    random_warmup: bool = True
    learning_rate: float = 3e-4  # actor, critics and temperature alike
    gamma: float = 0.99
    tau: float = 0.005
    num_critics: int = 2
    autotune: bool = True  # learn alpha; otherwise it stays at init_alpha
    init_alpha: float = 1.0
    target_entropy_scale: float = 1.0  # target entropy = -target_entropy_scale * action_dim
    max_grad_norm: float = 10.0  # global norm, per network (actor, critics, temperature)
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet
    prioritized: bool = False  # proportional prioritized replay (Schaul et al., 2016), |TD error| priorities
    priority_exponent: float = 0.6
    importance_exponent: float = 0.4

    def __post_init__(self):
        cfg.check_counts(self, ("num_envs", "num_steps", "updates_per_step", "batch_size", "num_critics"))
        cfg.check_replay(self)
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("tau", self.tau, closed_low=False)
        cfg.check_positive("init_alpha", self.init_alpha)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)
        cfg.check_priorities(self)


class SACState(NamedTuple):
    params: dict  # {"actor", "critic" (stacked over num_critics), "log_alpha"}
    target_params: dict  # target critics
    opt_state: optax.OptState
    grad_steps: jax.Array  # gradient steps taken


def experience(config: Config) -> ExperienceSpec:
    """Uniform replay; ``num_steps * updates_per_step`` updates after each rollout."""
    return ExperienceSpec(
        kind="transitions",
        num_envs=config.num_envs,
        rollout_length=config.num_steps,
        batch_size=config.batch_size,
        buffer_size=config.buffer_size,
        min_size=max(config.learning_starts, config.batch_size),
        updates_per_rollout=config.num_steps * config.updates_per_step,
        gamma=config.gamma,
        **cfg.priority_settings(config),
    )


def squashed_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterized ``tanh(N(mean, std))`` sample in ``[-1, 1]`` and its log-probability."""
    noise = jax.random.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * noise
    # log(1 - tanh(u)^2), computed stably.
    log_det = 2.0 * (np.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    log_prob = jnp.sum(-0.5 * noise**2 - log_std - 0.5 * np.log(2 * np.pi) - log_det, axis=-1)
    return jnp.tanh(u), log_prob


class CriticPenalty(Protocol):
    """An extra critic loss (CQL's, ``rlkit.agents.cql``): ``(q, policy, batch, key) -> (loss, metrics)``.

    ``q(obs [B, O], action [B, A]) -> [num_critics, B]`` are the online critics (gradients flow);
    ``policy(obs, key) -> (action, log_prob)`` samples the actor, held fixed; actions are in ``[-1, 1]``.
    """

    def __call__(self, q: Callable, policy: Callable, batch: Transition, key: jax.Array) -> tuple[jax.Array, dict]: ...


def networks(config: Config, spec: EnvSpec, agent: str = "sac") -> ActorAndCritic:
    """The squashed Gaussian actor and the critic for ``spec``'s actions (continuous, with finite bounds;
    otherwise a ValueError naming ``agent``)."""
    center, half = cfg.continuous_bounds(spec, agent)
    torso = torso_fields(config.torso, spec)
    return ActorAndCritic(
        SquashedGaussianActor(spec.num_actions, config.hidden_sizes, config.activation, **torso),
        ContinuousQNetwork(config.hidden_sizes, config.activation, **torso),
        center, half,
    )


def sample_policy(nets: ActorAndCritic, actor_params, obs: jax.Array, key) -> tuple[jax.Array, jax.Array]:
    """An action of the policy in ``[-1, 1]`` units and its log-probability."""
    return squashed_sample(*nets.actor.apply(actor_params, obs), key)


def sac_loss(params, target_params, batch: Transition, weights, key, *, config: Config, nets: ActorAndCritic,
             critic_penalty: CriticPenalty | None = None) -> tuple[jax.Array, dict]:
    """The critics' soft TD loss, the actor's loss and the temperature's, summed; each trains its own
    parameters (the others' enter through ``stop_gradient``)."""
    next_key, pi_key = jax.random.split(key)
    alpha = jnp.exp(jax.lax.stop_gradient(params["log_alpha"]))
    actor_params = jax.lax.stop_gradient(params["actor"])

    # Critics: soft TD targets from the target critics and a fresh next action.
    next_action, next_log_prob = sample_policy(nets, actor_params, batch.obs_t, next_key)
    v_t = jnp.min(nets.critics(target_params, batch.obs_t, next_action), axis=0) - alpha * next_log_prob
    q_tm1 = nets.critics(params["critic"], batch.obs_tm1, nets.unit_action(batch.action_tm1))
    td = jax.vmap(jax.vmap(rlax.td_learning), in_axes=(0, None, None, None))(
        q_tm1, batch.reward_t, batch.discount_t, v_t
    )
    critic_loss = 0.5 * jnp.sum(jnp.mean(td**2 if weights is None else weights * td**2, axis=-1))
    penalty_metrics = {}
    if critic_penalty is not None:
        penalty, penalty_metrics = critic_penalty(
            lambda obs, action: nets.critics(params["critic"], obs, action),
            lambda obs, k: sample_policy(nets, actor_params, obs, k),
            batch._replace(action_tm1=nets.unit_action(batch.action_tm1)), jax.random.fold_in(key, 1),
        )
        critic_loss = critic_loss + penalty

    # Actor: maximize min Q - alpha * log pi against the critics before this step.
    action, log_prob = sample_policy(nets, params["actor"], batch.obs_tm1, pi_key)
    q_pi = jnp.min(nets.critics(jax.lax.stop_gradient(params["critic"]), batch.obs_tm1, action), axis=0)
    actor_loss = jnp.mean(alpha * log_prob - q_pi)

    # Temperature: move the entropy (-log pi) towards the target.
    target_entropy = -config.target_entropy_scale * batch.action_tm1.shape[-1]  # per action dimension
    alpha_loss = -params["log_alpha"] * jnp.mean(jax.lax.stop_gradient(log_prob) + target_entropy)
    loss = critic_loss + actor_loss + (alpha_loss if config.autotune else 0.0)
    return loss, {
        "loss": critic_loss,
        "actor_loss": actor_loss,
        "alpha": alpha,
        "entropy": -jnp.mean(log_prob),
        "q_mean": jnp.mean(q_tm1),
        **penalty_metrics,
        **({"priorities": jax.lax.stop_gradient(jnp.mean(jnp.abs(td), 0)) + 1e-6} if config.prioritized else {}),
    }


def make(
    config: Config, spec: EnvSpec, total_steps: int | None = None, critic_penalty: CriticPenalty | None = None
) -> Agent:
    """Build SAC for ``spec`` (continuous actions with finite bounds); ``critic_penalty`` joins the critic loss."""
    del total_steps  # no schedules
    nets = networks(config, spec)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))
    loss_grad = jax.grad(
        functools.partial(sac_loss, config=config, nets=nets, critic_penalty=critic_penalty), has_aux=True
    )

    def init(key):
        actor_key, critic_key = jax.random.split(key)
        obs = jnp.zeros((1, *spec.observation_shape), jnp.float32)
        critic_params = jax.vmap(nets.critic.init, in_axes=(0, None, None))(
            jax.random.split(critic_key, config.num_critics), obs, jnp.zeros((1, spec.num_actions))
        )
        params = {
            "actor": nets.actor.init(actor_key, obs),
            "critic": critic_params,
            "log_alpha": jnp.log(jnp.asarray(config.init_alpha, jnp.float32)),
        }
        opt_state = {name: optimizer.init(p) for name, p in params.items()}
        return SACState(params, critic_params, opt_state, jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        mean, log_std = nets.actor.apply(state.params["actor"], observation)
        if deterministic:
            return ActOutput(nets.env_action(jnp.tanh(mean)), carry, {})
        sample_key, warmup_key = jax.random.split(key)
        action, _ = squashed_sample(mean, log_std, sample_key)
        if config.random_warmup:
            uniform = jax.random.uniform(warmup_key, action.shape, minval=-1.0, maxval=1.0)
            action = jnp.where(state.grad_steps == 0, uniform, action)
        return ActOutput(nets.env_action(action), carry, {})

    def update(state, batch, key):
        batch, weights = split_weights(batch)
        grads, metrics = loss_grad(state.params, state.target_params, batch, weights, key)
        params, opt_state = {}, {}
        for name in state.params:
            updates, opt_state[name] = optimizer.update(grads[name], state.opt_state[name], state.params[name])
            params[name] = optax.apply_updates(state.params[name], updates)
        target_params = optax.incremental_update(params["critic"], state.target_params, config.tau)
        return SACState(params, target_params, opt_state, state.grad_steps + 1), metrics

    return Agent(init=init, act=act, update=update)
