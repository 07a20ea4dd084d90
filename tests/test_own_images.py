import shutil

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.offsetbox import AnnotationBbox
from PIL import Image, ImageDraw

from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.checkpointing import save_checkpoint, save_figure
from run_machinery.datasets import folder_image
from run_machinery.embedding import embed
from run_machinery.errors import UserError
from run_machinery.own_images import (
    MAX_PIXELS,
    FeatureMap,
    PictureIndex,
    embedding_cache,
    flat_points,
    nearest,
    own_images_figure,
    own_picture,
    picture_grid,
    prepare,
    read_image,
)
from run_machinery.plots import CLASS_COLORS, PrincipalPlane


def drawing(size=(300, 400), box=(120, 80, 180, 320), ink=20, paper=235):
    """A grey-level picture (W x H = `size`) of a thick stroke, a dark rectangle inside
    `box` (left, top, right, bottom) on light paper, as a pen on white would draw it."""
    image = Image.new("L", size, paper)
    ImageDraw.Draw(image).rectangle(box, fill=ink)
    return np.asarray(image)


def centre_of_mass(pixels):
    weights = pixels.astype(np.float64) / pixels.sum()
    return weights.sum(1) @ np.arange(pixels.shape[0]), weights.sum(0) @ np.arange(pixels.shape[1])


def ink_box(pixels, level=64):
    rows, columns = np.nonzero(pixels > level)
    return rows.max() - rows.min() + 1, columns.max() - columns.min() + 1


def test_dark_ink_on_light_paper_is_negated_and_light_ink_on_black_is_not():
    dark_on_light = prepare(drawing())
    light_on_dark = prepare(255 - drawing())
    for prepared in (dark_on_light, light_on_dark):
        assert prepared.shape == (28, 28) and prepared.dtype == np.uint8
        assert prepared[0].max() == 0 and prepared.max() == 255  # black field, white ink
    assert np.array_equal(dark_on_light, light_on_dark)


@pytest.mark.parametrize("box, height, width", [
    ((120, 80, 180, 320), 20, 5),  # a tall stroke: 61 x 241 pixels, its height fitted to 20
    ((20, 150, 280, 200), 4, 20),  # a wide one: 261 x 51, its width fitted to 20
])
def test_the_ink_is_cropped_and_fitted_into_20x20_keeping_its_aspect(box, height, width):
    prepared = prepare(drawing(box=box))
    assert ink_box(prepared) == pytest.approx((height, width), abs=1)


def test_the_centre_of_mass_lands_in_the_middle_of_the_field():
    image = Image.new("L", (300, 400), 255)
    draw = ImageDraw.Draw(image)  # a "7" off to one side: its mass is not its box's middle
    draw.line([(10, 20), (150, 20), (60, 250)], fill=0, width=25)
    prepared = prepare(np.asarray(image))
    assert centre_of_mass(prepared) == pytest.approx((14, 14), abs=0.5)
    assert max(ink_box(prepared)) == pytest.approx(20, abs=1)


def test_fashion_mnist_pictures_are_fitted_to_28x28_and_centred_by_their_box():
    prepared = prepare(drawing(box=(20, 150, 280, 200)), "fashion-mnist")
    rows, columns = np.nonzero(prepared > 64)
    assert columns.min() == 0 and columns.max() == 27  # the longest side fills the field
    assert (rows.min() + rows.max()) / 2 == pytest.approx(13.5, abs=1)


def test_a_28x28_picture_of_light_ink_on_black_is_taken_as_it_is():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 40, size=(28, 28), dtype=np.uint8)
    pixels[3:9, 2:26] = 255  # ink far from the middle: any recentring would move it
    assert np.array_equal(prepare(pixels), pixels)


def test_a_28x28_picture_of_dark_ink_on_white_is_prepared():
    pixels = np.full((28, 28), 255, dtype=np.uint8)
    pixels[2:8, 1:27] = 0
    prepared = prepare(pixels)
    assert prepared[0].max() == 0 and centre_of_mass(prepared) == pytest.approx((14, 14), abs=0.5)


def test_a_blank_picture_is_refused():
    with pytest.raises(UserError, match="blank.png shows no ink"):
        prepare(np.full((50, 60), 240, dtype=np.uint8), name="blank.png")


def test_transparency_is_read_as_white_paper(tmp_path):
    image = Image.new("RGBA", (100, 120), (0, 0, 0, 0))  # transparent black, as drawing apps save
    ImageDraw.Draw(image).rectangle((40, 10, 60, 110), fill=(0, 0, 0, 255))
    image.save(tmp_path / "pen.png")
    pixels = read_image(tmp_path / "pen.png")
    assert pixels[0, 0] == 255 and pixels[50, 50] == 0


def test_16_bit_grey_is_scaled_to_8_bits(tmp_path):
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").tolist() == [[0, 128, 255]]


def test_an_enormous_picture_is_refused_before_it_is_decoded(tmp_path):
    Image.new("1", (4097, 4096)).save(tmp_path / "huge.png")
    with pytest.raises(UserError, match=f"huge.png is 4097x4096 pixels, more than the "
                                        f"{MAX_PIXELS:,}"):
        read_image(tmp_path / "huge.png")


def test_a_folder_datasets_picture_is_made_as_its_training_images_were(tmp_path):
    dark_on_white = np.full((40, 60), 255, dtype=np.uint8)
    dark_on_white[10:30, 20:25] = 0
    Image.fromarray(dark_on_white).save(tmp_path / "mark.png")
    made = own_picture(tmp_path / "mark.png", "folder")
    # not negated nor cropped: only resized to 28x28, as mnist_loader makes a folder's images
    assert np.array_equal(made, folder_image(tmp_path / "mark.png")) and made[0, 0] == 255
    assert np.array_equal(own_picture(tmp_path / "mark.png", "mnist"),
                          prepare(dark_on_white, "mnist"))


def test_nearest_ranks_by_distance_ties_in_gallery_order():
    gallery = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 5.0]])
    distances, indices = nearest(gallery, torch.tensor([[0.0, 0.0], [3.0, 1.0]]), 3)
    assert indices.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert torch.allclose(distances, torch.tensor([[1.0, 1.0, 1.0],
                                                   [1.0, 5 ** 0.5, 3.0]]))


@pytest.mark.parametrize("width", [2, 3, 5])
def test_the_pictures_are_drawn_where_their_features_lie_on_the_map(width, tmp_path):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(60, width, generator=generator) * torch.arange(1, width + 1)
    labels = torch.arange(60) % 10
    image_features = torch.randn(2, width, generator=generator)
    pictures = torch.zeros(2, 28, 28, dtype=torch.uint8)
    fig = own_images_figure(features, labels, image_features, pictures, torch.tensor([3, 7]),
                            "title")
    ax = fig.axes[0]
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert len(stars) == 1
    if width == 3:
        drawn = np.stack(stars[0].get_data_3d(), axis=1)
        expected = image_features.numpy()
    else:
        drawn = stars[0].get_xydata()
        expected = (PrincipalPlane(features).points(image_features) if width > 3
                    else image_features).numpy()
    assert np.allclose(drawn, expected, atol=1e-6)
    thumbnails = [artist for artist in ax.artists if isinstance(artist, AnnotationBbox)]
    assert len(thumbnails) == 2
    if width == 2:
        assert np.allclose([thumbnail.xy for thumbnail in thumbnails], expected)
    save_figure(fig, tmp_path / "map.png")


@pytest.mark.parametrize("width", [2, 3])
def test_no_thumbnail_covers_a_star_or_another_thumbnail(width):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(200, width, generator=generator) * 10
    # five pictures in a crowd, one by the edge of the map
    image_features = torch.cat([torch.randn(5, width, generator=generator) * 0.5,
                                features[features[:, 0].argmax()][None]])
    fig = own_images_figure(features, torch.arange(200) % 10, image_features,
                            torch.zeros(6, 28, 28, dtype=torch.uint8), torch.arange(6), "title")
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    [stars] = [line for line in ax.lines if line.get_marker() == "*"]
    radius = stars.get_markersize() / 2 * fig.dpi / 72  # pixels
    if width == 3:
        centres = ax.transData.transform(flat_points(ax, np.stack(stars.get_data_3d(), 1)))
    else:
        centres = ax.transData.transform(stars.get_xydata())
    boxes = [thumbnail.patch.get_window_extent(renderer) for thumbnail in ax.artists
             if isinstance(thumbnail, AnnotationBbox)]
    assert len(boxes) == 6
    for box in boxes:
        assert box.x0 >= ax.bbox.x0 - 1 and box.x1 <= ax.bbox.x1 + 1  # inside the axes
        assert box.y0 >= ax.bbox.y0 - 1 and box.y1 <= ax.bbox.y1 + 1
        for x, y in centres:  # in figure pixels: no star under the box
            assert (x + radius < box.x0 or x - radius > box.x1
                    or y + radius < box.y0 or y - radius > box.y1)
    assert not any(first.overlaps(second) for index, first in enumerate(boxes)
                   for second in boxes[index + 1:])


@pytest.mark.parametrize("width", [2, 3, 5])
def test_the_feature_map_puts_a_star_where_the_feature_is_drawn(width):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(60, width, generator=generator)
    feature_map = FeatureMap(features, torch.arange(60) % 10, "title")
    # A test feature itself: its star covers the dot the map drew for it.
    [(column, row)] = feature_map.pixels(features[:1])
    starred = feature_map.with_stars(features[:1])
    rows, columns = np.nonzero((starred != feature_map.picture).any(axis=2))
    assert abs(rows.mean() - row) < 3 and abs(columns.mean() - column) < 3
    assert tuple(starred[round(row), round(column)]) == (0, 0, 0)  # the star's black middle
    # A feature far beyond the drawn ones is shown at the edge of the axes, not off them.
    box = feature_map.ax.bbox
    [(column, row)] = feature_map.pixels(features[:1] + 1e6)
    height = feature_map.picture.shape[0]
    assert box.x0 <= column <= box.x1 and height - box.y1 <= row <= height - box.y0
    assert np.isclose(column, [box.x0, box.x1]).any() or np.isclose(
        row, [height - box.y1, height - box.y0]).any()  # on an edge


def test_the_picture_grid_frames_each_picture_in_its_class_colour():
    pictures = np.stack([np.full((28, 28), value, dtype=np.uint8) for value in (10, 20, 30, 40)])
    grid = picture_grid(pictures, [0, 4, 4, 1], columns=3, zoom=2, frame=1)
    side = 28 * 2 + 2
    assert grid.shape == (2 * side, 3 * side, 3)
    assert [tuple(grid[0, 0]), tuple(grid[0, side])] == [  # 0, 4
        tuple(round(channel * 255) for channel in to_rgb(CLASS_COLORS[label])) for label in (0, 4)]
    assert tuple(grid[side + 1, 1]) == (40, 40, 40)  # the fourth picture starts a second row
    assert not grid[side:, side:].any()  # where the second row has no picture: black


def test_the_embedded_test_split_is_kept_beside_the_checkpoint(holdout_run, tmp_path):
    shutil.copytree(holdout_run, tmp_path / "run")  # a copy: the file is tampered with below
    path = tmp_path / "run" / "model" / "epoch_003.pth"
    checkpoint = open_checkpoint(path)
    cache = embedding_cache(path)
    assert cache == tmp_path / "run" / "model" / "epoch_003.test_embedding.pt"
    computed = PictureIndex(checkpoint, "cpu")  # no cache: embedded, nothing written
    assert not cache.exists()
    first = PictureIndex(checkpoint, "cpu", cache=cache)
    assert torch.equal(first.gallery, computed.gallery)
    assert torch.equal(first.labels, computed.labels)
    # The next start reads the file: marked, its features come back marked.
    saved = torch.load(cache, weights_only=True)
    save_checkpoint(cache, dict(saved, features=saved["features"] + 1))
    read = PictureIndex(checkpoint, "cpu", cache=cache)
    assert torch.equal(read.gallery, computed.gallery + 1)
    assert torch.equal(read.labels, computed.labels)
    # Other images or other weights are embedded again, and the file replaced.
    fewer = PictureIndex(checkpoint, "cpu", limit=40, cache=cache)
    assert torch.equal(fewer.gallery, computed.gallery[:40])
    with torch.no_grad():
        checkpoint.model.ip1.weight.mul_(2)
    changed = PictureIndex(checkpoint, "cpu", cache=cache)
    assert torch.equal(changed.gallery, embed(checkpoint.model, changed.test_split)[0])
    assert not torch.allclose(changed.gallery, computed.gallery)
    cache.write_bytes(b"not a torch file")  # a broken file is embedded again too
    assert torch.equal(PictureIndex(checkpoint, "cpu", cache=cache).gallery, changed.gallery)

