"""Evaluating a checkpoint of the trainer (read by checkpoint_run.py): all the metrics of its
model on a test split, as a JSON-ready dict, and its pictures (used by evaluate.py and
compare.py), the verification picture among them.
"""
import math

import torch
from sklearn.manifold import TSNE
from sklearn.metrics import classification_report
from threadpoolctl import threadpool_limits

from mnist_loader import label_to_class

from .checkpointing import save_figure
from .embedding import embed
from .metrics import split_retrieval_metrics
from .plots import (
    draw_decision_regions,
    draw_directions,
    draw_directions_3d,
    draw_embedding,
    draw_features,
    panel_axes,
    panel_figure,
    shown_as,
    verification_figure,
)


def json_ready(metrics):
    """`metrics` with every undefined (NaN) figure as null, its reason under "undefined":
    JSON has no NaN."""
    ready = {key: value for key, value in metrics.items()}
    undefined = [key for key, value in metrics.items()
                 if isinstance(value, float) and not math.isfinite(value)]
    for key in undefined:
        ready[key] = None
    if undefined:
        ready["undefined"] = {key: "no test image of a trained class to classify"
                              if key == "accuracy" else
                              "fewer than two test images of these classes, or none with another "
                              "of its class to retrieve"
                              for key in undefined}
    return ready


def plot_evaluation(features, labels, head, classes, centers, holdout_classes, name, path,
                    names=None):
    """The test features over the head's decision regions (2-D features; 3-D ones are drawn
    in 3-D, wider ones on their principal axes, with no regions); for an angular head, their
    directions with the class weights' beside them (at 2-D and 3-D). The title begins with
    `name` and says what is drawn; `names`: the class names. Returns the figure."""
    width = features.shape[1]
    panels = 2 if head.angular and width <= 3 else 1
    fig = panel_figure(panels)
    ax = draw_embedding(fig, (1, panels, 1), features, labels, centers, holdout_classes, names)
    if width == 2:
        draw_decision_regions(ax, head.decision_weight(), classes, class_names=names)
    ax.set_title(f"{name}: test features" + (" and decision regions" if width == 2
                                             else shown_as(width)))
    if panels == 2:
        direction_ax = panel_axes(fig, (1, 2, 2), width == 3)
        (draw_directions_3d if width == 3 else draw_directions)(
            direction_ax, features, labels, head.class_directions(classes), holdout_classes, names)
        direction_ax.set_title(f"their directions and the class weights ({head.name})")
    save_figure(fig, path)
    return fig


def evaluate(model, head, test_loader, classes, holdout_classes, names=None, amp=False):
    """All the metrics of a model with its head on `test_loader`, as a JSON-ready dict, the
    test features, and the per-class report as text, the classes named by `names`
    (default: their indices, MNIST's digits); `amp`: the forward pass in bfloat16."""
    features, log_probs, labels = embed(model, test_loader, amp)
    num_labels = len(test_loader.class_names)
    seen = label_to_class(classes, labels.device, num_labels)[labels] >= 0
    predicted_labels = torch.tensor(classes, device=labels.device)[
        head.predict(features, log_probs)]
    true_seen, predicted_seen = labels[seen].cpu().numpy(), predicted_labels[seen].cpu().numpy()
    target_names = [names[label] if names else str(label) for label in classes]
    report_options = dict(labels=classes, target_names=target_names, digits=4, zero_division=0)
    metrics = {"accuracy": float((true_seen == predicted_seen).mean()) if seen.any()
               else float("nan"), "num_test_images": int(labels.numel())}
    metrics.update(split_retrieval_metrics(head.retrieval_features(features), labels,
                                           holdout_classes))
    if not seen.any():  # a few test images, all of held-out classes: nothing was classified
        metrics["per_class"] = {}
        return metrics, features, "no test image of a trained class: no per-class report"
    report = classification_report(true_seen, predicted_seen, output_dict=True, **report_options)
    metrics["per_class"] = {name: report[name] for name in target_names}
    return metrics, features, classification_report(true_seen, predicted_seen, **report_options)


def plot_tsne(features, labels, holdout_classes, title, path, names=None, samples=2000, seed=0):
    """A t-SNE map (scikit-learn) of `samples` test features drawn at random (seeded), for
    features of any width: neighbours in the map are neighbours in the feature space."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(labels.numel(), generator=generator)[:samples]
    features = features.detach().float().cpu()[chosen].numpy()
    perplexity = min(30.0, (len(chosen) - 1) / 3)  # t-SNE needs more points than 3 perplexities
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # One OpenMP thread: the same map, bit for bit; two cost 10x the CPU time (threads
    # waiting at 1000 barriers) and 5x the wall clock on the loaded machine (docs/speed.md).
    with threadpool_limits(1, user_api="openmp"):
        points = tsne.fit_transform(features)
    fig = panel_figure(1)
    ax = panel_axes(fig, (1, 1, 1))
    draw_features(ax, torch.from_numpy(points), labels.cpu()[chosen], None, holdout_classes, names)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title)
    save_figure(fig, path)


def plot_verification(histogram, figures, name, path):
    """The verification picture of a split's PairHistogram `histogram` and its `figures`
    (verification.verification_figures, with the threshold calibrated elsewhere under
    "calibrated" and measured here under "at_threshold"): its ROC with the TAR at each FAR
    claimed and the threshold's point, and the distances with the threshold; the title begins
    with `name`. Returns the figure."""
    far, tar = histogram.roc()
    marks = [(entry["reached_far"], entry["tar"], f"at FAR {entry['far']:g}")
             for entry in figures["tar_at_far"] if entry["tar"] is not None]
    test = figures["at_threshold"]
    marks.append((test["reached_far"], test["tar"], "the threshold, on test"))
    calibrated = figures["calibrated"]
    fig = verification_figure(far, tar, *histogram.distance_histogram(), marks,
                              calibrated["threshold"],
                              f"threshold (FAR {calibrated['far']:g} on validation)",
                              f"{name}: verification ROC ({figures['distance']})")
    save_figure(fig, path)
    return fig
