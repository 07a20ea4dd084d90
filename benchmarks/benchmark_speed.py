"""Time epochs of the article's pipeline and of this project's trainer on the same machine and data.

Every run (the article's pipeline, the project with each choice of speed flags) goes in
its own worker subprocess, so that their peak memories are separate. The runs take
turns of one epoch each, round after round: on a machine shared with other work, every
run then meets much the same load, and the ratios between them hold better.

Each epoch is split into the same parts for both pipelines:

    train    the training steps with their data (the article: waiting for each batch of
             its DataLoader, and its copy to the device; the project: its tensor indexing)
    eval     the test pass, with its data
    metrics  the figures of the epoch (the article: predictions taken out one by one,
             sklearn's report; the project: the retrieval metrics)
    files    checkpoint, feature plot (the project also: history CSV and curves, test
             features, training state)
    other    the rest of the epoch (the article: the scheduler step, its printed line;
             the project: 0, its epoch being exactly the four parts above)

"Outside the network" is metrics + files; the data loading counts in train for both.

The project is run as a user runs it: a worker calls the trainer's `main()` for epoch k
with `--epochs k` (and `--resume auto` after the first), in the same run folder, and
takes every figure from the History that `main()` returns: the last record's times are
the epoch's parts, its losses and accuracies the epoch's figures. Loading the data,
building the model and resuming, before the epoch, and the features GIF, after it, are
not part of the epoch (`--compile` compiles again in each `main()`, from the process's
and inductor's caches after the first). The article's pipeline is timed by its own timer
hooks (article_pipeline.py).

The train part's FLOP rate is set against the machine's measured matrix-multiply peak
(bfloat16's for --amp runs). A step probe times the project's train step alone for each
setting, the settings taking turns step by step, for speed-ups that a changing load
blurs less than whole epochs.

    python3 benchmarks/benchmark_speed.py                      # 10,000 + 2,000 real images
    python3 benchmarks/benchmark_speed.py --full_mnist_epoch   # and one epoch of all of MNIST

Prints a table and writes the same figures as JSON (--json).
"""
import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

BENCHMARK_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCHMARK_DIR.parent
sys.path.insert(0, str(REPO_DIR))

import article_pipeline as article  # noqa: E402  (after the path is set)
import train_mnist_original_center as trainer  # noqa: E402
from center_loss import CenterLoss  # noqa: E402
from run_machinery.devices import bf16_supported, speed_setup  # noqa: E402
from margin_heads import Head  # noqa: E402
from mnist_loader import TensorLoader, read_split  # noqa: E402
from run_machinery.metrics import reid_metrics, retrieval_metrics  # noqa: E402
from mnist_net import Net  # noqa: E402
from run_machinery.run_folder import RunPaths  # noqa: E402

PARTS = ("train", "eval", "metrics", "files", "other")
# What the 3% budget covers: everything that is not the network (the data
# loading is inside "train", for both pipelines).
OUTSIDE_NETWORK = ("metrics", "files")
FIGURES = ("train_acc", "train_loss", "test_acc", "test_loss")
DEFAULT_SETTINGS = "article,project,no-channels_last,amp,compile"
PROJECT_FLAGS = {"amp", "channels_last", "no-channels_last", "compile"}
READY = "@@ready"  # a run's line on stderr: it waits for its next turn


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset_dir", default=str(REPO_DIR.parent / "shared" / "mnist"),
                        help="folder holding MNIST/raw/ with the four plain IDX files "
                             "(or that raw folder)")
    parser.add_argument("--max_train_samples", type=int, default=10000,
                        help="first N training images")
    parser.add_argument("--max_test_samples", type=int, default=2000, help="first N test images")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per run; the first is reported apart (warm-up, compiling) "
                             "and the later ones averaged")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS,
                        help="comma-separated runs: 'article', 'project' (its defaults: fp32, "
                             "channels-last), or the project with flags joined by '+' (amp, "
                             "no-channels_last, compile, ...); '' for none "
                             "(with --full_mnist_epoch)")
    parser.add_argument("--full_mnist_epoch", action="store_true",
                        help="also run one epoch of the project (defaults) on all 60,000 + 10,000 "
                             "images, for its time and peak memory")
    parser.add_argument("--metrics_items", type=int, default=10000,
                        help="test features the retrieval metrics are timed on (per call)")
    parser.add_argument("--probe_rounds", type=int, default=10,
                        help="rounds of the step probe (one train step per setting each); "
                             "0: no probe")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both pipelines run")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of every run (torch.set_num_threads); "
                             "0: PyTorch's default")
    parser.add_argument("--seed", type=int, default=1, help="seed of both pipelines")
    parser.add_argument("--json", default=str(REPO_DIR / "outputs" / "benchmark_speed.json"),
                        help="where the figures are written as JSON")
    parser.add_argument("--keep_runs", metavar="DIR", default=None,
                        help="keep each run's folder (checkpoints, plots; the project's "
                             "history.csv and training state) in DIR/<setting>, each new or empty; "
                             "default: temporary folders, deleted")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one setting, write JSON
    args = parser.parse_args(argv)
    args.settings = [name.strip() for name in args.settings.split(",") if name.strip()]
    for name in args.settings:
        if name not in ("article", "project") and not set(name.split("+")) <= PROJECT_FLAGS:
            parser.error(f"unknown setting {name!r} in --settings")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def project_flags(setting):
    """The trainer's command-line flags of a project setting."""
    return [] if setting in ("project", "full") else [f"--{flag}" for flag in setting.split("+")]


def run_name(setting):
    return {"article": "article", "project": "project", "full": "project, all of MNIST"}.get(
        setting) or " ".join(["project", *project_flags(setting)])


def wait_for_turn():
    """Tell the parent process that this run is idle; go on when it says so."""
    print(READY, file=sys.stderr, flush=True)
    if not sys.stdin.readline():
        sys.exit("the benchmark's parent process has gone")


class PartTimer:
    """Wall time per named part of an epoch; time in a part nested in another counts once,
    for the inner one."""

    def __init__(self):
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._open = []  # per open part: [start, seconds taken by parts nested in it]

    @contextlib.contextmanager
    def part(self, name):
        frame = [time.perf_counter(), 0.0]
        self._open.append(frame)
        try:
            yield
        finally:
            self._open.pop()
            elapsed = time.perf_counter() - frame[0]
            self.seconds[name] += elapsed - frame[1]
            if self._open:
                self._open[-1][1] += elapsed


class PeakMemory:
    """Peak resident memory from now on: Linux's high-water mark, reset here, so that the
    peak of importing torch does not hide the run's own."""

    def __init__(self):
        self.linux = Path("/proc/self/status").exists()
        if self.linux:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak to the current RSS
        self.start_mb = self.read("VmRSS")

    def read(self, field):
        if not self.linux:  # elsewhere: the peak since the process started (in KiB as on Linux)
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        line = next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith(field))
        return int(line.split()[1]) / 1024  # kB

    def peak_mb(self):
        return self.read("VmHWM")


def trainer_argv(args, out_dir, flags=(), max_train=None, max_test=None):
    """The trainer's command line for a run in `out_dir`, without --epochs."""
    argv = ["--dataset_dir", args.dataset_dir, "--device", args.device, "--seed", str(args.seed),
            "--out_dir", str(out_dir)]
    for name, limit in (("--max_train_samples", max_train), ("--max_test_samples", max_test)):
        if limit is not None:
            argv += [name, str(limit)]
    return argv + list(flags)


def run_article(args, out_dir):
    """The article's pipeline, one epoch per turn. Returns (epochs, training images)."""
    settings = trainer.parse_args(trainer_argv(args, out_dir))  # the trainer's hyperparameters
    paths = RunPaths.from_settings(settings)
    for folder in (paths.model(1).parent, paths.visual(1).parent):
        folder.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    loaders = article.load_dataset(args.dataset_dir, settings.batch_size, args.max_train_samples,
                                   args.max_test_samples)
    model, center_loss, nll_loss, optimizers, scheduler = article.build(settings, device)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        wait_for_turn()
        timer = PartTimer()
        start = time.perf_counter()
        figures = article.run_epoch(model, center_loss, nll_loss, settings.loss_weight, optimizers,
                                    scheduler, loaders, epoch, paths.model(epoch),
                                    paths.visual(epoch), timer, device)
        seconds = time.perf_counter() - start
        parts = dict(timer.seconds, other=seconds - sum(timer.seconds.values()))
        epochs.append({"epoch": epoch, "seconds": seconds, "parts": parts, **figures})
    return epochs, len(loaders[0].dataset)


def run_project(args, out_dir, setting):
    """The trainer's own main(), one epoch per turn: epoch k is `main()` with --epochs k,
    resuming the run in `out_dir` after the first. Returns (epochs, training images)."""
    full = setting == "full"
    max_train, max_test = (None, None) if full else (args.max_train_samples, args.max_test_samples)
    argv = trainer_argv(args, out_dir, project_flags(setting), max_train, max_test)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        wait_for_turn()
        history = trainer.main(argv + ["--epochs", str(epoch)]
                               + (["--resume", "auto"] if epoch > 1 else []))
        record = history.records[-1]
        if record.epoch != epoch:
            sys.exit(f"the trainer's last record is of epoch {record.epoch}, not {epoch}")
        times = record.times
        parts = {"train": times.train, "eval": times.test, "metrics": times.metrics,
                 "files": times.files, "other": 0.0}
        epochs.append({"epoch": epoch, "seconds": sum(parts.values()), "parts": parts,
                       "train_acc": record.train.acc, "train_loss": record.train.loss,
                       "test_acc": record.test.acc, "test_loss": record.test.loss,
                       "history_row": record.row()})
    # The trainer trains on every image it reads (no digit is held out here).
    return epochs, read_split(args.dataset_dir, True, max_train)[1].numel()


def worker(args):
    """Run one setting in this process, one epoch per turn; print its figures as one JSON line."""
    memory = PeakMemory()
    if args.threads:
        torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        out_dir = (Path(args.keep_runs) / args.worker if args.keep_runs
                   else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="benchmark_"))))
        # The runs' own lines go to stderr, which the parent reads as the run goes.
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        if args.worker == "article":
            epochs, num_train = run_article(args, out_dir)
        else:
            epochs, num_train = run_project(args, out_dir, args.worker)
    print(json.dumps({"epochs": epochs, "train_images": num_train,
                      "rss_after_imports_mb": memory.start_mb, "peak_rss_mb": memory.peak_mb()}))


class Worker:
    """One run in its own process, started at once and then given turns of one epoch."""

    def __init__(self, args, setting):
        self.setting = setting
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", setting,
                   "--dataset_dir", args.dataset_dir,
                   "--max_train_samples", str(args.max_train_samples),
                   "--max_test_samples", str(args.max_test_samples), "--device", args.device,
                   "--seed", str(args.seed), "--threads", str(args.threads),
                   "--epochs", "1" if setting == "full" else str(args.epochs)]
        if args.keep_runs:
            command += ["--keep_runs", args.keep_runs]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=REPO_DIR)
        self.stderr = []
        self.result = None

    def wait_until_idle(self):
        """Returns True when the run waits for its next turn, False when it has ended."""
        for line in self.process.stderr:
            if line.rstrip("\n") == READY:
                return True
            self.stderr.append(line)
        out = self.process.stdout.read()
        if self.process.wait() != 0:
            sys.exit(f"error: the {self.setting} run failed:\n{''.join(self.stderr)[-3000:]}")
        self.result = json.loads(out.strip().splitlines()[-1])
        print(f"{self.setting}: done", flush=True)
        return False

    def take_turn(self):
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.wait_until_idle()


def run_in_turns(args, settings):
    """Start every run, then give each a turn of one epoch in a round, round after round,
    until all have ended. Returns {setting: figures}."""
    if args.keep_runs:
        for setting in settings:
            folder = Path(args.keep_runs) / setting
            if folder.exists() and any(folder.iterdir()):
                sys.exit(f"error: --keep_runs: {folder} is not empty; give a new folder")
    workers = [Worker(args, setting) for setting in settings]
    for worker in workers:  # start-up: imports (the article: also its data and model)
        worker.wait_until_idle()
    running = workers
    while running:
        running = [worker for worker in running if worker.take_turn()]
    return {worker.setting: worker.result for worker in workers}


def matmul_peak_gflops(dtype, device, repeats=10):
    """The machine's practical matrix-multiply peak: the best rate of a 2048-square torch.mm
    and of a 1x1 convolution, the same product through oneDNN or cuDNN (on an AMD CPU, MKL's
    float32 torch.mm reaches about half of what oneDNN does)."""
    a, b = (torch.randn(2048, 2048, dtype=dtype, device=device) for _ in range(2))
    images = torch.randn(32, 1024, 16, 16, dtype=dtype,
                         device=device).to(memory_format=torch.channels_last)
    weight = torch.randn(1024, 1024, 1, 1, dtype=dtype,
                         device=device).to(memory_format=torch.channels_last)
    products = ((lambda: torch.mm(a, b), 2 * 2048 ** 3),
                (lambda: torch.nn.functional.conv2d(images, weight),
                 2 * 32 * 16 * 16 * 1024 * 1024))
    rates = []
    for product, flops in products:
        for attempt in range(repeats + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            product()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if attempt:
                rates.append(flops / (time.perf_counter() - start) / 1e9)
    return max(rates)


def train_step_flops_per_image(batch_size=128):
    """FLOPs of one forward and backward pass of the network and losses, per image."""
    model, center_loss = Net(), CenterLoss(10, 2)
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        feat, log_probs = model(images)
        (torch.nn.functional.nll_loss(log_probs, labels) + center_loss(labels, feat)).backward()
    return counter.get_total_flops() / batch_size


def step_probe(args, settings, device, batch_size=128):
    """Train-step images per second of each project setting (compiling aside), the settings
    taking one step each in turn, `--probe_rounds` times; the median step counts. Each step
    is the trainer's `train()` on a one-batch loader."""
    batch = TensorLoader(torch.randn(batch_size, 1, 28, 28, device=device),
                         torch.arange(batch_size, device=device) % 10, batch_size)
    steps = {}
    for setting in settings:
        options = trainer.parse_args(trainer_argv(args, REPO_DIR / "outputs",
                                                  project_flags(setting)))
        torch.manual_seed(args.seed)
        # the same recipe
        model, center_loss, nll_loss, optimizers, _ = article.build(options, device)
        speed_setup(model, device, channels_last=options.channels_last)
        steps[setting] = (model, center_loss, nll_loss, options.loss_weight, optimizers,
                          options.amp)
    seconds = {setting: [] for setting in steps}
    for _ in range(args.probe_rounds + 1):  # the first round warms up
        for setting, (model, center_loss, nll_loss, loss_weight, (net_optimizer, center_optimizer),
                      amp) in steps.items():
            start = time.perf_counter()
            trainer.train(model, Head("softmax"), batch, nll_loss, loss_weight, center_loss,
                          net_optimizer, center_optimizer, 1, amp=amp)
            seconds[setting].append(time.perf_counter() - start)
    return {setting: batch_size / statistics.median(times[1:])
            for setting, times in seconds.items()}


def summarize(setting, run, flops_per_image, peak_gflops, baselines):
    """One row of the table: the mean of the epochs after the first (or the only one)."""
    epochs = run["epochs"]
    steady = epochs[1:] or epochs
    parts = {part: sum(e["parts"][part] for e in steady) / len(steady) for part in PARTS}
    epoch_s = sum(e["seconds"] for e in steady) / len(steady)
    images = run["train_images"]
    rate = flops_per_image * images / parts["train"] / 1e9
    peak = peak_gflops["bfloat16" if "amp" in setting else "float32"]
    row = {
        "run": run_name(setting), "epoch_s": epoch_s, "parts_s": parts,
        "outside_network_fraction": sum(parts[p] for p in OUTSIDE_NETWORK) / epoch_s,
        "images_per_s": images / epoch_s, "train_step_images_per_s": images / parts["train"],
        "train_step_gflops": rate, "matmul_peak_gflops": peak, "fraction_of_peak": rate / peak,
        "first_epoch_s": epochs[0]["seconds"], "peak_rss_mb": run["peak_rss_mb"],
        "rss_after_imports_mb": run["rss_after_imports_mb"],
        "final": {key: epochs[-1][key] for key in FIGURES},
    }
    if setting != "full":
        if "article" in baselines:
            row["ratio_to_article"] = epoch_s / baselines["article"]
        if "project" in baselines and setting not in ("article", "project"):
            row["speedup_vs_project_defaults"] = baselines["project"] / epoch_s
    if "compile" in setting and len(epochs) > 1:
        row["compile_s"] = epochs[0]["seconds"] - epoch_s
    return row


def print_tables(rows, probe, flops_per_image, peak_gflops):
    print(f"{'run':<28}{'epoch s':>8}{'train':>8}{'eval':>7}{'metric':>7}{'files':>7}{'other':>6}"
          f"{'out%':>6}{'img/s':>6}{'GFLOP/s':>8}{'%peak':>6}{'MiB':>6}{'/art':>6}")
    for row in rows:
        p = row["parts_s"]
        print(f"{row['run']:<28}{row['epoch_s']:>8.2f}{p['train']:>8.2f}{p['eval']:>7.2f}"
              f"{p['metrics']:>7.2f}"
              f"{p['files']:>7.2f}{p['other']:>6.2f}{100 * row['outside_network_fraction']:>6.1f}"
              f"{row['images_per_s']:>6.0f}{row['train_step_gflops']:>8.1f}"
              f"{100 * row['fraction_of_peak']:>6.0f}"
              f"{row['peak_rss_mb']:>6.0f}{row.get('ratio_to_article', float('nan')):>6.2f}")
    for row in rows:
        if "compile_s" in row:
            print(f"{row['run']}: first epoch {row['first_epoch_s']:.1f} s, of which compiling "
                  f"about {row['compile_s']:.1f} s")
    if probe:
        print(f"\nstep probe (train step alone, settings taking turns): "
              f"{'img/s':>7}{'GFLOP/s':>9}{'%peak':>7}{'speed-up':>10}")
        for setting, images_per_s in probe.items():
            rate = images_per_s * flops_per_image / 1e9
            peak = peak_gflops["bfloat16" if "amp" in setting else "float32"]
            speedup = images_per_s / probe["project"] if "project" in probe else float("nan")
            print(f"{run_name(setting):<53}{images_per_s:>7.0f}{rate:>9.1f}"
                  f"{100 * rate / peak:>7.0f}{speedup:>10.2f}")


def machine_info(device):
    cpu = (next((line.split(":", 1)[1].strip()
                 for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), "unknown")
           if Path("/proc/cpuinfo").exists() else "unknown")
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_supported": bf16_supported(device), "load_average_start": os.getloadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def metrics_call_seconds(device, num_items, repeats=3):
    """Seconds per call of each retrieval metric on `num_items` random 2-D features of 10
    classes (10,000: a whole MNIST test split, as after every epoch): the best of `repeats`."""
    generator = torch.Generator().manual_seed(0)
    features = (torch.randn(num_items, 2, generator=generator) * 5).to(device)
    labels = torch.randint(0, 10, (num_items,), generator=generator).to(device)
    seconds = {}
    for name, function in (("retrieval (P@1, R-Precision, MAP@R)", retrieval_metrics),
                           ("re-ID (CMC rank-1/5/10, mAP)", reid_metrics)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function(features, labels)  # ends reading its figures: the device is done
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
    return seconds


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_info(device)
    settings = [s for s in args.settings if info["bf16_supported"] or "amp" not in s]
    if settings != args.settings:
        print("no native bfloat16 here: the --amp runs are left out")
    peak = {"float32": matmul_peak_gflops(torch.float32, device)}
    if info["bf16_supported"]:
        peak["bfloat16"] = matmul_peak_gflops(torch.bfloat16, device)
    flops_per_image = train_step_flops_per_image()
    metrics_seconds = metrics_call_seconds(device, args.metrics_items)
    probe_settings = [s for s in settings if s != "article" and "compile" not in s]
    probe = step_probe(args, probe_settings, device) if args.probe_rounds and probe_settings else {}
    runs = run_in_turns(args, settings)
    if args.full_mnist_epoch:
        runs.update(run_in_turns(args, ["full"]))
    info["load_average_end"] = os.getloadavg()

    baselines = {}
    rows = []
    for setting, run in runs.items():
        rows.append(summarize(setting, run, flops_per_image, peak, baselines))
        if setting in ("article", "project"):
            baselines[setting] = rows[-1]["epoch_s"]
    print(f"\n{info['cpu']}, {info['cpu_count']} cores, {info['torch_threads']} threads, "
          f"torch {info['torch']}, "
          f"load average {info['load_average_start'][0]:.1f} -> {info['load_average_end'][0]:.1f}; "
          f"matmul peak {', '.join(f'{k} {v:.0f} GFLOP/s' for k, v in peak.items())}; "
          f"train step {flops_per_image / 1e9:.3f} GFLOP per image")
    print(f"{args.max_train_samples} training and {args.max_test_samples} test images (all of "
          "MNIST: 60000 and 10000), the runs taking turns epoch by epoch; seconds per epoch, the "
          "mean of the epochs after the first; train = the training steps with their data loading "
          "(for both pipelines), eval = the test pass, files = checkpoint + plots (+ the project's "
          "history and training state), other = the article's rest of the epoch (0 for the "
          "project, whose epoch is its four timed parts); out% = metrics + files; /art = epoch vs "
          "the article's\n")
    print_tables(rows, probe, flops_per_image, peak)
    print(f"\nmetrics on {args.metrics_items} test features, seconds per call: "
          + ", ".join(f"{name} {seconds:.3f}" for name, seconds in metrics_seconds.items()))
    result = {"machine": info, "config": {key: getattr(args, key) for key in (
        "dataset_dir", "max_train_samples", "max_test_samples", "epochs", "device", "threads",
        "seed")},
        "matmul_peak_gflops": peak, "train_step_flops_per_image": flops_per_image,
        "step_probe_images_per_s": {run_name(s): value for s, value in probe.items()},
        "metrics_seconds_per_call": {"items": args.metrics_items, **metrics_seconds},
        "runs": rows, "raw": {run_name(s): run for s, run in runs.items()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
