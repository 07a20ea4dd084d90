"""Verification, as face recognition reports it: "the same class or not?" answered for a
pair of images by the distance of their features and a threshold (accepted: closer than
the threshold). Over all pairs of a split's images (i < j; genuine: the same class,
impostor: two classes), the ROC (TAR, the share of genuine pairs accepted, against FAR,
the share of impostor pairs accepted), its AUC, the equal error rate (EER: where FAR
equals the share of genuine pairs rejected) and TAR at a few FARs; and a threshold
calibrated at a FAR on one split (the training images of the trained classes) and then
measured on another (the test split).

The distance is the one the head ranks with: Euclidean between the retrieval features
(`Head.retrieval_features`: for an angular head the features on the unit sphere, where
d^2 = 2 - 2 cos, so it ranks by cosine). Every pair's distance is computed pair by pair
(as metrics.py does) a block of rows at a time, so memory is bounded whatever the split's
size, and counted in a histogram of its float32 bits: a non-negative float orders as its
bits do, so the top bits make COARSE bins of relative width 2^-11, and the low FINE_BITS
bits of one coarse bin are each one float. The ROC is drawn at the coarse bins' edges
(exact points of the ROC); TAR@FAR, the threshold at a FAR, the EER and the figures at a
given threshold are exact, from a second pass that counts the coarse bins they need float
by float. The AUC is the trapezoid of the coarse ROC: exact but for pairs of a genuine and
an impostor distance within one coarse bin, counted as ties; `auc_resolution` bounds the
difference.

A TAR at FAR f is claimed only when at least MIN_FALSE_ACCEPTS / f impostor pairs exist (at
least 10 false accepts behind the figure); a threshold at FAR f asks as many of its
validation pairs. A split of more than MAX_IMAGES images is represented by MAX_IMAGES of
them drawn at random (seeded), all pairs among them.
"""
import json
import math

import torch

from .checkpointing import atomic_write
from .errors import UserError
from .run_folder import verification_record_path

FARS = (1e-1, 1e-2, 1e-3, 1e-4)  # the FARs TAR is reported at
DEFAULT_FAR = 1e-3  # the FAR a threshold is calibrated at
VALIDATION_IMAGES = 2000  # the training images a threshold is calibrated on
MIN_FALSE_ACCEPTS = 10  # a FAR f rests on at least 10 / f impostor pairs
MAX_IMAGES = 20000  # all pairs of at most 20,000 images (200M pairs); else a seeded sample
SEED = 0
FINE_BITS = 12
FINE = 1 << FINE_BITS
NUM_BINS = (0x7F800000 >> FINE_BITS) + 1  # every finite non-negative float32, and +inf
BLOCK_ENTRIES = 1 << 22  # distances held at once: 16 MB of them


def check_far(far, flag="--far"):
    """UserError unless 0 < `far` < 1."""
    if not 0 < far < 1:
        raise UserError(f"{flag} must lie between 0 and 1 (exclusive), got {far}")


def impostors_needed(far):
    """The impostor pairs a FAR of `far` rests on at least: MIN_FALSE_ACCEPTS / far."""
    # 10 / 5e-6 rounds to 2000000.0000000002: a hair above a whole number is that number
    return math.ceil(MIN_FALSE_ACCEPTS / far - 1e-9)


def float_of(bits):
    """The float32 whose bits are the integer `bits`."""
    return torch.tensor([bits], dtype=torch.int32).view(torch.float32).item()


def bits_of(value):
    """The bits of `value` as a float32, as an integer."""
    return torch.tensor([value], dtype=torch.float32).view(torch.int32).item()


def distance_name(head):
    """The distance `head` ranks with, for the reports: "euclidean" or "cosine"."""
    return "cosine" if head.angular else "euclidean"


def pair_blocks(features, labels):
    """For every pair i < j of `features` (N, D), a block of rows at a time: the float32
    bits of its distance (as int64) and whether it is genuine (the same label)."""
    features = features.float()
    num_items = labels.numel()
    rows = max(1, BLOCK_ENTRIES // max(num_items, 1))
    columns = torch.arange(num_items, device=features.device)
    for start in range(0, num_items - 1, rows):
        end = min(start + rows, num_items - 1)
        distances = torch.cdist(features[start:end], features[start:],
                                compute_mode="donot_use_mm_for_euclid_dist").abs()  # no -0.0
        later = columns[start:].unsqueeze(0) > columns[start:end].unsqueeze(1)
        genuine = labels[start:end].unsqueeze(1) == labels[start:].unsqueeze(0)
        yield distances[later].view(torch.int32).long(), genuine[later]


class PairHistogram:
    """The distances of all pairs of a split's features (or of MAX_IMAGES of them drawn at
    random, seeded), genuine and impostor, counted by coarse bin; the coarse bins that the
    exact figures need are counted float by float on request (`refine`)."""

    def __init__(self, features, labels, max_images=MAX_IMAGES, seed=SEED):
        self.sampled_from = None
        if labels.numel() > max_images:
            self.sampled_from = labels.numel()
            chosen = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
            chosen = chosen[:max_images].to(labels.device)
            features, labels = features[chosen], labels[chosen]
        self.features, self.labels = features, labels
        counts = torch.zeros(2 * NUM_BINS, dtype=torch.long, device=labels.device)
        for bits, genuine in pair_blocks(features, labels):
            counts += torch.bincount((bits >> FINE_BITS) + genuine * NUM_BINS,
                                     minlength=2 * NUM_BINS)
        self.impostor, self.genuine = counts.cpu().view(2, NUM_BINS).double()
        self.num_genuine, self.num_impostor = int(self.genuine.sum()), int(self.impostor.sum())
        self.genuine_below = torch.cumsum(self.genuine, 0) - self.genuine  # before each bin
        self.impostor_below = torch.cumsum(self.impostor, 0) - self.impostor
        self.fine = {}  # coarse bin -> (genuine, impostor) counts of each of its floats

    @property
    def num_images(self):
        return self.labels.numel()

    def refine(self, coarse_bins):
        """Count the pairs of each coarse bin of `coarse_bins` float by float (one pass over
        the pairs for all the bins not yet counted)."""
        wanted = sorted(set(int(b) for b in coarse_bins) - set(self.fine))
        if not wanted:
            return
        lookup = torch.full((NUM_BINS,), -1, dtype=torch.long, device=self.labels.device)
        lookup[torch.tensor(wanted, device=self.labels.device)] = torch.arange(
            len(wanted), device=self.labels.device)
        size = len(wanted) * FINE
        counts = torch.zeros(2 * size, dtype=torch.long, device=self.labels.device)
        for bits, genuine in pair_blocks(self.features, self.labels):
            slot = lookup[bits >> FINE_BITS]
            inside = slot >= 0
            counts += torch.bincount(genuine[inside] * size + slot[inside] * FINE
                                     + (bits[inside] & (FINE - 1)), minlength=2 * size)
        impostor, genuine = counts.cpu().double().view(2, len(wanted), FINE)
        for index, coarse in enumerate(wanted):
            self.fine[coarse] = (genuine[index], impostor[index])

    def below(self, bits):
        """(genuine, impostor) pairs closer than the float of `bits` (its bin refined)."""
        coarse, fine = bits >> FINE_BITS, bits & (FINE - 1)
        genuine, impostor = self.fine[coarse]
        return (int(self.genuine_below[coarse] + genuine[:fine].sum()),
                int(self.impostor_below[coarse] + impostor[:fine].sum()))

    def impostor_bin(self, rank):
        """The coarse bin of the `rank`-th smallest impostor distance (from 1)."""
        return int(torch.searchsorted(self.impostor_below + self.impostor,
                                      torch.tensor([float(rank)], dtype=torch.float64)))

    def impostor_bits(self, rank):
        """The bits of the `rank`-th smallest impostor distance (its bin refined)."""
        coarse = self.impostor_bin(rank)
        within = torch.cumsum(self.fine[coarse][1], 0)
        fine = int(torch.searchsorted(within, torch.tensor(
            [rank - float(self.impostor_below[coarse])], dtype=torch.float64)))
        return coarse << FINE_BITS | fine

    def equal_error_bin(self):
        """The coarse bin within which FAR first reaches the genuine pairs' rejection rate."""
        far = (self.impostor_below + self.impostor) / self.num_impostor
        frr = 1 - (self.genuine_below + self.genuine) / self.num_genuine
        return int(torch.nonzero(far >= frr)[0])

    def equal_error_rate(self):
        """The EER (its bin refined): FAR and the rejection rate, exact at each float,
        interpolated linearly between the last point where FAR is below it and the next."""
        coarse = self.equal_error_bin()
        genuine, impostor = self.fine[coarse]
        far = torch.cat([self.impostor_below[coarse:coarse + 1],
                         self.impostor_below[coarse] + torch.cumsum(impostor, 0)])
        far = far / self.num_impostor
        frr = 1 - torch.cat([self.genuine_below[coarse:coarse + 1],
                             self.genuine_below[coarse] + torch.cumsum(genuine, 0)]
                            ) / self.num_genuine
        # The bin's start (the end of the bin before) is below the crossing: after >= 1.
        after = int(torch.nonzero(far >= frr)[0])
        far0, far1 = far[after - 1:after + 1].tolist()
        frr0, frr1 = frr[after - 1:after + 1].tolist()
        step = (far1 - far0) - (frr1 - frr0)
        return far0 + (frr0 - far0) / step * (far1 - far0)

    def auc(self):
        """The AUC (the trapezoid of the coarse ROC) and the bound of its difference from
        the exact one: half the share of genuine-impostor pairs within one coarse bin."""
        total = float(self.num_genuine) * float(self.num_impostor)
        above = self.num_impostor - self.impostor_below - self.impostor
        within = float((self.genuine * self.impostor).sum())
        return (float((self.genuine * above).sum()) + within / 2) / total, within / 2 / total

    def roc(self):
        """The ROC at the edges of the non-empty coarse bins, from (0, 0): (FAR, TAR)."""
        occupied = (self.genuine + self.impostor) > 0
        far = (self.impostor_below + self.impostor)[occupied] / self.num_impostor
        tar = (self.genuine_below + self.genuine)[occupied] / self.num_genuine
        return torch.cat([torch.zeros(1, dtype=far.dtype), far]), torch.cat(
            [torch.zeros(1, dtype=tar.dtype), tar])

    def distance_histogram(self, bins=80):
        """The genuine and the impostor distances' shares in `bins` equal bins from 0 to the
        largest distance: (edges, genuine share, impostor share), numpy arrays."""
        occupied = torch.nonzero((self.genuine + self.impostor) > 0).flatten()
        starts = (occupied << FINE_BITS).int().view(torch.float32).double()
        top = float_of(int(occupied[-1] + 1) << FINE_BITS) if occupied.numel() else 1.0
        edges = torch.linspace(0, top, bins + 1, dtype=torch.float64)
        slot = (torch.bucketize(starts, edges, right=True) - 1).clamp(0, bins - 1)
        shares = [torch.zeros(bins, dtype=torch.float64).index_add_(0, slot, counts[occupied])
                  / max(counts.sum().item(), 1) for counts in (self.genuine, self.impostor)]
        return edges.numpy(), shares[0].numpy(), shares[1].numpy()

    def describe(self):
        """What the figures rest on: images, pairs, the sample."""
        return {"num_images": self.num_images, "sampled_from": self.sampled_from,
                "genuine_pairs": self.num_genuine, "impostor_pairs": self.num_impostor}


def check_pairs(histogram, what):
    """UserError unless `histogram` has genuine and impostor pairs (of its `what`)."""
    if not histogram.num_genuine or not histogram.num_impostor:
        raise UserError(f"verification needs genuine and impostor pairs, but the "
                        f"{histogram.num_images} {what} make {histogram.num_genuine} genuine and "
                        f"{histogram.num_impostor} impostor pairs")


def verification_figures(histogram, fars=FARS, threshold=None):
    """The ROC's figures of `histogram` (a PairHistogram of a split): AUC and its
    resolution, EER, and for each FAR of `fars` the TAR, the threshold (the nearest impostor
    distance not accepted) and the FAR reached, or null with the reason where fewer than
    impostors_needed(far) impostor pairs exist; with `threshold` (a distance), the TAR and
    FAR at it, under "at_threshold". A JSON-ready dict."""
    check_pairs(histogram, "images")
    claimed = [far for far in fars if histogram.num_impostor >= impostors_needed(far)]
    ranks = {far: math.floor(far * histogram.num_impostor) + 1 for far in claimed}
    bins = [histogram.impostor_bin(rank) for rank in ranks.values()]
    bins.append(histogram.equal_error_bin())
    if threshold is not None:
        bins.append(bits_of(threshold) >> FINE_BITS)
    histogram.refine(bins)
    auc, resolution = histogram.auc()
    figures = histogram.describe() | {"auc": auc, "auc_resolution": resolution,
                                      "eer": histogram.equal_error_rate(), "tar_at_far": []}
    for far in fars:
        entry = {"far": far, "impostor_pairs": histogram.num_impostor}
        if far in ranks:
            entry |= measured_at(histogram, histogram.impostor_bits(ranks[far]))
        else:
            entry |= {"tar": None, "threshold": None, "reached_far": None,
                      "undefined": f"fewer than {impostors_needed(far)} impostor pairs "
                                   f"({MIN_FALSE_ACCEPTS} / FAR)"}
        figures["tar_at_far"].append(entry)
    if threshold is not None:
        figures["at_threshold"] = measured_at(histogram, bits_of(threshold))
    return figures


def measured_at(histogram, bits):
    """TAR and FAR of `histogram` at the threshold of `bits` (accepted: closer than it)."""
    genuine, impostor = histogram.below(bits)
    return {"threshold": float_of(bits), "tar": genuine / histogram.num_genuine,
            "reached_far": impostor / histogram.num_impostor, "false_accepts": impostor}


def calibrate(histogram, far=DEFAULT_FAR):
    """The threshold at FAR `far` on `histogram`'s pairs (a validation split): the nearest
    impostor distance not accepted, so that at most floor(far * impostor pairs) are; with
    the TAR and FAR it reaches there. UserError when fewer than impostors_needed(far)
    impostor pairs exist."""
    check_far(far)
    check_pairs(histogram, "validation images")
    if histogram.num_impostor < impostors_needed(far):
        raise UserError(f"a threshold at FAR {far:g} needs at least {impostors_needed(far)} "
                        f"impostor pairs ({MIN_FALSE_ACCEPTS} / FAR), but the "
                        f"{histogram.num_images} validation images make "
                        f"{histogram.num_impostor}; ask more --validation_images or a larger "
                        f"--far")
    rank = math.floor(far * histogram.num_impostor) + 1
    histogram.refine([histogram.impostor_bin(rank)])
    return {"far": far} | histogram.describe() | measured_at(histogram,
                                                              histogram.impostor_bits(rank))


def record_threshold(checkpoint, record):
    """Write `record` (the threshold and its figures) beside `checkpoint`, atomically, as
    JSON; returns its path."""
    path = verification_record_path(checkpoint)
    atomic_write(path, json.dumps(record, indent=2, allow_nan=False).encode())
    return path
