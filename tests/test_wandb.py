"""--wandb in offline mode: the W&B run directory holds the config, every chunk's metrics and the final returns."""

import json
import struct
import subprocess
import sys

import pytest

pytest.importorskip("wandb")  # the rlkit[wandb] extra; both locks have it


def wandb_records(path, block=32768):
    """The records of an offline ``run-ID.wandb`` file (W&B's block-structured log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the end of a block is padding
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def items(entries):
    return {entry.key or "/".join(entry.nested_key): json.loads(entry.value_json) for entry in entries}


def test_offline_wandb_run_holds_config_chunk_metrics_and_final_returns(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "rlkit", "train", "--agent", "ppo", "--env", "CartPole-v1", "--seeds", "2",
         "--steps", "3072", "--chunks", "3", "--eval-episodes", "2", "--quiet", "--set", "num_envs=4",
         "--set", "num_steps=32", "--set", "hidden_sizes=8", "--out", str(out), "--wandb", "--wandb-mode", "offline",
         "--wandb-group", "smoke"],
        capture_output=True, text=True, timeout=300, env={"WANDB_SILENT": "true", "PATH": "/usr/bin:/bin",
                                                           "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (log,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    config, history, summary = {}, [], {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config = items(record.run.config.update)
            assert record.run.run_group == "smoke"
        elif kind == "history":
            history.append(items(record.history.item))
        elif kind == "summary":
            summary.update(items(record.summary.update))
    results = json.loads((out / "results.json").read_text())
    assert config["agent"] == "ppo" and config["seeds"] == [0, 1] and config["config"]["hidden_sizes"] == [8]
    chunks = [row for row in history if "episode_return/mean" in row]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["env_steps"] for row in chunks] == [line["env_steps"] for line in metrics] == [1024, 2048, 3072]
    for row, line in zip(chunks, metrics):
        assert row["loss/seed_1"] == pytest.approx(line["per_seed"]["loss"][1])
        assert row["episode_return/mean"] == pytest.approx(line["mean"]["episode_return"])
    assert summary["final_eval_return/mean"] == pytest.approx(results["final_eval_return"]["mean"])
    assert [summary[f"final_eval_return/seed_{s}"] for s in (0, 1)] == pytest.approx(
        results["final_eval_return"]["per_seed"])
    images = [row for row in history if row.get("learning_curves/_type") == "image-file"]
    assert len(images) == 1 and (log.parent / "files" / images[0]["learning_curves/path"]).stat().st_size > 0
