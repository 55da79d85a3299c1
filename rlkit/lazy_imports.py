"""Defer modules that rlkit's dependencies import at start-up but use only inside functions.

gymnax imports ``seaborn`` (and with it scipy.stats and pandas) and ``matplotlib.pyplot`` for its
environments' drawing methods: together about a second of every ``rlkit`` command's start on a
2-core machine. rlax imports ``distrax`` (and with it TensorFlow Probability's JAX substrate,
about 0.45 s) for its distribution helpers (``rlax.epsilon_greedy``, ``rlax.softmax``, the
categorical losses), which only a few agents call, and only inside their functions. It is deferred
only where TensorFlow is not installed (the core world): TensorFlow Probability refuses to load
after TensorFlow 2.15, so the Reverb world imports it first, as before.

Until then, each of them is a placeholder module in ``sys.modules`` that imports the real module
the first time any of its attributes is read, and hands every attribute on from then on; so code
that does use them (``rlkit.plot``, a user's ``import seaborn``) gets the real module, only later.

``defer()`` runs once, when ``rlkit`` is imported, and leaves alone any module already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

DEFERRED = ("seaborn", "matplotlib.pyplot", "distrax")

# (reading module, deferred module, attribute): names a dependency reads from a deferred module only
# for its functions' annotations, while it is being imported. Such a read gets the annotation as a
# string, as ``from __future__ import annotations`` would store it, and imports nothing.
ANNOTATION_READS = frozenset({("rlax._src.policy_targets", "distrax", "DistributionLike")})

# A deferred module that must be imported before another one is imported at once where that one is installed.
IMPORT_BEFORE = {"distrax": "tensorflow"}


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is read; then imports it and forwards."""

    def __getattr__(self, attribute: str):
        reader = sys._getframe(1).f_globals.get("__name__")
        if (reader, self.__name__, attribute) in ANNOTATION_READS:
            return f"{self.__name__}.{attribute}"
        return getattr(load(self.__name__), attribute)

    def __dir__(self):
        return dir(load(self.__name__))


_LOADING = threading.RLock()  # two threads tracing at once (a background compile) may both load a module


def load(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only its placeholder was there."""
    with _LOADING:
        module = sys.modules.get(name)
        if isinstance(module, DeferredModule):
            del sys.modules[name]
            try:
                module = importlib.import_module(name)
            except BaseException:
                sys.modules[name] = sys.modules.get(name, module)  # keep the placeholder; the error is the caller's
                raise
        return module if module is not None else importlib.import_module(name)


def installed(name: str) -> bool:
    """Whether the top-level package of ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def defer(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a placeholder in ``sys.modules`` for each of ``names`` not imported yet and installed."""
    for name in names:
        if name in sys.modules or not installed(name):
            continue  # already real, or an import of it should fail as usual
        if name in IMPORT_BEFORE and installed(IMPORT_BEFORE[name]):
            continue
        sys.modules[name] = DeferredModule(name)
