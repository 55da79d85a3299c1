"""PPO in one file, to copy and change: the network, the agent and the training run.

Schulman et al., "Proximal Policy Optimization Algorithms", 2017 (https://arxiv.org/abs/1707.06347).
Clipped surrogate objective, generalized advantage estimation, several epochs of minibatch updates
per rollout, an annealed learning rate and global-norm gradient clipping. The defaults are
PureJaxRL's CartPole settings.

Discrete actions get a softmax policy; continuous ones (e.g. ``--env Pendulum-v1``) a diagonal
Gaussian with a learned state-independent log-std, its samples clipped to the action bounds when
they reach the environment (the log-probabilities use the unclipped sample). rlax's distribution
helpers (``rlax.softmax``, ``rlax.gaussian_diagonal``) give both the same three calls.

The agent is three pure functions, ``rlkit.Agent(init, act, update)``; rlkit's loop steps the
environments, hands each fresh rollout (an ``rlkit.Trajectory`` ``[num_steps, num_envs, ...]``)
to ``update``, and vmaps the whole run over seeds in one compile.

    python baselines/ppo.py --env CartPole-v1 --steps 5e5 --seeds 2 --learning-rate 3e-4
    python baselines/ppo.py --env Pendulum-v1 --steps 1e6 --num-envs 16 --num-steps 64 --gamma 0.95 \
        --learning-rate 1e-3 --ent-coef 0        # about -260 (2 seeds) without normalization
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
    num_envs: int = 4
    num_steps: int = 128  # rollout length per environment
    num_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True  # linearly to 0 over the run
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden_size: int = 64

    def __post_init__(self):
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError("num_minibatches must divide num_envs * num_steps")


class ActorCritic(nn.Module):
    """Separate two-layer tanh MLPs; returns (policy parameters, value).

    The policy parameters are ``(logits,)`` for discrete actions and ``(mean, std)`` for continuous
    ones, the arguments rlax's ``softmax()`` / ``gaussian_diagonal()`` take after the sample.
    """

    action_size: int
    continuous: bool
    hidden_size: int = 64
    observation_ndim: int = 1  # axes of one observation (3 for an image): flattened first

    @nn.compact
    def __call__(self, obs):
        obs = obs.reshape(*obs.shape[: obs.ndim - self.observation_ndim], -1)  # an image, flattened

        def dense(features, scale=np.sqrt(2)):
            # rlkit's orthogonal init draws what flax's does, and is safe to vmap over seeds on a CPU
            return nn.Dense(features, kernel_init=rlkit.networks.orthogonal(scale))

        actor = nn.tanh(dense(self.hidden_size)(nn.tanh(dense(self.hidden_size)(obs))))
        critic = nn.tanh(dense(self.hidden_size)(nn.tanh(dense(self.hidden_size)(obs))))
        head = dense(self.action_size, 0.01)(actor)
        value = dense(1, 1.0)(critic).squeeze(-1)
        if not self.continuous:
            return (head,), value
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
        return (head, jnp.broadcast_to(jnp.exp(log_std), head.shape)), value


class State(NamedTuple):
    params: dict
    opt_state: optax.OptState


class Minibatch(NamedTuple):
    """Flattened rollout data one gradient step learns from."""

    obs: jax.Array
    action: jax.Array  # continuous: the unclipped Gaussian sample
    log_prob: jax.Array  # of the action under the policy that collected it
    value: jax.Array  # value estimate when the action was taken
    advantage: jax.Array
    target: jax.Array  # value target: advantage + value


def experience(config: Config) -> rlkit.ExperienceSpec:
    """PPO learns from each fresh rollout, once."""
    return rlkit.ExperienceSpec(kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps)


def gae(reward, terminated, truncated, value, next_value, gamma, gae_lambda):
    """GAE over one environment's rollout ``[T]``, correct across episode ends.

    ``next_value`` is the value of the observation that followed each step (the final observation
    at an episode end). A truncated step still bootstraps from it; a terminated one does not; the
    lambda-recursion stops at both.
    """
    reward = reward + jnp.where(truncated, gamma * next_value, 0.0)
    discount = jnp.where(terminated | truncated, 0.0, gamma)
    values = jnp.concatenate([value, next_value[-1:]])
    return rlax.truncated_generalized_advantage_estimation(reward, discount, gae_lambda, values)


def ppo_loss(params, batch: Minibatch, network: ActorCritic, distribution, config: Config):
    """Clipped surrogate + clipped value loss - entropy bonus; returns (loss, metrics)."""
    policy, value = network.apply(params, batch.obs)
    log_prob = distribution.logprob(batch.action, *policy)
    ratio = jnp.exp(log_prob - batch.log_prob)
    advantage = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio, advantage, config.clip_eps)

    value_clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
    value_loss = 0.5 * jnp.mean(
        jnp.maximum((value - batch.target) ** 2, (value_clipped - batch.target) ** 2)
    )
    entropy = jnp.mean(distribution.entropy(*policy))
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    return loss, {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def make(config: Config, spec: rlkit.EnvSpec, total_steps: int | None = None) -> rlkit.Agent:
    """Build PPO for ``spec``'s action space; ``total_steps`` sets the lr annealing horizon."""
    continuous = spec.action_kind == "continuous"
    network = ActorCritic(spec.num_actions, continuous, config.hidden_size, len(spec.observation_shape))
    distribution = rlax.gaussian_diagonal() if continuous else rlax.softmax()
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches
    steps_per_rollout = config.num_epochs * config.num_minibatches
    learning_rate = config.learning_rate
    if config.anneal_lr and total_steps:
        learning_rate = optax.linear_schedule(
            learning_rate, 0.0, (total_steps // batch_size) * steps_per_rollout
        )
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate, eps=1e-5)
    )

    def init(key):
        params = network.init(key, jnp.zeros((1, *spec.observation_shape)))
        return State(params, optimizer.init(params))

    def act(state, obs, carry, key, deterministic=False):
        policy, value = network.apply(state.params, obs)
        if deterministic:  # the mode: the mean, or the most likely action
            action = policy[0] if continuous else jnp.argmax(policy[0], axis=-1)
        else:
            action = distribution.sample(key, *policy)
        extras = {"log_prob": distribution.logprob(action, *policy), "value": value, "raw_action": action}
        if continuous:
            action = jnp.clip(action, spec.action_low, spec.action_high)
        return rlkit.ActOutput(action, carry, extras)

    def gradient_step(state: State, batch: Minibatch):
        grads, metrics = jax.grad(ppo_loss, has_aux=True)(state.params, batch, network, distribution, config)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return State(optax.apply_updates(state.params, updates), opt_state), metrics

    def update(state, rollout: rlkit.Trajectory, key):
        value = rollout.extras["value"]
        _, next_value = network.apply(state.params, rollout.next_obs)
        advantage = jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
            rollout.reward, rollout.terminated, rollout.truncated, value, next_value,
            config.gamma, config.gae_lambda,
        )
        data = Minibatch(
            rollout.obs, rollout.extras["raw_action"], rollout.extras["log_prob"], value, advantage, advantage + value
        )
        data = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), data)
        # One shuffle per epoch, all epochs' minibatches laid out in a row: [epochs * minibatches, size].
        order = jax.vmap(lambda k: jax.random.permutation(k, batch_size))(
            jax.random.split(key, config.num_epochs)
        ).reshape(steps_per_rollout, minibatch_size)
        minibatches = jax.tree.map(lambda x: x[order], data)
        state, metrics = jax.lax.scan(gradient_step, state, minibatches)
        return state, jax.tree.map(jnp.mean, metrics)

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
    print(f"PPO on {args.env}: {args.seeds} seed(s) x {trainer.plan.total_steps:,} steps; compiling...")

    def on_chunk(index, metrics, elapsed):
        print(
            f"chunk {index + 1:>2}/{trainer.plan.num_chunks}  steps {int(metrics['env_steps'].max()):>9,}"
            f"  episode return {np.nanmean(metrics['episode_return']):7.1f}"
            f"  loss {metrics['loss'].mean():7.3f}  {elapsed:6.1f} s"
        )

    result = rlkit.run_training(trainer, seeds=range(args.seeds), on_chunk=on_chunk)
    per_seed = result.eval_returns.mean(axis=1)
    print(f"compile {result.compile_seconds:.1f} s, run {result.run_seconds:.1f} s "
          f"({result.steps_per_second:,.0f} steps/s)")
    print("greedy eval return per seed:", " ".join(f"{r:.1f}" for r in per_seed))
    print(f"mean greedy eval return: {per_seed.mean():.1f}")


if __name__ == "__main__":
    main()
