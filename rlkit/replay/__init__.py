"""Replay: pure device feeders here; Reverb (host) in ``rlkit.replay.reverb``, Reverb world only.

``rlkit.replay.reverb`` is never imported from here: the core must not import Reverb or TensorFlow.
"""

from rlkit.replay.device import FEEDERS, Feeder, importance_weights, make, n_step_transition, transitions

__all__ = ["FEEDERS", "Feeder", "importance_weights", "make", "n_step_transition", "transitions"]
