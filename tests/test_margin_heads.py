import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses

from margin_heads import (
    DEFAULT_MARGIN,
    DEFAULT_SCALE,
    HEADS,
    LAMBDA_MIN,
    NORM_FLOOR,
    Head,
    HeadSettingsError,
    chebyshev,
    check_head_settings,
    sphereface_lambda,
)

# Two classes along the axes, so the cosines of a feature are read off its direction.
AXES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def at_angle(theta, norm=1.0):
    """A feature at angle `theta` from class 0's weight (the x axis)."""
    return torch.tensor([[norm * math.cos(theta), norm * math.sin(theta)]])


def test_normface_is_the_scaled_cosine():
    logits = Head("normface", AXES * 3, scale=10).logits(at_angle(math.pi / 3, norm=5),
                                                         torch.tensor([0]))
    assert torch.allclose(logits, torch.tensor([[10 * 0.5, 10 * math.sqrt(3) / 2]]), atol=1e-5)


def test_cosface_subtracts_the_margin_at_the_true_class_only():
    features = torch.cat([at_angle(math.pi / 3), at_angle(math.pi / 3)])
    logits = Head("cosface", AXES, scale=10, margin=0.2).logits(features, torch.tensor([0, 1]))
    expected = torch.tensor([[10 * (0.5 - 0.2), 10 * math.sqrt(3) / 2],
                             [10 * 0.5, 10 * (math.sqrt(3) / 2 - 0.2)]])
    assert torch.allclose(logits, expected, atol=1e-5)


def test_cosface_below_the_floor_is_linear_with_the_whole_margin():
    """s (x . w_j / |w_j|) - s m at the true class: no pull of the margin towards the origin."""
    features = torch.tensor([[0.03, -0.04]], requires_grad=True)
    logits = Head("cosface", AXES * 5, scale=10, margin=0.1).logits(features, torch.tensor([0]))
    assert torch.allclose(logits, torch.tensor([[10 * 0.03 - 10 * 0.1, 10 * -0.04]]), atol=1e-6)
    logits[0, 0].backward()
    # along w_0 alone, whatever |x|
    assert torch.allclose(features.grad, torch.tensor([[10.0, 0.0]]))


def test_arcface_adds_the_margin_to_the_angle():
    logits = Head("arcface", AXES, scale=2, margin=0.3).logits(at_angle(1.0), torch.tensor([0]))
    assert torch.allclose(logits,
                          torch.tensor([[2 * math.cos(1.3), 2 * math.cos(math.pi / 2 - 1.0)]]),
                          atol=1e-5)


def test_arcface_past_pi_keeps_falling_with_the_angle():
    margin = 0.5
    head = Head("arcface", AXES, scale=1, margin=margin)
    angles = torch.linspace(0, math.pi, 200)
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    target = head.logits(features, torch.zeros(200, dtype=torch.long))[:, 0]
    assert (target[1:] < target[:-1]).all()  # cos(theta + m) would rise again past pi
    past = angles > math.pi - margin
    assert torch.allclose(target[past], angles[past].cos() - margin * math.sin(margin), atol=1e-5)
    # Within 1e-3: sin(theta) is kept above 1e-3 so that its gradient stays finite at theta = 0.
    assert torch.allclose(target[~past], (angles[~past] + margin).cos(), atol=1e-3)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_chebyshev_gives_the_cosine_of_the_multiple_angle(m):
    angles = torch.linspace(0, math.pi, 50, dtype=torch.float64)
    assert torch.allclose(chebyshev(angles.cos(), m), (m * angles).cos())


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_sphereface_psi_at_the_segment_borders(k):
    """psi(theta) = (-1)^k cos(m theta) - 2k falls from 1 - 2k to -1 - 2k over segment k,
    so it is continuous at the borders and falls all the way from 0 to pi."""
    m = 4
    head = Head("sphereface", AXES, margin=m)
    label = torch.tensor([0])
    for theta, expected in ((k * math.pi / m + 1e-4, 1 - 2 * k),
                            ((k + 1) * math.pi / m - 1e-4, -1 - 2 * k)):
        # mix=0: the margin alone; the norm 1 leaves psi itself.
        psi = head.logits(at_angle(theta), label, mix=0.0)[0, 0]
        assert psi.item() == pytest.approx(expected, abs=2e-3)


def test_sphereface_scales_by_the_feature_norm_and_anneals():
    head = Head("sphereface", AXES, margin=2)
    feature, label = at_angle(math.pi / 8, norm=3), torch.tensor([0])
    cosine, psi = math.cos(math.pi / 8), math.cos(math.pi / 4)
    for iteration in (0, 100, 10 ** 6):
        mix = sphereface_lambda(iteration)
        logits = head.logits(feature, label, iteration)
        assert logits[0, 0].item() == pytest.approx(3 * (mix * cosine + psi) / (1 + mix), rel=1e-5)
        assert logits[0, 1].item() == pytest.approx(3 * math.sin(math.pi / 8), rel=1e-5)
    assert sphereface_lambda(0) == 1000 and sphereface_lambda(10 ** 6) == LAMBDA_MIN


@pytest.mark.parametrize("name", ["normface", "cosface", "arcface"])
def test_below_the_norm_floor_logits_shrink_with_the_feature_and_gradients_stay_bounded(name):
    head, label = (Head(name, AXES, scale=16, margin=0.1 if name != "normface" else None),
                   torch.tensor([1]))
    # CosFace's is not damped
    whole_margin = torch.tensor([[0.0, 16 * 0.1 if name == "cosface" else 0.0]])
    unit = head.logits(at_angle(0.7), label) + whole_margin
    assert torch.allclose(head.logits(at_angle(0.7, norm=NORM_FLOOR * 0.01), label) + whole_margin,
                          unit * 0.01, atol=1e-6)
    assert torch.allclose(head.logits(at_angle(0.7, norm=NORM_FLOOR * 7), label) + whole_margin,
                          unit)
    # LeNets++'s features start near this norm
    feature = at_angle(0.7, norm=0.01).requires_grad_(True)
    F.nll_loss(head(feature, None, label), label).backward()
    # at most 2 s / NORM_FLOOR; x / |x| alone would give about 16 / 0.01
    assert feature.grad.norm() < 2 * 16


@pytest.mark.parametrize("name", HEADS[1:])
def test_gradients_are_finite_at_the_origin_and_at_cos_plus_minus_one(name):
    weight = torch.randn(10, 2, requires_grad=True)
    directions = F.normalize(weight.detach(), dim=1)
    features = torch.cat([torch.zeros(1, 2), directions[:1] * 2, -directions[:1] * 2,
                          directions[1:2]])
    features.requires_grad_(True)
    labels = torch.tensor([0, 0, 0, 3])
    log_probs = Head(name, weight)(features, None, labels, iteration=5)
    F.nll_loss(log_probs, labels).backward()
    assert log_probs.isfinite().all()
    assert features.grad.isfinite().all() and weight.grad.isfinite().all()


def pml_loss(name, scale, margin):
    """pytorch-metric-learning's loss of the same definition, or None."""
    if name == "normface":
        return losses.NormalizedSoftmaxLoss(10, 2, temperature=1 / scale)
    if name == "cosface":
        return losses.CosFaceLoss(10, 2, margin=margin, scale=scale)
    if name == "arcface":  # its margin is in degrees
        return losses.ArcFaceLoss(10, 2, margin=math.degrees(margin), scale=scale)
    return losses.SphereFaceLoss(10, 2, margin=margin, scale=1)


@pytest.mark.parametrize("name, scale, margin", [
    ("normface", 16.0, None), ("cosface", 16.0, 0.2), ("cosface", 30.0, 0.35),
    ("arcface", 16.0, 0.2),
    ("arcface", 8.0, 2.5),  # most targets past pi - m: the same fallback as insightface's
    ("sphereface", None, 4), ("sphereface", None, 2)])
def test_each_head_equals_pytorch_metric_learning(name, scale, margin):
    """The mean cross-entropy of our logits equals the library's loss, given the same class
    weights (it keeps them transposed), for features of norm 1 or more: below it our heads
    damp the logits (NORM_FLOOR), the library's do not. Its SphereFaceLoss has no
    annealing: mix = 0 here."""
    torch.manual_seed(0)
    features = F.normalize(torch.randn(256, 2), dim=1) * (1 + 4 * torch.rand(256, 1))
    labels, weight = torch.randint(0, 10, (256,)), torch.randn(10, 2)
    oracle = pml_loss(name, scale, margin)
    oracle.W.data = weight.T.clone()
    ours = F.cross_entropy(Head(name, weight, scale, margin).logits(features, labels, mix=0.0),
                           labels)
    assert ours.item() == pytest.approx(oracle(features, labels).item(), rel=1e-5)


def test_angular_heads_predict_by_the_largest_cosine():
    weight = torch.tensor([[10.0, 0.0], [0.0, 1.0]])  # class 0's long weight wins ip2's argmax
    feature = at_angle(1.2)  # nearer class 1 in angle
    log_probs = F.log_softmax(feature @ weight.T, dim=1)
    assert Head("softmax", weight).predict(feature, log_probs).item() == 0
    for name in HEADS[1:]:
        assert Head(name, weight).predict(feature, log_probs).item() == 1


def test_softmax_passes_the_articles_log_probs_through():
    log_probs = torch.randn(4, 10)
    assert Head("softmax")(torch.randn(4, 2), log_probs,
                           torch.zeros(4, dtype=torch.long)) is log_probs


def test_defaults_are_filled_in():
    for name in HEADS:
        assert check_head_settings(name, None, None) == (DEFAULT_SCALE.get(name),
                                                         DEFAULT_MARGIN.get(name))
    assert check_head_settings("sphereface", None, 3.0) == (None, 3)


def test_the_ends_of_each_range_are_allowed():
    assert check_head_settings("arcface", 1000.0, 0.0) == (1000.0, 0.0)
    assert check_head_settings("cosface", 1e-3, 1.99) == (1e-3, 1.99)
    assert check_head_settings("sphereface", None, 10.0) == (None, 10)
    assert check_head_settings("sphereface", None, 1.0) == (None, 1)


@pytest.mark.parametrize("name, scale, margin, message", [
    ("cosface", -1.0, None, "--scale must be finite and not negative"),
    ("cosface", math.nan, None, "--scale must be finite and not negative"),
    ("arcface", 0.0, None, "--scale must be positive"),
    ("cosface", None, -0.1, "--margin must be finite and not negative"),
    ("arcface", None, math.nan, "--margin must be finite and not negative"),
    ("arcface", None, math.pi, "must be below pi"),
    ("sphereface", None, 2.5, "must be an integer from 1 to 10"),
    ("sphereface", None, 0.0, "must be an integer from 1 to 10"),
    ("sphereface", 4.0, None, "--scale does not apply to --head sphereface"),
    ("normface", None, 0.2, "--margin does not apply to --head normface"),
    ("softmax", 16.0, None, "--scale does not apply to --head softmax"),
    ("magface", None, None, "--head must be one of"),
    # beyond each head's range: overflows, a loop of m steps, or a margin no feature can meet
    ("cosface", None, 1e38, "--margin of cosface is a cosine margin and must be below 2"),
    ("cosface", None, 2.0, "--margin of cosface is a cosine margin and must be below 2"),
    ("sphereface", None, 1e20, "--margin of sphereface multiplies the angle and must be an "
                               "integer from 1 to 10"),
    ("sphereface", None, 1000000.0, "must be an integer from 1 to 10"),
    ("sphereface", None, 11.0, "must be an integer from 1 to 10"),
    ("arcface", 1e38, None, "--scale must be at most 1000"),
    ("normface", 1000.5, None, "--scale must be at most 1000"),
])
def test_bad_values_are_one_line(name, scale, margin, message):
    with pytest.raises(HeadSettingsError, match=message) as error:
        check_head_settings(name, scale, margin)
    assert "\n" not in str(error.value)


def test_retrieval_compares_directions_for_angular_heads():
    features = torch.tensor([[3.0, 4.0], [0.0, -0.5]])
    assert torch.equal(Head("softmax", AXES).retrieval_features(features), features)
    assert torch.allclose(Head("arcface", AXES).retrieval_features(features),
                          torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
