"""Recurrent PPO in one file, to copy and change: the network, the agent and the training run.

Schulman et al., "Proximal Policy Optimization Algorithms", 2017 (https://arxiv.org/abs/1707.06347),
with a GRU core (Cho et al., 2014) between an MLP torso and the actor and critic heads, trained by
backpropagation through time over whole rollouts, as in PureJaxRL's and CleanRL's recurrent PPO.
For partially observed environments: by default CartPole-v1 with both velocities hidden (only cart
position and pole angle observed), which a feedforward policy cannot balance for long.

The agent is ``rlkit.Agent(init, act, update, init_carry)``. ``act`` returns the GRU state it acted
from in ``extras["memory"]``, so the rollout (an ``rlkit.Trajectory`` ``[num_steps, num_envs, ...]``)
stores it with every step; rlkit's loop restarts the carry from ``init_carry`` (zeros) when an
episode ends. ``update`` unrolls the GRU from the memory stored at the rollout's first step and
restarts it wherever an episode started, exactly as acting did; minibatches split the rollout over
environments, so every sequence stays whole.

    python baselines/recurrent_ppo.py --steps 1e6 --seeds 2    # velocities hidden: 367.6, 490.3 (77 s)
    python baselines/recurrent_ppo.py --steps 1e6 --seeds 4    # 439.8, 500.0, 485.7, 481.4: 476.7 (135 s)
    python baselines/recurrent_ppo.py --steps 1e6 --seeds 2 --observe all

(Greedy returns on a 2-core CPU, compile included; a seed's figure depends on how many are vmapped.)
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
    num_envs: int = 64
    num_steps: int = 32  # rollout length per environment: the sequences backpropagated through
    num_epochs: int = 4
    num_minibatches: int = 2  # each takes num_envs / num_minibatches environments' whole rollouts
    learning_rate: float = 1e-3
    anneal_lr: bool = True  # linearly to 0 over the run
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden_size: int = 64  # the torso, the GRU and each head

    def __post_init__(self):
        if self.num_envs % self.num_minibatches:
            raise ValueError("num_minibatches must divide num_envs (minibatches split the environments)")


class RecurrentActorCritic(nn.Module):
    """One step, ``(memory [n, hidden], obs [n, ...]) -> (memory, logits, value)``: a tanh torso,
    a GRU, and separate tanh actor and critic heads on its output."""

    num_actions: int
    hidden_size: int = 64
    observation_ndim: int = 1  # axes of one observation (3 for an image): flattened first

    @nn.compact
    def __call__(self, memory, obs):
        obs = obs.reshape(*obs.shape[: obs.ndim - self.observation_ndim], -1)  # an image, flattened

        def dense(features, scale=np.sqrt(2)):
            # rlkit's orthogonal init draws what flax's does, and is safe to vmap over seeds on a CPU
            return nn.Dense(features, kernel_init=rlkit.networks.orthogonal(scale))

        x = nn.tanh(dense(self.hidden_size)(obs))
        memory, x = nn.GRUCell(self.hidden_size, recurrent_kernel_init=rlkit.networks.orthogonal(1.0))(memory, x)
        logits = dense(self.num_actions, 0.01)(nn.tanh(dense(self.hidden_size)(x)))
        value = dense(1, 1.0)(nn.tanh(dense(self.hidden_size)(x))).squeeze(-1)
        return memory, logits, value


class State(NamedTuple):
    params: dict
    opt_state: optax.OptState


class Sequences(NamedTuple):
    """Whole rollouts of some environments, ``[num_steps, envs, ...]``, that one gradient step learns from."""

    memory: jax.Array  # [1, envs, hidden]: the GRU state at the rollout's first step
    obs: jax.Array
    starts: jax.Array  # True where a step starts an episode inside the rollout (the GRU restarts there)
    action: jax.Array
    log_prob: jax.Array  # of the action under the policy that collected it
    value: jax.Array  # value estimate when the action was taken
    advantage: jax.Array
    target: jax.Array  # value target: advantage + value


def experience(config: Config) -> rlkit.ExperienceSpec:
    """Recurrent PPO learns from each fresh rollout, once, whole."""
    return rlkit.ExperienceSpec(kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps)


def unroll(network: RecurrentActorCritic, params, memory, obs, starts):
    """Logits, values and the memory after each step ``[T, n, ...]``, the GRU run from ``memory`` over
    ``obs [T, n, ...]`` and restarted from zeros where ``starts`` (as acting restarted it)."""

    def step(memory, obs_t):
        memory, logits, value = network.apply(params, memory, obs_t)
        return memory, (logits, value)

    (logits, value), memory_after = rlkit.networks.unroll(step, memory, obs, starts, jnp.zeros_like(memory))
    return logits, value, memory_after


def gae(reward, terminated, truncated, value, next_value, gamma, gae_lambda):
    """GAE over one environment's rollout ``[T]``, correct across episode ends.

    ``next_value`` is the value of the observation that followed each step (the final observation
    at an episode end). A truncated step still bootstraps from it; a terminated one does not; the
    lambda-recursion stops at both.
    """
    reward = reward + jnp.where(truncated & ~terminated, gamma * next_value, 0.0)
    discount = jnp.where(terminated | truncated, 0.0, gamma)
    values = jnp.concatenate([value, next_value[-1:]])
    return rlax.truncated_generalized_advantage_estimation(reward, discount, gae_lambda, values)


def ppo_loss(params, batch: Sequences, network: RecurrentActorCritic, config: Config):
    """Clipped surrogate + clipped value loss - entropy bonus, through time; returns (loss, metrics)."""
    distribution = rlax.softmax()
    logits, value, _ = unroll(network, params, batch.memory[0], batch.obs, batch.starts)
    ratio = jnp.exp(distribution.logprob(batch.action, logits) - batch.log_prob)
    advantage = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio.ravel(), advantage.ravel(), config.clip_eps)

    value_clipped = batch.value + jnp.clip(value - batch.value, -config.clip_eps, config.clip_eps)
    value_loss = 0.5 * jnp.mean(
        jnp.maximum((value - batch.target) ** 2, (value_clipped - batch.target) ** 2)
    )
    entropy = jnp.mean(distribution.entropy(logits))
    loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
    return loss, {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def make(config: Config, spec: rlkit.EnvSpec, total_steps: int | None = None) -> rlkit.Agent:
    """Build recurrent PPO for ``spec``'s discrete actions; ``total_steps`` sets the lr annealing horizon."""
    if spec.action_kind != "discrete":
        raise ValueError("this recurrent PPO has a softmax policy: it needs discrete actions")
    network = RecurrentActorCritic(spec.num_actions, config.hidden_size, len(spec.observation_shape))
    envs_per_minibatch = config.num_envs // config.num_minibatches
    steps_per_rollout = config.num_epochs * config.num_minibatches
    learning_rate = config.learning_rate
    if config.anneal_lr and total_steps:
        num_rollouts = total_steps // (config.num_envs * config.num_steps)
        learning_rate = optax.linear_schedule(learning_rate, 0.0, num_rollouts * steps_per_rollout)
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate, eps=1e-5)
    )

    def init_carry(num_envs):  # the GRU state at an episode start
        return jnp.zeros((num_envs, config.hidden_size))

    def init(key):
        params = network.init(key, init_carry(1), jnp.zeros((1, *spec.observation_shape)))
        return State(params, optimizer.init(params))

    def act(state, obs, memory, key, deterministic=False):
        next_memory, logits, value = network.apply(state.params, memory, obs)
        action = jnp.argmax(logits, axis=-1) if deterministic else jax.random.categorical(key, logits)
        extras = {"log_prob": rlax.softmax().logprob(action, logits), "value": value, "memory": memory}
        return rlkit.ActOutput(action, next_memory, extras)

    def gradient_step(state: State, batch: Sequences):
        grads, metrics = jax.grad(ppo_loss, has_aux=True)(state.params, batch, network, config)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return State(optax.apply_updates(state.params, updates), opt_state), metrics

    def update(state, rollout: rlkit.Trajectory, key):
        done = rollout.terminated | rollout.truncated
        starts = jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]])  # a step after an episode's end
        first_memory = rollout.extras["memory"][0]
        _, _, memory_after = unroll(network, state.params, first_memory, rollout.obs, starts)
        # V of each next observation (the final one at an episode end), read with the memory after its step.
        _, _, next_value = network.apply(
            state.params, memory_after.reshape(-1, config.hidden_size),
            rollout.next_obs.reshape(-1, *rollout.next_obs.shape[2:]),
        )
        value = rollout.extras["value"]
        advantage = jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
            rollout.reward, rollout.terminated, rollout.truncated, value, next_value.reshape(value.shape),
            config.gamma, config.gae_lambda,
        )
        data = Sequences(
            first_memory[None], rollout.obs, starts, rollout.action, rollout.extras["log_prob"], value,
            advantage, advantage + value,
        )
        # One shuffle of the environments per epoch, all epochs' minibatches in a row: [epochs * minibatches, envs].
        order = jax.vmap(lambda k: jax.random.permutation(k, config.num_envs))(
            jax.random.split(key, config.num_epochs)
        ).reshape(steps_per_rollout, envs_per_minibatch)
        minibatches = jax.tree.map(lambda x: jnp.moveaxis(x[:, order], 1, 0), data)  # environments: axis 1
        state, metrics = jax.lax.scan(gradient_step, state, minibatches)
        return state, jax.tree.map(jnp.mean, metrics)

    return rlkit.Agent(init, act, update, init_carry)


def parse_args() -> argparse.Namespace:
    """--env, --observe, --steps, --seeds, and one flag per Config field (e.g. --learning-rate)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", help="gymnax environment id")
    parser.add_argument("--observe", default="0,2",
                        help="observation indices the agent sees, comma-separated, or 'all' (default 0,2: "
                             "CartPole's cart position and pole angle, velocities hidden)")
    parser.add_argument("--steps", type=float, default=1e6, help="environment steps per seed")
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
    observe = None if args.observe == "all" else tuple(int(i) for i in args.observe.split(","))
    env = rlkit.make_env(args.env, observe=observe)
    run = rlkit.RunConfig(total_steps=int(args.steps))
    # make_trainer needs only an object with this file's `make` and `experience`.
    trainer = rlkit.make_trainer(types.SimpleNamespace(make=make, experience=experience), config, env, run)
    print(f"recurrent PPO on {args.env} (observing {args.observe}): {args.seeds} seed(s) x "
          f"{trainer.plan.total_steps:,} steps; compiling...")

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
