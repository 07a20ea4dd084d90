"""The training script end to end: the article's steps, its files, its flags and its errors."""
import functools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from center_loss import CenterLoss
from margin_heads import Head
from mnist_loader import DATASETS
from mnist_net import Net

import train_mnist_original_center as trainer
from article_net import ArticleNet
from conftest import (
    FOLDER_CLASSES,
    REAL_MNIST_DIR,
    REPO_DIR,
    assert_equal,
    make_mnist,
    output_flags,
    run_script,
    stop_message,
    trainer_flags,
    write_idx,
)
from run_machinery.datasets import load_dataset, read_split
from run_machinery.devices import bf16_supported, speed_setup
from run_machinery.metrics import retrieval_metrics
from run_machinery.training_extras import TrainingExtras
from run_machinery.training_state import load_training_state

NEEDS_BF16 = pytest.mark.skipif(not bf16_supported(torch.device("cpu")),
                                reason="this CPU has no native bfloat16")


def test_end_to_end_two_epochs(two_epoch_run):
    result, out = two_epoch_run
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch:")]
    assert len(lines) == 2
    assert lines[0].startswith("Epoch:   1, train acc: ")
    for field in ("train acc", "train loss", "test acc", "test loss"):
        assert f"{field}: " in lines[1]
    for epoch in ("001", "002"):
        assert (out / "model" / f"epoch_{epoch}.pth").is_file()
        with Image.open(out / "visual" / f"epoch_{epoch}.png") as image:
            assert image.size == (1600, 700)  # training and test features side by side


def test_one_folder_holds_the_run(two_epoch_run, mnist_dir):
    _, out = two_epoch_run
    for name in ("run.json", "history.csv", "history.png", "training_state.pth", "test_features.pt",
                 "features.gif", "model/epoch_002.pth", "visual/epoch_002.png"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["epochs"] == 2 and run["settings"]["lr"] == 0.01
    assert run["classes"] == list(range(10))
    # the dataset's folder as given, the run's own paths relative to its folder
    assert run["dataset_dir"] == run["settings"]["dataset_dir"] == str(mnist_dir)
    assert (run["settings"]["out_dir"], run["training_state"]) == (".", "training_state.pth")


def test_the_articles_templates_override_their_part(mnist_dir, tmp_path):
    trainer.main(trainer_flags(mnist_dir, tmp_path / "run", "--epochs", 1,
                               "--max_train_samples", 64,
                               "--model_path_temp", tmp_path / "ckpt" / "m_{}.pth",
                               "--vis_img_path_temp", tmp_path / "pics" / "v_{}.png"))
    assert ((tmp_path / "ckpt" / "m_001.pth").is_file()
            and (tmp_path / "pics" / "v_001.png").is_file())
    assert ((tmp_path / "run" / "history.csv").is_file()
            and not (tmp_path / "run" / "model").exists())


def test_checkpoint_loads_strictly_into_the_articles_net(two_epoch_run):
    _, out = two_epoch_run
    state = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    model = ArticleNet()
    model.load_state_dict(state, strict=True)
    feat, log_probs = model.eval()(torch.zeros(2, 1, 28, 28))
    assert feat.shape == (2, 2) and log_probs.shape == (2, 10)


def test_an_angular_head_run_describes_itself_and_keeps_the_articles_keys(arcface_run):
    run = json.loads((arcface_run / "run.json").read_text())
    assert ((run["settings"]["head"], run["settings"]["scale"], run["settings"]["margin"])
            == ("arcface", 16.0, 0.2))
    ArticleNet().load_state_dict(torch.load(arcface_run / "model" / "epoch_002.pth",
                                            weights_only=True), strict=True)
    with Image.open(arcface_run / "visual" / "epoch_002.png") as image:
        assert image.size == (2400, 700)  # training, test, and the test features' directions
    with Image.open(arcface_run / "features.gif") as gif:
        # the features and their directions: two panels of the epoch picture
        assert gif.size == (1600, 700) and gif.n_frames == 2
    saved = torch.load(arcface_run / "test_features.pt", weights_only=True)
    header, *_, last_row = (arcface_run / "history.csv").read_text().splitlines()
    map_at_r = float(last_row.split(",")[header.split(",").index("map_at_r")])
    by_cosine = retrieval_metrics(F.normalize(saved["features"][-1].float(), dim=1),
                                  saved["digits"])
    # an angular head retrieves by direction
    assert map_at_r == pytest.approx(by_cosine["map_at_r"])


@pytest.mark.parametrize("head", ["normface", "cosface", "arcface", "sphereface"])
def test_each_head_trains_with_center_loss(mnist_dir, head):
    """Two epochs of train() on 128 images: the loss falls, the Center Loss takes part."""
    torch.manual_seed(0)
    train_loader, _, classes = load_dataset(mnist_dir, 32, seed=0, max_train_samples=128)
    model, center_loss = Net(len(classes)), CenterLoss(len(classes), 2)
    optimizers = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4),
                  torch.optim.SGD(center_loss.parameters(), lr=0.5))
    steps = (train_loader, nn.NLLLoss(), center_loss, *optimizers)
    extras = TrainingExtras(Head(head, model.ip2.weight))
    first, *_ = trainer.train(model, *steps, 1, extras)
    last, *_ = trainer.train(model, *steps, 2, extras)
    assert last.loss < first.loss and last.center_loss > 0


def test_a_diverging_head_stops_with_the_nan_message(mnist_dir, tmp_path):
    message = stop_message(["--dataset_dir", str(mnist_dir), "--max_train_samples", "128",
                            "--batch_size", "32", "--device", "cpu", "--head", "cosface",
                            "--lr", "100", *output_flags(tmp_path)])
    assert (message.startswith("error: the features blew up") and "--lr 100" in message
            and "\n" not in message)
    assert ("no training state was saved yet" in message
            and not (tmp_path / "model" / "epoch_001.pth").exists())


def test_bad_head_settings_stop_in_one_line(mnist_dir, tmp_path):
    message = stop_message(trainer_flags(mnist_dir, tmp_path, "--head", "arcface",
                                         "--margin", "3.5"))
    assert message == ("error: --margin of arcface is an angle in radians and must be below pi, "
                       "got 3.5")
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--head", "sphereface", "--margin", "1000000"],
     "--margin of sphereface multiplies the angle and must be an integer from 1 to 10, "
     "got 1000000.0"),
    (["--head", "sphereface", "--margin", "1e20"], "must be an integer from 1 to 10, got 1e+20"),
    (["--head", "cosface", "--margin", "1e38"],
     "--margin of cosface is a cosine margin and must be below 2"),
    (["--head", "arcface", "--scale", "1e38"], "--scale must be at most 1000"),
])
def test_extreme_head_settings_are_refused_at_once(mnist_dir, tmp_path, flags, message):
    text = stop_message(trainer_flags(mnist_dir, tmp_path, "--dry_run", *flags))
    assert text.startswith("error: ") and message in text and "\n" not in text


def test_help_states_each_heads_range():
    text_of_help = " ".join(trainer.build_parser().format_help().split())
    assert "--scale SCALE s, the logit scale of normface, cosface and arcface, above 0 and at " \
           "most 1000;" in text_of_help
    assert ("cosface's cosine margin, 0 to below 2; arcface's angle margin in radians, 0 to "
            "below pi; sphereface's angle multiplier, an integer from 1 to 10;" in text_of_help)


def test_a_test_split_of_one_image_trains_with_undefined_retrieval(mnist_dir, tmp_path):
    record = run_one_epoch(mnist_dir, tmp_path, "--max_test_samples", 1, "--holdout_classes", 9)
    assert math.isnan(record.retrieval["map_at_r"]) and math.isnan(record.retrieval["rank_1"])
    assert record.retrieval["queries_without_match"] == 1
    assert (tmp_path / "visual" / "epoch_001.png").is_file()


def test_a_fashion_mnist_run_records_its_dataset_and_names(fashion_run):
    run = json.loads((fashion_run / "run.json").read_text())
    assert run["dataset"] == run["settings"]["dataset"] == "fashion-mnist"
    assert run["holdout_classes"] == [6, 8] and run["classes"] == [0, 1, 2, 3, 4, 5, 7, 9]
    assert run["class_names"][6] == "Shirt"


def test_a_folder_run_records_its_classes_and_normalisation(folder_run, image_folder_dir):
    run = json.loads((folder_run / "run.json").read_text())
    assert run["dataset"] == "folder" and run["dataset_dir"] == str(image_folder_dir.resolve())
    assert run["class_names"] == list(FOLDER_CLASSES) and run["holdout_classes"] == [1, 10]
    assert run["classes"] == [0, *range(2, 10)]
    images, _ = read_split(image_folder_dir, True, dataset="folder")  # the whole training split
    pixels = images.double() / 255
    assert (run["mean"], run["std"]) == (round(pixels.mean().item(), 4),
                                         round(pixels.std().item(), 4))
    model = torch.load(folder_run / "model" / "epoch_002.pth", weights_only=True)
    assert model["ip2.weight"].shape == (9, 2)  # 11 classes, 2 held out
    assert (folder_run / "visual" / "epoch_002.png").is_file()
    assert (folder_run / "features.gif").is_file()


REAL_FASHION_DIR = REPO_DIR.parent / "shared" / "fashion-mnist"


@pytest.mark.skipif(not REAL_FASHION_DIR.is_dir(),
                    reason=f"real Fashion-MNIST not found at {REAL_FASHION_DIR}")
def test_fashion_mnist_as_png_folders_trains_as_fashion_mnist(tmp_path):
    """Fashion-MNIST's 60,000 training images (and its first 1,000 test ones) written as PNGs,
    a class a folder, and trained with --dataset folder, give bit for bit the figures of
    --dataset fashion-mnist on IDX files of the same images in the folders' order
    (ImageFolder's: class by class, then by file name, here the IDX index). PNG is lossless:
    the same pixels; their mean and standard deviation, rounded to 4 places as a folder's
    are, are Fashion-MNIST's stated 0.2860 and 0.3530. The first 512 images in that order
    are T-shirts: a check of equality, not of learning. (Slow: 61,000 PNGs are written and
    decoded, 100 s on a busy 2-core CPU.)"""
    folders = [f"{label}_{name.replace('/', '-')}"
               for label, name in enumerate(DATASETS["fashion-mnist"].class_names)]
    (tmp_path / "idx").mkdir()
    for split, prefix, count in (("train", "train", None), ("test", "t10k", 1000)):
        images, labels = read_split(REAL_FASHION_DIR, split == "train", count, "fashion-mnist")
        for folder in folders:
            (tmp_path / "png" / split / folder).mkdir(parents=True)
        for index, (image, label) in enumerate(zip(images.numpy(), labels.tolist())):
            Image.fromarray(image).save(tmp_path / "png" / split / folders[label]
                                        / f"{index:05d}.png", compress_level=1)
        order = labels.argsort(stable=True)
        write_idx(tmp_path / "idx" / f"{prefix}-images-idx3-ubyte", images[order].numpy())
        write_idx(tmp_path / "idx" / f"{prefix}-labels-idx1-ubyte", labels[order].numpy())
    runs = {}
    for dataset, data in (("folder", tmp_path / "png"), ("fashion-mnist", tmp_path / "idx")):
        trainer.main(["--dataset", dataset, "--dataset_dir", str(data), "--epochs", "1",
                      "--max_train_samples", "512", "--max_test_samples", "256",
                      "--device", "cpu", *output_flags(tmp_path / dataset)])
        runs[dataset] = json.loads((tmp_path / dataset / "run.json").read_text())
        runs[dataset]["state"] = load_training_state(tmp_path / dataset / "training_state.pth")
    assert runs["folder"]["class_names"] == folders
    assert (runs["folder"]["mean"], runs["folder"]["std"]) == (0.2860, 0.3530) == \
           (runs["fashion-mnist"]["mean"], runs["fashion-mnist"]["std"])
    folder, fashion = runs["folder"]["state"], runs["fashion-mnist"]["state"]
    untimed = [[{key: value for key, value in record.items() if key not in ("seconds", "times")}
                for record in state["history"]["records"]] for state in (folder, fashion)]
    assert untimed[0] == untimed[1]
    assert_equal(folder["history"]["test_features"], fashion["history"]["test_features"])
    assert_equal(folder["modules"], fashion["modules"])


def test_main_returns_the_history_it_prints(mnist_dir, tmp_path, capsys):
    history = trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 3, "--batch_size", 32))
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch:")]
    assert [record.line() for record in history.records] == printed
    assert [record.epoch for record in history.records] == [1, 2, 3]
    # It learns the synthetic digits.
    assert history.records[-1].train.loss < history.records[0].train.loss
    times = history.records[-1].times
    assert min(times.train, times.test, times.metrics, times.files) > 0
    assert history.records[-1].seconds == pytest.approx(times.train + times.test + times.metrics)


def test_every_flag_is_in_both_usage_pages():
    flags = [action.option_strings[0] for action in trainer.build_parser()._actions
             if action.option_strings and action.option_strings[0] != "-h"]
    for readme in ("docs/usage.md", "docs/usage.ja.md"):
        text = (REPO_DIR / readme).read_text()
        missing = [flag for flag in flags if f"| `{flag}`" not in text]
        assert not missing, f"{readme} lacks {missing}"


def test_visualize_writes_the_plot(tmp_path):
    feat, labels = torch.randn(40, 2), torch.arange(40) % 10
    trainer.visualize(feat, labels, 7, tmp_path / "sub" / "plot.png", torch.zeros(10, 2), feat,
                      labels)
    with Image.open(tmp_path / "sub" / "plot.png") as image:
        assert image.size == (1600, 700)
    directions = {label: torch.randn(2) for label in range(10)}
    trainer.visualize(feat, labels, 7, tmp_path / "angular.png", torch.zeros(10, 2), feat, labels,
                      (), directions)
    with Image.open(tmp_path / "angular.png") as image:
        assert image.size == (2400, 700)


def test_an_output_file_taken_by_a_folder_is_caught_before_training(mnist_dir, tmp_path):
    (tmp_path / "model" / "epoch_002.pth").mkdir(parents=True)
    message = stop_message(trainer_flags(mnist_dir, tmp_path, "--epochs", 2))
    assert (f"the output file {tmp_path / 'model' / 'epoch_002.pth'} is an existing folder"
            in message)
    assert not (tmp_path / "model" / "epoch_001.pth").exists()


def test_one_run_per_folder(mnist_dir, tmp_path, capsys):
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 2, "--max_train_samples", 64))
    message = stop_message(trainer_flags(mnist_dir, tmp_path, "--epochs", 1,
                                         "--max_train_samples", 64))
    assert f"{tmp_path} holds another run's outputs" in message
    assert "--resume auto" in message and "--overwrite" in message and "\n" not in message
    capsys.readouterr()
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--max_train_samples", 64,
                               "--overwrite"))
    assert f"--overwrite: deleted 10 files of the run in {tmp_path}: " in capsys.readouterr().out
    # The earlier run's second epoch is gone with it: the folder holds one run.
    assert (not (tmp_path / "model" / "epoch_002.pth").exists()
            and (tmp_path / "model" / "epoch_001.pth").exists())


def test_a_second_trainer_on_the_same_folder_stops(mnist_dir, tmp_path):
    import os

    from run_machinery.run_folder import RunLock
    tmp_path.mkdir(exist_ok=True)
    held = RunLock(tmp_path)  # as a running trainer holds it
    try:
        message = stop_message(trainer_flags(mnist_dir, tmp_path, "--epochs", 1))
    finally:
        held.release()
    assert f"another trainer (process {os.getpid()}) is writing to {tmp_path}" in message
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--max_train_samples", 64))


def test_the_seed_seeds_numpy_and_python_too(mnist_dir, tmp_path):
    import random

    import numpy as np

    from run_machinery.training_state import load_training_state
    trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--max_train_samples", 64,
                               "--seed", 7))
    saved = load_training_state(tmp_path / "training_state.pth")["rng"]
    np.random.seed(7)
    random.seed(7)
    assert torch.equal(saved["numpy"][1],
                       torch.from_numpy(np.random.get_state()[1].astype(np.int64)))
    assert tuple(saved["python"][1]) == random.getstate()[1]


def sigterm_caught(pid):
    """Whether process `pid` has a handler for SIGTERM, from Linux's /proc/PID/status."""
    import signal
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_ctrl_c_while_the_script_starts_is_one_line(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_DIR
    process = subprocess.Popen([sys.executable, str(REPO_DIR / "train_mnist_original_center.py"),
                                *output_flags(tmp_path)], stderr=subprocess.PIPE, text=True,
                               cwd=REPO_DIR)
    # Signal once the script's own handler is set (the kernel lists SIGTERM as caught: Python
    # alone catches SIGINT only), so that it lands among the slow imports after it, however
    # busy the machine is.
    deadline = time.monotonic() + 30
    while not sigterm_caught(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 128 + signal.SIGINT
    assert "Traceback" not in err and err.strip().count("\n") == 0 and "Stopped by SIGINT" in err


def test_unwritable_output_folder(tmp_path, mnist_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    text = stop_message(trainer_flags(mnist_dir, tmp_path, "--model_path_temp",
                                      blocker / "epoch_{}.pth"))
    assert "--model_path_temp: cannot write to the folder" in text
    assert ("--out_dir: cannot write to the folder"
            in stop_message(trainer_flags(mnist_dir, blocker / "run")))


def test_missing_data_offline(tmp_path, offline):
    message = stop_message(["--dataset_dir", str(tmp_path / "empty"), *output_flags(tmp_path)])
    assert str(tmp_path / "empty") in message and "t10k-labels-idx1-ubyte" in message
    assert "\n" not in message


def test_corrupt_data_from_the_command_line(tmp_path):
    make_mnist(tmp_path / "data", train_count=40, test_count=20)
    labels = tmp_path / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x99\x99garbage")
    result = run_script("--dataset_dir", tmp_path / "data", *output_flags(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "truncated or corrupt" in result.stderr and str(tmp_path / "data") in result.stderr


def test_help_states_defaults():
    text_of_help = trainer.build_parser().format_help()
    for text in ("--epochs", "default: 100", "--center_lr", "default: 0.5", "--max_train_samples",
                 "--out_dir", "--dry_run"):
        assert text in text_of_help


def test_dry_run_trains_one_step_and_writes_nothing(mnist_dir, tmp_path, capsys):
    history = trainer.main(trainer_flags(mnist_dir, tmp_path / "run", "--dry_run"))
    assert [record.epoch for record in history.records] == [1]
    assert "Start training on cpu: 64 training and 64 test images" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def run_one_epoch(mnist_dir, out, *flags):
    """One epoch of main() on the synthetic data; returns its record."""
    return trainer.main(trainer_flags(mnist_dir, out, "--epochs", 1, *flags)).records[-1]


@pytest.fixture(scope="module")
def default_record(mnist_dir, tmp_path_factory):
    """fp32, channels-last."""
    return run_one_epoch(mnist_dir, tmp_path_factory.mktemp("fp32"))


@pytest.fixture
def aot_eager_compile(monkeypatch):
    """torch.compile through AOTAutograd but without generating C++: the same tracing of the
    forward and backward graphs, in seconds instead of the minute inductor takes here."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


@pytest.mark.parametrize("flags, tolerance", [
    (["--no-channels_last"], 1e-4),
    pytest.param(["--amp"], 2e-2, marks=NEEDS_BF16),
    pytest.param(["--amp", "--no-channels_last"], 2e-2, marks=NEEDS_BF16),
    (["--compile"], 1e-4),
])
def test_speed_flag_trains_like_the_defaults(flags, tolerance, mnist_dir, tmp_path, default_record,
                                             request):
    if "--compile" in flags:
        request.getfixturevalue("aot_eager_compile")
    record = run_one_epoch(mnist_dir, tmp_path, *flags)
    assert record.train.loss == pytest.approx(default_record.train.loss, rel=tolerance)
    assert record.test.loss == pytest.approx(default_record.test.loss, rel=tolerance)
    # The checkpoint keeps the article's keys (no "_orig_mod." from torch.compile).
    Net().load_state_dict(torch.load(tmp_path / "model" / "epoch_001.pth", weights_only=True),
                          strict=True)
    with Image.open(tmp_path / "visual" / "epoch_001.png") as image:
        assert image.size == (1600, 700)


class SyncErrorWhileIterating:
    """A loader that turns CUDA's sync debug mode to "error" while the step loop runs over it;
    the one sync after the loop (the epoch's metrics) is allowed."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.loader
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
def test_no_host_sync_in_cuda_step_loop(mnist_dir, amp):
    device = torch.device("cuda")
    train_loader, test_loader, classes = load_dataset(mnist_dir, 64, 64, device=device, seed=0)
    model = Net(len(classes)).to(device)
    speed_setup(model, device, channels_last=True)
    center_loss = CenterLoss(len(classes), 2).to(device)
    dnn_optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    center_optimizer = torch.optim.SGD(center_loss.parameters(), lr=0.5)
    steps = (nn.NLLLoss(), center_loss, dnn_optimizer, center_optimizer)
    # A first epoch unguarded: lazy initialisation and cuDNN's autotuning may synchronise once.
    extras = TrainingExtras(Head("softmax"), amp=amp)
    trainer.train(model, train_loader, *steps, 1, extras)
    metrics, features, labels = trainer.train(model, SyncErrorWhileIterating(train_loader),
                                              *steps, 2, extras)
    assert features.device.type == "cpu" and features.shape == (train_loader.num_samples, 2)
    trainer.test(model, SyncErrorWhileIterating(test_loader), nn.NLLLoss(), center_loss, extras)


@pytest.mark.skipif(not (REAL_MNIST_DIR / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_learns_real_mnist(tmp_path):
    """2 epochs on 2,500 real images at lr 0.02, batch 32, in float32 on every CPU (about 35 s
    on an AVX2-only CPU, a few on an AVX512 one). The 2-D network starts slowly: measured
    here, seeds 1, 2 and 3 reached 40%, 27% and 24% test accuracy (MAP@R 0.36, 0.33, 0.27);
    chance is 10% (MAP@R about 0.1)."""
    history = trainer.main(["--dataset_dir", str(REAL_MNIST_DIR), "--epochs", "2", "--lr", "0.02",
                            "--batch_size", "32", "--max_train_samples", "2500",
                            "--max_test_samples", "1000", "--device", "cpu",
                            *output_flags(tmp_path)])
    first, last = history.records
    assert last.train.loss < first.train.loss
    assert last.test.acc > 0.2 and last.retrieval["map_at_r"] > 0.2

def test_3d_features_with_the_triplet_loss_on_pk_batches(mnist_dir, tmp_path, capsys):
    history = trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 2, "--feat_dim", 3,
                                         "--triplet_weight", 1, "--classes_per_batch", 8,
                                         "--images_per_class", 16))
    out = capsys.readouterr().out
    assert "train triplet: " in out and "Epoch:   2," in out
    first, last = history.records
    assert 0 < last.train.triplet_loss < last.train.loss  # a part of the total, weighted 1
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert "train_triplet_loss" in header and "test_triplet_loss" not in header
    assert history.test_features[-1].shape == (100, 3)
    with Image.open(tmp_path / "visual" / "epoch_002.png") as image:
        assert image.size == (1600, 700)  # the training and test features, in 3-D
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["settings"]["feat_dim"] == 3 and run["settings"]["classes_per_batch"] == 8


def test_the_triplet_loss_alone_when_the_softmax_is_weighed_0(mnist_dir, tmp_path):
    history = trainer.main(trainer_flags(mnist_dir, tmp_path, "--epochs", 1, "--softmax_weight", 0,
                                         "--loss_weight", 0, "--triplet_weight", 1,
                                         "--classes_per_batch", 4, "--images_per_class", 8))
    (record,) = history.records
    assert record.train.triplet_loss > 0
    assert record.train.loss == pytest.approx(record.train.triplet_loss)  # nothing else counts
    assert record.test.loss == 0  # the head's and the centres' parts, weighed 0


def test_a_128_d_run_evaluates_without_repeating_flags(mnist_dir, tmp_path):
    import evaluate
    trainer.main(trainer_flags(mnist_dir, tmp_path / "run", "--epochs", 1, "--feat_dim", 128,
                               "--head", "arcface", "--holdout_classes", 9))
    checkpoint = tmp_path / "run" / "model" / "epoch_001.pth"
    state = torch.load(checkpoint, weights_only=True)
    assert list(state) == list(Net().state_dict()) and state["ip1.weight"].shape == (128, 1152)
    metrics = evaluate.main([str(checkpoint), "--plot", str(tmp_path / "plot.png"),
                             "--tsne", str(tmp_path / "tsne.png")])
    assert metrics["head"] == "arcface" and metrics["holdout_classes"] == [9]
    assert 0 <= metrics["unseen_map_at_r"] <= 1
    for picture in ("plot.png", "tsne.png"):
        with Image.open(tmp_path / picture) as image:
            assert image.size == (800, 700)  # one panel: no decision regions beyond 2-D
