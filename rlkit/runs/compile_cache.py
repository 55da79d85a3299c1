"""JAX's persistent compilation cache, on by default for ``rlkit train``.

A run's programs (init, chunk, evaluation) depend on the agent, its config, the environment, the
number of seeds and the chunk plan, not on which seeds: seeds are runtime keys. So a second run of
the same command with ``--first-seed 1`` loads its programs from disk instead of compiling them.
The cache lives in ``$RLKIT_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/rlkit/jax`` (``~/.cache/rlkit/jax``);
``RLKIT_COMPILE_CACHE=off`` or ``--no-compile-cache`` turns it off. It is given a size limit
(``MAX_BYTES``, least recently used entries go first), under which JAX locks the directory with a
file lock for every read and write, so processes that share it never see a half-written entry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

ENV_VAR = "RLKIT_COMPILE_CACHE"
OFF = ("0", "off", "false", "no", "none")
MAX_BYTES = 4 * 2**30


def default_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlkit" / "jax"


def chosen_directory(disabled: bool = False) -> Path | None:
    """Where the cache goes for this process (``None``: off), from ``--no-compile-cache`` and the variable."""
    setting = os.environ.get(ENV_VAR, "").strip()
    if disabled or setting.lower() in OFF:
        return None
    return Path(setting).expanduser() if setting else default_directory()


def enable(directory: Path) -> Path:
    """Point JAX's persistent cache at ``directory`` for every program, however quick to compile, until
    ``restore`` (which ``rlkit.cli.main`` calls when a command returns)."""
    import jax

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"compile cache {directory}: cannot be created ({error.strerror or error}); set "
                         f"{ENV_VAR} to a writable directory, or {ENV_VAR}=off") from None
    settings = {"jax_compilation_cache_dir": str(directory), "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": 0, "jax_compilation_cache_max_size": MAX_BYTES}
    if not _BEFORE:
        _BEFORE.update({name: getattr(jax.config, name) for name in settings})
    for name, value in settings.items():
        jax.config.update(name, value)
    return directory


_BEFORE: dict = {}  # JAX's cache settings before ``enable``


def restore() -> None:
    """Put JAX's cache settings back as they were before ``enable`` (nothing if it was not called).

    A command run in-process (a test, a notebook calling ``rlkit.cli.main``) then leaves the process as
    it found it; otherwise every later compile, eager operations included, would be written to the cache.
    JAX decides once whether to use the cache, so that decision is reset too.
    """
    if not _BEFORE:
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    for name, value in _BEFORE.items():
        jax.config.update(name, value)
    _BEFORE.clear()
    jax_cache.reset_cache()


class CacheCount(NamedTuple):
    hits: int
    misses: int


_ACTIVE: list[CacheCounter] = []  # the counters open now; one listener, registered once, feeds them


def _listen(event: str, **kwargs) -> None:
    for counter in _ACTIVE:
        if event == "/jax/compilation_cache/cache_hits":
            counter.hits += 1
        elif event == "/jax/compilation_cache/cache_misses":
            counter.misses += 1


class CacheCounter:
    """Counts the programs loaded from the cache (hits) and compiled into it (misses) while open."""

    _registered = False  # jax has no public way to unregister a listener (and jax 0.7 none at all)

    def __init__(self):
        self.hits = self.misses = 0

    def __enter__(self) -> CacheCounter:
        if not CacheCounter._registered:
            from jax import monitoring

            monitoring.register_event_listener(_listen)
            CacheCounter._registered = True
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)

    def count(self) -> CacheCount:
        return CacheCount(self.hits, self.misses)
