"""Draw a digit, watch it land: a local web page (Gradio) for a checkpoint of the trainer.

Draw on the sketchpad (or upload a picture, of any dataset the run was trained on); at every
stroke the page shows the predicted class with its probability (its cosine, for an angular
head), the map of the run's test features with your picture as a large star, and your
picture as the network sees it (28x28) beside its nearest test images. The picture is
prepared by embed.py's function (run_machinery/own_images.py): light ink on black, fitted
and centred as the dataset's images were.

    python3 -m pip install -r requirements-demo.txt   # Gradio, kept out of the main install
    python3 demo.py outputs/model/epoch_100.pth       # then open the address it prints
"""
import contextlib
import hashlib
import io
import os
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from run_machinery import cli

REQUIREMENTS = "requirements-demo.txt"
# Gradio's sketchpad starts with no tool chosen: choose the brush once the page is built.
SELECT_BRUSH = """() => {
    const choose = () => {
        const brush = document.querySelector('#sketch button[aria-label="Brush"]');
        brush ? brush.click() : setTimeout(choose, 100);
    };
    choose();
}"""


def build_parser():
    parser = cli.command_parser(
        f"A local web page to draw a digit (or upload a picture) and see where a trained "
        f"checkpoint places it: its class, its star on the map of the test features, its "
        f"nearest test images. Needs Gradio: python3 -m pip install -r {REQUIREMENTS}")
    cli.add_checkpoint_argument(parser, shipped_by_default=True)
    parser.add_argument("--port", type=int, default=7860,
                        help="the port to serve the page on")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (0.0.0.0: reachable from other machines)")
    parser.add_argument("--share", choices=("off", "on"), default="off",
                        help="on: also a public link through Gradio's share servers (needs "
                             "the internet; anyone with the link can use the page)")
    parser.add_argument("--k", type=int, default=8,
                        help="how many nearest test images to show")
    cli.add_run_flags(parser, head=False, dataset_needed=True)
    cli.add_test_split_flag(parser)
    cli.add_device_flag(parser)
    return parser


if __name__ == "__main__":  # --help, a mistyped flag and Ctrl-C answered before the slow imports
    cli.parse_before_imports(build_parser(), "the demo started")

import numpy as np
from PIL import Image

from run_machinery.checkpoint_run import open_checkpoint
from run_machinery.checkpointing import atomic_write
from run_machinery.devices import pick_device
from run_machinery.errors import USER_ERRORS, UserError
from run_machinery.own_images import (
    FeatureMap,
    PictureIndex,
    embedding_cache,
    own_picture,
    picture_grid,
)


def parse_args(argv=None):
    """The command line's settings, their ranges checked."""
    args = build_parser().parse_args(argv)
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be within 1 to 65535, got {args.port}")
    return args


class Demo:
    """What the page computes: a checkpoint's test split embedded and drawn once, then for
    each picture its class, its star on the map and its nearest test images."""

    def __init__(self, checkpoint_path, device="cpu", k=8, dataset_dir=None, test_images=None,
                 dataset=None, holdout_classes=None):
        """`test_images`: the gallery's first test images, as --max_test_samples takes them
        (None: the run's own); the dataset, its folder and the held-out classes are the
        run's unless given."""
        checkpoint = open_checkpoint(checkpoint_path, holdout_classes, dataset=dataset,
                                     dataset_dir=dataset_dir, needs_dataset=True)
        self.k = k
        self.index = PictureIndex(checkpoint, device, test_images,
                                  embedding_cache(checkpoint_path))  # a second start is quick
        self.map = FeatureMap(self.index.gallery, self.index.labels,
                              f"{Path(checkpoint_path).name}: test features, your picture (star)",
                              checkpoint.centers, checkpoint.holdout_classes,
                              checkpoint.class_names)

    def predict(self, picture_path):
        """For the picture file at `picture_path` (None: nothing drawn yet): the line that
        names its class, the map with its star, and a grid of its 28x28 picture then its
        nearest test images, each framed in its class's colour (None without a picture).
        The file is read as embed.py reads it; a file it refuses (a blank canvas, no picture,
        one cut short or too large) is said on the page in embed.py's line, with the file's
        own name, not the server's copy of it."""
        if picture_path is None:
            return "Draw a digit, or upload a picture.", self.map.picture, None
        try:
            picture = own_picture(picture_path, self.index.checkpoint.dataset)
        except USER_ERRORS as error:  # said on the page, not a failure of the server
            name = Path(picture_path).name
            message = (str(error).replace(os.path.abspath(picture_path), name)
                       .replace(str(picture_path), name))
            return f"Nothing to classify yet: {message}", self.map.picture, None
        features, predicted, [placed] = self.index.place(picture[None], self.k)
        found = placed["nearest"]["indices"]
        grid = picture_grid(np.concatenate([picture[None], self.index.test_pictures(found)]),
                            [placed["class_index"], *self.index.labels[found].tolist()],
                            self.index.checkpoint.class_names)
        return self.index.describe(placed), self.map.with_stars(features), grid


def served(folder, answer, *pictures):
    """`answer` and `pictures` (uint8 arrays, or None) as the page is given them: each
    picture a PNG in `folder`, named by its content and put in place whole, so that two
    requests with the same answer never write a file that a third is sending (Gradio's own
    cache of arrays rewrites such a file in place)."""
    files = []
    for picture in pictures:
        if picture is None:
            files.append(None)
            continue
        data = io.BytesIO()
        Image.fromarray(picture).save(data, format="png")
        path = Path(folder) / f"{hashlib.sha256(data.getvalue()).hexdigest()}.png"
        if not path.exists():
            atomic_write(path, data.getvalue())
        files.append(str(path))
    return answer, *files


def page(demo, gradio, folder):
    """The Gradio page of `demo`: a sketchpad and an upload (any file: the demo reads it,
    as embed.py does), each answered at every change, the answer's pictures served from
    `folder`. The upload's answer is also the API endpoint /predict (for gradio_client)."""
    with gradio.Blocks(title="Draw a digit, watch it land", analytics_enabled=False) as blocks:
        gradio.Markdown("## Draw a digit, watch it land\nDraw with the mouse (or upload a "
                        "picture): the star shows where the network puts it among the test "
                        "features.")
        with gradio.Row():
            with gradio.Column(scale=2):
                with gradio.Tab("Draw"):
                    sketch = gradio.Sketchpad(
                        type="filepath", format="png", canvas_size=(280, 280),
                        brush=gradio.Brush(default_size=20, colors=["#000000"],
                                           color_mode="fixed"),
                        layers=False, transforms=(), label="Your digit", elem_id="sketch")
                with gradio.Tab("Upload"):
                    upload = gradio.File(type="filepath", label="Your picture",
                                         elem_id="upload")
                answer = gradio.Textbox(label="Prediction", elem_id="prediction")
                gradio.Markdown("Your picture as the network sees it (first), then its "
                                "nearest test images:")
                neighbours = gradio.Image(show_label=False, elem_id="neighbours")
            with gradio.Column(scale=3):
                feature_map = gradio.Image(value=demo.map.picture, label="Feature map",
                                           elem_id="map")
        outputs = [answer, feature_map, neighbours]
        sketch.change(lambda value: served(folder, *demo.predict(value and value["composite"])),
                      sketch, outputs, api_name="predict_drawing", trigger_mode="always_last")
        upload.change(lambda value: served(folder, *demo.predict(value)), upload, outputs,
                      api_name="predict")
        blocks.load(None, js=SELECT_BRUSH)
    return blocks


def check_port(host, port):
    """UserError when `port` on `host` cannot be served on (taken, or not this machine's):
    said before the test split is embedded, not after."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot serve on {host}:{port} ({error.strerror or error}); "
                            f"choose another --port or --host") from None


def import_gradio():
    """Gradio, or a UserError naming the file that installs it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home
    try:
        import gradio
    except ImportError:
        raise UserError(f"demo.py needs Gradio: python3 -m pip install -r {REQUIREMENTS}") from None
    return gradio


def main(argv=None):
    """Serve the page until Ctrl-C or SIGTERM; returns the Demo."""
    with cli.one_line_errors():
        args = parse_args(argv)
        gradio = import_gradio()
        check_port(args.host, args.port)
        demo = Demo(args.checkpoint, pick_device(args.device), args.k, args.dataset_dir,
                    args.max_test_samples, args.dataset, args.holdout_classes)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: stop.set())
        # the answers' pictures, served from here and removed at the end
        with tempfile.TemporaryDirectory(prefix="demo_") as folder:
            blocks = page(demo, gradio, folder)
            try:
                blocks.launch(server_name=args.host, server_port=args.port,
                              share=args.share == "on", prevent_thread_lock=True, quiet=True,
                              show_error=True)
            except OSError as error:
                raise UserError(f"cannot serve on {args.host}:{args.port} ({error})") from None
            print(f"Demo of {args.checkpoint} at {blocks.local_url}"
                  + (f" and {blocks.share_url}" if blocks.share_url else "")
                  + "; Ctrl-C stops it", flush=True)
            stop.wait()
            with contextlib.redirect_stdout(io.StringIO()):  # Gradio's own farewell
                blocks.close()
        print("Stopped; the demo server is closed")
        return demo


if __name__ == "__main__":
    main(sys.argv[1:])
