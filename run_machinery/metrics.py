"""The retrieval quality of a split's features: Precision@1, R-Precision and
MAP@R, as in "A Metric Learning Reality Check" (Musgrave et al., ECCV 2020), and the figures
of person re-identification, CMC rank-k and mAP, as Market-1501 reports them.

Every item is a query against all the other items (Euclidean distance; the callers give an
angular head's features on the unit circle, so there it ranks by cosine). For a query of
class y, R is the number of other items of class y; with rel(k) = 1 when the k-th
nearest neighbour is of class y:
  Precision@1 = rel(1)
  R-Precision = sum_{k<=R} rel(k) / R
  MAP@R       = sum_{k<=R} rel(k) * P(k) / R,  P(k) = sum_{i<=k} rel(i) / k
Re-identification ranks the whole gallery (all the other items) for each query:
  rank-k = 1 if an item of the query's class is among the k nearest
  AP     = sum_k rel(k) * P(k) / (number of items of the query's class in the gallery)
and mAP is the mean AP. Ties in distance are ranked in gallery order, and the distances
are computed pair by pair (not through a matrix product, whose rounding depends on the
block), so every figure ranks alike: rank-1 is Precision@1 exactly, duplicates included.
The metrics are means over the queries that have at least one other item of their class.
Distances are computed on the features' device, a block of queries at a time, so no
N x N matrix is ever held whole.
"""
import torch


def ranking_keys(features, queries):
    """Keys (len(queries), N) whose ascending order ranks all items for each query by
    Euclidean distance, ties in gallery order, the query itself last: the float32
    distance's bits (non-negative floats order as their bits do) then the gallery index."""
    distances = torch.cdist(features[queries], features,
                            compute_mode="donot_use_mm_for_euclid_dist")
    distances[torch.arange(queries.numel(), device=features.device), queries] = float("inf")
    num_items = features.size(0)
    return distances.view(torch.int32).long() * num_items + torch.arange(num_items,
                                                                         device=features.device)


def retrieval_metrics(features, labels, query_block=1024):
    """Precision@1, R-Precision and MAP@R (floats in [0, 1]) of `features` (N, D) with
    integer `labels` (N,), each item a query against all others."""
    features = features.float()
    num_items = labels.size(0)
    class_sizes = torch.bincount(labels)
    relevant_counts = class_sizes[labels] - 1  # R for every query
    sums = torch.zeros(3, dtype=torch.float64, device=features.device)
    for start in range(0, num_items, query_block):
        queries = torch.arange(start, min(start + query_block, num_items), device=features.device)
        r = relevant_counts[queries]
        k = int(r.max()) if r.numel() else 0
        if k == 0:
            continue
        neighbours = ranking_keys(features, queries).topk(k, dim=1, largest=False).indices
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


def reid_metrics(features, labels, ranks=(1, 5, 10), query_block=512):
    """CMC rank-k for each k of `ranks` (keys rank_1, ...) and mAP (mean_average_precision)
    of `features` (N, D) with integer `labels` (N,), each item a query against all others;
    `queries_without_match` counts the queries left out, having no other item of their class."""
    features = features.float()
    num_items = labels.size(0)
    metrics = {f"rank_{k}": float("nan") for k in ranks} | {"mean_average_precision": float("nan")}
    if num_items < 2:  # no query has a gallery to rank
        return metrics | {"queries_without_match": num_items}
    matches = torch.bincount(labels)[labels] - 1  # gallery items of each query's class
    hits = torch.zeros(len(ranks), dtype=torch.float64, device=features.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=features.device)
    positions = torch.arange(1, num_items, device=features.device)  # ranks in the gallery
    for start in range(0, num_items, query_block):
        queries = torch.arange(start, min(start + query_block, num_items), device=features.device)
        # the query itself, last, dropped
        gallery = ranking_keys(features, queries).argsort(dim=1)[:, :-1]
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


def nearest_gallery(features, queries, k=10):
    """The indices (len(queries), k) of the k nearest other items of each query in
    `queries` (indices into `features`), nearest first, ties in gallery order; fewer when
    there are not k other items."""
    keys = ranking_keys(features.float(), queries)
    return keys.topk(min(k, features.size(0) - 1), dim=1, largest=False).indices


def ranking_queries(labels, per_class=2, first_classes=()):
    """Query indices for a picture of retrieval: the first `per_class` items of each class,
    the classes of `first_classes` (e.g. the held-out ones) first."""
    classes = [*first_classes, *[c for c in labels.unique().tolist() if c not in first_classes]]
    return torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in classes])


def split_retrieval_metrics(features, labels, holdout_classes=()):
    """The retrieval and re-identification metrics over all items, and with held-out digits
    also among the seen digits' items alone and among the unseen digits' items alone, keys
    prefixed `seen_`/`unseen_`."""
    def both(features, labels):
        return retrieval_metrics(features, labels) | reid_metrics(features, labels)

    metrics = both(features, labels)
    if holdout_classes:
        unseen = torch.isin(labels, torch.tensor(list(holdout_classes), device=labels.device))
        for prefix, mask in (("seen_", ~unseen), ("unseen_", unseen)):
            metrics.update({prefix + name: value
                            for name, value in both(features[mask], labels[mask]).items()})
    return metrics
