"""How soon each command answers: its --help, and its first useful line (the trainer's
first epoch, evaluate.py's first figure, export.py's file, the demo's address, ...).

    python3 benchmarks/startup_times.py --dataset_dir ../shared/mnist --repeats 3

It first trains a small run (--max_train_samples, --max_test_samples, one epoch; its
first epoch line is the trainer's figure), then runs every other command on that run's
checkpoint, each in a process of its own, as typed in a shell, its lines read as they
are printed (PYTHONUNBUFFERED). The commands take turns, a round per repeat, so that a
changing load on the machine meets each of them alike. Each figure is the median over
the repeats: seconds of wall clock, and the CPU seconds (user + system) of the whole
process, which another program on the machine slows less. The demo starts twice a round:
without its cache of the embedded test split (a first start), then with it.
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
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from run_machinery.own_images import embedding_cache  # after the path is set

COMMANDS = ("train", "evaluate", "compare", "animate", "embed", "export", "demo")
SCRIPTS = {"train": "train_mnist_original_center.py", "evaluate": "evaluate.py",
           "compare": "compare.py", "animate": "animate.py", "embed": "embed.py",
           "export": "export.py", "demo": "demo.py"}


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
                        help="which commands to time, comma-separated (train always runs once, "
                             "for the run the others use)")
    parser.add_argument("--work_dir", default=None,
                        help="where the run and the outputs go; default: a temporary folder")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one command may take")
    args = parser.parse_args(argv)
    args.commands = args.commands.split(",")
    unknown = set(args.commands) - set(COMMANDS)
    if unknown or args.repeats < 1:
        parser.error(f"unknown commands {sorted(unknown)}" if unknown else "--repeats must be >= 1")
    return args


def timed(argv, marker, timeout, stop=False):
    """Run `python3 argv...` in the repository; returns (seconds to the first line of its
    output holding `marker`, seconds to its end, CPU seconds of it) and its output. With
    `stop`, it is sent SIGTERM at that line (a server), and its end is not timed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO_DIR, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    first, lines = None, []
    for line in process.stdout:
        lines.append(line)
        if first is None and marker in line:
            first = time.perf_counter() - start
            if stop:
                process.send_signal(signal.SIGTERM)
    status = process.wait()
    end = time.perf_counter() - start
    watchdog.cancel()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = "".join(lines)
    if first is None or (status != 0 and not stop):
        raise RuntimeError(f"{' '.join(map(str, argv))} ended with status {status} before "
                           f"{marker!r}:\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (first, None if stop else end, cpu), output


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jobs(args, work, run_dir, checkpoint, picture):
    """Per timed row: (row name, command, argv, the marker of its first useful line, what
    that line is, whether it is a server stopped there, a file deleted before it starts)."""
    return [
        ("train", "train",
         lambda: [SCRIPTS["train"], *run_flags(args, work / f"train_{time.time_ns()}")],
         "Epoch:", "first epoch line", False, None),
        ("evaluate", "evaluate",
         lambda: [SCRIPTS["evaluate"], checkpoint, "--plot", work / "eval.png", "--tsne",
                  work / "tsne.png", "--ranking", work / "ranking.png"],
         "Wrote", "first figure (--plot; end: with --tsne, --ranking)", False, None),
        ("compare", "compare", lambda: [SCRIPTS["compare"], run_dir, "--out", work / "c.png"],
         "Wrote", "'Wrote' of its figure", False, None),
        ("animate", "animate",
         lambda: [SCRIPTS["animate"], run_dir / "test_features.pt", "--out", work / "f.gif"],
         "Wrote", "'Wrote' of the GIF", False, None),
        ("embed", "embed", lambda: [SCRIPTS["embed"], checkpoint, picture],
         f"{picture}:", "the picture's line", False, None),
        ("export", "export", lambda: [SCRIPTS["export"], checkpoint, "--onnx", work / "m.onnx"],
         "Wrote", "'Wrote' of the ONNX file", False, None),
        ("demo (first start)", "demo",
         lambda: [SCRIPTS["demo"], checkpoint, "--port", free_port()],
         "Demo of", "its address", True, embedding_cache(checkpoint)),
        ("demo (cached)", "demo", lambda: [SCRIPTS["demo"], checkpoint, "--port", free_port()],
         "Demo of", "its address", True, None),
    ]


def run_flags(args, out_dir):
    return ["--dataset_dir", args.dataset_dir, "--max_train_samples", args.max_train_samples,
            *(["--max_test_samples", args.max_test_samples] if args.max_test_samples else []),
            "--epochs", 1, "--out_dir", out_dir]


def draw_digit(path):
    """A picture of one's own: a dark 1 on white, as a user would draw it."""
    from PIL import Image, ImageDraw
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).line([(100, 30), (100, 170)], fill=0, width=18)
    image.save(path)
    return path


def median(values):
    return statistics.median(values) if values else None


def show(value):
    return "-" if value is None else f"{value:.2f}"


def table(rows):
    """The Markdown table of the medians."""
    lines = [("| command | --help s | --help CPU s | first useful line | s to it | s to the end "
              "| CPU s |"), "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {show(median(row['help']))} | {show(median(row['help_cpu']))} "
                     f"| {row['what']} | {show(median(row['first']))} "
                     f"| {show(median(row['end']))} | {show(median(row['cpu']))} |")
    return "\n".join(lines)


def main(argv=None):
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
        chosen = [job for job in jobs(args, work, run_dir, checkpoint, picture)
                  if job[1] in args.commands]
        rows = {name: {"what": what, "help": [], "help_cpu": [], "first": [], "end": [],
                       "cpu": []} for name, _, _, _, what, _, _ in chosen}
        for repeat in range(1, args.repeats + 1):
            for name, command, command_line, marker, _, stop, removed in chosen:
                row = rows[name]
                if not name.endswith("(cached)"):  # the same --help as the row before
                    (_, help_end, help_cpu), _ = timed([SCRIPTS[command], "--help"], "usage:",
                                                       args.timeout)
                    row["help"].append(help_end)
                    row["help_cpu"].append(help_cpu)
                if removed:
                    removed.unlink(missing_ok=True)
                (first, end, cpu), _ = timed(command_line(), marker, args.timeout, stop)
                row["first"].append(first)
                if end is not None:
                    row["end"].append(end)
                row["cpu"].append(cpu)
                print(f"round {repeat}, {name}: {first:.2f} s to {row['what']}", flush=True)
        load = os.getloadavg()
        print(f"\nMedians of {args.repeats} rounds; {os.cpu_count()} CPUs, load average "
              f"{load[0]:.1f} at the end; run of {args.max_train_samples} training and "
              f"{args.max_test_samples or 'all'} test images\n")
        print(table(rows))
        return rows


if __name__ == "__main__":
    main()
