"""Evaluating a checkpoint of the trainer: reading it safely, and all the metrics of its
model on a test split, as a JSON-ready dict (used by evaluate.py and compare.py).
"""
import math
from dataclasses import dataclass

import torch
from sklearn.manifold import TSNE
from sklearn.metrics import classification_report

from .checkpointing import CheckpointError, load_checkpoint, load_module_state, save_figure
from .errors import UserError
from margin_heads import Head
from .metrics import embed, split_retrieval_metrics
from .settings import parse_classes
from mnist_loader import (REPO_DIR, TensorLoader, class_names, label_to_class, normalization,
                          normalize, read_split)
from mnist_net import Net
from .plots import (draw_decision_regions, draw_directions, draw_directions_3d, draw_embedding,
                    draw_features, panel_axes, panel_figure, shown_as)
from .run_record import find_run_file
from .training_state import is_training_state, unpack_training_state


def read_checkpoint(path):
    """The model, the centres (or None) and the held-out digits (or None) of a per-epoch
    `state_dict` file or of a training state, read once; `CheckpointError` when it is none,
    or holds a tensor of the wrong shape, a value that is no tensor, or a weight that is NaN
    or infinite (such a model's metrics would mean nothing)."""
    content = load_checkpoint(path)
    centers = holdout = None
    if is_training_state(content):
        state = unpack_training_state(content, path)
        content, centers = (state["modules"].get("model"),
                            state["modules"].get("center_loss", {}).get("centers"))
        holdout = state["args"].get("holdout_classes")
    if not isinstance(content, dict):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a model's state_dict")
    for name, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    classifier = content.get("ip2.weight")  # (classes, feature width): the model's shape
    num_classes, feat_dim = classifier.shape if classifier is not None and classifier.dim() == 2 \
        else (10, 2)
    model = Net(num_classes=num_classes, feat_dim=feat_dim)
    expected = set(model.state_dict())
    if set(content) != expected:
        missing, unexpected = sorted(expected - set(content)), sorted(set(content) - expected)
        raise CheckpointError(f"{path} is not a checkpoint of this project's Net "
                              f"(missing {', '.join(missing[:4]) or 'nothing'}"
                              f"{', ...' if len(missing) > 4 else ''}; "
                              f"unexpected {', '.join(map(str, unexpected[:4])) or 'nothing'})")
    load_module_state(model, content, f"model in {path}")
    for name, value in [*content.items(),
                        ("centres", centers if centers is not None else torch.zeros(()))]:
        if not value.isfinite().all():
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values; a model trained "
                                  f"into them gives no meaningful metrics")
    return model, centers, holdout


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


@dataclass
class CheckpointRun:
    """A checkpoint's model and what its run says about it: centres (or None), held-out
    classes, the label of each class the model outputs, the head, the dataset, its folder,
    the names of its classes, the normalisation the run used (None: the dataset's, for runs
    that did not record it), and the run.json (or {})."""
    model: Net
    centers: torch.Tensor
    holdout: list
    classes: list
    head: Head
    dataset: str
    dataset_dir: str
    class_names: list
    normalization: tuple
    run: dict

    def test_split(self, device, limit=None, batch_size=1024):
        """The test split of the run's dataset, normalised as the run's training was."""
        return load_test_split(self.dataset_dir, device, limit, batch_size, self.dataset,
                               self.normalization)


def open_checkpoint(path, holdout=None, head=None, dataset=None, dataset_dir=None):
    """The CheckpointRun of the checkpoint `path`. The held-out classes (indices or names),
    the head, the dataset and its folder are the run's (from its run.json, else the
    training state), unless given here; so are the class names and the normalisation when
    the dataset is the run's. UserError when a folder dataset's class folders are no longer
    the run's."""
    model, centers, stored_holdout = read_checkpoint(path)
    run = find_run_file(path) or {}
    settings = run.get("settings") or {}
    # runs from before the datasets were MNIST's
    run_dataset = settings.get("dataset", "mnist")
    dataset = dataset or run_dataset
    dataset_dir = dataset_dir or run.get("dataset_dir") or str(REPO_DIR / "datasets")
    names = class_names(dataset, dataset_dir=dataset_dir)  # a folder's, as it is now
    recorded = run.get("class_names") if dataset == run_dataset else None
    if recorded and recorded != names:
        raise UserError(f"the class folders of {dataset_dir} ({', '.join(names)}) are not those "
                        f"the checkpoint was trained on ({', '.join(recorded)})")
    stats = (run["mean"], run["std"]) if dataset == run_dataset and {"mean", "std"} <= run.keys() \
        else None
    holdout = holdout if holdout is not None else run.get("holdout_classes", stored_holdout)
    holdout = sorted(set(parse_classes(dataset, holdout or [], names)))
    classes = [label for label in range(len(names)) if label not in holdout]
    num_classes = model.ip2.weight.shape[0]
    if len(classes) != num_classes:
        raise UserError(f"the checkpoint classifies {num_classes} classes, but {len(classes)} "
                        f"remain after holding out {holdout}; pass --holdout_classes with the "
                        f"{len(names) - num_classes} classes held out in training")
    run_head = settings.get("head", "softmax")  # runs from before the heads had softmax
    head = head or run_head
    scale, margin = ((settings.get("scale"), settings.get("margin")) if head == run_head
                     else (None, None))
    return CheckpointRun(model, centers, holdout, classes,
                         Head(head, model.ip2.weight, scale, margin), dataset, dataset_dir, names,
                         stats, run)


def load_test_split(dataset_dir, device, limit=None, batch_size=1024, dataset="mnist",
                    stats=None):
    """The test split of `dataset` in `dataset_dir`, normalised as in training (by `stats`,
    the (mean, std) the run recorded, else the dataset's), as a TensorLoader on `device`."""
    images, labels = read_split(dataset_dir, train=False, limit=limit, dataset=dataset)
    mean, std = stats or normalization(dataset, dataset_dir)
    return TensorLoader(normalize(images, device, mean, std), labels.to(device), batch_size,
                        mean=mean, std=std, class_names=class_names(dataset,
                                                                    dataset_dir=dataset_dir))


def plot_evaluation(features, labels, head, classes, centers, unseen_classes, name, path,
                    names=None):
    """The test features over the head's decision regions (2-D features; 3-D ones are drawn
    in 3-D, wider ones on their principal axes, with no regions); for an angular head, their
    directions with the class weights' beside them (at 2-D and 3-D). The title begins with
    `name` and says what is drawn; `names`: the class names. Returns the figure."""
    width = features.shape[1]
    panels = 2 if head.angular and width <= 3 else 1
    fig = panel_figure(panels)
    ax = draw_embedding(fig, (1, panels, 1), features, labels, centers, unseen_classes, names)
    if width == 2:
        draw_decision_regions(ax, head.decision_weight(), classes, class_names=names)
    ax.set_title(f"{name}: test features" + (" and decision regions" if width == 2
                                             else shown_as(width)))
    if panels == 2:
        direction_ax = panel_axes(fig, (1, 2, 2), width == 3)
        (draw_directions_3d if width == 3 else draw_directions)(
            direction_ax, features, labels, head.class_directions(classes), unseen_classes, names)
        direction_ax.set_title(f"their directions and the class weights ({head.name})")
    save_figure(fig, path)
    return fig


def evaluate(model, head, test_loader, classes, unseen_classes, names=None):
    """All the metrics of a model with its head on `test_loader`, as a JSON-ready dict, the
    test features, and the per-class report as text, the classes named by `names`
    (default: their indices, MNIST's digits)."""
    features, log_probs, labels = embed(model, test_loader)
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
                                           unseen_classes))
    if not seen.any():  # a few test images, all of held-out classes: nothing was classified
        metrics["per_class"] = {}
        return metrics, features, "no test image of a trained class: no per-class report"
    report = classification_report(true_seen, predicted_seen, output_dict=True, **report_options)
    metrics["per_class"] = {name: report[name] for name in target_names}
    return metrics, features, classification_report(true_seen, predicted_seen, **report_options)


def plot_tsne(features, labels, unseen_classes, title, path, names=None, samples=2000, seed=0):
    """A t-SNE map (scikit-learn) of `samples` test features drawn at random (seeded), for
    features of any width: neighbours in the map are neighbours in the feature space."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(labels.numel(), generator=generator)[:samples]
    features = features.detach().float().cpu()[chosen].numpy()
    perplexity = min(30.0, (len(chosen) - 1) / 3)  # t-SNE needs more points than 3 perplexities
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    points = tsne.fit_transform(features)
    fig = panel_figure(1)
    ax = panel_axes(fig, (1, 1, 1))
    draw_features(ax, torch.from_numpy(points), labels.cpu()[chosen], None, unseen_classes, names)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title)
    save_figure(fig, path)
