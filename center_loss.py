"""Center Loss (Wen et al., ECCV 2016) with the paper's centre update rule.

loss = sum_i ||x_i - c_{y_i}||^2 / 2 / B   (B = batch size, or 1 without size_average)

The features get the true gradient of that loss. The centres get the paper's update
instead: for class j, sum_{i: y_i = j} (c_j - x_i) / (1 + n_j) / B, independent of the
weight the loss has in the total, so they follow their class means at the pace of
their own optimizer even when `loss_weight` is 0.
"""
import torch
import torch.nn as nn
from torch.autograd import Function


class CenterLoss(nn.Module):
    def __init__(self, num_classes, feat_dim, size_average=True):
        super().__init__()
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.size_average = size_average
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, label, feat, batch_class_counts=None):
        """Labels first, as in the article: `centerloss(labels, features)`.

        `batch_class_counts` (num_classes,): the n_j of the centre update, when this batch
        is one process's part of a batch split across processes; by default, counted here.
        """
        feat = feat.reshape(feat.size(0), -1)
        if feat.size(1) != self.feat_dim:
            raise ValueError(
                f"CenterLoss: features have width {feat.size(1)}, "
                f"expected feat_dim={self.feat_dim}")
        if label.dim() != 1 or label.size(0) != feat.size(0):
            raise ValueError(
                f"CenterLoss: {label.numel()} labels for {feat.size(0)} features; "
                "expected one label per feature")
        # On an accelerator this check would cost a host sync every step; there the
        # indexing below fails on its own (a device-side assert).
        if label.device.type == "cpu" and label.numel() and (
                int(label.min()) < 0 or int(label.max()) >= self.num_classes):
            raise ValueError(
                f"CenterLoss: labels must lie in [0, {self.num_classes}), "
                f"got values in [{int(label.min())}, {int(label.max())}]")
        # Under autocast the features may be half precision; the loss and the
        # centres stay in the centres' precision.
        feat = feat.to(self.centers.dtype)
        batch_size = feat.size(0) if self.size_average else 1
        label = label.long()
        if batch_class_counts is None:
            batch_class_counts = class_counts(label, self.num_classes, feat.dtype)
        return CenterLossFunction.apply(feat, label, self.centers, batch_size, batch_class_counts)


def class_counts(label, num_classes, dtype=torch.float32):
    """How many items of each class `label` holds, without a host sync (unlike bincount)."""
    counts = torch.zeros(num_classes, dtype=dtype, device=label.device)
    return counts.index_add_(0, label, torch.ones_like(label, dtype=dtype))


class CenterLossFunction(Function):
    @staticmethod
    def forward(ctx, feat, label, centers, batch_size, batch_class_counts):
        centers_batch = centers.index_select(0, label)
        ctx.save_for_backward(feat, label, centers_batch, batch_class_counts)
        ctx.num_classes = centers.size(0)
        ctx.batch_size = batch_size
        return (feat - centers_batch).pow(2).sum() / 2.0 / batch_size

    @staticmethod
    def backward(ctx, grad_output):
        feat, label, centers_batch, counts = ctx.saved_tensors
        diff = centers_batch - feat
        grad_centers = torch.zeros(ctx.num_classes, diff.size(1), dtype=diff.dtype,
                                   device=diff.device)
        grad_centers.index_add_(0, label, diff)
        grad_centers = grad_centers / (1 + counts).unsqueeze(1) / ctx.batch_size
        grad_feat = -grad_output * diff / ctx.batch_size
        return grad_feat, None, grad_centers, None, None
