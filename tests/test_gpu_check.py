"""The GPU check (benchmarks/gpu_check.sh) end to end in its dry mode: on the CPU, on the
small MNIST of 300 + 100 images, two epochs a run. Nothing here is timed."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_DIR
from run_machinery.devices import bf16_supported, cpu_kind

SCRIPT = REPO_DIR / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def dry_run(mnist_dir, tmp_path_factory):
    """The script's dry run: (CompletedProcess, its folder)."""
    out = tmp_path_factory.mktemp("gpu_check")
    result = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--dataset_dir", str(mnist_dir), "--out", str(out),
         "--epochs", "2", "--max_train_samples", "256", "--max_test_samples", "64", "--no_install",
         "--benchmark_args", "--epochs 1 --probe_rounds 0 --metrics_items 200 --peak_repeats 1"],
        capture_output=True, text=True, timeout=300, cwd=REPO_DIR,
        env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, out


def test_dry_run_writes_one_file_of_figures(dry_run):
    result, out = dry_run
    figures = json.loads((out / "gpu_check.json").read_text())
    assert figures["device"] == "cpu" and figures["gpu"] is None
    assert figures["torch"] == torch.__version__ and figures["install"] == "skipped"
    assert figures["cpu"]["model"] == cpu_kind()["model"]
    assert figures["benchmark"]["images"] == [256, 64]
    assert {"article", "project"} <= figures["benchmark"]["runs"].keys()
    assert figures["project_speedup_vs_article"] > 0
    native_bf16 = bf16_supported(torch.device("cpu"))
    # On a CPU: no --compile trial (compiling takes longer than it gains there).
    assert set(figures["runs"]) == ({"float32", "amp"} if native_bf16 else {"float32"})
    for name, run in figures["runs"].items():
        assert run["epochs_done"] == 2 and not run["cut_by_limit"], name
        assert run["wall_s"] > run["first_epoch_s"] > 0
        assert run["projected_2_epochs_s"] == pytest.approx(run["wall_s"])
        assert 0 <= run["final_test_acc"] <= 1
    if native_bf16:
        assert figures["runs"]["amp"]["speedup_vs_float32"] > 0
    assert f"written to {out / 'gpu_check.json'}" in result.stdout


def test_each_run_writes_the_articles_files_each_epoch(dry_run):
    _, out = dry_run
    for epoch in (1, 2):
        assert (out / "float32" / "model" / f"epoch_{epoch:03d}.pth").is_file()
        assert (out / "float32" / "visual" / f"epoch_{epoch:03d}.png").is_file()
    assert "benchmark: benchmark_speed.py --device cpu" in (out / "gpu_check.log").read_text()


def test_an_unknown_option_stops_the_script(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--gpus", "2"], capture_output=True,
                            text=True, timeout=60, cwd=REPO_DIR)
    assert result.returncode == 2 and "unknown option --gpus" in result.stderr
