"""Starting and stopping Ray for one distributed run: loopback only, nothing in the home directory.

Local mode (no address): ``ray.init`` starts a private Ray on this machine whose every listener is on
127.0.0.1 (Ray binds its servers to the node's address, which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
makes the loopback address, as Ray does on macOS), with no dashboard, no usage statistics, a fresh
authentication token held in the environment (Ray would otherwise write ``~/.ray/auth_token``) and its
session files and logs under ``RUN_DIR/ray``. With an address (``--ray-address`` or ``RAY_ADDRESS``)
the run joins that cluster as it is configured; only the processes the run started are ended. The
variables set for Ray are put back when it stops.

Unix socket paths are limited to 107 bytes and Ray puts its sockets in its temporary directory, so a
deep run directory gets a short one in ``/tmp`` instead, linked as ``RUN_DIR/ray/live`` while the run
lasts; its files are copied into ``RUN_DIR/ray`` when Ray stops (a driver killed by SIGKILL leaves it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

RAY_DIR = "ray"
LOOPBACK = "127.0.0.1"
# What Ray appends to its temporary directory for its longest socket path, in bytes:
# "/session_YYYY-MM-DD_HH-MM-SS_ffffff_PID/sockets/plasma_store" with a pid of up to 7 digits.
_SOCKET_ROOM = len("/session_2026-12-05_05-22-00_855562_") + 7 + len("/sockets/plasma_store") + 4
_UNIX_PATH_MAX = 107
_VARIABLES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED", "RAY_DEDUP_LOGS")


def free_port() -> int:
    """A port free on every interface now (Reverb binds every interface and has no bind option)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


class RayCluster:
    """The Ray this run uses: ``start()``, then ``stop(handles)`` ends what the run started.

    Args:
      run_dir: the run directory (Ray's session files and logs go under ``RUN_DIR/ray`` in local mode).
      address: a cluster to join (``"host:port"`` or ``"auto"``); ``None`` starts a local one
        (``RAY_ADDRESS`` in the environment is taken as the address).
      num_cpus: the CPUs a local Ray may schedule (default: enough for every process of the run).
      quiet: keep the processes' log lines off the driver's terminal (they stay in Ray's log files).
    """

    def __init__(self, run_dir: Path, address: str | None = None, num_cpus: int | None = None, quiet: bool = False):
        self.run_dir = Path(run_dir)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.quiet = quiet
        self.local = self.address is None
        self._started = False
        self._saved: dict[str, str | None] = {}
        self._temp_dir: Path | None = None
        self._link: Path | None = None

    def _set(self, name: str, value: str) -> None:
        self._saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def start(self) -> dict[str, Any]:
        """``ray.init`` (local, on loopback, or joining ``address``); returns Ray's address info."""
        import sys

        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            raise ValueError("Ray is already initialized in this process; rlkit.distributed.run starts its own "
                             "(pass ray_address to join a cluster)")
        if self.local or self.address.split(":")[0] in (LOOPBACK, "localhost"):
            # Node address 127.0.0.1, so loopback listeners (and a cluster on loopback is reached there: Ray would
            # otherwise turn 127.0.0.1 into this machine's outward address).
            self._set("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if self.local:
            self._set("RAY_AUTH_TOKEN", secrets.token_hex(32))  # this run's own, not written to ~/.ray
        self._set("RAY_USAGE_STATS_ENABLED", "0")
        self._set("RAY_DEDUP_LOGS", "0")  # each actor's "restarted" line is its own
        import ray  # after the variables above: Ray reads some of them when imported

        self._started = True
        try:
            if not self.local:
                return ray.init(address=self.address, include_dashboard=False, log_to_driver=not self.quiet,
                                configure_logging=False)
            return ray.init(
                address="local", num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=not self.quiet,
                _node_ip_address=LOOPBACK, _temp_dir=str(self._local_temp_dir()), configure_logging=False,
            )
        except Exception as error:  # noqa: BLE001  (Ray raises many kinds)
            raise ValueError(f"Ray did not start{'' if self.local else ' at ' + self.address}: "
                             f"{type(error).__name__}: {error}") from None

    def _local_temp_dir(self) -> Path:
        target = (self.run_dir / RAY_DIR).resolve()
        target.mkdir(parents=True, exist_ok=True)
        if len(str(target).encode()) + _SOCKET_ROOM <= _UNIX_PATH_MAX:
            self._temp_dir = target
            return target
        self._temp_dir = Path(tempfile.mkdtemp(prefix="rlkit-ray-"))
        self._link = target / "live"
        if self._link.is_symlink():
            self._link.unlink()
        self._link.symlink_to(self._temp_dir, target_is_directory=True)
        return self._temp_dir

    def stop(self, handles: list[Any]) -> None:
        """End the run's processes (``ray.kill`` on each handle), then Ray itself when it is local; put back the
        variables ``start`` set."""
        try:
            if self._started:
                import ray

                for handle in handles:
                    try:
                        ray.kill(handle, no_restart=True)
                    except Exception:  # noqa: BLE001  (already gone)
                        pass
                if ray.is_initialized():
                    ray.shutdown()
                self._started = False
            if self._link is not None and self._temp_dir is not None:  # the files move into the run directory
                self._link.unlink(missing_ok=True)
                shutil.copytree(self._temp_dir, self._link.parent, symlinks=True, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("sockets", "session_latest"))
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._link = None
        finally:
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._saved = {}
