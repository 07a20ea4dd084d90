import csv
import json

import pytest
import torch
from PIL import Image

import evaluate
import train_mnist_original_center as trainer
from conftest import output_flags, run_script

METRIC_KEYS = ("accuracy", "precision_at_1", "r_precision", "map_at_r")


def test_evaluate_a_trained_checkpoint(two_epoch_run, mnist_dir, tmp_path):
    _, out = two_epoch_run
    result = run_script(out / "model" / "epoch_002.pth", "--dataset_dir", mnist_dir, "--json",
                        tmp_path / "eval.json", "--plot", tmp_path / "eval.png", "--device", "cpu",
                        script="evaluate.py")
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "eval.json").read_text())
    for key in METRIC_KEYS:
        assert 0.0 <= figures[key] <= 1.0
    assert figures["num_test_images"] == 100
    assert set(figures["per_class"]) == {str(d) for d in range(10)}
    assert "precision" in result.stdout and "MAP@R" in result.stdout  # the per-class report and metrics
    with Image.open(tmp_path / "eval.png") as image:
        assert image.size == (800, 700)


def test_evaluate_matches_the_trainers_last_epoch(two_epoch_run, mnist_dir, tmp_path):
    _, out = two_epoch_run
    evaluate.main([str(out / "model" / "epoch_002.pth"), "--dataset_dir", str(mnist_dir), "--json",
                   str(tmp_path / "eval.json"), "--device", "cpu"])
    figures = json.loads((tmp_path / "eval.json").read_text())
    with open(out / "history.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert figures["accuracy"] == pytest.approx(float(last["test_acc"]), abs=1e-6)
    assert figures["map_at_r"] == pytest.approx(float(last["map_at_r"]), abs=1e-6)


def test_reads_a_training_state_file(two_epoch_run, mnist_dir, tmp_path):
    _, out = two_epoch_run
    state_path = out / "model" / "training_state.pth"
    model_state, centers, holdout = evaluate.read_checkpoint(state_path)
    per_epoch = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    assert all(torch.equal(model_state[name], per_epoch[name]) for name in per_epoch)
    assert centers.shape == (10, 2) and holdout == []
    evaluate.main([str(state_path), "--dataset_dir", str(mnist_dir), "--plot", str(tmp_path / "with_centres.png")])
    assert (tmp_path / "with_centres.png").is_file()


class NotTensors:
    pass


@pytest.mark.parametrize("content, message", [
    (None, "no checkpoint file"),
    (b"PK\x03\x04 truncated", "truncated or corrupt"),
    ({"weight": torch.zeros(2)}, "not a checkpoint of this project's Net"),
    ([1, 2, 3], "not a model's state_dict"),
    (NotTensors(), "needs to run pickled Python code"),
])
def test_bad_checkpoint_files(tmp_path, content, message, mnist_dir):
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(path), "--dataset_dir", str(mnist_dir)])
    assert message in str(stop.value.code) and "\n" not in str(stop.value.code)


def test_truncated_real_checkpoint(two_epoch_run, tmp_path, mnist_dir):
    _, out = two_epoch_run
    data = (out / "model" / "epoch_002.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    result = run_script(tmp_path / "cut.pth", "--dataset_dir", mnist_dir, script="evaluate.py")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "truncated or corrupt" in result.stderr


@pytest.fixture(scope="module")
def holdout_run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("holdout")
    trainer.main(["--dataset_dir", str(mnist_dir), "--epochs", "3", "--batch_size", "64", "--lr", "0.01",
                  "--device", "cpu", "--holdout_classes", "9", "8", *map(str, output_flags(out))])
    return out


def test_holdout_trains_on_the_seen_digits_only(holdout_run):
    state = torch.load(holdout_run / "model" / "epoch_003.pth", weights_only=True)
    assert state["ip2.weight"].shape == (8, 2)
    with open(holdout_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    for prefix in ("seen_", "unseen_"):
        for name in ("precision_at_1", "r_precision", "map_at_r"):
            assert 0.0 <= float(rows[-1][prefix + name]) <= 1.0
    saved = torch.load(holdout_run / "visual" / "test_features.pt", weights_only=True)
    assert saved["unseen_digits"] == [8, 9]


def test_holdout_removes_digits_from_the_training_split(mnist_dir):
    from mnist_loader import load_dataset
    train_loader, test_loader, classes = load_dataset(mnist_dir, holdout_classes=[8, 9])
    assert classes == tuple("01234567")
    assert not torch.isin(train_loader.labels, torch.tensor([8, 9])).any()
    assert torch.isin(test_loader.labels, torch.tensor([8, 9])).any()
    assert train_loader.num_samples == 240  # 300 images, every digit 30 times


def test_evaluate_a_holdout_checkpoint(holdout_run, mnist_dir, tmp_path):
    checkpoint = str(holdout_run / "model" / "epoch_003.pth")
    with pytest.raises(SystemExit) as stop:
        evaluate.main([checkpoint, "--dataset_dir", str(mnist_dir)])
    assert "pass --holdout_classes" in str(stop.value.code)
    evaluate.main([checkpoint, "--dataset_dir", str(mnist_dir), "--holdout_classes", "8", "9",
                   "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")])
    figures = json.loads((tmp_path / "e.json").read_text())
    assert set(figures["per_class"]) == set("01234567")
    assert "unseen_map_at_r" in figures and "seen_map_at_r" in figures


def test_history_csv_and_curves(two_epoch_run):
    result, out = two_epoch_run
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for column in ("lr", "center_lr", "train_acc", "train_loss", "train_center_loss", "test_acc", "test_loss",
                   "test_center_loss", "precision_at_1", "r_precision", "map_at_r", "seconds"):
        assert column in rows[0]
    assert float(rows[0]["lr"]) == 0.01 and float(rows[0]["center_lr"]) == 0.5
    # The CSV holds the same figures as the printed lines.
    printed = [line for line in result.stdout.splitlines() if line.startswith("Epoch:")][1]
    assert f"test acc: {float(rows[1]['test_acc']):.4f}" in printed
    assert f"train loss: {float(rows[1]['train_loss']):.4f}" in printed
    assert 0 < float(rows[1]["train_center_loss"]) < float(rows[1]["train_loss"])
    assert (out / "history.png").stat().st_size > 0


def test_feature_gif(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    with Image.open(out / "visual" / "features.gif") as gif:
        assert gif.n_frames == 2 and gif.size == (512, 448)
    result = run_script(out / "visual" / "test_features.pt", "--out", tmp_path / "again.gif", script="animate.py")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "again.gif") as gif:
        assert gif.n_frames == 2


def test_tensorboard_missing_gives_a_clear_message(monkeypatch, mnist_dir, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--dataset_dir", str(mnist_dir), "--tensorboard", str(tmp_path / "tb"),
                      *map(str, output_flags(tmp_path))])
    assert "pip install tensorboard" in str(stop.value.code)


def test_tensorboard_logs(mnist_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    trainer.main(["--dataset_dir", str(mnist_dir), "--epochs", "1", "--max_train_samples", "64",
                  "--tensorboard", str(tmp_path / "tb"), *map(str, output_flags(tmp_path))])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tb").rglob("projector_config.pbtxt"))
