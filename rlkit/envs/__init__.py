"""Environments: on the device through gymnax (``make``), on the host through dm_env adapters."""

from rlkit.envs.device import DeviceEnv, EnvStep, EpisodeState, env_ids, make, wrap

__all__ = ["DeviceEnv", "EnvStep", "EpisodeState", "env_ids", "make", "wrap"]
