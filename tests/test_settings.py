"""The settings a run must have: each broken rule stops main() with one line, before
anything is loaded or written."""
import pytest
import torch

from conftest import stop_message, trainer_flags
from run_machinery import settings
from run_machinery.errors import UserError
from run_machinery.settings import parse_classes


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--center_lr", "-1"], "--center_lr must be positive"),
    (["--model_path_temp", "model.pth"], "--model_path_temp must contain {}"),
    (["--vis_img_path_temp", "plot.png"], "--vis_img_path_temp must contain {}"),
    (["--max_train_samples", "0"], "--max_train_samples must be at least 1"),
    (["--holdout_classes", "10"],
     "--holdout_classes: '10' is neither a class index 0-9 nor a class of MNIST"),
    (["--holdout_classes", "Shirt"], "nor a class of MNIST (0, 1, 2"),
    (["--holdout_classes", "\u00b2"], "--holdout_classes: '\u00b2' is neither a class index 0-9"),
    (["--dataset", "fashion-mnist", "--holdout_classes", "shoe"],
     "nor a class of Fashion-MNIST (T-shirt/top, "),
    (["--holdout_classes", *"012345678"], "leaves at least two to train on"),
    (["--device", "mps"], "--device mps was asked for, but this machine has no mps device"),
    (["--device", "quantum"], "--device 'quantum' is no device name PyTorch knows"),
    (["--device", "cuda:7"], "--device cuda:7 was asked for"),
    *[([f"--{name}", "inf"], f"--{name} must be positive and finite")
      for name in ("lr", "center_lr", "gamma")],
    *[([f"--{name}", value], f"--{name} must be finite and not negative")
      for name in ("momentum", "weight_decay", "loss_weight") for value in ("inf", "nan", "-1")],
    (["--momentum", "2"], "--momentum must be below 1"),
    (["--momentum", "1"], "--momentum must be below 1"),
    (["--seed", "99999999999999999999"], "--seed must lie in 0 to 2**32 - 1"),
    (["--seed", "-1"], "--seed must lie in 0 to 2**32 - 1"),
    (["--vis_img_path_temp", "v_{}.foo"],
     "--vis_img_path_temp: matplotlib cannot write .foo images"),
])
def test_bad_flags_stop_with_one_line(flags, message, mnist_dir, tmp_path):
    if flags[0] == "--device" and flags[1] != "quantum" and torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator")
    text = stop_message(trainer_flags(mnist_dir, tmp_path, *flags))
    assert message in text and "\n" not in text
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())


def test_amp_without_bf16_says_so(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "bf16_supported", lambda device: False)
    message = stop_message(trainer_flags(mnist_dir, tmp_path, "--amp"))
    assert "--amp needs native bfloat16" in message and "without --amp" in message
    assert "\n" not in message


def test_classes_by_index_or_name():
    assert parse_classes("fashion-mnist", ["Shirt", "ankle boot", 0, "3"]) == [6, 9, 0, 3]
    assert parse_classes("kmnist", ["wo", "KI"]) == [9, 1]
    for dataset, value in (("mnist", "10"), ("fashion-mnist", "shoe"), ("mnist", "Shirt")):
        with pytest.raises(UserError, match="is neither a class index 0-9 nor a class of"):
            parse_classes(dataset, [value])


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "\uff13", "+3", "-1", " 3x", ""])
def test_an_index_is_ascii_digits_only(value):
    with pytest.raises(UserError, match="is neither a class index 0-9 nor a class of MNIST"):
        parse_classes("mnist", [value])


def test_a_folder_class_named_by_unicode_digits_is_found_by_name():
    assert parse_classes("folder", ["\u00b2", "2"], ["1", "2", "\u00b2"]) == [2, 1]


def test_a_folders_classes_by_name_first_then_index():
    names = ["1", "10", "2", "Cat"]  # ImageFolder's order: sorted as strings
    assert parse_classes("folder", ["2", "cat", "10", 3, "0"], names) == [2, 3, 1, 3, 0]
    with pytest.raises(UserError) as error:
        parse_classes("folder", ["4"], names)
    assert str(error.value) == ("--holdout_classes: '4' is neither a class index 0-3 nor a class "
                                "of the image folder (1, 10, 2, Cat)")


@pytest.mark.parametrize("flags, message", [
    (["--holdout_classes", "owl"],
     "'owl' is neither a class index 0-10 nor a class of the image folder (ant, bee, cat, dog, "
     "eel, fox, gnu, hen, ibis, jay, koi)"),
    (["--holdout_classes", *"0123456789"], "leaves at least two to train on (of 11)"),
    (["--classes_per_batch", "10", "--images_per_class", "2", "--holdout_classes", "koi", "0"],
     "--classes_per_batch must be from 1 to the 9 classes trained, got 10"),
])
def test_a_folders_class_count_bounds_the_settings(flags, message, image_folder_dir, tmp_path):
    text = stop_message(trainer_flags(image_folder_dir, tmp_path, "--dataset", "folder", *flags))
    assert message in text and "\n" not in text


def test_a_missing_folder_stops_before_anything_is_written(tmp_path):
    text = stop_message(trainer_flags(tmp_path / "nothing", tmp_path / "out",
                                      "--dataset", "folder"))
    assert text == (f"error: the image folder {tmp_path / 'nothing'} could not be loaded: it has "
                    "no train/ folder. Expected DIR/train/CLASS/* and DIR/test/CLASS/* "
                    "(torchvision's ImageFolder layout) with the same class folders")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--feat_dim", "1"], "--feat_dim must be from 2 (a feature to draw"),
    (["--feat_dim", str(settings.MAX_FEAT_DIM + 1), "--dry_run"],
     f"to {settings.MAX_FEAT_DIM}, got {settings.MAX_FEAT_DIM + 1}"),
    (["--feat_dim", "1000000000", "--dry_run"], "--feat_dim must be from 2"),
    (["--classes_per_batch", "4"], "--classes_per_batch and --images_per_class go together"),
    (["--images_per_class", "4"], "--classes_per_batch and --images_per_class go together"),
    (["--classes_per_batch", "11", "--images_per_class", "2"],
     "--classes_per_batch must be from 1 to the 10 classes trained, got 11"),
    (["--classes_per_batch", "9", "--images_per_class", "2", "--holdout_classes", "8", "9"],
     "--classes_per_batch must be from 1 to the 8 classes trained, got 9"),
    (["--classes_per_batch", "4", "--images_per_class", "0"],
     "--images_per_class must be at least 1"),
    (["--classes_per_batch", "4", "--images_per_class", "31"],
     "--images_per_class 31 must be from 1 to 30"),
    (["--triplet_weight", "1"], "--triplet_weight needs PK batches"),
    (["--triplet_weight", "1", "--classes_per_batch", "1", "--images_per_class", "8"],
     "--triplet_weight needs PK batches with at least two classes"),
    (["--triplet_weight", "-1"], "--triplet_weight must be finite and not negative"),
    (["--triplet_margin", "nan"], "--triplet_margin must be finite and not negative"),
    (["--softmax_weight", "-1"], "--softmax_weight must be finite and not negative"),
    (["--softmax_weight", "0"], "--softmax_weight 0 leaves the feature to the triplet loss"),
])
def test_bad_batch_and_triplet_settings_stop_with_one_line(flags, message, mnist_dir, tmp_path):
    text = stop_message(trainer_flags(mnist_dir, tmp_path, *flags))
    assert message in text and "\n" not in text
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())
