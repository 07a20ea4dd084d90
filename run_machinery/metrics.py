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


def item_keys(features, queries, items):
    """Keys (len(queries), len(items)) whose ascending order ranks `items` (indices into
    `features`) for each query by Euclidean distance, ties in gallery order: the float32
    distance's bits (non-negative floats order as their bits do) then the gallery index.
    A pair's distance does not depend on the other items asked for."""
    distances = torch.cdist(features[queries], features[items],
                            compute_mode="donot_use_mm_for_euclid_dist")
    return distances.view(torch.int32).to(torch.int64).mul_(features.size(0)).add_(items)


def ranking_keys(features, queries):
    """The keys of `item_keys` over all items (len(queries), N), the query itself last."""
    items = torch.arange(features.size(0), device=features.device)
    keys = item_keys(features, queries, items)
    keys[torch.arange(queries.numel(), device=features.device), queries] = torch.iinfo(
        torch.int64).max
    return keys


def _relevant_ranks(features, labels, queries):
    """The 1-based ranks (len(queries), max R) in the whole ranking of `ranking_keys` of each
    query's R relevant items (the other items of its class), nearest first, the rows padded
    past R with ones. Only the relevant items are ranked, the queries of a class together:
    their keys sorted, then each other item placed among them by a binary search; the count
    of other items before each relevant one is a cumulative sum of those places."""
    device = features.device
    query_labels = labels[queries]
    top = int((torch.bincount(labels)[query_labels] - 1).max())
    rank = torch.ones(queries.numel(), top, dtype=torch.long, device=device)
    for label in query_labels.unique().tolist():
        rows = torch.nonzero(query_labels == label).flatten()
        own = labels == label
        relevant_keys = item_keys(features, queries[rows], torch.nonzero(own).flatten())
        # The query itself (distance 0, as the item of its class it is) sorts last and drops.
        relevant_keys[torch.arange(rows.numel(), device=device),
                      torch.searchsorted(torch.nonzero(own).flatten(), queries[rows])] = (
            torch.iinfo(torch.int64).max)
        count = relevant_keys.size(1) - 1
        relevant_keys = relevant_keys.sort(dim=1).values[:, :count].contiguous()
        others = item_keys(features, queries[rows], torch.nonzero(~own).flatten())
        places = torch.searchsorted(relevant_keys, others)
        before = torch.zeros(rows.numel(), count + 1, dtype=torch.long, device=device)
        before.scatter_add_(1, places, torch.ones((), dtype=torch.long,
                                                  device=device).expand_as(places))
        rank[rows, :count] = (torch.arange(1, count + 1, device=device)
                              + before[:, :count].cumsum(1))
    return rank


def _ranked_figures(features, labels, ranks=(1, 5, 10), retrieval_block=1024, reid_block=512):
    """Every figure of `retrieval_metrics` and `reid_metrics` from one ranking of the
    relevant items, `reid_block` queries at a time. Each float is computed as an
    argsort of the whole gallery would give it: the same rows (zeros where an item is not
    relevant, the same row lengths: a retrieval row is as long as the largest R of its
    `retrieval_block`, a re-ID row as the gallery) summed the same way, block by block, so
    the figures are those of sorting every distance, to the bit."""
    features = features.float()
    device = features.device
    num_items = labels.size(0)
    metrics = {f"rank_{k}": float("nan") for k in ranks} | {"mean_average_precision": float("nan")}
    nan_retrieval = {"precision_at_1": float("nan"), "r_precision": float("nan"),
                     "map_at_r": float("nan")}
    if num_items < 2:  # no query has a gallery to rank
        return nan_retrieval | metrics | {"queries_without_match": num_items}
    matches = torch.bincount(labels)[labels] - 1  # R: the gallery items of each query's class
    row_length = torch.zeros_like(matches)  # of each query's retrieval row
    for start in range(0, num_items, retrieval_block):
        row_length[start:start + retrieval_block] = matches[start:start + retrieval_block].max()
    per_query = torch.zeros(3, num_items, device=device)  # P@1, R-Precision, AP@R terms
    hits = torch.zeros(len(ranks), dtype=torch.float64, device=device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, num_items, reid_block):
        queries = torch.arange(start, min(start + reid_block, num_items), device=device)
        r = matches[queries]
        valid = r > 0
        if not valid.any():
            continue
        rank = _relevant_ranks(features, labels, queries)
        order = torch.arange(1, rank.size(1) + 1, device=device)
        present = order.unsqueeze(0) <= r.unsqueeze(1)  # the padding past R left out
        precision = order / rank  # P(k) at each relevant item, as a cumulative sum gives it
        first_match = torch.where(valid, rank[:, 0] - 1, num_items)
        hits += torch.stack([((first_match < k) & valid).sum() for k in ranks]).double()
        # Padding adds its zeros to the first column: adding zero leaves any float as it is.
        row = torch.zeros(queries.numel(), num_items - 1, device=device)
        row.scatter_add_(1, torch.where(present, rank - 1, 0), torch.where(present, precision, 0))
        ap = row.sum(1) / r.clamp(min=1)
        ap_sum += ap[valid].double().sum()
        # Retrieval: the k nearest, k = the largest R of the query's retrieval block.
        within_r = present & (rank <= r.unsqueeze(1))
        r_safe = r.clamp(min=1).float()
        for length in set(row_length[queries].unique().tolist()) - {0}:
            group = torch.nonzero(row_length[queries] == length).flatten()
            short = torch.zeros(group.numel(), length, device=device)
            short.scatter_add_(1, torch.where(within_r[group], rank[group] - 1, 0),
                               torch.where(within_r[group], precision[group], 0))
            per_query[:, queries[group]] = torch.stack([
                (rank[group, 0] == 1).float() * valid[group],
                within_r[group].sum(1) / r_safe[group] * valid[group],
                short.sum(1) / r_safe[group] * valid[group]])
    num_queries = int((matches > 0).sum())
    if num_queries:
        metrics = {f"rank_{k}": rate for k, rate in zip(ranks, (hits / num_queries).tolist())}
        metrics["mean_average_precision"] = (ap_sum / num_queries).item()
    metrics["queries_without_match"] = num_items - num_queries
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for start in range(0, num_items, retrieval_block):
        if row_length[start] > 0:  # each sum over the block's queries, as one vector
            sums += torch.stack([terms[start:start + retrieval_block].sum()
                                 for terms in per_query]).double()
    if num_queries == 0:
        return nan_retrieval | metrics
    precision_at_1, r_precision, map_at_r = (sums / num_queries).tolist()
    return {"precision_at_1": precision_at_1, "r_precision": r_precision,
            "map_at_r": map_at_r} | metrics


RETRIEVAL_KEYS = ("precision_at_1", "r_precision", "map_at_r")


def retrieval_metrics(features, labels, query_block=1024):
    """Precision@1, R-Precision and MAP@R (floats in [0, 1]) of `features` (N, D) with
    integer `labels` (N,), each item a query against all others."""
    figures = _ranked_figures(features, labels, retrieval_block=query_block)
    return {name: figures[name] for name in RETRIEVAL_KEYS}


def reid_metrics(features, labels, ranks=(1, 5, 10), query_block=512):
    """CMC rank-k for each k of `ranks` (keys rank_1, ...) and mAP (mean_average_precision)
    of `features` (N, D) with integer `labels` (N,), each item a query against all others;
    `queries_without_match` counts the queries left out, having no other item of their class."""
    figures = _ranked_figures(features, labels, ranks, reid_block=query_block)
    return {name: value for name, value in figures.items() if name not in RETRIEVAL_KEYS}


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
    metrics = _ranked_figures(features, labels)
    if holdout_classes:
        unseen = torch.isin(labels, torch.tensor(list(holdout_classes), device=labels.device))
        for prefix, mask in (("seen_", ~unseen), ("unseen_", unseen)):
            metrics.update({prefix + name: value
                            for name, value in _ranked_figures(features[mask], labels[mask]).items()})
    return metrics
