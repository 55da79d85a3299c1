"""SAC in one file, to copy and change: the networks, the agent and the training run.

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018
(https://arxiv.org/abs/1812.05905). A tanh-squashed Gaussian actor rescaled to the action
bounds, twin critics (one parameter set per critic, vmapped) whose minimum forms the soft TD
target, Polyak-averaged target critics, and a temperature ``alpha`` tuned so the policy's
entropy approaches ``-action_dim``. Uniform random actions until learning starts (as in SB3).

The agent is three pure functions, ``rlkit.Agent(init, act, update)``. rlkit's loop owns the
replay buffer: it steps the environments, stores the transitions, and once ``learning_starts``
transitions are in, hands ``update`` a sampled batch of ``rlkit.Transition`` whose ``discount_t``
is ``gamma`` (0 where the episode terminated, so a time-limit truncation bootstraps).

    python baselines/sac.py --env Pendulum-v1 --steps 2e4 --seeds 2     # about -148 (greedy, 2 seeds)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

import rlkit


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings that learn Pendulum-v1 in 2e4 steps; ``tau`` is the Polyak step per update."""

    num_envs: int = 1
    updates_per_step: int = 1  # gradient steps after each (vectorized) environment step
    buffer_size: int = 20_000
    batch_size: int = 128
    learning_starts: int = 1_000  # uniformly random actions until then
    learning_rate: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    hidden_size: int = 64

    def __post_init__(self):
        if self.buffer_size % self.num_envs:
            raise ValueError("num_envs must divide buffer_size")
        if self.learning_starts > self.buffer_size:
            raise ValueError("learning_starts must be <= buffer_size")


def mlp(x, hidden_size: int, outputs: int):
    x = nn.relu(nn.Dense(hidden_size)(x))
    x = nn.relu(nn.Dense(hidden_size)(x))
    return nn.Dense(outputs)(x)


class Actor(nn.Module):
    """Mean and log-std of a Gaussian over the pre-tanh action; log-std kept in [-5, 2]."""

    action_dim: int
    hidden_size: int

    @nn.compact
    def __call__(self, obs):
        mean, log_std = jnp.split(mlp(obs, self.hidden_size, 2 * self.action_dim), 2, axis=-1)
        return mean, -5.0 + 3.5 * (jnp.tanh(log_std) + 1.0)


class Critic(nn.Module):
    """Q(s, a) with the action in [-1, 1]."""

    hidden_size: int

    @nn.compact
    def __call__(self, obs, action):
        return mlp(jnp.concatenate([obs, action], axis=-1), self.hidden_size, 1)[..., 0]


def sample_action(mean, log_std, key):
    """A reparameterized sample of tanh(Normal(mean, std)) in [-1, 1] and its log-probability."""
    eps = jax.random.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * eps
    gaussian_log_prob = -0.5 * eps**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    tanh_log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))  # log(1 - tanh(u)^2)
    return jnp.tanh(u), jnp.sum(gaussian_log_prob - tanh_log_det, axis=-1)


class State(NamedTuple):
    actor: dict
    critic: dict  # two parameter sets stacked on a leading axis
    target_critic: dict
    log_alpha: jax.Array
    opt_state: tuple  # (actor, critic, alpha)
    grad_steps: jax.Array  # gradient steps taken


def experience(config: Config) -> rlkit.ExperienceSpec:
    """Uniform replay of single transitions; ``updates_per_step`` updates per environment step."""
    return rlkit.ExperienceSpec(
        kind="transitions",
        num_envs=config.num_envs,
        rollout_length=1,
        batch_size=config.batch_size,
        buffer_size=config.buffer_size,
        min_size=max(config.learning_starts, config.batch_size),
        updates_per_rollout=config.updates_per_step,
        gamma=config.gamma,
    )


def make(config: Config, spec: rlkit.EnvSpec, total_steps: int | None = None) -> rlkit.Agent:
    """Build SAC for a continuous-action environment with finite bounds."""
    if spec.action_kind != "continuous":
        raise ValueError("this SAC needs a continuous action space")
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    center, half_range = (high + low) / 2, (high - low) / 2
    actor = Actor(spec.num_actions, config.hidden_size)
    critic = Critic(config.hidden_size)
    twin_q = jax.vmap(critic.apply, in_axes=(0, None, None))  # [2, batch]
    optimizer = optax.adam(config.learning_rate)
    target_entropy = -spec.num_actions

    def init(key):
        actor_key, critic_key = jax.random.split(key)
        obs, action = jnp.zeros((1, *spec.observation_shape)), jnp.zeros((1, spec.num_actions))
        actor_params = actor.init(actor_key, obs)
        critic_params = jax.vmap(critic.init, in_axes=(0, None, None))(jax.random.split(critic_key), obs, action)
        log_alpha = jnp.zeros(())  # alpha starts at 1
        opt_state = (optimizer.init(actor_params), optimizer.init(critic_params), optimizer.init(log_alpha))
        return State(actor_params, critic_params, critic_params, log_alpha, opt_state, jnp.zeros((), jnp.int32))

    def act(state, obs, carry, key, deterministic=False):
        mean, log_std = actor.apply(state.actor, obs)
        if deterministic:
            action = jnp.tanh(mean)
        else:
            policy_key, uniform_key = jax.random.split(key)
            action, _ = sample_action(mean, log_std, policy_key)
            uniform = jax.random.uniform(uniform_key, action.shape, minval=-1.0, maxval=1.0)
            action = jnp.where(state.grad_steps == 0, uniform, action)  # no update yet: still warming up
        return rlkit.ActOutput(center + half_range * action, carry)

    def critic_loss(critic_params, state: State, batch: rlkit.Transition, key):
        alpha = jnp.exp(state.log_alpha)
        next_action, next_log_prob = sample_action(*actor.apply(state.actor, batch.obs_t), key)
        next_v = jnp.min(twin_q(state.target_critic, batch.obs_t, next_action), axis=0) - alpha * next_log_prob
        q = twin_q(critic_params, batch.obs_tm1, (batch.action_tm1 - center) / half_range)
        # rlax.td_learning: r + discount * v_t - q, with the target's gradient stopped.
        td_error = jax.vmap(jax.vmap(rlax.td_learning), in_axes=(0, None, None, None))(
            q, batch.reward_t, batch.discount_t, next_v
        )
        return 0.5 * jnp.sum(jnp.mean(td_error**2, axis=1)), jnp.mean(q)

    def actor_loss(actor_params, state: State, obs, key):
        action, log_prob = sample_action(*actor.apply(actor_params, obs), key)
        q = jnp.min(twin_q(state.critic, obs, action), axis=0)
        return jnp.mean(jnp.exp(state.log_alpha) * log_prob - q), log_prob

    def alpha_loss(log_alpha, log_prob):
        return -log_alpha * jnp.mean(log_prob + target_entropy)

    def update(state, batch: rlkit.Transition, key):
        critic_key, actor_key = jax.random.split(key)
        actor_opt, critic_opt, alpha_opt = state.opt_state
        # 1. Critics towards the soft TD target.
        (q_loss, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic, state, batch, critic_key)
        updates, critic_opt = optimizer.update(grads, critic_opt)
        state = state._replace(critic=optax.apply_updates(state.critic, updates))
        # 2. Actor against the updated critics.
        (pi_loss, log_prob), grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor, state, batch.obs_tm1, actor_key
        )
        updates, actor_opt = optimizer.update(grads, actor_opt)
        state = state._replace(actor=optax.apply_updates(state.actor, updates))
        # 3. Temperature towards the target entropy.
        grads = jax.grad(alpha_loss)(state.log_alpha, jax.lax.stop_gradient(log_prob))
        updates, alpha_opt = optimizer.update(grads, alpha_opt)
        state = state._replace(log_alpha=optax.apply_updates(state.log_alpha, updates))
        # 4. Target critics by Polyak averaging.
        target = optax.incremental_update(state.critic, state.target_critic, config.tau)
        state = state._replace(target_critic=target, opt_state=(actor_opt, critic_opt, alpha_opt),
                               grad_steps=state.grad_steps + 1)
        metrics = {"loss": q_loss, "actor_loss": pi_loss, "q_mean": q_mean, "alpha": jnp.exp(state.log_alpha),
                   "entropy": -jnp.mean(log_prob)}
        return state, metrics

    return rlkit.Agent(init, act, update)


def parse_args() -> argparse.Namespace:
    """--env, --steps, --seeds, and one flag per Config field (e.g. --learning-rate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1", help="gymnax environment id (continuous actions)")
    parser.add_argument("--steps", type=float, default=2e4, help="environment steps per seed")
    parser.add_argument("--seeds", type=int, default=2, help="seeds, trained vmapped in one compile")
    for field in dataclasses.fields(Config):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    return parser.parse_args()


def main():
    args = parse_args()
    config = Config(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Config)})
    env = rlkit.make_env(args.env)
    run = rlkit.RunConfig(total_steps=int(args.steps))
    # make_trainer needs only an object with this file's `make` and `experience`.
    trainer = rlkit.make_trainer(types.SimpleNamespace(make=make, experience=experience), config, env, run)
    print(f"SAC on {args.env}: {args.seeds} seed(s) x {trainer.plan.total_steps:,} steps; compiling...")

    def on_chunk(index, metrics, elapsed):
        print(
            f"chunk {index + 1:>2}/{trainer.plan.num_chunks}  steps {int(metrics['env_steps'].max()):>9,}"
            f"  episode return {np.nanmean(metrics['episode_return']):8.1f}"
            f"  critic loss {np.nanmean(metrics['loss']):7.3f}  alpha {np.nanmean(metrics['alpha']):.3f}"
            f"  {elapsed:6.1f} s"
        )

    result = rlkit.run_training(trainer, seeds=range(args.seeds), on_chunk=on_chunk)
    per_seed = result.eval_returns.mean(axis=1)
    print(f"compile {result.compile_seconds:.1f} s, run {result.run_seconds:.1f} s "
          f"({result.steps_per_second:,.0f} steps/s)")
    print("greedy eval return per seed:", " ".join(f"{r:.1f}" for r in per_seed))
    print(f"mean greedy eval return: {per_seed.mean():.1f}")


if __name__ == "__main__":
    main()
