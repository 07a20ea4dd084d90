"""Embed pictures of one's own with a checkpoint of the trainer: each picture (PNG, JPEG or
any format Pillow reads) is prepared as the images of the run's dataset were made (see
run_machinery/own_images.py; for a folder dataset, as its training images were), and its
predicted class, with its probability (or its cosine, for an angular head), and the
classes of its nearest test images are printed.
Optionally writes the features and neighbours as JSON and a map of the pictures among the
test features. The run.json of the run that wrote the checkpoint gives the dataset, its
folder, the held-out classes, the head and the test split's size.

    python embed.py outputs/model/epoch_100.pth my_digit.png --json my.json --plot my.png
"""
import json
import sys
from pathlib import Path

from run_machinery import cli

# A limit, read from its owner's source: --help comes before torch.
(MAX_PIXELS,) = cli.source_constants("run_machinery.own_images", "MAX_PIXELS")


def build_parser():
    parser = cli.command_parser(
        "Embed pictures of your own with a trained checkpoint: each one's predicted class and "
        "the classes of its nearest test images, optionally as JSON and on a map of the test "
        "features.")
    cli.add_checkpoint_argument(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="pictures in any format Pillow reads (PNG, JPEG, ...), of at most "
                             f"4096x4096 = {MAX_PIXELS:,} pixels; dark ink on a light "
                             "background is negated, and each is fitted into 28x28 as the "
                             "dataset's images were (a 28x28 picture of light ink on black is "
                             "taken as it is); for a folder dataset, each is made as its "
                             "training images were: grayscale, resized to 28x28")
    cli.add_run_flags(parser, dataset_needed=True)
    parser.add_argument("--k", type=int, default=5,
                        help="how many nearest test images to name for each picture (at most "
                             "the test images there are: a larger --k is said and lowered)")
    parser.add_argument("--json", default=None,
                        help="also write each picture's class, score, feature and nearest test "
                             "images to this JSON file; default: none")
    parser.add_argument("--plot", default=None,
                        help="write a map of the test features with each picture on it (a star, "
                             "and the prepared picture beside it) to this PNG; default: none")
    cli.add_test_split_flag(parser)
    cli.add_device_flag(parser)
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "the pictures were embedded")

import numpy as np
import torch

from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.checkpointing import atomic_write, save_figure
from run_machinery.devices import pick_device
from run_machinery.errors import UserError
from run_machinery.output_paths import check_outputs
from run_machinery.own_images import PictureIndex, embedding_cache, own_images_figure, own_picture
from run_machinery.run_folder import check_image_format


def parse_args(argv=None):
    """The command line's settings, their ranges checked."""
    args = build_parser().parse_args(argv)
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    return args


def main(argv=None):
    """Embed the pictures; returns one dict per picture (the JSON's content)."""
    with cli.one_line_errors():
        args = parse_args(argv)
        if args.plot:
            check_image_format("--plot", args.plot)
        checkpoint = open_checkpoint(args.checkpoint, args.holdout_classes, args.head,
                                     args.dataset, args.dataset_dir, needs_dataset=True)
        check_outputs([("--json", args.json), ("--plot", args.plot)],
                      [args.checkpoint, embedding_cache(args.checkpoint), *args.images],
                      checkpoint.dataset, checkpoint.dataset_dir)
        pictures = torch.from_numpy(np.stack([own_picture(path, checkpoint.dataset)
                                              for path in args.images]))
        index = PictureIndex(checkpoint, pick_device(args.device), args.max_test_samples,
                             embedding_cache(args.checkpoint))
        if args.k > len(index.labels):
            print(f"--k {args.k} is more than the {len(index.labels)} test images: each "
                  f"picture's nearest are all of them")
        features, predicted, placed = index.place(pictures, args.k)
        results = [{"image": str(path), **result} for path, result in zip(args.images, placed)]
        for result in results:
            print(f"{cli.printable(result['image'])}: {index.describe(result)}")
        if args.json:
            atomic_write(args.json, json.dumps(results, indent=2, allow_nan=False).encode())
            print(f"Wrote {cli.printable(args.json)}")
        if args.plot:
            save_figure(own_images_figure(index.gallery, index.labels, features, pictures,
                                          predicted,
                                          f"{Path(args.checkpoint).name}: test features and "
                                          f"{len(results)} picture(s) of your own (stars)",
                                          checkpoint.centers, checkpoint.holdout_classes,
                                          checkpoint.class_names),
                        args.plot)
            print(f"Wrote {cli.printable(args.plot)}")
        return results


if __name__ == "__main__":
    main(sys.argv[1:])
