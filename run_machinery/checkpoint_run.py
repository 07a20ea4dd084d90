"""A checkpoint of the trainer read safely, with what its run says about it: the model, its
centres, head, dataset and classes, and the run's test split (for every command that
reads a checkpoint). It draws nothing, so export.py loads neither matplotlib nor
scikit-learn.
"""
from dataclasses import dataclass

import torch

from margin_heads import Head
from mnist_loader import DATASETS, TensorLoader, normalize
from mnist_net import Net

from .checkpointing import CheckpointError, load_checkpoint, load_module_state
from .cli import ALL_TEST_IMAGES, DEFAULT_DATASET_DIR, printable
from .datasets import class_names, normalization, read_split
from .devices import bf16_supported
from .errors import UserError
from .run_file import RunRecord, find_run_file
from .settings import parse_classes
from .training_state import is_training_state, unpack_training_state


def read_checkpoint(path):
    """The model, the centres (or None) and the held-out digits (or None) of a per-epoch
    `state_dict` file or of a training state, read once; `CheckpointError` when it is none,
    or holds a tensor of the wrong shape, a value that is no tensor, or a weight that is NaN
    or infinite (such a model's metrics would mean nothing)."""
    content = load_checkpoint(path)
    centers = holdout_classes = None
    if is_training_state(content):
        state = unpack_training_state(content, path)
        content, centers = (state["modules"].get("model"),
                            state["modules"].get("center_loss", {}).get("centers"))
        holdout_classes = state["args"].get("holdout_classes")
    if not isinstance(content, dict):
        raise CheckpointError(f"{path} holds a {type(content).__name__}, not a model's state_dict")
    for name, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    classifier = content.get("ip2.weight")  # the model's shape; else the article's, to compare
    model = Net.sized_for(content) if classifier is not None and classifier.dim() == 2 else Net()
    expected = set(model.state_dict())
    if set(content) != expected:
        missing, unexpected = sorted(expected - set(content)), sorted(set(content) - expected)
        raise CheckpointError(f"{path} is not a checkpoint of this project's Net "
                              f"(missing {', '.join(missing[:4]) or 'nothing'}"
                              f"{', ...' if len(missing) > 4 else ''}; "
                              f"unexpected {', '.join(map(str, unexpected[:4])) or 'nothing'})")
    load_module_state(model, content, f"model in {path}")
    for name, value in [*content.items(),
                        ("centres", centers if centers is not None else torch.zeros(()))]:
        if not value.isfinite().all():
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values; a model trained "
                                  f"into them gives no meaningful metrics")
    return model, centers, holdout_classes
@dataclass
class CheckpointRun:
    """A checkpoint's model and what its run says about it: centres (or None), held-out
    classes, the label of each class the model outputs, the head, the dataset, its folder,
    the names of its classes, the normalisation the run used (None: the dataset's, for runs
    that did not record it), and its run's RunRecord (None: no run.json was found)."""
    model: Net
    centers: torch.Tensor
    holdout_classes: list
    classes: list
    head: Head
    dataset: str
    dataset_dir: str
    class_names: list
    normalization: tuple
    run: RunRecord

    @property
    def run_test_images(self):
        """How many of the first test images the run tested on (its trainer's
        --max_test_samples) when the dataset is the run's; None: all of them."""
        return (self.run.max_test_samples
                if self.run and self.dataset == self.run.dataset else None)

    def model_on(self, device):
        """The model on `device` in the memory format the run tested in (channels-last by
        default), whose convolutions round as the run's did."""
        channels_last = self.run.channels_last if self.run else True
        return self.model.to(device, memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)

    def tests_in_bf16(self, device):
        """Whether the run tested under --amp, as evaluating it on `device` then does (where
        bf16 runs natively): with `model_on`, its figures are its training log's."""
        return bool(self.run and self.run.amp) and bf16_supported(device)

    def test_split(self, device, limit=None, batch_size=1024):
        """The test split of the run's dataset, normalised as the run's training was: its
        first `limit` images, all of them for ALL_TEST_IMAGES, by default (None) the run's
        own test images (see `run_test_images`), so that the figures are its training log's."""
        limit = (self.run_test_images if limit is None
                 else None if limit == ALL_TEST_IMAGES else limit)
        return load_test_split(self.dataset_dir, device, limit, batch_size, self.dataset,
                               self.normalization)

    def validation_split(self, device, count, seed=0, batch_size=1024):
        """A validation split from the training images of the trained classes (never the
        test split): `count` of them drawn at random (seeded), all of them when fewer,
        normalised as the run's training was, in a TensorLoader on `device`."""
        images, labels = read_split(self.dataset_dir, train=True, dataset=self.dataset)
        trained = torch.nonzero(torch.isin(labels, torch.tensor(self.classes))).flatten()
        chosen = trained[torch.randperm(trained.numel(),
                                        generator=torch.Generator().manual_seed(seed))[:count]]
        return split_loader(images[chosen], labels[chosen], device, batch_size, self.dataset,
                            self.dataset_dir, self.normalization)


def open_checkpoint(path, holdout_classes=None, head=None, dataset=None, dataset_dir=None,
                    needs_dataset=False):
    """The CheckpointRun of the checkpoint `path`. The held-out classes (indices or names),
    the head, the dataset and its folder are the run's (from its run.json, else the
    training state), unless given here; so are the class names and the normalisation when
    the dataset is the run's. UserError when a folder dataset's class folders are no longer
    the run's, and, with `needs_dataset` (a command that cannot take MNIST for granted),
    when no run.json says the dataset and none is given."""
    model, centers, stored_holdout_classes = read_checkpoint(path)
    run = find_run_file(path)
    if run is None and dataset is None and needs_dataset:
        raise UserError(f"{printable(path)} has no run.json beside it or in the folder above to "
                        f"say its dataset; pass --dataset (and --dataset_dir, --head)")
    run_dataset = run.dataset if run else "mnist"  # runs from before the datasets were MNIST's
    dataset = dataset or run_dataset
    dataset_dir = dataset_dir or (run and run.dataset_dir) or str(DEFAULT_DATASET_DIR)
    names = class_names(dataset, dataset_dir=dataset_dir)  # a folder's, as it is now
    recorded = run.class_names if run and dataset == run_dataset else None
    if recorded and list(recorded) != names:
        where = (f"the class folders of {dataset_dir}" if DATASETS[dataset].class_names is None
                 else f"the classes of {DATASETS[dataset].title}")
        raise UserError(f"{where} ({', '.join(names)}) are not those the checkpoint was "
                        f"trained on ({', '.join(map(str, recorded))})")
    stats = run.normalization if run and dataset == run_dataset else None
    if holdout_classes is None:
        holdout_classes = (run.holdout_classes if run and run.holdout_classes is not None
                           else stored_holdout_classes)
    holdout_classes = sorted(set(parse_classes(dataset, holdout_classes or [], names)))
    classes = [label for label in range(len(names)) if label not in holdout_classes]
    num_classes = model.ip2.weight.shape[0]
    if len(classes) != num_classes:
        raise UserError(f"the checkpoint classifies {num_classes} classes, but {len(classes)} "
                        f"remain after holding out {holdout_classes}; pass --holdout_classes "
                        f"with the {len(names) - num_classes} classes held out in training")
    run_head = run.head if run else "softmax"  # runs from before the heads had softmax
    head = head or run_head
    scale, margin = (run.scale, run.margin) if run and head == run_head else (None, None)
    return CheckpointRun(model, centers, holdout_classes, classes,
                         Head(head, model.ip2.weight, scale, margin), dataset, dataset_dir, names,
                         stats, run)


def load_test_split(dataset_dir, device, limit=None, batch_size=1024, dataset="mnist",
                    stats=None):
    """The test split of `dataset` in `dataset_dir`, normalised as in training (by `stats`,
    the (mean, std) the run recorded, else the dataset's), as a TensorLoader on `device`."""
    images, labels = read_split(dataset_dir, train=False, limit=limit, dataset=dataset)
    return split_loader(images, labels, device, batch_size, dataset, dataset_dir, stats)


def split_loader(images, labels, device, batch_size, dataset, dataset_dir, stats):
    """uint8 `images` and their labels of `dataset` as a TensorLoader on `device`,
    normalised by `stats` (the run's (mean, std)), else the dataset's."""
    mean, std = stats or normalization(dataset, dataset_dir)
    return TensorLoader(normalize(images, device, mean, std), labels.to(device), batch_size,
                        mean=mean, std=std, class_names=class_names(dataset,
                                                                    dataset_dir=dataset_dir))
