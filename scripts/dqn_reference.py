"""A minimal single-file DQN, the speed reference for rlkit's DQN: PureJaxRL's CartPole-v1 settings.

    python scripts/dqn_reference.py [--seed 0] [--steps 5e5] [--json OUT]

Only what the algorithm needs: a gymnax environment (auto-reset), a flashbax flat buffer, a
120-84 Q-network, and the whole run as one jitted ``lax.scan`` over vector steps of 10
environments, one update every 10 environment steps (each vector step) once 10,000 are in,
target copied every 500, epsilon linear from 1 to 0.05 over 250,000 steps, Adam at 2.5e-4,
squared TD error. As in PureJaxRL an episode end of either kind stops the bootstrap, and the
next observation is the following buffer entry. No checkpoints, logging or evaluation inside
the run; after it, one greedy evaluation of 32 episodes, so its return compares with rlkit's.

``scripts/wall_time.py`` times this script's whole process beside ``rlkit train``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import flashbax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import optax

NUM_ENVS = 10
BUFFER_SIZE = 10_000
BATCH_SIZE = 128
LEARNING_STARTS = 10_000
TRAIN_EVERY = 10  # environment steps between updates
TARGET_EVERY = 500  # environment steps between target copies
LEARNING_RATE = 2.5e-4
GAMMA = 0.99
EPSILON_START, EPSILON_END, EPSILON_STEPS = 1.0, 0.05, 250_000
EVAL_EPISODES = 32


class QNetwork(nn.Module):
    num_actions: int

    @nn.compact
    def __call__(self, obs):
        hidden = nn.relu(nn.Dense(84)(nn.relu(nn.Dense(120)(obs))))
        return nn.Dense(self.num_actions)(hidden)


class Step(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    done: jax.Array


class Learner(NamedTuple):
    params: dict
    target_params: dict
    opt_state: optax.OptState


class Carry(NamedTuple):
    learner: Learner
    buffer_state: object
    env_state: object
    obs: jax.Array
    episode_return: jax.Array
    env_steps: jax.Array
    key: jax.Array


def make_train(total_steps: int):
    env, env_params = gymnax.make("CartPole-v1")
    num_actions = env.action_space(env_params).n
    network = QNetwork(num_actions)
    optimizer = optax.adam(LEARNING_RATE)
    buffer = flashbax.make_flat_buffer(max_length=BUFFER_SIZE, min_length=BATCH_SIZE,
                                       sample_batch_size=BATCH_SIZE, add_batch_size=NUM_ENVS)
    epsilon = optax.linear_schedule(EPSILON_START, EPSILON_END, EPSILON_STEPS)
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def loss_fn(params, target_params, first: Step, second: Step):
        q_taken = jnp.take_along_axis(network.apply(params, first.obs), first.action[:, None], axis=-1)[:, 0]
        q_next = jnp.max(network.apply(target_params, second.obs), axis=-1)
        target = first.reward + (1.0 - first.done) * GAMMA * q_next
        return 0.5 * jnp.mean((q_taken - jax.lax.stop_gradient(target)) ** 2)

    def learn(learner: Learner, buffer_state, key) -> Learner:
        pair = buffer.sample(buffer_state, key).experience
        grads = jax.grad(loss_fn)(learner.params, learner.target_params, pair.first, pair.second)
        updates, opt_state = optimizer.update(grads, learner.opt_state, learner.params)
        return learner._replace(params=optax.apply_updates(learner.params, updates), opt_state=opt_state)

    def vector_step(carry: Carry, _):
        key, explore_key, action_key, env_key, sample_key = jax.random.split(carry.key, 5)
        greedy = jnp.argmax(network.apply(carry.learner.params, carry.obs), axis=-1)
        explore = jax.random.uniform(explore_key, (NUM_ENVS,)) < epsilon(carry.env_steps)
        action = jnp.where(explore, jax.random.randint(action_key, (NUM_ENVS,), 0, num_actions), greedy)
        obs, env_state, reward, terminated, truncated, _ = step_envs(
            jax.random.split(env_key, NUM_ENVS), carry.env_state, action, env_params)
        done = terminated | truncated
        buffer_state = buffer.add(carry.buffer_state, Step(carry.obs, action, reward, done.astype(jnp.float32)))
        env_steps = carry.env_steps + NUM_ENVS
        learner = jax.lax.cond(
            (env_steps > LEARNING_STARTS) & (env_steps % TRAIN_EVERY == 0) & buffer.can_sample(buffer_state),
            lambda: learn(carry.learner, buffer_state, sample_key), lambda: carry.learner,
        )
        refresh = env_steps % TARGET_EVERY == 0
        learner = learner._replace(target_params=jax.tree.map(
            lambda online, target: jnp.where(refresh, online, target), learner.params, learner.target_params))
        episode_return = carry.episode_return + reward
        finished = (jnp.sum(jnp.where(done, episode_return, 0.0)), jnp.sum(done))
        episode_return = jnp.where(done, 0.0, episode_return)
        return Carry(learner, buffer_state, env_state, obs, episode_return, env_steps, key), finished

    def evaluate(params, key):
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, EVAL_EPISODES), env_params)

        def step(loop, step_key):
            obs, state, returns, alive = loop
            action = jnp.argmax(network.apply(params, obs), axis=-1)
            obs, state, reward, terminated, truncated, _ = step_envs(
                jax.random.split(step_key, EVAL_EPISODES), state, action, env_params)
            done = terminated | truncated
            return (obs, state, returns + reward * alive, alive * (1.0 - done)), None

        start = (obs, state, jnp.zeros(EVAL_EPISODES), jnp.ones(EVAL_EPISODES))
        (_, _, returns, _), _ = jax.lax.scan(step, start, jax.random.split(key, env_params.max_steps_in_episode))
        return returns.mean()

    def train(key):
        init_key, reset_key, eval_key, key = jax.random.split(key, 4)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, NUM_ENVS), env_params)
        params = network.init(init_key, obs)
        example = Step(obs[0], jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros(()))
        carry = Carry(Learner(params, params, optimizer.init(params)), buffer.init(example), env_state, obs,
                      jnp.zeros(NUM_ENVS), jnp.zeros((), jnp.int32), key)
        carry, (return_sums, counts) = jax.lax.scan(vector_step, carry, None, total_steps // NUM_ENVS)
        last = counts.shape[0] // 10  # the last tenth of training's finished episodes
        train_return = return_sums[-last:].sum() / jnp.maximum(counts[-last:].sum(), 1)
        return train_return, evaluate(carry.learner.params, eval_key)

    return jax.jit(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=lambda text: int(float(text)), default=500_000)
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()
    key = jax.random.key(args.seed)
    start = time.perf_counter()
    compiled = make_train(args.steps).lower(key).compile()
    compiled_at = time.perf_counter()
    train_return, eval_return = jax.block_until_ready(compiled(key))
    result = {"compile_s": round(compiled_at - start, 2), "run_s": round(time.perf_counter() - compiled_at, 2),
              "steps": args.steps // NUM_ENVS * NUM_ENVS, "train_return": round(float(train_return), 1),
              "eval_return": round(float(eval_return), 1), "device": str(jax.devices()[0])}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
