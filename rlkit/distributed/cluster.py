"""Starting and stopping Ray for one distributed run: loopback only, nothing in the home directory.

Local mode (no address): ``ray.init`` starts a private Ray on this machine whose every listener is on
127.0.0.1 (Ray binds its servers to the node's address, which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
makes the loopback address, as Ray does on macOS), with no dashboard, no usage statistics, a fresh
authentication token held in the environment (Ray would otherwise write ``~/.ray/auth_token``) and its
session files and logs under the run directory. With an address (``--ray-address`` or ``RAY_ADDRESS``)
the run joins that cluster as it is configured; only the processes the run started are ended.

Unix socket paths are limited to 107 bytes and Ray puts its sockets in its temporary directory, so a
deep run directory gets a short one in ``/tmp`` instead, linked from ``RUN_DIR/ray`` while the run lasts;
its logs are moved into ``RUN_DIR/ray`` when Ray stops.
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
_SOCKET_ROOM = 60  # what Ray appends to its temporary directory for its longest socket path
_UNIX_PATH_MAX = 107


def free_port() -> int:
    """A port free on this machine now (for Reverb, which binds every interface and has no bind option)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class RayCluster:
    """The Ray this run uses: ``start()``, then ``stop(handles)`` ends what the run started.

    Args:
      run_dir: the run directory (Ray's session files and logs go under ``RUN_DIR/ray`` in local mode).
      address: a cluster to join (``"host:port"`` or ``"auto"``); ``None`` starts a local one
        (``RAY_ADDRESS`` in the environment is taken as the address).
      num_cpus: the CPUs a local Ray may schedule (default: enough for every process of the run).
    """

    def __init__(self, run_dir: Path, address: str | None = None, num_cpus: int | None = None):
        self.run_dir = Path(run_dir)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.local = self.address is None
        self._temp_dir: Path | None = None
        self._link: Path | None = None

    def start(self) -> dict[str, Any]:
        """``ray.init`` (local, on loopback, or joining ``address``); returns Ray's address info."""
        if self.local or self.address.split(":")[0] in ("127.0.0.1", "localhost"):
            # Node address 127.0.0.1, so loopback listeners (and a cluster on loopback is reached there: Ray would
            # otherwise turn 127.0.0.1 into this machine's outward address).
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if self.local:
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))  # not written to ~/.ray
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        import ray  # after the variables above: Ray reads some of them when imported

        if ray.is_initialized():
            raise ValueError("Ray is already initialized in this process; rlkit.distributed.run starts its own "
                             "(pass ray_address to join a cluster)")
        if not self.local:
            return ray.init(address=self.address, include_dashboard=False, log_to_driver=True,
                            configure_logging=False)
        return ray.init(
            address="local", num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=True,
            _node_ip_address=LOOPBACK, _temp_dir=str(self._local_temp_dir()), configure_logging=False,
        )

    def _local_temp_dir(self) -> Path:
        target = (self.run_dir / RAY_DIR).resolve()
        if len(str(target)) + _SOCKET_ROOM <= _UNIX_PATH_MAX:
            target.mkdir(parents=True, exist_ok=True)
            self._temp_dir = target
            return target
        self._temp_dir = Path(tempfile.mkdtemp(prefix="rlkit-ray-"))
        self._link = self.run_dir / RAY_DIR
        if self._link.is_symlink() or self._link.is_file():
            self._link.unlink()
        elif self._link.is_dir():
            shutil.rmtree(self._link, ignore_errors=True)
        self._link.symlink_to(self._temp_dir, target_is_directory=True)
        return self._temp_dir

    def stop(self, handles: list[Any]) -> None:
        """End the run's processes (``ray.kill`` on each handle), then Ray itself when it is local."""
        import ray

        if not ray.is_initialized():
            return
        for handle in handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001  (already gone)
                pass
        ray.shutdown()
        if self._link is not None and self._temp_dir is not None:  # the logs move into the run directory
            self._link.unlink(missing_ok=True)
            shutil.copytree(self._temp_dir, self._link, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("sockets", "*.sock", "plasma_store", "raylet"))
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._link = None
