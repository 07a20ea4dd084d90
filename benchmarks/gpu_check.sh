#!/usr/bin/env bash
# The GPU check (issue 23), for the first machine with CUDA: from a clean checkout with the
# real MNIST in ../shared/mnist, it installs the requirements, runs the speed benchmark,
# times 100 epochs of the article's recipe with its per-epoch files (checkpoint and PNG) in
# float32 and with --amp, tries --compile, and writes every figure to one small JSON file,
# OUT/gpu_check.json. Each training run is cut at --run_limit_s (its figures then say how
# many epochs it did), so the whole check stays within 10 minutes on an H200.
#
#   benchmarks/gpu_check.sh                           # on the GPU machine
#   benchmarks/gpu_check.sh --device cpu --max_train_samples 256 --max_test_samples 64 \
#       --epochs 2 --no_install --benchmark_args "--epochs 2 --probe_rounds 1"   # dry run
#
# Options (default):
#   --device cuda|cpu         where everything runs (cuda)
#   --dataset_dir DIR         MNIST with MNIST/raw/ (../shared/mnist)
#   --out DIR                 the runs' folders and gpu_check.json (outputs/gpu_check)
#   --epochs N                epochs of each timed run (100, the article's)
#   --max_train_samples N     first N training images (all)
#   --max_test_samples N      first N test images (all)
#   --run_limit_s S           cut each timed run after S seconds (130)
#   --compile_epochs N        epochs of the --compile trial; 0: none (10 on cuda, 0 on cpu,
#                             where compiling takes about 90 s and gained 1%)
#   --benchmark_args "..."    more arguments of benchmark_speed.py ("--epochs 3")
#   --no_install              use the installed packages (a machine without the registry)
# $PYTHON, if set, is the Python that runs everything (python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

device=cuda dataset_dir=../shared/mnist out=outputs/gpu_check epochs=100 run_limit_s=130
compile_epochs= benchmark_args="--epochs 3" install=1 subset=()
while (($#)); do
    case $1 in
        --device) device=$2; shift 2 ;;
        --dataset_dir) dataset_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --max_train_samples|--max_test_samples) subset+=("$1" "$2"); shift 2 ;;
        --run_limit_s) run_limit_s=$2; shift 2 ;;
        --compile_epochs) compile_epochs=$2; shift 2 ;;
        --benchmark_args) benchmark_args=$2; shift 2 ;;
        --no_install) install=0; shift ;;
        *) echo "gpu_check.sh: unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done
[[ -n $compile_epochs ]] || compile_epochs=$([[ $device == cuda ]] && echo 10 || echo 0)
mkdir -p "$out"
log=$out/gpu_check.log
: >"$log"
say() { echo "gpu_check: $*" | tee -a "$log"; }

install_status=skipped
if ((install)); then
    # A machine that cannot reach the registry goes on with what it has; the JSON says so.
    if "$python" -m pip install -q --retries 1 --timeout 10 -r requirements.txt >>"$log" 2>&1; then
        install_status=installed
    else
        install_status="failed: the installed packages were used"
    fi
fi
say "install: $install_status"
"$python" -c "import torch; print('gpu_check: torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$log"
if [[ $device == cuda ]] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
fi

say "benchmark: benchmark_speed.py --device $device --settings article,project,amp $benchmark_args"
# shellcheck disable=SC2086  # benchmark_args is a list of arguments
"$python" benchmarks/benchmark_speed.py --device "$device" --dataset_dir "$dataset_dir" \
    --settings article,project,amp --json "$out/benchmark_speed.json" ${subset[@]+"${subset[@]}"} \
    $benchmark_args 2>&1 | tee -a "$log"

bf16=$("$python" -c "import sys; sys.path.insert(0, '.'); import torch
from run_machinery.devices import bf16_supported; print(int(bf16_supported(torch.device('$device'))))")
timed_run() {  # name, epochs, flags...: one training run, cut at run_limit_s; its wall time
    local name=$1 run_epochs=$2 start_ns status=0
    shift 2
    say "run $name: $run_epochs epochs $*"
    start_ns=$(date +%s%N)
    timeout --signal=TERM "$run_limit_s" "$python" train_mnist_original_center.py \
        --dataset_dir "$dataset_dir" --device "$device" --epochs "$run_epochs" \
        --out_dir "$out/$name" --overwrite ${subset[@]+"${subset[@]}"} "$@" \
        >>"$log" 2>&1 || status=$?
    # 124: cut by the limit (the trainer saved its state at SIGTERM); anything else is a failure.
    if ((status != 0 && status != 124)); then
        say "run $name failed with status $status; the end of its output:"
        tail -20 "$log" >&2
        exit 1
    fi
    echo "$name $(($(date +%s%N) - start_ns)) $status" >>"$out/wall_ns.txt"
}
: >"$out/wall_ns.txt"
timed_run float32 "$epochs"
if ((bf16)); then timed_run amp "$epochs" --amp; fi
if ((compile_epochs > 0)); then timed_run compile "$compile_epochs" --compile; fi

"$python" - "$out" "$device" "$install_status" "$epochs" <<'PYTHON' | tee -a "$log"
"""Gather the figures into OUT/gpu_check.json: the benchmark's rows and peaks, and per
timed run its epochs done, wall time, seconds per epoch and final accuracy."""
import csv
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, ".")
from run_machinery.devices import cpu_kind  # noqa: E402

out, device, install, epochs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
benchmark = json.loads((out / "benchmark_speed.json").read_text())
result = {
    "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
    "torch": torch.__version__, "cpu": cpu_kind(), "install": install,
    "benchmark": {
        "images": [benchmark["config"]["max_train_samples"],
                   benchmark["config"]["max_test_samples"]],
        "flops": benchmark["flops"],
        "convolution_peak_gflops": {dtype: {key: peak[key] for key in ("forward", "train")}
                                    for dtype, peak in
                                    benchmark["convolution_peak_gflops"].items()},
        "matmul_peak_gflops": benchmark["matmul_peak_gflops"],
        "runs": {row["run"]: {key: row.get(key) for key in (
            "epoch_s", "ratio_to_article", "train_gflops", "fraction_of_floor", "floor_s")}
            for row in benchmark["runs"]}},
    "runs": {},
}
for line in (out / "wall_ns.txt").read_text().splitlines():
    name, wall_ns, status = line.split()
    wall_s = int(wall_ns) / 1e9
    history = out / name / "history.csv"
    if not history.is_file():  # cut by the limit before its first epoch ended
        result["runs"][name] = {"epochs_done": 0, "cut_by_limit": True, "wall_s": wall_s,
                                "final_test_acc": None}
        continue
    with open(history, newline="") as file:
        rows = list(csv.DictReader(file))
    # Train + test + metrics per epoch, as history.csv times them (the files come on top);
    # the first epoch apart (start-up, compiling).
    later = [float(row["seconds"]) for row in rows[1:]] or [float(rows[0]["seconds"])]
    result["runs"][name] = {
        "epochs_done": len(rows), "cut_by_limit": status != "0", "wall_s": wall_s,
        "wall_s_per_epoch": wall_s / len(rows),
        "first_epoch_s": float(rows[0]["seconds"]),
        "later_epochs_mean_s": sum(later) / len(later),
        f"projected_{epochs}_epochs_s": wall_s / len(rows) * epochs,
        "final_test_acc": float(rows[-1]["test_acc"]),
    }
for name, run in result["runs"].items():  # amp's and compile's gain per epoch, if any
    if name != "float32" and run["epochs_done"] and result["runs"]["float32"]["epochs_done"]:
        run["speedup_vs_float32"] = (result["runs"]["float32"]["later_epochs_mean_s"]
                                     / run["later_epochs_mean_s"])
article = result["benchmark"]["runs"].get("article", {}).get("epoch_s")
project = result["benchmark"]["runs"].get("project", {}).get("epoch_s")
if article and project:
    result["project_speedup_vs_article"] = article / project
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({name: {key: run[key] for key in ("epochs_done", "wall_s", "final_test_acc")}
                  for name, run in result["runs"].items()}))
print(f"gpu_check: written to {out / 'gpu_check.json'}")
PYTHON
