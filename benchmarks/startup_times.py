"""How soon each command answers: its --help, and its first useful line (the trainer's
first epoch, evaluate.py's first figure, export.py's file, the demo's address, ...).

    python3 benchmarks/startup_times.py --dataset_dir ../shared/mnist --repeats 3
    python3 benchmarks/startup_times.py --compare_with /tmp/before   # another checkout beside

It first trains a small run (--max_train_samples, --max_test_samples, one epoch), then
runs every command on that run's checkpoint, each in a process of its own, as typed in a
shell, its lines read as they are printed (PYTHONUNBUFFERED). The commands take turns, a
round per repeat (with --compare_with, each right after the other checkout's same
command), so that a changing load on the machine meets each of them alike. Each figure is
the median over the repeats: seconds of wall clock, and the CPU seconds (user + system)
of the whole process, which other programs on the machine slow less. The demo starts
twice a round: without the cache of its embedded test split (a first start), then with it.
"""
import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from run_machinery.own_images import embedding_cache  # noqa: E402  (after the path is set)

COMMANDS = ("train", "evaluate", "compare", "animate", "embed", "export", "demo")
SCRIPTS = {"train": "train_mnist_original_center.py", "evaluate": "evaluate.py",
           "compare": "compare.py", "animate": "animate.py", "embed": "embed.py",
           "export": "export.py", "demo": "demo.py"}


@dataclass
class Row:
    """One timed row: `arguments()` gives the command line after the script, `marker` is
    in its first useful line, `what` says what that line is; a `server` is stopped there;
    `removed` is deleted before it starts. The lists gather each round's figures."""
    name: str
    command: str
    arguments: object
    marker: str
    what: str
    server: bool = False
    removed: Path = None
    help: list = field(default_factory=list)
    help_cpu: list = field(default_factory=list)
    first: list = field(default_factory=list)
    end: list = field(default_factory=list)
    cpu: list = field(default_factory=list)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", default=str(REPO_DIR.parent / "shared" / "mnist"),
                        help="MNIST, as for the trainer")
    parser.add_argument("--max_train_samples", type=int, default=2000,
                        help="training images of the run's one epoch")
    parser.add_argument("--max_test_samples", type=int, default=None,
                        help="test images of the run (the demo's gallery); default: all")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the median is shown")
    parser.add_argument("--commands", default=",".join(COMMANDS),
                        help="the commands to time, comma-separated (the run is trained anyway)")
    parser.add_argument("--compare_with", default=None, metavar="CHECKOUT",
                        help="another checkout of the project (an earlier commit, say), whose "
                             "commands are timed in the same rounds on the same run")
    parser.add_argument("--work_dir", default=None,
                        help="where the run and the outputs go; default: a temporary folder")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one command may take")
    args = parser.parse_args(argv)
    args.commands = args.commands.split(",")
    args.dataset_dir = str(Path(args.dataset_dir).resolve())  # the same for every checkout
    unknown = set(args.commands) - set(COMMANDS)
    if unknown or args.repeats < 1:
        parser.error(f"unknown commands {sorted(unknown)}" if unknown else "--repeats must be >= 1")
    return args


def timed(arguments, marker, timeout, checkout=REPO_DIR, server=False):
    """Run `python3 arguments...` in `checkout`; returns seconds to the first line of its
    output that holds `marker`, seconds to its end and its CPU seconds. A `server` is sent
    SIGTERM at that line, and its end is not timed (None)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *map(str, arguments)], cwd=checkout, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    first, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if first is None and marker in line:
            first = time.perf_counter() - start
            if server:
                process.send_signal(signal.SIGTERM)
    status = process.wait()
    end = time.perf_counter() - start
    watchdog.cancel()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if first is None or (status != 0 and not server):
        raise RuntimeError(f"{' '.join(map(str, arguments))} (in {checkout}) ended with status "
                           f"{status} before {marker!r}:\n{''.join(lines)[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return first, None if server else end, cpu


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_flags(args, out_dir):
    return ["--dataset_dir", args.dataset_dir, "--max_train_samples", args.max_train_samples,
            *(["--max_test_samples", args.max_test_samples] if args.max_test_samples else []),
            "--epochs", 1, "--out_dir", out_dir]


def rows_of(args, work, run_dir, checkpoint, picture, cache):
    """The rows, in turn order; `cache`: the demo's file, removed before its first start."""
    def demo():
        return [checkpoint, "--port", free_port()]

    return [
        Row("train", "train", lambda: run_flags(args, work / f"train_{time.time_ns()}"),
            "Epoch:", "first epoch line"),
        Row("evaluate", "evaluate",
            lambda: [checkpoint, "--plot", work / "eval.png", "--tsne", work / "tsne.png",
                     "--ranking", work / "ranking.png"],
            "Wrote", "first figure (--plot; the end: after --tsne, --ranking)"),
        Row("compare", "compare", lambda: [run_dir, "--out", work / "compare.png"], "Wrote",
            "'Wrote' of its figure"),
        Row("animate", "animate", lambda: [run_dir / "test_features.pt", "--out", work / "f.gif"],
            "Wrote", "'Wrote' of the GIF"),
        Row("embed", "embed", lambda: [checkpoint, picture], f"{picture}:", "the picture's line"),
        Row("export", "export", lambda: [checkpoint, "--onnx", work / "model.onnx"], "Wrote",
            "'Wrote' of the ONNX file"),
        Row("demo (first start)", "demo", demo, "Demo of", "its address", server=True,
            removed=cache),
        Row("demo (cached)", "demo", demo, "Demo of", "its address", server=True),
    ]


def draw_digit(path):
    """A picture of one's own: a dark 1 on white, as a user would draw it."""
    from PIL import Image, ImageDraw
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=18)
    image.save(path)
    return path


def measure(row, args, checkout):
    """One round of `row` in `checkout`: its --help (but for a second demo start, whose
    --help is the first's), then its command."""
    script = SCRIPTS[row.command]
    if not row.name.endswith("(cached)"):
        _, help_end, help_cpu = timed([script, "--help"], "usage:", args.timeout, checkout)
        row.help.append(help_end)
        row.help_cpu.append(help_cpu)
    if row.removed:
        row.removed.unlink(missing_ok=True)
    first, end, cpu = timed([script, *row.arguments()], row.marker, args.timeout, checkout,
                            row.server)
    row.first.append(first)
    row.end.extend([] if end is None else [end])
    row.cpu.append(cpu)
    return first


def show(values):
    return f"{statistics.median(values):.2f}" if values else "-"


def table(rows):
    """The Markdown table of the medians."""
    lines = [("| command | --help s | --help CPU s | first useful line | s to it | s to the end "
              "| CPU s |"), "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {row.name} | {show(row.help)} | {show(row.help_cpu)} | {row.what} "
              f"| {show(row.first)} | {show(row.end)} | {show(row.cpu)} |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    """Time the commands; returns {checkout: its rows}."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="startup_") as temporary:
        work = Path(args.work_dir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        run_dir = work / "run"
        print(f"Training the run: {SCRIPTS['train']} {' '.join(map(str, run_flags(args, run_dir)))}",
              flush=True)
        timed([SCRIPTS["train"], *run_flags(args, run_dir), "--overwrite"], "Epoch:",
              args.timeout)
        checkpoint = run_dir / "model" / "epoch_001.pth"
        picture = draw_digit(work / "digit.png")
        checkouts = [REPO_DIR] + ([Path(args.compare_with).resolve()] if args.compare_with else [])
        rows = {}
        for checkout in checkouts:
            # another checkout's demo (an earlier one: without a cache) leaves this one's
            cache = embedding_cache(checkpoint) if checkout == REPO_DIR else None
            rows[checkout] = [row for row in rows_of(args, work, run_dir, checkpoint, picture,
                                                     cache) if row.command in args.commands]
        for repeat in range(1, args.repeats + 1):
            for turn in zip(*rows.values()):
                for checkout, row in zip(checkouts, turn):
                    first = measure(row, args, checkout)
                    print(f"round {repeat}, {row.name} ({checkout}): {first:.2f} s to "
                          f"{row.what}", flush=True)
        load = os.getloadavg()
        print(f"\nMedians of {args.repeats} rounds; {os.cpu_count()} CPUs, load average "
              f"{load[0]:.1f} at the end; a run of {args.max_train_samples} training and "
              f"{args.max_test_samples or 'all'} test images")
        for checkout, checkout_rows in rows.items():
            print(f"\n{checkout}:\n\n{table(checkout_rows)}")
        return rows


if __name__ == "__main__":
    main()
