"""The batch-hard triplet loss (Hermans, Beyer and Leibe 2017, "In Defense of the Triplet
Loss for Person Re-Identification").

Every item of the batch is an anchor. Its hardest positive is the farthest item of its own
class; its hardest negative is the nearest item of another class. With d the Euclidean
distance, each anchor's loss is

  relu(d(a, p) - d(a, n) + margin)     for margin > 0
  softplus(d(a, p) - d(a, n))          for margin = 0, the paper's soft margin

and the loss is the mean over the anchors that have both a positive and a negative in the
batch, the zeros included, as in the paper. With `angular` the features are first scaled
to unit length, so the distances rank by cosine, as the angular heads do.

It runs on the device without a host sync: masks pick the hardest items, never indexing
whose size depends on the data.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The squared distance is clamped here before its square root: the root's gradient is
# infinite at 0, and an anchor's distance to itself, or to a copy, is exactly 0.
_MIN_SQUARED_DISTANCE = 1e-12


def batch_hard_triplet_loss(features, labels, margin=0.3, angular=False):
    """The batch-hard triplet loss of `features` (B, D) with class indices `labels` (B,):
    a 0-dim float32 tensor. `margin` is a Python number: 0 selects the soft margin.

    When no anchor has both a positive and a negative, the loss is a 0 that still belongs
    to the graph, so backward gives zero gradients.
    """
    if margin < 0:
        raise ValueError(f"batch_hard_triplet_loss: margin must be >= 0, got {margin}")
    if features.dim() != 2 or labels.shape != (features.size(0),):
        raise ValueError(
            f"batch_hard_triplet_loss: features of shape {tuple(features.shape)} and labels "
            f"of shape {tuple(labels.shape)}; expected (B, D) and (B,)")
    # Under autocast the features may be bfloat16; distances that close need float32.
    features = features.float()
    if angular:
        features = F.normalize(features, dim=1)
    distances = _pairwise_distances(features)

    same_class = labels.unsqueeze(0) == labels.unsqueeze(1)
    itself = torch.eye(labels.size(0), dtype=torch.bool, device=labels.device)
    positives = same_class & ~itself
    negatives = ~same_class
    # Every distance is at least sqrt(1e-12) > 0, so 0 never wins the maximum over the
    # positives, and no distance reaches float32's largest number: those fill the rows
    # without a positive or a negative, whose anchors are left out below.
    hardest_positive = torch.where(positives, distances, 0.0).amax(dim=1)
    hardest_negative = torch.where(
        negatives, distances, torch.finfo(torch.float32).max).amin(dim=1)

    gap = hardest_positive - hardest_negative
    losses = F.relu(gap + margin) if margin > 0 else F.softplus(gap)
    taking_part = positives.any(dim=1) & negatives.any(dim=1)
    # where(), not a product: an anchor left out contributes 0 and a zero gradient.
    losses = torch.where(taking_part, losses, 0.0)
    # The count as a tensor (no host sync); 1 when no anchor takes part, the sum being 0.
    return losses.sum() / taking_part.sum().clamp(min=1)


def _pairwise_distances(features):
    """Euclidean distances (B, B), from the differences: the expansion
    |x|^2 + |y|^2 - 2 x.y rounds to small negative numbers for close items."""
    differences = features.unsqueeze(1) - features.unsqueeze(0)
    squared = differences.pow(2).sum(dim=2)
    return squared.clamp(min=_MIN_SQUARED_DISTANCE).sqrt()


@dataclass(frozen=True)
class TripletTerm:
    """The triplet part of a total loss: `weight` times the batch-hard triplet loss with
    `margin` (called like the loss itself)."""
    weight: float
    margin: float = 0.3

    def __bool__(self):
        return self.weight > 0  # a term of weight 0 is none: no loss computed, no column

    def __call__(self, features, labels, angular=False):
        return batch_hard_triplet_loss(features, labels, self.margin, angular)
