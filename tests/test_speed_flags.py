"""The speed settings (--amp, --no-channels_last, --compile, the CUDA setup, the plot thread)
and the speed benchmark, each run end to end on small synthetic data. Nothing here is timed."""
import contextlib
import functools
import io
import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from PIL import Image

from center_loss import CenterLoss
from conftest import REPO_DIR
from mnist_loader import load_dataset
from mnist_net import Net
import train_mnist_original_center as trainer

BENCHMARK = REPO_DIR / "benchmarks" / "benchmark_speed.py"
NEEDS_BF16 = pytest.mark.skipif(not trainer.bf16_supported(torch.device("cpu")),
                                reason="this CPU has no native bfloat16")


def run_main(mnist_dir, out, *flags):
    """One epoch of main() on the synthetic data; returns the figures of its epoch line."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        trainer.main(["--dataset_dir", str(mnist_dir), "--epochs", "1", "--batch_size", "64", "--lr", "0.01",
                      "--device", "cpu", "--model_path_temp", str(out / "model_{}.pth"),
                      "--vis_img_path_temp", str(out / "plot_{}.png"), "--history_path", str(out / "history.csv"),
                      *flags])
    line = next(line for line in stdout.getvalue().splitlines() if line.startswith("Epoch:"))
    return {key: float(value) for key, value in (part.rsplit(": ", 1) for part in line.split(", ")[1:])}


@pytest.fixture(scope="module")
def default_figures(mnist_dir, tmp_path_factory):
    """fp32, channels-last."""
    return run_main(mnist_dir, tmp_path_factory.mktemp("fp32"))


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """torch.compile through AOTAutograd but without generating C++: the same tracing of the
    forward and backward graphs, in seconds instead of the minute inductor takes here."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


@pytest.mark.parametrize("flags, tolerance", [
    (["--no-channels_last"], 1e-4),
    pytest.param(["--amp"], 2e-2, marks=NEEDS_BF16),
    pytest.param(["--amp", "--no-channels_last"], 2e-2, marks=NEEDS_BF16),
    (["--compile"], 1e-4),
])
def test_flag_trains_like_the_defaults(flags, tolerance, mnist_dir, tmp_path, default_figures, request):
    if "--compile" in flags:
        request.getfixturevalue("aot_eager_compile")
    figures = run_main(mnist_dir, tmp_path, *flags)
    for key in ("train loss", "test loss"):
        assert figures[key] == pytest.approx(default_figures[key], rel=tolerance), key
    # The checkpoint keeps the article's keys (no "_orig_mod." from torch.compile).
    Net().load_state_dict(torch.load(tmp_path / "model_001.pth", weights_only=True), strict=True)
    with Image.open(tmp_path / "plot_001.png") as image:
        assert image.size == (1600, 700)


def test_amp_without_bf16_says_so(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "bf16_supported", lambda device: False)
    with pytest.raises(SystemExit) as stop:
        run_main(mnist_dir, tmp_path, "--amp")
    message = str(stop.value.code)
    assert "--amp needs native bfloat16" in message and "without --amp" in message
    assert "\n" not in message


def test_cuda_setup_turns_on_autotuning_and_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    before = torch.backends.cuda.matmul.fp32_precision
    try:
        model = Net()
        trainer.speed_setup(model, torch.device("cuda"))
        assert torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def test_channels_last_setup_keeps_the_weights():
    model = Net()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    trainer.speed_setup(model, torch.device("cpu"), channels_last=True)
    assert model.conv2_1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_background_plotter_writes_and_reports_errors(tmp_path):
    plotter = trainer.Plotter(background=True)
    feat, labels, centers = torch.randn(50, 2), torch.arange(50) % 10, torch.zeros(10, 2)
    plotter.submit(trainer.visualize, feat, labels, 1, tmp_path / "plot_1.png", centers)
    plotter.submit(trainer.visualize, feat, labels, 2, tmp_path / "plot_2.png", centers)
    plotter.wait()
    assert (tmp_path / "plot_1.png").stat().st_size > 0 and (tmp_path / "plot_2.png").stat().st_size > 0
    (tmp_path / "a_file").write_text("not a folder")
    plotter.submit(trainer.visualize, feat, labels, 3, tmp_path / "a_file" / "plot_3.png", centers)
    with pytest.raises(trainer.WriteError):
        plotter.wait()
    plotter.wait()  # the error is raised once


def test_plotter_without_background_runs_at_once():
    calls = []
    trainer.Plotter(background=False).submit(calls.append, "drawn")
    assert calls == ["drawn"]


class SyncErrorWhileIterating:
    """A loader that turns CUDA's sync debug mode to "error" while the step loop runs over it;
    the one sync after the loop (the epoch's figures) is allowed."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.loader
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
def test_no_host_sync_in_cuda_step_loop(mnist_dir, amp):
    device = torch.device("cuda")
    train_loader, test_loader, classes = load_dataset(mnist_dir, 64, 64, device=device, seed=0)
    model = Net(len(classes)).to(device)
    trainer.speed_setup(model, device, channels_last=True)
    center_loss = CenterLoss(len(classes), 2).to(device)
    class_of_digit = trainer.digit_to_class(classes, device)
    optimizers = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4),
                  torch.optim.SGD(center_loss.parameters(), lr=0.5))
    losses = (center_loss, nn.NLLLoss(), 1.0)
    # A first epoch unguarded: lazy initialisation and cuDNN's autotuning may synchronise once.
    trainer.train(model, *losses, optimizers, train_loader, class_of_digit, 1, amp=amp)
    figures, features, digits = trainer.train(
        model, *losses, optimizers, SyncErrorWhileIterating(train_loader), class_of_digit, 2, amp=amp)
    assert features.device.type == "cpu" and features.shape == (train_loader.num_samples, 2)
    trainer.test(model, *losses, SyncErrorWhileIterating(test_loader), class_of_digit, amp=amp)


def test_benchmark_tiny_run_writes_json(mnist_dir, tmp_path):
    """The benchmark script end to end: two runs taking turns, one epoch each, and a short step probe."""
    out = tmp_path / "speed.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--dataset_dir", str(mnist_dir), "--max_train_samples", "128",
         "--max_test_samples", "32", "--epochs", "1", "--settings", "article,project", "--probe_rounds", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO_DIR)
    assert result.returncode == 0, result.stderr
    assert "project" in result.stdout and "article" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["matmul_peak_gflops"]["float32"] > 0 and figures["train_step_flops_per_image"] > 0
    assert {"cpu", "cpu_count", "torch", "load_average_start", "load_average_end"} <= figures["machine"].keys()
    article, project = figures["runs"]
    assert (article["run"], project["run"]) == ("article", "project")
    assert "ratio_to_article" in project and "speedup_vs_project_defaults" not in project
    assert figures["step_probe_images_per_s"]["project"] > 0
    for run in (article, project):
        parts = run["parts_s"]
        assert set(parts) == {"train_step", "data", "eval", "metrics", "plotting", "checkpoint", "other"}
        assert all(seconds >= -1e-6 for seconds in parts.values())
        assert sum(parts.values()) == pytest.approx(run["epoch_s"])
        assert run["train_step_images_per_s"] > 0 and run["train_step_gflops"] > 0
        assert 0 <= run["outside_network_fraction"] < 1 and run["peak_rss_mb"] >= run["rss_after_imports_mb"] > 0
        assert 0 <= run["final"]["test_acc"] <= 1
