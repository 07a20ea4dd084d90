"""A run whose numbers go NaN or infinite stops with advice, keeping the last good state."""
import shlex
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import train_mnist_original_center as trainer
from conftest import small_run_flags, stop_message
from run_machinery.errors import UserError
from run_machinery.nan_watch import (
    FEATURE_NORM_LIMIT,
    LOW_DATA_STD,
    MIN_DATA_STD,
    NanWatch,
    NonFiniteError,
    check_data_spread,
    check_test_pass,
    remedy,
)
from run_machinery.training_state import load_training_state

RECIPE = trainer.build_parser().parse_args([])

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_watch_names_the_first_bad_step_and_part():
    watch = NanWatch(torch.device("cpu"))
    good, bad = torch.tensor(1.0), torch.tensor(float("nan"))
    watch.step(1, torch.ones(2, 2), good, good)
    watch.step(2, torch.ones(2, 2), good, bad)
    watch.step(3, torch.full((2, 2), float("inf")), bad, bad)
    with pytest.raises(NonFiniteError,
                       match="the centre loss became NaN or infinite in epoch 5 at step 2 of 9"):
        watch.check([torch.zeros(3)], torch.zeros(10, 2), 5, 3, 9)


def test_features_far_from_the_origin_count_as_blown_up():
    watch = NanWatch(torch.device("cpu"))
    watch.step(1, torch.tensor([[FEATURE_NORM_LIMIT * 2, 0.0]]), torch.tensor(1.0),
               torch.tensor(1.0))
    with pytest.raises(NonFiniteError, match="the features blew up") as error:
        watch.check([torch.zeros(3)], torch.zeros(10, 2), 1, 1, 4)
    assert error.value.max_feature_norm == FEATURE_NORM_LIMIT * 2


def test_non_finite_weights_are_caught_too():
    with pytest.raises(NonFiniteError, match="the centres became NaN") as error:
        NanWatch(torch.device("cpu")).check([torch.zeros(3)], torch.tensor([0.0, float("inf")]),
                                            1, 4, 8)
    assert error.value.network_finite and not error.value.centers_finite


def test_a_bad_test_pass_is_an_error():
    check_test_pass(torch.ones(5, 2), 2.3)
    with pytest.raises(NonFiniteError,
                       match="the test loss became NaN or infinite in the test pass"):
        check_test_pass(torch.ones(5, 2), float("nan"))
    with pytest.raises(NonFiniteError, match="the test features blew up"):
        check_test_pass(torch.full((5, 2), float("nan")), 2.3)


def settings(**changes):
    return SimpleNamespace(**{**vars(RECIPE), **changes})


def test_the_remedy_follows_the_evidence():
    centres = NonFiniteError(["centre loss"], "in epoch 2 at step 3 of 8", max_feature_norm=4.0)
    cause, change = remedy(centres, settings(center_lr=50.0), RECIPE, 0.001)
    assert (cause == "the centres' learning rate is too high (--center_lr 50)"
            and change == "--center_lr 0.5")
    # The centre loss overflowed because the features blew up: the network's rate is the cause.
    blown = NonFiniteError(["centre loss"], "in epoch 2 at step 3 of 8", max_feature_norm=3e38)
    cause, change = remedy(blown, settings(lr=10.0), RECIPE, 10.0)
    assert (cause == "the network's learning rate is too high (--lr 10)"
            and change == "--lr 0.001")  # the article's
    # The schedule raised the rate: --gamma is the cause, whatever went bad.
    cause, change = remedy(blown, settings(gamma=1000.0, step_size=1), RECIPE, 1000.0)
    assert cause.startswith("the schedule raised the network's learning rate to 1000 (--gamma 1000")
    assert change == "--gamma 0.8"
    # A rate already at or below the article's: a tenth of it.
    assert remedy(blown, settings(lr=0.001), RECIPE, 0.001)[1] == "--lr 0.0001"
    assert "(largest feature norm 3e+38)" in str(blown)


def test_a_margin_heads_scale_above_its_default_is_blamed_before_the_rate():
    blown = NonFiniteError(["features"], "in epoch 1 at step 2 of 8", max_feature_norm=3e38)
    cause, change = remedy(blown, settings(head="arcface", scale=1000.0, lr=0.01), RECIPE, 0.01)
    assert (cause == "the head's logit scale is too high (--scale 1000; arcface's default is 16)"
            and change == "--scale 16")
    # at its default scale (or for softmax, which has none) the rate is blamed as before
    assert remedy(blown, settings(head="arcface", scale=16.0, lr=0.01), RECIPE, 0.01)[1] == \
        "--lr 0.001"
    assert remedy(blown, settings(head="softmax", scale=None, lr=0.01), RECIPE, 0.01)[1] == \
        "--lr 0.001"


def test_data_of_little_spread_is_named_as_the_cause():
    blown = NonFiniteError(["features"], "in epoch 1 at step 1 of 8", max_feature_norm=1e9)
    data = settings(dataset="folder", dataset_dir="pictures", lr=0.01)
    cause, change = remedy(blown, data, RECIPE, 0.01, data_std=LOW_DATA_STD / 2)
    assert cause.startswith("the training images of the image folder in pictures vary little")
    assert change is None  # no flag of the run helps
    assert remedy(blown, data, RECIPE, 0.01, data_std=LOW_DATA_STD)[1] == "--lr 0.001"
    for std in (0.0, MIN_DATA_STD / 2, float("nan")):
        with pytest.raises(UserError, match="the training images of the image folder in "
                                            "pictures have a standard deviation of"):
            check_data_spread(std, data)
    check_data_spread(MIN_DATA_STD, data)


def test_images_all_one_value_stop_before_training(tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for index in range(4):
                Image.new("L", (28, 28)).save(tmp_path / "data" / split / name / f"{index}.png")
    message = stop_message(["--dataset", "folder", "--dataset_dir", str(tmp_path / "data"),
                            "--out_dir", str(tmp_path / "out"), "--device", "cpu", "--epochs", "1"])
    assert message == (f"error: the training images of the image folder in {tmp_path / 'data'} "
                       f"have a standard deviation of 0 (pixel values 0 to 1), less than the "
                       f"{MIN_DATA_STD:g} that normalising them needs: they are all, or nearly "
                       f"all, one value; give --dataset_dir images that differ")
    assert not (tmp_path / "out" / "model").exists() or not any(
        (tmp_path / "out" / "model").iterdir())


def test_nan_stops_the_run_and_keeps_the_last_good_state(mnist_dir, tmp_path, capsys):
    trainer.main(small_run_flags(mnist_dir, tmp_path, epochs=1))
    state_path = tmp_path / "training_state.pth"
    good_state = state_path.read_bytes()
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=2)
                           + ["--resume", "auto", "--lr", "1e8"])
    assert "in epoch 2 at step" in message and "of 8" in message
    assert "the network's learning rate is too high (--lr 1e+08)" in message
    assert f"the last good training state is {state_path}" in message and "\n" not in message
    assert state_path.read_bytes() == good_state
    assert (not (tmp_path / "model" / "epoch_002.pth").exists()
            and not (tmp_path / "visual" / "epoch_002.png").exists())
    # The advice works: the command it prints, run as it is, goes on from the last good state.
    command = shlex.split(message.split("e.g. ")[1])
    assert command[:2] == ["python3", "train_mnist_original_center.py"]
    trainer.main(command[2:] + ["--epochs", "2"])
    assert "Resuming with changed settings: --lr 0.001 (was 0.01)" in capsys.readouterr().out
    state = load_training_state(state_path)
    assert state["epoch"] == 2 and state["optimizers"]["net"]["param_groups"][0]["lr"] == 0.001


def test_nan_in_the_first_epoch(mnist_dir, tmp_path):
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=1) + ["--lr", "1e8"])
    assert "in epoch 1" in message and "no training state was saved yet" in message
    assert not (tmp_path / "training_state.pth").exists()


def test_centres_blowing_up_blame_the_centre_rate(mnist_dir, tmp_path):
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=1) + ["--center_lr", "1e30"])
    assert "the centre loss became NaN or infinite" in message and "(--center_lr 1e+30)" in message
    assert message.endswith("start again with a lower one, e.g. --center_lr 0.5")


def test_an_epoch_whose_test_pass_blew_up_is_not_saved(mnist_dir, tmp_path):
    message = stop_message(small_run_flags(mnist_dir, tmp_path, epochs=1)
                           + ["--lr", "100", "--momentum", "0"])
    assert "no training state was saved yet" in message
    assert (not (tmp_path / "training_state.pth").exists()
            and not (tmp_path / "model" / "epoch_001.pth").exists())
