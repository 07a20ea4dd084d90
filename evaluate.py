"""Evaluate a checkpoint of the trainer on the MNIST test split.

Reports classification accuracy with a per-class report, and the retrieval quality of the
2-D features (Precision@1, R-Precision, MAP@R; "A Metric Learning Reality Check",
Musgrave et al. 2020), overall and, for a model trained with held-out digits, among the
seen and among the unseen digits. Optionally writes the figures as JSON and a plot of the
test features over the classifier's decision regions.

    python evaluate.py outputs/model/epoch_100.pth --dataset_dir datasets --json eval.json --plot eval.png
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure
from sklearn.metrics import classification_report

from checkpointing import (TRAINING_STATE_FORMAT, CheckpointError, WriteError, atomic_write, load_checkpoint,
                           load_training_state, save_figure)
from metrics import split_retrieval_metrics
from mnist_loader import DatasetError, TensorLoader, normalize, read_split
from mnist_net import Net
from plots import draw_decision_regions, draw_features
from train_mnist_original_center import REPO_DIR, HelpFormatter, digit_to_class, embed, fail, pick_device


def read_checkpoint(path):
    """The model's state_dict, the centres (or None) and the held-out digits (or None) of
    a per-epoch `state_dict` file or of a training state; `CheckpointError` otherwise."""
    content = load_checkpoint(path)
    if isinstance(content, dict) and content.get("format") == TRAINING_STATE_FORMAT:
        content = load_training_state(path)
        modules = content["modules"]
        return modules["model"], modules["center_loss"]["centers"], content["args"].get("holdout_classes")
    if not isinstance(content, dict):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a model's state_dict")
    expected = set(Net().state_dict())
    if set(content) != expected:
        missing, unexpected = sorted(expected - set(content)), sorted(set(content) - expected)
        raise CheckpointError(f"{path} is not a checkpoint of this project's Net "
                              f"(missing {', '.join(missing[:4]) or 'nothing'}{', ...' if len(missing) > 4 else ''}; "
                              f"unexpected {', '.join(map(str, unexpected[:4])) or 'nothing'})")
    return content, None, None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Evaluate a trained checkpoint: accuracy, per-class report, retrieval metrics "
                    "(Precision@1, R-Precision, MAP@R) and a feature plot with decision regions.",
        formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", help="a per-epoch .pth (state_dict) or training-state file of the trainer")
    parser.add_argument("--dataset_dir", default=str(REPO_DIR / "datasets"),
                        help="MNIST folder, as for the trainer")
    parser.add_argument("--max_test_samples", type=int, default=None,
                        help="use only the first N test images; default: all")
    parser.add_argument("--holdout_classes", type=int, nargs="*", default=None, metavar="DIGIT",
                        help="digits held out in training; read from a training-state file, "
                             "needed for a state_dict trained with held-out digits; default: none")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file; default: none")
    parser.add_argument("--plot", default=None, help="write the test-feature plot to this PNG; default: none")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to evaluate; auto takes CUDA when available")
    parser.add_argument("--batch_size", type=int, default=1024, help="evaluation batch size")
    args = parser.parse_args(argv)
    if args.max_test_samples is not None and args.max_test_samples < 1:
        fail(f"--max_test_samples must be at least 1, got {args.max_test_samples}")
    if args.batch_size < 1:
        fail(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for, but CUDA is not available here (use --device cpu)")
    return args


def plot_evaluation(features, digits, classifier_weight, class_digits, centers, unseen_digits, title, path):
    fig = Figure(figsize=(8, 7), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.8)
    ax = fig.add_subplot()
    draw_features(ax, features, digits, centers, unseen_digits=unseen_digits)
    draw_decision_regions(ax, classifier_weight, class_digits)
    ax.set_title(title)
    save_figure(fig, path)


def evaluate(model, test_loader, class_digits, unseen_digits):
    """All the figures of a model on `test_loader`, as a JSON-ready dict."""
    features, log_probs, digits = embed(model, test_loader)
    seen = digit_to_class(class_digits, digits.device)[digits] >= 0
    predicted_digits = torch.tensor(class_digits, device=digits.device)[log_probs.argmax(1)]
    true_seen, predicted_seen = digits[seen].cpu().numpy(), predicted_digits[seen].cpu().numpy()
    report_options = dict(labels=class_digits, target_names=[str(d) for d in class_digits], digits=4,
                          zero_division=0)
    report = classification_report(true_seen, predicted_seen, output_dict=True, **report_options)
    report_text = classification_report(true_seen, predicted_seen, **report_options)
    figures = {"accuracy": float((true_seen == predicted_seen).mean()),
               "num_test_images": int(digits.numel())}
    figures.update(split_retrieval_metrics(features, digits, unseen_digits))
    figures["per_class"] = {name: report[name] for name in map(str, class_digits)}
    return figures, features, report_text


def main(argv=None):
    args = parse_args(argv)
    try:
        state, centers, stored_holdout = read_checkpoint(args.checkpoint)
    except CheckpointError as error:
        fail(str(error))
    num_classes = state["ip2.weight"].shape[0]
    holdout = sorted(set(args.holdout_classes if args.holdout_classes is not None else stored_holdout or []))
    class_digits = [digit for digit in range(10) if digit not in holdout]
    if len(class_digits) != num_classes:
        fail(f"the checkpoint classifies {num_classes} digits, but {len(class_digits)} remain after holding out "
             f"{holdout}; pass --holdout_classes with the {10 - num_classes} digits held out in training")
    device = pick_device(args.device)
    try:
        images, digits = read_split(args.dataset_dir, train=False, limit=args.max_test_samples)
    except DatasetError as error:
        fail(str(error))
    test_loader = TensorLoader(normalize(images, device), digits.to(device), args.batch_size)
    model = Net(num_classes=num_classes).to(device)
    model.load_state_dict(state)

    figures, features, report_text = evaluate(model, test_loader, class_digits, holdout)
    figures["checkpoint"] = str(args.checkpoint)
    print(f"Checkpoint {args.checkpoint}: {figures['num_test_images']} test images"
          + (f", digits {holdout} held out in training" if holdout else ""))
    print(report_text)
    print(f"accuracy: {figures['accuracy']:.4f}")
    for prefix, label in (("", "all test digits"), ("seen_", "seen digits"), ("unseen_", "unseen digits")):
        if prefix + "map_at_r" in figures:
            print(f"retrieval, {label}: Precision@1 {figures[prefix + 'precision_at_1']:.4f}, "
                  f"R-Precision {figures[prefix + 'r_precision']:.4f}, MAP@R {figures[prefix + 'map_at_r']:.4f}")
    try:
        if args.json:
            atomic_write(args.json, json.dumps(figures, indent=2).encode())
            print(f"Wrote {args.json}")
        if args.plot:
            plot_evaluation(features, test_loader.labels, state["ip2.weight"], class_digits, centers, holdout,
                            f"{Path(args.checkpoint).name}: test features and decision regions", args.plot)
            print(f"Wrote {args.plot}")
    except WriteError as error:
        fail(str(error))


if __name__ == "__main__":
    main(sys.argv[1:])
