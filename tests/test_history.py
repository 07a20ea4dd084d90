import pytest
import torch

from run_machinery.history import (
    EpochClock,
    EpochProgress,
    EpochRecord,
    EpochTimes,
    History,
    LossMetrics,
)


def record(epoch, retrieval=None):
    return EpochRecord(epoch, 0.001, 0.5, LossMetrics(0.5, 2.0, 0.25), LossMetrics(0.4, 2.1, 0.3),
                       retrieval or {"precision_at_1": 0.6, "r_precision": 0.5, "map_at_r": 0.45},
                       3.5, EpochTimes(3.0, 0.3, 0.2, 0.1))


def add(history, record, test_features, test_labels):
    """Add `record`'s epoch to `history` as the trainer does."""
    history.add(record, test_features, test_labels)
    assert history.records[-1] is record and torch.equal(history.test_labels, test_labels)
    return record


def test_a_record_is_one_line_and_one_csv_row():
    assert record(7).line() == ("Epoch:   7, train acc: 0.5000, train loss: 2.0000, "
                                "test acc: 0.4000, test loss: 2.1000, test MAP@R: 0.4500")
    assert list(record(7).row().values()) == [7, 0.001, 0.5, 0.5, 2.0, 0.25, 0.4, 2.1, 0.3, 0.6,
                                              0.5, 0.45, 3.5]
    unseen = record(1, {"map_at_r": 0.4, "seen_map_at_r": 0.5, "unseen_map_at_r": 0.2})
    assert unseen.line().endswith("test MAP@R: 0.4000, unseen MAP@R: 0.2000")


def test_the_triplet_loss_has_a_column_and_a_place_in_the_line_only_when_trained_with():
    with_triplet = record(3)
    with_triplet.train = LossMetrics(0.5, 2.0, 0.25, 0.125)
    row = with_triplet.row()
    assert row["train_triplet_loss"] == 0.125 and "test_triplet_loss" not in row
    assert list(row)[:7] == ["epoch", "lr", "center_lr", "train_acc", "train_loss",
                             "train_center_loss", "train_triplet_loss"]
    assert "train loss: 2.0000, train triplet: 0.1250, test acc" in with_triplet.line()
    assert "triplet" not in record(3).line() and "train_triplet_loss" not in record(3).row()


def test_history_csv_text():
    history = History()
    for epoch in (1, 2):
        add(history, record(epoch), torch.zeros(3, 2), torch.arange(3))
    lines = history.csv_text().splitlines()
    assert (lines[0].startswith("epoch,lr,center_lr,train_acc,")
            and lines[0].endswith(",map_at_r,seconds"))
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]


def test_history_round_trip_through_a_weights_only_file(tmp_path):
    history = History()
    add(history, record(1), torch.randn(3, 2), torch.arange(3))
    torch.save(history.as_saved(), tmp_path / "h.pt")
    again = History.from_saved(torch.load(tmp_path / "h.pt", weights_only=True))
    assert again.records == history.records and again.records[0].line() == record(1).line()
    assert torch.equal(again.test_features[0], history.test_features[0])
    assert torch.equal(again.test_labels, history.test_labels)


def test_epoch_progress_sums_per_image_and_round_trips(tmp_path):
    progress = EpochProgress.start(6, 2, torch.device("cpu"))
    end = progress.add(1, 0, torch.ones(4, 2), torch.arange(4), torch.tensor(3), torch.tensor(2.0),
                       torch.tensor(0.5))
    end = progress.add(2, end, torch.zeros(2, 2), torch.arange(2), torch.tensor(1),
                       torch.tensor(1.0), torch.tensor(0.25))
    assert end == 6 and progress.step == 2
    assert ((progress.correct.item(), progress.loss_sum.item(), progress.center_loss_sum.item())
            == (4, 10.0, 2.5))
    torch.save(progress.as_saved(), tmp_path / "p.pt")
    again = EpochProgress.from_saved(torch.load(tmp_path / "p.pt", weights_only=True),
                                     torch.device("cpu"))
    assert again.step == 2 and torch.equal(again.features, progress.features)


def test_the_clock_adds_each_part():
    clock = EpochClock()
    for part in ("train", "test", "metrics", "files"):
        clock.lap(part)
    times = clock.times
    assert min(times.train, times.test, times.metrics, times.files) >= 0
    assert clock.seconds() == pytest.approx(times.train + times.test + times.metrics)
