"""Replay: pure device buffers here; Reverb (host) in ``rlkit.replay.reverb``, Reverb world only.

``rlkit.replay.reverb`` (tables, ``TransitionWriter``, ``Sampler``, ``ReplayUnavailable``) is never
imported from here: the core must not import Reverb or TensorFlow.
"""

from rlkit.replay.device import DeviceReplay, make, n_step_transition, transitions

__all__ = ["DeviceReplay", "make", "n_step_transition", "transitions"]
