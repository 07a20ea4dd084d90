"""Distributed data-parallel training with PyTorch's own engine, when torchrun starts us.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process's environment; without
them everything here is a no-op, and the trainer runs as a single process. The process of
rank 0 is the main process: the only one that prints and writes files.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from center_loss import class_counts

# A Gloo group for the small host-side flags (a stop asked for) when the main group is NCCL.
_host_group = None

# How long a rank waits in a collective for the others before giving up with an error:
# torchrun already stops every rank when one dies; this bounds any other kind of stall.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


def launched_by_torchrun():
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank_and_world_size():
    """This process's rank and the number of processes (0 and 1 without torchrun)."""
    if not launched_by_torchrun():
        return 0, 1
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def is_main_process():
    return rank_and_world_size()[0] == 0


def setup(device):
    """Join the process group when launched by torchrun: NCCL on CUDA, Gloo on CPU; the
    other processes than the main one print nothing from here on. Returns the device,
    this rank's GPU on CUDA."""
    if not launched_by_torchrun():
        return device
    if not is_main_process():
        sys.stdout = open(os.devnull, "w")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT,
                            device_id=device if device.type == "cuda" else None)
    if device.type == "cuda":
        global _host_group
        _host_group = dist.new_group(backend="gloo")
    return device


def wrap(model):
    """The model that the training steps go through: under torchrun, DDP around `model`."""
    return DistributedDataParallel(model) if dist.is_initialized() else model


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag):
    """Whether `flag` is true on any rank: a host-side collective, with no device sync."""
    if not dist.is_initialized():
        return flag
    votes = torch.tensor([int(flag)])
    dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=_host_group)
    return bool(votes)


def sum_across_ranks(tensor):
    """Sum `tensor` over all ranks, in place; returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def batch_class_counts(labels, num_classes):
    """Under torchrun, how many items of each class the whole batch, every rank's part of it,
    holds (for the centre update); None in a single process."""
    if not dist.is_initialized():
        return None
    return sum_across_ranks(class_counts(labels, num_classes))


def average_gradients(parameters):
    """Average the gradients of `parameters` over the ranks, as DDP does for the network's."""
    if dist.is_initialized():
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= dist.get_world_size()


def gather_rows(tensor):
    """The rows of `tensor` from every rank, concatenated in rank order (sizes may differ)."""
    if not dist.is_initialized():
        return tensor
    size = torch.tensor([tensor.size(0)], device=tensor.device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[:tensor.size(0)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:s] for part, s in zip(parts, sizes)])


def min_across_ranks(tensor):
    """The element-wise minimum of `tensor` over all ranks, in place; returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor
