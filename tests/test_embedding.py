"""A split through a model: every image's outputs, in the loader's order, whatever the batch."""
import torch

from mnist_loader import TensorLoader
from mnist_net import Net

from run_machinery.embedding import embed


def test_every_image_is_embedded_in_order_across_batches():
    torch.manual_seed(0)
    model = Net().eval()
    images, labels = torch.randn(10, 1, 28, 28), torch.arange(10) % 3
    loader = TensorLoader(images, labels, 4)  # 4 + 4 + 2: the last batch is short
    features, log_probs, seen_labels = embed(model, loader)
    with torch.no_grad():
        expected_features, expected_log_probs = model(images)
    assert torch.allclose(features, expected_features, atol=1e-5)
    assert torch.allclose(log_probs, expected_log_probs, atol=1e-5)
    assert torch.equal(seen_labels, labels)
    assert features.dtype == torch.float32 and not model.training
