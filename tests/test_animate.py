import pytest
from PIL import Image

import animate
from conftest import FOLDER_CLASSES


def test_remakes_the_gif_of_a_run(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    assert animate.main([str(out / "test_features.pt"), "--out",
                         str(tmp_path / "again.gif")]) == tmp_path / "again.gif"
    with Image.open(tmp_path / "again.gif") as gif, Image.open(out / "features.gif") as written, \
            Image.open(out / "visual" / "epoch_002.png") as epoch_picture:
        assert gif.n_frames == written.n_frames == 2
        # the trainer's GIF and this one: a panel of the epoch picture (training and test
        # features) each frame
        assert gif.size == written.size == (epoch_picture.width // 2, epoch_picture.height)


def test_a_file_that_is_no_test_features_is_one_line(two_epoch_run, tmp_path):
    _, out = two_epoch_run
    for path in (out / "model" / "epoch_001.pth", tmp_path / "missing.pt"):
        with pytest.raises(SystemExit) as stop:
            animate.main([str(path), "--out", str(tmp_path / "x.gif")])
        message = str(stop.value.code)
        assert message.startswith("error: ") and "\n" not in message
    assert not (tmp_path / "x.gif").exists()


def test_help_describes_the_gif(capsys):
    with pytest.raises(SystemExit):
        animate.main(["--help"])
    assert ("an animated GIF of the per-epoch test features."
            in " ".join(capsys.readouterr().out.split()))


def test_a_folder_runs_gif_names_its_classes(folder_run, tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(animate, "write_feature_gif",
                        lambda *args, class_names, **kwargs: drawn.update(names=class_names) or 2)
    animate.main([str(folder_run / "test_features.pt"), "--out", str(tmp_path / "f.gif")])
    assert drawn["names"] == list(FOLDER_CLASSES)


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf", "1000"])
def test_a_frame_time_outside_a_gifs_range_is_one_line(holdout_run, tmp_path, seconds):
    with pytest.raises(SystemExit) as stop:
        animate.main([str(holdout_run / "test_features.pt"), "--out", str(tmp_path / "x.gif"),
                      "--seconds_per_frame", seconds])
    assert stop.value.code == ("error: --seconds_per_frame must be from 0.01 to 655.35 (a GIF "
                               f"keeps each frame's time in hundredths of a second, in 16 bits), "
                               f"got {float(seconds):g}")
    assert not (tmp_path / "x.gif").exists()
