"""Watch a trained agent: greedy episodes on the device environment, drawn frame by frame into a GIF.

``record_episodes`` plays ``episodes`` greedy episodes one after another in a jitted ``lax.scan`` and
keeps, for every step, the environment state and observation after it. ``draw_frame`` turns one
step into an RGB image: classic control (CartPole, Pendulum, Acrobot, MountainCar) is drawn from
the gymnax state, grid environments (MinAtar, bsuite's Catch and DeepSea, ...) from their image observation,
one colour per channel. ``write_gif`` writes one frame per step (the state after it), so a
GIF of episodes of lengths ``L_1..L_K`` holds ``sum(L_i)`` frames. Needs only Pillow (which
matplotlib already brings); no display, no pygame.

Runs on the Reverb backend play on their host environment (``record_host_episodes``): gymnasium's
classic control is drawn the same way from the gymnasium state, dm_control tasks through MuJoCo's
camera, which needs an offscreen OpenGL backend (``MUJOCO_GL=egl`` or ``osmesa``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rlkit.envs.device import DeviceEnv
from rlkit.types import Agent, AgentState

WIDTH, HEIGHT = 360, 240
CLASSIC = ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0")
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)], np.uint8)


class Episode(NamedTuple):
    """One recorded episode: per step, the environment state and observation after it."""

    states: Any  # the gymnax state pytree, leading axis [length]
    observations: np.ndarray  # [length, *observation_shape] (as the agent saw them)
    rewards: np.ndarray  # [length]

    @property
    def length(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


def renderable(env: DeviceEnv) -> None:
    """A one-line ValueError where ``draw_frame`` cannot draw ``env``."""
    if env.env_id in CLASSIC:
        return
    shape = env.env.observation_space(env.default_params).shape
    if len(shape) not in (2, 3):
        raise ValueError(f"render: no renderer for {env.env_id} (observations of shape {tuple(shape)}); rlkit draws "
                         f"{', '.join(CLASSIC)} and environments with image observations (MinAtar, Catch-bsuite, ...)")
    if env.observe is not None:
        raise ValueError(f"render: {env.env_id} with observe={env.observe} hides part of the image; render the full "
                         "observation")


def record_episodes(env: DeviceEnv, agent: Agent, agent_state: AgentState, key: jax.Array, episodes: int) -> list[Episode]:
    """``episodes`` greedy episodes of ``agent`` in ``env``, one after another."""
    steps = env.max_episode_steps

    @jax.jit
    def one(key):
        reset_key, key = jax.random.split(key)
        obs, state = env.reset(reset_key)

        def step(loop, key):
            state, obs, carry, done = loop
            act_key, env_key = jax.random.split(key)
            out = agent.act(agent_state, obs[None], carry, act_key, deterministic=True)
            state, obs, reward, terminated, truncated = env.step_without_reset(env_key, state, out.action[0])
            kept = (state.env_state, obs, reward, done)
            return (state, obs, out.carry, done | terminated | truncated), kept

        start = (state, obs, agent.init_carry(1), jnp.zeros((), bool))
        _, (states, observations, rewards, done_before) = jax.lax.scan(step, start, jax.random.split(key, steps))
        return states, observations, rewards, done_before

    out = []
    for key in jax.random.split(key, episodes):
        states, observations, rewards, done_before = jax.device_get(one(key))
        length = int(np.sum(~done_before))  # the steps up to and including the one that ended it
        out.append(Episode(jax.tree.map(lambda x: x[:length], states), observations[:length], rewards[:length]))
    return out


def draw_frame(env: DeviceEnv, state: Any, observation: np.ndarray, caption: str) -> Any:
    """One RGB ``PIL.Image`` of a state (classic control) or an image observation (grid environments)."""
    from PIL import Image, ImageDraw

    if env.env_id in CLASSIC:
        image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
        _DRAW[env.env_id](ImageDraw.Draw(image), state, env.default_params)
    else:
        shape = _grid_shape(env)
        grid = np.asarray(observation).reshape(shape) > 0
        colours = PALETTE[np.arange(shape[-1]) % len(PALETTE)]
        rgb = np.full((*shape[:2], 3), 255, np.uint8)
        for channel in range(shape[-1]):  # later channels paint over earlier ones
            rgb[grid[..., channel]] = colours[channel]
        scale = max(1, min(WIDTH // shape[1], (HEIGHT - 20) // shape[0]))
        cells = Image.fromarray(rgb).resize((shape[1] * scale, shape[0] * scale), Image.NEAREST)
        image = Image.new("RGB", (max(WIDTH, cells.width), cells.height + 20), (255, 255, 255))
        image.paste(cells, (0, 20))
    ImageDraw.Draw(image).text((4, 4), caption, fill=(0, 0, 0))
    return image


def write_gif(env: DeviceEnv, episodes: list[Episode], path: str | Path, fps: int = 30) -> int:
    """Write the episodes as one GIF, a frame per step; returns the number of frames."""
    frames = []
    for number, episode in enumerate(episodes, 1):
        returns = np.cumsum(episode.rewards)
        for t in range(episode.length):
            state = jax.tree.map(lambda x: x[t], episode.states)
            caption = f"{env.env_id}  episode {number}  step {t + 1}/{episode.length}  return {returns[t]:.1f}"
            frames.append(draw_frame(env, state, episode.observations[t], caption))
    return save_gif(frames, path, fps)


def save_gif(frames: list[Any], path: str | Path, fps: int) -> int:
    """Write ``PIL.Image`` frames as a looping GIF (every frame kept); returns their number."""
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)), loop=0,
                   optimize=False, disposal=1)
    return len(frames)


# -- host environments (Reverb runs) ------------------------------------------------------------

_GYM_STATE_FIELDS = {"CartPole-v1": ("x", "x_dot", "theta", "theta_dot"), "Pendulum-v1": ("theta", "theta_dot"),
                     "Acrobot-v1": ("joint_angle1", "joint_angle2", "velocity_1", "velocity_2"),
                     "MountainCar-v0": ("position", "velocity"), "MountainCarContinuous-v0": ("position", "velocity")}


def host_camera(env_id: str, environment: Any) -> Any:
    """A function drawing ``environment``'s current state as a ``PIL.Image``; a ValueError where none can."""
    from types import SimpleNamespace

    from PIL import Image, ImageDraw

    prefix, _, name = env_id.partition(":")
    if prefix == "gym" and name in _GYM_STATE_FIELDS:
        import gymnax

        params = gymnax.make(name)[1]
        unwrapped = environment.environment.unwrapped

        def draw_gym():
            state = SimpleNamespace(**dict(zip(_GYM_STATE_FIELDS[name], np.asarray(unwrapped.state, np.float64))))
            image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
            _DRAW[name](ImageDraw.Draw(image), state, params)
            return image

        return draw_gym
    if prefix == "dm_control":
        import os

        backend = os.environ.get("MUJOCO_GL", "glfw")
        if backend == "glfw" and not os.environ.get("DISPLAY"):
            raise ValueError(f"render: {env_id} draws through MuJoCo's camera, which needs a display or an offscreen "
                             "OpenGL backend; this machine has no DISPLAY and MUJOCO_GL is unset: install EGL or "
                             "OSMesa and run with MUJOCO_GL=egl (or MUJOCO_GL=osmesa)")
        physics = environment.environment.physics
        try:
            physics.render(height=HEIGHT, width=WIDTH, camera_id=0)
        except Exception as error:  # MuJoCo raises several types where no OpenGL context can be made
            raise ValueError(f"render: {env_id} needs an offscreen OpenGL backend for MuJoCo's camera, and this "
                             f"machine has none working ({type(error).__name__}: {error}); install EGL or OSMesa "
                             "and set MUJOCO_GL=egl or MUJOCO_GL=osmesa") from None
        return lambda: Image.fromarray(physics.render(height=HEIGHT, width=WIDTH, camera_id=0))
    raise ValueError(f"render: no renderer for the host environment {env_id}; rlkit draws gym:ID for "
                     f"{', '.join(_GYM_STATE_FIELDS)} and dm_control:DOMAIN-TASK")


def record_host_episodes(env_id: str, make_env: Any, agent: Agent, agent_state: AgentState, seed: int,
                         episodes: int) -> tuple[list[Any], list[int], list[float]]:
    """Greedy episodes on a host environment: ``(frames, lengths, returns)``, a frame after every step."""
    from PIL import ImageDraw

    from rlkit.loops.environment_loop import KEY_IMPL, Actor

    environment = make_env(seed)
    camera = host_camera(env_id, environment)
    actor = Actor(agent, agent_state, deterministic=True, key=jax.random.key(seed, impl=KEY_IMPL))
    frames, lengths, returns = [], [], []
    for number in range(1, episodes + 1):
        timestep = environment.reset()
        actor.observe_first(timestep)
        length, total = 0, 0.0
        while not timestep.last():
            timestep = environment.step(actor.select_action(timestep.observation))
            length, total = length + 1, total + float(timestep.reward)
            frame = camera()
            ImageDraw.Draw(frame).text((4, 4), f"{env_id}  episode {number}  step {length}  return {total:.1f}",
                                       fill=(0, 0, 0))
            frames.append(frame)
        lengths.append(length)
        returns.append(total)
    return frames, lengths, returns


def _grid_shape(env: DeviceEnv) -> tuple[int, int, int]:
    """``(height, width, channels)`` of an image observation (a 2-D one has one channel)."""
    shape = tuple(env.env.observation_space(env.default_params).shape)
    return shape if len(shape) == 3 else (*shape, 1)


# -- classic control, drawn from the gymnax state ------------------------------------------------


def _cartpole(draw, state, params) -> None:
    scale = WIDTH / (2 * params.x_threshold * 1.2)
    track = HEIGHT * 0.7
    cart_x = WIDTH / 2 + float(state.x) * scale
    draw.line([(0, track), (WIDTH, track)], fill=(0, 0, 0))
    draw.rectangle([cart_x - 25, track - 15, cart_x + 25, track + 15], fill=(60, 60, 60))
    pole = 2 * params.length * scale
    tip = (cart_x + pole * math.sin(float(state.theta)), track - pole * math.cos(float(state.theta)))
    draw.line([(cart_x, track), tip], fill=(200, 120, 60), width=8)


def _pendulum(draw, state, params) -> None:
    centre, length = (WIDTH / 2, HEIGHT / 2 + 10), HEIGHT * 0.38
    theta = float(state.theta)  # 0 is upright
    tip = (centre[0] + length * math.sin(theta), centre[1] - length * math.cos(theta))
    draw.line([centre, tip], fill=(200, 60, 60), width=10)
    draw.ellipse([centre[0] - 5, centre[1] - 5, centre[0] + 5, centre[1] + 5], fill=(0, 0, 0))


def _acrobot(draw, state, params) -> None:
    centre, link = (WIDTH / 2, HEIGHT / 2), HEIGHT * 0.22
    a1, a2 = float(state.joint_angle1), float(state.joint_angle2)
    elbow = (centre[0] + link * math.sin(a1), centre[1] + link * math.cos(a1))
    hand = (elbow[0] + link * math.sin(a1 + a2), elbow[1] + link * math.cos(a1 + a2))
    draw.line([(0, centre[1] - link), (WIDTH, centre[1] - link)], fill=(0, 0, 0))  # the height to swing above
    draw.line([centre, elbow], fill=(0, 130, 200), width=8)
    draw.line([elbow, hand], fill=(0, 130, 200), width=8)


def _mountain_car(draw, state, params) -> None:
    low, high = params.min_position, params.max_position

    def to_pixels(x):
        return ((x - low) / (high - low) * WIDTH, HEIGHT * 0.85 - (math.sin(3 * x) + 1) * HEIGHT * 0.3)

    draw.line([to_pixels(low + (high - low) * i / 100) for i in range(101)], fill=(0, 0, 0), width=2)
    flag = to_pixels(params.goal_position)
    draw.line([flag, (flag[0], flag[1] - 30)], fill=(0, 0, 0), width=2)
    car = to_pixels(float(state.position))
    draw.ellipse([car[0] - 9, car[1] - 18, car[0] + 9, car[1]], fill=(60, 180, 75))


_DRAW = {"CartPole-v1": _cartpole, "Pendulum-v1": _pendulum, "Acrobot-v1": _acrobot,
         "MountainCar-v0": _mountain_car, "MountainCarContinuous-v0": _mountain_car}
