import subprocess
import sys


def test_core_never_imports_tensorflow_or_reverb():
    code = (
        "import sys, rlkit, rlkit.cli, rlkit.runs, rlkit.loops, rlkit.replay;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'reverb'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
