import os

import pytest


def require_reverb():
    """Import Reverb (after rlax, as TensorFlow Probability needs); skip outside the Reverb world.

    With RLKIT_REQUIRE_REVERB=1 (the Reverb world in scripts/test.sh) a missing Reverb fails instead.
    """
    import rlax  # noqa: F401  (must come before reverb/TensorFlow)

    try:
        import reverb
    except ImportError as error:
        if os.environ.get("RLKIT_REQUIRE_REVERB") == "1":
            pytest.fail(f"RLKIT_REQUIRE_REVERB=1 but Reverb does not import: {error}")
        pytest.skip("Reverb world only (dm-reverb not installed)")
    return reverb


@pytest.fixture(scope="module")
def reverb_module():
    return require_reverb()
