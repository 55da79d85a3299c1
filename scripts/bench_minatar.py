"""PPO throughput on Breakout-MinAtar with 64 environments: rlkit beside rejax and the raw environment rate.

    python scripts/bench_minatar.py --rejax .venv-peers/bin/python [--steps 1e6] [--repeats 3]

Alternates fresh processes, ``--repeats`` rounds of:
  * rlkit's PPO with rejax's network (64x64 swish MLP on the flattened image) and the same settings
    (64 envs x 128 steps, 4 epochs, 8 minibatches, lr 5e-4), through ``scripts/bench.py`` (which also
    times the environment alone: random actions in a jitted scan, the ceiling);
  * rejax's PPO on the same settings, in the peer interpreter (this file again, with ``--as-rejax``);
  * rlkit's MinAtar preset (the MinAtar CNN), for what the image torso costs.
Prints the median steps/s of each and the ratio rlkit/rejax. rejax's run includes its evaluation at
the start and the end (128 episodes each); rlkit's run does not include its final evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ENV = "Breakout-MinAtar"
SETTINGS = {"num_envs": 64, "num_steps": 128, "num_epochs": 4, "num_minibatches": 8, "learning_rate": 5e-4,
            "max_grad_norm": 0.5, "gamma": 0.99, "gae_lambda": 0.95, "clip_eps": 0.2, "ent_coef": 0.01,
            "vf_coef": 0.5}
BENCH = Path(__file__).resolve().parent / "bench.py"


def run_json(command: list[str]) -> dict:
    """bench.py's: run a process that writes JSON to the path after --json (imported late: bench imports rlkit)."""
    sys.path.insert(0, str(BENCH.parent))
    from bench import run_json as bench_run_json

    return bench_run_json(command)


def as_rejax(steps: int, out: Path) -> None:
    """Time rejax's PPO (run inside the peer interpreter, which has rejax and no rlkit)."""
    import jax
    from rejax import get_algo

    config = {"env": ENV, "total_timesteps": steps, "eval_freq": steps, **SETTINGS,
              "agent_kwargs": {"activation": "swish", "hidden_layer_sizes": (64, 64)}}
    algo = get_algo("ppo").create(**config)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    train = jax.jit(jax.vmap(algo.train))
    start = time.perf_counter()
    compiled = train.lower(keys).compile()
    compiled_at = time.perf_counter()
    state, (_, returns) = compiled(keys)
    jax.block_until_ready(state)
    done = time.perf_counter()
    out.write_text(json.dumps({"compile_s": compiled_at - start, "run_s": done - compiled_at, "steps": steps,
                               "steps_per_s": steps / (done - compiled_at),
                               "final_eval_return": float(returns[:, -1].mean())}))


def rlkit_run(steps: int, sets: dict) -> list[dict]:
    args = [f"--set={name}={value}" for name, value in sets.items()]
    document = run_json([sys.executable, str(BENCH), "--agent", "ppo", "--env", ENV, "--steps", str(steps),
                         "--seeds", "1", "--eval-episodes", "8", *args])
    return document["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rejax", metavar="PEER_PYTHON",
                        help="the interpreter that has rejax (.venv-peers/bin/python)")
    parser.add_argument("--steps", type=float, default=1e6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--as-rejax", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = int(args.steps)
    if args.as_rejax:
        as_rejax(steps, args.json)
        return
    if not args.rejax:
        parser.error("--rejax: the peer interpreter with rejax is required (e.g. .venv-peers/bin/python)")
    mlp = {**SETTINGS, "anneal_lr": "false", "hidden_sizes": "64,64", "activation": "swish", "torso": "mlp"}
    rows = {"rlkit_mlp": [], "rejax_mlp": [], "rlkit_cnn": [], "ceiling": []}
    for round_ in range(args.repeats):
        records = rlkit_run(steps, mlp)
        train = next(r for r in records if r["kind"] == "train")
        rows["rlkit_mlp"].append(train["steps_per_s"])
        rows["ceiling"].append(next(r for r in records if r["kind"] == "env_ceiling")["steps_per_s"])
        theirs = run_json([args.rejax, __file__, "--as-rejax", "--steps", str(steps)])
        rows["rejax_mlp"].append(theirs["steps_per_s"])
        cnn = next(r for r in rlkit_run(steps, {}) if r["kind"] == "train")
        rows["rlkit_cnn"].append(cnn["steps_per_s"])
        print(f"round {round_ + 1}: rlkit MLP {train['steps_per_s']:,.0f} steps/s "
              f"(return {train['final_eval_return']:.1f}), "
              f"rejax MLP {theirs['steps_per_s']:,.0f} (return {theirs['final_eval_return']:.1f}), "
              f"rlkit CNN preset {cnn['steps_per_s']:,.0f} (return {cnn['final_eval_return']:.1f})", flush=True)
    median = {name: statistics.median(values) for name, values in rows.items()}
    print(f"\nPPO on {ENV}, 64 envs, {steps:,} steps, 1 seed, medians of {args.repeats}:")
    print(f"  environment alone (random actions): {median['ceiling']:>12,.0f} steps/s")
    print(f"  rlkit, rejax's MLP:                 {median['rlkit_mlp']:>12,.0f} steps/s "
          f"({median['rlkit_mlp'] / median['rejax_mlp']:.2f}x rejax)")
    print(f"  rejax, its MLP:                     {median['rejax_mlp']:>12,.0f} steps/s")
    print(f"  rlkit, the MinAtar CNN preset:      {median['rlkit_cnn']:>12,.0f} steps/s")


if __name__ == "__main__":
    main()
