"""The host path: dm_env adapters, environment_spec, the Actor and the EnvironmentLoop."""

import importlib.util

import dm_env
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dm_env import specs
from gymnasium import spaces

from rlkit import RunConfig, make_trainer
from rlkit.agents import dqn, ppo
from rlkit.envs import GymnaxWrapper, GymWrapper, environment_spec, make, make_host
from rlkit.loops import Actor, EnvironmentLoop
from rlkit.types import ActOutput, Agent

pytestmark = pytest.mark.both_worlds  # the host path the Reverb and distributed backends run on

PPO_TINY = ppo.Config(num_envs=2, num_steps=8, num_minibatches=2, num_epochs=1, hidden_sizes=(8,))


class ToyChainGym(gymnasium.Env):
    """tests/toy_env.py's chain in gymnasium: action 1 climbs; position 3 terminates, step 5 truncates."""

    observation_space = spaces.Box(0.0, 10.0, (1, 2), np.float64)  # 2-D on purpose: the wrapper keeps the shape
    action_space = spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.time = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.position += int(action)
        self.time += 1
        terminated = self.position >= 3
        return self._obs(), 1.0, terminated, self.time >= 5 and not terminated, {}

    def _obs(self):
        return np.array([[self.position, self.time]], np.float64)


def constant_agent(action: int) -> Agent:
    def act(state, obs, carry, key, deterministic=False):
        return ActOutput(jnp.full(obs.shape[:1], action, jnp.int32), carry, {})

    return Agent(init=lambda key: (), act=act, update=lambda s, b, k: (s, {}))


def run_episode(env: dm_env.Environment, actions):
    steps = [env.reset()]
    for action in actions:
        steps.append(env.step(action))
        if steps[-1].last():
            break
    return steps


def test_gym_wrapper_truncation_termination_and_reset_after_last():
    env = GymWrapper(gymnasium.make("CartPole-v1", max_episode_steps=5), seed=0)
    steps = run_episode(env, [0, 1] * 5)  # alternate pushes: the pole stays up for 5 steps
    assert [s.step_type for s in steps] == [dm_env.StepType.FIRST] + [dm_env.StepType.MID] * 4 + [dm_env.StepType.LAST]
    assert steps[0].reward is None and steps[0].discount is None
    assert steps[-1].discount == 1.0 and steps[-1].reward == 1.0  # truncation bootstraps
    assert all(s.observation.dtype == np.float32 and s.observation.shape == (4,) for s in steps)
    assert env.step(0).first()  # the step after LAST resets (Acme semantics)

    env = GymWrapper(gymnasium.make("CartPole-v1"), seed=0)
    steps = run_episode(env, [1] * 100)  # always push right: the pole falls
    assert steps[-1].last() and steps[-1].discount == 0.0 and len(steps) < 30


def test_gym_wrapper_specs_and_seeding():
    env = GymWrapper(gymnasium.make("CartPole-v1"), seed=3)
    assert isinstance(env.observation_spec(), specs.BoundedArray)
    assert env.observation_spec().shape == (4,) and env.observation_spec().dtype == np.float32
    assert isinstance(env.action_spec(), specs.DiscreteArray) and env.action_spec().num_values == 2
    first = env.reset().observation
    np.testing.assert_array_equal(first, GymWrapper(gymnasium.make("CartPole-v1"), seed=3).reset().observation)
    assert not np.array_equal(first, env.reset().observation)  # later resets continue, not reseed

    pendulum = GymWrapper(gymnasium.make("Pendulum-v1"), seed=0)
    action_spec = pendulum.action_spec()
    assert isinstance(action_spec, specs.BoundedArray) and action_spec.shape == (1,)
    pendulum.reset()
    assert pendulum.step(np.array([0.5], np.float32)).mid()
    pendulum.close()


def test_gym_wrapper_names_unsupported_spaces():
    env = ToyChainGym()
    env.observation_space = spaces.Discrete(7)
    with pytest.raises(ValueError, match="observation space Discrete"):
        GymWrapper(env)
    env = ToyChainGym()
    env.action_space = spaces.MultiDiscrete([2, 3])
    with pytest.raises(ValueError, match="action space MultiDiscrete"):
        GymWrapper(env)


@pytest.mark.parametrize("action, last_discount, length", [(0, 1.0, 5), (1, 0.0, 3)])
def test_actor_transitions_keep_final_observation_and_discount(action, last_discount, length):
    env = GymWrapper(ToyChainGym())
    recorded = []
    actor = Actor(constant_agent(action), (), adder=recorded.append)
    records = EnvironmentLoop(env, actor, logger=lambda record: None).run(num_episodes=2)
    assert [r["episode_length"] for r in records] == [length, length]
    assert len(recorded) == 2 * length
    last = recorded[length - 1]
    assert last.last_t and last.discount_t == last_discount and last.discount_t.dtype == np.float32
    final_position = 0 if action == 0 else 3
    np.testing.assert_array_equal(last.obs_t, [[final_position, length]])  # final obs, not the reset one
    np.testing.assert_array_equal(recorded[length].obs_tm1, [[0, 0]])  # the next episode starts afresh
    assert all(t.discount_t == 1.0 and not t.last_t for t in recorded[: length - 1])
    assert all(t.obs_t.dtype == np.float32 and t.obs_t.shape == (1, 2) for t in recorded)


def test_environment_spec_builds_agents():
    gym_spec = environment_spec(make_host("gym:CartPole-v1"))
    gymnax_spec = environment_spec(make_host("gymnax:CartPole-v1"))
    assert gym_spec == gymnax_spec == make("CartPole-v1").spec
    assert gym_spec.observation_shape == (4,) and gym_spec.action_kind == "discrete" and gym_spec.num_actions == 2
    dqn.make(dqn.Config(hidden_sizes=(8,)), gym_spec)
    ppo.make(PPO_TINY, gymnax_spec)

    pendulum = environment_spec(GymWrapper(gymnasium.make("Pendulum-v1")))
    assert pendulum.action_kind == "continuous" and pendulum.num_actions == 1 and pendulum.observation_shape == (3,)
    np.testing.assert_array_equal(pendulum.action_low, [-2.0])
    np.testing.assert_array_equal(pendulum.action_high, [2.0])
    with pytest.raises(ValueError, match="discrete action space"):
        dqn.make(dqn.Config(hidden_sizes=(8,)), pendulum)


def test_gymnax_wrapper_follows_dm_env_rules():
    from toy_env import ToyChain

    from rlkit.envs import wrap

    for action, discount in ((0, 1.0), (1, 0.0)):
        env = GymnaxWrapper(wrap(ToyChain()), seed=0)
        steps = run_episode(env, [action] * 10)
        assert steps[0].first() and all(s.mid() for s in steps[1:-1]) and steps[-1].last()
        assert steps[-1].discount == discount and steps[-1].observation.dtype == np.float32
        np.testing.assert_array_equal(steps[-1].observation, [3 * action, len(steps) - 1])  # final obs
        restart = env.step(action)
        assert restart.first()
        np.testing.assert_array_equal(restart.observation, [0, 0])


def test_one_ppo_agent_runs_in_both_loops():
    host_env = GymnaxWrapper("CartPole-v1", seed=0)
    device_env = make("CartPole-v1")
    spec = environment_spec(host_env)
    assert spec == device_env.spec
    agent = ppo.make(PPO_TINY, spec)
    actor = Actor(agent, agent.init(jax.random.key(0)), seed=0)
    logged = []
    records = EnvironmentLoop(host_env, actor, logger=logged.append).run(num_episodes=3)
    assert records == logged and len(records) == 3
    assert all(r["episode_return"] == r["episode_length"] > 0 for r in records)  # reward 1 per step
    assert records[-1]["total_steps"] == sum(r["episode_length"] for r in records)
    assert set(actor.last_extras) == {"log_prob", "value"}

    # The same agent in the device loop; its trained state then drives the host actor.
    trainer = make_trainer(ppo, PPO_TINY, device_env, RunConfig(total_steps=32, num_chunks=2, eval_episodes=1))
    run_state = jax.jit(trainer.init)(jax.random.key(0), {})
    for _ in range(trainer.plan.num_chunks):
        run_state, metrics = jax.jit(trainer.run_chunk)(run_state, {})
    assert int(run_state.env_steps) == 32
    actor.update_state(run_state.agent_state)
    assert EnvironmentLoop(host_env, actor, logger=lambda r: None).run(num_steps=1)[0]["episode_length"] >= 1


def test_environment_loop_needs_a_limit_and_stops_at_num_steps():
    loop = EnvironmentLoop(GymWrapper(ToyChainGym()), Actor(constant_agent(0), ()), logger=lambda r: None)
    with pytest.raises(ValueError, match="num_episodes or num_steps"):
        loop.run()
    records = loop.run(num_steps=6)  # whole episodes: 5 steps each, so two of them
    assert [r["total_steps"] for r in records] == [5, 10]


def test_make_host_errors_are_clear():
    with pytest.raises(ValueError, match="gym:, gymnax:, dm_control:"):
        make_host("atari:Pong")
    with pytest.raises(ValueError, match="prefixes"):
        make_host("CartPole-v1")
    with pytest.raises(ValueError, match="unknown gymnasium id 'CartPol-v1'.*CartPole-v1"):
        make_host("gym:CartPol-v1")
    with pytest.raises(ValueError, match="unknown environment id 'CartPol-v1'"):
        make_host("gymnax:CartPol-v1")
    if importlib.util.find_spec("Box2D") is None:  # a gymnasium id whose own dependency is missing
        with pytest.raises(ValueError, match="gymnasium's LunarLander-v3 needs a package this Python lacks"):
            make_host("gym:LunarLander-v3")
    if importlib.util.find_spec("dm_control") is None:
        with pytest.raises(ImportError, match="`envs` extra"):
            make_host("dm_control:cartpole-balance")
    else:
        assert environment_spec(make_host("dm_control:cartpole-balance")).action_kind == "continuous"


class DictObservationEnv(dm_env.Environment):
    """A dm_control-like environment: dict observations, float64 continuous actions, 2-step episodes."""

    def reset(self):
        self.t = 0
        return dm_env.restart(self._obs())

    def step(self, action):
        self.t += 1
        return dm_env.truncation(0.5, self._obs()) if self.t == 2 else dm_env.transition(0.5, self._obs())

    def _obs(self):
        return {"position": np.full((2,), self.t, np.float64), "velocity": np.float64(-self.t)}

    def observation_spec(self):
        return {"position": specs.Array((2,), np.float64), "velocity": specs.Array((), np.float64)}

    def action_spec(self):
        return specs.BoundedArray((1,), np.float64, -1.0, 1.0)


def test_flat_observation_concatenates_dict_observations():
    from rlkit.envs import FlatObservation

    with pytest.raises(ValueError, match="FlatObservation"):
        environment_spec(DictObservationEnv())
    env = FlatObservation(DictObservationEnv())
    spec = environment_spec(env)
    assert spec.observation_shape == (3,) and spec.action_kind == "continuous" and spec.num_actions == 1
    steps = run_episode(env, [np.zeros(1)] * 3)
    np.testing.assert_array_equal(steps[-1].observation, [2, 2, -2])
    assert steps[-1].last() and steps[-1].discount == 1.0 and steps[-1].observation.dtype == np.float32
