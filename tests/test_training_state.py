"""The training state's file: what it holds, the random states, and every file that is no
training state, or a damaged one, refused in one line."""
import pickle
import random
import warnings

import numpy as np
import pytest
import torch

from conftest import stop_message
from run_machinery.checkpointing import CheckpointError, save_checkpoint
from run_machinery.training_state import (
    load_training_state,
    restore_rng_states,
    rng_states,
    write_training_state,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("content, expected", [
    ({"conv.weight": torch.zeros(1)}, "a model's state_dict"),
    ({"state_dict": {}, "epoch": 3}, "a checkpoint of another program"),
    ({"format": "mnist-center-loss-training-state", "version": 99}, "version 99"),
])
def test_files_that_are_no_training_state(tmp_path, content, expected):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=expected):
        load_training_state(path)


def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    generator = torch.Generator()
    generator.manual_seed(5)
    torch.randperm(10, generator=generator)
    save_checkpoint(tmp_path / "rng.pth", rng_states(generator))

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                torch.randperm(10, generator=generator).tolist())

    expected = draws()
    assert restore_rng_states(torch.load(tmp_path / "rng.pth", weights_only=True), generator)
    assert draws() == expected


def test_a_truncated_state_gives_one_line(reference_run, tmp_path):
    data = (reference_run / "training_state.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 3])
    message = stop_message(["--resume", str(tmp_path / "cut.pth")])
    assert message.count("\n") == 0
    assert f"the checkpoint {tmp_path / 'cut.pth'} is truncated or corrupt" in message


def test_a_flipped_byte_is_caught_by_the_checksum(reference_run, tmp_path):
    import evaluate
    data = bytearray((reference_run / "training_state.pth").read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the content: torch itself would load it
    (tmp_path / "flipped.pth").write_bytes(bytes(data))
    expected = (f"{tmp_path / 'flipped.pth'} is a damaged training state: its content does not "
                "match its checksum")
    assert expected in stop_message(["--resume", str(tmp_path / "flipped.pth")])
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "flipped.pth")])
    assert expected in stop.value.code


def test_a_format_marker_without_content(tmp_path):
    import evaluate
    torch.save({"format": "mnist-center-loss-training-state", "version": 3}, tmp_path / "empty.pth")
    message = stop_message(["--resume", str(tmp_path / "empty.pth")])
    assert "is a damaged training state: its content or checksum is missing" in message
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "empty.pth")])
    assert "is a damaged training state: its content or checksum is missing" in stop.value.code
    write_training_state(tmp_path / "hollow.pth", {"epoch": 1})
    message = stop_message(["--resume", str(tmp_path / "hollow.pth")])
    assert "is a damaged training state: its 'modules' is missing or of the wrong type" in message


def test_resume_from_a_plain_pickle_is_one_line_without_warnings(tmp_path):
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"epoch": 3}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = stop_message(["--resume", str(tmp_path / "plain.pkl")])
    assert caught == [] and message.startswith("error: the checkpoint ")
