"""Evaluate a checkpoint of the trainer on the test split of its dataset (MNIST,
Fashion-MNIST, Kuzushiji-MNIST or a folder of images).

Reports classification accuracy with a per-class report, and the retrieval quality of the
2-D features (Precision@1, R-Precision, MAP@R; "A Metric Learning Reality Check",
Musgrave et al. 2020; and re-identification's CMC rank-1, rank-5, rank-10 and mAP),
overall and, for a model trained with held-out classes, among the seen and among the
unseen classes. Optionally writes the metrics as JSON and a plot of the
test features over the classifier's decision regions. The run.json of the run that wrote
the checkpoint gives the dataset and its folder, the test images (the first
--max_test_samples the run tested on: its figures are those of its training log), the
held-out classes and the head (an angular head predicts the class of the largest cosine),
and the class names and the normalisation (a folder dataset's own); flags given win.
With --verification or --calibrate: the verification figures over all pairs of test images
(ROC, AUC, EER, TAR at FAR 1e-1 to 1e-4) and a threshold calibrated at --far on training
images of the trained classes, measured on the test split and recorded beside the checkpoint.

    python evaluate.py outputs/model/epoch_100.pth --json eval.json --plot eval.png
    python evaluate.py outputs/model/epoch_100.pth --verification roc.png --far 1e-3
"""
import json
import sys
from pathlib import Path

from run_machinery import cli

DEFAULT_FAR, VALIDATION_IMAGES = cli.source_constants("run_machinery.verification", "DEFAULT_FAR",
                                                      "VALIDATION_IMAGES")


def build_parser():
    parser = cli.command_parser(
        "Evaluate a trained checkpoint: accuracy, per-class report, retrieval metrics "
        "(Precision@1, R-Precision, MAP@R) and a feature plot with decision regions.")
    cli.add_checkpoint_argument(parser, shipped_by_default=True)
    cli.add_run_flags(parser)
    cli.add_test_split_flag(parser)
    parser.add_argument("--json", default=None,
                        help="also write the metrics to this JSON file; default: none")
    parser.add_argument("--plot", default=None,
                        help="write the test-feature plot to this PNG; default: none")
    parser.add_argument("--tsne", default=None, metavar="PNG",
                        help="write a t-SNE map of 2,000 test features drawn at random (seeded) to "
                             "this PNG: a picture of features of any width; default: none")
    parser.add_argument("--ranking", default=None,
                        help="write a picture of retrieval to this PNG: for a few queries "
                             "(--ranking_per_class of each class, the held-out ones first), the "
                             "query and its ten nearest test images, framed green when of its "
                             "class, red otherwise; default: none")
    parser.add_argument("--ranking_per_class", type=int, default=2,
                        help="queries of each class in --ranking")
    parser.add_argument("--verification", default=None, metavar="PNG",
                        help="verification over all pairs of test images (same class or not, by "
                             "distance): ROC, AUC, EER, TAR at FAR 1e-1 to 1e-4, and a threshold "
                             "calibrated at --far (as --calibrate does); and the picture of the "
                             "ROC and of the distances to this PNG; default: none")
    parser.add_argument("--calibrate", action="store_true",
                        help="the verification figures and a threshold at --far, calibrated on "
                             "--validation_images training images of the trained classes, "
                             "measured on the test split and recorded beside the checkpoint "
                             "(CHECKPOINT.verification.json)")
    parser.add_argument("--far", type=float, default=DEFAULT_FAR,
                        help="the false accept rate the threshold is calibrated at")
    parser.add_argument("--validation_images", type=int, default=VALIDATION_IMAGES,
                        help="training images of the trained classes (drawn at random, seeded) "
                             "the threshold is calibrated on")
    cli.add_device_flag(parser)
    parser.add_argument("--batch_size", type=int, default=1024, help="evaluation batch size")
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "the evaluation began")

from mnist_loader import DATASETS

from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.checkpointing import atomic_write, save_figure
from run_machinery.devices import pick_device
from run_machinery.embedding import embed
from run_machinery.errors import UserError
from run_machinery.evaluation import (
    evaluate,
    json_ready,
    plot_evaluation,
    plot_tsne,
    plot_verification,
)
from run_machinery.metrics import nearest_gallery, ranking_queries
from run_machinery.output_paths import check_outputs
from run_machinery.plots import ranking_figure
from run_machinery.run_folder import check_image_format
from run_machinery.verification import (
    FARS,
    SEED,
    PairHistogram,
    calibrate,
    check_far,
    distance_name,
    record_threshold,
    verification_figures,
)


def parse_args(argv=None):
    """The command line's settings, their ranges checked."""
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "ranking_per_class", "validation_images"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    check_far(args.far)
    return args


def verify(args, checkpoint, model, features, labels, device):
    """The verification figures of the test `features`, the threshold calibrated at
    --far on a validation split of training images, measured on them; recorded beside the
    checkpoint. A JSON-ready dict."""
    head = checkpoint.head
    validation = checkpoint.validation_split(device, args.validation_images, SEED,
                                             args.batch_size)
    validation_features, _, validation_labels = embed(model, validation,
                                                      checkpoint.tests_in_bf16(device))
    threshold = calibrate(PairHistogram(head.retrieval_features(validation_features),
                                        validation_labels), args.far)
    histogram = PairHistogram(head.retrieval_features(features), labels)
    figures = verification_figures(histogram, FARS, threshold["threshold"])
    figures = {"distance": distance_name(head), **figures, "calibrated": threshold}
    record = record_threshold(args.checkpoint, {"checkpoint": Path(args.checkpoint).name,
                                                "distance": figures["distance"],
                                                "validation_seed": SEED,
                                                "calibrated": threshold,
                                                "test": figures["at_threshold"]})
    print_verification(figures)
    print(f"Recorded the threshold in {cli.printable(record)}")
    if args.verification:
        plot_verification(histogram, figures, Path(args.checkpoint).name, args.verification)
        print(f"Wrote {cli.printable(args.verification)}")
    return figures


def print_verification(figures):
    """The verification figures' lines."""
    sample = (f" drawn at random from {figures['sampled_from']}" if figures["sampled_from"]
              else "")
    print(f"verification ({figures['distance']} distance), all pairs of {figures['num_images']} "
          f"test images{sample}: {figures['genuine_pairs']} genuine, "
          f"{figures['impostor_pairs']} impostor: AUC {figures['auc']:.6f} "
          f"(within {figures['auc_resolution']:.1e}), EER {figures['eer']:.4f}")
    print("TAR at FAR: " + ", ".join(
        f"{entry['tar']:.4f} at {entry['far']:g}" if entry["tar"] is not None
        else f"none at {entry['far']:g} ({entry['undefined']})"
        for entry in figures["tar_at_far"]))
    calibrated, test = figures["calibrated"], figures["at_threshold"]
    # An angular head's distance is between unit-length features: d^2 = 2 - 2 cos.
    cosine = (f" (cosine > {1 - calibrated['threshold'] ** 2 / 2:.6g})"
              if figures["distance"] == "cosine" else "")
    print(f"threshold at FAR {calibrated['far']:g}, calibrated on {calibrated['num_images']} "
          f"training images of the trained classes ({calibrated['impostor_pairs']} impostor "
          f"pairs): distance < {calibrated['threshold']:.6g}{cosine} (TAR "
          f"{calibrated['tar']:.4f}, FAR "
          f"{calibrated['reached_far']:.2e} there); on the test split: TAR {test['tar']:.4f}, "
          f"FAR {test['reached_far']:.2e}")


def main(argv=None):
    """Evaluate a checkpoint; returns its metrics (the JSON's content)."""
    with cli.one_line_errors():
        args = parse_args(argv)
        pictures = (("--plot", args.plot), ("--tsne", args.tsne), ("--ranking", args.ranking),
                    ("--verification", args.verification))
        for flag, path in pictures:
            if path:
                check_image_format(flag, path)
        checkpoint = open_checkpoint(args.checkpoint, args.holdout_classes, args.head, args.dataset,
                                     args.dataset_dir)
        check_outputs([("--json", args.json), *pictures], [args.checkpoint], checkpoint.dataset,
                      checkpoint.dataset_dir)
        holdout_classes, classes, names = (checkpoint.holdout_classes, checkpoint.classes,
                                           checkpoint.class_names)
        device = pick_device(args.device)
        test_loader = checkpoint.test_split(device, args.max_test_samples, args.batch_size)
        model = checkpoint.model_on(device)

        metrics, features, report_text = evaluate(model, checkpoint.head, test_loader, classes,
                                                  holdout_classes, names,
                                                  checkpoint.tests_in_bf16(device))
        metrics.update(checkpoint=str(args.checkpoint), head=checkpoint.head.name,
                       dataset=checkpoint.dataset, class_names=names,
                       holdout_classes=holdout_classes)
        print(f"Checkpoint {cli.printable(args.checkpoint)}: {metrics['num_test_images']} test images of "
              f"{DATASETS[checkpoint.dataset].title}"
              + (" (the run's own, as in its training log; --max_test_samples all: every one)"
                 if args.max_test_samples is None and checkpoint.run_test_images else "")
              + (f", classes {holdout_classes} "
                 f"({', '.join(names[index] for index in holdout_classes)}) held out in training"
                 if holdout_classes else "")
              + (f", {checkpoint.head.name} head (prediction: the largest cosine)"
                 if checkpoint.head.angular else ""))
        print(report_text)
        untrained = checkpoint.run is not None and checkpoint.run.softmax_weight == 0
        print(f"accuracy: {metrics['accuracy']:.4f}"
              + (" (of a classifier never trained: the run weighed its head 0)" if untrained
                 else ""))
        for prefix, label in (("", "all test images"), ("seen_", "seen classes"),
                              ("unseen_", "unseen classes")):
            if prefix + "map_at_r" in metrics:
                print(f"retrieval, {label}: Precision@1 {metrics[prefix + 'precision_at_1']:.4f}, "
                      f"R-Precision {metrics[prefix + 'r_precision']:.4f}, "
                      f"MAP@R {metrics[prefix + 'map_at_r']:.4f}; "
                      f"re-ID: rank-1 {metrics[prefix + 'rank_1']:.4f}, "
                      f"rank-5 {metrics[prefix + 'rank_5']:.4f}, "
                      f"rank-10 {metrics[prefix + 'rank_10']:.4f}, "
                      f"mAP {metrics[prefix + 'mean_average_precision']:.4f}")
        if args.verification or args.calibrate:
            metrics["verification"] = verify(args, checkpoint, model, features,
                                             test_loader.labels, device)
        if args.json:
            atomic_write(args.json,
                         json.dumps(json_ready(metrics), indent=2, allow_nan=False).encode())
            print(f"Wrote {cli.printable(args.json)}")
        if args.plot:
            plot_evaluation(features, test_loader.labels, checkpoint.head, classes,
                            checkpoint.centers, holdout_classes,
                            Path(args.checkpoint).name, args.plot, names)
            print(f"Wrote {cli.printable(args.plot)}")
        if args.tsne:
            plot_tsne(checkpoint.head.retrieval_features(features), test_loader.labels,
                      holdout_classes,
                      f"{Path(args.checkpoint).name}: t-SNE of test features "
                      f"({features.shape[1]}-D)", args.tsne, names)
            print(f"Wrote {cli.printable(args.tsne)}")
        if args.ranking:
            queries = ranking_queries(test_loader.labels, args.ranking_per_class, holdout_classes)
            fig = ranking_figure(test_loader.pixels(test_loader.images[:, 0].cpu()),
                                 test_loader.labels, queries,
                                 nearest_gallery(checkpoint.head.retrieval_features(features),
                                                 queries),
                                 [f"{name} (unseen)" if index in holdout_classes else name
                                  for index, name in enumerate(names)])
            save_figure(fig, args.ranking)
            print(f"Wrote {cli.printable(args.ranking)}")
        return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
