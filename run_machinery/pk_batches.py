"""PK batches, as re-identification trains for the batch-hard triplet loss (triplet_loss):
every global batch holds K distinct images of each of P distinct classes.

`PKLoader` is mnist_loader's TensorLoader drawing such batches for training; the test
split keeps the plain ones.
"""
from functools import partial

import torch

from mnist_loader import TensorLoader

from .errors import UserError


class BatchError(UserError, ValueError):
    """PK batches that cannot be drawn from this data; the message, one line, names the flags."""


def training_loader(classes_per_batch=None, images_per_class=None):
    """What makes the training loader (mnist_loader.load_dataset's `train_loader`): a
    PKLoader of P and K when either is given, else the plain TensorLoader."""
    if classes_per_batch is None and images_per_class is None:
        return TensorLoader
    return partial(PKLoader, classes_per_batch=classes_per_batch,
                   images_per_class=images_per_class)


class PKLoader(TensorLoader):
    """A TensorLoader (see mnist_loader) whose batches are PK batches: with
    `classes_per_batch` P and `images_per_class` K (both, and only with `shuffle`), every
    global batch holds K distinct images of each of P distinct classes (of those present in
    `labels`), grouped class by class; an epoch has `len(labels) // (P*K)` of them (at least
    one), and `batch_size` is ignored. Each epoch, each class's images are taken in a random
    order of their own, from where the class's last batch left off, round again once all
    were taken. Under distributed training rank `r` takes items r, r + world_size, ... of
    each global batch, so P*K must divide evenly.
    """

    def __init__(self, images, labels, batch_size, classes_per_batch=None,
                 images_per_class=None, shuffle=False, **kwargs):
        super().__init__(images, labels, batch_size, shuffle=shuffle, **kwargs)
        self.classes_per_batch, self.images_per_class = classes_per_batch, images_per_class
        global_batch = self._check_pk(shuffle)
        self.steps = max(1, labels.size(0) // global_batch)
        self.batch_size = global_batch // self.world_size
        # The images of an epoch, so that sums / (num_samples * world_size) are means.
        self.num_samples = self.steps * self.batch_size

    def _check_pk(self, shuffle):
        """The global PK batch size, P*K; ValueError (one line, naming the flags) when P and
        K cannot make such batches of this loader's labels."""
        p, k = self.classes_per_batch, self.images_per_class
        if p is None or k is None:
            raise BatchError("--classes_per_batch and --images_per_class go together: "
                             "give both or neither")
        if not shuffle:
            raise BatchError("--classes_per_batch and --images_per_class only draw shuffled "
                             "(training) batches")
        _, counts = self._classes_in_order(self.labels)
        present = counts[counts > 0].tolist()
        if not present:
            raise BatchError("--classes_per_batch and --images_per_class need training images")
        if not 1 <= p <= len(present):
            raise BatchError(f"--classes_per_batch {p} must be from 1 to the {len(present)} "
                             "classes of the training images")
        if not 1 <= k <= min(present):
            raise BatchError(f"--images_per_class {k} must be from 1 to {min(present)}, the "
                             "training images of the smallest class")
        if p * k % self.world_size:
            raise BatchError(f"--classes_per_batch {p} x --images_per_class {k} = {p * k} "
                             f"images do not split evenly among {self.world_size} processes")
        return p * k

    def _classes_in_order(self, labels):
        """Per label (0, 1, ...): where its items start in `labels` sorted, and how many there
        are (searchsorted rather than bincount: deterministic on every device)."""
        values = torch.arange(self.class_of_label.numel(), device=labels.device)
        ordered = labels.sort().values
        starts = torch.searchsorted(ordered, values)
        return starts, torch.searchsorted(ordered, values, right=True) - starts

    def _pk_plan(self):
        """The items of every global PK batch of one epoch, (steps, P*K), class by class:
        all drawn here from `generator`, on the data's device, with no host sync."""
        p, k, labels = self.classes_per_batch, self.images_per_class, self.labels
        device = labels.device
        starts, counts = self._classes_in_order(labels)
        # Every class's items in a random order of their own: a random permutation, then
        # stably grouped by label.
        shuffled = torch.randperm(labels.size(0), device=device, generator=self.generator)
        by_class = shuffled[labels[shuffled].argsort(stable=True)]
        # P distinct classes per step: the first P of a random order of the present ones
        # (the absent ones, keyed 2 > any draw in [0, 1), come last).
        keys = torch.rand(self.steps, counts.numel(), device=device, generator=self.generator)
        chosen = keys.masked_fill(counts == 0, 2.0).argsort(dim=1)[:, :p]
        # How often each chosen class was chosen in earlier steps: its next K items start
        # there in its order, round again past its end (K <= its size: K distinct items).
        picked = torch.zeros_like(keys, dtype=torch.long).scatter_(1, chosen, 1)
        earlier = (picked.cumsum(0) - picked).gather(1, chosen)
        within = ((earlier * k).unsqueeze(2) + torch.arange(k, device=device)
                  ) % counts[chosen].unsqueeze(2)
        return by_class[starts[chosen].unsqueeze(2) + within].flatten(1)

    def __iter__(self):
        # Drawn whole at the start, so a resumed epoch (the generator's state of its start
        # restored, the steps done skipped) gets the same batches.
        plan = self._pk_plan()[:, self.rank::self.world_size]
        for index in plan:
            yield self.images[index], self.labels[index]
