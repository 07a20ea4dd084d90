"""Time the parts that re-identification adds, on this machine: drawing an epoch's PK
batches against the article's shuffle, the batch-hard triplet loss per step, and the
retrieval figures of a test split at 2-D and at a wider feature.

    python3 benchmarks/reid_parts.py --dataset_dir ../shared/mnist

Each figure is the best of a few repeats, in seconds (or milliseconds), printed one a line.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from run_machinery.datasets import load_dataset  # noqa: E402  (after the path is set)
from run_machinery.metrics import split_retrieval_metrics  # noqa: E402
from run_machinery.triplet_loss import batch_hard_triplet_loss  # noqa: E402


def best_seconds(function, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="the MNIST folder, as for the trainer")
    parser.add_argument("--classes_per_batch", type=int, default=8, help="P of the PK batches")
    parser.add_argument("--images_per_class", type=int, default=16, help="K of the PK batches")
    parser.add_argument("--wide", type=int, default=128, help="the wider feature's width")
    parser.add_argument("--steps", type=int, default=200, help="triplet-loss steps timed")
    args = parser.parse_args(argv)
    p, k = args.classes_per_batch, args.images_per_class
    shuffled, test_loader, _ = load_dataset(args.dataset_dir, p * k, seed=1)
    pk, _, _ = load_dataset(args.dataset_dir, p * k, seed=1, classes_per_batch=p,
                            images_per_class=k)

    def epoch(loader):
        return lambda: sum(1 for _ in loader)

    print(f"an epoch's batches of {shuffled.num_samples} images, no network: shuffle "
          f"{best_seconds(epoch(shuffled)):.3f} s, PK {p} x {k} {best_seconds(epoch(pk)):.3f} s "
          f"({len(pk)} steps)")
    labels = torch.arange(p * k) // k
    for width in (2, args.wide):
        features = torch.randn(p * k, width, requires_grad=True)

        def steps():
            for _ in range(args.steps):
                batch_hard_triplet_loss(features, labels).backward()

        print(f"triplet loss, forward and backward, batch {p * k}, {width}-D: "
              f"{best_seconds(steps) / args.steps * 1e3:.2f} ms a step")
    for width in (2, args.wide):
        features = torch.randn(test_loader.num_samples, width)
        seconds = best_seconds(lambda: split_retrieval_metrics(features, test_loader.labels), 2)
        print(f"retrieval and re-ID figures of {test_loader.num_samples} test features, "
              f"{width}-D: {seconds:.2f} s")


if __name__ == "__main__":
    main()
