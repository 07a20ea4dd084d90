"""Animate a saved run: an animated GIF of the per-epoch test features.

The trainer saves the test features of every epoch to `test_features.pt` beside its
plots and writes the GIF at the end of a run; this remakes it on demand, from a run
that is still going or was stopped:

    python animate.py outputs/visual/test_features.pt --out outputs/visual/features.gif
"""
import argparse
from pathlib import Path

import torch

from plots import write_feature_gif
from train_mnist_original_center import HelpFormatter, fail


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("features", help="the test_features.pt a training run wrote")
    parser.add_argument("--out", default=None, help="GIF path; default: features.gif beside the input")
    parser.add_argument("--seconds_per_frame", type=float, default=0.4, help="display time of each epoch")
    args = parser.parse_args(argv)
    try:
        saved = torch.load(args.features, map_location="cpu", weights_only=True)
        features, digits, epochs = saved["features"], saved["digits"], saved["epochs"]
    except (OSError, RuntimeError, EOFError, KeyError, TypeError) as error:
        fail(f"{args.features} is not a test_features.pt written by the trainer ({error})")
    out = Path(args.out) if args.out else Path(args.features).with_name("features.gif")
    frames = write_feature_gif(features, digits, out, saved.get("unseen_digits", ()), epochs,
                               args.seconds_per_frame)
    print(f"Wrote {frames} frames to {out}")


if __name__ == "__main__":
    main()
