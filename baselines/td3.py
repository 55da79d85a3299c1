"""TD3 in one file, to copy and change: the networks, the agent and the training run.

Fujimoto et al., "Addressing Function Approximation Error in Actor-Critic Methods", 2018
(https://arxiv.org/abs/1802.09477). A deterministic tanh actor rescaled to the action bounds,
twin critics (vmapped parameter sets) whose minimum forms the target, target policy smoothing,
and an actor and target networks updated every ``policy_delay`` critic updates. Exploration adds
Gaussian noise; uniform random actions until learning starts (as in SB3). Noise scales are
fractions of the half action range (noise is added in [-1, 1], before rescaling). DDPG is this
with one critic, ``--target-noise 0`` and ``--policy-delay 1``.

The agent is three pure functions, ``rlkit.Agent(init, act, update)``. rlkit's loop owns the
replay buffer: it steps the environments, stores the transitions, and once ``learning_starts``
transitions are in, hands ``update`` a sampled batch of ``rlkit.Transition`` whose ``discount_t``
is ``gamma`` (0 where the episode terminated, so a time-limit truncation bootstraps).

    python baselines/td3.py --env Pendulum-v1 --steps 3e4 --seeds 2     # about -150 (greedy, 2 seeds)
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
    """Settings that learn Pendulum-v1 in 3e4 steps; ``tau`` is the Polyak step per actor update."""

    num_envs: int = 1
    updates_per_step: int = 1  # critic gradient steps after each (vectorized) environment step
    buffer_size: int = 30_000
    batch_size: int = 128
    learning_starts: int = 1_000  # uniformly random actions until then
    learning_rate: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    exploration_noise: float = 0.1
    target_noise: float = 0.2
    target_noise_clip: float = 0.5
    policy_delay: int = 2
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
    """The action in [-1, 1]."""

    action_dim: int
    hidden_size: int

    @nn.compact
    def __call__(self, obs):
        return jnp.tanh(mlp(obs, self.hidden_size, self.action_dim))


class Critic(nn.Module):
    """Q(s, a) with the action in [-1, 1]."""

    hidden_size: int

    @nn.compact
    def __call__(self, obs, action):
        return mlp(jnp.concatenate([obs, action], axis=-1), self.hidden_size, 1)[..., 0]


class Params(NamedTuple):
    actor: dict
    critic: dict  # two parameter sets stacked on a leading axis


class State(NamedTuple):
    params: Params
    target: Params
    opt_state: tuple  # (actor, critic)
    grad_steps: jax.Array  # critic gradient steps taken


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
    """Build TD3 for a continuous-action environment with finite bounds."""
    if spec.action_kind != "continuous":
        raise ValueError("this TD3 needs a continuous action space")
    low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
    center, half_range = (high + low) / 2, (high - low) / 2
    actor = Actor(spec.num_actions, config.hidden_size)
    critic = Critic(config.hidden_size)
    twin_q = jax.vmap(critic.apply, in_axes=(0, None, None))  # [2, batch]
    optimizer = optax.adam(config.learning_rate)

    def init(key):
        actor_key, critic_key = jax.random.split(key)
        obs, action = jnp.zeros((1, *spec.observation_shape)), jnp.zeros((1, spec.num_actions))
        params = Params(
            actor.init(actor_key, obs),
            jax.vmap(critic.init, in_axes=(0, None, None))(jax.random.split(critic_key), obs, action),
        )
        opt_state = (optimizer.init(params.actor), optimizer.init(params.critic))
        return State(params, params, opt_state, jnp.zeros((), jnp.int32))

    def act(state, obs, carry, key, deterministic=False):
        action = actor.apply(state.params.actor, obs)
        if not deterministic:
            noise_key, uniform_key = jax.random.split(key)
            noisy = rlax.add_gaussian_noise(noise_key, action, config.exploration_noise)
            uniform = jax.random.uniform(uniform_key, action.shape, minval=-1.0, maxval=1.0)
            action = jnp.where(state.grad_steps == 0, uniform, jnp.clip(noisy, -1.0, 1.0))
        return rlkit.ActOutput(center + half_range * action, carry)

    def critic_loss(critic_params, state: State, batch: rlkit.Transition, key):
        # Target policy smoothing: clipped noise on the target actor's action.
        next_action = actor.apply(state.target.actor, batch.obs_t)
        noise = jnp.clip(config.target_noise * jax.random.normal(key, next_action.shape),
                         -config.target_noise_clip, config.target_noise_clip)
        next_action = jnp.clip(next_action + noise, -1.0, 1.0)
        next_q = jnp.min(twin_q(state.target.critic, batch.obs_t, next_action), axis=0)
        q = twin_q(critic_params, batch.obs_tm1, (batch.action_tm1 - center) / half_range)
        # rlax.td_learning: r + discount * v_t - q, with the target's gradient stopped.
        td_error = jax.vmap(jax.vmap(rlax.td_learning), in_axes=(0, None, None, None))(
            q, batch.reward_t, batch.discount_t, next_q
        )
        return 0.5 * jnp.sum(jnp.mean(td_error**2, axis=1)), jnp.mean(q)

    def actor_loss(actor_params, critic_params, obs):
        first_critic = jax.tree.map(lambda p: p[0], critic_params)
        return -jnp.mean(critic.apply(first_critic, obs, actor.apply(actor_params, obs)))

    def actor_and_targets(state: State, batch: rlkit.Transition):
        actor_opt, critic_opt = state.opt_state
        grads = jax.grad(actor_loss)(state.params.actor, state.params.critic, batch.obs_tm1)
        updates, actor_opt = optimizer.update(grads, actor_opt)
        params = state.params._replace(actor=optax.apply_updates(state.params.actor, updates))
        target = optax.incremental_update(params, state.target, config.tau)
        return State(params, target, (actor_opt, critic_opt), state.grad_steps)

    def update(state, batch: rlkit.Transition, key):
        actor_opt, critic_opt = state.opt_state
        (loss, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.params.critic, state, batch, key)
        updates, critic_opt = optimizer.update(grads, critic_opt)
        params = state.params._replace(critic=optax.apply_updates(state.params.critic, updates))
        state = State(params, state.target, (actor_opt, critic_opt), state.grad_steps + 1)
        # The delayed half: every policy_delay critic updates, one actor step and the targets.
        state = jax.lax.cond(state.grad_steps % config.policy_delay == 0, actor_and_targets,
                             lambda state, batch: state, state, batch)
        return state, {"loss": loss, "q_mean": q_mean}

    return rlkit.Agent(init, act, update)


def parse_args() -> argparse.Namespace:
    """--env, --steps, --seeds, and one flag per Config field (e.g. --learning-rate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1", help="gymnax environment id (continuous actions)")
    parser.add_argument("--steps", type=float, default=3e4, help="environment steps per seed")
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
    print(f"TD3 on {args.env}: {args.seeds} seed(s) x {trainer.plan.total_steps:,} steps; compiling...")

    def on_chunk(index, metrics, elapsed):
        print(
            f"chunk {index + 1:>2}/{trainer.plan.num_chunks}  steps {int(metrics['env_steps'].max()):>9,}"
            f"  episode return {np.nanmean(metrics['episode_return']):8.1f}"
            f"  critic loss {np.nanmean(metrics['loss']):7.3f}  {elapsed:6.1f} s"
        )

    result = rlkit.run_training(trainer, seeds=range(args.seeds), on_chunk=on_chunk)
    per_seed = result.eval_returns.mean(axis=1)
    print(f"compile {result.compile_seconds:.1f} s, run {result.run_seconds:.1f} s "
          f"({result.steps_per_second:,.0f} steps/s)")
    print("greedy eval return per seed:", " ".join(f"{r:.1f}" for r in per_seed))
    print(f"mean greedy eval return: {per_seed.mean():.1f}")


if __name__ == "__main__":
    main()
