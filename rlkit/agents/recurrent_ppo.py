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
import functools
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


class RecurrentModel(NamedTuple):
    """The recurrent policy-and-value network, how its policy output reads as a distribution, and its unroll."""

    network: RecurrentActorCritic
    continuous: bool
    core: str
    memory_size: int

    def init_carry(self, batch_size: int):
        """The zero memory of ``batch_size`` environments."""
        return zero_memory(self.core, self.memory_size, batch_size)

    def distribution(self, policy_output):
        return ppo.DiagonalGaussian(*policy_output) if self.continuous else ppo.Categorical(policy_output)

    def unroll(self, params, memory, obs: jax.Array, starts: jax.Array):
        """Policy outputs, values and the memory after each step ``[T, n, ...]``, from ``memory``; the memory
        restarts wherever ``starts`` marks an episode's first step."""

        def step(memory, obs_t):
            memory, policy_output, value = self.network.apply(params, memory, obs_t)
            return memory, (policy_output, value)

        zero = self.init_carry(obs.shape[1])
        (policy_output, value), memory_after = networks.unroll(step, memory, obs, starts, zero)
        return policy_output, value, memory_after

    def value_of_next(self, params, memory_after, next_obs: jax.Array) -> jax.Array:
        """V of each step's next observation, read with the memory after that step (no scan needed)."""
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        _, _, value = self.network.apply(params, jax.tree.map(flat, memory_after), flat(next_obs))
        return value.reshape(next_obs.shape[:2])


def recurrent_model(config: Config, spec: EnvSpec) -> RecurrentModel:
    """The MLP, the core and the heads for ``spec``'s discrete or continuous actions."""
    continuous = spec.action_kind == "continuous"
    network = RecurrentActorCritic(
        spec.num_actions, config.memory_size, config.hidden_sizes, config.activation, config.core,
        continuous, config.init_log_std, **torso_fields(config.torso, spec),
    )
    return RecurrentModel(network, continuous, config.core, config.memory_size)


def sequence_loss(params, minibatch: dict, *, config: Config, model: RecurrentModel) -> tuple[jax.Array, dict]:
    """PPO's clipped loss on a minibatch of whole sequences, unrolled from their first memory."""
    policy_output, value, _ = model.unroll(params, minibatch["memory"], minibatch["obs"], minibatch["starts"])
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), minibatch["steps"])
    policy_output = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), policy_output)
    return ppo.clipped_loss(model.distribution(policy_output), value.reshape(-1), flat, config)


def training_sequences(config: Config, model: RecurrentModel, params, rollout: Trajectory) -> dict:
    """The rollout with GAE advantages and value targets: ``memory [N, ...]`` (at its first step), ``obs``,
    ``starts`` and ``steps`` (``[T, N, ...]``)."""
    starts = episode_starts(rollout)
    first_memory = jax.tree.map(lambda m: m[0], rollout.extras["memory"])
    _, _, memory_after = model.unroll(params, first_memory, rollout.obs, starts)
    v_t = model.value_of_next(params, memory_after, rollout.next_obs)
    advantage = jax.vmap(ppo.advantages, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
        rollout.reward, rollout.terminated, rollout.truncated,
        rollout.extras["value"], v_t, config.gamma, config.gae_lambda,
    )
    steps = {
        "action": rollout.extras["raw_action"] if model.continuous else rollout.action,
        "log_prob": rollout.extras["log_prob"],
        "value": rollout.extras["value"],
        "advantage": advantage,
        "target": advantage + rollout.extras["value"],
    }
    return {"memory": first_memory, "obs": rollout.obs, "starts": starts, "steps": steps}


ENV_AXIS = {"memory": 0, "obs": 1, "starts": 1, "steps": 1}  # memory is [N, ...]; the rest [T, N, ...]


def environment_minibatch_epochs(config: Config, minibatch_step, learner, data: dict, key):
    """``num_epochs`` passes over ``data`` in minibatches of whole environments (shuffled each epoch),
    ``minibatch_step(learner, minibatch)`` on each: the final learner and the stacked stats."""
    envs_per_minibatch = config.num_envs // config.num_minibatches

    def epoch(learner, epoch_key):
        order = jax.random.permutation(epoch_key, config.num_envs)

        def split(axis, x):  # [.., N, ..] -> [M, .., N / M, ..], environments shuffled
            x = jnp.take(x, order, axis=axis)
            x = x.reshape(*x.shape[:axis], config.num_minibatches, envs_per_minibatch, *x.shape[axis + 1:])
            return jnp.moveaxis(x, axis, 0)

        minibatches = {name: jax.tree.map(lambda x: split(ENV_AXIS[name], x), value) for name, value in data.items()}
        return jax.lax.scan(minibatch_step, learner, minibatches)

    return jax.lax.scan(epoch, learner, jax.random.split(key, config.num_epochs))


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build recurrent PPO for ``spec``; ``total_steps`` sets the learning-rate annealing horizon."""
    model = recurrent_model(config, spec)
    optimizer = ppo.make_optimizer(config, total_steps)
    loss_grad = jax.grad(functools.partial(sequence_loss, config=config, model=model), has_aux=True)

    def init(key):
        params = model.network.init(key, model.init_carry(1), jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return RecurrentPPOState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, memory, key, deterministic=False):
        next_memory, policy_output, value = model.network.apply(state.params, memory, observation)
        policy = model.distribution(policy_output)
        raw_action = policy.mode() if deterministic else policy.sample(key)
        extras = {"log_prob": policy.log_prob(raw_action), "value": value, "memory": memory}
        if not model.continuous:
            return ActOutput(raw_action, next_memory, extras)
        extras["raw_action"] = raw_action
        low, high = jnp.asarray(spec.action_low), jnp.asarray(spec.action_high)
        return ActOutput(jnp.clip(raw_action, low, high), next_memory, extras)

    def minibatch_step(learner, minibatch):
        params, opt_state = learner
        grads, stats = loss_grad(params, minibatch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def update(state, rollout: Trajectory, key):
        data = training_sequences(config, model, state.params, rollout)
        learner = (state.params, state.opt_state)
        (params, opt_state), stats = environment_minibatch_epochs(config, minibatch_step, learner, data, key)
        return RecurrentPPOState(params, opt_state, state.iterations + 1), jax.tree.map(jnp.mean, stats)

    return Agent(init=init, act=act, update=update, init_carry=model.init_carry)
