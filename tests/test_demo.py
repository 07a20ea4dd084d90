"""demo.py: its prediction function called directly, its server through gradio_client, and
its page in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium), where a stroke is drawn on the sketchpad and the prediction read back.

On the shipped model (models/article/) and the real MNIST the browser test also draws a 3,
checks that it lands among the 3s, and with DEMO_SCREENSHOT set saves the page there (the
README's picture)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import demo
from conftest import REAL_MNIST_DIR, REPO_DIR
from run_machinery.cli import SHIPPED_CHECKPOINT
from run_machinery.datasets import read_split
from run_machinery.errors import UserError
from run_machinery.own_images import own_picture

ANSWER = re.compile(r"^(\S+) \(probability \d\.\d{4}\); nearest 8 test images: \S+(, \S+){7}$")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def checkpoint_of(run_folder):
    return str(run_folder / "model" / "epoch_002.pth")


def png_of_test_image(mnist_dir, index, path):
    """Test image `index` of the small MNIST as a PNG at `path`: a picture of one's own."""
    Image.fromarray(read_split(mnist_dir, train=False)[0][index].numpy()).save(path)
    return str(path)


def test_a_test_image_lands_on_itself(two_epoch_run, mnist_dir, tmp_path):
    _, run_folder = two_epoch_run
    page = demo.Demo(checkpoint_of(run_folder), k=8)
    answer, feature_map, grid = page.predict(png_of_test_image(mnist_dir, 7, tmp_path / "7.png"))
    assert ANSWER.match(answer)
    features, _, [placed] = page.index.place(read_split(mnist_dir, train=False)[0][7:8].numpy(), 8)
    assert placed["nearest"]["indices"][0] == 7  # the test image itself
    assert answer == page.index.describe(placed)
    # The map is the test features' picture with a star drawn on it, and only there.
    rows, columns = np.nonzero((feature_map != page.map.picture).any(axis=2))
    assert 0 < len(rows) < 40 * 40
    [(column, row)] = page.map.pixels(features)
    assert abs(columns.mean() - column) < 3 and abs(rows.mean() - row) < 3
    # The picture itself, then its 8 nearest test images, in a grid of 3 x 3 framed tiles.
    assert grid.shape == (3 * 90, 3 * 90, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[3:87, 3:87, 0][::3, ::3],
                          read_split(mnist_dir, train=False)[0][7].numpy())


def test_the_map_holds_the_runs_test_images_unless_told(reference_run):
    # The reference run tested on its first 16 of the 100 test images.
    checkpoint = str(reference_run / "model" / "epoch_004.pth")
    assert len(demo.Demo(checkpoint).index.labels) == 16
    assert len(demo.Demo(checkpoint, test_images="all").index.labels) == 100


def test_a_blank_canvas_or_no_picture_is_said_on_the_page(two_epoch_run, tmp_path):
    _, run_folder = two_epoch_run
    page = demo.Demo(checkpoint_of(run_folder))
    Image.new("RGB", (280, 280), "white").save(tmp_path / "blank.png")
    answer, feature_map, grid = page.predict(str(tmp_path / "blank.png"))
    assert answer.startswith("Nothing to classify yet:") and "shows no ink" in answer
    assert feature_map is page.map.picture and grid is None
    assert page.predict(None)[0] == "Draw a digit, or upload a picture."


def test_without_gradio_one_line_names_the_file_to_install(two_epoch_run, monkeypatch, capsys):
    _, run_folder = two_epoch_run
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    with pytest.raises(SystemExit) as stop:
        demo.main([checkpoint_of(run_folder)])
    assert stop.value.code == ("error: demo.py needs Gradio: python3 -m pip install -r "
                               "requirements-demo.txt")


def test_a_checkpoint_without_its_run_needs_the_dataset_said(two_epoch_run, mnist_dir, tmp_path):
    alone = tmp_path / "alone.pth"  # away from its run.json
    shutil.copy(checkpoint_of(two_epoch_run[1]), alone)
    with pytest.raises(UserError, match=f"{alone} has no run.json .* pass --dataset"):
        demo.Demo(str(alone))
    page = demo.Demo(str(alone), dataset="mnist", dataset_dir=str(mnist_dir))
    assert page.index.checkpoint.dataset == "mnist"


def test_a_checkpoint_it_cannot_use_stops_before_the_server(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    result = subprocess.run([sys.executable, str(REPO_DIR / "demo.py"), str(tmp_path / "notes.pth"),
                             "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120, cwd=REPO_DIR)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")


def test_a_taken_port_is_said_before_the_checkpoint_is_read(tmp_path):
    pytest.importorskip("gradio", reason="Gradio is not installed (requirements-demo.txt)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stop:
            # a missing checkpoint: were it read first, its error would be the one said
            demo.main([str(tmp_path / "missing.pth"), "--port", str(port)])
    assert stop.value.code == (f"error: cannot serve on 127.0.0.1:{port} (Address already in "
                               f"use); choose another --port or --host")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def serve():
    """Start demo.py on a checkpoint in a subprocess: `serve(checkpoint)` gives its address
    once it prints it. Each is stopped afterwards by Ctrl-C (SIGINT), which must end it
    cleanly, with one line."""
    pytest.importorskip("gradio", reason="Gradio is not installed (requirements-demo.txt)")
    servers = []

    def start(checkpoint, *flags):
        port = free_port()
        server = subprocess.Popen([sys.executable, str(REPO_DIR / "demo.py"), checkpoint,
                                   "--port", str(port), "--device", "cpu", *flags],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=REPO_DIR)
        servers.append(server)
        address = f"http://127.0.0.1:{port}/"
        line = server.stdout.readline()  # the one line that says the address, once it serves
        assert line == f"Demo of {checkpoint} at {address}; Ctrl-C stops it\n"
        return address

    yield start
    for server in servers:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
        assert server.returncode == 0 and out == "Stopped; the demo server is closed\n", err
        assert "Traceback" not in err, err  # whatever was uploaded


def test_the_server_answers_gradio_client(serve, two_epoch_run, mnist_dir, tmp_path):
    from gradio_client import Client, handle_file
    address = serve(checkpoint_of(two_epoch_run[1]))
    client = Client(address, verbose=False)
    answer, feature_map, grid = client.predict(
        handle_file(png_of_test_image(mnist_dir, 3, tmp_path / "3.png")), api_name="/predict")
    expected, _, _ = demo.Demo(checkpoint_of(two_epoch_run[1])).predict(str(tmp_path / "3.png"))
    assert ANSWER.match(answer) and answer.split()[0] == expected.split()[0]
    assert Image.open(grid).size == (3 * 90, 3 * 90) and Image.open(feature_map).size == (800, 700)


def bad_uploads(folder):
    """Files that are no picture to classify, by name: text named .png, an empty file, a PNG
    cut short, a decompression bomb (a small file of 20 million pixels)."""
    folder.mkdir()
    (folder / "notes.png").write_text("not a picture")
    (folder / "empty.png").write_bytes(b"")
    Image.new("L", (200, 200), 255).save(folder / "whole.png")
    (folder / "cut.png").write_bytes((folder / "whole.png").read_bytes()[:100])
    Image.new("1", (5000, 4000)).save(folder / "bomb.png")
    return [folder / name for name in ("notes.png", "empty.png", "cut.png", "bomb.png")]


def transparent_four(path):
    """A 4 drawn in black on a transparent canvas, as an RGBA PNG."""
    picture = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    for box in ((70, 40, 100, 170), (70, 150, 220, 180), (180, 40, 210, 250)):
        picture.paste((0, 0, 0, 255), box)
    picture.save(path)
    return str(path)


def test_uploads_are_read_as_embed_reads_them_by_parallel_clients(serve, two_epoch_run, mnist_dir,
                                                                  tmp_path):
    from gradio_client import Client, handle_file
    checkpoint = checkpoint_of(two_epoch_run[1])
    address = serve(checkpoint)
    page = demo.Demo(checkpoint)
    clients = threading.local()

    def answer(path):
        if not hasattr(clients, "client"):
            clients.client = Client(address, verbose=False)
        return clients.client.predict(handle_file(str(path)), api_name="/predict")

    for path in bad_uploads(tmp_path / "bad"):
        with pytest.raises(UserError) as refused:
            own_picture(str(path), "mnist")  # embed.py's reader, and so its line
        said, feature_map, grid = answer(path)
        assert said == f"Nothing to classify yet: {refused.value}".replace(str(path), path.name)
        assert str(tmp_path) not in said and "/tmp" not in said and grid is None
    # transparency is white paper, as for embed.py: the 4 is classified
    four = transparent_four(tmp_path / "four.png")
    assert ANSWER.match(answer(four)[0]) and answer(four)[0] == page.predict(four)[0]
    # 20 requests over 5 client threads, each answered in full
    pictures = [png_of_test_image(mnist_dir, index % 4, tmp_path / f"{index}.png")
                for index in range(20)]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(answer, pictures))
    assert [said for said, _, _ in answers] == [page.predict(path)[0] for path in pictures]
    assert all(Image.open(grid).size == (3 * 90, 3 * 90) for _, _, grid in answers)


def draw_in_browser(address, strokes, screenshot=None):
    """Open the page at `address` in headless Chromium, draw `strokes` on the sketchpad (each
    a start and moves, in pixels from the canvas's centre) and return the prediction shown;
    with `screenshot`, save the page there."""
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options,
                               service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        browser.get(address)
        wait = WebDriverWait(browser, 60)
        canvas = wait.until(lambda page: page.find_element(By.CSS_SELECTOR, "#sketch canvas"))
        # The page chooses the brush itself once it is built (demo.SELECT_BRUSH).
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR,
                                                   '#sketch button[aria-label="Brush Size"]'))
        for (x, y), *moves in strokes:
            chain = ActionChains(browser).move_to_element_with_offset(canvas, x, y).click_and_hold()
            for dx, dy in moves:
                chain.move_by_offset(dx, dy)
            chain.release().perform()
        answer = browser.find_element(By.CSS_SELECTOR, "#prediction textarea")
        wait.until(lambda page: ANSWER.match(answer.get_attribute("value")))
        time.sleep(1)  # the map and the grid arrive with the answer; let them be drawn
        if screenshot:
            browser.save_screenshot(screenshot)
        return answer.get_attribute("value")
    finally:
        browser.quit()


# A 3 in one stroke: the upper bow, the waist, the lower bow.
THREE = [((-40, -70), (40, -10), (40, 20), (0, 40), (-40, 30), (40, 20), (10, 50), (-40, 30),
          (-40, 0))]


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="no browser: apt-get install chromium chromium-driver")
def test_a_stroke_drawn_in_a_browser_is_classified(serve, two_epoch_run):
    pytest.importorskip("selenium", reason="selenium is not installed (requirements-demo.txt)")
    assert ANSWER.match(draw_in_browser(serve(checkpoint_of(two_epoch_run[1])), THREE))
    if SHIPPED_CHECKPOINT.is_file() and (REAL_MNIST_DIR / "MNIST" / "raw").is_dir():
        # the shipped model, trained: the 3 must land among the 3s
        address = serve(str(SHIPPED_CHECKPOINT), "--dataset_dir", str(REAL_MNIST_DIR))
        answer = draw_in_browser(address, THREE, os.environ.get("DEMO_SCREENSHOT"))
        assert answer.startswith("3 (probability ") and answer.endswith(
            "test images: 3, 3, 3, 3, 3, 3, 3, 3"), answer
