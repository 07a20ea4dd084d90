"""Compare runs side by side: one figure with a panel of test features per run, and a
Markdown table of their figures.

Each RUN_DIR is a trainer's --out_dir: its run.json gives the loss (the head and the
weights of its parts), the feature's width, the held-out classes and the dataset, and its
last per-epoch checkpoint (or that of --epoch) is evaluated on the run's own test images
(its trainer's --max_test_samples, unless --max_test_samples is given: the same for every
run, or nothing is compared). The median seconds per epoch come from the run's
history.csv. A run whose head was weighed 0 (the triplet loss alone) has no accuracy: its
classifier was never trained.

    python compare.py outputs/softmax outputs/arcface --out compare.png --markdown compare.md
"""
import csv
import math
import statistics
import sys
from pathlib import Path

from run_machinery import cli


def build_parser():
    parser = cli.command_parser(__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="the runs' folders (the trainer's --out_dir)")
    parser.add_argument("--out", default="compare.png", help="the figure, a panel per run")
    parser.add_argument("--epoch", type=int, default=None,
                        help="compare every run at this epoch; default: each run's last checkpoint")
    parser.add_argument("--markdown", default=None,
                        help="also write the table of figures to this file; default: none")
    cli.add_test_split_flag(parser)
    cli.add_device_flag(parser)
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "the comparison began")

import torch

from mnist_loader import DATASETS

from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.checkpointing import atomic_write, save_figure
from run_machinery.devices import pick_device
from run_machinery.errors import UserError
from run_machinery.evaluation import evaluate
from run_machinery.output_paths import check_outputs
from run_machinery.plots import draw_decision_regions, draw_embedding, panel_figure
from run_machinery.run_file import read_run_file
from run_machinery.run_folder import check_image_format

PANELS_PER_ROW = 3  # more runs wrap onto further rows
COLUMNS = (("accuracy", "test accuracy", ".4f"), ("precision_at_1", "Precision@1", ".4f"),
           ("r_precision", "R-Precision", ".4f"), ("map_at_r", "MAP@R", ".4f"),
           ("rank_1", "rank-1", ".4f"),
           ("mean_average_precision", "mAP", ".4f"), ("unseen_map_at_r", "unseen MAP@R", ".4f"),
           ("unseen_rank_1", "unseen rank-1", ".4f"),
           ("unseen_mean_average_precision", "unseen mAP", ".4f"),
           ("seconds_per_epoch", "s/epoch", ".1f"))


def run_checkpoint(run_dir, epoch=None):
    """The run's RunRecord and the epoch to compare: `epoch`, or else the last one with a
    checkpoint; UserError when it is no run or lacks that checkpoint."""
    run = read_run_file(run_dir)
    if run is None:
        raise UserError(f"{run_dir} is not a run's folder: it has no run.json "
                        "(give a trainer's --out_dir)")
    paths = run.paths  # the run's folder as it is now, not the one it was written in
    if epoch is not None:
        if not paths.model(epoch).is_file():
            raise UserError(f"{run_dir} has no checkpoint of epoch {epoch} ({paths.model(epoch)})")
        return run, epoch
    for last in range(run.epochs, 0, -1):
        if paths.model(last).is_file():
            return run, last
    raise UserError(f"{run_dir} has no per-epoch checkpoint yet "
                    f"({paths.model_path_temp.format('NNN')})")


def same_test_split(loader, other):
    """Whether two test loaders hold the same images (their pixel values, whatever their
    normalisation), with the same labels and class names."""
    return (loader.class_names == other.class_names
            and torch.equal(loader.labels.cpu(), other.labels.cpu())
            and torch.allclose(loader.pixels(loader.images).cpu(),
                               other.pixels(other.images).cpu(), atol=1e-4))  # 1/255 apart


def median_epoch_seconds(history_path, epoch):
    """The median of the run's seconds per epoch up to `epoch` (training, test and metrics),
    or None without a history: the median leaves out a first epoch's warm-up and pauses."""
    if not history_path.is_file():
        return None
    seconds = []
    with open(history_path, newline="") as file:
        rows = csv.DictReader(file)
        for row in rows:
            where = f"{history_path}, line {rows.line_num}"
            if history_value(row, "epoch", int, where) <= epoch:
                seconds.append(history_value(row, "seconds", float, where))
    return statistics.median(seconds) if seconds else None


def history_value(row, column, kind, where):
    """The `column` of a history.csv `row` as an int or a float (`kind`); UserError naming
    the file and line (`where`) when it is missing or no such number."""
    if row.get(column) is None:
        raise UserError(f"{where}: {column} is missing")
    try:
        return kind(row[column])
    except ValueError:
        raise UserError(f"{where}: {column} {row[column]!r} is not "
                        f"{'a whole number' if kind is int else 'a number'}") from None


def loss_description(run):
    """The total loss of `run` (a RunRecord) in words, each part with its weight: "softmax +
    1 center", "1 triplet", "arcface + 0.0005 center + 1 triplet" (runs made before a part
    existed lack its setting: their weight is the default)."""
    head_weight = run.softmax_weight
    parts = [] if head_weight == 0 else [
        ("" if head_weight == 1 else f"{head_weight:g} ") + run.head]
    for weight, name in ((run.loss_weight, "center"), (run.triplet_weight, "triplet")):
        if weight:
            parts.append(f"{weight:g} {name}")
    return " + ".join(parts)


def run_names(run_dirs):
    """The name of each run in the figure and the table: its folder's name, with as many of
    the folders above it as tell it from the other runs (a folder given twice: one name)."""
    paths = [Path(run_dir).resolve().parts for run_dir in run_dirs]
    names = []
    for path in paths:
        depth = 1
        while any(other != path and other[-depth:] == path[-depth:] for other in paths):
            depth += 1
        names.append(str(Path(*path[-depth:])))
    return names


def panel_title(name, metrics):
    """A panel's title: the run's name and recipe, then its figures."""
    accuracy = "-" if metrics["accuracy"] is None else f"{metrics['accuracy']:.4f}"
    return (f"{name}: {metrics['loss']}, {metrics['feat_dim']}-D, epoch {metrics['epoch']}\n"
            f"accuracy {accuracy}, MAP@R {metrics['map_at_r']:.4f}")


def draw_panel(fig, position, name, metrics, features, labels, checkpoint):
    """The panel of one run (`name`, its `metrics` and its test `features` with their
    `labels`, of its `checkpoint`) at `position` of a panel_figure: the features drawn as
    evaluate.py draws them, over the decision regions at 2-D, titled by `panel_title`.
    Returns the axes."""
    ax = draw_embedding(fig, position, features, labels, checkpoint.centers,
                        checkpoint.holdout_classes,
                        checkpoint.class_names)
    # the regions of a wider feature have no picture; an untrained head's, no meaning
    if features.shape[1] == 2 and metrics["accuracy"] is not None:
        draw_decision_regions(ax, checkpoint.head.decision_weight(), checkpoint.classes,
                              class_names=checkpoint.class_names)
    ax.set_title(panel_title(name, metrics), fontsize=10)
    return ax


def markdown_table(names, results):
    """The table of figures, a row per run; a column only where some run has its figure
    (unseen figures: a run held classes out; s/epoch: a run has its history.csv)."""
    columns = [column for column in COLUMNS
               if any(metrics.get(column[0]) is not None for metrics in results)]
    lines = ["| run | loss | dim | epoch | "
             + " | ".join(label for _, label, _ in columns) + " |",
             "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in columns) + " |"]
    for name, metrics in zip(names, results):
        figures = ["-" if metrics.get(key) is None else format(metrics[key], spec)
                   for key, _, spec in columns]
        lines.append(f"| {name} | {metrics['loss']} | {metrics['feat_dim']} | "
                     f"{metrics['epoch']} | " + " | ".join(figures) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Compare the runs; returns one dict of figures per run, in order."""
    with cli.one_line_errors():
        args = build_parser().parse_args(argv)
        check_image_format("--out", args.out)
        device = pick_device(args.device)
        runs = [run_checkpoint(run_dir, args.epoch) for run_dir in args.run_dirs]
        checkpoints = [open_checkpoint(run.paths.model(epoch)) for run, epoch in runs]
        for checkpoint in checkpoints:
            check_outputs([("--out", args.out), ("--markdown", args.markdown)],
                          [run.paths.model(epoch) for run, epoch in runs], checkpoint.dataset,
                          checkpoint.dataset_dir)
        columns = min(len(runs), PANELS_PER_ROW)
        rows = math.ceil(len(runs) / columns)
        fig = panel_figure(columns, rows)
        names = run_names(args.run_dirs)
        results, first_split = [], None
        for index, (run_dir, name, (run, epoch), checkpoint) in enumerate(
                zip(args.run_dirs, names, runs, checkpoints)):
            if results and checkpoint.dataset != results[0]["dataset"]:
                raise UserError(f"{run_dir} was trained on {DATASETS[checkpoint.dataset].title}, "
                                f"{args.run_dirs[0]} on {DATASETS[results[0]['dataset']].title}; "
                                "compare runs on the same test split")
            test_loader = checkpoint.test_split(device, args.max_test_samples)
            if first_split is None:
                first_split = test_loader
            if not same_test_split(test_loader, first_split):
                raise UserError(f"{run_dir} was tested on other images than {args.run_dirs[0]} "
                                f"({test_loader.num_samples} against {first_split.num_samples} "
                                "test images, or other pixels, labels or class names); compare "
                                "runs on the same test split")
            test_labels = test_loader.labels.cpu()
            metrics, features, _ = evaluate(checkpoint.model_on(device), checkpoint.head,
                                            test_loader, checkpoint.classes,
                                            checkpoint.holdout_classes,
                                            checkpoint.class_names,
                                            checkpoint.tests_in_bf16(device))
            trained_head = run.softmax_weight > 0
            metrics.update(run=str(run_dir), head=checkpoint.head.name,
                           loss=loss_description(run), feat_dim=features.shape[1],
                           loss_weight=run.loss_weight,
                           epoch=epoch, dataset=checkpoint.dataset,
                           seconds_per_epoch=median_epoch_seconds(run.paths.history, epoch))
            if not trained_head:
                metrics["accuracy"] = None
            results.append(metrics)
            draw_panel(fig, (rows, columns, index + 1), name, metrics, features, test_labels,
                       checkpoint)
        save_figure(fig, args.out)
        table = markdown_table(names, results)
        print(table, end="")
        print(f"Wrote {cli.printable(args.out)}")
        if args.markdown:
            atomic_write(args.markdown, table.encode())
            print(f"Wrote {cli.printable(args.markdown)}")
        return results


if __name__ == "__main__":
    main(sys.argv[1:])
