"""DQN in one file, to copy and change: the network, the agent and the training run.

Mnih et al., "Human-level control through deep reinforcement learning", 2015; van Hasselt et al.,
"Deep Reinforcement Learning with Double Q-learning", 2016. Double Q-learning (rlax), a target
network (copied or Polyak-averaged), epsilon-greedy exploration decaying linearly, an annealed
learning rate and global-norm gradient clipping.

The agent is three pure functions, ``rlkit.Agent(init, act, update)``. rlkit's loop owns the
replay buffer: it steps the environments, stores the transitions, and once ``learning_starts``
transitions are in, hands ``update`` a sampled batch of ``rlkit.Transition`` whose ``discount_t``
already holds ``gamma ** n_step`` (0 where the episode terminated, so truncation bootstraps).

    python baselines/dqn.py --env CartPole-v1 --steps 5e5 --seeds 2 --learning-rate 1e-4
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
    """``target_update_freq`` and ``epsilon_decay_steps`` count environment steps (all envs)."""

    num_envs: int = 10
    num_steps: int = 1  # environment steps per env between updates
    buffer_size: int = 50_000
    batch_size: int = 128
    learning_starts: int = 10_000  # transitions collected (uniformly at random) before learning
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True  # linearly to 0 over the run
    gamma: float = 0.99
    n_step: int = 1
    target_update_freq: int = 500
    tau: float = 1.0  # 1.0: copy the online weights; < 1: Polyak averaging
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 250_000
    max_grad_norm: float = 10.0
    hidden_size: int = 120

    def __post_init__(self):
        if self.buffer_size % self.num_envs:
            raise ValueError("num_envs must divide buffer_size")
        if self.learning_starts > self.buffer_size:
            raise ValueError("learning_starts must be <= buffer_size")


class QNetwork(nn.Module):
    """A two-layer ReLU MLP with one Q-value per action."""

    num_actions: int
    hidden_size: int = 120
    observation_ndim: int = 1  # axes of one observation (3 for an image): flattened first

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(*obs.shape[: obs.ndim - self.observation_ndim], -1)  # an image, flattened
        x = nn.relu(nn.Dense(self.hidden_size)(obs))
        x = nn.relu(nn.Dense(self.hidden_size)(x))
        return nn.Dense(self.num_actions)(x)


class State(NamedTuple):
    params: dict
    target_params: dict
    opt_state: optax.OptState
    grad_steps: jax.Array  # gradient steps taken


def experience(config: Config) -> rlkit.ExperienceSpec:
    """Uniform replay of n-step transitions; one update per ``num_envs * num_steps`` env steps."""
    return rlkit.ExperienceSpec(
        kind="transitions",
        num_envs=config.num_envs,
        rollout_length=config.num_steps,
        batch_size=config.batch_size,
        buffer_size=config.buffer_size,
        min_size=max(config.learning_starts, config.batch_size),
        n_step=config.n_step,
        gamma=config.gamma,
    )


def double_q_loss(params, target_params, batch: rlkit.Transition, network: QNetwork):
    """Mean squared double-Q TD error: the online net picks the next action, the target net values it."""
    q_tm1 = network.apply(params, batch.obs_tm1)
    q_t_value = network.apply(target_params, batch.obs_t)
    q_t_selector = network.apply(params, batch.obs_t)
    td_error = jax.vmap(rlax.double_q_learning)(
        q_tm1, batch.action_tm1, batch.reward_t, batch.discount_t, q_t_value, q_t_selector
    )
    loss = 0.5 * jnp.mean(td_error**2)
    return loss, {"loss": loss, "q_mean": jnp.mean(q_tm1)}


def make(config: Config, spec: rlkit.EnvSpec, total_steps: int | None = None) -> rlkit.Agent:
    """Build DQN for a discrete-action environment; ``total_steps`` sets the lr annealing horizon."""
    network = QNetwork(spec.num_actions, config.hidden_size, len(spec.observation_shape))
    env_steps_per_update = config.num_envs * config.num_steps
    learning_rate = config.learning_rate
    if config.anneal_lr and total_steps:
        num_updates = (total_steps - config.learning_starts) // env_steps_per_update
        learning_rate = optax.linear_schedule(learning_rate, 0.0, max(1, num_updates))
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))
    # Both schedules count gradient steps, one per `env_steps_per_update` environment steps.
    target_every = max(1, config.target_update_freq // env_steps_per_update)
    epsilon = optax.linear_schedule(
        config.epsilon_start, config.epsilon_end, max(1, config.epsilon_decay_steps // env_steps_per_update)
    )

    def init(key):
        params = network.init(key, jnp.zeros((1, *spec.observation_shape)))
        return State(params, params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, obs, carry, key, deterministic=False):
        q_values = network.apply(state.params, obs)
        explore = 0.0 if deterministic else epsilon(state.grad_steps)
        action = rlax.epsilon_greedy(explore).sample(key, q_values)
        return rlkit.ActOutput(action, carry)

    def update(state, batch: rlkit.Transition, key):
        grads, metrics = jax.grad(double_q_loss, has_aux=True)(
            state.params, state.target_params, batch, network
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = state.grad_steps + 1
        blend = jnp.where(count % target_every == 0, config.tau, 0.0)
        target_params = optax.incremental_update(params, state.target_params, blend)
        metrics["epsilon"] = epsilon(count)
        return State(params, target_params, opt_state, count), metrics

    return rlkit.Agent(init, act, update)


def parse_args() -> argparse.Namespace:
    """--env, --steps, --seeds, and one flag per Config field (e.g. --learning-rate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", help="gymnax environment id")
    parser.add_argument("--steps", type=float, default=5e5, help="environment steps per seed")
    parser.add_argument("--seeds", type=int, default=2, help="seeds, trained vmapped in one compile")
    for field in dataclasses.fields(Config):
        parse = type(field.default)
        if parse is bool:
            parse = lambda text: text.lower() in ("1", "true", "yes")  # noqa: E731
        parser.add_argument("--" + field.name.replace("_", "-"), type=parse, default=field.default)
    return parser.parse_args()


def main():
    args = parse_args()
    config = Config(**{field.name: getattr(args, field.name) for field in dataclasses.fields(Config)})
    env = rlkit.make_env(args.env)
    run = rlkit.RunConfig(total_steps=int(args.steps))
    # make_trainer needs only an object with this file's `make` and `experience`.
    trainer = rlkit.make_trainer(types.SimpleNamespace(make=make, experience=experience), config, env, run)
    print(f"DQN on {args.env}: {args.seeds} seed(s) x {trainer.plan.total_steps:,} steps; compiling...")

    def on_chunk(index, metrics, elapsed):
        print(
            f"chunk {index + 1:>2}/{trainer.plan.num_chunks}  steps {int(metrics['env_steps'].max()):>9,}"
            f"  episode return {np.nanmean(metrics['episode_return']):7.1f}"
            f"  loss {metrics['loss'].mean():7.3f}  epsilon {metrics['epsilon'].mean():.3f}"
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
