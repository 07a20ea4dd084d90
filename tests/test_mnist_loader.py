import pytest
import torch
from torchvision import transforms
from torchvision.datasets import MNIST

from mnist_loader import TensorLoader, label_to_class, load_dataset, show_data

REFERENCE = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])


def reference_batch(dataset, indices):
    """What the article's DataLoader gives for these indices: PIL -> ToTensor -> Normalize."""
    images = torch.stack([REFERENCE(dataset[i][0]) for i in indices.tolist()])
    labels = torch.tensor([dataset[i][1] for i in indices.tolist()])
    return images, labels


def test_batches_equal_totensor_normalize(mnist_dir):
    train_loader, test_loader, classes = load_dataset(mnist_dir, 64, 50, seed=3)
    assert classes == tuple(range(10))
    reference = MNIST(mnist_dir, train=True)
    # The same permutation the loader draws for its first epoch.
    order = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    for batch, (images, labels) in enumerate(train_loader):
        expected_images, expected_labels = reference_batch(reference,
                                                           order[batch * 64:(batch + 1) * 64])
        assert images.dtype == torch.float32 and images.shape == expected_images.shape
        assert torch.equal(images, expected_images)
        assert torch.equal(labels, expected_labels)
    assert len(train_loader) == 5  # ceil(300 / 64)

    reference_test = MNIST(mnist_dir, train=False)
    images, labels = next(iter(test_loader))
    assert torch.equal((images, labels)[0], reference_batch(reference_test, torch.arange(50))[0])
    assert len(test_loader) == 2


def test_shuffle_is_seeded_and_changes_every_epoch(mnist_dir):
    first = [labels for _, labels in load_dataset(mnist_dir, 300, seed=5)[0]]
    loader = load_dataset(mnist_dir, 300, seed=5)[0]
    epoch1 = next(iter(loader))[1]
    epoch2 = next(iter(loader))[1]
    assert torch.equal(first[0], epoch1)
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(epoch1.sort().values, epoch2.sort().values)


def test_max_samples_keep_the_first_images(mnist_dir):
    train_loader, test_loader, _ = load_dataset(mnist_dir, max_train_samples=30, max_test_samples=7)
    assert train_loader.num_samples == 30 and test_loader.num_samples == 7
    reference = MNIST(mnist_dir, train=False)
    assert torch.equal(test_loader.labels, reference.targets[:7])


def test_the_loaders_know_their_normalisation_and_classes(mnist_dir):
    train_loader, test_loader, classes = load_dataset(mnist_dir, 32, holdout_classes=[3])
    images, labels = next(iter(test_loader))
    pixels = train_loader.pixels(images)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert (test_loader.class_of_label.tolist() == [0, 1, 2, -1, 3, 4, 5, 6, 7, 8]
            and classes == (0, 1, 2, 4, 5, 6, 7, 8, 9))


def test_ranks_split_each_global_batch(mnist_dir):
    single = load_dataset(mnist_dir, 64, seed=9)[0]
    ranks = []
    for rank in range(3):
        generator = torch.Generator().manual_seed(9)
        ranks.append(TensorLoader(single.images, single.labels, 66, shuffle=True,
                                  generator=generator, rank=rank, world_size=3))
    assert ({loader.num_samples for loader in ranks} == {100}
            and {len(loader) for loader in ranks} == {5})
    order = torch.randperm(300, generator=torch.Generator().manual_seed(9))
    batches = [list(loader) for loader in ranks]
    for step in range(5):
        together = torch.cat([batches[rank][step][1] for rank in range(3)])
        # The ranks' batches of 22 make up the single-process batch of 66 of that step.
        expected = single.labels[order[step * 66:(step + 1) * 66]]
        assert sorted(together.tolist()) == sorted(expected.tolist())
    seen = torch.cat([torch.cat([b[0].flatten(1) for b in rank_batches])
                      for rank_batches in batches])
    assert torch.unique(seen, dim=0).size(0) == 300  # disjoint shards covering the epoch


def test_unshuffled_parts_cover_the_split(mnist_dir):
    test_loader = load_dataset(mnist_dir, 64, 64)[1]
    parts = [TensorLoader(test_loader.images, test_loader.labels, 8, rank=rank, world_size=3)
             for rank in range(3)]
    labels = torch.cat([torch.cat([batch[1] for batch in part]) for part in parts])
    assert torch.equal(labels, test_loader.labels)


def test_holdout_removes_digits_from_the_training_split(mnist_dir):
    train_loader, test_loader, classes = load_dataset(mnist_dir, holdout_classes=[8, 9])
    assert classes == tuple(range(8))
    assert not torch.isin(train_loader.labels, torch.tensor([8, 9])).any()
    assert torch.isin(test_loader.labels, torch.tensor([8, 9])).any()
    assert train_loader.num_samples == 240  # 300 images, every digit 30 times


def test_digit_to_class_skips_the_held_out_digits():
    assert label_to_class((0, 1, 3), "cpu").tolist() == [0, 1, -1, 2, -1, -1, -1, -1, -1, -1]
    assert label_to_class((0, 2), "cpu", num_labels=3).tolist() == [0, -1, 1]


def test_moving_a_loader_leaves_the_original_as_it_was(mnist_dir):
    train_loader, test_loader, _ = load_dataset(mnist_dir, 64, seed=4)
    assert train_loader.to("cpu") is train_loader
    moved = test_loader.to("meta")  # a device of its own, without an accelerator
    assert moved.images.device.type == "meta" and moved.num_samples == test_loader.num_samples
    assert test_loader.images.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_loader_moved_to_cuda_shuffles_as_one_made_there(mnist_dir):
    moved = load_dataset(mnist_dir, 64, seed=4)[0].to("cuda")
    made_there = load_dataset(mnist_dir, 64, seed=4, device="cuda")[0]
    for (images, labels), (expected_images, expected_labels) in zip(moved, made_there, strict=True):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_show_data_gives_the_grid_before_showing_it(monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt
    matplotlib.use("Agg")
    events = []
    monkeypatch.setattr(plt, "show", lambda: events.append("shown"))
    images = torch.rand(20, 1, 28, 28)
    show_data(images, lambda png: events.append(png), show=True)
    png, shown = events
    assert png.startswith(b"\x89PNG") and shown == "shown"  # the file first, then the window
    show_data(images, events.append)
    assert len(events) == 3 and events[2] == png  # no window without `show`
