"""Throughput of ``--backend distributed`` against the number of actors (Reverb world, with Ray).

    bash scripts/run.sh reverb python scripts/bench.py --agent dqn --env gym:CartPole-v1 --backend distributed \
        --actors 1,2,4 [--steps 2e4]

For each actor count, one distributed run of ``--steps`` environment steps (the agent's host preset)
in its own process, so each starts a fresh Ray; it prints the total environment steps/s, the learner's
updates/s and the samples per insert the run achieved (items sampled over items inserted; the table's
rate limiter aims at the preset's ratio), the seconds of training, and the whole process's wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(agent: str, env: str, steps: int, actors: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlkit-bench-") as directory:
        out = Path(directory) / "run"
        command = [sys.executable, "-m", "rlkit", "train", "--agent", agent, "--env", env, "--backend", "distributed",
                   "--actors", str(actors), "--steps", str(steps), "--out", str(out), "--eval-episodes", "5",
                   "--chunks", "2", "--quiet", *[arg for item in overrides for arg in ("--set", item)]]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"bench: the run with {actors} actor(s) failed:\n{done.stderr[-3000:]}")
        results = json.loads((out / "results.json").read_text())
    import rlax  # noqa: F401  (before Reverb)

    from rlkit import agents, presets
    from rlkit import config as cfg
    from rlkit.replay.reverb import default_samples_per_insert

    config = cfg.override(presets.config_for(agent, env), dict(item.split("=", 1) for item in overrides))
    spec = agents.get(agent).experience(config)
    steps_per_item = spec.sequence_period if spec.kind == "sequences" else 1
    seed = results["per_seed"][0]
    seconds = results["run_seconds"]
    return {
        "actors": actors, "env_steps": seed["env_steps"], "updates": seed["updates"], "run_seconds": seconds,
        "steps_per_second": seed["env_steps"] / seconds, "updates_per_second": seed["updates"] / seconds,
        # items sampled per item inserted (the learner's updates times the items of a batch, over the items written)
        "samples_per_insert": seed["updates"] * spec.batch_size * steps_per_item / seed["env_steps"],
        "target_samples_per_insert": default_samples_per_insert(spec),
        "final_return": results["final_eval_return"]["mean"], "wall_seconds": wall,
    }


def main(agent: str, env: str, steps: int, actor_counts: list[int], overrides: list[str], json_path: str | None) -> int:
    print(f"{agent} on {env}, --backend distributed, {steps:,} environment steps per run")
    print("actors | env steps/s | updates/s | samples/insert (target) | run s | wall s | final greedy")
    rows = []
    for actors in actor_counts:
        row = measure(agent, env, steps, actors, overrides)
        rows.append(row)
        print(f"{actors:6d} | {row['steps_per_second']:11,.0f} | {row['updates_per_second']:9,.0f} | "
              f"{row['samples_per_insert']:6.1f} ({row['target_samples_per_insert']:.1f}) | {row['run_seconds']:5.1f} | "
              f"{row['wall_seconds']:6.1f} | {row['final_return']:.1f}", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps({"agent": agent, "env": env, "steps": steps, "rows": rows}, indent=1))
    return 0
