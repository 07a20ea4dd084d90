"""Saving and resuming: a resumed run that is bit for bit the run that was never stopped (on
CPU, same seed), and the settings a resumed run keeps."""
import errno
import os
import shutil

import pytest
import torch

import train_mnist_original_center as trainer
from conftest import assert_same_run, small_run_flags, snapshot, stop_message
from run_machinery.errors import UserError
from run_machinery.training_state import load_training_state, write_training_state

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resume_after_two_epochs_is_the_uninterrupted_run(mnist_dir, tmp_path, reference_run,
                                                          capsys):
    trainer.main(small_run_flags(mnist_dir, tmp_path, epochs=2))
    capsys.readouterr()
    history = trainer.main(["--resume", str(tmp_path / "training_state.pth"), "--epochs", "4"])
    out = capsys.readouterr().out
    assert f"Resuming from {tmp_path / 'training_state.pth'} at epoch 3" in out
    assert ([line[:10] for line in out.splitlines() if line.startswith("Epoch:")]
            == ["Epoch:   3", "Epoch:   4"])
    assert [record.epoch for record in history.records] == [1, 2, 3, 4]
    assert_same_run(tmp_path, reference_run)


def test_resume_takes_a_runs_folder_and_updates_its_run_file(mnist_dir, tmp_path, reference_run):
    import json
    trainer.main(small_run_flags(mnist_dir, tmp_path, epochs=2))
    started = json.loads((tmp_path / "run.json").read_text())["started"]
    trainer.main(["--resume", str(tmp_path), "--epochs", "4"])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["started"] == started and len(run["resumed"]) == 1 and run["settings"]["epochs"] == 4
    assert_same_run(tmp_path, reference_run)


def test_full_disk_stops_cleanly_and_keeps_the_last_state(mnist_dir, tmp_path, monkeypatch):
    trainer.main(small_run_flags(mnist_dir, tmp_path, epochs=1))
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=2) + ["--resume", "auto"])
    assert message.startswith("error: could not write ") and "No space left on device" in message
    assert "\n" not in message
    # Everything as it was: no new, half-written or leftover temporary file.
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_resume_auto_without_a_state(mnist_dir, tmp_path):
    message = stop_message(small_run_flags(mnist_dir, tmp_path) + ["--resume", "auto"])
    assert f"there is no training_state.pth in {tmp_path}" in message


def test_a_finished_run_has_nothing_to_train(reference_run, capsys):
    history = trainer.main(["--resume", str(reference_run / "training_state.pth")])
    assert ("Nothing to train: the run has finished epoch 4 and --epochs is 4"
            in capsys.readouterr().out)
    assert len(history.records) == 4


@pytest.mark.parametrize("centers, expected", [
    (torch.zeros(12, 2), "has 12 classes and 2-D features, this one 10 classes and 2-D features"),
    (torch.zeros(10, 3), "has 10 classes and 3-D features, this one 10 classes and 2-D features"),
])
def test_resume_refuses_another_model(centers, expected, reference_run, tmp_path):
    state = load_training_state(reference_run / "training_state.pth")
    state["modules"]["center_loss"]["centers"] = centers
    write_training_state(tmp_path / "training_state.pth", state)  # a run's folder: tmp_path
    assert expected in stop_message(["--resume", str(tmp_path), "--epochs", "5"])


def test_resume_refuses_another_layer_shape(reference_run, tmp_path):
    state = load_training_state(reference_run / "training_state.pth")
    state["modules"]["model"]["ip1.weight"] = torch.zeros(2, 10)
    write_training_state(tmp_path / "training_state.pth", state)  # a run's folder: tmp_path
    message = stop_message(["--resume", str(tmp_path), "--epochs", "5"])
    assert "ip1.weight has shape (2, 10) there, (2, 1152) here" in message


def test_resume_keeps_the_data_order(reference_run):
    message = stop_message(["--resume", str(reference_run / "training_state.pth"), "--epochs", "5",
                            "--batch_size", "8"])
    assert "--batch_size 8 differs from the run's 4" in message


def test_resume_accepts_the_runs_own_holdout_classes_given_again(holdout_run, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("run.json", "training_state.pth"):
        shutil.copy(holdout_run / name, copy / name)
    history = trainer.main(["--resume", str(copy), "--out_dir", str(copy), "--epochs", "3",
                            "--holdout_classes", "8", "9"])
    assert len(history.records) == 3
    assert "holdout_classes" not in capsys.readouterr().out  # not even as a changed setting
    message = stop_message(["--resume", str(copy), "--out_dir", str(copy), "--epochs", "3",
                            "--holdout_classes", "7", "9"])
    assert "--holdout_classes [7, 9] differs from the run's [8, 9]" in message


def test_torchrun_cannot_finish_a_single_process_epoch(mnist_dir, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from conftest import interrupt_at_training_step
    from run_machinery.save_and_resume import resume
    interrupt_at_training_step(monkeypatch, 3)
    stop_message(small_run_flags(mnist_dir, tmp_path))
    monkeypatch.undo()
    state = load_training_state(tmp_path / "training_state.pth")
    two_ranks = SimpleNamespace(world_size=2, num_samples=16, labels=torch.zeros(16))
    with pytest.raises(UserError, match="stopped in the middle of epoch 1 by a single process; "
                                        "finish that epoch without torchrun"):
        resume(state, {}, {}, None, two_ranks, None)


def test_resuming_a_moved_run_writes_into_its_current_folder(mnist_dir, tmp_path):
    import json
    slot, moved = tmp_path / "slot", tmp_path / "moved"
    trainer.main(small_run_flags(mnist_dir, slot, epochs=1)
                 + ["--model_path_temp", f"{slot}/weights/e_{{}}.pth"])
    slot.rename(moved)
    trainer.main(small_run_flags(mnist_dir, slot, epochs=2) + ["--seed", "7"])
    before = snapshot(slot)
    message = stop_message(["--resume", str(moved), "--epochs", "2", "--out_dir", str(slot)])
    assert f"the run's folder is {moved}" in message and "\n" not in message
    trainer.main(["--resume", str(moved), "--epochs", "2"])
    assert snapshot(slot) == before
    assert ((moved / "weights" / "e_002.pth").is_file()
            and (moved / "visual" / "epoch_002.png").is_file())
    run = json.loads((moved / "run.json").read_text())
    assert (run["settings"]["out_dir"], run["settings"]["model_path_temp"]) == (
        ".", "weights/e_{}.pth") and len(run["resumed"]) == 1


def test_resume_keeps_what_reads_its_checkpoints(mnist_dir, tmp_path, offline):
    softmax, arcface = tmp_path / "softmax", tmp_path / "arcface"
    trainer.main(small_run_flags(mnist_dir, softmax, epochs=1))
    trainer.main(small_run_flags(mnist_dir, arcface, epochs=1) + ["--head", "arcface"])
    for run, flags, said in [
        (softmax, ["--head", "arcface"], "--head arcface differs from the run's softmax"),
        (softmax, ["--feat_dim", "3"], "--feat_dim 3 differs from the run's 2"),
        (softmax, ["--dataset", "fashion-mnist"],
         "--dataset fashion-mnist differs from the run's mnist"),
        (arcface, ["--head", "cosface"], "--head cosface differs from the run's arcface"),
        (arcface, ["--margin", "0.3"], "--margin 0.3 differs from the run's 0.2"),
        (arcface, ["--scale", "10"], "--scale 10.0 differs from the run's 16.0"),
    ]:
        before = snapshot(run)
        message = stop_message(["--resume", str(run), "--epochs", "2", *flags])
        assert said in message and "how its checkpoints are read" in message
        assert "\n" not in message and snapshot(run) == before


def test_resume_refuses_a_model_file_and_pickled_code(reference_run, tmp_path):
    message = stop_message(["--resume", str(reference_run / "model" / "epoch_004.pth")])
    assert "is a model's state_dict" in message and "training_state.pth" in message
    torch.save({"format": "mnist-center-loss-training-state", "hook": print}, tmp_path / "evil.pth")
    assert "refused to load" in stop_message(["--resume", str(tmp_path / "evil.pth")])
