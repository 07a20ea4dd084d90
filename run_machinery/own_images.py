"""Pictures of one's own (for embed.py): read safely, prepared as the dataset's images
were made, placed among the test features by their nearest neighbours and on a map.

The preparation, after Pillow has read the picture in grayscale:
  1. A picture whose border is mostly light (dark ink on white) is negated: the datasets
     hold light ink on black.
  2. A 28x28 picture on a dark background is taken as it is: it already is one of them.
  3. Otherwise the background is made black and the strongest ink white, and the picture
     is cropped to the ink and fitted, keeping its aspect, into a box: for MNIST (and
     KMNIST) 20x20, centred by its centre of mass in 28x28, MNIST's own recipe; for
     Fashion-MNIST 28x28, centred by its box, as that dataset trimmed and fitted its
     product photos (its sharpening is left out).
A picture for a model of a folder dataset is made as that folder's training images were,
by the same function (datasets.folder_image: grayscale, resized to 28x28), and nothing
else: such images need not be light ink on black.
"""
import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_rgb
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from mpl_toolkits.mplot3d import proj3d
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from margin_heads import cosines
from mnist_loader import normalize

from .checkpointing import CheckpointError, WriteError, load_checkpoint, save_checkpoint
from .datasets import folder_image, from_16_bit
from .devices import cpu_kind
from .embedding import embed
from .errors import UserError
from .plots import PrincipalPlane, as_numpy, class_colors, draw_embedding, fit_cube, panel_figure

MAX_PIXELS = 4096 * 4096  # larger pictures are refused before they are decoded
# The test split's features beside a checkpoint: epoch_100.pth -> epoch_100.test_embedding.pt
EMBEDDING_SUFFIX = ".test_embedding.pt"
SIDE = 28
# The box the ink is fitted into, and whether it is then centred by its centre of mass
# (else by its box). KMNIST's makers published no recipe; it is taken to be MNIST's.
RECIPES = {"mnist": (20, True), "kmnist": (20, True), "fashion-mnist": (28, False)}
# MNIST's centres of mass lie at (14, 14) in pixel indices (its test images' mean: 13.99,
# 14.00), the middle of the 28x28 field.
MIDDLE = SIDE / 2
INK_LEVEL = 64  # of 255, once the background is black: the pixels that count as ink
BLANK_CONTRAST = 32  # strongest ink less than this above the background: a blank picture


def read_image(path):
    """The picture at `path` as uint8 grayscale pixels (H, W): turned upright as its EXIF
    tag says, any transparency shown over white. UserError naming the file when it is no
    picture Pillow reads, cannot be read, is cut short or corrupt, or has more than
    MAX_PIXELS pixels."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns of a decompression bomb up to twice its own limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size  # from the header: nothing decoded yet
                if width * height > MAX_PIXELS:
                    raise UserError(f"{path} is {width}x{height} pixels, more than the "
                                    f"{MAX_PIXELS:,} (4096x4096) this command reads")
                image.load()
                image = ImageOps.exif_transpose(image)
        return grayscale(image)
    except UnidentifiedImageError:
        raise UserError(f"{path} is not a picture Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{path} has more than the {MAX_PIXELS:,} (4096x4096) pixels this "
                        f"command reads") from None
    except OSError as error:
        if error.errno is not None:  # the file system's, not the decoder's
            raise UserError(f"cannot read {path} ({error.strerror or error})") from None
        raise UserError(f"{path} is truncated or corrupt ({error})") from None
    except (SyntaxError, ValueError, EOFError) as error:  # Pillow's decoders raise these too
        raise UserError(f"{path} is truncated or corrupt ({error})") from None


def grayscale(image):
    """The Pillow `image` as uint8 grayscale pixels (H, W), any transparency shown over
    white (as a drawing on a transparent canvas is seen)."""
    if image.mode.startswith("I;16"):
        return from_16_bit(image)
    if "A" in image.getbands() or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"),
                                      image.convert("RGBA"))
    return np.asarray(image.convert("L"))


def own_picture(path, dataset):
    """The picture at `path` as uint8 28 x 28 pixels for a model of `dataset`: a folder
    dataset's made as its training images were, another's by the recipe above."""
    if dataset == "folder":
        return folder_image(path)
    return prepare(read_image(path), dataset, path)


def prepare(pixels, dataset="mnist", name="the picture"):
    """`pixels` (uint8 grayscale, H x W) as the images of `dataset` were made: uint8,
    28 x 28, light ink on black (see the module's recipe). UserError when the picture,
    called `name` in the message, shows no ink."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = float(np.median(border))
    light = background >= 128
    if pixels.shape == (SIDE, SIDE) and not light:
        return pixels
    ink = 255 - pixels.astype(np.float32) if light else pixels.astype(np.float32)
    background = 255 - background if light else background
    contrast = float(ink.max()) - background
    if contrast < BLANK_CONTRAST:
        raise UserError(f"{name} shows no ink: no pixel stands out from its background by "
                        f"{BLANK_CONTRAST} of 255 or more")
    ink = ((ink - background) / contrast).clip(0, 1) * 255
    rows, columns = np.nonzero(ink > INK_LEVEL)
    crop = Image.fromarray(ink[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
                           .round().astype(np.uint8))
    box, by_mass = RECIPES[dataset]
    scale = box / max(crop.size)
    fitted = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                         Image.Resampling.LANCZOS)
    if by_mass:
        weights = np.asarray(fitted, dtype=np.float64)
        weights /= weights.sum()
        left = round(MIDDLE - weights.sum(0) @ np.arange(fitted.width))
        top = round(MIDDLE - weights.sum(1) @ np.arange(fitted.height))
    else:
        left, top = (SIDE - fitted.width) // 2, (SIDE - fitted.height) // 2
    canvas = Image.new("L", (SIDE, SIDE))
    canvas.paste(fitted, (left, top))  # what would fall outside the field is cut off
    return np.asarray(canvas)


def nearest(gallery, queries, k):
    """The distances and indices (len(queries), k) of the k nearest `gallery` items (N, D)
    of each query (Q, D), nearest first, ties in gallery order: Euclidean, computed pair by
    pair as the retrieval metrics compute them."""
    distances = torch.cdist(queries.float(), gallery.float(),
                            compute_mode="donot_use_mm_for_euclid_dist")
    order = distances.argsort(dim=1, stable=True)[:, :k]
    return distances.gather(1, order), order


def embedding_cache(checkpoint_path):
    """Where the test split's features of the checkpoint at `checkpoint_path` are kept."""
    return Path(checkpoint_path).with_suffix(EMBEDDING_SUFFIX)


def cached_embedding(model, split, path):
    """`embed`'s features (on the split's device) and labels (on the host) of the TensorLoader
    `split`: read from the file `path` when it holds those of this model's weights, these
    images and this device and PyTorch (its key), else computed and written there (when the
    folder can be written; None: not kept)."""
    key = embedding_key(model, split) if path else None
    try:
        saved = load_checkpoint(path) if path and Path(path).is_file() else None
    except CheckpointError:  # a broken cache is computed again
        saved = None
    if isinstance(saved, dict) and saved.get("key") == key:
        return saved["features"].to(split.images.device), saved["labels"]
    features, _, labels = embed(model, split)
    if path:
        try:
            save_checkpoint(path, {"key": key, "features": features.cpu(), "labels": labels.cpu()})
        except WriteError:  # a folder one may not write: the split is embedded at every start
            pass
    return features, labels.cpu()


def embedding_key(model, split):
    """What the features depend on: the model's weights and the split's images and labels
    (their SHA-256), the device and PyTorch that compute them."""
    digest = hashlib.sha256()
    for name, tensor in [*model.state_dict().items(), ("images", split.images),
                         ("labels", split.labels)]:
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    device = split.images.device
    return {"sha256": digest.hexdigest(), "torch": str(torch.__version__), "device": str(device),
            "processor": (torch.cuda.get_device_name(device) if device.type == "cuda"
                          else cpu_kind())}


class PictureIndex:
    """A checkpoint's model (a CheckpointRun) with the test split of its run embedded once,
    on `device` (`limit`: as for CheckpointRun.test_split, by default the run's own; `cache`:
    the file that keeps its features, see cached_embedding): `place` gives pictures of one's
    own their predicted class, score and nearest test images. The score is the class's
    probability, or its cosine for an angular head (`score_name` says which)."""

    def __init__(self, checkpoint, device, limit=None, cache=None):
        self.checkpoint = checkpoint
        self.test_split = checkpoint.test_split(device, limit)
        self.model = checkpoint.model.to(device).eval()
        self.gallery, self.labels = cached_embedding(self.model, self.test_split, cache)
        self.score_name = "cosine" if checkpoint.head.angular else "probability"

    def place(self, pictures, k):
        """For `pictures` (uint8, N x 28 x 28, as `own_picture` makes them): their features
        (N, D), predicted labels (N,) and one dict each: class (name), class_index, score,
        feature, and the `k` nearest test images (indices, classes, distances)."""
        split, head, names = self.test_split, self.checkpoint.head, self.checkpoint.class_names
        with torch.no_grad():
            features, log_probs = self.model(normalize(torch.tensor(np.asarray(pictures)),
                                                       split.images.device, split.mean,
                                                       split.std))
        outputs = head.predict(features, log_probs)
        scores = (cosines(features, head.weight) if head.angular
                  else log_probs.exp()).gather(1, outputs.unsqueeze(1)).squeeze(1)
        predicted = torch.tensor(self.checkpoint.classes, device=features.device)[outputs]
        distances, found = nearest(head.retrieval_features(self.gallery),
                                   head.retrieval_features(features), k)
        gallery_labels = self.labels.tolist()
        placed = [{"class": names[label], "class_index": label, "score": score,
                   "feature": feature,
                   "nearest": {"indices": indices,
                               "classes": [names[gallery_labels[index]] for index in indices],
                               "distances": distance}}
                  for label, score, feature, indices, distance in zip(
                      predicted.tolist(), scores.tolist(), features.tolist(), found.tolist(),
                      distances.tolist())]
        return features, predicted, placed

    def describe(self, placed):
        """One line for a placed picture: its class, score and its neighbours' classes."""
        return (f"{placed['class']} ({self.score_name} {placed['score']:.4f}); nearest "
                f"{len(placed['nearest']['indices'])} test images: "
                f"{', '.join(placed['nearest']['classes'])}")

    def test_pictures(self, indices):
        """The test images at `indices` as uint8 pixels (len(indices), 28, 28), as stored."""
        split = self.test_split
        images = split.images[torch.as_tensor(indices, device=split.images.device)]
        return (images[:, 0].float().cpu() * split.std + split.mean).mul(255).round().clamp(
            0, 255).to(torch.uint8).numpy()


def own_images_figure(features, labels, image_features, pictures, image_labels, title,
                      centers=None, holdout_classes=(), class_names=None):
    """The test `features` drawn as evaluate.py's --plot draws them (`draw_embedding`: 2-D
    as they are, 3-D in 3-D, wider ones on their principal plane), and each picture of
    one's own at its feature (`image_features`, projected as the test features are): a
    star, and beside it the prepared 28x28 picture (`pictures`, uint8) framed in the colour
    of its predicted class (`image_labels`), placed where it covers no star and no other
    picture (`thumbnail_offsets`). Returns the figure."""
    width = features.shape[1]
    fig = panel_figure(1)
    ax = draw_embedding(fig, (1, 1, 1), features, labels, centers, holdout_classes, class_names)
    points = image_features.detach().float().cpu()
    if width > 3:  # draw_embedding's plane: the same features give the same axes
        points = PrincipalPlane(features).points(points)
    points = as_numpy(points)
    ax.plot(*points.T, "*", color="black", markeredgecolor="white", markersize=STAR_POINTS,
            linestyle="", zorder=7)
    if width == 3:
        shown = np.concatenate([as_numpy(features), points])
        fit_cube(ax, shown.min(0), shown.max(0))
    ax.set_title(title)
    FigureCanvasAgg(fig).draw()  # settles the limits and the 3-D projection
    anchors = flat_points(ax, points)
    to_points = 72 / fig.dpi
    offsets = thumbnail_offsets(ax.transData.transform(anchors), THUMBNAIL_SIDE / to_points,
                                STAR_POINTS / 2 / to_points, ax.bbox.extents)
    colors = class_colors(class_names, labels)
    for anchor, offset, picture, label in zip(anchors, offsets, as_numpy(pictures),
                                              as_numpy(image_labels)):
        thumbnail = OffsetImage(picture, zoom=THUMBNAIL_ZOOM, cmap="gray",
                                norm=Normalize(0, 255))
        ax.add_artist(AnnotationBbox(thumbnail, tuple(anchor), xybox=tuple(offset * to_points),
                                     boxcoords="offset points", pad=0.15, zorder=6,
                                     bboxprops={"edgecolor": colors[label], "linewidth": 2},
                                     arrowprops={"arrowstyle": "-", "color": "black"}))
    return fig


STAR_POINTS = 18  # a star's size
THUMBNAIL_ZOOM = 1.2
# A thumbnail's side with its frame, in points: the picture, its padding and the frame's line.
THUMBNAIL_SIDE = 28 * THUMBNAIL_ZOOM + 2 * 1.5 + 2


def thumbnail_offsets(stars, side, radius, bounds):
    """Where to put each star's thumbnail: its centre's offset (pixels, (N, 2)) from the star
    (`stars`, (N, 2) pixels), for a square of `side` pixels that covers no star (a square
    of 2 `radius` about it) and no thumbnail placed before it, inside `bounds` (x0, y0, x1,
    y1): of the places around the star, nearest first, the first one that does, or else
    the one that covers least."""
    reach = radius + side / 2 + 4
    angles = np.arange(8) * np.pi / 4
    candidates = np.concatenate([ring * reach * np.stack([np.cos(angles), np.sin(angles)], 1)
                                 / np.maximum(np.abs(np.cos(angles)), np.abs(np.sin(angles)))
                                 [:, None] for ring in (1, 1.5, 2, 3)])
    stars = np.asarray(stars, dtype=float)
    star_boxes = np.concatenate([stars - radius, stars + radius], axis=1)
    placed, offsets = [], []
    for star in stars:
        boxes = np.concatenate([star + candidates - side / 2, star + candidates + side / 2], 1)
        covered = overlap(boxes, star_boxes).sum(1) + overlap(boxes, np.array(placed)).sum(1)
        x0, y0, x1, y1 = bounds
        outside = side * side - overlap(boxes, np.array([[x0, y0, x1, y1]]))[:, 0]
        score = covered + outside
        best = int(np.flatnonzero(score <= score.min() + 1e-6)[0])  # of equals, the nearest
        placed.append(boxes[best])
        offsets.append(candidates[best])
    return np.array(offsets).reshape(-1, 2)


def overlap(boxes, others):
    """The area shared by each of `boxes` (N, 4: x0, y0, x1, y1) with each of `others`
    (M, 4): (N, M)."""
    if len(others) == 0:
        return np.zeros((len(boxes), 0))
    low = np.maximum(boxes[:, None, :2], others[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    return np.clip(high - low, 0, None).prod(-1)


def flat_points(ax, points):
    """`points` (N, 2 or 3) in the data space of `ax` as 2-D data coordinates of its drawing
    plane: as they are on 2-D axes, projected as they are drawn on 3-D axes (where
    annotations are placed)."""
    if points.shape[1] == 3:
        return np.stack(proj3d.proj_transform(*points.T, ax.get_proj())[:2], axis=1)
    return points


class FeatureMap:
    """The test `features` drawn once as evaluate.py's --plot draws them (`draw_embedding`),
    kept as an RGB picture; `with_stars` adds stars at other features without drawing the
    test features again, so that it takes milliseconds."""

    def __init__(self, features, labels, title, centers=None, holdout_classes=(),
                 class_names=None):
        fig = panel_figure(1)
        self.ax = draw_embedding(fig, (1, 1, 1), features, labels, centers, holdout_classes,
                                 class_names)
        self.ax.set_title(title)
        self.plane = PrincipalPlane(features) if features.shape[1] > 3 else None
        canvas = FigureCanvasAgg(fig)
        canvas.draw()  # fixes the axes' limits and projection
        self.picture = np.asarray(canvas.buffer_rgba())[..., :3].copy()

    def pixels(self, features):
        """Where `features` (N, D) fall on the picture: (N, 2) pixel columns and rows,
        kept inside the axes (a feature beyond them is shown at their edge)."""
        points = self.plane.points(features) if self.plane else features.detach().float().cpu()
        display = self.ax.transData.transform(flat_points(self.ax, as_numpy(points)))
        box = self.ax.bbox
        display = display.clip((box.x0, box.y0), (box.x1, box.y1))
        return np.stack([display[:, 0], self.picture.shape[0] - display[:, 1]], axis=1)

    def with_stars(self, features, radius=14):
        """The picture with a black, white-edged five-pointed star at each of `features`."""
        image = Image.fromarray(self.picture)
        draw = ImageDraw.Draw(image)
        angles = np.pi / 2 + np.arange(10) * np.pi / 5  # the tips and the notches between
        reach = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        for x, y in self.pixels(features):
            corners = np.stack([x + reach * np.cos(angles), y - reach * np.sin(angles)], 1)
            draw.polygon([tuple(corner) for corner in corners], fill="black", outline="white",
                         width=2)
        return np.asarray(image)


def picture_grid(pictures, labels, class_names=None, columns=3, zoom=3, frame=3):
    """`pictures` (uint8, N x 28 x 28) in rows of `columns`, each enlarged `zoom` times and
    framed in the colour of its class (`labels`), as one RGB picture (black where a row
    has fewer)."""
    colors = class_colors(class_names, labels)
    side = 28 * zoom + 2 * frame
    grid = np.zeros((-(-len(pictures) // columns) * side, columns * side, 3), dtype=np.uint8)
    for place, (picture, label) in enumerate(zip(pictures, as_numpy(labels))):
        top, left = place // columns * side, place % columns * side
        grid[top:top + side, left:left + side] = np.array(to_rgb(colors[label])) * 255
        enlarged = np.repeat(np.repeat(picture, zoom, 0), zoom, 1)
        grid[top + frame:top + side - frame, left + frame:left + side - frame] = enlarged[..., None]
    return grid
