"""The training state's format: one file from which a stopped run goes on exactly where it
was, and the random states it keeps.

It holds the weights, the centres, both optimizers, the schedule, every random state, the
settings, the history and, for a run stopped in the middle of an epoch, that epoch's
progress; all in plain types that load with `weights_only=True`. save_and_resume.py puts
it back.
"""
import hashlib
import io
import random

import numpy as np
import torch

from .checkpointing import CheckpointError, load_checkpoint, save_checkpoint

TRAINING_STATE_FORMAT = "mnist-center-loss-training-state"
TRAINING_STATE_VERSION = 3
def rng_states(loader_generator):
    """Every random state a run draws from, in types `weights_only=True` loads."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                  *numpy_state[2:]],
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


def save_training_state(path, epoch, modules, optimizers, scheduler, rng, settings, history,
                        progress=None):
    """Write the state after `epoch` (with `progress`: in the middle of epoch + 1):
    `modules` and `optimizers` are dicts name -> object, `settings` a dict, `rng` from
    `rng_states`, `history` a History."""
    write_training_state(path, {
        "epoch": epoch,
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "args": settings,
        "history": history.as_saved(),
        "partial_epoch": progress.as_saved() if progress is not None else None,
    })


def write_training_state(path, state):
    """Write `state` (a dict of STATE_PARTS) as bytes with their SHA-256, since torch keeps
    no checksum: a damaged file is refused, not resumed from."""
    content = io.BytesIO()
    torch.save(state, content)
    content = content.getvalue()
    save_checkpoint(path, {"format": TRAINING_STATE_FORMAT, "version": TRAINING_STATE_VERSION,
                           "sha256": hashlib.sha256(content).hexdigest(),
                           "content": torch.frombuffer(bytearray(content), dtype=torch.uint8)})


# What a training state holds, and the type of each part.
STATE_PARTS = {"epoch": int, "modules": dict, "optimizers": dict, "scheduler": dict, "rng": dict,
               "args": dict, "history": dict, "partial_epoch": (dict, type(None))}


def load_training_state(path):
    """Read a training state written by `save_training_state`; `CheckpointError` when the
    file is broken, damaged (its checksum differs) or is not one (another program's
    checkpoint, a per-epoch model file)."""
    return unpack_training_state(load_checkpoint(path), path)


def is_training_state(saved):
    """Whether `saved`, a loaded checkpoint, is (or claims to be) a training state."""
    return isinstance(saved, dict) and saved.get("format") == TRAINING_STATE_FORMAT


class NotATrainingState(CheckpointError):
    """The file is another kind of checkpoint (a per-epoch model file, another program's)."""


def unpack_training_state(saved, path):
    """The training state in `saved`, the content of the file `path` as loaded; raises as
    `load_training_state` does."""
    if not is_training_state(saved):
        if isinstance(saved, dict) and saved and all(isinstance(value, torch.Tensor)
                                                     for value in saved.values()):
            kind = "a model's state_dict (such as a per-epoch epoch_NNN.pth)"
        else:
            kind = "a checkpoint of another program"
        raise NotATrainingState(f"{path} is {kind}, not a training state of this trainer")
    if saved.get("version") != TRAINING_STATE_VERSION:
        raise CheckpointError(f"{path} is a training state of version {saved.get('version')}; "
                              f"this trainer reads version {TRAINING_STATE_VERSION}")
    content = saved.get("content")
    if (not isinstance(content, torch.Tensor) or content.dtype != torch.uint8
            or not isinstance(saved.get("sha256"), str)):
        raise CheckpointError(f"{path} is a damaged training state: "
                              "its content or checksum is missing")
    content = content.numpy().tobytes()
    if hashlib.sha256(content).hexdigest() != saved["sha256"]:
        raise CheckpointError(f"{path} is a damaged training state: "
                              "its content does not match its checksum")
    try:
        state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:  # the checksum matched: written damaged, or by other code
        raise CheckpointError(f"{path} is a damaged training state "
                              f"({type(error).__name__})") from error
    for part, kind in STATE_PARTS.items():
        if not isinstance(state.get(part) if isinstance(state, dict) else None, kind):
            raise CheckpointError(f"{path} is a damaged training state: its {part!r} is missing "
                                  "or of the wrong type")
    return state


def seed_all(seed):
    """Seed every generator a run may draw from: torch's (CPU and accelerators), NumPy's,
    Python's."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
