"""Reference results: PPO, DQN and PQN on MinAtar with the MinAtar CNN, PPO on Brax; a markdown table.

    python scripts/reference.py [--agents ppo,dqn,pqn] [--games Breakout-MinAtar,...] [--steps 1e7]
                                [--seeds 2] [--out runs/reference] [--readme README.md]
    python scripts/reference.py --agents ppo --games brax:inverted_pendulum      (the brax extra)

Each (agent, game) pair is one ``python -m rlkit train`` run with the pair's preset (``rlkit/presets.py``)
into ``OUT/AGENT-GAME`` (``:`` as ``-``), its seeds vmapped in one compile, for ``--steps`` (the preset's budget unless
given: 1e7 on MinAtar). A pair that finished is read back, not trained again; one that was stopped
continues from its last checkpoint (``--resume``), so a long reference run survives being killed.
The table has a row for every finished pair under ``OUT`` (so runs of several calls share one table):
the mean final return over the seeds with its 95% Student-t interval, of the greedy policy (the run's
own evaluation) and of the policy with sampled actions (164 episodes per seed, computed here once and
kept in the run's ``sampled_eval.json``), beside the published gymnax-blines PPO figure at 1e7 steps
on MinAtar. gymnax-blines evaluates its PPO with sampled actions over 164 episodes, so its figure
compares with the sampled column. It goes to ``OUT/reference.md``, and with
``--readme`` between the README's reference markers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlkit import presets  # noqa: E402
from rlkit.config import parse_steps  # noqa: E402
from rlkit.stats import mean_interval  # noqa: E402

# gymnax-blines' PPO (MLP on the flattened image) at 1e7 steps, as its README reports them.
GYMNAX_BLINES_PPO = {"Breakout-MinAtar": 28, "SpaceInvaders-MinAtar": 131, "Asterix-MinAtar": 15,
                     "Freeway-MinAtar": 58}
START, END = "<!-- reference:start -->", "<!-- reference:end -->"
SAMPLED_EPISODES = 164  # gymnax-blines' num_test_rollouts


def train(agent: str, game: str, steps: int | None, seeds: int, out: Path) -> dict:
    """The pair's results.json, training (or resuming) it first if it has not finished."""
    results = out / "results.json"
    steps = steps or presets.get(agent, game).steps
    if results.exists():
        done = json.loads(results.read_text())
        # rlkit train rounds the budget down to whole iterations (a few thousand steps)
        if not 0.95 * steps <= done["total_steps"] <= steps or len(done["seeds"]) != seeds:
            raise SystemExit(f"--out: {out} holds a finished run of {done['total_steps']:,} steps and "
                             f"{len(done['seeds'])} seeds, not --steps {steps:,} and --seeds {seeds}; "
                             "choose another --out")
        return done
    command = [sys.executable, "-m", "rlkit", "train", "--agent", agent, "--env", game, "--steps", str(steps),
               "--seeds", str(seeds), "--out", str(out), "--chunks", "20", "--checkpoint-every-minutes", "10"]
    if (out / "run.json").exists():
        command.append("--resume")
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(results.read_text())


def finished(out: Path) -> list[dict]:
    """The results of every finished run under ``out`` (its direct subdirectories), MinAtar first, in
    ``MINATAR_GAMES``' order, each with its sampled-action returns (``sampled_returns``)."""
    rows = []
    for path in sorted(out.glob("*/results.json")):
        row = json.loads(path.read_text())
        row["sampled"] = sampled_returns(path.parent)
        rows.append(row)
    order = {game: i for i, game in enumerate(presets.MINATAR_GAMES)}
    return sorted(rows, key=lambda row: (order.get(row["env"], len(order)), row["env"], row["agent"],
                                         row["total_steps"]))


def sampled_returns(run_dir: Path) -> list[float] | None:
    """Per-seed mean return of the final policy with sampled actions over ``SAMPLED_EPISODES`` episodes
    (gymnax-blines' evaluation), kept in ``run_dir/sampled_eval.json`` for the run's ``results.json``
    (a run trained again is evaluated again); None, with a line saying why, if the run cannot be loaded."""
    saved = run_dir / "sampled_eval.json"
    key = {"results_sha256": hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest(),
           "episodes": SAMPLED_EPISODES}
    if saved.exists():
        record = json.loads(saved.read_text())
        if all(record.get(name) == value for name, value in key.items()):
            return record["per_seed"]
    import rlkit
    from rlkit.runs.records import write_json_atomic

    try:
        returns = rlkit.evaluate_trained(rlkit.load(run_dir), SAMPLED_EPISODES, policy="sample")
    except (ValueError, ImportError) as error:
        print(f"{run_dir}: no sampled-action evaluation ({str(error).splitlines()[0]})", file=sys.stderr)
        return None
    write_json_atomic(saved, {**key, "per_seed": returns.mean(axis=1).tolist()})
    return returns.mean(axis=1).tolist()


def table(rows: list[dict]) -> str:
    lines = ["| game | agent | steps | seeds | greedy return | 95% interval | sampled-action return | 95% interval "
             "| gymnax-blines PPO (1e7, sampled) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cells(per_seed: list[float] | None) -> str:
        if per_seed is None:
            return "n/a | n/a"
        estimate = mean_interval(per_seed)
        interval = f"[{estimate.low:.1f}, {estimate.high:.1f}]" if estimate.n > 1 else "(one seed)"
        return f"{estimate.mean:.1f} | {interval}"

    for row in rows:
        published = GYMNAX_BLINES_PPO.get(row["env"], "")
        lines.append(f"| {row['env']} | {row['agent']} | {row['total_steps']:,} | {len(row['seeds'])} "
                     f"| {cells(row['final_eval_return']['per_seed'])} | {cells(row['sampled'])} | {published} |")
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, text: str) -> None:
    content = readme.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"--readme: {readme} has no {START} ... {END} markers to write the table between")
    head, rest = content.split(START, 1)
    readme.write_text(head + START + "\n" + text + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="ppo,dqn,pqn")
    parser.add_argument("--games", default=",".join(presets.MINATAR_GAMES))
    parser.add_argument("--steps", type=parse_steps, default=None, help="default: each preset's budget")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "reference")
    parser.add_argument("--readme", type=Path, default=None)
    args = parser.parse_args()
    args.out = args.out.resolve()  # rlkit train runs from the repository's root
    agents, games = args.agents.split(","), args.games.split(",")
    for agent in agents:
        for game in games:
            if presets.get(agent, game) is None:
                parser.error(f"--agents/--games: no preset for ({agent}, {game}); the reference presets are "
                             f"ppo, dqn and pqn on {', '.join(presets.MINATAR_GAMES)}, and ppo on "
                             "brax:inverted_pendulum")
    for game in games:
        for agent in agents:
            train(agent, game, args.steps, args.seeds, args.out / f"{agent}-{game.replace(':', '-')}")
    text = table(finished(args.out))
    (args.out / "reference.md").write_text(text)
    print(text)
    if args.readme:
        write_readme(args.readme, text)


if __name__ == "__main__":
    main()
