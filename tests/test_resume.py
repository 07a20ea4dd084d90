"""A run survives being stopped, killed, fed bad numbers or broken files, and a resumed
run is bit for bit the run that was never stopped (on CPU, same seed)."""
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from checkpointing import load_checkpoint, load_training_state, save_checkpoint
from center_loss import CenterLoss
from conftest import REPO_DIR
import train_mnist_original_center as trainer

SCRIPT = str(REPO_DIR / "train_mnist_original_center.py")
# 32 images in batches of 4: 8 steps an epoch, enough to stop in the middle of one.
SMALL_RUN = ["--max_train_samples", "32", "--max_test_samples", "16", "--batch_size", "4", "--lr", "0.01",
             "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the subprocesses: the runs compared bit for bit all
    use the same, and such small steps run faster without handing work between threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_flags(mnist_dir, folder, epochs=4):
    return ["--dataset_dir", str(mnist_dir), *SMALL_RUN, "--epochs", str(epochs),
            "--model_path_temp", str(folder / "model" / "epoch_{}.pth"),
            "--vis_img_path_temp", str(folder / "visual" / "epoch_{}.png"),
            "--history_path", str(folder / "history.csv")]


def state_path(folder):
    return folder / "model" / "training_state.pth"


def stop_code(argv):
    """Run the trainer in this process; the message or status it stopped with."""
    with pytest.raises(SystemExit) as stop:
        trainer.main(argv)
    return stop.value.code


@pytest.fixture(scope="module")
def reference(mnist_dir, tmp_path_factory):
    """The folder of an uninterrupted 4-epoch run."""
    folder = tmp_path_factory.mktemp("reference")
    trainer.main(run_flags(mnist_dir, folder))
    return folder


def assert_same_run(folder, reference):
    """Same weights, centres, optimizer states, figures, per-epoch files as the reference."""
    state, expected = load_training_state(state_path(folder)), load_training_state(state_path(reference))
    assert state["epoch"] == expected["epoch"] == 4 and state["partial_epoch"] is None
    # Every figure of every epoch, but the seconds it took.
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in saved["history"]["rows"]]
               for saved in (state, expected)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 4
    assert_equal(state["history"]["test_features"], expected["history"]["test_features"])
    assert_equal(load_checkpoint(folder / "visual" / "test_features.pt"),
                 load_checkpoint(reference / "visual" / "test_features.pt"))
    for part in ("modules", "optimizers"):
        for name in expected[part]:
            assert_equal(state[part][name], expected[part][name])
    for epoch in ("001", "002", "003", "004"):
        assert_equal(load_checkpoint(folder / "model" / f"epoch_{epoch}.pth"),
                     load_checkpoint(reference / "model" / f"epoch_{epoch}.pth"))
        assert (folder / "visual" / f"epoch_{epoch}.png").read_bytes() == \
               (reference / "visual" / f"epoch_{epoch}.png").read_bytes()


def assert_equal(value, expected):
    if isinstance(expected, dict):
        assert value.keys() == expected.keys()
        for key in expected:
            assert_equal(value[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(value) == len(expected)
        for item, expected_item in zip(value, expected):
            assert_equal(item, expected_item)
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(value, expected)
    else:
        assert value == expected


def test_resume_after_two_epochs_is_the_uninterrupted_run(mnist_dir, tmp_path, reference, capsys):
    trainer.main(run_flags(mnist_dir, tmp_path, epochs=2))
    capsys.readouterr()
    trainer.main(["--resume", str(state_path(tmp_path)), "--epochs", "4"])
    out = capsys.readouterr().out
    assert f"Resuming from {state_path(tmp_path)} at epoch 3" in out
    assert [line[:10] for line in out.splitlines() if line.startswith("Epoch:")] == ["Epoch:   3", "Epoch:   4"]
    assert_same_run(tmp_path, reference)


def interrupt_at_training_step(monkeypatch, step):
    """Send this process SIGINT during the `step`-th training step from the run's start."""
    forward = CenterLoss.forward
    calls = []

    def forward_and_signal(self, label, feat, *rest):
        if torch.is_grad_enabled():  # a training step, not a test pass
            calls.append(None)
            if len(calls) == step:
                os.kill(os.getpid(), signal.SIGINT)
        return forward(self, label, feat, *rest)

    monkeypatch.setattr(CenterLoss, "forward", forward_and_signal)


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(mnist_dir, tmp_path, reference, monkeypatch, capfd):
    interrupt_at_training_step(monkeypatch, 8 + 3)  # epoch 2, step 3
    code = stop_code(run_flags(mnist_dir, tmp_path))
    assert code == 128 + signal.SIGINT
    err = capfd.readouterr().err
    assert "SIGINT: stopping after the current step" in err
    assert "Stopped in epoch 2 after step 3 of 8" in err and f"--resume {state_path(tmp_path)}" in err
    state = load_training_state(state_path(tmp_path))
    assert state["epoch"] == 1 and state["partial_epoch"]["step"] == 3
    assert not (tmp_path / "model" / "epoch_002.pth").exists()
    monkeypatch.undo()
    trainer.main(run_flags(mnist_dir, tmp_path) + ["--resume", "auto"])
    assert "Resuming from" in capfd.readouterr().out
    assert_same_run(tmp_path, reference)


@contextmanager
def running(argv):
    """The trainer in a subprocess with piped output, killed if a test leaves it running."""
    process = subprocess.Popen([sys.executable, SCRIPT, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=REPO_DIR, env={**os.environ, "OMP_NUM_THREADS": "1"})
    watchdog = threading.Timer(300, process.kill)
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def wait_for(stream, text):
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f"the run ended without printing {text!r}")


def test_sigterm_to_a_running_trainer_saves_and_resumes_exactly(mnist_dir, tmp_path, reference):
    with running(run_flags(mnist_dir, tmp_path)) as process:
        wait_for(process.stdout, "Epoch:   1")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        err = process.stderr.read()
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopping after the current step" in err
    # Where it stops depends on the timing; the message and the resumed run do not.
    assert "Stopped " in err and f"--resume {state_path(tmp_path)}" in err and "Traceback" not in err
    trainer.main(run_flags(mnist_dir, tmp_path) + ["--resume", "auto"])
    assert_same_run(tmp_path, reference)


def test_a_second_ctrl_c_quits_at_once(mnist_dir, tmp_path):
    # One step of 32 images takes long enough for the second signal to land inside it.
    argv = run_flags(mnist_dir, tmp_path) + ["--batch_size", "32"]
    with running(argv) as process:
        wait_for(process.stdout, "Training on")
        process.send_signal(signal.SIGINT)
        wait_for(process.stderr, "stopping after the current step")
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
        err = process.stderr.read()
    assert code == 128 + signal.SIGINT, err
    assert "Stopped at once by a second signal; no training state was saved" in err and "Traceback" not in err
    assert not state_path(tmp_path).exists()


def assert_files_whole(folder):
    for path in (folder / "model").glob("*.pth"):
        load_checkpoint(path)
    for path in (folder / "visual").glob("*.png"):
        with Image.open(path) as image:
            image.load()


def test_sigkill_at_any_moment_leaves_whole_files_and_resume_is_exact(mnist_dir, tmp_path, reference):
    # Killed as an epoch's files are being written, a little later, and in the next epoch's steps.
    for delay in (0.0, 0.1, 0.4):
        resume = ["--resume", "auto"] if state_path(tmp_path).exists() else []
        if resume and load_training_state(state_path(tmp_path))["epoch"] == 4:
            break  # a fast machine finished the run before a kill
        with running(run_flags(mnist_dir, tmp_path) + resume) as process:
            wait_for(process.stdout, "Epoch:")
            time.sleep(delay)
            process.kill()
        assert_files_whole(tmp_path)
    resume = ["--resume", "auto"] if state_path(tmp_path).exists() else []
    trainer.main(run_flags(mnist_dir, tmp_path) + resume)
    assert_same_run(tmp_path, reference)


def test_nan_stops_the_run_and_keeps_the_last_good_state(mnist_dir, tmp_path, capsys):
    trainer.main(run_flags(mnist_dir, tmp_path, epochs=1))
    good_state = state_path(tmp_path).read_bytes()
    message = stop_code(run_flags(mnist_dir, tmp_path, epochs=2) + ["--resume", "auto", "--lr", "1e8"])
    assert "became NaN or infinite in epoch 2 at step" in message and "of 8" in message
    assert "the softmax loss" in message and "learning rate too high (--lr 1e+08)" in message
    assert f"the last good training state is {state_path(tmp_path)}" in message and "\n" not in message
    assert state_path(tmp_path).read_bytes() == good_state
    assert not (tmp_path / "model" / "epoch_002.pth").exists() and not (tmp_path / "visual" / "epoch_002.png").exists()
    # The advice works: from the last good state, with a sane rate, the run goes on.
    trainer.main(["--resume", str(state_path(tmp_path)), "--epochs", "2", "--lr", "0.001"])
    assert "Resuming with changed settings: --lr 0.001 (was 0.01)" in capsys.readouterr().out
    state = load_training_state(state_path(tmp_path))
    assert state["epoch"] == 2 and state["optimizers"]["net"]["param_groups"][0]["lr"] == 0.001


def test_nan_in_the_first_epoch(mnist_dir, tmp_path):
    message = stop_code(run_flags(mnist_dir, tmp_path, epochs=1) + ["--lr", "1e8"])
    assert "in epoch 1 at step" in message and "no training state was saved yet" in message
    assert not state_path(tmp_path).exists()


def test_centres_blowing_up_blame_the_centre_rate(mnist_dir, tmp_path):
    message = stop_code(run_flags(mnist_dir, tmp_path, epochs=1) + ["--center_lr", "1e30"])
    assert "the centre loss became NaN or infinite" in message and "(--center_lr 1e+30)" in message


def test_full_disk_stops_cleanly_and_keeps_the_last_state(mnist_dir, tmp_path, monkeypatch):
    trainer.main(run_flags(mnist_dir, tmp_path, epochs=1))
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    message = stop_code(run_flags(mnist_dir, tmp_path, epochs=2) + ["--resume", "auto"])
    assert message.startswith("error: could not write ") and "No space left on device" in message
    assert "\n" not in message
    # Everything as it was: no new, half-written or leftover temporary file.
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_resume_auto_without_a_state(mnist_dir, tmp_path):
    message = stop_code(run_flags(mnist_dir, tmp_path) + ["--resume", "auto"])
    assert f"there is no training_state.pth in {tmp_path / 'model'}" in message


def test_a_finished_run_has_nothing_to_train(mnist_dir, reference, capsys):
    trainer.main(["--resume", str(state_path(reference))])
    assert "Nothing to train: the run has finished epoch 4 and --epochs is 4" in capsys.readouterr().out


@pytest.mark.parametrize("centers, expected", [
    (torch.zeros(12, 2), "has 12 classes and 2-D features, this one 10 classes and 2-D features"),
    (torch.zeros(10, 3), "has 10 classes and 3-D features, this one 10 classes and 2-D features"),
])
def test_resume_refuses_another_model(centers, expected, reference, tmp_path):
    state = load_training_state(state_path(reference))
    state["modules"]["center_loss"]["centers"] = centers
    save_checkpoint(tmp_path / "other.pth", state)
    assert expected in stop_code(["--resume", str(tmp_path / "other.pth"), "--epochs", "5"])


def test_resume_refuses_another_layer_shape(reference, tmp_path):
    state = load_training_state(state_path(reference))
    state["modules"]["model"]["ip1.weight"] = torch.zeros(2, 10)
    save_checkpoint(tmp_path / "other.pth", state)
    message = stop_code(["--resume", str(tmp_path / "other.pth"), "--epochs", "5"])
    assert "ip1.weight has shape (2, 10) there, (2, 1152) here" in message


def test_resume_keeps_the_data_order(reference):
    message = stop_code(["--resume", str(state_path(reference)), "--epochs", "5", "--batch_size", "8"])
    assert "--batch_size 8 differs from the run's 4" in message


def test_resume_refuses_a_model_file_and_pickled_code(reference, tmp_path):
    message = stop_code(["--resume", str(reference / "model" / "epoch_004.pth")])
    assert "is a model's state_dict" in message and "training_state.pth" in message
    torch.save({"format": "mnist-center-loss-training-state", "hook": print}, tmp_path / "evil.pth")
    assert "refused to load" in stop_code(["--resume", str(tmp_path / "evil.pth")])


def test_a_truncated_state_gives_one_line_from_the_command_line(reference, tmp_path):
    data = state_path(reference).read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 3])
    result = subprocess.run([sys.executable, SCRIPT, "--resume", str(tmp_path / "cut.pth")],
                            capture_output=True, text=True, timeout=120, cwd=REPO_DIR)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert f"the checkpoint {tmp_path / 'cut.pth'} is truncated or corrupt" in result.stderr
