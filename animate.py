"""Animate a saved run: an animated GIF of the per-epoch test features.

The trainer saves the test features of every epoch to `test_features.pt` in its run's
folder and writes the GIF at the end of a run; this remakes it on demand, from a run
that is still going or was stopped (with the features' directions beside them when the
run's run.json names an angular head, and its classes named):

    python animate.py outputs/test_features.pt --out outputs/features.gif
"""
from pathlib import Path

from run_machinery import cli

# A GIF's frame delay: a 16-bit count of hundredths of a second.
MIN_SECONDS, MAX_SECONDS = 0.01, 655.35


def build_parser():
    parser = cli.command_parser(__doc__.split("\n\n")[0])
    parser.add_argument("features", help="the test_features.pt a training run wrote")
    parser.add_argument("--out", default=None,
                        help="GIF path; default: features.gif beside the input")
    parser.add_argument("--seconds_per_frame", type=float, default=0.4,
                        help=f"display time of each epoch, {MIN_SECONDS:g} to {MAX_SECONDS:g}")
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "the animation began")

from run_machinery.datasets import class_names
from run_machinery.errors import UserError
from run_machinery.output_paths import check_outputs
from run_machinery.plots import write_feature_gif
from run_machinery.run_file import find_run_file
from run_machinery.run_output import read_test_features


def main(argv=None):
    args = build_parser().parse_args(argv)
    with cli.one_line_errors():
        if not MIN_SECONDS <= args.seconds_per_frame <= MAX_SECONDS:  # NaN too
            raise UserError(f"--seconds_per_frame must be from {MIN_SECONDS:g} to {MAX_SECONDS:g} "
                            f"(a GIF keeps each frame's time in hundredths of a second, in 16 "
                            f"bits), got {args.seconds_per_frame:g}")
        out = Path(args.out) if args.out else Path(args.features).with_name("features.gif")
        check_outputs([("--out", out)], [args.features])
        saved = read_test_features(args.features)
        run = find_run_file(args.features)
        frames = write_feature_gif(saved["features"], saved["digits"], out,
                                   saved["holdout_classes"],
                                   saved["epochs"], args.seconds_per_frame,
                                   angular=run is not None and run.head != "softmax",
                                   class_names=(list(run.class_names) if run and run.class_names
                                                else class_names(run.dataset if run else "mnist")))
    print(f"Wrote {frames} frames to {cli.printable(out)}")
    return out


if __name__ == "__main__":
    main()
