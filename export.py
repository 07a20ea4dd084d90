"""Export a checkpoint of the trainer to ONNX, to run without PyTorch (onnxruntime and numpy).

The file takes a batch of any size of normalised images, (N, 1, 28, 28) float32, and gives
the feature ip1 and the log-probabilities, as the Net does. Its metadata holds the mean and
standard deviation that normalise its input (the run's, as the trainer used them), the
names of its classes, the head, the feature width and the held-out classes. Before the file
is put in place, onnxruntime runs it on test images of the run's dataset, in two batch
sizes, and it is kept only if its outputs differ from PyTorch's by at most 1e-4 relative.
The run.json of the run that wrote the checkpoint gives the dataset and its folder, the
held-out classes and the head; flags given win. See docs/export-onnx.md.

    python export.py outputs/model/epoch_100.pth --onnx model.onnx
"""
import sys

from run_machinery import cli


def build_parser():
    parser = cli.command_parser(
        "Export a trained checkpoint to ONNX, with the run's normalisation and class names as "
        "metadata, checked against PyTorch with onnxruntime.")
    cli.add_checkpoint_argument(parser, shipped_by_default=True)
    parser.add_argument("--onnx", required=True, metavar="FILE",
                        help="the ONNX file to write (its missing folders are made)")
    cli.add_run_flags(parser, dataset_needed=True)
    parser.add_argument("--check_images", type=int, default=256,
                        help="compare onnxruntime with PyTorch on the first N test images, in "
                             "one batch of N and one of a single image")
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "the export began")

from mnist_loader import DATASETS

from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.errors import UserError
from run_machinery.onnx_export import (
    OUTPUT_NAMES,
    TOLERANCE,
    export_checkpoint,
    model_metadata,
    require_packages,
)
from run_machinery.output_paths import check_outputs


def parse_args(argv=None):
    """The command line's settings, their ranges checked."""
    args = build_parser().parse_args(argv)
    if args.check_images < 2:
        raise UserError(f"--check_images must be at least 2 (two batch sizes show that the "
                        f"batch size is free), got {args.check_images}")
    return args


def main(argv=None):
    """Export a checkpoint; returns the ONNX file's path, its metadata and the largest
    differences of its outputs from PyTorch's."""
    with cli.one_line_errors():
        args = parse_args(argv)
        require_packages()
        checkpoint = open_checkpoint(args.checkpoint, args.holdout_classes, args.head, args.dataset,
                                     args.dataset_dir, needs_dataset=True)
        check_outputs([("--onnx", args.onnx)], [args.checkpoint], checkpoint.dataset,
                      checkpoint.dataset_dir)
        test_split = checkpoint.test_split("cpu", args.check_images)
        metadata = model_metadata(checkpoint, test_split.mean, test_split.std)
        images = test_split.images
        batch_sizes = (len(images), 1)
        differences = export_checkpoint(checkpoint, metadata, images, batch_sizes, args.onnx)

        print(f"Checkpoint {cli.printable(args.checkpoint)}: {DATASETS[checkpoint.dataset].title}, "
              f"{metadata['head']} head, {metadata['feat_dim']}-D features, classes "
              f"{', '.join(checkpoint.class_names[label] for label in checkpoint.classes)}")
        print(f"onnxruntime against PyTorch on {len(images)} test images, in batches of "
              f"{' and '.join(map(str, batch_sizes))} (relative: to the output's largest "
              f"magnitude; at most {TOLERANCE:.0e} allowed):")
        for name in OUTPUT_NAMES:
            print(f"  {name}: largest difference {differences[name]['absolute']:.2e} absolute, "
                  f"{differences[name]['relative']:.2e} relative")
        print(f"Wrote {cli.printable(args.onnx)} (input normalised with mean {metadata['mean']}, "
              f"std {metadata['std']})")
        return {"onnx": args.onnx, "metadata": metadata, "differences": differences}


if __name__ == "__main__":
    main(sys.argv[1:])
