"""Whole-process wall time of ``rlkit train`` from the shell, beside peers on the same settings.

    python scripts/wall_time.py ppo --rejax /work/.venv-peers/bin/python [--repeats 5]
    python scripts/wall_time.py dqn [--repeats 3]

What a user feels is the time from pressing enter to the prompt: interpreter start, imports,
compiling, training, the final evaluation, the run directory's records and the interpreter's exit.
This script times exactly that for fresh processes, alternating the commands in every round so
the machine's noise falls on all of them alike, and prints each round and the medians.

- ``ppo``: PPO on CartPole-v1, 5e5 steps, 1 seed, rejax_bench's (PureJaxRL's) settings. Each
  round runs ``rlkit train`` with an empty compile cache (the first run), the same command again
  with ``--first-seed 1`` (the second run, whose programs come from that cache: its log line
  is quoted), and the peer timing program (``--rejax-bench``) in rejax's own environment.
- ``dqn``: DQN on CartPole-v1, 5e5 steps, PureJaxRL's settings (``scripts/dqn_reference.py``),
  ``rlkit train`` with an empty cache beside that minimal single-file DQN; both returns quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REJAX_BENCH = ROOT.parent / "shared" / "peers" / "rejax_bench.py"  # the default --rejax-bench

# rejax_bench.py's PPO (PureJaxRL's CartPole settings, rejax's 64x64 network); see bench.rejax_settings.
PPO = {"num_envs": "4", "num_steps": "128", "num_epochs": "4", "num_minibatches": "4", "learning_rate": "2.5e-4",
       "anneal_lr": "false", "max_grad_norm": "0.5", "gamma": "0.99", "gae_lambda": "0.95", "clip_eps": "0.2",
       "ent_coef": "0.01", "vf_coef": "0.5", "hidden_sizes": "64,64", "activation": "swish"}
# scripts/dqn_reference.py, PureJaxRL's DQN: 10 envs, an update every vector step, buffer 1e4, batch 128, 120-84.
DQN = {"num_envs": "10", "num_steps": "1", "buffer_size": "10000", "batch_size": "128", "learning_starts": "10000",
       "learning_rate": "2.5e-4", "anneal_lr": "false", "target_update_freq": "500", "tau": "1.0",
       "double_q": "false", "epsilon_decay_steps": "250000", "epsilon_end": "0.05", "hidden_sizes": "120,84",
       "activation": "relu", "max_grad_norm": "inf"}
STEPS = "500000"


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of one fresh process, and its output."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"wall_time: {' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def rlkit_train(agent: str, settings: dict[str, str], out: Path, *extra: str) -> list[str]:
    sets = [arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")]
    return [sys.executable, "-m", "rlkit", "train", "--agent", agent, "--env", "CartPole-v1", "--steps", STEPS,
            "--quiet", "--overwrite", "--out", str(out), *sets, *extra]


def final_return(out: Path) -> float:
    return round(json.loads((out / "results.json").read_text())["final_eval_return"]["mean"], 1)


def cache_line(output: str) -> str:
    match = re.search(r"compile cache .*", output)
    return match.group(0) if match else "(no compile cache line)"


def round_ppo(work: Path, env: dict[str, str], rejax_python: str, rejax_bench: Path) -> dict:
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))  # empty: this round's first run compiles
    env = {**env, "RLKIT_COMPILE_CACHE": str(cache)}
    first, _ = timed(rlkit_train("ppo", PPO, work / "first"), env)
    second, output = timed(rlkit_train("ppo", PPO, work / "second", "--first-seed", "1"), env)
    rejax, rejax_output = timed([rejax_python, str(rejax_bench), "ppo", "CartPole-v1", "--seeds", "1",
                                 "--steps", STEPS], env)
    rejax_result = json.loads(rejax_output.strip().splitlines()[0])
    return {"rlkit_first_s": first, "rlkit_second_s": second, "rejax_s": rejax,
            "first_over_rejax": first / rejax, "second_over_first": second / first,
            "rlkit_return": final_return(work / "first"), "rejax_return": rejax_result["final_eval_return"],
            "second_run_cache": cache_line(output)}


def round_dqn(work: Path, env: dict[str, str]) -> dict:
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    env = {**env, "RLKIT_COMPILE_CACHE": str(cache)}
    ours, _ = timed(rlkit_train("dqn", DQN, work / "dqn"), env)
    reference, output = timed([sys.executable, str(ROOT / "scripts" / "dqn_reference.py")], env)
    result = json.loads(output.strip().splitlines()[-1])
    return {"rlkit_s": ours, "reference_s": reference, "rlkit_over_reference": ours / reference,
            "rlkit_return": final_return(work / "dqn"), "reference_return": result["eval_return"],
            "reference_train_return": result["train_return"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("agent", choices=("ppo", "dqn"))
    parser.add_argument("--rejax", metavar="PYTHON", help="ppo: the python of rejax's environment (see the README)")
    parser.add_argument("--rejax-bench", type=Path, default=REJAX_BENCH, metavar="FILE",
                        help="ppo: the peer timing program that runs rejax's train (default: the team's, beside the checkout)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default: 5 for ppo, 3 for dqn)")
    args = parser.parse_args()
    if args.agent == "ppo" and not args.rejax:
        parser.error("ppo: --rejax PYTHON is required (the python of rejax's environment; see the README)")
    if args.agent == "ppo" and not args.rejax_bench.is_file():
        parser.error(f"ppo: --rejax-bench {args.rejax_bench} is not a file (the peer timing program for rejax)")
    repeats = args.repeats or (5 if args.agent == "ppo" else 3)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("XLA_", "JAX_"))}
    env["PYTHONPATH"] = str(ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            work = Path(tempfile.mkdtemp(dir=tmp))
            row = round_ppo(work, env, args.rejax, args.rejax_bench) if args.agent == "ppo" else round_dqn(work, env)
            rows.append({"round": repeat, **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}})
            print(json.dumps(rows[-1]), flush=True)
    medians = {f"median_{k}": round(statistics.median(r[k] for r in rows), 3)
               for k, v in rows[0].items() if isinstance(v, float) and k != "round"}
    print(json.dumps({"agent": args.agent, "rounds": repeats, **medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
