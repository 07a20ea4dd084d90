"""Where to run, and the speed settings that go with the device.

Devices are named as PyTorch names them (`cpu`, `cuda`, `cuda:1`, `mps`, `xpu`); `auto`
takes the current accelerator through `torch.accelerator`, or the CPU.
"""
import platform
from pathlib import Path

import torch

from . import distributed
from .errors import UserError


def pick_device(name):
    """The `torch.device` for `name`; `UserError` when the machine has no such device."""
    if name == "auto":
        return torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is no device name PyTorch knows (examples: auto, cpu, "
                        f"cuda, cuda:1, mps, xpu)") from None
    if device.type == "cpu":
        return device
    module = getattr(torch, device.type, None)
    count = module.device_count() if module is not None and module.is_available() else 0
    if count == 0:
        raise UserError(f"--device {name} was asked for, but this machine has no {device.type} "
                        f"device (use --device cpu or --device auto)")
    if device.index is not None and device.index >= count:
        raise UserError(f"--device {name} was asked for, but this machine has {count} "
                        f"{device.type} device(s), numbered from 0")
    return device


def bf16_supported(device):
    """Whether bfloat16 runs natively (fast) on `device`; emulated bf16 would be slower than
    fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    try:  # another accelerator: bf16 runs there if a bf16 product does
        torch.ones(2, 2, dtype=torch.bfloat16, device=device).matmul(
            torch.ones(2, 2, dtype=torch.bfloat16, device=device))
    except RuntimeError:
        return False
    return True


# The CPU's extensions that decide its speed here: AVX2 (and FMA) for float32 everywhere,
# AVX-512 for wider float32, AVX512-BF16 and AMX for native bfloat16 (--amp).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_kind():
    """The CPU that a speed figure was measured on: its model name, which of SPEED_FLAGS
    it has (from /proc/cpuinfo; elsewhere none are listed), the vector code PyTorch runs
    on it, and PyTorch's thread count."""
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().split("\n\n")[0]
                      .splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        model, flags = fields.get("model name", model), set(fields.get("flags", "").split())
    return {"model": model, "flags": [flag for flag in SPEED_FLAGS if flag in flags],
            "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def speed_setup(model, device, channels_last=False, compiled=False):
    """Apply the speed settings to `model` (in place) and to the backends; returns the model
    that the training steps go through: under torchrun DDP around `model`, torch.compiled
    when `compiled` (checkpoints take the plain model's weights)."""
    if device.type == "cuda":
        # Inputs have a fixed shape, so cuDNN's autotuning pays off after the first batch.
        torch.backends.cudnn.benchmark = True
        # TF32 for the float32 matrix multiplies (cuDNN's convolutions use it by default).
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    if channels_last:
        # Only the weights: a 1-channel image has the same layout in both formats, and the
        # convolutions follow the weights' format from the first layer on.
        model.to(memory_format=torch.channels_last)
    step_model = distributed.wrap(model)
    return torch.compile(step_model) if compiled else step_model
