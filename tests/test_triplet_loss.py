import math

import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer

from run_machinery.triplet_loss import batch_hard_triplet_loss


def oracle(features, labels, margin, angular):
    """pytorch-metric-learning's batch-hard triplet loss, set to our definition:
    - the miner has its own distance, by default LpDistance() with normalize_embeddings=True:
      it must mine with the loss's distance, else it would pick the hardest items by angle;
    - BatchHardMiner keeps the anchors with a positive (itself excluded) and a negative,
      positive by the largest distance, negative by the smallest: as ours;
    - TripletMarginLoss's own reducer is AvgNonZeroReducer (the mean over the triplets
      whose loss is above 0); MeanReducer averages all the mined ones, zeros included,
      as the paper and we do;
    - smooth_loss is softplus(d_ap - d_an + margin); with margin 0, our soft margin.
    Its distances come from torch.cdist, which uses the matrix-product expansion for
    batches past 25 items: the oracle runs in float64, so that rounding stays far below the
    tolerance."""
    distance = LpDistance(normalize_embeddings=angular, p=2, power=1)
    miner = miners.BatchHardMiner(distance=distance)
    loss = losses.TripletMarginLoss(margin=margin, smooth_loss=margin == 0, distance=distance,
                                    reducer=MeanReducer())
    features = features.double()
    return loss(features, labels, miner(features, labels)).item()


def clustered(labels, dim, generator):
    """Features around one random mean per class (means about 2 from the origin, the
    spread about the mean wider in 128-D, where random directions are all far apart):
    some anchors already meet the margin, others not, so both sides of the hinge count.
    Gaussian features without classes would leave every anchor short of the margin."""
    means = torch.randn(int(labels.max()) + 1, dim, generator=generator) * 2 / dim ** 0.5
    spread = 2.0 if dim > 3 else 0.3
    return means[labels] + torch.randn(labels.numel(), dim, generator=generator) * spread \
        / dim ** 0.5


def balanced_batch(classes, per_class, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    return clustered(labels, dim, generator), labels


def batch_with_single_items(dim, seed):
    """Classes 0-4 with 1, 1, 3, 5 and 10 items: the first two have no positive."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(5), torch.tensor([1, 1, 3, 5, 10]))
    labels = labels[torch.randperm(labels.numel(), generator=generator)]
    return clustered(labels, dim, generator), labels


# The seeds give each batch anchors on both sides of the hinge at margin 0.3, Euclidean and
# angular alike (checked below).
BATCHES = [balanced_batch(8, 8, 2, seed=1), balanced_batch(8, 8, 3, seed=0),
           balanced_batch(8, 8, 128, seed=0), balanced_batch(4, 16, 2, seed=4),
           batch_with_single_items(2, seed=1), batch_with_single_items(128, seed=6)]


@pytest.mark.parametrize("angular", [False, True], ids=["euclidean", "angular"])
@pytest.mark.parametrize("margin", [0.3, 1.0, 0.0], ids=["margin0.3", "margin1", "soft"])
@pytest.mark.parametrize("batch", range(len(BATCHES)))
def test_the_same_as_pytorch_metric_learning(batch, margin, angular):
    features, labels = BATCHES[batch]
    value = batch_hard_triplet_loss(features, labels, margin=margin, angular=angular)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert value.item() == pytest.approx(oracle(features, labels, margin, angular),
                                         rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("angular", [False, True], ids=["euclidean", "angular"])
@pytest.mark.parametrize("batch", range(len(BATCHES)))
def test_the_batches_have_anchors_on_both_sides_of_the_hinge(batch, angular):
    # pml's default reducer for TripletMarginLoss, AvgNonZeroReducer, averages over the
    # triplets with a loss above 0 only: on these batches it gives more than the mean
    # over all the anchors, so the comparison above tells the two apart.
    features, labels = BATCHES[batch]
    distance = LpDistance(normalize_embeddings=angular)
    miner = miners.BatchHardMiner(distance=distance)
    mean, mean_of_nonzero = (
        losses.TripletMarginLoss(margin=0.3, distance=distance, reducer=reducer)(
            features.double(), labels, miner(features.double(), labels)).item()
        for reducer in (MeanReducer(), AvgNonZeroReducer()))
    assert 0 < mean < mean_of_nonzero


# Four points on a line, two classes: 0 and 2 of class 0, 3 and 4 of class 1.
LINE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
LINE_LABELS = torch.tensor([0, 0, 1, 1])


def test_value_and_gradient_by_hand():
    # anchor  hardest positive  hardest negative  d_ap - d_an + 0.3
    # 0       2 (d 2)           3 (d 3)           -0.7 -> 0
    # 2       0 (d 2)           3 (d 1)            1.3
    # 3       4 (d 1)           2 (d 1)            0.3
    # 4       3 (d 1)           2 (d 2)           -0.7 -> 0
    # Mean over the 4 anchors: 1.6 / 4 = 0.4.
    features = LINE.clone().requires_grad_()
    value = batch_hard_triplet_loss(features, LINE_LABELS, margin=0.3)
    assert value.item() == pytest.approx(0.4, rel=1e-6)
    # The two active terms, as functions of the positions x0..x3:
    # (x1 - x0) - (x2 - x1) + 0.3 and (x3 - x2) - (x2 - x1) + 0.3, each / 4.
    value.backward()
    expected = torch.tensor([[-1.0, 0.0], [3.0, 0.0], [-3.0, 0.0], [1.0, 0.0]]) / 4
    assert torch.allclose(features.grad, expected, atol=1e-6)


def test_soft_margin_by_hand():
    # The same gaps without the margin: -1, 1, 0, -1.
    expected = (2 * math.log1p(math.exp(-1)) + math.log1p(math.e) + math.log(2)) / 4
    value = batch_hard_triplet_loss(LINE, LINE_LABELS, margin=0.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_angular_by_hand():
    # On the unit circle: class 0 at 0 and 90 degrees, class 1 at 180 and 270 degrees.
    # Each anchor: its positive sqrt(2) away, its nearest negative also sqrt(2) away.
    features = torch.tensor([[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0], [0.0, -7.0]])
    value = batch_hard_triplet_loss(features, LINE_LABELS, margin=0.3, angular=True)
    assert value.item() == pytest.approx(0.3, rel=1e-6)


@pytest.mark.parametrize("angular", [False, True], ids=["euclidean", "angular"])
@pytest.mark.parametrize("margin", [0.3, 0.0], ids=["margin", "soft"])
def test_finite_gradients_where_features_coincide(margin, angular):
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    all_equal = torch.ones(6, 2)
    two_equal = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    two_equal[1] = two_equal[0]  # a positive pair at distance 0
    two_equal[3] = two_equal[4]  # a negative pair at distance 0
    for features in (all_equal, two_equal):
        features = features.clone().requires_grad_()
        value = batch_hard_triplet_loss(features, labels, margin=margin, angular=angular)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(features.grad).all()
    # All equal: every distance 0 (up to the clamp), so each anchor's loss is the margin's.
    value = batch_hard_triplet_loss(all_equal, labels, margin=margin, angular=angular)
    expected = 0.3 if margin else math.log(2)
    assert value.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5], [7]],
                         ids=["no-positive", "no-negative", "one-item"])
@pytest.mark.parametrize("margin", [0.3, 0.0], ids=["margin", "soft"])
def test_zero_with_zero_gradients_when_no_anchor_takes_part(labels, margin):
    labels = torch.tensor(labels)
    features = torch.randn(labels.numel(), 3).requires_grad_()
    value = batch_hard_triplet_loss(features, labels, margin=margin)
    assert value.dtype == torch.float32 and value.dim() == 0 and value.item() == 0
    assert value.requires_grad
    value.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_bfloat16_under_autocast():
    features, labels = BATCHES[2]  # D = 128
    layer = torch.nn.Linear(128, 16)
    with torch.no_grad():
        expected = batch_hard_triplet_loss(layer(features), labels).item()
    inputs = features.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = layer(inputs)
        assert outputs.dtype == torch.bfloat16
        value = batch_hard_triplet_loss(outputs, labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=0.03, abs=0.01)
    value.backward()
    assert torch.isfinite(inputs.grad).all()


def test_bfloat16_features_computed_in_float32():
    features, labels = BATCHES[1]
    rounded = features.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = batch_hard_triplet_loss(rounded, labels, angular=True)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(
        batch_hard_triplet_loss(rounded.float(), labels, angular=True).item(),
        rel=1e-6, abs=1e-7)


# Class 0 along the x axis, class 1 up the y axis, margin 0.3:
# anchor   hardest positive  hardest negative   d_ap - d_an + 0.3
# (0, 0)   (2.5, 0)  2.5     (0, 2)  2          0.8
# (1, 0)   (2.5, 0)  1.5     (0, 2)  sqrt(5)    < 0
# (2.5, 0) (0, 0)    2.5     (0, 2)  sqrt(10.25) < 0
# (0, 2)   (0, 4)    2       (0, 0)  2          0.3
# (0, 3)   (0, 2)    1       (0, 0)  3          < 0
# (0, 4)   (0, 2)    2       (0, 0)  4          < 0
# (0, 3) is nobody's hardest positive or negative.
HARDEST = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.5, 0.0], [0.0, 2.0], [0.0, 3.0], [0.0, 4.0]])
HARDEST_LABELS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_hardest_items_by_hand():
    value = batch_hard_triplet_loss(HARDEST, HARDEST_LABELS, margin=0.3)
    assert value.item() == pytest.approx(1.1 / 6, rel=1e-6)


def test_a_farther_hardest_positive_raises_the_loss():
    moved = HARDEST.clone()
    moved[2, 0] = 3.5  # the farthest positive of (0, 0) and (1, 0), further still
    # (0, 0): 3.5 - 2 + 0.3 = 1.8; (1, 0): 2.5 - sqrt(5) + 0.3; (2.5, 0) now 3.5 from (0, 0),
    # sqrt(16.25) from (0, 2): still < 0; class 1 unchanged: 0.3.
    expected = (1.8 + 2.8 - math.sqrt(5) + 0.3) / 6
    before = batch_hard_triplet_loss(HARDEST, HARDEST_LABELS, margin=0.3).item()
    after = batch_hard_triplet_loss(moved, HARDEST_LABELS, margin=0.3).item()
    assert after > before and after == pytest.approx(expected, rel=1e-6)


def test_a_negative_that_is_not_the_hardest_changes_nothing():
    features = HARDEST.clone().requires_grad_()
    value = batch_hard_triplet_loss(features, HARDEST_LABELS, margin=0.3)
    value.backward()
    assert torch.equal(features.grad[4], torch.zeros(2))
    # Moved on its line and off it, (0, 3) stays nobody's hardest item and its own loss
    # stays 0 (hardest positive at most 1.3 away, nearest negative at least 2.8 away).
    for place in ([0.0, 3.3], [0.0, 2.8], [0.4, 3.0]):
        moved = HARDEST.clone()
        moved[4] = torch.tensor(place)
        assert batch_hard_triplet_loss(moved, HARDEST_LABELS, margin=0.3).item() == \
            pytest.approx(value.item(), rel=1e-7, abs=1e-8)


def test_a_class_with_a_single_item_is_left_out_as_an_anchor_only():
    # Adding an item of a new class far away adds no anchor and no hardest negative:
    # the mean stays over the same six anchors.
    features = torch.cat([HARDEST, torch.tensor([[50.0, 50.0]])])
    labels = torch.cat([HARDEST_LABELS, torch.tensor([2])])
    assert batch_hard_triplet_loss(features, labels).item() == \
        pytest.approx(batch_hard_triplet_loss(HARDEST, HARDEST_LABELS).item(), rel=1e-7)


def test_traced_whole_without_a_host_sync():
    # fullgraph: a .item(), a tensor's truth value or a data-dependent shape would break the
    # graph, and that is an error here.
    torch._dynamo.reset()
    compiled = torch.compile(batch_hard_triplet_loss, backend="eager", fullgraph=True)
    features, labels = BATCHES[4]
    assert compiled(features, labels).item() == \
        pytest.approx(batch_hard_triplet_loss(features, labels).item(), rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="margin"):
        batch_hard_triplet_loss(LINE, LINE_LABELS, margin=-0.1)
    with pytest.raises(ValueError, match="shape"):
        batch_hard_triplet_loss(LINE, LINE_LABELS[:3])
    with pytest.raises(ValueError, match="shape"):
        batch_hard_triplet_loss(LINE.reshape(4, 2, 1), LINE_LABELS)
