import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    """Commands the tests run use a compile cache of this session's own, never the user's."""
    if "RLKIT_COMPILE_CACHE" not in os.environ:
        import tempfile

        os.environ["RLKIT_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="rlkit-test-compile-cache-")


@pytest.fixture(scope="session")
def cartpole():
    from rlkit import envs

    return envs.make("CartPole-v1")
