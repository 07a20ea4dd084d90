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
         "--metrics_items", "500", "--json", str(out), "--keep_runs", str(runs)],
        capture_output=True, text=True, timeout=300, cwd=REPO_DIR)
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text()), runs


def test_benchmark_tiny_run_writes_json(tiny_run):
    result, figures, _ = tiny_run
    assert "project" in result.stdout and "article" in result.stdout
    assert (figures["matmul_peak_gflops"]["float32"] > 0
            and figures["train_step_flops_per_image"] > 0)
    assert ({"cpu", "cpu_count", "torch", "load_average_start", "load_average_end"}
            <= figures["machine"].keys())
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
        assert run["train_step_images_per_s"] > 0 and run["train_step_gflops"] > 0
        assert run["images_per_s"] == pytest.approx(128 / run["epoch_s"])
        assert (0 <= run["outside_network_fraction"] < 1
                and run["peak_rss_mb"] >= run["rss_after_imports_mb"] > 0)
        assert 0 <= run["final"]["test_acc"] <= 1 and 0 <= run["final"]["train_acc"] <= 1


def test_each_run_took_one_turn_per_epoch(tiny_run):
    _, figures, _ = tiny_run
    for name in ("article", "project"):
        epochs = figures["raw"][name]["epochs"]
        assert [epoch["epoch"] for epoch in epochs] == [1, 2]
        for epoch in epochs:
            assert sum(epoch["parts"].values()) == pytest.approx(epoch["seconds"])
        assert figures["raw"][name]["train_images"] == 128
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
