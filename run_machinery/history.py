"""The records a run keeps: the sums of the epoch under way, and one record per epoch.

They are plain dataclasses; `as_saved()` / `from_saved()` turn them into the dicts of
tensors and numbers that a training state holds (loadable with `weights_only=True`).
"""
import csv
import dataclasses
import io
import time
from dataclasses import dataclass, field

import torch


@dataclass
class EpochProgress:
    """The epoch under way, kept on the device: the features and labels of the images seen
    so far, in the order seen, and the sums of correct answers, loss, its centre-loss part
    and its triplet part."""
    features: torch.Tensor
    labels: torch.Tensor
    correct: torch.Tensor
    loss_sum: torch.Tensor
    center_loss_sum: torch.Tensor
    step: int = 0
    triplet_loss_sum: torch.Tensor = None

    @classmethod
    def start(cls, num_samples, feat_dim, device):
        zero = torch.zeros((), device=device)
        return cls(torch.empty(num_samples, feat_dim, device=device),
                   torch.empty(num_samples, dtype=torch.long, device=device), zero,
                   zero.clone(), zero.clone(), triplet_loss_sum=zero.clone())

    def add(self, step, start, features, labels, correct, loss, center_loss, triplet_loss=None):
        """Record one step's batch, which starts at item `start` of the epoch."""
        end = start + labels.size(0)
        self.features[start:end] = features.detach()
        self.labels[start:end] = labels
        self.correct = self.correct + correct.float()
        self.loss_sum = self.loss_sum + loss.detach() * labels.size(0)
        self.center_loss_sum = self.center_loss_sum + center_loss.detach() * labels.size(0)
        if triplet_loss is not None:
            self.triplet_loss_sum = self.triplet_loss_sum + triplet_loss.detach() * labels.size(0)
        self.step = step
        return end

    def as_saved(self):
        # The training state's names since its version 3: the labels were then called digits.
        return {"features": self.features, "digits": self.labels, "correct": self.correct,
                "loss_sum": self.loss_sum, "center_loss_sum": self.center_loss_sum,
                "step": self.step, "triplet_loss_sum": self.triplet_loss_sum}

    @classmethod
    def from_saved(cls, saved, device):
        saved = {name: value.to(device) if torch.is_tensor(value) else value
                 for name, value in saved.items()}
        # States saved before the triplet loss have no sum of it: zero.
        triplet = saved.get("triplet_loss_sum", torch.zeros((), device=device))
        return cls(saved["features"], saved["digits"], saved["correct"], saved["loss_sum"],
                   saved["center_loss_sum"], saved["step"], triplet)


@dataclass
class LossMetrics:
    """Means per image over one split: accuracy, total loss, its centre-loss part, and its
    batch-hard triplet part (None when the run has none: no column then)."""
    acc: float
    loss: float
    center_loss: float
    triplet_loss: float = None


@dataclass
class EpochTimes:
    """Seconds of each part of an epoch, each ending where the host waits for the device
    anyway: the training steps (with their data), the test pass, the retrieval metrics,
    and the files (checkpoint, plots, history, training state)."""
    train: float = 0.0
    test: float = 0.0
    metrics: float = 0.0
    files: float = 0.0


class EpochClock:
    """Times the parts of an epoch into an EpochTimes: `lap(part)` ends a part."""

    def __init__(self):
        self.times = EpochTimes()
        self.last = time.perf_counter()

    def lap(self, part):
        now = time.perf_counter()
        setattr(self.times, part, getattr(self.times, part) + now - self.last)
        self.last = now
        return self.times

    def seconds(self):
        """Training, test pass and metrics so far."""
        return self.times.train + self.times.test + self.times.metrics


@dataclass
class EpochRecord:
    """The metrics of one epoch: one line on the screen, one row of history.csv."""
    epoch: int
    lr: float
    center_lr: float
    train: LossMetrics
    test: LossMetrics
    # Retrieval quality of the test features: precision_at_1, r_precision, map_at_r, and
    # with held-out digits the same prefixed seen_ and unseen_ (see metrics.py).
    retrieval: dict
    seconds: float  # training, test pass and metrics; the CSV's last column
    times: EpochTimes = field(default_factory=EpochTimes)

    def row(self):
        """The flat CSV row, in the column order of history.csv."""
        row = {"epoch": self.epoch, "lr": self.lr, "center_lr": self.center_lr}
        for split, metrics in (("train", self.train), ("test", self.test)):
            row.update({f"{split}_{name}": value for name, value in
                        dataclasses.asdict(metrics).items() if value is not None})
        row.update(self.retrieval)
        row["seconds"] = self.seconds
        return row

    def line(self):
        line = f"Epoch: {self.epoch:>3}, train acc: {self.train.acc:.4f}, "
        line += f"train loss: {self.train.loss:.4f}, "
        if self.train.triplet_loss is not None:
            line += f"train triplet: {self.train.triplet_loss:.4f}, "
        line += (f"test acc: {self.test.acc:.4f}, test loss: {self.test.loss:.4f}, "
                 f"test MAP@R: {self.retrieval['map_at_r']:.4f}")
        if "unseen_map_at_r" in self.retrieval:
            line += f", unseen MAP@R: {self.retrieval['unseen_map_at_r']:.4f}"
        return line


@dataclass
class History:
    """Every finished epoch's record and test features (for the animation), and the labels
    of the test images, on the host."""
    records: list = field(default_factory=list)
    test_features: list = field(default_factory=list)
    test_labels: torch.Tensor = None

    def add(self, record, test_features, test_labels):
        """Record a finished epoch: its EpochRecord, and a host copy of its test features
        and their labels."""
        self.records.append(record)
        self.test_features.append(test_features.cpu())
        self.test_labels = test_labels.cpu()

    def as_saved(self):
        return {"records": [dataclasses.asdict(record) for record in self.records],
                "test_features": self.test_features, "test_digits": self.test_labels}

    @classmethod
    def from_saved(cls, saved):
        records = [EpochRecord(**{**record, "train": LossMetrics(**record["train"]),
                                  "test": LossMetrics(**record["test"]),
                                  "times": EpochTimes(**record["times"])})
                   for record in saved["records"]]
        return cls(records, list(saved["test_features"]), saved["test_digits"])

    def csv_text(self):
        text = io.StringIO()
        rows = [record.row() for record in self.records]
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return text.getvalue()
