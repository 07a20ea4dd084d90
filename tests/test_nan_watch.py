"""A run whose numbers go NaN or infinite stops with advice, keeping the last good state."""
import pytest
import torch

import train_mnist_original_center as trainer
from conftest import small_run_flags, stop_message
from nan_watch import NanWatch, NonFiniteError
from training_state import load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_watch_names_the_first_bad_step_and_part():
    watch = NanWatch(torch.device("cpu"))
    good, bad = torch.tensor(1.0), torch.tensor(float("nan"))
    watch.step(1, torch.ones(2, 2), good, good)
    watch.step(2, torch.ones(2, 2), good, bad)
    watch.step(3, torch.full((2, 2), float("inf")), bad, bad)
    with pytest.raises(NonFiniteError, match="the centre loss became NaN or infinite in epoch 5 at step 2 of 9"):
        watch.check([torch.zeros(3)], 5, 3, 9)


def test_non_finite_weights_are_caught_too():
    with pytest.raises(NonFiniteError, match="the weights became NaN"):
        NanWatch(torch.device("cpu")).check([torch.tensor([0.0, float("inf")])], 1, 4, 8)


def test_nan_stops_the_run_and_keeps_the_last_good_state(mnist_dir, tmp_path, capsys):
    trainer.main(small_run_flags(mnist_dir, tmp_path, epochs=1))
    state_path = tmp_path / "training_state.pth"
    good_state = state_path.read_bytes()
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=2) + ["--resume", "auto", "--lr", "1e8"])
    assert "became NaN or infinite in epoch 2 at step" in message and "of 8" in message
    assert "the softmax loss" in message and "learning rate too high (--lr 1e+08)" in message
    assert f"the last good training state is {state_path}" in message and "\n" not in message
    assert state_path.read_bytes() == good_state
    assert not (tmp_path / "model" / "epoch_002.pth").exists() and not (tmp_path / "visual" / "epoch_002.png").exists()
    # The advice works: from the last good state, with a sane rate, the run goes on.
    trainer.main(["--resume", str(state_path), "--epochs", "2", "--lr", "0.001"])
    assert "Resuming with changed settings: --lr 0.001 (was 0.01)" in capsys.readouterr().out
    state = load_training_state(state_path)
    assert state["epoch"] == 2 and state["optimizers"]["net"]["param_groups"][0]["lr"] == 0.001


def test_nan_in_the_first_epoch(mnist_dir, tmp_path):
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=1) + ["--lr", "1e8"])
    assert "in epoch 1 at step" in message and "no training state was saved yet" in message
    assert not (tmp_path / "training_state.pth").exists()


def test_centres_blowing_up_blame_the_centre_rate(mnist_dir, tmp_path):
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=1) + ["--center_lr", "1e30"])
    assert "the centre loss became NaN or infinite" in message and "(--center_lr 1e+30)" in message
