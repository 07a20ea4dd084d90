from pathlib import Path

import pytest
import torch

from mnist_net import Net

from run_machinery.devices import SPEED_FLAGS, bf16_supported, cpu_kind, pick_device, speed_setup
from run_machinery.errors import UserError


def test_auto_takes_the_current_accelerator_or_the_cpu():
    expected = (torch.accelerator.current_accelerator() if torch.accelerator.is_available()
                else torch.device("cpu"))
    assert pick_device("auto").type == expected.type


@pytest.mark.parametrize("name", ["cpu", "CPU".lower()])
def test_cpu_by_name(name):
    assert pick_device(name) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_an_absent_device_is_one_line(name):
    with pytest.raises(UserError,
                       match=f"--device {name} was asked for, but this machine has no cuda device"):
        pick_device(name)


def test_an_unknown_device_name():
    with pytest.raises(UserError, match="no device name PyTorch knows"):
        pick_device("gpu0")


def test_bf16_on_the_cpu_follows_onednn():
    assert bf16_supported(torch.device("cpu")) == (
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_cpu_kind_names_the_model_its_speed_flags_and_the_threads(monkeypatch):
    kind = cpu_kind()
    assert kind["model"] and kind["capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(kind["flags"]) <= set(SPEED_FLAGS) and kind["threads"] == torch.get_num_threads()
    if Path("/proc/cpuinfo").is_file():
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
        assert kind["flags"] == [flag for flag in SPEED_FLAGS if flag in flags]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    assert cpu_kind()["threads"] == 7


def test_cuda_setup_turns_on_autotuning_and_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    before = torch.backends.cuda.matmul.fp32_precision
    try:
        speed_setup(Net(), torch.device("cuda"))
        assert torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = before


def test_channels_last_setup_keeps_the_weights():
    model = Net()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    # no torchrun, no compile
    assert speed_setup(model, torch.device("cpu"), channels_last=True) is model
    assert model.conv2_1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_compiled_setup_steps_through_a_compiled_model_sharing_the_weights():
    model = Net()
    step_model = speed_setup(model, torch.device("cpu"), compiled=True)
    assert isinstance(step_model, torch._dynamo.eval_frame.OptimizedModule)
    assert step_model._orig_mod is model  # checkpoints take the plain model's weights
