"""PPO with a recurrent (GRU or LSTM) core, for partially observed environments.

Schulman et al., "Proximal Policy Optimization Algorithms", 2017, with the policy
and value sharing an MLP torso and a recurrent core, trained by backpropagation
through time over whole rollouts, as in PureJaxRL's and CleanRL's recurrent PPO
(Huang et al., "The 37 Implementation Details of PPO", 2022, section on LSTMs).

The recurrent state acted from is returned in ``extras["memory"]``, so the rollout
stores it with every step; ``update`` unrolls the core from the memory stored at
the rollout's first step and restarts it wherever an episode started, exactly as
acting did. Minibatches split the rollout over environments (``num_minibatches``
divides ``num_envs``), so every sequence stays whole. Advantages and the loss are
PPO's (``rlkit.agents.ppo.advantages`` and ``clipped_loss``): truncation bootstraps
from the value of the final observation, read with the memory after that step.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rlkit import config as cfg
from rlkit import networks
from rlkit.agents import ppo
from rlkit.networks import RecurrentActorCritic, zero_memory
from rlkit.torsos import torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Trajectory, episode_starts


@dataclasses.dataclass(frozen=True)
class Config(ppo.Config):
    """PPO's settings plus the core; ``hidden_sizes`` is the MLP before the core.

    Defaults: PureJaxRL's recurrent PPO settings (4 envs x 128 steps, a 128-unit GRU).
    """

    num_envs: int = 4
    num_steps: int = 128
    learning_rate: float = 2.5e-4
    hidden_sizes: tuple[int, ...] = (128,)
    core: str = "gru"  # "gru" | "lstm"
    memory_size: int = 128

    def __post_init__(self):
        super().__post_init__()
        cfg.check_divides("num_minibatches", self.num_minibatches, "num_envs", self.num_envs)
        if self.memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {self.memory_size}")
        if self.core not in ("gru", "lstm"):
            raise ValueError(f"core: {self.core!r} is not one of ['gru', 'lstm']")
        for name in ("normalize_observations", "normalize_rewards"):
            if getattr(self, name):
                raise ValueError(f"{name}: recurrent_ppo does not normalize; allowed: False (use ppo for it)")


class RecurrentPPOState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    iterations: jax.Array  # loop iterations (rollouts) learned from so far


def experience(config: Config) -> ExperienceSpec:
    """Each fresh rollout once, whole."""
    return ExperienceSpec(kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps, gamma=config.gamma,
                          data_parallel=True)


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build recurrent PPO for ``spec``; ``total_steps`` sets the learning-rate annealing horizon."""
    continuous = spec.action_kind == "continuous"
    network = RecurrentActorCritic(
        spec.num_actions, config.memory_size, config.hidden_sizes, config.activation, config.core,
        continuous, config.init_log_std, **torso_fields(config.torso, spec),
    )
    low, high = (jnp.asarray(spec.action_low), jnp.asarray(spec.action_high)) if continuous else (None, None)
    optimizer = ppo.make_optimizer(config, total_steps)
    envs_per_minibatch = config.num_envs // config.num_minibatches

    def init_carry(batch_size: int):
        return zero_memory(config.core, config.memory_size, batch_size)

    def distribution(policy_output):
        return ppo.DiagonalGaussian(*policy_output) if continuous else ppo.Categorical(policy_output)

    def init(key):
        params = network.init(key, init_carry(1), jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return RecurrentPPOState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, memory, key, deterministic=False):
        next_memory, policy_output, value = network.apply(state.params, memory, observation)
        policy = distribution(policy_output)
        raw_action = policy.mode() if deterministic else policy.sample(key)
        extras = {"log_prob": policy.log_prob(raw_action), "value": value, "memory": memory}
        if not continuous:
            return ActOutput(raw_action, next_memory, extras)
        extras["raw_action"] = raw_action
        return ActOutput(jnp.clip(raw_action, low, high), next_memory, extras)

    def unroll(params, memory, obs, starts):
        """Policy outputs, values and the memory after each step ``[T, n, ...]``, from ``memory``."""

        def step(memory, obs_t):
            memory, policy_output, value = network.apply(params, memory, obs_t)
            return memory, (policy_output, value)

        (policy_output, value), memory_after = networks.unroll(step, memory, obs, starts, init_carry(obs.shape[1]))
        return policy_output, value, memory_after

    def value_of_next(params, memory_after, next_obs):
        """V of each step's next observation, read with the memory after that step (no scan needed)."""
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        _, _, value = network.apply(params, jax.tree.map(flat, memory_after), flat(next_obs))
        return value.reshape(next_obs.shape[:2])

    def loss_fn(params, minibatch):
        policy_output, value, _ = unroll(params, minibatch["memory"], minibatch["obs"], minibatch["starts"])
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), minibatch["steps"])
        policy_output = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), policy_output)
        return ppo.clipped_loss(distribution(policy_output), value.reshape(-1), flat, config)

    def minibatch_step(learner, minibatch):
        params, opt_state = learner
        grads, stats = jax.grad(loss_fn, has_aux=True)(params, minibatch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def update(state, rollout: Trajectory, key):
        starts = episode_starts(rollout)
        first_memory = jax.tree.map(lambda m: m[0], rollout.extras["memory"])
        _, _, memory_after = unroll(state.params, first_memory, rollout.obs, starts)
        v_t = value_of_next(state.params, memory_after, rollout.next_obs)
        advantage = jax.vmap(ppo.advantages, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
            rollout.reward, rollout.terminated, rollout.truncated,
            rollout.extras["value"], v_t, config.gamma, config.gae_lambda,
        )
        steps = {
            "action": rollout.extras["raw_action"] if continuous else rollout.action,
            "log_prob": rollout.extras["log_prob"],
            "value": rollout.extras["value"],
            "advantage": advantage,
            "target": advantage + rollout.extras["value"],
        }
        data = {"memory": first_memory, "obs": rollout.obs, "starts": starts, "steps": steps}
        env_axis = {"memory": 0, "obs": 1, "starts": 1, "steps": 1}  # memory is [N, ...]; the rest [T, N, ...]

        def epoch(learner, epoch_key):
            order = jax.random.permutation(epoch_key, config.num_envs)

            def split(axis, x):  # [.., N, ..] -> [M, .., N / M, ..], environments shuffled
                x = jnp.take(x, order, axis=axis)
                x = x.reshape(*x.shape[:axis], config.num_minibatches, envs_per_minibatch, *x.shape[axis + 1:])
                return jnp.moveaxis(x, axis, 0)

            minibatches = {name: jax.tree.map(lambda x: split(env_axis[name], x), value) for name, value in data.items()}
            return jax.lax.scan(minibatch_step, learner, minibatches)

        (params, opt_state), stats = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, config.num_epochs)
        )
        return RecurrentPPOState(params, opt_state, state.iterations + 1), jax.tree.map(jnp.mean, stats)

    return Agent(init=init, act=act, update=update, init_carry=init_carry)
