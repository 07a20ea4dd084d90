import pytest
import torch

import train_mnist_original_center as trainer
from run_machinery.background_plotter import Plotter
from run_machinery.checkpointing import WriteError


def test_background_plotter_writes_and_reports_errors(tmp_path):
    plotter = Plotter(background=True)
    feat, labels, centers = torch.randn(50, 2), torch.arange(50) % 10, torch.zeros(10, 2)
    plotter.submit(trainer.visualize, feat, labels, 1, tmp_path / "plot_1.png", centers)
    plotter.submit(trainer.visualize, feat, labels, 2, tmp_path / "plot_2.png", centers)
    plotter.wait()
    assert (tmp_path / "plot_1.png").stat().st_size > 0 and (tmp_path / "plot_2.png").stat().st_size > 0
    (tmp_path / "a_file").write_text("not a folder")
    plotter.submit(trainer.visualize, feat, labels, 3, tmp_path / "a_file" / "plot_3.png", centers)
    with pytest.raises(WriteError):
        plotter.wait()
    plotter.wait()  # the error is raised once


def test_plotter_without_background_runs_at_once():
    calls = []
    Plotter(background=False).submit(calls.append, "drawn")
    assert calls == ["drawn"]
