"""Defer modules that rlkit's dependencies import at start-up but use only in functions rlkit never calls.

gymnax imports ``seaborn`` (and with it scipy.stats and pandas) and ``matplotlib.pyplot`` for its
environments' drawing methods: together about a second of every ``rlkit`` command's start on a
2-core machine. Until then, each of them is a placeholder module in ``sys.modules`` that imports
the real module the first time any of its attributes is read, and hands every attribute on from
then on; so code that does use them (``rlkit.plot``, a user's ``import seaborn``) gets the real
module, only later.

``defer()`` runs once, when ``rlkit`` is imported, and leaves alone any module already imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

DEFERRED = ("seaborn", "matplotlib.pyplot")


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is read; then imports it and forwards."""

    def __getattr__(self, attribute: str):
        return getattr(load(self.__name__), attribute)

    def __dir__(self):
        return dir(load(self.__name__))


def load(name: str) -> types.ModuleType:
    """The real module ``name``, imported now if only its placeholder was there."""
    module = sys.modules.get(name)
    if isinstance(module, DeferredModule):
        del sys.modules[name]
        try:
            module = importlib.import_module(name)
        except BaseException:
            sys.modules[name] = sys.modules.get(name, module)  # keep the placeholder; the error is the caller's
            raise
    return module if module is not None else importlib.import_module(name)


def defer(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a placeholder in ``sys.modules`` for each of ``names`` not imported yet and installed."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            if importlib.util.find_spec(name.split(".")[0]) is None:
                continue  # not installed: an import of it should fail as usual
        except (ImportError, ValueError):
            continue
        sys.modules[name] = DeferredModule(name)
