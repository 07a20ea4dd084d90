import pytest
import torch

from metrics import retrieval_metrics, split_retrieval_metrics

# Points on a line (second coordinate 0) with a hand-worked answer:
#  item:   0    1    2    3    4    5
#  x:      0    1    2.2  3.5  10   -50
#  label:  A    A    B    A    B    C  (C alone: R = 0, not a query, still a neighbour)
# query 0 (R=2): neighbours 1(A) 2(B)    -> P@1 1, R-prec 1/2, AP@R (1)/2       = 0.5
# query 1 (R=2): neighbours 0(A) 2(B)    -> P@1 1, R-prec 1/2, AP@R             = 0.5
# query 2 (R=1): neighbour  1(A)         -> 0, 0, 0
# query 3 (R=2): neighbours 2(B) 1(A)    -> P@1 0, R-prec 1/2, AP@R (0 + 1/2)/2 = 0.25
# query 4 (R=1): neighbour  3(A)         -> 0, 0, 0
X = torch.tensor([0.0, 1.0, 2.2, 3.5, 10.0, -50.0])
FEATURES = torch.stack([X, torch.zeros_like(X)], dim=1)
LABELS = torch.tensor([0, 0, 1, 0, 1, 2])


@pytest.mark.parametrize("query_block", [1, 2, 1024])
def test_hand_worked_case(query_block):
    metrics = retrieval_metrics(FEATURES, LABELS, query_block=query_block)
    assert metrics["precision_at_1"] == pytest.approx(0.4)
    assert metrics["r_precision"] == pytest.approx(0.3)
    assert metrics["map_at_r"] == pytest.approx(0.25)


def test_separated_clusters_score_one():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(30)
    centres = torch.randn(10, 2, generator=generator) * 100
    features = centres[labels] + torch.randn(300, 2, generator=generator) * 0.1
    metrics = retrieval_metrics(features, labels, query_block=64)
    assert metrics == {"precision_at_1": 1.0, "r_precision": 1.0, "map_at_r": 1.0}


def test_split_seen_and_unseen():
    labels = torch.tensor([0, 0, 1, 1, 8, 8, 9, 9])
    features = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [-9, 0], [9, 0], [-9.1, 0], [9.1, 0]])
    metrics = split_retrieval_metrics(features, labels, unseen_digits=[8, 9])
    assert metrics["seen_map_at_r"] == 1.0
    # Among the unseen 8s and 9s every nearest neighbour is of the other digit.
    assert metrics["unseen_precision_at_1"] == 0.0
    assert set(metrics) == {f"{prefix}{name}" for prefix in ("", "seen_", "unseen_")
                            for name in ("precision_at_1", "r_precision", "map_at_r")}
