"""Environments: on the device through gymnax (``make``), on the host through dm_env adapters."""

from rlkit.envs.device import DeviceEnv, EnvStep, EpisodeState, env_ids, make, wrap
from rlkit.envs.dm_env_adapters import (
    HOST_PREFIXES,
    FlatObservation,
    GymnaxWrapper,
    GymWrapper,
    environment_spec,
    make_host,
)

__all__ = [
    "HOST_PREFIXES", "DeviceEnv", "EnvStep", "EpisodeState", "FlatObservation", "GymWrapper", "GymnaxWrapper",
    "env_ids", "environment_spec", "make", "make_host", "wrap",
]
