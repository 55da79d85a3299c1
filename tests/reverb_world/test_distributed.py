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

    def __init__(self, out: Path, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlkit", "train", "--out", str(out), *DQN, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
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


def test_dqn_learns_through_killed_actor_and_replay_server_listening_on_loopback(tmp_path, reverb_module):
    # DQN's host preset for gym:CartPole-v1, 2 actors, 50k steps; a metrics line (5 greedy episodes) every
    # 5k steps, the learner and the replay checkpoint every 10k. An actor is killed after the first
    # checkpoint, the replay server after the second.
    out = tmp_path / "run"
    run = Run(out, "--actors", "2", "--steps", "50000", "--chunks", "10", "--checkpoint-every-steps", "10000",
              "--eval-episodes", "20")
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
        assert run.finish(timeout=300) == 0, run.text[-4000:]
    finally:
        run.end()
    assert not alive(run.pids), alive(run.pids)
    results = json.loads((out / "results.json").read_text())
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    greedy = [line["per_seed"]["greedy_return"][0] for line in lines]
    assert results["backend"] == "distributed" and results["per_seed"][0]["env_steps"] >= 50_000
    assert max(greedy) >= 450, greedy  # reached within the budget
    assert results["final_eval_return"]["mean"] >= 200, (results["final_eval_return"], greedy)
    assert (out / "final_states" / "seed_0").is_dir()


def test_killed_learner_ends_every_process_and_resume_finishes(tmp_path, reverb_module):
    out = tmp_path / "run"
    args = ["--actors", "1", "--steps", "6000", "--chunks", "3", "--checkpoint-every-steps", "2000",
            "--eval-episodes", "2"]
    run = Run(out, *args)
    try:
        run.wait_for(r"processes: ", 120)
        learner = run.process_pids()["learner"]
        run.wait_for(r"checkpoint at", 120)
        pids = run.record_pids()
        os.kill(learner, signal.SIGKILL)
        killed = time.monotonic()
        assert run.finish(timeout=30) == 1
        while alive(pids) and time.monotonic() - killed < 30:
            time.sleep(0.5)
        assert not alive(pids), (alive(pids), run.text[-3000:])
        assert "continue from the last checkpoint with --resume" in run.text
    finally:
        run.end()
    resumed = Run(out, *args, "--resume")
    try:
        assert resumed.finish(timeout=240) == 0, resumed.text[-4000:]
    finally:
        resumed.end()
    assert "learner started (pid" in resumed.text and "from a checkpoint" in resumed.text
    results = json.loads((out / "results.json").read_text())
    assert results["per_seed"][0]["env_steps"] >= 6_000 and results["resumed_from_chunk"] >= 1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["chunk"] for line in lines] == [0, 1, 2]


@pytest.mark.parametrize("extra, message", [
    (["--agent", "ppo"], "agents that learn from transitions"),
    (["--seeds", "2"], "trains one seed"),
    (["--actors", "0"], "--actors must be >= 1"),
    (["--env", "gym:CartPol-v1"], "Did you mean CartPole-v1"),
])
def test_distributed_refusals_are_one_line(tmp_path, reverb_module, extra, message):
    done = subprocess.run(
        [sys.executable, "-m", "rlkit", "train", "--out", str(tmp_path / "run"), *DQN, "--steps", "5000", *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
