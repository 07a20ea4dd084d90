"""A split through a model: the features, log-probabilities and labels of every image, the
forward pass that the trainer's test, evaluate.py and the pictures of one's own share."""
import torch


@torch.no_grad()
def embed(model, loader, amp=False):
    """Features, log-probabilities and labels of every image `loader` gives, in order, on
    its device (in float32, also under `amp`'s bfloat16 autocast)."""
    model.eval()
    features = log_probs = None
    labels = torch.empty(loader.num_samples, dtype=torch.long, device=loader.labels.device)
    start = 0
    for images, batch_labels in loader:
        end = start + images.size(0)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            batch_features, batch_log_probs = model(images)
        if features is None:  # sized from the outputs: `model` may be a wrapped or compiled net
            features = images.new_empty(loader.num_samples, batch_features.size(1))
            log_probs = images.new_empty(loader.num_samples, batch_log_probs.size(1))
        features[start:end], log_probs[start:end] = batch_features, batch_log_probs
        labels[start:end] = batch_labels
        start = end
    return features, log_probs, labels
