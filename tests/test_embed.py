import json
import shutil

import pytest
import torch
from PIL import Image, ImageDraw

import embed
from conftest import FOLDER_CLASSES, REAL_MNIST_DIR
from run_machinery.checkpoint_run import load_test_split, open_checkpoint
from run_machinery.cli import SHIPPED_CHECKPOINT
from run_machinery.datasets import read_split

RESULT_KEYS = {"image", "class", "class_index", "score", "feature", "nearest"}


def write_png(pixels, path):
    Image.fromarray(pixels).save(path)
    return str(path)


def network_feature(checkpoint, dataset_dir, limit, index):
    """The feature the checkpoint's network gives test image `index`, as the test split is
    loaded for evaluation, that image alone (the path embed.py takes for a picture)."""
    test_loader = load_test_split(dataset_dir, "cpu", limit)
    model = open_checkpoint(checkpoint).model.eval()
    with torch.no_grad():
        return model(test_loader.images[index:index + 1])[0][0]


def assert_same_feature_as_the_test_image(checkpoint, dataset_dir, limit, index, tmp_path):
    pixels = read_split(dataset_dir, train=False, limit=limit)[0][index].numpy()
    picture = write_png(pixels, tmp_path / "test_image.png")
    [result] = embed.main([checkpoint, picture, "--device", "cpu"])
    assert torch.equal(torch.tensor(result["feature"]),
                       network_feature(checkpoint, dataset_dir, limit, index))
    # The picture is that test image: the nearest test image is itself.
    assert result["nearest"]["indices"][0] == index and result["nearest"]["distances"][0] < 1e-4


def test_a_28x28_test_image_as_png_gives_the_networks_feature_of_it(two_epoch_run, mnist_dir,
                                                                   tmp_path):
    _, out = two_epoch_run
    assert_same_feature_as_the_test_image(str(out / "model" / "epoch_002.pth"), mnist_dir, None,
                                          37, tmp_path)


@pytest.mark.skipif(not (REAL_MNIST_DIR / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_a_real_mnist_test_image_as_png_gives_the_networks_feature_of_it(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    # The small run's model, as if trained on the real MNIST: its run.json sends it there.
    run = json.loads((out / "run.json").read_text())
    run["dataset_dir"] = str(REAL_MNIST_DIR)
    run["settings"]["max_test_samples"] = 300
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps(run))
    shutil.copy(out / "model" / "epoch_002.pth", tmp_path / "run" / "epoch_002.pth")
    assert_same_feature_as_the_test_image(str(tmp_path / "run" / "epoch_002.pth"),
                                          REAL_MNIST_DIR, 300, 123, tmp_path)


def digit_drawing(path):
    """A 300x400 photo-like drawing of a 4: thick dark strokes on white, off-centre."""
    image = Image.new("RGB", (300, 400), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(150, 40), (60, 230), (250, 230)], fill=(30, 30, 40), width=28)
    draw.line([(200, 120), (200, 370)], fill=(30, 30, 40), width=28)
    image.save(path)
    return str(path)


def test_a_name_with_a_newline_stays_on_its_line_and_a_large_k_is_said(two_epoch_run,
                                                                       tmp_path, capsys):
    _, out = two_epoch_run
    picture = digit_drawing(tmp_path / "my\nfour.png")
    [result] = embed.main([str(out / "model" / "epoch_002.pth"), picture, "--k", "1000000000",
                           "--json", str(tmp_path / "a\nb.json")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("--k 1000000000 is more than the 100 test images: each picture's "
                        "nearest are all of them")
    assert lines[1].startswith(f"{tmp_path}/my\\nfour.png: ")
    assert lines[2] == f"Wrote {tmp_path}/a\\nb.json" and len(lines) == 3
    assert len(result["nearest"]["indices"]) == 100 and result["image"] == picture


def test_a_large_drawing_is_placed_on_the_map(two_epoch_run, tmp_path, capsys):
    _, out = two_epoch_run
    picture = digit_drawing(tmp_path / "four.jpg")
    results = embed.main([str(out / "model" / "epoch_002.pth"), picture, "--k", "3", "--json",
                          str(tmp_path / "embed.json"), "--plot", str(tmp_path / "map.png"),
                          "--device", "cpu"])
    assert json.loads((tmp_path / "embed.json").read_text()) == results
    [result] = results
    assert set(result) == RESULT_KEYS and set(result["nearest"]) == {"indices", "classes",
                                                                    "distances"}
    assert result["image"] == picture and len(result["feature"]) == 2
    assert result["class"] == str(result["class_index"]) and 0 < result["score"] <= 1
    assert len(result["nearest"]["indices"]) == 3 and result["nearest"]["distances"] == sorted(
        result["nearest"]["distances"])
    assert capsys.readouterr().out.startswith(
        f"{picture}: {result['class']} (probability {result['score']:.4f}); nearest 3 test "
        f"images: {', '.join(result['nearest']['classes'])}\n")
    with Image.open(tmp_path / "map.png") as image:
        assert image.size == (800, 700)


def test_an_angular_checkpoint_scores_by_the_cosine(arcface_run, tmp_path, capsys):
    picture = digit_drawing(tmp_path / "four.png")
    [result] = embed.main([str(arcface_run / "model" / "epoch_002.pth"), picture])
    assert -1 <= result["score"] <= 1 and "(cosine " in capsys.readouterr().out
    # Ranked by cosine: the features on the unit circle, no two further apart than 2.
    assert max(result["nearest"]["distances"]) <= 2
    # Without its run.json the head is the flag's
    moved = shutil.copy(arcface_run / "model" / "epoch_002.pth", tmp_path / "moved.pth")
    run = json.loads((arcface_run / "run.json").read_text())
    flags = [str(moved), picture, "--dataset", "mnist", "--dataset_dir", run["dataset_dir"]]
    assert embed.main(flags + ["--head", "arcface"]) == [dict(result, image=picture)]
    assert embed.main(flags)[0]["score"] != result["score"]  # softmax's, of ip2


def test_a_checkpoint_without_its_run_needs_the_dataset(two_epoch_run, mnist_dir, tmp_path):
    _, out = two_epoch_run
    moved = tmp_path / "moved.pth"
    shutil.copy(out / "model" / "epoch_002.pth", moved)
    picture = digit_drawing(tmp_path / "four.png")
    with pytest.raises(SystemExit) as stop:
        embed.main([str(moved), picture])
    assert f"{moved} has no run.json" in stop.value.code and "\n" not in stop.value.code
    [result] = embed.main([str(moved), picture, "--dataset", "mnist", "--dataset_dir",
                           str(mnist_dir), "--k", "100"])
    assert sorted(result["nearest"]["indices"]) == list(range(100))  # the whole test split


def truncated_png(path):
    digit_drawing(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("name, make, message", [
    ("notes.png", lambda path: path.write_text("not a picture"), "is not a picture"),
    ("missing.png", lambda path: None, "cannot read"),
    ("folder.png", lambda path: path.mkdir(), "cannot read"),
    ("cut.png", truncated_png, "is truncated or corrupt"),
    ("huge.png", lambda path: Image.new("1", (5000, 4000)).save(path), "more than the"),
    ("blank.png", lambda path: Image.new("L", (80, 80), 250).save(path), "shows no ink"),
])
def test_a_bad_picture_stops_in_one_line_and_nothing_is_written(two_epoch_run, tmp_path, capsys,
                                                                name, make, message):
    _, out = two_epoch_run
    bad = tmp_path / name
    make(bad)
    good = digit_drawing(tmp_path / "four.png")
    with pytest.raises(SystemExit) as stop:
        embed.main([str(out / "model" / "epoch_002.pth"), good, str(bad), "--json",
                    str(tmp_path / "embed.json"), "--plot", str(tmp_path / "map.png")])
    assert str(bad) in stop.value.code and message in stop.value.code
    assert "\n" not in stop.value.code
    assert not (tmp_path / "embed.json").exists() and not (tmp_path / "map.png").exists()
    assert capsys.readouterr().out == ""


def test_the_neighbours_are_the_runs_test_images_unless_told(reference_run, tmp_path):
    # The reference run tested on its first 16 of the 100 test images.
    picture = digit_drawing(tmp_path / "four.jpg")
    checkpoint = str(reference_run / "model" / "epoch_004.pth")
    for flags, gallery in (([], 16), (["--max_test_samples", "all"], 100),
                           (["--max_test_samples", "40"], 40)):
        [result] = embed.main([checkpoint, picture, "--k", "1000", *flags])
        assert len(result["nearest"]["indices"]) == gallery


def test_bad_flags_of_embed(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    for flags, message in ((["--k", "0"], "--k must be at least 1"),
                           (["--plot", "map.foo"], "--plot: matplotlib cannot write .foo")):
        with pytest.raises(SystemExit) as stop:
            embed.main([str(out / "model" / "epoch_002.pth"), "four.png", *flags])
        assert message in stop.value.code


def test_a_folder_runs_picture_is_made_as_its_training_images_were(folder_run, image_folder_dir,
                                                                   tmp_path):
    checkpoint = str(folder_run / "model" / "epoch_002.pth")
    # A test image of the folder, as it is: no negation, no cropping.
    index = 40
    test_images = read_split(image_folder_dir, train=False, dataset="folder")[0]
    picture = write_png(test_images[index].numpy(), tmp_path / "own.png")
    [result] = embed.main([checkpoint, picture, "--device", "cpu"])
    loader = open_checkpoint(checkpoint).test_split("cpu")
    model = open_checkpoint(checkpoint).model.eval()
    with torch.no_grad():
        expected = model(loader.images[index:index + 1])[0][0]
    assert torch.equal(torch.tensor(result["feature"]), expected)
    assert result["nearest"]["indices"][0] == index and result["class"] in FOLDER_CLASSES
    # In colour and four times as large, it is made 28x28 grayscale as training makes them.
    Image.open(picture).convert("RGB").resize((112, 112)).save(tmp_path / "large.png")
    [large] = embed.main([checkpoint, str(tmp_path / "large.png"), "--device", "cpu",
                          "--plot", str(tmp_path / "map.png")])
    assert large["class"] in FOLDER_CLASSES and (tmp_path / "map.png").is_file()


def seven_drawing(path):
    """A 280x280 drawing of a 7 as one draws it with a marker: a bar and a slanted stroke."""
    image = Image.new("L", (280, 280), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(60, 50), (220, 50), (120, 250)], fill=0, width=22, joint="curve")
    image.save(path)
    return str(path)


@pytest.mark.skipif(not SHIPPED_CHECKPOINT.is_file(), reason="the shipped model is missing")
@pytest.mark.skipif(not (REAL_MNIST_DIR / "MNIST" / "raw").is_dir(),
                    reason=f"real MNIST not found at {REAL_MNIST_DIR}")
def test_the_shipped_model_reads_a_drawn_7_as_a_7(tmp_path, capsys):
    [result] = embed.main(["article", seven_drawing(tmp_path / "seven.png"), "--dataset_dir",
                           str(REAL_MNIST_DIR), "--device", "cpu"])
    assert result["class"] == "7" and result["score"] > 0.9, result
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'seven.png'}: 7 (probability ")
