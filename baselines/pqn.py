"""PQN in one file, to copy and change: the network, the agent and the training run.

Gallici et al., "Simplify and Accelerate Reinforcement Learning" (purejaxql), 2024
(https://arxiv.org/abs/2407.04811). No replay buffer and no target network: many environments
step in parallel under an epsilon-greedy policy, and a LayerNorm Q-network regresses on each
rollout's Peng Q(lambda) returns for several epochs of minibatches, like PPO. RAdam, an
annealed learning rate, global-norm gradient clipping and a reward scale. The defaults are
purejaxql's CartPole settings with a smaller 64-64 network.

The agent is three pure functions, ``rlkit.Agent(init, act, update)``; rlkit's loop steps the
environments, hands each fresh rollout (an ``rlkit.Trajectory`` ``[num_steps, num_envs, ...]``)
to ``update``, and vmaps the whole run over seeds in one compile. At a time-limit truncation the
return bootstraps from the final observation (``next_obs``); at a termination it does not.

    python baselines/pqn.py --env CartPole-v1 --steps 5e5 --seeds 2 --td-lambda 0.9
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
    """``epsilon_decay_steps`` counts environment steps (all envs)."""

    num_envs: int = 32
    num_steps: int = 64  # rollout length per environment
    num_epochs: int = 4
    num_minibatches: int = 16
    learning_rate: float = 1e-4
    anneal_lr: bool = True  # linearly to 0 over the run
    gamma: float = 0.99
    td_lambda: float = 0.95
    reward_scale: float = 0.1
    epsilon_start: float = 1.0
    epsilon_end: float = 0.2
    epsilon_decay_steps: int = 100_000
    max_grad_norm: float = 10.0
    hidden_size: int = 64

    def __post_init__(self):
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError("num_minibatches must divide num_envs * num_steps")


class QNetwork(nn.Module):
    """Two Dense -> LayerNorm -> ReLU layers, then one Q-value per action."""

    num_actions: int
    hidden_size: int = 64
    observation_ndim: int = 1  # axes of one observation (3 for an image): flattened first

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(*obs.shape[: obs.ndim - self.observation_ndim], -1)  # an image, flattened
        x = obs
        for _ in range(2):
            x = nn.relu(nn.LayerNorm()(nn.Dense(self.hidden_size)(x)))
        return nn.Dense(self.num_actions)(x)


class State(NamedTuple):
    params: dict
    opt_state: optax.OptState
    iterations: jax.Array  # loop iterations (rollouts) learned from


def experience(config: Config) -> rlkit.ExperienceSpec:
    """Each fresh rollout goes straight to ``update``."""
    return rlkit.ExperienceSpec(kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps)


def q_lambda_returns(reward, terminated, truncated, next_value, gamma, td_lambda):
    """Peng's Q(lambda) returns over one environment's rollout ``[T]``.

    G_t = r_t + gamma_t ((1 - lambda_t) v_t + lambda_t G_{t+1}), v_t = max_a Q(next_obs_t).
    gamma_t = 0 at a termination (no bootstrap); lambda_t = 0 at any episode end, so a
    truncated step bootstraps from its final observation and nothing reaches past a reset.
    """
    discount = jnp.where(terminated, 0.0, gamma)
    lambda_ = jnp.where(terminated | truncated, 0.0, td_lambda)
    return rlax.lambda_returns(reward, discount, next_value, lambda_, stop_target_gradients=True)


def make(config: Config, spec: rlkit.EnvSpec, total_steps: int | None = None) -> rlkit.Agent:
    """Build PQN for a discrete-action environment; ``total_steps`` sets the lr annealing horizon."""
    network = QNetwork(spec.num_actions, config.hidden_size, len(spec.observation_shape))
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches
    learning_rate = config.learning_rate
    if config.anneal_lr and total_steps:
        num_steps = (total_steps // batch_size) * config.num_epochs * config.num_minibatches
        learning_rate = optax.linear_schedule(learning_rate, 0.0, max(1, num_steps))
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.radam(learning_rate))
    # Epsilon counts rollouts, one per `batch_size` environment steps.
    epsilon = optax.linear_schedule(
        config.epsilon_start, config.epsilon_end, max(1, config.epsilon_decay_steps // batch_size)
    )

    def init(key):
        params = network.init(key, jnp.zeros((1, *spec.observation_shape)))
        return State(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, obs, carry, key, deterministic=False):
        q_values = network.apply(state.params, obs)
        explore = 0.0 if deterministic else epsilon(state.iterations)
        action = rlax.epsilon_greedy(explore).sample(key, q_values)
        return rlkit.ActOutput(action, carry)

    def loss_fn(params, batch):
        q_values = network.apply(params, batch["obs"])
        q_taken = jnp.take_along_axis(q_values, batch["action"][:, None], axis=-1)[:, 0]
        loss = 0.5 * jnp.mean((q_taken - batch["target"]) ** 2)
        return loss, {"loss": loss, "q_mean": jnp.mean(q_taken)}

    def minibatch_step(learner, batch):
        params, opt_state = learner
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def update(state, rollout: rlkit.Trajectory, key):
        # Targets from the parameters that collected the rollout, fixed for all epochs.
        next_value = jnp.max(network.apply(state.params, rollout.next_obs), axis=-1)
        target = jax.vmap(q_lambda_returns, in_axes=(1, 1, 1, 1, None, None), out_axes=1)(
            config.reward_scale * rollout.reward, rollout.terminated, rollout.truncated,
            next_value, config.gamma, config.td_lambda,
        )
        data = {"obs": rollout.obs, "action": rollout.action, "target": target}
        data = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), data)

        def epoch(learner, epoch_key):
            order = jax.random.permutation(epoch_key, batch_size)
            minibatches = jax.tree.map(
                lambda x: x[order].reshape(config.num_minibatches, minibatch_size, *x.shape[1:]), data
            )
            return jax.lax.scan(minibatch_step, learner, minibatches)

        (params, opt_state), metrics = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, config.num_epochs)
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["epsilon"] = epsilon(state.iterations + 1)
        return State(params, opt_state, state.iterations + 1), metrics

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
    print(f"PQN on {args.env}: {args.seeds} seed(s) x {trainer.plan.total_steps:,} steps; compiling...")

    def on_chunk(index, metrics, elapsed):
        print(
            f"chunk {index + 1:>2}/{trainer.plan.num_chunks}  steps {int(metrics['env_steps'].max()):>9,}"
            f"  episode return {np.nanmean(metrics['episode_return']):7.1f}"
            f"  loss {metrics['loss'].mean():7.4f}  epsilon {metrics['epsilon'].mean():.3f}"
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
