import csv
import json
import pickle
import shutil
import warnings

import pytest
import torch
from PIL import Image

import evaluate
import train_mnist_original_center as trainer
from conftest import FOLDER_CLASSES, REAL_MNIST_DIR, trainer_flags
from run_machinery.cli import SHIPPED_CHECKPOINT

METRIC_KEYS = ("accuracy", "precision_at_1", "r_precision", "map_at_r", "rank_1", "rank_5",
               "rank_10", "mean_average_precision")


def test_evaluate_a_trained_checkpoint(two_epoch_run, mnist_dir, tmp_path, capsys):
    _, out = two_epoch_run
    evaluate.main([str(out / "model" / "epoch_002.pth"), "--dataset_dir", str(mnist_dir), "--json",
                   str(tmp_path / "eval.json"), "--plot", str(tmp_path / "eval.png"),
                   "--device", "cpu"])
    stdout = capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in METRIC_KEYS:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["num_test_images"] == 100
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert "precision" in stdout and "MAP@R" in stdout  # the per-class report and metrics
    assert "re-ID: rank-1" in stdout and metrics["queries_without_match"] == 0
    with Image.open(tmp_path / "eval.png") as image:
        assert image.size == (800, 700)


def test_evaluate_matches_the_trainers_last_epoch_without_repeating_flags(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    # No --dataset_dir: the run's run.json says where its data is.
    metrics = evaluate.main([str(out / "model" / "epoch_002.pth"), "--json",
                             str(tmp_path / "eval.json"), "--device", "cpu"])
    assert json.loads((tmp_path / "eval.json").read_text()) == metrics
    with open(out / "history.csv") as f:
        last = list(csv.DictReader(f))[-1]
    # Two computations of the same model: the trainer's (batches of 128) and evaluate.py's
    # (one batch) may round differently, and nearly
    # tied neighbours may swap. A swap moves one of the 100 queries' AP by a few hundredths,
    # MAP@R by a few ten-thousandths (0.46575 against 0.46565 on an AVX2-only CPU); a wrong
    # model or other images would move both figures by far more.
    assert metrics["accuracy"] == pytest.approx(float(last["test_acc"]), abs=0.02)
    assert metrics["map_at_r"] == pytest.approx(float(last["map_at_r"]), abs=0.01)


def assert_the_training_logs_figures(run_dir, metrics, tolerance):
    """evaluate.py's `metrics` of the run's last checkpoint are its history.csv's last row:
    test accuracy and every retrieval figure (overall, seen and unseen)."""
    with open(run_dir / "history.csv") as f:
        last = list(csv.DictReader(f))[-1]
    shared = [key for key in last if key in metrics]
    assert set(METRIC_KEYS[1:]) <= set(shared)  # every figure is compared
    assert metrics["accuracy"] == pytest.approx(float(last["test_acc"]), abs=tolerance)
    for key in shared:
        assert metrics[key] == pytest.approx(float(last[key]), abs=tolerance), key


def trained_on_a_test_subset(dataset_dir, out, *flags):
    """A run tested on its first test images only, its test pass computed as evaluate.py
    computes (plain weights, not channels-last; float32): the figures of its last epoch."""
    trainer.main(trainer_flags(dataset_dir, out, "--no-channels_last", *flags))
    return out


def test_evaluate_tests_on_the_runs_own_test_images(mnist_dir, tmp_path, capsys):
    # 60 of the fixture's 100 test images, digit 9 held out: seen and unseen figures too.
    run = trained_on_a_test_subset(mnist_dir, tmp_path / "run", "--epochs", 2,
                                   "--max_test_samples", 60, "--holdout_classes", 9)
    checkpoint = str(run / "model" / "epoch_002.pth")
    # In batches of the trainer's test batch: the same computation, the same rounding.
    metrics = evaluate.main([checkpoint, "--batch_size", "64", "--device", "cpu"])
    assert metrics["num_test_images"] == 60 and "unseen_map_at_r" in metrics
    assert "60 test images of MNIST (the run's own" in capsys.readouterr().out
    assert_the_training_logs_figures(run, metrics, 1e-9)
    assert evaluate.main([checkpoint, "--max_test_samples", "all"])["num_test_images"] == 100
    assert evaluate.main([checkpoint, "--max_test_samples", "30"])["num_test_images"] == 30


@pytest.mark.skipif(not (REAL_MNIST_DIR / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_evaluate_gives_the_training_logs_figures_on_real_mnist(tmp_path):
    run = trained_on_a_test_subset(REAL_MNIST_DIR, tmp_path / "run", "--epochs", 1,
                                   "--max_train_samples", 256, "--max_test_samples", 500)
    metrics = evaluate.main([str(run / "model" / "epoch_001.pth"), "--batch_size", "64",
                             "--device", "cpu"])
    assert metrics["num_test_images"] == 500
    assert_the_training_logs_figures(run, metrics, 1e-9)


@pytest.mark.skipif(not SHIPPED_CHECKPOINT.is_file(), reason="the shipped model is missing")
@pytest.mark.skipif(not (REAL_MNIST_DIR / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_the_shipped_model_gives_the_figures_of_its_history(tmp_path):
    # The run tested in bfloat16 (--amp) with channels-last weights, as evaluate.py then does
    # where bf16 runs natively; elsewhere in float32, which moves a figure by a few images.
    metrics = evaluate.main(["--dataset_dir", str(REAL_MNIST_DIR), "--device", "cpu"])
    assert metrics["num_test_images"] == 10000
    assert_the_training_logs_figures(SHIPPED_CHECKPOINT.parent.parent, metrics, 0.002)


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
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "cut.pth"), "--dataset_dir", str(mnist_dir)])
    assert "truncated or corrupt" in stop.value.code and "\n" not in stop.value.code


def test_a_holdout_checkpoint_evaluates_without_the_flag(holdout_run, tmp_path):
    metrics = evaluate.main([str(holdout_run / "model" / "epoch_003.pth"), "--json",
                             str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")])
    assert set(metrics["per_class"]) == set("01234567")
    assert "unseen_map_at_r" in metrics and "seen_map_at_r" in metrics


def test_a_holdout_checkpoint_moved_away_from_its_run_needs_the_flag(holdout_run, mnist_dir,
                                                                     tmp_path):
    (tmp_path / "moved.pth").write_bytes((holdout_run / "model" / "epoch_003.pth").read_bytes())
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "moved.pth"), "--dataset_dir", str(mnist_dir)])
    assert "pass --holdout_classes" in str(stop.value.code)
    metrics = evaluate.main([str(tmp_path / "moved.pth"), "--dataset_dir", str(mnist_dir),
                             "--holdout_classes", "8", "9"])
    assert set(metrics["per_class"]) == set("01234567")


def test_an_angular_checkpoint_is_judged_by_the_cosine_unless_told(arcface_run, tmp_path, capsys):
    metrics = evaluate.main([str(arcface_run / "model" / "epoch_002.pth"), "--plot",
                             str(tmp_path / "e.png")])
    assert (metrics["head"] == "arcface"
            and "arcface head (prediction: the largest cosine)" in capsys.readouterr().out)
    with open(arcface_run / "history.csv") as f:
        assert metrics["accuracy"] == pytest.approx(float(list(csv.DictReader(f))[-1]["test_acc"]),
                                                    abs=1e-6)
    with Image.open(tmp_path / "e.png") as image:
        assert image.size == (1600, 700)  # the decision regions, and the directions beside them
    assert evaluate.main([str(arcface_run / "model" / "epoch_002.pth"),
                          "--head", "softmax"])["head"] == "softmax"


def test_a_fashion_mnist_run_is_evaluated_without_being_told_the_dataset(fashion_run, tmp_path,
                                                                         capsys):
    metrics = evaluate.main([str(fashion_run / "model" / "epoch_002.pth"), "--json",
                             str(tmp_path / "e.json"), "--ranking", str(tmp_path / "r.png"),
                             "--ranking_per_class", "1"])
    assert metrics["dataset"] == "fashion-mnist" and metrics["holdout_classes"] == [6, 8]
    assert list(metrics["per_class"]) == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal", "Sneaker", "Ankle boot"]
    for key in ("rank_1", "mean_average_precision", "unseen_rank_1",
                "unseen_mean_average_precision"):
        assert 0 <= metrics[key] <= 1
    assert ("test images of Fashion-MNIST, classes [6, 8] (Shirt, Bag) held out"
            in capsys.readouterr().out)
    assert json.loads((tmp_path / "e.json").read_text())["class_names"][6] == "Shirt"


def broken_copy(two_epoch_run, tmp_path, change):
    _, out = two_epoch_run
    state = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "broken.pth")
    return str(tmp_path / "broken.pth")


@pytest.mark.parametrize("change, message", [
    (lambda state: state.update({"ip1.weight": torch.zeros(2, 7)}),
     "ip1.weight has shape (2, 7) there"),
    (lambda state: state.update({"ip1.bias": [0.0, 0.0]}), "ip1.bias is a list, not a tensor"),
    (lambda state: state["conv2_1.weight"][0, 0, 0].fill_(float("nan")),
     "conv2_1.weight holds NaN"),
])
def test_a_damaged_model_is_refused_in_one_line(two_epoch_run, tmp_path, change, message):
    with pytest.raises(SystemExit) as stop:
        evaluate.main([broken_copy(two_epoch_run, tmp_path, change)])
    assert message in stop.value.code and "\n" not in stop.value.code


@pytest.mark.parametrize("flags, message", [
    (["--holdout_classes", "10", "11"],
     "--holdout_classes: '10' is neither a class index 0-9 nor a class of MNIST"),
    (["--plot", "x.foo"], "--plot: matplotlib cannot write .foo images"),
])
def test_bad_flags_of_evaluate(two_epoch_run, tmp_path, flags, message):
    _, out = two_epoch_run
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(out / "model" / "epoch_002.pth"), *flags])
    assert message in stop.value.code


def test_ranking_picture(holdout_run, tmp_path):
    metrics = evaluate.main([str(holdout_run / "model" / "epoch_003.pth"), "--ranking",
                             str(tmp_path / "r.png"), "--ranking_per_class", "1"])
    with Image.open(tmp_path / "r.png") as image:
        width, height = image.size
    # One row per class (the held-out 8 and 9 first), the query and its ten nearest.
    assert width == int(1.1 * 11.4 * 80) and height == int((1.25 * 10 + 0.8) * 80)
    assert "unseen_rank_1" in metrics


def test_a_folder_run_evaluates_by_its_run_file(folder_run, tmp_path, capsys, monkeypatch):
    from run_machinery import checkpoint_run
    # its normalisation is the run's, from run.json: the training images are not read again
    monkeypatch.setattr(checkpoint_run, "normalization", None)
    metrics = evaluate.main([str(folder_run / "model" / "epoch_002.pth"), "--json",
                             str(tmp_path / "eval.json"), "--plot", str(tmp_path / "eval.png"),
                             "--ranking", str(tmp_path / "ranking.png"), "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert metrics["class_names"] == list(FOLDER_CLASSES) and metrics["holdout_classes"] == [1, 10]
    assert metrics["dataset"] == "folder" and metrics["num_test_images"] == 55
    assert set(metrics["per_class"]) == set(FOLDER_CLASSES) - {"bee", "koi"}
    assert "55 test images of the image folder, classes [1, 10] (bee, koi) held out" in stdout
    assert 0 <= metrics["unseen_map_at_r"] <= 1
    assert (tmp_path / "eval.png").is_file() and (tmp_path / "ranking.png").is_file()


@pytest.mark.parametrize("count", [1, 3])
def test_a_tiny_test_split_gives_null_figures_with_a_reason_and_its_pictures(holdout_run, tmp_path,
                                                                            count):
    evaluate.main([str(holdout_run / "model" / "epoch_003.pth"), "--max_test_samples", str(count),
                   "--json", str(tmp_path / "e.json"), "--ranking", str(tmp_path / "r.png"),
                   "--plot", str(tmp_path / "p.png"), "--device", "cpu"])
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["num_test_images"] == count
    # the first test images are 8, 8, 6: one trained class with one image, or none
    assert saved["seen_map_at_r"] is None and saved["seen_rank_1"] is None
    assert "fewer than two" in saved["undefined"]["seen_map_at_r"]
    assert (tmp_path / "r.png").is_file() and (tmp_path / "p.png").is_file()


def test_a_plain_pickle_is_one_line_without_warnings(tmp_path, mnist_dir):
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as stop:
            evaluate.main([str(tmp_path / "plain.pkl"), "--dataset_dir", str(mnist_dir)])
    assert caught == [] and stop.value.code.startswith("error: the checkpoint ")


def test_verification_figures_a_calibrated_threshold_and_its_picture(two_epoch_run, tmp_path,
                                                                     capsys):
    _, out = two_epoch_run
    shutil.copytree(out, tmp_path / "run")  # the threshold is recorded in the run's folder
    checkpoint = tmp_path / "run" / "model" / "epoch_002.pth"
    metrics = evaluate.main([str(checkpoint), "--verification", str(tmp_path / "roc.png"),
                             "--json", str(tmp_path / "eval.json"), "--far", "1e-2",
                             "--device", "cpu"])
    stdout = capsys.readouterr().out
    figures = metrics["verification"]
    assert json.loads((tmp_path / "eval.json").read_text())["verification"] == figures
    assert (figures["distance"], figures["num_images"]) == ("euclidean", 100)
    assert figures["genuine_pairs"] + figures["impostor_pairs"] == 100 * 99 // 2
    assert [entry["far"] for entry in figures["tar_at_far"]] == [1e-1, 1e-2, 1e-3, 1e-4]
    calibrated = figures["calibrated"]
    # the fixture's 300 training images, all of trained classes: fewer than the 2,000 asked
    assert (calibrated["far"], calibrated["num_images"]) == (1e-2, 300)
    assert calibrated["reached_far"] <= 1e-2
    assert figures["at_threshold"]["threshold"] == calibrated["threshold"]
    record = json.loads((tmp_path / "run" / "model" / "epoch_002.verification.json").read_text())
    assert record["calibrated"] == calibrated and record["test"] == figures["at_threshold"]
    assert "verification (euclidean distance), all pairs of 100 test images" in stdout
    assert "threshold at FAR 0.01, calibrated on 300 training images" in stdout
    with Image.open(tmp_path / "roc.png") as image:
        assert image.size == (1600, 700)
    # --calibrate alone: the same threshold, no picture
    again = evaluate.main([str(checkpoint), "--calibrate", "--far", "1e-2", "--device", "cpu"])
    assert again["verification"] == figures


@pytest.mark.parametrize("flags, message", [
    (["--far", "1.5"], "--far must lie between 0 and 1 (exclusive), got 1.5"),
    (["--far", "0", "--calibrate"], "--far must lie between 0 and 1"),
    (["--calibrate", "--validation_images", "20"],
     "a threshold at FAR 0.001 needs at least 10000 impostor pairs (10 / FAR), but the 20 "
     "validation images make "),
])
def test_a_bad_far_or_too_few_validation_images_is_one_line(two_epoch_run, tmp_path, flags,
                                                            message):
    _, out = two_epoch_run
    shutil.copytree(out, tmp_path / "run")
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "run" / "model" / "epoch_002.pth"), "--device", "cpu",
                       *flags])
    assert message in stop.value.code and "\n" not in stop.value.code


def test_an_angular_heads_threshold_is_also_said_as_a_cosine(arcface_run, tmp_path, capsys):
    shutil.copytree(arcface_run, tmp_path / "run")
    metrics = evaluate.main([str(tmp_path / "run" / "model" / "epoch_002.pth"), "--calibrate",
                             "--far", "1e-2", "--device", "cpu"])
    threshold = metrics["verification"]["calibrated"]["threshold"]
    assert metrics["verification"]["distance"] == "cosine" and 0 < threshold <= 2
    assert f"(cosine > {1 - threshold ** 2 / 2:.6g})" in capsys.readouterr().out
