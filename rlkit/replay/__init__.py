"""Replay: pure device buffers here; Reverb (host) in ``rlkit.replay.reverb``, Reverb world only."""

from rlkit.replay.device import DeviceReplay, make, n_step_transition, transitions

__all__ = ["DeviceReplay", "make", "n_step_transition", "transitions"]
