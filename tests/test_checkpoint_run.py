import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import FOLDER_CLASSES, REPO_DIR
from run_machinery.checkpoint_run import open_checkpoint, read_checkpoint
from run_machinery.errors import UserError


def test_reads_a_training_state_file(two_epoch_run):
    _, out = two_epoch_run
    state_path = out / "training_state.pth"
    model, centers, holdout_classes = read_checkpoint(state_path)
    per_epoch = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    assert all(torch.equal(model.state_dict()[name], per_epoch[name]) for name in per_epoch)
    assert centers.shape == (10, 2) and holdout_classes == []


def test_a_folder_checkpoint_knows_its_classes_and_normalisation(folder_run, image_folder_dir,
                                                                 tmp_path):
    checkpoint = open_checkpoint(folder_run / "model" / "epoch_001.pth")
    run = json.loads((folder_run / "run.json").read_text())
    assert (checkpoint.dataset, checkpoint.dataset_dir) == ("folder", str(image_folder_dir))
    assert checkpoint.class_names == list(FOLDER_CLASSES) and checkpoint.holdout_classes == [1, 10]
    assert checkpoint.normalization == (run["mean"], run["std"])
    loader = checkpoint.test_split("cpu", limit=20)
    assert (loader.mean, loader.std, loader.num_samples) == (run["mean"], run["std"], 20)
    assert loader.class_names == list(FOLDER_CLASSES)
    # The same folder with a class folder renamed: its labels no longer mean the run's classes.
    shutil.copytree(image_folder_dir, tmp_path / "renamed")
    for split in ("train", "test"):
        (tmp_path / "renamed" / split / "ant").rename(tmp_path / "renamed" / split / "zebra")
    with pytest.raises(UserError) as error:
        open_checkpoint(folder_run / "model" / "epoch_001.pth", dataset_dir=tmp_path / "renamed")
    assert str(error.value).startswith(f"the class folders of {tmp_path / 'renamed'} (bee, cat, ")
    assert "are not those the checkpoint was trained on (ant, bee, cat, " in str(error.value)


def test_export_reads_a_checkpoint_without_the_drawing_libraries():
    imported = subprocess.run(
        [sys.executable, "-c", ("import sys, export; "
                                "print(*[name for name in ('matplotlib', 'sklearn') "
                                "if name in sys.modules])")],
        capture_output=True, text=True, timeout=300, cwd=REPO_DIR, check=False)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == ""


def test_an_idx_runs_other_class_names_are_said_as_its_classes(two_epoch_run, tmp_path):
    shutil.copytree(two_epoch_run[1], tmp_path / "run")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    run["class_names"] = [f"digit {index}" for index in range(10)]
    (tmp_path / "run" / "run.json").write_text(json.dumps(run))
    with pytest.raises(UserError) as error:
        open_checkpoint(tmp_path / "run" / "model" / "epoch_001.pth")
    assert str(error.value).startswith("the classes of MNIST (0, 1, ")  # no class folders
    assert "are not those the checkpoint was trained on (digit 0, digit 1, " in str(error.value)


def test_a_validation_split_is_a_seeded_draw_of_training_images_of_trained_classes(
        holdout_run, mnist_dir):
    from run_machinery.datasets import read_split

    checkpoint = open_checkpoint(holdout_run / "model" / "epoch_003.pth")
    split = checkpoint.validation_split("cpu", 50, seed=3)
    assert split.num_samples == 50 and not torch.isin(split.labels, torch.tensor([8, 9])).any()
    again = checkpoint.validation_split("cpu", 50, seed=3)
    assert torch.equal(split.images, again.images) and torch.equal(split.labels, again.labels)
    assert not torch.equal(checkpoint.validation_split("cpu", 50, seed=4).labels, split.labels)
    # every image is a training image, normalised as the test split is
    images, labels = read_split(mnist_dir, train=True)
    trained = (~torch.isin(labels, torch.tensor([8, 9]))).sum()
    assert checkpoint.validation_split("cpu", 10_000).num_samples == trained
    normalised = checkpoint.test_split("cpu")
    pixels = (split.images * normalised.std + normalised.mean) * 255
    training = {bytes(image.flatten().tolist()) for image in images}
    assert all(bytes(image.round().byte().flatten().tolist()) in training for image in pixels)
