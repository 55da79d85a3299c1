"""Benchmark an rlkit agent: compile and run times, throughput, final return, and the env ceiling.

    python scripts/bench.py --agent ppo --env CartPole-v1 [--steps 5e5] [--set name=value ...]
                            [--seeds 1,16] [--json OUT]
    python scripts/bench.py --agent ppo --env CartPole-v1 --compare-rejax .venv-peers/bin/python [--rejax-bench FILE]
    python scripts/bench.py --agent dqn --env gym:CartPole-v1 --backend reverb [--steps 2e4] [--updates 1000]

For each seed count (vmapped in one compile) it times training the way ``rlkit.run_training`` does
(``rlkit.compile_training``: init and chunk compiled side by side, the evaluation compiling in the
background while the chunks run, then the final greedy evaluation), reporting each program's
compile time too. Beside it, the ceiling: random actions
through a jitted ``lax.scan`` over the vmapped ``env.step``, same num_envs and seed counts, the same
number of steps per env. The persistent compilation cache is off and in-memory caches are cleared
before each measurement, so compile times are honest.

``--compare-rejax PYTHON`` instead alternates fresh processes of this script (1 seed) and of
the peer timing program (``--rejax-bench``, rejax's own train on the same settings) in that interpreter, with rlkit's config set to rejax_bench's
settings (``--set`` still wins), and prints the median ratio rlkit/rejax of compile+run time.
rejax's train includes its evaluation (initial and final, 128 episodes each), so rlkit's total is
given with its evaluation (compile + run, 128 episodes) and without.

``--backend reverb`` (Reverb world) times the host loop instead: environment steps/s of the actor
writing every transition to an in-process Reverb server with the learner paused, learner updates/s
and samples/s from Reverb with the actor paused, and both interleaved at the replay ratio, beside the
raw step rate of the same environment in a bare Python loop (random actions; the ceiling).
"""

from __future__ import annotations

import os

os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # before jax is imported, here and in children

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import rlkit
import rlkit.config

jax.config.update("jax_enable_compilation_cache", False)

# The peer timing program (rejax's train on fixed settings, one JSON line): not part of rlkit, since rejax needs
# its own environment; the team keeps it beside the checkout.
REJAX_BENCH = Path(__file__).resolve().parents[2] / "shared" / "peers" / "rejax_bench.py"


def rejax_settings(agent: str, steps: int, action_scale: float = 1.0) -> dict[str, str]:
    """rlkit config values matching what rejax_bench.py runs (its settings plus rejax's defaults).

    ``action_scale`` is the half-width of a continuous action range: rejax's TD3 noise is in
    the environment's units, rlkit's a fraction of that half-width.
    """
    network = {"hidden_sizes": "64,64", "activation": "swish"}  # rejax's default network
    if agent == "ppo":
        return {
            "num_envs": "4", "num_steps": "128", "num_epochs": "4", "num_minibatches": "4",
            "learning_rate": "2.5e-4", "anneal_lr": "false", "max_grad_norm": "0.5", "gamma": "0.99",
            "gae_lambda": "0.95", "clip_eps": "0.2", "ent_coef": "0.01", "vf_coef": "0.5", **network,
        }
    if agent == "dqn":
        return {
            "num_envs": "10", "num_steps": "1", "buffer_size": "10000", "batch_size": "128",
            "learning_starts": "10000", "learning_rate": "2.5e-4", "anneal_lr": "false",
            "target_update_freq": "500", "tau": "0.01", "gamma": "0.99", "double_q": "true",
            "epsilon_decay_steps": str(max(1, steps // 10)), **network,
        }
    # rejax SAC/TD3: 1 env, one update per env step (num_epochs 1) once 2048 steps are in, 64x64
    # networks, Polyak 0.99 at each target update (every step; TD3 every policy_delay steps), no
    # gradient clipping (optax.clip(inf)); TD3 acts uniformly before learning starts, SAC does not.
    off_policy = {
        "num_envs": "1", "num_steps": "1", "updates_per_step": "1", "buffer_size": "131072",
        "learning_starts": "2048", "batch_size": "256", "learning_rate": "3e-4", "gamma": "0.99",
        "tau": "0.01", "num_critics": "2", "max_grad_norm": "inf", "hidden_sizes": "64,64",
    }
    if agent == "sac":
        return {**off_policy, "activation": "relu", "random_warmup": "false", "autotune": "true",
                "init_alpha": "1.0", "target_entropy_scale": "1.0"}
    if agent == "td3":
        return {**off_policy, "activation": "swish", "random_warmup": "true", "policy_delay": "2",
                "exploration_noise": repr(0.3 / action_scale), "target_noise": repr(0.2 / action_scale),
                "target_noise_clip": repr(0.5 / action_scale)}
    if agent == "pqn":  # rejax_bench runs rejax's PQN defaults (algos/pqn.py, mixins.py)
        return {
            "num_envs": "64", "num_steps": "64", "num_epochs": "1", "num_minibatches": "16",
            "learning_rate": "3e-4", "anneal_lr": "false", "max_grad_norm": "inf", "gamma": "0.99",
            "td_lambda": "0.9", "reward_scale": "1.0", "epsilon_start": "1.0", "epsilon_end": "0.05",
            "epsilon_decay_steps": str(max(1, steps // 10)), "hidden_sizes": "64,64",
            "activation": "relu", "layer_norm": "true",
        }
    raise ValueError(f"--compare-rejax: no rejax_bench settings known for agent {agent!r}")


def rounded(record: dict) -> dict:
    """Floats to 3 decimals, for readable JSON lines."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}


def measure_training(agent: str, env_id: str, config, steps: int, num_seeds: int, eval_episodes: int) -> dict:
    """Train ``num_seeds`` vmapped runs as rlkit.run_training does, timing each phase."""
    jax.clear_caches()
    env = rlkit.make_env(env_id)
    run = rlkit.RunConfig(total_steps=steps, eval_episodes=eval_episodes)
    trainer = rlkit.make_trainer(rlkit.agents.get(agent), config, env, run)
    compiled = rlkit.compile_training(trainer, range(num_seeds))
    run_state, hparams = compiled.run_state, compiled.hparams

    start = time.perf_counter()
    for _ in range(trainer.plan.num_chunks):
        run_state, metrics = compiled.chunk(run_state, hparams)
        jax.device_get(metrics)  # the host takes each chunk's metrics, as run_training does
    jax.block_until_ready(run_state)
    run_seconds = time.perf_counter() - start

    start_eval = time.perf_counter()
    returns = np.asarray(jax.device_get(compiled.evaluate(run_state.agent_state, compiled.eval_keys, hparams)))
    eval_seconds = time.perf_counter() - start_eval

    total_steps = trainer.plan.total_steps
    return rounded({
        "kind": "train", "agent": agent, "env": env_id, "seeds": num_seeds,
        "num_envs": trainer.experience.num_envs, "steps": total_steps,
        # init and chunk compile side by side, eval in the background (rlkit.compile_training); "compile_s" is the
        # wall time of that step, the others each program's own compile time.
        "compile_s": compiled.seconds["wall"],
        "compile_init_s": compiled.seconds["init"],
        "compile_chunk_s": compiled.seconds["chunk"],
        "compile_eval_s": compiled.seconds["eval"],
        "run_s": run_seconds,
        "steps_per_s": num_seeds * total_steps / run_seconds,
        "eval_s": eval_seconds,
        "eval_episodes": eval_episodes,
        "final_eval_return": float(returns.mean()),
    })


def measure_env_ceiling(env_id: str, num_envs: int, num_seeds: int, steps_per_env: int) -> dict:
    """Random actions through a jitted scan over the vmapped env.step: the loop's upper bound."""
    jax.clear_caches()
    env = rlkit.make_env(env_id)
    spec = env.spec

    def random_actions(key):
        if spec.action_kind == "discrete":
            return jax.random.randint(key, (num_envs,), 0, spec.num_actions)
        shape = (num_envs, spec.num_actions)
        return jax.random.uniform(key, shape, minval=spec.action_low, maxval=spec.action_high)

    def step(loop, _):
        env_state, key = loop
        key, action_key, step_key = jax.random.split(key, 3)
        env_state, _ = env.step_batch(jax.random.split(step_key, num_envs), env_state, random_actions(action_key))
        return (env_state, key), None

    def run(key):
        reset_key, key = jax.random.split(key)
        _, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
        (env_state, _), _ = jax.lax.scan(step, (env_state, key), None, length=steps_per_env)
        return env_state

    keys = rlkit.seed_keys(range(num_seeds))
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(run)).lower(keys).compile()
    compiled_at = time.perf_counter()
    jax.block_until_ready(compiled(keys))
    run_seconds = time.perf_counter() - compiled_at
    return rounded({
        "kind": "env_ceiling", "env": env_id, "seeds": num_seeds, "num_envs": num_envs,
        "steps": num_envs * steps_per_env, "compile_s": compiled_at - start, "run_s": run_seconds,
        "steps_per_s": num_seeds * num_envs * steps_per_env / run_seconds,
    })


def print_table(records: list[dict]) -> None:
    """One row per measurement; training rows also show their share of the env ceiling."""
    ceiling = {r["seeds"]: r["steps_per_s"] for r in records if r["kind"] == "env_ceiling"}
    header = f"{'measurement':<12} {'seeds':>5} {'envs':>5} {'compile s':>10} {'run s':>8} " \
             f"{'steps/s':>12} {'of ceiling':>10} {'eval s':>7} {'eval return':>11}"
    print(header)
    print("-" * len(header))
    for r in records:
        train = r["kind"] == "train"
        share = f"{r['steps_per_s'] / ceiling[r['seeds']]:.1%}" if train and r["seeds"] in ceiling else ""
        eval_s = f"{r['eval_s']:.2f}" if train else ""
        eval_return = f"{r['final_eval_return']:.1f}" if train else ""
        print(
            f"{r['kind']:<12} {r['seeds']:>5} {r['num_envs']:>5} {r['compile_s']:>10.2f} {r['run_s']:>8.2f} "
            f"{r['steps_per_s']:>12,.0f} {share:>10} {eval_s:>7} {eval_return:>11}"
        )


def run_json(command: list[str]) -> dict:
    """Run a benchmark process that writes JSON to the path given after --json; return that JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run([*command, "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def compare_rejax(args: argparse.Namespace, sets: dict[str, str]) -> list[dict]:
    """Alternate fresh rlkit and rejax processes (1 seed); print medians and the rlkit/rejax ratios."""
    print(f"rlkit settings matching rejax_bench: {' '.join(f'{k}={v}' for k, v in sets.items())}")
    rlkit_command = [
        sys.executable, __file__, "--agent", args.agent, "--env", args.env, "--steps", str(args.steps),
        "--seeds", "1", "--no-ceiling", "--eval-episodes", "128",
        *[arg for name, value in sets.items() for arg in ("--set", f"{name}={value}")],
    ]
    rejax_command = [
        args.compare_rejax, str(args.rejax_bench), args.agent, args.env, "--seeds", "1", "--steps", str(args.steps),
    ]
    rows = []
    for repeat in range(args.repeats):
        ours = run_json(rlkit_command)["results"][0]
        theirs = run_json(rejax_command)
        row = {
            "kind": "compare", "repeat": repeat, "agent": args.agent, "env": args.env,
            "rlkit_steps": ours["steps"], "rejax_steps": theirs["steps"],
            "rlkit_total_s": ours["compile_s"] + ours["run_s"] + ours["eval_s"],
            "rlkit_total_without_eval_s": ours["compile_s"] + ours["run_s"],  # eval still compiles alongside
            "rlkit_compile_s": ours["compile_s"], "rlkit_run_s": ours["run_s"] + ours["eval_s"],
            "rejax_total_s": theirs["compile_s"] + theirs["run_s"],
            "rejax_compile_s": theirs["compile_s"], "rejax_run_s": theirs["run_s"],
            "rlkit_greedy_eval_return": ours["final_eval_return"],
            "rejax_eval_return": theirs["final_eval_return"],
        }
        rows.append(rounded(row))
        print(json.dumps(rows[-1]), flush=True)

    def median(name):
        return statistics.median(row[name] for row in rows)

    def ratio(ours, theirs):
        return statistics.median(row[ours] / row[theirs] for row in rows)

    summary = rounded({
        "kind": "compare_summary", "agent": args.agent, "env": args.env, "steps": args.steps,
        "repeats": args.repeats, **{f"median_{k}": median(k) for k in rows[0] if k.endswith("_s")},
        "ratio_total": ratio("rlkit_total_s", "rejax_total_s"),
        "ratio_total_without_eval": ratio("rlkit_total_without_eval_s", "rejax_total_s"),
        "ratio_compile": ratio("rlkit_compile_s", "rejax_compile_s"),
        "ratio_run": ratio("rlkit_run_s", "rejax_run_s"),
        "median_rlkit_greedy_eval_return": median("rlkit_greedy_eval_return"),
        "median_rejax_eval_return": median("rejax_eval_return"),
    })
    print(json.dumps(summary))
    print(
        f"\n{args.agent} on {args.env}, {args.steps:,} steps, 1 seed, median of {args.repeats} (compile + run, s):\n"
        f"  rlkit incl. eval   {summary['median_rlkit_total_s']:7.2f}   ratio rlkit/rejax {summary['ratio_total']:.2f}\n"
        f"  rlkit excl. eval   {summary['median_rlkit_total_without_eval_s']:7.2f}   "
        f"ratio rlkit/rejax {summary['ratio_total_without_eval']:.2f}\n"
        f"  rejax (incl. eval) {summary['median_rejax_total_s']:7.2f}\n"
        f"  compile ratio {summary['ratio_compile']:.2f}, run ratio {summary['ratio_run']:.2f}\n"
        f"  final return: rlkit {summary['median_rlkit_greedy_eval_return']:.1f} (greedy, 128 episodes), "
        f"rejax {summary['median_rejax_eval_return']:.1f} (its act policy, 128 episodes)"
    )
    return [*rows, summary]


# -- --backend reverb: the host loop (Reverb world) -------------------------------------------------


def bare_loop_rate(env_id: str, steps: int) -> dict:
    """The ceiling: random actions in a bare Python loop over the raw environment (gymnasium for ``gym:``
    ids; the dm_env environment itself otherwise), resetting at episode ends."""
    from rlkit.envs import make_host

    prefix, _, name = env_id.partition(":")
    if prefix == "gym":
        import gymnasium

        env = gymnasium.make(name)
        env.reset(seed=0)
        env.action_space.seed(0)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        kind = "bare gymnasium loop"
    else:
        env = make_host(env_id, seed=0)
        spec = env.action_spec()
        rng = np.random.default_rng(0)
        env.reset()
        start = time.perf_counter()
        for _ in range(steps):
            if hasattr(spec, "num_values"):
                action = rng.integers(spec.num_values)
            else:
                action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype)
            if env.step(action).last():
                env.reset()
        kind = "bare dm_env loop"
    return {"kind": kind, "steps": steps, "steps_per_s": steps / (time.perf_counter() - start)}


def adapter_loop_rate(env_id: str, steps: int) -> dict:
    """Random actions through rlkit's dm_env adapter (``make_host``), as the actor sees the environment."""
    from rlkit.envs import make_host

    env = make_host(env_id, seed=0)
    spec = env.action_spec()
    rng = np.random.default_rng(0)
    timestep = env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        if hasattr(spec, "num_values"):
            action = np.int32(rng.integers(spec.num_values))
        else:
            action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(np.float32)
        timestep = env.step(action)
        if timestep.last():
            timestep = env.reset()
    return {"kind": "dm_env adapter loop", "steps": steps, "steps_per_s": steps / (time.perf_counter() - start)}


def measure_reverb(args: argparse.Namespace, module, config) -> list[dict]:
    """The host loop through an in-process Reverb server: the actor alone, the learner alone, both."""
    try:
        from rlkit.loops import reverb_experiment
    except ImportError as error:
        raise SystemExit(f"bench: error: --backend reverb needs the Reverb world (bash scripts/run.sh reverb "
                         f"python scripts/bench.py ... --backend reverb): {error}") from None
    HostExperiment, HostSettings = reverb_experiment.HostExperiment, reverb_experiment.HostSettings
    steps, updates = args.steps, args.updates
    records = [bare_loop_rate(args.env, steps), adapter_loop_rate(args.env, steps)]
    for record in records:
        print(json.dumps(rounded(record)), flush=True)

    # 1. The actor with the learner paused: act, step, write every transition to Reverb (no ratio limiter).
    host = {"num_envs": args.host_envs, "transitions_per_item": args.transitions_per_item}
    experiment = HostExperiment(module, config, args.env, seed=0, total_steps=steps,
                                settings=HostSettings(samples_per_insert=0, **host))
    try:
        compile_s = experiment.compile()
        experiment.train(min(steps, 1_000), learn=False)  # warm: first episodes, writer, server
        metrics = experiment.train(steps, learn=False)
        records.append({"kind": "actor (learner paused)", "steps": steps, "compile_s": compile_s, **host,
                        "steps_per_s": metrics["steps_per_second"],
                        "items_in_table": experiment.table_size()})
        print(json.dumps(rounded(records[-1])), flush=True)
        # 2. The learner alone on that table: sampling only, then sampling + update.
        sampler = experiment.sampler
        sampler.sample()
        start = time.perf_counter()
        for _ in range(updates):
            sampler.sample()
        seconds = time.perf_counter() - start
        records.append({"kind": "sampling alone", "updates": updates, "batch_size": sampler.batch_size,
                        "samples_per_s": updates * sampler.batch_size / seconds})
        print(json.dumps(rounded(records[-1])), flush=True)
        experiment.learner_steps(10)
        seconds = experiment.learner_steps(updates)
        records.append({"kind": "learner alone (sample + update)", "updates": updates,
                        "updates_per_s": updates / seconds, "samples_per_s": updates * sampler.batch_size / seconds})
        print(json.dumps(rounded(records[-1])), flush=True)
    finally:
        experiment.close()

    # 3. Both, interleaved at the replay ratio (the table's SampleToInsertRatio limiter), as in training.
    experiment = HostExperiment(module, config, args.env, seed=0, total_steps=2 * steps, settings=HostSettings(**host))
    try:
        experiment.compile()
        experiment.train(experiment.spec.min_size + 1_000)  # fill to min_size, then learn a little
        before = experiment.updates
        metrics = experiment.train(steps)
        seconds = steps / metrics["steps_per_second"]
        done = experiment.updates - before
        records.append({"kind": "actor + learner (learning)", "steps": steps, "steps_per_s": metrics["steps_per_second"],
                        "updates_per_s": done / seconds, "samples_per_s": done * experiment.spec.batch_size / seconds,
                        "samples_per_insert": experiment.samples_per_insert, **host})
        print(json.dumps(rounded(records[-1])), flush=True)
    finally:
        experiment.close()
    return [rounded(r) for r in records]


def print_reverb_table(records: list[dict]) -> None:
    bare = records[0]["steps_per_s"]
    header = f"{'measurement':<34} {'env steps/s':>12} {'of bare loop':>12} {'updates/s':>10} {'samples/s':>11}"
    print(header)
    print("-" * len(header))
    for r in records:
        steps = f"{r['steps_per_s']:,.0f}" if "steps_per_s" in r else ""
        share = f"{r['steps_per_s'] / bare:.1%}" if "steps_per_s" in r else ""
        per_s = f"{r['updates_per_s']:,.0f}" if "updates_per_s" in r else ""
        samples = f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r else ""
        print(f"{r['kind']:<34} {steps:>12} {share:>12} {per_s:>10} {samples:>11}")



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", required=True, help="agent name: " + ", ".join(rlkit.agents.REGISTRY))
    parser.add_argument("--env", required=True, help="gymnax environment id (--backend reverb: a host id, gym:ID ...)")
    parser.add_argument("--steps", type=lambda text: int(float(text)), default=None,
                        help="environment steps per seed (default 5e5; --backend reverb: per measurement, default 2e4)")
    parser.add_argument("--backend", choices=("device", "reverb", "distributed"), default="device",
                        help="reverb: time the host loop through an in-process Reverb server (Reverb world): the "
                             "actor with the learner paused, the learner alone, both, beside the bare env loop; "
                             "distributed: whole distributed runs for each --actors count (scripts/bench_distributed.py)")
    parser.add_argument("--actors", type=lambda text: [int(s) for s in text.split(",")], default=[1, 2, 4],
                        help="--backend distributed: comma-separated actor counts (default 1,2,4)")
    parser.add_argument("--updates", type=int, default=1_000, help="--backend reverb: learner updates to time")
    parser.add_argument("--host-envs", type=int, default=1,
                        help="--backend reverb: host environments the actor steps side by side (HostSettings.num_envs)")
    parser.add_argument("--transitions-per-item", type=int, default=1,
                        help="--backend reverb: transitions per Reverb item (HostSettings.transitions_per_item)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        type=lambda text: tuple(part.strip() for part in text.split("=", 1)),
                        help="override a config field (repeatable), as in `python -m rlkit train`")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[1, 16],
                        help="comma-separated seed counts, each vmapped in one compile (default 1,16)")
    parser.add_argument("--eval-episodes", type=int, default=32, help="final evaluation episodes per seed")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the raw environment step rate")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--compare-rejax", metavar="VENV_PYTHON",
                        help="compare with rejax_bench.py run in this interpreter (1 seed) instead")
    parser.add_argument("--rejax-bench", type=Path, default=REJAX_BENCH, metavar="FILE",
                        help="--compare-rejax: the peer timing program that runs rejax's train (default: the team's, "
                             "beside the checkout)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per library (--compare-rejax)")
    args = parser.parse_args(argv)
    if any(len(pair) != 2 for pair in args.sets):
        parser.error("--set expects NAME=VALUE")
    if args.compare_rejax and not args.rejax_bench.is_file():
        parser.error(f"--rejax-bench: {args.rejax_bench} is not a file (the peer timing program for rejax)")
    if args.steps is None:
        args.steps = 20_000 if args.backend in ("reverb", "distributed") else 500_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    devices = jax.devices()
    print(f"jax {jax.__version__}: {len(devices)} {jax.default_backend()} device(s), {devices[0].device_kind}")
    if args.backend == "reverb":
        return main_reverb(args)
    if args.backend == "distributed":
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_distributed

        return bench_distributed.main(args.agent, args.env, args.steps, args.actors,
                                      [f"{name}={value}" for name, value in args.sets], args.json)
    try:  # everything is checked before anything compiles; rlkit's messages say what to change
        module = rlkit.agents.get(args.agent)
        sets = dict(args.sets)
        if args.compare_rejax:
            spec = rlkit.make_env(args.env).spec
            scale = float(np.max(spec.action_high - spec.action_low) / 2) if spec.action_kind == "continuous" else 1.0
            sets = {**rejax_settings(args.agent, args.steps, scale), **sets}
        config = rlkit.config.override(rlkit.presets.config_for(args.agent, args.env), sets)
        rlkit.make_trainer(module, config, rlkit.make_env(args.env), rlkit.RunConfig(total_steps=args.steps))
    except ValueError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2

    if args.compare_rejax:
        records = compare_rejax(args, sets)
    else:
        records = []
        for num_seeds in args.seeds:
            records.append(
                measure_training(args.agent, args.env, config, args.steps, num_seeds, args.eval_episodes)
            )
            print(json.dumps(records[-1]), flush=True)
            if not args.no_ceiling:
                num_envs = module.experience(config).num_envs
                steps_per_env = records[-1]["steps"] // num_envs
                records.append(measure_env_ceiling(args.env, num_envs, num_seeds, steps_per_env))
                print(json.dumps(records[-1]), flush=True)
        print()
        print_table(records)
    if args.json:
        document = {"agent": args.agent, "env": args.env, "config": rlkit.config.to_dict(config),
                    "device": str(devices[0]), "device_kind": devices[0].device_kind,
                    "device_count": len(devices), "results": records}
        Path(args.json).write_text(json.dumps(document, indent=1))
    return 0


def main_reverb(args: argparse.Namespace) -> int:
    """``--backend reverb``: the host loop's rates beside the bare environment loop."""
    from rlkit.envs import environment_spec, make_host

    try:
        module = rlkit.agents.get(args.agent)
        config = rlkit.config.override(rlkit.presets.config_for(args.agent, args.env), dict(args.sets))
        module.make(config, environment_spec(make_host(args.env)), args.steps)
        if module.experience(config).kind != "transitions":
            raise ValueError(f"--backend reverb times off-policy agents; {args.agent} is on-policy")
        batch_size = module.experience(config).batch_size
        if args.host_envs < 1 or args.transitions_per_item < 1 or batch_size % args.transitions_per_item:
            raise ValueError(f"--host-envs must be >= 1, and --transitions-per-item >= 1 and divide "
                             f"batch_size={batch_size}, got {args.host_envs} and {args.transitions_per_item}")
    except ValueError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    records = measure_reverb(args, module, config)
    print()
    print_reverb_table(records)
    if args.json:
        document = {"agent": args.agent, "env": args.env, "backend": "reverb",
                    "config": rlkit.config.to_dict(config), "results": records}
        Path(args.json).write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
