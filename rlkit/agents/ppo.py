"""Proximal Policy Optimization for discrete and continuous actions.

Schulman et al., "Proximal Policy Optimization Algorithms", 2017
(https://arxiv.org/abs/1707.06347): clipped surrogate objective, generalized
advantage estimation (rlax), several epochs of minibatch updates over each
rollout, an annealed learning rate and global-norm gradient clipping.

Discrete actions use a categorical policy. Continuous actions use a diagonal
Gaussian whose log standard deviation is a learned, state-independent vector;
the sampled action is *clipped* to the environment's bounds before it reaches
the environment, while the unclipped sample (``extras["raw_action"]``) is what
the log-probabilities are computed on, as in CleanRL and PureJaxRL.

Optional observation and reward normalization (Engstrom et al., 2020): running
statistics live in the agent state, so they are checkpointed and vmapped with
it. Observation statistics are updated from each rollout *after* learning from
it (act and update see the same statistics); rewards are divided by the
running standard deviation of the discounted return.

Time-limit truncation bootstraps: the advantage at a truncated step uses the
value of the final observation; a terminated step uses none.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from rlkit import config as cfg
from rlkit import parallel
from rlkit.agents.minibatches import annealed_rate, minibatch_epochs
from rlkit.networks import CategoricalActorCritic, GaussianActorCritic, activation_fn
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Trajectory


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO settings; names follow rejax where they overlap."""

    num_envs: int = 8
    num_steps: int = 64  # rollout length per env
    num_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    clip_value: bool = True
    normalize_advantages: bool = True
    normalize_observations: bool = False
    normalize_rewards: bool = False
    init_log_std: float = 0.0  # continuous actions: initial log standard deviation
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "num_epochs", "num_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        cfg.check_divides(
            "num_minibatches", self.num_minibatches,
            "num_envs * num_steps", self.num_envs * self.num_steps,
        )
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("gae_lambda", self.gae_lambda)
        cfg.check_positive("clip_eps", self.clip_eps)
        cfg.check_non_negative("ent_coef", self.ent_coef)
        cfg.check_non_negative("vf_coef", self.vf_coef)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)


class RunningMoments(NamedTuple):
    """Running mean and variance (Chan et al.'s parallel update), for normalization."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> "RunningMoments":
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.full((), 1e-4))

    def update(self, x: jax.Array) -> "RunningMoments":
        """Fold in a batch ``x [B, *shape]`` (the whole batch, when a run is split over devices)."""
        (batch_mean, batch_var), n = parallel.moments(x), parallel.count(x.shape[0])
        total = self.count + n
        delta = batch_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        return RunningMoments(mean, m2 / total, total)

    def normalize(self, x: jax.Array, clip: float = 10.0) -> jax.Array:
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)


class PPOState(NamedTuple):
    """PPO's whole state.

    ``obs_moments`` and ``return_moments`` hold the normalization statistics (unused,
    but present, when normalization is off); ``discounted_return [num_envs]`` is the
    running discounted return per environment that reward normalization scales by.
    """

    params: dict
    opt_state: optax.OptState
    iterations: jax.Array  # loop iterations (rollouts) learned from so far
    obs_moments: RunningMoments
    return_moments: RunningMoments
    discounted_return: jax.Array


def experience(config: Config) -> ExperienceSpec:
    """PPO learns from each fresh rollout once."""
    return ExperienceSpec(
        kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps,
        gamma=config.gamma, data_parallel=True,
    )


def advantages(
    reward_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    v_tm1: jax.Array,
    v_t: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> jax.Array:
    """GAE for one environment's rollout ``[T]``, correct across episode ends.

    ``v_tm1`` are values of the observations acted in; ``v_t`` values of the
    observations that followed (the final observation at an episode end). A
    truncated step bootstraps from ``v_t``; a terminated one does not; the
    lambda-recursion stops at both.
    """
    done_t = jnp.logical_or(terminated_t, truncated_t)
    # Fold the end-of-episode bootstrap into the reward and cut the recursion there,
    # so rlax's GAE (which bootstraps from the next row of `values`) stays exact.
    bootstrap = jnp.where(truncated_t & ~terminated_t, gamma * v_t, 0.0)
    r_t = reward_t + jnp.where(done_t, bootstrap, 0.0)
    discount_t = jnp.where(done_t, 0.0, gamma) * jnp.ones_like(reward_t)
    values = jnp.concatenate([v_tm1, v_t[-1:]])
    return rlax.truncated_generalized_advantage_estimation(
        r_t, discount_t, gae_lambda, values, stop_target_gradients=True
    )


class Categorical(NamedTuple):
    """A categorical policy over logits ``[..., num_actions]``."""

    logits: jax.Array

    def sample(self, key):
        return jax.random.categorical(key, self.logits)

    def mode(self):
        return jnp.argmax(self.logits, axis=-1)

    def log_prob(self, action):
        return jnp.take_along_axis(jax.nn.log_softmax(self.logits), action[..., None], axis=-1)[..., 0]

    def entropy(self):
        log_probs = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


class DiagonalGaussian(NamedTuple):
    """A diagonal Gaussian policy."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key):
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def mode(self):
        return self.mean

    def log_prob(self, action):
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

    def entropy(self):
        return jnp.sum(self.log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1) * jnp.ones(self.mean.shape[:-1])


def make_optimizer(config: Config, total_steps: int | None) -> optax.GradientTransformation:
    """Adam with global-norm clipping, its learning rate annealed to 0 over ``total_steps`` if asked.

    ``optax.flatten``: the optimizer works on one vector instead of one array per layer, which
    on CPU halves its kernels per minibatch (same arithmetic; ~5% faster runs and compiles).
    """
    return optax.flatten(optax.chain(
        parallel.average_gradients(),  # over the devices of a run split data-parallel; else nothing
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adam(annealed_rate(config, total_steps), eps=1e-5),
    ))


def clipped_loss(distribution, value: jax.Array, batch: dict, config: Config) -> tuple[jax.Array, dict]:
    """PPO's loss on a minibatch: clipped surrogate, (clipped) value loss and entropy bonus.

    ``batch`` holds "action", "log_prob" and "value" (from acting), "advantage" and "target";
    ``distribution`` and ``value`` are the current policy's on the minibatch's observations.
    """
    log_prob = distribution.log_prob(batch["action"])
    ratio = jnp.exp(log_prob - batch["log_prob"])
    adv = batch["advantage"]
    if config.normalize_advantages:
        adv_mean, adv_var = parallel.moments(adv.reshape(-1))  # the whole minibatch, over devices if split
        adv = (adv - adv_mean) / (jnp.sqrt(adv_var) + 1e-8)
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio, adv, config.clip_eps)
    value_error = value - batch["target"]
    if config.clip_value:
        clipped = batch["value"] + jnp.clip(
            value - batch["value"], -config.clip_eps, config.clip_eps
        )
        value_loss = 0.5 * jnp.mean(
            jnp.maximum(value_error**2, (clipped - batch["target"]) ** 2)
        )
    else:
        value_loss = 0.5 * jnp.mean(value_error**2)
    entropy = jnp.mean(distribution.entropy())
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    stats = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - jnp.log(ratio)),
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > config.clip_eps),
    }
    return loss, stats


class ActorCritic(NamedTuple):
    """The policy-and-value network and how its outputs read as an action distribution."""

    network: CategoricalActorCritic | GaussianActorCritic
    continuous: bool

    def __call__(self, params, obs: jax.Array):
        """``(distribution, value)`` at ``obs``: ``Categorical``, or ``DiagonalGaussian`` for continuous actions."""
        if self.continuous:
            mean, log_std, value = self.network.apply(params, obs)
            return DiagonalGaussian(mean, jnp.broadcast_to(log_std, mean.shape)), value
        logits, value = self.network.apply(params, obs)
        return Categorical(logits), value


def actor_critic(config: Config, spec: EnvSpec) -> ActorCritic:
    """Separate policy and value torsos for ``spec``'s discrete or continuous actions."""
    torso = torso_fields(config.torso, spec)
    if spec.action_kind == "continuous":
        network = GaussianActorCritic(
            spec.num_actions, config.hidden_sizes, config.activation, config.init_log_std, **torso
        )
        return ActorCritic(network, continuous=True)
    network = CategoricalActorCritic(spec.num_actions, config.hidden_sizes, config.activation, **torso)
    return ActorCritic(network, continuous=False)


def scale_rewards(config: Config, state: PPOState, rollout: Trajectory):
    """Rewards divided by the running std of the discounted return, with the updated statistics:
    ``(reward, return_moments, discounted_return)``."""

    def step(discounted, inputs):
        reward, done = inputs
        discounted = discounted * config.gamma + reward
        return jnp.where(done, 0.0, discounted), discounted

    done = rollout.terminated | rollout.truncated
    discounted_return, returns = jax.lax.scan(step, state.discounted_return, (rollout.reward, done))
    moments = state.return_moments.update(returns.reshape(-1))
    return rollout.reward / jnp.sqrt(moments.var + 1e-8), moments, discounted_return


def training_batch(config: Config, model: ActorCritic, params, rollout: Trajectory, reward, obs, next_obs) -> dict:
    """The rollout as one batch of ``num_envs * num_steps`` items, with GAE advantages and value targets."""
    v_t = model.network.apply(params, next_obs, method="value")
    advantage = jax.vmap(advantages, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
        reward, rollout.terminated, rollout.truncated,
        rollout.extras["value"], v_t, config.gamma, config.gae_lambda,
    )
    batch = {
        "obs": obs,
        "action": rollout.extras["raw_action"] if model.continuous else rollout.action,
        "log_prob": rollout.extras["log_prob"],
        "value": rollout.extras["value"],
        "advantage": advantage,
        "target": advantage + rollout.extras["value"],
    }
    return jax.tree.map(lambda x: x.reshape(config.num_envs * config.num_steps, *x.shape[2:]), batch)


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build PPO for ``spec``; ``total_steps`` sets the learning-rate annealing horizon."""
    model = actor_critic(config, spec)
    optimizer = make_optimizer(config, total_steps)
    loss_grad = jax.grad(lambda params, batch: clipped_loss(*model(params, batch["obs"]), batch, config), has_aux=True)

    def init(key):
        params = model.network.init(key, jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return PPOState(
            params, optimizer.init(params), jnp.zeros((), jnp.int32),
            RunningMoments.zeros(spec.observation_shape), RunningMoments.zeros(()), jnp.zeros(config.num_envs),
        )

    def observe(state, observation):
        return state.obs_moments.normalize(observation) if config.normalize_observations else observation

    def act(state, observation, carry, key, deterministic=False):
        distribution, value = model(state.params, observe(state, observation))
        raw_action = distribution.mode() if deterministic else distribution.sample(key)
        extras = {"log_prob": distribution.log_prob(raw_action), "value": value}
        if not model.continuous:
            return ActOutput(raw_action, carry, extras)
        extras["raw_action"] = raw_action
        return ActOutput(jnp.clip(raw_action, jnp.asarray(spec.action_low), jnp.asarray(spec.action_high)), carry, extras)

    def minibatch_step(learner, minibatch):
        params, opt_state = learner
        grads, stats = loss_grad(params, minibatch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def update(state, rollout: Trajectory, key):
        if config.normalize_rewards:
            reward, return_moments, discounted_return = scale_rewards(config, state, rollout)
        else:
            reward, return_moments, discounted_return = rollout.reward, state.return_moments, state.discounted_return
        obs, next_obs = observe(state, rollout.obs), observe(state, rollout.next_obs)
        batch = training_batch(config, model, state.params, rollout, reward, obs, next_obs)
        learner = (state.params, state.opt_state)
        (params, opt_state), stats = minibatch_epochs(config, minibatch_step, learner, batch, key)
        metrics = jax.tree.map(jnp.mean, stats)
        obs_moments = (
            state.obs_moments.update(rollout.obs.reshape(-1, *spec.observation_shape))
            if config.normalize_observations else state.obs_moments
        )
        if model.continuous:
            metrics["action_std"] = jnp.mean(jnp.exp(params["params"]["log_std"]))
        new_state = PPOState(params, opt_state, state.iterations + 1, obs_moments, return_moments, discounted_return)
        return new_state, metrics

    return Agent(init=init, act=act, update=update)
