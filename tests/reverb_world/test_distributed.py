"""`rlkit train --backend distributed`: learning, killed actors, replay server and learner, loopback only.

Each run is a subprocess (its own Ray on 127.0.0.1), bounded in time; every process it started is
ended by its id at the end of the test, whatever happened.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.reverb

DQN = ["--agent", "dqn", "--env", "gym:CartPole-v1", "--backend", "distributed"]


class Run:
    """A ``rlkit train`` subprocess whose stderr lines are read as they come."""

    def __init__(self, out: Path, *args: str, env: dict | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlkit", "train", "--out", str(out), *DQN, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.pids: set[int] = {self.process.pid}

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """The first new line matching ``pattern`` (regex), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            match = re.search(pattern, line)
            if match:
                self.record_pids()
                return match
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n" + "".join(self.lines[-60:]))

    def record_pids(self) -> set[int]:
        """The driver and every process under it now (Ray's servers and workers)."""
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return self.pids
        self.pids |= {child.pid for child in children}
        return self.pids

    def process_pids(self) -> dict:
        match = next(re.search(r"processes: (\{.*\})", line) for line in self.lines if "processes: {" in line)
        return eval(match.group(1))  # a dict of ints and a list of ints, printed by the driver

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def end(self):
        """Kill every process this run started, by id."""
        self.record_pids()
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    @property
    def text(self) -> str:
        return "".join(self.lines)


def alive(pids) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def listeners(pids) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every listening TCP socket of these processes."""
    import psutil

    out = []
    for connection in psutil.net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids:
            out.append((connection.pid, connection.laddr.ip, connection.laddr.port))
    return out


def ended_within(pids, seconds: float) -> None:
    """Every process in ``pids`` is gone within ``seconds``."""
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(pids), alive(pids)


def test_dqn_learns_through_killed_actor_replay_and_learner_and_sigterm(tmp_path, reverb_module):
    # DQN's host preset for gym:CartPole-v1, 2 actors, 50k steps; a metrics line (5 greedy episodes) every
    # 5k steps, the learner and the replay checkpoint every 10k. After the first checkpoint an actor is
    # killed, after the second the replay server, after the third the learner (the run ends); a resumed
    # run is stopped by SIGTERM as it starts; a second resume finishes the budget.
    out = tmp_path / "run"
    args = ["--actors", "2", "--steps", "50000", "--chunks", "10", "--checkpoint-every-steps", "10000",
            "--eval-episodes", "20"]
    run = Run(out, *args)
    try:
        port = int(run.wait_for(r"replay server at 127\.0\.0\.1:(\d+)", 120).group(1))
        run.wait_for(r"processes: ", 120)
        pids = run.process_pids()
        run.wait_for(r"greedy return", 120)
        # Every listener of the run is on loopback, except Reverb's (it has no bind option).
        sockets = listeners(run.record_pids())
        assert any(p == port for _, _, p in sockets), sockets
        outside = [s for s in sockets if s[2] != port and s[1] not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert not outside, sockets
        run.wait_for(r"checkpoint at", 120)
        os.kill(pids["actors"][0], signal.SIGKILL)
        run.wait_for(r"actor 0 restarted", 120)
        before, after = map(int, run.wait_for(r"checkpoint at .*: (\d+)-(\d+) items\)", 180).groups())
        os.kill(pids["replay"], signal.SIGKILL)
        restored = int(run.wait_for(r"replay server restarted from its checkpoint .*: (\d+) items", 120).group(1))
        assert 0 < before <= restored <= after  # what the table held when the checkpoint was taken
        run.wait_for(r"checkpoint at 3\d,\d+ steps", 180)
        everything = run.record_pids()
        os.kill(pids["learner"], signal.SIGKILL)
        assert run.finish(timeout=30) == 1, run.text[-3000:]
        ended_within(everything, 30)
        assert "continue from the last checkpoint with --resume" in run.text
    finally:
        run.end()
    stopped = Run(out, *args, "--resume")  # SIGTERM (as Ctrl-C) ends a run and every process it started
    try:
        stopped.wait_for(r"processes: ", 120)
        everything = stopped.record_pids()
        stopped.process.send_signal(signal.SIGTERM)
        assert stopped.finish(timeout=60) == 130, stopped.text[-3000:]
        ended_within(everything, 30)
    finally:
        stopped.end()
    resumed = Run(out, *args, "--resume")
    try:
        assert resumed.finish(timeout=300) == 0, resumed.text[-4000:]
    finally:
        resumed.end()
    assert not alive(resumed.pids), alive(resumed.pids)
    assert "learner started (pid" in resumed.text and "from a checkpoint" in resumed.text
    results = json.loads((out / "results.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    greedy = [line["per_seed"]["greedy_return"][0] for line in lines]
    assert [line["chunk"] for line in lines] == list(range(10))
    assert results["backend"] == "distributed" and results["per_seed"][0]["env_steps"] >= 50_000
    assert results["resumed_from_chunk"] >= 6
    assert max(greedy) >= 450, greedy  # reached within the budget
    assert results["final_eval_return"]["mean"] >= 200, (results["final_eval_return"], greedy)
    assert (out / "final_states" / "seed_0").is_dir()


@pytest.mark.parametrize("extra, message", [
    (["--agent", "bc"], "learns only from a dataset"),
    (["--seeds", "2"], "trains one seed"),
    (["--actors", "0"], "--actors must be >= 1"),
    (["--env", "gym:CartPol-v1"], "Did you mean CartPole-v1"),
])
def test_distributed_refusals_are_one_line(tmp_path, capsys, reverb_module, extra, message):
    from rlkit.cli import main

    code = main(["train", "--out", str(tmp_path / "run"), *DQN, "--steps", "5000", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


CLUSTER = """
import os, sys, secrets
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_TMPDIR"] = sys.argv[1]  # Ray writes the cluster's address file there, not in /tmp/ray
os.makedirs(os.path.join(sys.argv[1], "ray"), exist_ok=True)
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                         "temp_dir": sys.argv[1]})
second = cluster.add_node(num_cpus=1)
print("address", cluster.address, flush=True)
for command in sys.stdin:
    if command.strip() == "remove":
        cluster.remove_node(second)
        print("removed", flush=True)
    elif command.strip() == "stop":
        break
cluster.shutdown()
print("stopped", flush=True)
"""


def test_actors_spread_over_two_nodes_and_move_when_one_is_removed(tmp_path, reverb_module):
    # A two-node Ray cluster on this machine (ray.cluster_utils: a head with 2 CPUs, a second node with 1);
    # the run joins it with --ray-address. Its two actors (half a CPU each) are spread over both nodes;
    # removing the second node mid-run moves its actor to the head, and the run finishes.
    import secrets
    import shutil
    import tempfile

    import psutil

    env = {**os.environ, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray_dir = tempfile.mkdtemp(prefix="rlkit-ray-")  # short: Ray's socket paths must fit in 107 bytes
    owner = subprocess.Popen([sys.executable, "-c", CLUSTER, ray_dir], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    cluster_pids: set[int] = set()
    run = None
    try:
        started = owner.stdout.readline().split()
        assert started[:1] == ["address"], started
        address = started[1]
        cluster_pids |= {child.pid for child in psutil.Process(owner.pid).children(recursive=True)}
        out = tmp_path / "run"
        run = Run(out, "--actors", "2", "--steps", "8000", "--chunks", "4", "--eval-episodes", "2",
                  "--ray-address", address, env=env)
        nodes = eval(run.wait_for(r"actors on nodes: (\[.*\])", 180).group(1))
        assert len(set(nodes)) == 2, nodes
        run.wait_for(r"greedy return", 180)
        cluster_pids |= {child.pid for child in psutil.Process(owner.pid).children(recursive=True)}
        owner.stdin.write("remove\n")
        owner.stdin.flush()
        assert owner.stdout.readline().strip() == "removed"
        moved = run.wait_for(r"actor (\d) restarted \(pid \d+, node (\w+)\)", 120)
        assert moved.group(2) != nodes[int(moved.group(1))], (moved.group(0), nodes)
        assert run.finish(timeout=240) == 0, run.text[-4000:]
        assert json.loads((out / "results.json").read_text())["per_seed"][0]["env_steps"] >= 8000
    finally:
        if run is not None:
            run.end()
        if owner.poll() is None:
            cluster_pids |= {child.pid for child in psutil.Process(owner.pid).children(recursive=True)}
            try:
                owner.stdin.write("stop\n")
                owner.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                owner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        for pid in cluster_pids | {owner.pid}:  # every process of the cluster, by id
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(ray_dir, ignore_errors=True)
