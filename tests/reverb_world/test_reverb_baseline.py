"""baselines/dqn_reverb.py keeps working: a short run through its main()."""

import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.reverb

BASELINE = Path(__file__).resolve().parents[2] / "baselines" / "dqn_reverb.py"


def test_dqn_reverb_baseline_runs(reverb_module, capsys):
    spec = importlib.util.spec_from_file_location("dqn_reverb_baseline", BASELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    final = module.main(["--steps", "2000", "--eval-every", "1000", "--seed", "1"])
    assert math.isfinite(final) and final > 0
    out = capsys.readouterr().out
    assert "updates" in out and "final greedy return over 20 episodes" in out
