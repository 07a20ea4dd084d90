"""Evaluate a checkpoint of the trainer on the MNIST test split.

Reports classification accuracy with a per-class report, and the retrieval quality of the
2-D features (Precision@1, R-Precision, MAP@R; "A Metric Learning Reality Check",
Musgrave et al. 2020; and re-identification's CMC rank-1, rank-5, rank-10 and mAP), overall and, for a model trained with held-out digits, among the
seen and among the unseen digits. Optionally writes the metrics as JSON and a plot of the
test features over the classifier's decision regions. The run.json of the run that wrote
the checkpoint gives the dataset folder and the held-out digits; flags given win.

    python evaluate.py outputs/model/epoch_100.pth --json eval.json --plot eval.png
"""
import argparse
import json
import math
import signal
import sys
from pathlib import Path

import cli

if __name__ == "__main__":  # before the slow imports: a Ctrl-C among them ends in one line
    cli.exit_on_signals("before the evaluation began; nothing was written")

import torch
from matplotlib.figure import Figure
from sklearn.metrics import classification_report

from checkpointing import CheckpointError, atomic_write, load_checkpoint, load_module_state, save_figure
from devices import pick_device
from errors import UserError
from metrics import embed, nearest_gallery, ranking_queries, split_retrieval_metrics
from mnist_loader import MNIST_MEAN, MNIST_STD, REPO_DIR, TensorLoader, digit_to_class, normalize, read_split
from mnist_net import Net
from plots import draw_decision_regions, draw_features, ranking_figure
from run_folder import check_image_format, find_run_file
from training_state import TRAINING_STATE_FORMAT, load_training_state


def read_checkpoint(path):
    """The model's state_dict, the centres (or None) and the held-out digits (or None) of
    a per-epoch `state_dict` file or of a training state; `CheckpointError` when it is
    none, or holds a tensor of the wrong shape, a value that is no tensor, or a weight
    that is NaN or infinite (such a model's metrics would mean nothing)."""
    content = load_checkpoint(path)
    centers = holdout = None
    if isinstance(content, dict) and content.get("format") == TRAINING_STATE_FORMAT:
        state = load_training_state(path)
        content, centers = state["modules"].get("model"), state["modules"].get("center_loss", {}).get("centers")
        holdout = state["args"].get("holdout_classes")
    if not isinstance(content, dict):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a model's state_dict")
    expected = set(Net().state_dict())
    if set(content) != expected:
        missing, unexpected = sorted(expected - set(content)), sorted(set(content) - expected)
        raise CheckpointError(f"{path} is not a checkpoint of this project's Net "
                              f"(missing {', '.join(missing[:4]) or 'nothing'}{', ...' if len(missing) > 4 else ''}; "
                              f"unexpected {', '.join(map(str, unexpected[:4])) or 'nothing'})")
    for name, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    classifier = content["ip2.weight"]
    model = Net(num_classes=classifier.shape[0] if classifier.dim() == 2 else 10)
    load_module_state(model, content, f"model in {path}")
    for name, value in [*content.items(), ("centres", centers if centers is not None else torch.zeros(()))]:
        if not value.isfinite().all():
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values; a model trained into them "
                                  f"gives no meaningful metrics")
    return model, centers, holdout


def json_ready(metrics):
    """`metrics` with every undefined (NaN) figure as null, its reason under "undefined":
    JSON has no NaN."""
    ready = {key: value for key, value in metrics.items()}
    undefined = [key for key, value in metrics.items() if isinstance(value, float) and not math.isfinite(value)]
    for key in undefined:
        ready[key] = None
    if undefined:
        ready["undefined"] = {key: "no test image of these digits has another of its digit to retrieve"
                              for key in undefined}
    return ready


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Evaluate a trained checkpoint: accuracy, per-class report, retrieval metrics "
                    "(Precision@1, R-Precision, MAP@R) and a feature plot with decision regions.",
        formatter_class=cli.HelpFormatter)
    parser.add_argument("checkpoint", help="a per-epoch .pth (state_dict) or training-state file of the trainer")
    parser.add_argument("--dataset_dir", default=None,
                        help="MNIST folder, as for the trainer; default: the run's, from its run.json, "
                             f"else {REPO_DIR / 'datasets'}")
    parser.add_argument("--max_test_samples", type=int, default=None,
                        help="use only the first N test images; default: all")
    parser.add_argument("--holdout_classes", type=int, nargs="*", default=None, metavar="DIGIT",
                        help="digits held out in training; default: the run's, from its run.json or "
                             "training state, else none")
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file; default: none")
    parser.add_argument("--plot", default=None, help="write the test-feature plot to this PNG; default: none")
    parser.add_argument("--ranking", default=None,
                        help="write a picture of retrieval to this PNG: for a few queries (--ranking_per_class of "
                             "each class, the held-out ones first), the query and its ten nearest test images, "
                             "framed green when of its class, red otherwise; default: none")
    parser.add_argument("--ranking_per_class", type=int, default=2, help="queries of each class in --ranking")
    parser.add_argument("--device", default="auto",
                        help="where to evaluate: auto (the current accelerator, else the CPU) or a PyTorch "
                             "device name (cpu, cuda, cuda:1, mps)")
    parser.add_argument("--batch_size", type=int, default=1024, help="evaluation batch size")
    args = parser.parse_args(argv)
    if args.max_test_samples is not None and args.max_test_samples < 1:
        raise UserError(f"--max_test_samples must be at least 1, got {args.max_test_samples}")
    for name in ("batch_size", "ranking_per_class"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def plot_evaluation(features, digits, classifier_weight, class_digits, centers, unseen_digits, title, path):
    fig = Figure(figsize=(8, 7), dpi=100)
    fig.subplots_adjust(left=0.1, right=0.8)
    ax = fig.add_subplot()
    draw_features(ax, features, digits, centers, unseen_digits)
    draw_decision_regions(ax, classifier_weight, class_digits)
    ax.set_title(title)
    save_figure(fig, path)


def evaluate(model, test_loader, class_digits, unseen_digits):
    """All the metrics of a model on `test_loader`, as a JSON-ready dict."""
    features, log_probs, digits = embed(model, test_loader)
    seen = digit_to_class(class_digits, digits.device)[digits] >= 0
    predicted_digits = torch.tensor(class_digits, device=digits.device)[log_probs.argmax(1)]
    true_seen, predicted_seen = digits[seen].cpu().numpy(), predicted_digits[seen].cpu().numpy()
    report_options = dict(labels=class_digits, target_names=[str(d) for d in class_digits], digits=4,
                          zero_division=0)
    report = classification_report(true_seen, predicted_seen, output_dict=True, **report_options)
    report_text = classification_report(true_seen, predicted_seen, **report_options)
    metrics = {"accuracy": float((true_seen == predicted_seen).mean()),
               "num_test_images": int(digits.numel())}
    metrics.update(split_retrieval_metrics(features, digits, unseen_digits))
    metrics["per_class"] = {name: report[name] for name in map(str, class_digits)}
    return metrics, features, report_text


def main(argv=None):
    """Evaluate a checkpoint; returns its metrics (the JSON's content)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here a Ctrl-C is caught below
    try:
        args = parse_args(argv)
        for flag, path in (("--plot", args.plot), ("--ranking", args.ranking)):
            if path:
                check_image_format(flag, path)
        model, centers, stored_holdout = read_checkpoint(args.checkpoint)
        run = find_run_file(args.checkpoint) or {}
        num_classes = model.ip2.weight.shape[0]
        holdout = args.holdout_classes if args.holdout_classes is not None else run.get("holdout_classes",
                                                                                          stored_holdout)
        holdout = sorted(set(holdout or []))
        if any(not 0 <= digit <= 9 for digit in holdout):
            raise UserError(f"--holdout_classes takes digits 0-9, got {holdout}")
        class_digits = [digit for digit in range(10) if digit not in holdout]
        if len(class_digits) != num_classes:
            raise UserError(f"the checkpoint classifies {num_classes} digits, but {len(class_digits)} remain after "
                            f"holding out {holdout}; pass --holdout_classes with the {10 - num_classes} digits "
                            f"held out in training")
        device = pick_device(args.device)
        dataset_dir = args.dataset_dir or run.get("dataset_dir") or str(REPO_DIR / "datasets")
        images, digits = read_split(dataset_dir, train=False, limit=args.max_test_samples)
        test_loader = TensorLoader(normalize(images, device), digits.to(device), args.batch_size)
        model = model.to(device)

        metrics, features, report_text = evaluate(model, test_loader, class_digits, holdout)
        metrics["checkpoint"] = str(args.checkpoint)
        print(f"Checkpoint {args.checkpoint}: {metrics['num_test_images']} test images"
              + (f", digits {holdout} held out in training" if holdout else ""))
        print(report_text)
        print(f"accuracy: {metrics['accuracy']:.4f}")
        for prefix, label in (("", "all test digits"), ("seen_", "seen digits"), ("unseen_", "unseen digits")):
            if prefix + "map_at_r" in metrics:
                print(f"retrieval, {label}: Precision@1 {metrics[prefix + 'precision_at_1']:.4f}, "
                      f"R-Precision {metrics[prefix + 'r_precision']:.4f}, MAP@R {metrics[prefix + 'map_at_r']:.4f}; "
                      f"re-ID: rank-1 {metrics[prefix + 'rank_1']:.4f}, rank-5 {metrics[prefix + 'rank_5']:.4f}, "
                      f"rank-10 {metrics[prefix + 'rank_10']:.4f}, mAP {metrics[prefix + 'mean_average_precision']:.4f}")
        if args.json:
            atomic_write(args.json, json.dumps(json_ready(metrics), indent=2, allow_nan=False).encode())
            print(f"Wrote {args.json}")
        if args.plot:
            plot_evaluation(features, test_loader.labels, model.ip2.weight.detach(), class_digits, centers, holdout,
                            f"{Path(args.checkpoint).name}: test features and decision regions", args.plot)
            print(f"Wrote {args.plot}")
        if args.ranking:
            queries = ranking_queries(test_loader.labels, args.ranking_per_class, holdout)
            fig = ranking_figure(test_loader.images[:, 0].cpu() * MNIST_STD + MNIST_MEAN, test_loader.labels, queries,
                                 nearest_gallery(features, queries),
                                 [f"{digit} (unseen)" if digit in holdout else str(digit) for digit in range(10)])
            save_figure(fig, args.ranking)
            print(f"Wrote {args.ranking}")
        return metrics
    except UserError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("Stopped by SIGINT (Ctrl-C); every file is either whole or as it was before")


if __name__ == "__main__":
    main(sys.argv[1:])
