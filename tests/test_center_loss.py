import pytest
import torch

from center_loss import CenterLoss

# Two classes, feat_dim 2; class 0 twice in the batch, class 1 once, class 2 absent.
CENTERS = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
FEATURES = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
LABELS = torch.tensor([0, 0, 1])


def make_loss(size_average=True):
    loss = CenterLoss(3, 2, size_average=size_average)
    with torch.no_grad():
        loss.centers.copy_(CENTERS)
    return loss


def test_value_by_hand():
    # ||(1,0)-(0,0)||^2 = 1, ||(0,2)-(0,0)||^2 = 4, ||(3,1)-(1,1)||^2 = 4: sum 9, /2 = 4.5,
    # /B=3 -> 1.5
    assert make_loss()(LABELS, FEATURES).item() == pytest.approx(1.5)
    assert make_loss(size_average=False)(LABELS, FEATURES).item() == pytest.approx(4.5)


@pytest.mark.parametrize("loss_weight", [1.0, 0.5, 0.0])
def test_gradients_by_hand(loss_weight):
    center_loss = make_loss()
    feat = FEATURES.clone().requires_grad_()
    (loss_weight * center_loss(LABELS, feat)).backward()
    # Features: loss_weight * (x_i - c_{y_i}) / B.
    expected_feat = loss_weight * torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 0.0]]) / 3
    assert torch.allclose(feat.grad, expected_feat)
    # Centres, whatever the weight: sum_{y_i=j} (c_j - x_i) / (1 + n_j) / B.
    # class 0: ((0,0)-(1,0) + (0,0)-(0,2)) / 3 / 3 = (-1, -2) / 9
    # class 1: ((1,1)-(3,1)) / 2 / 3 = (-2, 0) / 6
    # class 2: absent -> 0
    expected_centers = torch.tensor([[-1 / 9, -2 / 9], [-2 / 6, 0.0], [0.0, 0.0]])
    assert torch.allclose(center_loss.centers.grad, expected_centers)


def test_centers_follow_class_mean_with_zero_weight():
    center_loss = make_loss()
    optimizer = torch.optim.SGD(center_loss.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        (0.0 * center_loss(LABELS, FEATURES)).backward()
        optimizer.step()
    assert torch.allclose(center_loss.centers[0], FEATURES[:2].mean(0), atol=1e-4)
    assert torch.allclose(center_loss.centers[1], FEATURES[2], atol=1e-4)
    assert torch.equal(center_loss.centers[2], CENTERS[2])


def test_centers_init_shape_and_parameter():
    loss = CenterLoss(10, 2)
    assert isinstance(loss.centers, torch.nn.Parameter)
    assert loss.centers.shape == (10, 2)


def test_wrong_feature_width():
    with pytest.raises(ValueError, match="feat_dim=2"):
        make_loss()(LABELS, torch.zeros(3, 3))


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_label_out_of_range(bad_label):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        make_loss()(torch.tensor([0, bad_label, 1]), FEATURES)


def test_label_count_mismatch():
    with pytest.raises(ValueError, match="2 labels for 3 features"):
        make_loss()(torch.tensor([0, 1]), FEATURES)


def test_split_batch_with_whole_batch_counts_gives_the_whole_batch_gradient():
    """As under DDP: two halves, each divided by its own size, their gradients averaged."""
    from center_loss import class_counts
    generator = torch.Generator().manual_seed(0)
    feat = torch.randn(8, 2, generator=generator)
    labels = torch.tensor([0, 1, 1, 2, 0, 0, 1, 2])
    whole = make_loss()
    whole(labels, feat).backward()
    halves = make_loss()
    counts = class_counts(labels, 3)
    for part in (slice(0, 4), slice(4, 8)):
        halves(labels[part], feat[part], counts).backward()
    assert torch.allclose(halves.centers.grad / 2, whole.centers.grad, atol=1e-6)
