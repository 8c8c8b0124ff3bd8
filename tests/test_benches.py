"""Every bench/ script (and scripts/real_size_step.py) in its --quick mode through its real command line: it exits 0
and writes the JSON a reader relies on, its figures present and positive. Nothing here judges the figures."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

BENCH = REPO / "bench"


def bench(name: str, *args: str) -> None:
    run_cli([sys.executable, str(BENCH / f"{name}.py"), "--quick", *args], timeout=900)


def read(path: Path) -> dict | list:
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def at(record, path: str):
    for key in path.split("."):
        record = record[int(key)] if isinstance(record, list) else record[key]
    return record


def positive(record, *paths: str) -> None:
    for path in paths:
        value = at(record, path)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path} = {value!r}"
        assert math.isfinite(value) and value > 0, f"{path} = {value!r}"


def non_negative(record, *paths: str) -> None:  # memory growth of a tiny step: legitimately 0 pages
    for path in paths:
        value = at(record, path)
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, f"{path} = {value!r}"


@pytest.mark.e2e
def test_bench_annotate_quick():
    # bench_annotate.py takes no --out: it writes under bench/results/ (a --quick file of its own, or the usual one)
    start = time.time()
    bench("bench_annotate")
    fresh = [p for p in (BENCH / "results").glob("bench_annotate*.json") if p.stat().st_mtime >= start - 1]
    assert len(fresh) == 1, f"expected one bench_annotate JSON written by this run, got {fresh}"
    r = read(fresh[0])
    positive(r, "frames", "recordings", "raw_decode_frames_per_s", "annotate_frames_per_s", "end_to_end_frames_per_s",
             "ratio_annotate_vs_raw")


@pytest.mark.e2e
def test_bench_build_quick(tmp_path):
    bench("bench_build", "--out", str(tmp_path / "build.json"))
    r = read(tmp_path / "build.json")
    for run in ("real", "small.baseline", "small.ours"):
        positive(r, f"{run}.seconds", f"{run}.peak_bytes", f"{run}.tower_bytes.vision", f"{run}.tower_bytes.text",
                 f"{run}.peak_over_towers")


@pytest.mark.e2e
def test_bench_data_quick(prepared_data, tmp_path):
    bench("bench_data", "--prepared", str(prepared_data), "--out", str(tmp_path / "data.json"))
    r = read(tmp_path / "data.json")
    for name in ("raw_decord", "read_frames", "clip_items", "clip_items_1thread", "preprocess_only"):
        positive(r, f"single_process.frames_per_s.{name}")
    for name in ("raw_decord", "clip_items", "clip_items_sized"):
        positive(r, f"dataloader.frames_per_s.{name}")
    positive(r, "single_process.ratio_clip_items_vs_raw_decord", "dataloader.ratio_clip_items_vs_raw_decord",
             "rss.rss_mib_end", "data.clips", "tokenizer.small.vocab", "tokenizer.qwen3_offline.vocab",
             "tokenizer.tiny_qwen3_lm_head.small.forward_backward_ms",
             "tokenizer.tiny_qwen3_lm_head.qwen3_offline.forward_backward_ms")


@pytest.mark.e2e
def test_bench_encoder_quick(tmp_path):
    bench("bench_encoder", "--out", str(tmp_path / "encoder.json"))
    r = read(tmp_path / "encoder.json")
    for variant in ("eager", "sdpa", "sdpa_ckpt"):
        positive(r, f"results.{variant}.fwd_bwd_ms_median", f"results.{variant}.fwd_bwd_ms_min",
                 f"results.{variant}.saved_for_backward_mb", f"results.{variant}.time_ratio_vs_eager")
        non_negative(r, f"results.{variant}.peak_memory_mb")
        assert at(r, f"results.{variant}.max_abs_diff_vs_eager") < 1e-4  # same weights, same input


@pytest.mark.e2e
def test_bench_gpu_quick_runs_the_zero2_path_on_cpu(tmp_path):
    bench("bench_gpu", "--out", str(tmp_path / "gpu.json"))
    r = read(tmp_path / "gpu.json")
    assert len(r["runs"]) == 1 and "error" not in r["runs"][0], r["runs"]
    run = r["runs"][0]
    assert run["distributed_type"].endswith("DEEPSPEED") and run["experiment"] == "march10_baseline"
    positive(run, "step_s", "clips_per_s", "frames_per_s", "flops_per_step", "peak_memory_bytes", "last_loss")
    assert run["mfu"] is None or run["mfu"] > 0  # no datasheet peak on a CPU


@pytest.mark.e2e
def test_bench_inference_quick(tmp_path):
    bench("bench_inference", "--out", str(tmp_path / "inference.json"))
    r = read(tmp_path / "inference.json")
    assert [row["T"] for row in r["per_length"]] == [2, 4]
    for i, _ in enumerate(r["per_length"]):
        positive(r, f"per_length.{i}.stream_frames_per_s", f"per_length.{i}.naive_frames_per_s", f"per_length.{i}.speedup")
        assert r["per_length"][i]["same_tokens"]  # the KV cache changes the cost, not the tokens
    positive(r, "batched.batched_frames_per_s", "batched.one_by_one_frames_per_s", "batched.speedup",
             "model.visual_tokens_per_frame")
    assert r["batched"]["same_tokens"]


@pytest.mark.e2e
def test_bench_train_quick(prepared_data, tmp_path):
    bench("bench_train", "--prepared", str(prepared_data), "--out", str(tmp_path / "train.json"))
    r = read(tmp_path / "train.json")
    positive(r, "ours_s_per_step.median", "bare_s_per_step.median", "ratio_median", "ratio_median_of_rounds",
             "steps_timed_per_loop", "config.trainable_params")
    assert r["same_first_loss"], r["first_loss_ours_bare_per_round"]


@pytest.mark.e2e
def test_bench_transcript_quick(tmp_path):
    bench("bench_transcript", "--out", str(tmp_path / "transcript.json"))
    r = read(tmp_path / "transcript.json")
    row = r["rows"][0]
    positive(row, "ours.seconds", "baseline.seconds", "ours.loss", "target_rows", "time_ratio")
    non_negative(row, "ours.peak_bytes", "baseline.peak_bytes")
    assert row["loss_abs_diff"] < 1e-2 * row["ours"]["loss"]  # both paths compute the same loss


@pytest.mark.e2e
def test_real_size_step_quick(tmp_path):
    run_cli([sys.executable, str(REPO / "scripts" / "real_size_step.py"), "--quick", "--experiments", "new_arch",
             "--steps", "1", "--threads", "1", "--json", str(tmp_path / "real_size.json")], timeout=900)
    [r] = read(tmp_path / "real_size.json")
    positive(r, "step_s.0", "build_s", "peak_rss_bytes", "checkpoint_bytes", "losses.0.total", "losses.0.transcript")
    assert r["reload_identical"] and r["scramble_changed_outputs"]
