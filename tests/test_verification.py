import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from run_machinery import verification
from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.embedding import embed
from run_machinery.errors import UserError
from run_machinery.verification import (
    FARS,
    PairHistogram,
    calibrate,
    check_far,
    impostors_needed,
    record_threshold,
    verification_figures,
)


def all_pairs(features, labels):
    """Every pair i < j: its distance (computed as the module does) and whether genuine."""
    i, j = torch.triu_indices(labels.numel(), labels.numel(), 1)
    distances = torch.cdist(features.float(), features.float(),
                            compute_mode="donot_use_mm_for_euclid_dist")[i, j]
    return distances.numpy(), (labels[i] == labels[j]).numpy()


def sklearn_figures(distances, genuine):
    """AUC, EER (linear between the ROC's points on each side), and max TAR at FAR <= f for
    each f of FARS, from scikit-learn's roc_curve of the negated distances."""
    far, tar, _ = roc_curve(genuine, -distances, drop_intermediate=False)
    frr = 1 - tar
    after = np.nonzero(far >= frr)[0][0]
    step = (far[after] - far[after - 1]) - (frr[after] - frr[after - 1])
    eer = far[after - 1] + (frr[after - 1] - far[after - 1]) / step * (far[after] - far[after - 1])
    return (roc_auc_score(genuine, -distances), eer,
            [tar[far <= f].max() for f in FARS], far, tar)


def assert_as_sklearn(features, labels):
    histogram = PairHistogram(features, labels)
    figures = verification_figures(histogram)
    distances, genuine = all_pairs(features, labels)
    auc, eer, tars, far, tar = sklearn_figures(distances, genuine)
    assert (figures["genuine_pairs"], figures["impostor_pairs"]) == (genuine.sum(),
                                                                     (~genuine).sum())
    assert abs(figures["auc"] - auc) <= figures["auc_resolution"] + 1e-12
    assert figures["eer"] == pytest.approx(eer, abs=1e-12)
    impostors = int((~genuine).sum())
    for entry, expected in zip(figures["tar_at_far"], tars):
        if impostors >= impostors_needed(entry["far"]):
            assert entry["tar"] == pytest.approx(expected, abs=1e-12)
            # the threshold: the nearest impostor pair not accepted
            assert entry["false_accepts"] == (distances[~genuine] < entry["threshold"]).sum()
            assert entry["false_accepts"] <= math.floor(entry["far"] * impostors)
            assert (distances[~genuine] <= entry["threshold"]).sum() > entry["far"] * impostors
        else:
            assert entry["tar"] is None and "impostor pairs" in entry["undefined"]
    # Every point of the coarse ROC is one of scikit-learn's (its counts, exactly).
    roc_far, roc_tar = histogram.roc()
    points = set(zip(np.rint(far * impostors).astype(int),
                     np.rint(tar * genuine.sum()).astype(int)))
    assert set(zip(np.rint(roc_far.numpy() * impostors).astype(int),
                   np.rint(roc_tar.numpy() * genuine.sum()).astype(int))) <= points
    return figures


@pytest.mark.parametrize("width", [2, 8])
def test_the_figures_are_scikit_learns_on_synthetic_features(width):
    generator = torch.Generator().manual_seed(width)
    labels = torch.randint(0, 10, (1500,), generator=generator)
    features = (torch.randn(1500, width, generator=generator)
                + 3 * torch.randn(10, width, generator=generator)[labels])
    figures = assert_as_sklearn(features, labels)
    assert all(entry["tar"] is not None for entry in figures["tar_at_far"])  # 1M impostors


def test_ties_and_duplicates_count_as_scikit_learn_counts_them():
    # Integer features: many pairs at the same distance, and duplicate images (distance 0).
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (400,), generator=generator)
    features = (torch.randint(0, 3, (400, 2), generator=generator) + 2 * labels[:, None]).float()
    figures = assert_as_sklearn(features, labels)
    # Each coarse bin holds one distance here: the pairs within one bin are true ties, and
    # the AUC is exact.
    distances, genuine = all_pairs(features, labels)
    assert figures["auc_resolution"] > 0
    assert figures["auc"] == pytest.approx(roc_auc_score(genuine, -distances), abs=1e-12)


def test_the_figures_are_scikit_learns_on_a_trained_models_features(two_epoch_run):
    _, out = two_epoch_run
    checkpoint = open_checkpoint(out / "model" / "epoch_002.pth")
    features, _, labels = embed(checkpoint.model_on("cpu"), checkpoint.test_split("cpu"))
    figures = assert_as_sklearn(checkpoint.head.retrieval_features(features), labels)
    # 100 images, 4950 pairs: too few impostor pairs for FAR 1e-3 and 1e-4
    assert [entry["tar"] is None for entry in figures["tar_at_far"]] == [
        figures["impostor_pairs"] < impostors_needed(far) for far in FARS]


def test_an_angular_head_ranks_by_cosine(arcface_run):
    checkpoint = open_checkpoint(arcface_run / "model" / "epoch_002.pth")
    features, _, labels = embed(checkpoint.model_on("cpu"), checkpoint.test_split("cpu"))
    unit = checkpoint.head.retrieval_features(features)
    distances, genuine = all_pairs(unit, labels)
    cosines = (unit @ unit.T)[tuple(torch.triu_indices(100, 100, 1))].numpy()
    figures = verification_figures(PairHistogram(unit, labels))
    assert abs(figures["auc"] - roc_auc_score(genuine, cosines)) <= (
        figures["auc_resolution"] + 1e-4)  # cosines round otherwise than distances
    assert verification.distance_name(checkpoint.head) == "cosine"


def test_blocks_cover_every_pair_once(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 5, (300,), generator=generator)
    features = torch.randn(300, 3, generator=generator)
    whole = verification_figures(PairHistogram(features, labels))
    monkeypatch.setattr(verification, "BLOCK_ENTRIES", 700)  # blocks of two rows
    assert verification_figures(PairHistogram(features, labels)) == whole
    assert whole["genuine_pairs"] + whole["impostor_pairs"] == 300 * 299 // 2


def test_a_large_split_is_a_seeded_sample_of_it():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (500,), generator=generator)
    features = torch.randn(500, 2, generator=generator)
    sample = PairHistogram(features, labels, max_images=200)
    assert (sample.num_images, sample.sampled_from) == (200, 500)
    assert torch.equal(PairHistogram(features, labels, max_images=200).impostor, sample.impostor)
    assert sample.num_genuine + sample.num_impostor == 200 * 199 // 2
    assert PairHistogram(features, labels).sampled_from is None


def test_a_threshold_at_a_far_and_its_figures_elsewhere():
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 10, (600,), generator=generator)
    centres = 3 * torch.randn(10, 2, generator=generator)
    features = torch.randn(600, 2, generator=generator) + centres[labels]
    threshold = calibrate(PairHistogram(features, labels), far=1e-2)
    distances, genuine = all_pairs(features, labels)
    accepted = distances < threshold["threshold"]
    assert threshold["false_accepts"] == accepted[~genuine].sum()
    assert threshold["reached_far"] <= 1e-2 and threshold["tar"] == accepted[genuine].mean()
    test_labels = torch.randint(0, 10, (400,), generator=generator)
    test_features = torch.randn(400, 2, generator=generator) * 1.3 + centres[test_labels]
    measured = verification_figures(PairHistogram(test_features, test_labels),
                                    threshold=threshold["threshold"])["at_threshold"]
    test_distances, test_genuine = all_pairs(test_features, test_labels)
    test_accepted = test_distances < threshold["threshold"]
    assert measured["tar"] == pytest.approx(test_accepted[test_genuine].mean(), abs=1e-12)
    assert measured["reached_far"] == pytest.approx(test_accepted[~test_genuine].mean(),
                                                    abs=1e-12)


def test_too_few_validation_pairs_or_a_far_out_of_range_is_one_line():
    labels = torch.arange(20) % 4
    features = torch.randn(20, 2)
    with pytest.raises(UserError, match=r"needs at least 10000 impostor pairs .* make 150;"):
        calibrate(PairHistogram(features, labels), far=1e-3)
    for far in (0, 1, -0.5, 2, float("nan")):
        with pytest.raises(UserError, match="--far must lie between 0 and 1"):
            check_far(far)
    with pytest.raises(UserError, match="genuine and impostor pairs"):
        verification_figures(PairHistogram(features, torch.zeros(20, dtype=torch.long)))


def test_the_distance_histogram_holds_every_pair_in_its_range():
    generator = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (200,), generator=generator)
    features = torch.randn(200, 2, generator=generator) * 4
    edges, genuine, impostor = PairHistogram(features, labels).distance_histogram(bins=30)
    distances, is_genuine = all_pairs(features, labels)
    assert len(edges) == 31 and edges[0] == 0 and edges[-1] >= distances.max()
    assert genuine.sum() == pytest.approx(1) and impostor.sum() == pytest.approx(1)
    expected, _ = np.histogram(distances[is_genuine], edges)
    # each coarse bin counted at its start: a pair may move one bin down at an edge
    assert np.abs(np.cumsum(genuine) - np.cumsum(expected) / is_genuine.sum()).max() < 0.05


def test_the_threshold_is_recorded_beside_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "model" / "epoch_007.pth"
    checkpoint.parent.mkdir()
    path = record_threshold(checkpoint, {"calibrated": {"threshold": 1.5}})
    assert path == tmp_path / "model" / "epoch_007.verification.json"
    assert json.loads(path.read_text()) == {"calibrated": {"threshold": 1.5}}


@pytest.mark.parametrize("far, needed", [(1e-1, 100), (1e-3, 10_000), (5e-6, 2_000_000),
                                         (0.3, 34)])
def test_a_far_rests_on_ten_over_it_impostor_pairs(far, needed):
    assert impostors_needed(far) == needed
