"""The speed benchmark end to end on small synthetic data: two runs taking turns epoch by
epoch, the project resuming its run for its second epoch. Nothing here is timed."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import REPO_DIR

BENCHMARK = REPO_DIR / "benchmarks" / "benchmark_speed.py"
PARTS = {"train", "eval", "metrics", "files", "other"}
FIGURES = ("train_acc", "train_loss", "test_acc", "test_loss")


@pytest.fixture(scope="module")
def tiny_run(mnist_dir, tmp_path_factory):
    """The benchmark on 128 + 32 images, two epochs of the article and of the project (each
    run's folder kept), and a short step probe: (CompletedProcess, JSON figures, run folders)."""
    tmp_path = tmp_path_factory.mktemp("benchmark")
    out, runs = tmp_path / "speed.json", tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--dataset_dir", str(mnist_dir),
         "--max_train_samples", "128", "--max_test_samples", "32", "--epochs", "2",
         "--settings", "article,project", "--probe_rounds", "1",
         "--metrics_items", "500", "--peak_repeats", "1", "--profile_steps", "1",
         "--json", str(out), "--keep_runs", str(runs)],
        capture_output=True, text=True, timeout=300, cwd=REPO_DIR)
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text()), runs


def test_benchmark_tiny_run_writes_json(tiny_run):
    result, figures, _ = tiny_run
    assert "project" in result.stdout and "article" in result.stdout
    assert figures["matmul_peak_gflops"]["float32"] > 0
    assert ({"cpu", "cpu_count", "torch", "load_average_start", "load_average_end"}
            <= figures["machine"].keys())
    cpu = figures["machine"]["cpu"]
    assert cpu["model"] in result.stdout and all(flag in result.stdout for flag in cpu["flags"])
    assert f"{cpu['threads']} threads" in result.stdout
    assert figures["config"]["epochs"] == 2 and figures["config"]["max_train_samples"] == 128
    assert figures["step_probe_images_per_s"]["project"] > 0
    per_call = figures["metrics_seconds_per_call"]
    assert per_call.pop("items") == 500 and len(per_call) == 2 and min(per_call.values()) > 0
    assert "metrics on 500 test features, seconds per call" in result.stdout
    article, project = figures["runs"]
    assert (article["run"], project["run"]) == ("article", "project")
    assert "ratio_to_article" in project and "speedup_vs_project_defaults" not in project
    assert project["parts_s"]["other"] == 0
    for run in (article, project):
        parts = run["parts_s"]
        assert set(parts) == PARTS
        assert all(seconds >= -1e-6 for seconds in parts.values())
        assert sum(parts.values()) == pytest.approx(run["epoch_s"])
        assert run["outside_network_fraction"] == pytest.approx(
            (parts["metrics"] + parts["files"]) / run["epoch_s"])
        assert run["train_step_images_per_s"] > 0
        assert run["images_per_s"] == pytest.approx(128 / run["epoch_s"])
        assert (0 <= run["outside_network_fraction"] < 1
                and run["peak_rss_mb"] >= run["rss_after_imports_mb"] > 0)
        assert 0 <= run["final"]["test_acc"] <= 1 and 0 <= run["final"]["train_acc"] <= 1


def test_counted_flops_are_per_image_times_images(tiny_run):
    _, figures, _ = tiny_run
    flops = figures["flops"]
    assert flops["train_step_per_image"] > flops["test_pass_per_image"] > 0
    # Counted on one image and on a batch of 128: the network's work grows with the batch.
    assert flops["train_step_batch_128"] == 128 * flops["train_step_per_image"]
    assert flops["test_pass_batch_128"] == 128 * flops["test_pass_per_image"]
    for run in figures["runs"]:  # 128 training and 32 test images
        epoch_flop = 128 * flops["train_step_per_image"] + 32 * flops["test_pass_per_image"]
        assert run["epoch_gflop"] * 1e9 == pytest.approx(epoch_flop)
        assert run["train_gflops"] == pytest.approx(
            128 * flops["train_step_per_image"] / run["parts_s"]["train"] / 1e9)
        assert run["eval_gflops"] == pytest.approx(
            32 * flops["test_pass_per_image"] / run["parts_s"]["eval"] / 1e9)
        assert run["epoch_gflops"] == pytest.approx(run["epoch_gflop"] / run["epoch_s"])


def test_rates_against_the_convolution_peak(tiny_run):
    result, figures, _ = tiny_run
    peaks = figures["convolution_peak_gflops"]
    assert figures["convolution_memory_format"] == "channels_last"  # the trainer's default
    assert set(peaks) == set(figures["matmul_peak_gflops"])  # float32, and bfloat16 if native
    for peak in peaks.values():
        assert peak["forward"] > 0 and peak["train"] > 0
        assert list(peak["layers"]) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1",
                                        "conv3_2"]
        assert peak["layers"]["conv1_2"]["input"] == [128, 32, 28, 28]
    for run in figures["runs"]:
        peak = peaks[run["dtype"]]
        assert run["train_fraction_of_conv_peak"] == pytest.approx(
            run["train_gflops"] / peak["train"])
        assert run["eval_fraction_of_conv_peak"] == pytest.approx(
            run["eval_gflops"] / peak["forward"])
        # The floor: each phase's FLOPs at the peak; metrics and files have none.
        floor = (run["train_gflops"] * run["parts_s"]["train"] / peak["train"]
                 + run["eval_gflops"] * run["parts_s"]["eval"] / peak["forward"])
        assert run["floor_s"] == pytest.approx(floor)
        assert run["fraction_of_floor"] == pytest.approx(run["floor_s"] / run["epoch_s"])
        assert (f"{run['run']}: the epoch at {100 * run['fraction_of_floor']:.0f}% of this "
                f"machine's convolution peak ({run['dtype']})") in result.stdout
    # The profile of the project's steps and test pass: the convolutions among the operators.
    assert "top operators of 1 training steps" in result.stdout
    assert "convolution" in result.stdout


def test_each_run_took_one_turn_per_epoch(tiny_run):
    _, figures, _ = tiny_run
    for name in ("article", "project"):
        epochs = figures["raw"][name]["epochs"]
        assert [epoch["epoch"] for epoch in epochs] == [1, 2]
        for epoch in epochs:
            assert sum(epoch["parts"].values()) == pytest.approx(epoch["seconds"])
        assert figures["raw"][name]["train_images"] == 128
        assert figures["raw"][name]["test_images"] == 32
    # The figures of the steady epoch (the second), as the summary reports them.
    article, project = figures["runs"]
    for row in (article, project):
        steady = figures["raw"][row["run"]]["epochs"][1]
        assert row["epoch_s"] == pytest.approx(steady["seconds"])
        assert row["parts_s"] == pytest.approx(steady["parts"])


def test_final_figures_are_the_last_history_row(tiny_run):
    _, figures, runs = tiny_run
    article, project = figures["runs"]
    # The project: what its worker took from the History main() returned is the last row of
    # the history.csv that the resumed run wrote.
    with open(runs / "project" / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    last = figures["raw"]["project"]["epochs"][-1]
    for key in FIGURES:
        assert isinstance(project["final"][key], float)
        assert project["final"][key] == last[key] == float(rows[-1][key]), key
    assert last["history_row"]["seconds"] == float(rows[-1]["seconds"])
    times = last["parts"]
    assert (float(rows[-1]["seconds"])
            == pytest.approx(times["train"] + times["eval"] + times["metrics"]))
    assert ((runs / "project" / "training_state.pth").is_file()
            and (runs / "project" / "model").is_dir())
    # The article: its last epoch's figures, and its files in its own folder.
    assert article["final"] == {key: figures["raw"]["article"]["epochs"][-1][key]
                                for key in FIGURES}
    assert (sorted(path.name for path in (runs / "article" / "model").iterdir())
            == ["epoch_001.pth", "epoch_002.pth"])
