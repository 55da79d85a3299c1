import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def cartpole():
    from rlkit import envs

    return envs.make("CartPole-v1")
