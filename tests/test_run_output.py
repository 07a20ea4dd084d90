"""The files of each epoch and of a run's end, as a 2-epoch run writes them."""
import csv

import pytest
import torch
from PIL import Image

import train_mnist_original_center as trainer
from conftest import output_flags, trainer_flags
from run_machinery.checkpointing import WriteError, load_checkpoint, save_checkpoint
from run_machinery.plots import DPI, PANEL_INCHES
from run_machinery.run_output import Plotter, RunOutput, read_test_features


def test_history_csv_and_curves(two_epoch_run):
    result, out = two_epoch_run
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "lr", "center_lr", "train_acc", "train_loss",
                             "train_center_loss", "test_acc", "test_loss", "test_center_loss",
                             "precision_at_1", "r_precision", "map_at_r", "rank_1", "rank_5",
                             "rank_10", "mean_average_precision", "queries_without_match",
                             "seconds"]
    assert float(rows[0]["lr"]) == 0.01 and float(rows[0]["center_lr"]) == 0.5
    # The CSV holds the same metrics as the printed lines.
    printed = [line for line in result.stdout.splitlines() if line.startswith("Epoch:")][1]
    assert f"test acc: {float(rows[1]['test_acc']):.4f}" in printed
    assert f"train loss: {float(rows[1]['train_loss']):.4f}" in printed
    assert 0 < float(rows[1]["train_center_loss"]) < float(rows[1]["train_loss"])
    assert (out / "history.png").stat().st_size > 0


def test_holdout_history_and_test_features(holdout_run):
    state = torch.load(holdout_run / "model" / "epoch_003.pth", weights_only=True)
    assert state["ip2.weight"].shape == (8, 2)
    with open(holdout_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    for prefix in ("seen_", "unseen_"):
        for name in ("precision_at_1", "r_precision", "map_at_r", "rank_1", "rank_10",
                     "mean_average_precision"):
            assert 0.0 <= float(rows[-1][prefix + name]) <= 1.0
    saved = load_checkpoint(holdout_run / "test_features.pt")
    assert saved["holdout_classes"] == [8, 9] and saved["epochs"] == [1, 2, 3]
    assert saved["features"].shape == (3, 100, 2) and saved["digits"].shape == (100,)


def test_older_test_features_name_their_held_out_classes_unseen_digits(tmp_path):
    features = {"features": torch.zeros(2, 4, 2), "digits": torch.arange(4), "epochs": [1, 2]}
    for key in ("unseen_digits", "holdout_classes"):
        save_checkpoint(tmp_path / f"{key}.pt", {**features, key: [3]})
        assert read_test_features(tmp_path / f"{key}.pt")["holdout_classes"] == [3]
    save_checkpoint(tmp_path / "none.pt", features)
    assert read_test_features(tmp_path / "none.pt")["holdout_classes"] == []


def test_feature_gif_at_the_end(two_epoch_run):
    _, out = two_epoch_run
    with Image.open(out / "features.gif") as gif:
        # a frame is a panel of the epoch picture, at its size
        assert gif.n_frames == 2 and gif.size == (PANEL_INCHES[0] * DPI, PANEL_INCHES[1] * DPI)


def test_nothing_is_written_on_a_dry_run(tmp_path):
    settings = trainer.parse_args([*output_flags(tmp_path / "run"), "--dry_run", "--device", "cpu"])
    files = RunOutput(settings)
    assert not files.writes and not (tmp_path / "run").exists()


def test_tensorboard_missing_gives_a_clear_message(monkeypatch, mnist_dir, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(SystemExit) as stop:
        trainer.main(trainer_flags(mnist_dir, tmp_path, "--tensorboard", tmp_path / "tb"))
    assert "pip install tensorboard" in str(stop.value.code)


def test_tensorboard_logs(mnist_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--max_train_samples", 64,
                               "--tensorboard", tmp_path / "tb"))
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tb").rglob("projector_config.pbtxt"))


def test_background_plotter_writes_and_reports_errors(tmp_path):
    plotter = Plotter(background=True)
    feat, labels, centers = torch.randn(50, 2), torch.arange(50) % 10, torch.zeros(10, 2)
    plotter.submit(trainer.visualize, feat, labels, 1, tmp_path / "plot_1.png", centers)
    plotter.submit(trainer.visualize, feat, labels, 2, tmp_path / "plot_2.png", centers)
    plotter.wait()
    assert ((tmp_path / "plot_1.png").stat().st_size > 0
            and (tmp_path / "plot_2.png").stat().st_size > 0)
    (tmp_path / "a_file").write_text("not a folder")
    plotter.submit(trainer.visualize, feat, labels, 3, tmp_path / "a_file" / "plot_3.png", centers)
    with pytest.raises(WriteError):
        plotter.wait()
    plotter.wait()  # the error is raised once


def test_plotter_without_background_runs_at_once():
    calls = []
    Plotter(background=False).submit(calls.append, "drawn")
    assert calls == ["drawn"]


def test_img_show_writes_the_first_training_images_and_keeps_the_shuffling(mnist_dir, tmp_path):
    flags = ["--epochs", 1, "--max_train_samples", 64]
    shown = trainer.main(trainer_flags(mnist_dir, tmp_path / "shown", *flags, "--img_show"))
    plain = trainer.main(trainer_flags(mnist_dir, tmp_path / "plain", *flags))
    with Image.open(tmp_path / "shown" / "visual" / "train_batch.png") as image:
        assert image.width == 2 + 16 * 30  # make_grid: 16 tiles of 28 px, 2 px padding
    assert not (tmp_path / "plain" / "visual" / "train_batch.png").exists()
    assert shown.records[0].train.loss == plain.records[0].train.loss  # the same run
