import math

import pytest
import torch

from conftest import REPO_DIR
from run_machinery.metrics import (
    nearest_gallery,
    reid_metrics,
    retrieval_metrics,
    split_retrieval_metrics,
)

SHIPPED_EMBEDDING = REPO_DIR / "models" / "article" / "model" / "epoch_040.test_embedding.pt"


# The reference: the figures as they were computed before the one ranking pass (issue 34.2),
# every query's whole gallery sorted, kept here alone so that the new figures are held to
# them bit for bit (benchmarks/metrics_ranking.py times the two).
def reference_ranking_keys(features, queries):
    distances = torch.cdist(features[queries], features,
                            compute_mode="donot_use_mm_for_euclid_dist")
    distances[torch.arange(queries.numel(), device=features.device), queries] = float("inf")
    num_items = features.size(0)
    return distances.view(torch.int32).long() * num_items + torch.arange(num_items,
                                                                         device=features.device)


def reference_retrieval_metrics(features, labels, query_block=1024):
    features = features.float()
    num_items = labels.size(0)
    class_sizes = torch.bincount(labels)
    relevant_counts = class_sizes[labels] - 1
    sums = torch.zeros(3, dtype=torch.float64, device=features.device)
    for start in range(0, num_items, query_block):
        queries = torch.arange(start, min(start + query_block, num_items), device=features.device)
        r = relevant_counts[queries]
        k = int(r.max()) if r.numel() else 0
        if k == 0:
            continue
        neighbours = reference_ranking_keys(features, queries).topk(k, dim=1,
                                                                    largest=False).indices
        relevant = (labels[neighbours] == labels[queries].unsqueeze(1)).float()
        ranks = torch.arange(1, k + 1, device=features.device)
        within_r = (ranks.unsqueeze(0) <= r.unsqueeze(1)).float()
        relevant = relevant * within_r
        precision_at_k = relevant.cumsum(1) / ranks
        r_safe = r.clamp(min=1).float()
        valid = (r > 0).float()
        sums += torch.stack([
            (relevant[:, 0] * valid).sum(),
            (relevant.sum(1) / r_safe * valid).sum(),
            ((precision_at_k * relevant).sum(1) / r_safe * valid).sum(),
        ]).double()
    num_queries = int((relevant_counts > 0).sum())
    if num_queries == 0:
        return {"precision_at_1": float("nan"), "r_precision": float("nan"),
                "map_at_r": float("nan")}
    precision_at_1, r_precision, map_at_r = (sums / num_queries).tolist()
    return {"precision_at_1": precision_at_1, "r_precision": r_precision, "map_at_r": map_at_r}


def reference_reid_metrics(features, labels, ranks=(1, 5, 10), query_block=512):
    features = features.float()
    num_items = labels.size(0)
    metrics = {f"rank_{k}": float("nan") for k in ranks} | {"mean_average_precision": float("nan")}
    if num_items < 2:
        return metrics | {"queries_without_match": num_items}
    matches = torch.bincount(labels)[labels] - 1
    hits = torch.zeros(len(ranks), dtype=torch.float64, device=features.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=features.device)
    positions = torch.arange(1, num_items, device=features.device)
    for start in range(0, num_items, query_block):
        queries = torch.arange(start, min(start + query_block, num_items), device=features.device)
        gallery = reference_ranking_keys(features, queries).argsort(dim=1)[:, :-1]
        relevant = labels[gallery] == labels[queries].unsqueeze(1)
        valid = matches[queries] > 0
        first_match = torch.where(relevant.any(1), relevant.float().argmax(1), num_items)
        hits += torch.stack([((first_match < k) & valid).sum() for k in ranks]).double()
        precision = relevant.cumsum(1) / positions
        ap = (precision * relevant).sum(1) / matches[queries].clamp(min=1)
        ap_sum += ap[valid].double().sum()
    num_queries = int((matches > 0).sum())
    if num_queries:
        metrics = {f"rank_{k}": rate for k, rate in zip(ranks, (hits / num_queries).tolist())}
        metrics["mean_average_precision"] = (ap_sum / num_queries).item()
    metrics["queries_without_match"] = num_items - num_queries
    return metrics


def reference_split_retrieval_metrics(features, labels, holdout_classes=()):
    def both(features, labels):
        return reference_retrieval_metrics(features, labels) | reference_reid_metrics(features,
                                                                                      labels)

    metrics = both(features, labels)
    if holdout_classes:
        unseen = torch.isin(labels, torch.tensor(list(holdout_classes), device=labels.device))
        for prefix, mask in (("seen_", ~unseen), ("unseen_", unseen)):
            metrics.update({prefix + name: value
                            for name, value in both(features[mask], labels[mask]).items()})
    return metrics


def assert_bit_identical(figures, reference):
    """Every figure the same float, to the bit (NaN where the reference has NaN)."""
    assert figures.keys() == reference.keys()
    for name, value in reference.items():
        assert (math.isnan(value) and math.isnan(figures[name])) or (
            figures[name] == value and math.copysign(1, figures[name]) == math.copysign(1, value)
        ), (name, figures[name], value)


def tied_features(count, width, seed):
    """Features on a coarse grid, many of them duplicates, so that distances tie often,
    within a class and across classes."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randint(-4, 5, (count, width), generator=generator).float() * 0.5
    features[count // 2:count // 2 + count // 8] = features[:count // 8]
    return features, torch.randint(0, 10, (count,), generator=generator)


@pytest.mark.parametrize("count, width, seed", [(700, 2, 0), (300, 16, 1)])
def test_the_figures_are_those_of_sorting_the_whole_gallery_ties_included(count, width, seed):
    features, labels = tied_features(count, width, seed)
    labels[:3] = 9  # ... and a class of one item, a query without a match
    labels[labels == 9] = torch.where(torch.arange(int((labels == 9).sum())) == 0, 9, 8)
    assert_bit_identical(split_retrieval_metrics(features, labels, holdout_classes=[7, 8]),
                         reference_split_retrieval_metrics(features, labels, [7, 8]))
    for block in (3, 100, 256):
        assert_bit_identical(retrieval_metrics(features, labels, query_block=block),
                             reference_retrieval_metrics(features, labels, query_block=block))
        assert_bit_identical(reid_metrics(features, labels, ranks=(1, 3), query_block=block),
                             reference_reid_metrics(features, labels, (1, 3), query_block=block))


@pytest.mark.skipif(not SHIPPED_EMBEDDING.exists(),
                    reason="the shipped model's cached test features are not at hand")
def test_the_figures_of_the_shipped_model_on_the_real_test_split_are_todays_to_the_bit():
    saved = torch.load(SHIPPED_EMBEDDING, weights_only=True)
    features, labels = saved["features"], saved["labels"]
    assert_bit_identical(split_retrieval_metrics(features, labels),
                         reference_split_retrieval_metrics(features, labels))
    # Held-out digits, on a part of the split to keep the reference's time down.
    assert_bit_identical(split_retrieval_metrics(features[:3000], labels[:3000], (8, 9)),
                         reference_split_retrieval_metrics(features[:3000], labels[:3000], (8, 9)))

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
    features = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [-9, 0], [9, 0], [-9.1, 0],
                             [9.1, 0]])
    metrics = split_retrieval_metrics(features, labels, holdout_classes=[8, 9])
    assert metrics["seen_map_at_r"] == 1.0
    # Among the unseen 8s and 9s every nearest neighbour is of the other digit.
    assert metrics["unseen_precision_at_1"] == 0.0
    assert metrics["seen_mean_average_precision"] == 1.0 and metrics["unseen_rank_1"] == 0.0
    assert set(metrics) == {f"{prefix}{name}" for prefix in ("", "seen_", "unseen_")
                            for name in ("precision_at_1", "r_precision", "map_at_r", "rank_1",
                                         "rank_5", "rank_10", "mean_average_precision",
                                         "queries_without_match")}


# Re-identification on the same points, the whole gallery ranked:
# query 0 (A): 1(A) 2(B) 3(A) 4 5     -> rank-1 hit, AP (1/1 + 2/3)/2 = 5/6
# query 1 (A): 0(A) 2(B) 3(A) 4 5     -> rank-1 hit, AP 5/6
# query 2 (B): 1 3 0 (A) 4(B) 5       -> first match at 4, AP 1/4
# query 3 (A): 2(B) 1(A) 0(A) 4 5     -> first match at 2, AP (1/2 + 2/3)/2 = 7/12
# query 4 (B): 3(A) 2(B) ...          -> first match at 2, AP 1/2
# query 5 (C): no other C             -> left out, counted
@pytest.mark.parametrize("query_block", [1, 4, 512])
def test_reid_hand_worked_case(query_block):
    metrics = reid_metrics(FEATURES, LABELS, query_block=query_block)
    assert (metrics["rank_1"] == pytest.approx(0.4)
            and metrics["rank_5"] == metrics["rank_10"] == 1.0)
    assert (metrics["mean_average_precision"]
            == pytest.approx((5 / 6 + 5 / 6 + 1 / 4 + 7 / 12 + 1 / 2) / 5))
    assert metrics["queries_without_match"] == 1


def test_reid_ties_are_ranked_in_gallery_order():
    # Query 0 (A) has 1 (B) and 2 (A) at the same distance: 1 comes first.
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    metrics = reid_metrics(features, torch.tensor([0, 1, 0]))
    assert metrics["rank_1"] == 0.5 and metrics["mean_average_precision"] == 0.75
    assert metrics["queries_without_match"] == 1  # the lone B


def test_every_figure_ranks_ties_alike_whatever_the_blocks():
    # Duplicates of other classes at distance 0 (Fashion-MNIST's test split has such images),
    # and near-ties that a matrix-product distance would round differently in another block.
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(300, 2, generator=generator) * 40
    labels = torch.randint(0, 10, (300,), generator=generator)
    features[150:200] = features[100:150]  # each of these a copy of an item of another class ...
    labels[150:200] = (labels[100:150] + 1) % 10  # ... so tie order decides Precision@1
    for retrieval_block, reid_block in ((1024, 512), (7, 64), (100, 3)):
        precision_at_1 = retrieval_metrics(features, labels,
                                           query_block=retrieval_block)["precision_at_1"]
        assert reid_metrics(features, labels, query_block=reid_block)["rank_1"] == precision_at_1
    first = nearest_gallery(features, torch.arange(100, 200))[:, 0]
    assert (torch.equal(first[:50], torch.arange(150, 200))
            and torch.equal(first[50:], torch.arange(100, 150)))


def test_rank_k_grows_with_k_and_rank_1_is_precision_at_1():
    generator = torch.Generator().manual_seed(3)
    features, labels = (torch.randn(500, 2, generator=generator),
                        torch.randint(0, 10, (500,), generator=generator))
    metrics = reid_metrics(features, labels, ranks=(1, 2, 5, 10, 50), query_block=128)
    assert ([metrics[f"rank_{k}"] for k in (1, 2, 5, 10, 50)]
            == sorted(metrics[f"rank_{k}"] for k in (1, 2, 5, 10, 50)))
    assert metrics["rank_1"] == pytest.approx(retrieval_metrics(features, labels)["precision_at_1"])


def test_every_metric_agrees_with_pytorch_metric_learning():
    """pytorch-metric-learning's AccuracyCalculator as the oracle, with the plain Euclidean
    distance (its default normalises the embeddings first) and k = all other items, so that
    its mean_average_precision is the whole-gallery mAP."""
    calculator_module = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator",
                                            reason="the test-only pytorch-metric-learning is not "
                                                   "installed")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.inference import CustomKNN
    generator = torch.Generator().manual_seed(7)
    features, labels = (torch.randn(400, 2, generator=generator),
                        torch.randint(0, 6, (400,), generator=generator))
    calculator = calculator_module.AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r",
                 "mean_average_precision"),
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)), k=399)
    oracle = calculator.get_accuracy(features, labels)
    ours = retrieval_metrics(features, labels) | reid_metrics(features, labels)
    assert ours["precision_at_1"] == pytest.approx(oracle["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(oracle["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(oracle["mean_average_precision_at_r"], abs=1e-6)
    assert ours["mean_average_precision"] == pytest.approx(oracle["mean_average_precision"],
                                                           abs=1e-6)


def test_nearest_gallery_and_the_queries_of_a_ranking_picture():
    from run_machinery.metrics import nearest_gallery, ranking_queries
    assert nearest_gallery(FEATURES, torch.tensor([0, 3]), k=3).tolist() == [[1, 2, 3], [2, 1, 0]]
    labels = torch.tensor([3, 1, 1, 3, 2, 1, 3])
    assert ranking_queries(labels, per_class=2, first_classes=[3]).tolist() == [0, 3, 1, 2, 4]


def test_nearest_gallery_of_a_split_smaller_than_k_gives_every_other_item():
    features = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    assert nearest_gallery(features, torch.tensor([0, 1]), k=10).tolist() == [[2, 1], [2, 0]]


@pytest.mark.parametrize("count", [0, 1])
def test_a_split_of_fewer_than_two_items_has_undefined_figures(count):
    features, labels = torch.rand(count, 2), torch.zeros(count, dtype=torch.long)
    metrics = split_retrieval_metrics(features, labels)
    assert all(math.isnan(metrics[key]) for key in ("precision_at_1", "map_at_r", "rank_1",
                                                    "rank_10", "mean_average_precision"))
    assert metrics["queries_without_match"] == count


def test_a_held_out_split_without_items_has_undefined_figures_and_the_rest_counts():
    features = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0]])
    metrics = split_retrieval_metrics(features, torch.tensor([0, 0, 1]), holdout_classes=[8, 9])
    assert metrics["seen_precision_at_1"] == metrics["precision_at_1"] == 1.0
    assert math.isnan(metrics["unseen_map_at_r"]) and math.isnan(metrics["unseen_rank_1"])
    assert metrics["unseen_queries_without_match"] == 0


def test_a_ranking_of_one_item_has_no_neighbours():
    assert nearest_gallery(torch.rand(1, 2), torch.tensor([0])).shape == (1, 0)
