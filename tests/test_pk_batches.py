import itertools

import pytest
import torch

from mnist_loader import TensorLoader

from run_machinery.datasets import load_dataset
from run_machinery.errors import UserError
from run_machinery.pk_batches import BatchError, PKLoader, training_loader


def pk_loader(mnist_dir, p, k, seed=0, **kwargs):
    return load_dataset(mnist_dir, 64, seed=seed, classes_per_batch=p, images_per_class=k,
                        **kwargs)[0]


@pytest.mark.parametrize("p, k", [(4, 7), (2, 30), (9, 10)])
def test_pk_batches_hold_p_classes_of_k_distinct_images(mnist_dir, p, k):
    train_loader, test_loader, _ = load_dataset(mnist_dir, 64, 50, seed=2, holdout_classes=[3],
                                                classes_per_batch=p, images_per_class=k)
    steps = 270 // (p * k)  # 300 images less the 30 threes
    assert (len(train_loader), train_loader.batch_size, train_loader.num_samples) == \
           (steps, p * k, steps * p * k)
    batches = list(train_loader)
    assert len(batches) == steps
    for images, labels in batches:
        groups = labels.view(p, k)  # class by class
        assert (groups == groups[:, :1]).all() and groups[:, 0].unique().numel() == p
        assert 3 not in labels.tolist()
        assert torch.unique(images.flatten(1), dim=0).size(0) == p * k  # distinct images
    assert type(test_loader) is TensorLoader and len(test_loader) == 2  # never PK


def test_pk_takes_each_class_in_its_own_order_round_again(mnist_dir):
    loader = pk_loader(mnist_dir, 1, 20, seed=1)  # 15 steps of one class: some come twice
    batches = [(labels[0].item(), images.flatten(1)) for images, labels in loader]
    twice = 0
    for digit in range(10):
        picks = [images for label, images in batches if label == digit]
        if len(picks) >= 2:
            twice += 1
            # The second pick goes on where the first stopped: the 10 left, then 10 again.
            assert torch.unique(torch.cat(picks[:2]), dim=0).size(0) == 30
            assert torch.equal(picks[1][10:], picks[0][:10])
    assert twice


def test_pk_plan_is_seeded_and_changes_every_epoch(mnist_dir):
    first = [labels for _, labels in pk_loader(mnist_dir, 4, 5, seed=5)]
    loader = pk_loader(mnist_dir, 4, 5, seed=5)
    epoch1, epoch2 = ([labels for _, labels in loader] for _ in range(2))
    other = [labels for _, labels in pk_loader(mnist_dir, 4, 5, seed=6)]
    assert len(first) == 15
    assert all(torch.equal(a, b) for a, b in zip(first, epoch1, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_pk_ranks_split_each_global_batch(mnist_dir):
    single = pk_loader(mnist_dir, 4, 6, seed=9)
    ranks = [PKLoader(single.images, single.labels, 64, shuffle=True,
                      generator=torch.Generator().manual_seed(9), rank=rank, world_size=2,
                      classes_per_batch=4, images_per_class=6) for rank in range(2)]
    assert all((len(loader), loader.batch_size, loader.num_samples) == (12, 12, 144)
               for loader in ranks)
    batches = [list(loader) for loader in ranks]
    for step, (images, labels) in enumerate(single):
        # Rank r holds items r, r + 2, ... of the single-process batch of that step.
        together = torch.stack([batches[rank][step][0] for rank in range(2)], dim=1)
        assert torch.equal(together.flatten(0, 1), images)
        assert torch.equal(torch.stack([batches[rank][step][1] for rank in range(2)],
                                       dim=1).flatten(), labels)


def test_pk_resumes_mid_epoch(mnist_dir):
    loader = pk_loader(mnist_dir, 3, 8, seed=4)
    next(iter(loader))  # the second epoch's plan is drawn from a used generator
    state = loader.generator.get_state()
    epoch = list(loader)
    loader.generator.set_state(state)
    rest = list(itertools.islice(loader, 3, None))
    assert len(rest) == len(epoch) - 3 == 9
    for (images, labels), (expected_images, expected_labels) in zip(rest, epoch[3:]):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


@pytest.mark.parametrize("p, k, kwargs, fragment", [
    (4, None, {}, "go together"),
    (None, 4, {}, "go together"),
    (0, 4, {}, "--classes_per_batch 0 must be from 1 to the 10 classes"),
    (10, 4, {"holdout_classes": [3]}, "--classes_per_batch 10 must be from 1 to the 9 classes"),
    (4, 0, {}, "--images_per_class 0 must be from 1 to 30"),
    (4, 31, {}, "--images_per_class 31 must be from 1 to 30"),
    (4, 7, {"world_size": 3}, "28 images do not split evenly among 3 processes"),
])
def test_bad_pk_sizes_are_refused(mnist_dir, p, k, kwargs, fragment):
    with pytest.raises(ValueError) as error:
        pk_loader(mnist_dir, p, k, **kwargs)
    message = str(error.value)
    assert fragment in message and "\n" not in message
    assert "--classes_per_batch" in message or "--images_per_class" in message


def test_pk_needs_a_shuffled_loader(mnist_dir):
    test_loader = load_dataset(mnist_dir, 64, 64)[1]
    with pytest.raises(ValueError, match="--classes_per_batch and --images_per_class only"):
        PKLoader(test_loader.images, test_loader.labels, 8, classes_per_batch=2,
                 images_per_class=2)


def test_the_plain_loader_without_p_or_k_and_a_user_error_with_one():
    assert training_loader() is TensorLoader
    with_p = training_loader(4, None)
    assert with_p.func is PKLoader and with_p.keywords == {"classes_per_batch": 4,
                                                           "images_per_class": None}
    assert issubclass(BatchError, UserError)  # main() prints it in one line


def test_without_pk_the_shuffle_is_as_before(mnist_dir):
    loader = load_dataset(mnist_dir, 64, seed=7, classes_per_batch=None,
                          images_per_class=None)[0]
    generator = torch.Generator().manual_seed(7)
    assert (len(loader), loader.batch_size, loader.num_samples) == (5, 64, 300)
    for _ in range(2):
        order = torch.randperm(300, generator=generator)  # the same draws, epoch after epoch
        batches = list(loader)
        for step, (_, labels) in enumerate(batches):
            assert torch.equal(labels, loader.labels[order[step * 64:(step + 1) * 64]])
    assert torch.equal(loader.generator.get_state(), generator.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_pk_loader_moved_to_cuda_draws_as_one_made_there(mnist_dir):
    moved = pk_loader(mnist_dir, 4, 7, seed=4).to("cuda")
    made_there = pk_loader(mnist_dir, 4, 7, seed=4, device="cuda")
    for (images, labels), (expected_images, expected_labels) in zip(moved, made_there, strict=True):
        assert images.device.type == "cuda"
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)

