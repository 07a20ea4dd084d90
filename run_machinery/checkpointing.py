"""Checkpoints that survive crashes and that are safe to open.

- `atomic_write` puts a file in place whole or not at all: a process killed at any
  moment, or a full disk, leaves the previous file as it was.
- `load_checkpoint` opens a file with `torch.load(..., weights_only=True)`, so a file
  that would run pickled code is refused, and says in one line what is wrong with a
  missing, truncated or corrupt one (`CheckpointError`).
- `load_module_state` loads a state_dict, naming the first layer that does not fit.
"""
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch

from .errors import UserError


class CheckpointError(UserError):
    """A checkpoint could not be read or does not fit; the message is one line."""


class WriteError(UserError):
    """A file could not be written; the previous version of it is intact."""


def atomic_write(path, data, check=None):
    """Write the bytes `data` to `path` through a temporary file in the same folder,
    flushed to disk and then renamed over `path`, so `path` is never seen half-written.
    Raises WriteError (the temporary file removed, `path` as it was) when that fails.
    `check`, if given, is called with the temporary file's path before the rename: an
    error it raises goes up the same way, and `path` is not replaced."""
    path = Path(path)
    temp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_path = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            # A full disk often shows only here, when the data really has to go to it.
            os.fsync(file.fileno())
        if check is not None:
            check(temp_path)
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
        # torch warns of a pickle protocol other than its own (a plain pickle, not a file
        # torch.save wrote) before failing on it: the one-line error says all there is
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        if not os.access(path, os.R_OK):
            raise CheckpointError(f"cannot read the checkpoint {path} "
                                  f"({error.strerror or error})") from error
        # torch reports a zip archive cut short as an OSError (EINVAL).
        raise CheckpointError(f"the checkpoint {path} is truncated or corrupt "
                              f"({short_reason(error)})") from error
    except Exception as error:  # a damaged file can fail in the unpickler in any number of ways
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"refused to load {path}: it needs to run pickled Python code ({unsafe.group(1)}), "
                f"which weights_only=True does not allow; this project's checkpoints hold only "
                f"tensors and plain values") from error
        raise CheckpointError(f"the checkpoint {path} is truncated or corrupt "
                              f"({short_reason(error)})") from error


def short_reason(error):
    """The gist of a torch.load error in a few words: its type and first sentence."""
    text = str(error).strip()
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if unpickler:
        text = unpickler.group(1)
    text = text.splitlines()[0].split(". ")[0] if text else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_module_state(module, saved, name):
    """`module.load_state_dict(saved)`, with a one-line `CheckpointError` naming the first
    layer whose name or shape differs."""
    current = module.state_dict()
    missing, unexpected = current.keys() - saved.keys(), saved.keys() - current.keys()
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint's {name} has other layers "
                              f"(missing: {sorted(missing) or 'none'}, "
                              f"unexpected: {sorted(unexpected) or 'none'})")
    for key, tensor in saved.items():
        if tensor.shape != current[key].shape:
            raise CheckpointError(f"the checkpoint's {name} does not fit: {key} has shape "
                                  f"{tuple(tensor.shape)} there, {tuple(current[key].shape)} here")
    module.load_state_dict(saved)
