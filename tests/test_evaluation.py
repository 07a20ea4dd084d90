import json

import pytest
import torch
import torch.nn.functional as F

from margin_heads import Head

from run_machinery.checkpoint_run import load_test_split, open_checkpoint, read_checkpoint
from run_machinery.embedding import embed
from run_machinery.evaluation import evaluate, json_ready, plot_evaluation
from run_machinery.metrics import retrieval_metrics


def test_the_centres_of_a_training_state_are_drawn(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    model, centers, _ = read_checkpoint(out / "training_state.pth")
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
