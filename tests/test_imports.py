import subprocess
import sys

import pytest

pytestmark = pytest.mark.both_worlds  # each world imports differently (TensorFlow, distrax)

# Run in a fresh interpreter where TensorFlow and Reverb cannot be imported, even in the Reverb
# world where they are installed (there TensorFlow Probability, under rlax/distrax, would otherwise
# pick TensorFlow up for its docstrings): rlkit's core must import and train without them.
BLOCKED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'reverb'):
            raise ImportError(f'{name} is blocked: the core must not need it')
sys.meta_path.insert(0, Block())
"""

USE_THE_CORE = """
import jax, rlkit, rlkit.cli, rlkit.runs, rlkit.loops, rlkit.replay, rlkit.render, rlkit.plot
import rlkit.runs.rundir, rlkit.runs.trained, rlkit.runs.reverb_runner, rlkit.runs.wandb_logger, rlkit.runs.compile_cache
from rlkit.agents import dqn
env = rlkit.make_env('CartPole-v1')
config = dqn.Config(num_envs=2, buffer_size=64, batch_size=4, learning_starts=8, hidden_sizes=(8,))
trainer = rlkit.make_trainer(dqn, config, env, rlkit.RunConfig(total_steps=64, num_chunks=1, eval_episodes=1))
run_state, metrics = jax.jit(trainer.train)(jax.random.key(0), {})
assert int(run_state.env_steps) == 64
bad = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'reverb'})
print('imported:', bad)
sys.exit(1 if bad else 0)
"""


def test_core_works_without_tensorflow_or_reverb():
    out = subprocess.run([sys.executable, "-c", BLOCKED + USE_THE_CORE], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


DEFERRED = """
import sys, types
import rlkit, rlkit.cli
from rlkit import lazy_imports
assert not any(name.startswith('seaborn.') for name in sys.modules), 'seaborn was imported with rlkit'
with_tensorflow = lazy_imports.installed('tensorflow')  # the Reverb world: distrax is imported at once
assert ('tensorflow_probability' in sys.modules) == with_tensorflow, 'distrax loaded TensorFlow Probability'
for name in lazy_imports.DEFERRED:
    deferred = not (name in lazy_imports.IMPORT_BEFORE and with_tensorflow)
    assert isinstance(sys.modules[name], lazy_imports.DeferredModule) == deferred, (name, type(sys.modules[name]))
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import seaborn
palette = seaborn.color_palette('cubehelix', 3)  # the first attribute read imports the real module
assert len(palette) == 3 and not isinstance(sys.modules['seaborn'], lazy_imports.DeferredModule)
figure, axes = plt.subplots()  # so does pyplot's, the backend chosen before it loaded
assert type(sys.modules['matplotlib.pyplot']) is types.ModuleType and matplotlib.get_backend().lower() == 'agg'
import jax, jax.numpy as jnp, rlax
atoms = jnp.linspace(-1.0, 1.0, 5)  # C51's loss, the first use of distrax, inside a trace: the real module loads
loss = jax.jit(rlax.categorical_q_learning)(atoms, jnp.zeros((2, 5)), 0, 1.0, 0.9, atoms, jnp.zeros((2, 5)))
assert jnp.isfinite(loss) and 'tensorflow_probability' in sys.modules
import distrax
assert type(sys.modules['distrax']) is types.ModuleType and distrax.Categorical is not None
print('ok')
"""


def test_what_gymnax_imports_to_draw_and_rlax_imports_for_distributions_loads_when_first_used():
    out = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
