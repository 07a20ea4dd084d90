"""Checkpoints that survive crashes and that are safe to open.

- `atomic_write` puts a file in place whole or not at all: a process killed at any
  moment, or a full disk, leaves the previous file as it was.
- `load_checkpoint` opens a file with `torch.load(..., weights_only=True)`, so a file
  that would run pickled code is refused, and says in one line what is wrong with a
  missing, truncated or corrupt one (`CheckpointError`).
- `save_training_state` / `load_training_state` keep everything a run needs to go on
  exactly where it stopped, in plain types that load with `weights_only=True`.
"""
import io
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

TRAINING_STATE_NAME = "training_state.pth"
TRAINING_STATE_FORMAT = "mnist-center-loss-training-state"
TRAINING_STATE_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit; the message is one line."""


class WriteError(Exception):
    """A file could not be written; the previous version of it is intact."""


def atomic_write(path, data):
    """Write the bytes `data` to `path` through a temporary file in the same folder,
    flushed to disk and then renamed over `path`, so `path` is never seen half-written.
    Raises WriteError (the temporary file removed, `path` as it was) when that fails."""
    path = Path(path)
    temp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            # A full disk often shows only here, when the data really has to go to it.
            os.fsync(file.fileno())
        # mkstemp makes the file private; give it the mode a plain open() would.
        os.chmod(temp_path, 0o666 & ~current_umask())
        os.replace(temp_path, path)
        if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself survive a power cut
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException as error:
        if temp_path is not None:
            Path(temp_path).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise WriteError(f"could not write {path} ({error.strerror or error}); "
                             f"the previous file there, if any, is intact") from error
        raise


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_checkpoint(path, obj):
    """`torch.save` through `atomic_write`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def save_figure(fig, path):
    """Save a matplotlib Figure through `atomic_write`, in the format of the path's suffix."""
    image = io.BytesIO()
    image_format = Path(path).suffix.lstrip(".").lower() or "png"
    # PNGs are written every epoch: light compression saved 0.01-0.03 s a figure here,
    # for files about a fifth larger.
    options = {"pil_kwargs": {"compress_level": 1}} if image_format == "png" else {}
    fig.savefig(image, format=image_format, **options)
    atomic_write(path, image.getvalue())


def load_checkpoint(path, map_location="cpu"):
    """`torch.load(path, weights_only=True)`, with a one-line `CheckpointError` when the
    file is missing, unreadable, truncated, corrupt or would need to run pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        if not os.access(path, os.R_OK):
            raise CheckpointError(f"cannot read the checkpoint {path} ({error.strerror or error})") from error
        # torch reports a zip archive cut short as an OSError (EINVAL).
        raise CheckpointError(f"the checkpoint {path} is truncated or corrupt ({short_reason(error)})") from error
    except Exception as error:  # a damaged file can fail in the unpickler in any number of ways
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"refused to load {path}: it needs to run pickled Python code ({unsafe.group(1)}), "
                f"which weights_only=True does not allow; this project's checkpoints hold only "
                f"tensors and plain values") from error
        raise CheckpointError(f"the checkpoint {path} is truncated or corrupt ({short_reason(error)})") from error


def short_reason(error):
    """The gist of a torch.load error in a few words: its type and first sentence."""
    text = str(error).strip()
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if unpickler:
        text = unpickler.group(1)
    text = text.splitlines()[0].split(". ")[0] if text else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def rng_states(loader_generator):
    """Every random state a run draws from, in types `weights_only=True` loads."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
        "loader": loader_generator.get_state(),
        "loader_device": loader_generator.device.type,
    }


def restore_rng_states(states, loader_generator):
    """Put back what `rng_states` took. Returns False when the loader's generator could
    not be restored because the run was saved on another kind of device."""
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if states["loader_device"] != loader_generator.device.type:
        return False
    loader_generator.set_state(states["loader"])
    return True


def save_training_state(path, epoch, modules, optimizers, scheduler, rng, args, history, partial_epoch=None):
    """Write one file that lets a run continue exactly: the state of `modules` and
    `optimizers` (dicts name -> object), the scheduler, the random states, the settings,
    the per-epoch history, and `partial_epoch` (the progress of an unfinished epoch)."""
    save_checkpoint(path, {
        "format": TRAINING_STATE_FORMAT,
        "version": TRAINING_STATE_VERSION,
        "epoch": epoch,
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "args": args,
        "history": history,
        "partial_epoch": partial_epoch,
    })


def load_training_state(path):
    """Read a training state written by `save_training_state`; `CheckpointError` when the
    file is broken or is not one (another program's checkpoint, a per-epoch model file)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        if isinstance(state, dict) and state and all(isinstance(value, torch.Tensor) for value in state.values()):
            kind = "a model's state_dict (such as a per-epoch epoch_NNN.pth)"
        else:
            kind = "a checkpoint of another program"
        raise CheckpointError(f"{path} is {kind}, not a training state of this trainer; "
                              f"resume from the {TRAINING_STATE_NAME} beside the per-epoch models")
    if state.get("version") != TRAINING_STATE_VERSION:
        raise CheckpointError(f"{path} is a training state of version {state.get('version')}; "
                              f"this trainer reads version {TRAINING_STATE_VERSION}")
    return state


def load_module_state(module, saved, name):
    """`module.load_state_dict(saved)`, with a one-line `CheckpointError` naming the first
    layer whose name or shape differs."""
    current = module.state_dict()
    missing, unexpected = current.keys() - saved.keys(), saved.keys() - current.keys()
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint's {name} has other layers (missing: {sorted(missing) or 'none'}, "
                              f"unexpected: {sorted(unexpected) or 'none'})")
    for key, tensor in saved.items():
        if tensor.shape != current[key].shape:
            raise CheckpointError(f"the checkpoint's {name} does not fit: {key} has shape "
                                  f"{tuple(tensor.shape)} there, {tuple(current[key].shape)} here")
    module.load_state_dict(saved)
