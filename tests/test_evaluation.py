import json
import shutil

import pytest

import torch
import torch.nn.functional as F

from run_machinery.evaluation import (evaluate, json_ready, load_test_split, open_checkpoint,
                                      plot_evaluation, read_checkpoint)
from conftest import FOLDER_CLASSES
from margin_heads import Head
from run_machinery.errors import UserError
from run_machinery.metrics import embed, retrieval_metrics


def test_reads_a_training_state_file(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    state_path = out / "training_state.pth"
    model, centers, holdout = read_checkpoint(state_path)
    per_epoch = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    assert all(torch.equal(model.state_dict()[name], per_epoch[name]) for name in per_epoch)
    assert centers.shape == (10, 2) and holdout == []
    plot_evaluation(torch.randn(20, 2), torch.arange(20) % 10, Head("softmax", model.ip2.weight),
                    list(range(10)), centers, [], "with centres", tmp_path / "with_centres.png")
    assert (tmp_path / "with_centres.png").is_file()


def test_an_angular_head_predicts_by_the_largest_cosine(arcface_run, mnist_dir):
    checkpoint = open_checkpoint(arcface_run / "model" / "epoch_002.pth")
    assert (checkpoint.head.angular
            and (checkpoint.head.scale, checkpoint.head.margin) == (16.0, 0.2))
    loader = load_test_split(mnist_dir, torch.device("cpu"))
    weight = checkpoint.model.ip2.weight
    features = embed(checkpoint.model, loader)[0]  # as evaluate() computes them: the same kernels
    cosine = F.normalize(features, dim=1) @ F.normalize(weight.detach(), dim=1).T
    # Stretch the first image's second-nearest class weight: ip2's argmax there changes, the
    # cosine's does not.
    runner_up = cosine[0].topk(2).indices[1]
    assert cosine[0, runner_up] > 0
    with torch.no_grad():
        weight[runner_up] *= 1000
    ip2 = features @ weight.detach().T
    assert ip2[0].argmax() == runner_up != cosine[0].argmax()
    metrics, _, _ = evaluate(checkpoint.model, checkpoint.head, loader, checkpoint.classes, [])
    softmax, _, _ = evaluate(checkpoint.model, Head("softmax"), loader, checkpoint.classes, [])
    assert (metrics["accuracy"]
            == pytest.approx((cosine.argmax(1) == loader.labels).float().mean().item()))
    assert (softmax["accuracy"]
            == pytest.approx((ip2.argmax(1) == loader.labels).float().mean().item()))


def test_an_angular_head_retrieves_by_cosine(arcface_run, mnist_dir):
    checkpoint = open_checkpoint(arcface_run / "model" / "epoch_002.pth")
    loader = load_test_split(mnist_dir, torch.device("cpu"))
    features = embed(checkpoint.model, loader)[0]  # as evaluate() computes them: the same kernels
    metrics, _, _ = evaluate(checkpoint.model, checkpoint.head, loader, checkpoint.classes, [])
    by_cosine = retrieval_metrics(F.normalize(features, dim=1), loader.labels)
    by_distance = retrieval_metrics(features, loader.labels)
    # the two rankings differ on these features
    assert by_cosine["map_at_r"] != by_distance["map_at_r"]
    assert metrics["map_at_r"] == pytest.approx(by_cosine["map_at_r"])


def test_undefined_figures_are_null_with_a_reason():
    ready = json_ready({"accuracy": 0.5, "unseen_map_at_r": float("nan"), "per_class": {}})
    assert ready["unseen_map_at_r"] is None and "unseen_map_at_r" in ready["undefined"]
    json.dumps(ready, allow_nan=False)  # strict JSON


def test_a_folder_checkpoint_knows_its_classes_and_normalisation(folder_run, image_folder_dir,
                                                                 tmp_path):
    checkpoint = open_checkpoint(folder_run / "model" / "epoch_001.pth")
    run = json.loads((folder_run / "run.json").read_text())
    assert (checkpoint.dataset, checkpoint.dataset_dir) == ("folder", str(image_folder_dir))
    assert checkpoint.class_names == list(FOLDER_CLASSES) and checkpoint.holdout == [1, 10]
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


@pytest.mark.parametrize("width, title", [
    (2, "epoch_002.pth: test features and decision regions"),
    (3, "epoch_002.pth: test features (3-D)"),  # no regions drawn: none named
    (8, "epoch_002.pth: test features (8-D, principal axes)"),
])
def test_the_plots_title_says_what_is_drawn(width, title, tmp_path):
    head = Head("softmax", torch.nn.Parameter(torch.randn(10, width)))
    fig = plot_evaluation(torch.randn(40, width), torch.arange(40) % 10, head, list(range(10)),
                          None, [], "epoch_002.pth", tmp_path / "p.png")
    assert fig.axes[0].get_title() == title
    assert bool(fig.axes[0].get_images()) == (width == 2)
