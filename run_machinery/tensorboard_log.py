"""TensorBoard, optional: its writer, or one line saying how to install it. Its own module,
so that the settings' check (settings.py) and the run's output (run_output.py) find it
without importing each other."""
from .errors import UserError


def tensorboard_writer():
    """TensorBoard's SummaryWriter class; UserError when its package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package, which is not installed: "
                        "pip install tensorboard") from None
    return SummaryWriter


def open_tensorboard(log_dir):
    return tensorboard_writer()(log_dir)
