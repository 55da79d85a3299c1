"""Twin Delayed DDPG (TD3) for continuous actions; DDPG is its configuration without the three tricks.

Fujimoto et al., "Addressing Function Approximation Error in Actor-Critic Methods", 2018
(https://arxiv.org/abs/1802.09477): a deterministic tanh actor rescaled to the environment's
action bounds, the minimum of twin critics in the target, target policy smoothing (clipped
Gaussian noise on the target action) and delayed actor and target updates. With
``num_critics=1, target_noise=0, policy_delay=1`` it is DDPG (Lillicrap et al., "Continuous
control with deep reinforcement learning", 2016), which ``rlkit.agents.ddpg`` configures.

``distribution="categorical"`` makes the critic a categorical return distribution on
``num_atoms`` atoms in [``v_min``, ``v_max``] trained with rlax's projected cross-entropy, and the
actor ascend its mean: with n-step returns that is D4PG (Barth-Maron et al., "Distributed
Distributional Deterministic Policy Gradients", 2018), which ``rlkit.agents.d4pg`` configures.

``update`` learns from a batch of ``Transition`` whose ``discount_t`` already holds
``gamma ** n`` (0 at termination, so truncation bootstraps). Exploration adds Gaussian noise
to the actor's action. All noise scales are fractions of the action range's half-width
(noise is added to the action in ``[-1, 1]`` before rescaling), as in SB3 and CleanRL.
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
from rlkit.networks import ActorAndCritic, ContinuousQNetwork, DeterministicActor, activation_fn
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Transition, split_weights


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3 settings; names follow rejax where they overlap.

    ``tau`` is the Polyak step of the target networks, taken with each (delayed) actor
    update (rejax's ``polyak`` is ``1 - tau``). ``policy_delay`` counts critic updates per
    actor update. ``updates_per_step`` critic updates follow each vectorized environment
    step (rejax's ``num_epochs``). With ``random_warmup`` actions are uniform until the first
    update, i.e. over the first ``learning_starts`` environment steps (as in SB3).
    """

    num_envs: int = 1
    num_steps: int = 1  # env steps per env between rounds of updates
    updates_per_step: int = 1
    buffer_size: int = 100_000
    batch_size: int = 256
    learning_starts: int = 5_000
    random_warmup: bool = True
    learning_rate: float = 3e-4  # actor and critics alike
    gamma: float = 0.99
    tau: float = 0.005
    num_critics: int = 2
    exploration_noise: float = 0.1
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    policy_delay: int = 2
    max_grad_norm: float = 10.0  # global norm, per network (actor, critics)
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet
    prioritized: bool = False  # proportional prioritized replay (Schaul et al., 2016), |TD error| priorities
    priority_exponent: float = 0.6
    importance_exponent: float = 0.4
    n_step: int = 1
    distribution: str = "none"  # "none" (a scalar critic) | "categorical" (D4PG's distributional critic)
    num_atoms: int = 51
    v_min: float = -10.0  # the categorical critic's support
    v_max: float = 10.0

    def __post_init__(self):
        if self.distribution not in ("none", "categorical"):
            raise ValueError(f"distribution: {self.distribution!r} is not one of ['none', 'categorical']")
        if self.distribution == "categorical":
            if self.num_critics != 1:
                raise ValueError(f"num_critics: a categorical critic is one critic, got {self.num_critics}")
            if self.num_atoms < 2:
                raise ValueError(f"num_atoms must be >= 2, got {self.num_atoms}")
            cfg.check_positive("v_max - v_min", self.v_max - self.v_min)
        cfg.check_counts(self, ("num_envs", "num_steps", "updates_per_step", "batch_size", "num_critics",
                                "policy_delay", "n_step"))
        cfg.check_replay(self)
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("tau", self.tau, closed_low=False)
        cfg.check_non_negative("exploration_noise", self.exploration_noise)
        cfg.check_non_negative("target_noise", self.target_noise)
        cfg.check_non_negative("target_noise_clip", self.target_noise_clip)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)
        cfg.check_priorities(self)


class TD3State(NamedTuple):
    params: dict  # {"actor", "critic" (stacked over num_critics)}
    target_params: dict  # the same, Polyak-averaged
    opt_state: optax.OptState
    grad_steps: jax.Array  # critic gradient steps taken


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
        n_step=config.n_step,
        gamma=config.gamma,
        **cfg.priority_settings(config),
    )


def networks(config: Config, spec: EnvSpec) -> ActorAndCritic:
    """The actor and the critic (a scalar, or ``num_atoms`` logits with ``distribution="categorical"``)."""
    name = type(config).__module__.rsplit(".", 1)[-1]  # td3, ddpg, d4pg
    center, half = cfg.continuous_bounds(spec, name)
    torso = torso_fields(config.torso, spec)
    atoms = config.num_atoms if config.distribution == "categorical" else 0
    return ActorAndCritic(
        DeterministicActor(spec.num_actions, config.hidden_sizes, config.activation, **torso),
        ContinuousQNetwork(config.hidden_sizes, config.activation, atoms, **torso),
        center, half,
    )


def expected_value(config: Config, out: jax.Array) -> jax.Array:
    """The critic's value: the mean of its categorical distribution, or the scalar itself."""
    if config.distribution != "categorical":
        return out
    return jnp.sum(jax.nn.softmax(out) * jnp.linspace(config.v_min, config.v_max, config.num_atoms), axis=-1)


def smoothed_target_action(config: Config, nets: ActorAndCritic, target_params, obs_t: jax.Array, key) -> jax.Array:
    """The target actor's action with clipped Gaussian noise (target policy smoothing), in ``[-1, 1]``."""
    next_action = nets.actor.apply(target_params["actor"], obs_t)
    smoothing = jnp.clip(
        config.target_noise * jax.random.normal(key, next_action.shape),
        -config.target_noise_clip, config.target_noise_clip,
    )
    return jnp.clip(next_action + smoothing, -1.0, 1.0)


def critic_loss(critic_params, target_params, batch: Transition, weights, key, *, config: Config,
                nets: ActorAndCritic) -> tuple[jax.Array, dict]:
    """Every critic's TD loss to the minimum of the target critics (summed over critics), or D4PG's."""
    next_action = smoothed_target_action(config, nets, target_params, batch.obs_t, key)
    if config.distribution == "categorical":
        return categorical_critic_loss(critic_params, target_params, batch, weights, next_action,
                                       config=config, nets=nets)
    v_t = jnp.min(nets.critics(target_params["critic"], batch.obs_t, next_action), axis=0)
    q_tm1 = nets.critics(critic_params, batch.obs_tm1, nets.unit_action(batch.action_tm1))
    td = jax.vmap(jax.vmap(rlax.td_learning), in_axes=(0, None, None, None))(
        q_tm1, batch.reward_t, batch.discount_t, v_t
    )
    loss = 0.5 * jnp.sum(jnp.mean(td**2 if weights is None else weights * td**2, axis=-1))
    metrics = {"loss": loss, "q_mean": jnp.mean(q_tm1)}
    if config.prioritized:
        metrics["priorities"] = jax.lax.stop_gradient(jnp.mean(jnp.abs(td), 0)) + 1e-6
    return loss, metrics


def categorical_critic_loss(critic_params, target_params, batch: Transition, weights, next_action, *,
                            config: Config, nets: ActorAndCritic) -> tuple[jax.Array, dict]:
    """D4PG's critic loss: cross-entropy to the target distribution projected onto the atoms."""
    atoms = jnp.linspace(config.v_min, config.v_max, config.num_atoms)
    logits_t = nets.critics(target_params["critic"], batch.obs_t, next_action)[0]
    logits_tm1 = nets.critics(critic_params, batch.obs_tm1, nets.unit_action(batch.action_tm1))[0]
    per_item = jax.vmap(rlax.categorical_td_learning, in_axes=(None, 0, 0, 0, None, 0))(
        atoms, logits_tm1, batch.reward_t, batch.discount_t, atoms, logits_t
    )
    loss = jnp.mean(per_item if weights is None else weights * per_item)
    metrics = {"loss": loss, "q_mean": jnp.mean(expected_value(config, logits_tm1))}
    if config.prioritized:
        metrics["priorities"] = jax.lax.stop_gradient(per_item) + 1e-6
    return loss, metrics


def actor_loss(actor_params, critic_params, batch: Transition, *, config: Config, nets: ActorAndCritic) -> jax.Array:
    """Minus the first critic's value of the actor's actions (deterministic policy gradient)."""
    first_critic = jax.tree.map(lambda p: p[0], critic_params)
    out = nets.critic.apply(first_critic, batch.obs_tm1, nets.actor.apply(actor_params, batch.obs_tm1))
    return -jnp.mean(expected_value(config, out))


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build TD3 (or DDPG) for ``spec`` (continuous actions with finite bounds)."""
    del total_steps  # no schedules
    nets = networks(config, spec)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))
    critic_grad = jax.grad(functools.partial(critic_loss, config=config, nets=nets), has_aux=True)
    actor_value_and_grad = jax.value_and_grad(functools.partial(actor_loss, config=config, nets=nets))

    def init(key):
        actor_key, critic_key = jax.random.split(key)
        obs = jnp.zeros((1, *spec.observation_shape), jnp.float32)
        params = {
            "actor": nets.actor.init(actor_key, obs),
            "critic": jax.vmap(nets.critic.init, in_axes=(0, None, None))(
                jax.random.split(critic_key, config.num_critics), obs, jnp.zeros((1, spec.num_actions))
            ),
        }
        opt_state = {name: optimizer.init(p) for name, p in params.items()}
        return TD3State(params, params, opt_state, jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        action = nets.actor.apply(state.params["actor"], observation)
        if not deterministic:
            noise_key, warmup_key = jax.random.split(key)
            action = jnp.clip(rlax.add_gaussian_noise(noise_key, action, config.exploration_noise), -1.0, 1.0)
            if config.random_warmup:
                uniform = jax.random.uniform(warmup_key, action.shape, minval=-1.0, maxval=1.0)
                action = jnp.where(state.grad_steps == 0, uniform, action)
        return ActOutput(nets.env_action(action), carry, {})

    def step(params, grads, opt_state):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def policy_update(state: TD3State, batch: Transition):
        """The delayed half: one actor step against the new critics, then Polyak targets."""
        loss, grads = actor_value_and_grad(state.params["actor"], state.params["critic"], batch)
        actor_params, actor_opt = step(state.params["actor"], grads, state.opt_state["actor"])
        params = {**state.params, "actor": actor_params}
        target_params = optax.incremental_update(params, state.target_params, config.tau)
        state = state._replace(
            params=params, target_params=target_params, opt_state={**state.opt_state, "actor": actor_opt}
        )
        # Reported as policy_delay * loss (0 between actor steps), so its mean is the mean actor loss.
        return state, config.policy_delay * loss

    def update(state, batch, key):
        batch, weights = split_weights(batch)
        grads, metrics = critic_grad(state.params["critic"], state.target_params, batch, weights, key)
        critic_params, critic_opt = step(state.params["critic"], grads, state.opt_state["critic"])
        count = state.grad_steps + 1
        state = TD3State(
            {**state.params, "critic": critic_params}, state.target_params,
            {**state.opt_state, "critic": critic_opt}, count,
        )
        if config.policy_delay == 1:
            state, metrics["actor_loss"] = policy_update(state, batch)
        else:
            # Skipped work when unbatched; a select under a vmap over runs.
            state, metrics["actor_loss"] = jax.lax.cond(
                count % config.policy_delay == 0,
                policy_update,
                lambda state, batch: (state, jnp.zeros(())),
                state, batch,
            )
        return state, metrics

    return Agent(init=init, act=act, update=update)
