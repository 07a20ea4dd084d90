import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from matplotlib.figure import Figure

from conftest import REAL_MNIST_DIR, make_mnist, output_flags, run_script
import train_mnist_original_center as trainer

class ArticleNet(nn.Module):
    """The network as the article writes it, for checking that our checkpoints load into it."""

    def __init__(self):
        super(ArticleNet, self).__init__()
        self.conv1_1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.prelu1_1 = nn.PReLU()
        self.conv1_2 = nn.Conv2d(32, 32, kernel_size=5, padding=2)
        self.prelu1_2 = nn.PReLU()
        self.conv2_1 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.prelu2_1 = nn.PReLU()
        self.conv2_2 = nn.Conv2d(64, 64, kernel_size=5, padding=2)
        self.prelu2_2 = nn.PReLU()
        self.conv3_1 = nn.Conv2d(64, 128, kernel_size=5, padding=2)
        self.prelu3_1 = nn.PReLU()
        self.conv3_2 = nn.Conv2d(128, 128, kernel_size=5, padding=2)
        self.prelu3_2 = nn.PReLU()
        self.ip1 = nn.Linear(128 * 3 * 3, 2)
        self.preluip1 = nn.PReLU()
        self.ip2 = nn.Linear(2, 10, bias=False)

    def forward(self, x):
        x = self.prelu1_1(self.conv1_1(x))
        x = self.prelu1_2(self.conv1_2(x))
        x = F.max_pool2d(x, 2)
        x = self.prelu2_1(self.conv2_1(x))
        x = self.prelu2_2(self.conv2_2(x))
        x = F.max_pool2d(x, 2)
        x = self.prelu3_1(self.conv3_1(x))
        x = self.prelu3_2(self.conv3_2(x))
        x = F.max_pool2d(x, 2)
        x = x.view(-1, 128 * 3 * 3)
        ip1 = self.preluip1(self.ip1(x))
        ip2 = self.ip2(ip1)
        return ip1, F.log_softmax(ip2, dim=1)


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


def test_checkpoint_loads_strictly_into_the_articles_net(two_epoch_run):
    _, out = two_epoch_run
    state = torch.load(out / "model" / "epoch_002.pth", weights_only=True)
    model = ArticleNet()
    model.load_state_dict(state, strict=True)
    feat, log_probs = model.eval()(torch.zeros(2, 1, 28, 28))
    assert feat.shape == (2, 2) and log_probs.shape == (2, 10)


def test_training_learns_the_synthetic_digits(mnist_dir, tmp_path, capsys):
    trainer.main(["--dataset_dir", str(mnist_dir), "--epochs", "4", "--batch_size", "32", "--lr", "0.01",
                  "--device", "cpu", *map(str, output_flags(tmp_path))])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch:")]
    losses = [float(line.split("train loss: ")[1].split(",")[0]) for line in lines]
    assert losses[-1] < losses[0]


def test_visualize_axes_hold_every_point_and_centre(tmp_path):
    feat = torch.tensor([[0.0, 0.0], [250.0, -3.0], [-7.0, 90.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 9, 3])
    centers = torch.tensor([[-400.0, 2.0]] + [[0.0, 0.0]] * 9)
    figure = Figure()
    ax = figure.add_subplot()
    trainer.draw_features(ax, feat, labels, centers)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 <= -400 and x1 >= 250 and y0 <= -3 and y1 >= 90
    trainer.visualize(feat, labels, 7, tmp_path / "sub" / "plot.png", centers)
    assert (tmp_path / "sub" / "plot.png").stat().st_size > 0


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--center_lr", "-1"], "--center_lr must be positive"),
    (["--model_path_temp", "model.pth"], "--model_path_temp must contain {}"),
    (["--vis_img_path_temp", "plot.png"], "--vis_img_path_temp must contain {}"),
    (["--max_train_samples", "0"], "--max_train_samples must be at least 1"),
    (["--holdout_classes", "10"], "--holdout_classes takes distinct digits 0-9"),
    (["--holdout_classes", *"012345678"], "leaves at least two to train on"),
])
def test_bad_flags_stop_with_one_line(flags, message, capsys, mnist_dir, tmp_path):
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--dataset_dir", str(mnist_dir), *map(str, output_flags(tmp_path)), *flags])
    assert stop.value.code != 0
    assert message in str(stop.value.code) and "\n" not in str(stop.value.code)
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").iterdir())


def test_unwritable_output_folder(tmp_path, mnist_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--dataset_dir", str(mnist_dir), "--model_path_temp", str(blocker / "epoch_{}.pth"),
                      "--vis_img_path_temp", str(tmp_path / "v_{}.png")])
    assert "cannot write to the folder" in str(stop.value.code)
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--dataset_dir", str(mnist_dir), *map(str, output_flags(tmp_path)),
                      "--history_path", str(blocker / "history.csv")])
    assert "--history_path: cannot write to the folder" in str(stop.value.code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(tmp_path, mnist_dir):
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--dataset_dir", str(mnist_dir), "--device", "cuda", *map(str, output_flags(tmp_path))])
    assert "CUDA is not available" in str(stop.value.code)


def test_missing_data_offline(tmp_path, offline):
    with pytest.raises(SystemExit) as stop:
        trainer.main(["--dataset_dir", str(tmp_path / "empty"), *map(str, output_flags(tmp_path))])
    message = str(stop.value.code)
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
    result = run_script("--help")
    assert result.returncode == 0
    for text in ("--epochs", "default: 100", "--center_lr", "default: 0.5", "--max_train_samples"):
        assert text in result.stdout


@pytest.mark.skipif(not (REAL_MNIST_DIR / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_learns_real_mnist(tmp_path):
    """About a minute on 2 CPU cores: 10,000 real images, 2 epochs at lr 0.01.

    The 2-D network starts slowly (measured: 35-39% test accuracy after these 2 epochs);
    chance is 10%."""
    result = run_script("--dataset_dir", REAL_MNIST_DIR, "--epochs", 2, "--lr", 0.01,
                        "--max_train_samples", 10000, "--max_test_samples", 2000, "--device", "cpu",
                        *output_flags(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch:")]
    figures = [dict(part.rsplit(": ", 1) for part in line.split(", ")) for line in lines]
    assert float(figures[1]["train loss"]) < float(figures[0]["train loss"])
    assert float(figures[1]["test acc"]) > 0.25
