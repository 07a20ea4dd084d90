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

Each phase's FLOP rate (FLOPs counted by FlopCounterMode on the trainer's own train()
and test()) is set against this machine's convolution peak: the network's six
convolutions timed alone at batch 128 in the trainer's memory format and dtype (bfloat16
autocast for --amp), forward + backward for the training steps, forward for the test
pass. The epoch's floor is its time at that peak; the matrix-multiply peak is printed
as a reference. --profile_steps prints torch.profiler's top operators. A step probe
times the project's train step alone for each setting, the settings taking turns step
by step, for speed-ups that a changing load blurs less than whole epochs.

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

from margin_heads import Head  # noqa: E402
from mnist_loader import TensorLoader  # noqa: E402
from mnist_net import Net  # noqa: E402

import article_pipeline as article  # noqa: E402  (after the path is set)
import train_mnist_original_center as trainer  # noqa: E402
from run_machinery.datasets import read_split  # noqa: E402
from run_machinery.devices import SPEED_FLAGS, bf16_supported, cpu_kind, speed_setup  # noqa: E402
from run_machinery.metrics import reid_metrics, retrieval_metrics  # noqa: E402
from run_machinery.run_folder import RunPaths  # noqa: E402
from run_machinery.training_extras import TrainingExtras  # noqa: E402

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
    parser.add_argument("--peak_repeats", type=int, default=5,
                        help="timed repeats of each operation of the peaks (the best counts)")
    parser.add_argument("--profile_steps", type=int, default=0,
                        help="print torch.profiler's top operators of this many training steps "
                             "and a test pass of as many batches, per project setting; 0: none")
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
    """The article's pipeline, one epoch per turn. Returns (epochs, training images, test
    images)."""
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
    return epochs, len(loaders[0].dataset), len(loaders[1].dataset)


def run_project(args, out_dir, setting):
    """The trainer's own main(), one epoch per turn: epoch k is `main()` with --epochs k,
    resuming the run in `out_dir` after the first. Returns (epochs, training images, test
    images)."""
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
    return (epochs, read_split(args.dataset_dir, True, max_train)[1].numel(),
            read_split(args.dataset_dir, False, max_test)[1].numel())


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
            epochs, num_train, num_test = run_article(args, out_dir)
        else:
            epochs, num_train, num_test = run_project(args, out_dir, args.worker)
    print(json.dumps({"epochs": epochs, "train_images": num_train, "test_images": num_test,
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


def matmul_peak_gflops(dtype, device, repeats):
    """The machine's practical matrix-multiply peak, a reference beside the convolution
    peak: the best rate of a 2048-square torch.mm and of a 1x1 convolution, the same
    product through oneDNN or cuDNN (on an AMD CPU, MKL's float32 torch.mm reaches about
    half of what oneDNN does)."""
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
            seconds = timed(product, device)
            if attempt:
                rates.append(flops / seconds / 1e9)
    return max(rates)


def timed(function, device):
    """Seconds that `function()` takes, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def counted_flops(function):
    """The FLOPs of `function()`, counted by PyTorch's FlopCounterMode (its convolutions and
    matrix products; the elementwise operations count 0)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def project_parts(args, setting, device):
    """What the trainer builds for a project setting: (its settings, model, center loss,
    NLL loss, optimisers), the model set up for speed as the trainer sets it up."""
    options = trainer.parse_args(trainer_argv(args, REPO_DIR / "outputs", project_flags(setting)))
    torch.manual_seed(args.seed)
    model, center_loss, nll_loss, optimizers, _ = article.build(options, device)  # same recipe
    speed_setup(model, device, channels_last=options.channels_last)
    return options, model, center_loss, nll_loss, optimizers


def project_step(parts, loader):
    """The trainer's train() for one epoch of `loader` with the `parts` of project_parts()."""
    options, model, center_loss, nll_loss, (net_optimizer, center_optimizer) = parts
    trainer.train(model, loader, nll_loss, center_loss, net_optimizer, center_optimizer, 1,
                  TrainingExtras(Head("softmax"), options.loss_weight, amp=options.amp))


def project_test(parts, loader):
    """The trainer's test() on `loader` with the `parts` of project_parts()."""
    options, model, center_loss, nll_loss, _ = parts
    trainer.test(model, loader, nll_loss, center_loss,
                 TrainingExtras(Head("softmax"), options.loss_weight, amp=options.amp))


def random_loader(batch_size, num_images, device):
    """A TensorLoader of `num_images` random images, ten classes, in batches of `batch_size`."""
    return TensorLoader(torch.randn(num_images, 1, 28, 28, device=device),
                        torch.arange(num_images, device=device) % 10, batch_size)


def phase_flops(args, device, batch_size):
    """FLOPs of the trainer's training step (forward, losses, backward) on one batch of
    `batch_size` images, and of its test pass on as many, counted on its own train() and
    test(): {"train_step": ..., "test_pass": ...}."""
    parts = project_parts(args, "project", device)
    loader = random_loader(batch_size, batch_size, device)
    return {"train_step": counted_flops(lambda: project_step(parts, loader)),
            "test_pass": counted_flops(lambda: project_test(parts, loader))}


def network_convolutions(batch_size):
    """The network's convolutions, each with the shape of its input for a batch of
    `batch_size` images: [(name, Conv2d, input shape)], in the order of the forward pass."""
    model, shapes = Net(), {}
    convolutions = [(name, module) for name, module in model.named_children()
                    if isinstance(module, torch.nn.Conv2d)]
    hooks = [module.register_forward_pre_hook(
        lambda module, inputs, name=name: shapes.__setitem__(name, inputs[0].shape))
        for name, module in convolutions]
    with torch.no_grad():
        model(torch.zeros(batch_size, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return [(name, module, shapes[name]) for name, module in convolutions]


def convolution_peak(device, amp, channels_last, repeats, batch_size=128):
    """This machine's rate for the network's own convolutions, the floor of its work: each
    of the six alone, at its input's shape for a batch of `batch_size`, in the trainer's
    memory format and dtype (bfloat16 autocast for `amp`), timed forward and backward (the
    best of `repeats`; the images need no input gradient) and its FLOPs counted.
    Returns {"forward": GFLOP/s, "train": GFLOP/s of forward + backward, "layers": ...}."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    layers, totals = {}, {"forward": [0, 0.0], "backward": [0, 0.0]}  # [FLOPs, seconds]
    for name, convolution, shape in network_convolutions(batch_size):
        convolution = convolution.to(device, memory_format=memory_format)
        inputs = torch.randn(shape, device=device).to(memory_format=memory_format)
        inputs.requires_grad_(name != "conv1_1")

        def forward():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                return convolution(inputs)

        gradient = torch.ones_like(forward())

        def backward_of_a_forward():
            """The backward pass of a fresh forward pass (not timed), to be called."""
            convolution.zero_grad(set_to_none=True)
            outputs = forward()
            return lambda: outputs.backward(gradient)

        seconds = {"forward": [], "backward": []}
        for attempt in range(repeats + 1):  # the first is a warm-up
            forward_s, backward_s = timed(forward, device), timed(backward_of_a_forward(), device)
            if attempt:
                seconds["forward"].append(forward_s)
                seconds["backward"].append(backward_s)
        flops = {"forward": counted_flops(forward),
                 "backward": counted_flops(backward_of_a_forward())}
        layers[name] = {"input": list(shape)}
        for direction in totals:
            best = min(seconds[direction])
            totals[direction][0] += flops[direction]
            totals[direction][1] += best
            layers[name][f"{direction}_gflops"] = flops[direction] / best / 1e9
    (forward_flops, forward_s), (backward_flops, backward_s) = totals.values()
    return {"forward": forward_flops / forward_s / 1e9,
            "train": (forward_flops + backward_flops) / (forward_s + backward_s) / 1e9,
            "layers": layers}


def step_probe(args, settings, device, batch_size=128):
    """Train-step images per second of each project setting (compiling aside), the settings
    taking one step each in turn, `--probe_rounds` times; the median step counts. Each step
    is the trainer's `train()` on a one-batch loader."""
    batch = random_loader(batch_size, batch_size, device)
    steps = {setting: project_parts(args, setting, device) for setting in settings}
    seconds = {setting: [] for setting in steps}
    for _ in range(args.probe_rounds + 1):  # the first round warms up
        for setting, parts in steps.items():
            seconds[setting].append(timed(lambda: project_step(parts, batch), device))
    return {setting: batch_size / statistics.median(times[1:])
            for setting, times in seconds.items()}


def profile_tables(args, settings, device, rows=15, batch_size=128):
    """torch.profiler's top operators (by their own time) in `--profile_steps` training
    steps and a test pass of as many batches, per project setting: {setting: (train
    table, test table)}."""
    from torch.profiler import ProfilerActivity, profile  # only here: the profiler is slow to load
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    loader = random_loader(batch_size, batch_size * args.profile_steps, device)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    tables = {}
    for setting in settings:
        parts = project_parts(args, setting, device)
        project_step(parts, loader)  # warm-up
        tables[setting] = []
        for phase in (project_step, project_test):
            with profile(activities=activities) as profiler:
                phase(parts, loader)
            tables[setting].append(profiler.key_averages().table(sort_by=sort_by, row_limit=rows))
    return tables


def dtype_of(setting):
    return "bfloat16" if "amp" in setting else "float32"


def summarize(setting, run, flops, conv_peaks, baselines):
    """One row of the table: the mean of the epochs after the first (or the only one), with
    each phase's FLOP rate against this machine's convolution peak in the run's dtype (the
    training steps against the forward + backward rate, the test pass against the forward
    one). The floor is the epoch's time at those peaks."""
    epochs = run["epochs"]
    steady = epochs[1:] or epochs
    parts = {part: sum(e["parts"][part] for e in steady) / len(steady) for part in PARTS}
    epoch_s = sum(e["seconds"] for e in steady) / len(steady)
    images, test_images = run["train_images"], run["test_images"]
    train_flop = flops["train_step_per_image"] * images
    test_flop = flops["test_pass_per_image"] * test_images
    peak = conv_peaks[dtype_of(setting)]
    floor_s = train_flop / (peak["train"] * 1e9) + test_flop / (peak["forward"] * 1e9)
    row = {
        "run": run_name(setting), "dtype": dtype_of(setting), "epoch_s": epoch_s,
        "parts_s": parts,
        "outside_network_fraction": sum(parts[p] for p in OUTSIDE_NETWORK) / epoch_s,
        "images_per_s": images / epoch_s, "train_step_images_per_s": images / parts["train"],
        "epoch_gflop": (train_flop + test_flop) / 1e9,
        "train_gflops": train_flop / parts["train"] / 1e9,
        "train_fraction_of_conv_peak": train_flop / parts["train"] / 1e9 / peak["train"],
        "eval_gflops": test_flop / parts["eval"] / 1e9,
        "eval_fraction_of_conv_peak": test_flop / parts["eval"] / 1e9 / peak["forward"],
        "epoch_gflops": (train_flop + test_flop) / epoch_s / 1e9,
        "floor_s": floor_s, "fraction_of_floor": floor_s / epoch_s,
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


def print_tables(rows, probe, flops, conv_peaks):
    print(f"{'run':<28}{'epoch s':>8}{'train':>8}{'eval':>7}{'metric':>7}{'files':>7}{'other':>6}"
          f"{'out%':>6}{'img/s':>6}{'MiB':>6}{'/art':>6}")
    for row in rows:
        p = row["parts_s"]
        print(f"{row['run']:<28}{row['epoch_s']:>8.2f}{p['train']:>8.2f}{p['eval']:>7.2f}"
              f"{p['metrics']:>7.2f}"
              f"{p['files']:>7.2f}{p['other']:>6.2f}{100 * row['outside_network_fraction']:>6.1f}"
              f"{row['images_per_s']:>6.0f}"
              f"{row['peak_rss_mb']:>6.0f}{row.get('ratio_to_article', float('nan')):>6.2f}")
    for row in rows:
        if "compile_s" in row:
            print(f"{row['run']}: first epoch {row['first_epoch_s']:.1f} s, of which compiling "
                  f"about {row['compile_s']:.1f} s")
    print("\nagainst this machine's convolution peak (GFLOP/s and % of it; metrics and files "
          "do no network FLOPs):")
    print(f"{'run':<28}{'dtype':>9}{'train':>8}{'%':>5}{'eval':>8}{'%':>5}{'m+f s':>7}"
          f"{'epoch':>8}{'GFLOP':>8}{'floor s':>8}{'%floor':>7}")
    for row in rows:
        print(f"{row['run']:<28}{row['dtype']:>9}{row['train_gflops']:>8.0f}"
              f"{100 * row['train_fraction_of_conv_peak']:>5.0f}{row['eval_gflops']:>8.0f}"
              f"{100 * row['eval_fraction_of_conv_peak']:>5.0f}"
              f"{row['parts_s']['metrics'] + row['parts_s']['files']:>7.2f}"
              f"{row['epoch_gflops']:>8.0f}{row['epoch_gflop']:>8.0f}{row['floor_s']:>8.2f}"
              f"{100 * row['fraction_of_floor']:>7.0f}")
    for row in rows:
        print(f"{row['run']}: the epoch at {100 * row['fraction_of_floor']:.0f}% of this "
              f"machine's convolution peak ({row['dtype']}), "
              f"{row['epoch_s'] / row['floor_s']:.2f}x its floor")
    if probe:
        print(f"\nstep probe (train step alone, settings taking turns): "
              f"{'img/s':>7}{'GFLOP/s':>9}{'%conv':>7}{'speed-up':>10}")
        for setting, images_per_s in probe.items():
            rate = images_per_s * flops["train_step_per_image"] / 1e9
            peak = conv_peaks[dtype_of(setting)]["train"]
            speedup = images_per_s / probe["project"] if "project" in probe else float("nan")
            print(f"{run_name(setting):<53}{images_per_s:>7.0f}{rate:>9.1f}"
                  f"{100 * rate / peak:>7.0f}{speedup:>10.2f}")


def machine_info(device):
    info = {"cpu": cpu_kind(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
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
    dtypes = ["float32"] + (["bfloat16"] if info["bf16_supported"] else [])
    matmul_peaks = {dtype: matmul_peak_gflops(getattr(torch, dtype), device, args.peak_repeats)
                    for dtype in dtypes}
    channels_last = trainer.parse_args([]).channels_last  # the trainer's default memory format
    conv_peaks = {dtype: convolution_peak(device, dtype == "bfloat16", channels_last,
                                          args.peak_repeats) for dtype in dtypes}
    per_image, per_batch = phase_flops(args, device, 1), phase_flops(args, device, 128)
    flops = {"train_step_per_image": per_image["train_step"],
             "test_pass_per_image": per_image["test_pass"],
             "train_step_batch_128": per_batch["train_step"],
             "test_pass_batch_128": per_batch["test_pass"]}
    metrics_seconds = metrics_call_seconds(device, args.metrics_items)
    probe_settings = [s for s in settings if s != "article" and "compile" not in s]
    probe = step_probe(args, probe_settings, device) if args.probe_rounds and probe_settings else {}
    profiles = (profile_tables(args, probe_settings, device) if args.profile_steps else {})
    runs = run_in_turns(args, settings)
    if args.full_mnist_epoch:
        runs.update(run_in_turns(args, ["full"]))
    info["load_average_end"] = os.getloadavg()

    baselines = {}
    rows = []
    for setting, run in runs.items():
        rows.append(summarize(setting, run, flops, conv_peaks, baselines))
        if setting in ("article", "project"):
            baselines[setting] = rows[-1]["epoch_s"]
    cpu = info["cpu"]
    print(f"\n{cpu['model']} ({', '.join(cpu['flags']) or 'none of ' + ', '.join(SPEED_FLAGS)}; "
          f"PyTorch's {cpu['capability']} code), {info['cpu_count']} cores, {cpu['threads']} "
          f"threads, torch {info['torch']}"
          + (f", {info['gpu']}" if "gpu" in info else "")
          + f", load average {info['load_average_start'][0]:.1f} -> "
            f"{info['load_average_end'][0]:.1f}")
    print(f"FLOPs (FlopCounterMode): train step {flops['train_step_per_image'] / 1e6:.1f} MFLOP "
          f"per image, test pass {flops['test_pass_per_image'] / 1e6:.1f} MFLOP per image")
    for dtype in dtypes:
        print(f"{dtype}: the network's convolutions at batch 128 "
              f"({'channels-last' if channels_last else 'contiguous'}) reach "
              f"{conv_peaks[dtype]['train']:.0f} GFLOP/s forward + backward, "
              f"{conv_peaks[dtype]['forward']:.0f} forward (the convolution peak); matmul "
              f"reference {matmul_peaks[dtype]:.0f} GFLOP/s")
    print(f"{args.max_train_samples} training and {args.max_test_samples} test images (all of "
          "MNIST: 60000 and 10000), the runs taking turns epoch by epoch; seconds per epoch, the "
          "mean of the epochs after the first; train = the training steps with their data loading "
          "(for both pipelines), eval = the test pass, files = checkpoint + plots (+ the project's "
          "history and training state), other = the article's rest of the epoch (0 for the "
          "project, whose epoch is its four timed parts); out% = metrics + files; /art = epoch vs "
          "the article's\n")
    print_tables(rows, probe, flops, conv_peaks)
    print(f"\nmetrics on {args.metrics_items} test features, seconds per call: "
          + ", ".join(f"{name} {seconds:.3f}" for name, seconds in metrics_seconds.items()))
    for setting, (train_table, test_table) in profiles.items():
        print(f"\n{run_name(setting)}: top operators of {args.profile_steps} training steps\n"
              f"{train_table}\n{run_name(setting)}: top operators of the test pass of as many "
              f"batches\n{test_table}")
    result = {"machine": info, "config": {key: getattr(args, key) for key in (
        "dataset_dir", "max_train_samples", "max_test_samples", "epochs", "device", "threads",
        "seed")},
        "flops": flops, "matmul_peak_gflops": matmul_peaks,
        "convolution_peak_gflops": conv_peaks, "convolution_memory_format":
            "channels_last" if channels_last else "contiguous",
        "step_probe_images_per_s": {run_name(s): value for s, value in probe.items()},
        "metrics_seconds_per_call": {"items": args.metrics_items, **metrics_seconds},
        "runs": rows, "raw": {run_name(s): run for s, run in runs.items()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
