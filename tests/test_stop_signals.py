"""A run stopped by a signal saves its state and resumes bit for bit (on CPU, same seed)."""
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from PIL import Image

import train_mnist_original_center as trainer
from conftest import (
    REPO_DIR,
    assert_same_run,
    interrupt_at_training_step,
    small_run_flags,
    stop_message,
)
from run_machinery.checkpointing import load_checkpoint
from run_machinery.errors import UserError
from run_machinery.stop_signals import RunStopped, StopSignals, run_ending
from run_machinery.training_state import load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPT = str(REPO_DIR / "train_mnist_original_center.py")


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(mnist_dir, tmp_path, reference_run, monkeypatch,
                                                    capfd):
    interrupt_at_training_step(monkeypatch, 8 + 3)  # epoch 2, step 3
    code = stop_message(small_run_flags(mnist_dir, tmp_path))
    assert code == 128 + signal.SIGINT
    err = capfd.readouterr().err
    assert "SIGINT: stopping after the current step" in err
    state_path = tmp_path / "training_state.pth"
    assert "Stopped in epoch 2 after step 3 of 8" in err and f"--resume {state_path}" in err
    state = load_training_state(state_path)
    assert state["epoch"] == 1 and state["partial_epoch"]["step"] == 3
    assert not (tmp_path / "model" / "epoch_002.pth").exists()
    monkeypatch.undo()
    trainer.main(small_run_flags(mnist_dir, tmp_path) + ["--resume", "auto"])
    assert "Resuming from" in capfd.readouterr().out
    assert_same_run(tmp_path, reference_run)


@contextmanager
def running(argv):
    """The trainer in a subprocess with piped output, killed if a test leaves it running."""
    process = subprocess.Popen([sys.executable, SCRIPT, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO_DIR,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
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


def test_sigterm_to_a_running_trainer_saves_and_resumes_exactly(mnist_dir, tmp_path, reference_run):
    with running(small_run_flags(mnist_dir, tmp_path)) as process:
        wait_for(process.stdout, "Epoch:   1")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        err = process.stderr.read()
    assert code == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopping after the current step" in err
    # Where it stops depends on the timing; the message and the resumed run do not.
    assert ("Stopped " in err and f"--resume {tmp_path / 'training_state.pth'}" in err
            and "Traceback" not in err)
    trainer.main(small_run_flags(mnist_dir, tmp_path) + ["--resume", "auto"])
    assert_same_run(tmp_path, reference_run)


def test_a_second_ctrl_c_quits_at_once(mnist_dir, tmp_path):
    # One step of 32 images takes long enough for the second signal to land inside it.
    argv = small_run_flags(mnist_dir, tmp_path) + ["--batch_size", "32"]
    with running(argv) as process:
        wait_for(process.stdout, "Start training")
        process.send_signal(signal.SIGINT)
        wait_for(process.stderr, "stopping after the current step")
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
        err = process.stderr.read()
    assert code == 128 + signal.SIGINT, err
    assert ("Stopped at once by a second signal; no training state was saved" in err
            and "Traceback" not in err)
    assert not (tmp_path / "training_state.pth").exists()


def assert_files_whole(folder):
    for path in [*(folder / "model").glob("*.pth"), folder / "training_state.pth"]:
        if path.exists():
            load_checkpoint(path)
    for path in (folder / "visual").glob("*.png"):
        with Image.open(path) as image:
            image.load()


def test_sigkill_at_any_moment_leaves_whole_files_and_resume_is_exact(mnist_dir, tmp_path,
                                                                      reference_run):
    state_path = tmp_path / "training_state.pth"
    # Killed as an epoch's files are being written, and in the next epoch's steps.
    for delay in (0.0, 0.4):
        # Killed before its first training state, the run starts afresh in its own folder.
        resume = ["--resume", "auto"] if state_path.exists() else ["--overwrite"]
        if state_path.exists() and load_training_state(state_path)["epoch"] == 4:
            break  # a fast machine finished the run before a kill
        with running(small_run_flags(mnist_dir, tmp_path) + resume) as process:
            wait_for(process.stdout, "Epoch:")
            time.sleep(delay)
            process.kill()
        assert_files_whole(tmp_path)
    resume = ["--resume", "auto"] if state_path.exists() else ["--overwrite"]
    trainer.main(small_run_flags(mnist_dir, tmp_path) + resume)
    assert_same_run(tmp_path, reference_run)


class FolderLock:
    """Stands for a run's folder, which the run holds until it ends."""
    closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.closed = True


def test_run_ending_returns_the_run_and_releases_the_folder():
    signal_handler = signal.getsignal(signal.SIGINT)
    with run_ending() as run:
        folder = run.enter_context(FolderLock())
        assert signal.getsignal(signal.SIGINT) == run.stop.handle
    assert folder.closed and signal.getsignal(signal.SIGINT) == signal_handler


@pytest.mark.parametrize("ending, status, message", [
    (UserError("no such folder"), "error: no such folder", None),
    (RunStopped("Stopped after epoch 3", signal.SIGTERM), 128 + signal.SIGTERM,
     "Stopped after epoch 3"),
])
def test_run_ending_ends_a_stop_or_an_error_in_one_line(ending, status, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        with run_ending() as run:
            folder = run.enter_context(FolderLock())
            raise ending
    assert exit_info.value.code == status and folder.closed
    assert capsys.readouterr().err.strip() == (message or "")


def test_run_ending_lets_other_errors_through_with_their_traceback():
    with pytest.raises(ZeroDivisionError):
        with run_ending() as run:
            folder = run.enter_context(FolderLock())
            1 / 0
    assert folder.closed


def test_ctrl_c_mid_epoch_of_pk_batches_resumes_exactly(mnist_dir, tmp_path, monkeypatch):
    """PK batches with the triplet loss: 60 images, P = 2 classes x K = 2 images, 15 steps an
    epoch; stopped at epoch 2, step 3, and resumed, the run is the uninterrupted one."""
    pk = ["--classes_per_batch", "2", "--images_per_class", "2", "--triplet_weight", "1",
          "--max_train_samples", "60"]
    trainer.main(small_run_flags(mnist_dir, tmp_path / "reference", epochs=2) + pk)
    interrupt_at_training_step(monkeypatch, 15 + 3)
    stopped = small_run_flags(mnist_dir, tmp_path / "stopped", epochs=2) + pk
    assert stop_message(stopped) == 128 + signal.SIGINT
    state = load_training_state(tmp_path / "stopped" / "training_state.pth")
    assert state["partial_epoch"]["step"] == 3
    monkeypatch.undo()
    trainer.main(stopped + ["--resume", "auto"])
    assert_same_run(tmp_path / "stopped", tmp_path / "reference", epochs=2)


def test_a_stop_before_training_acts_at_once():
    start = time.monotonic()
    with pytest.raises(RunStopped, match="Stopped by SIGTERM before training began") as stopped:
        with StopSignals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # start-up work that would go on
    assert time.monotonic() - start < 1 and stopped.value.exit_status == 128 + signal.SIGTERM


def test_a_run_of_a_hundred_million_epochs_starts_and_stops_at_once(mnist_dir, tmp_path):
    timer = threading.Timer(3, os.kill, (os.getpid(), signal.SIGTERM))
    start = time.monotonic()
    timer.start()
    try:
        status = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=100_000_000))
    finally:
        timer.cancel()
    assert status == 128 + signal.SIGTERM and time.monotonic() - start < 10


def test_a_second_signal_names_the_last_good_state_the_keeper_saved(capsys):
    with pytest.raises(SystemExit) as exit_info:
        with run_ending() as run:
            run.stop.signum = signal.SIGINT
            run.stop.last_good_state = "RUN/training_state.pth"  # as StateKeeper.save leaves it
            raise KeyboardInterrupt
    assert exit_info.value.code == 128 + signal.SIGINT
    assert capsys.readouterr().err.strip() == (
        "Stopped at once by a second signal; the last training state saved is "
        "RUN/training_state.pth")
