"""Which device a study runs on (``device`` parameter: ``auto``, ``cpu``, ``cuda``) and its mixed precision."""

from __future__ import annotations

import contextlib

from labkit.core.errors import ParameterError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(name: str = "auto", announce: bool = True):
    """A ``torch.device`` for ``name``. ``auto`` takes the GPU when there is one and says so when there is not;
    ``cuda`` without a GPU is an error (never a silent fallback)."""
    import torch

    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise ParameterError(f"parameter 'device' must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
            if announce:
                print(f"device auto: using GPU {torch.cuda.get_device_name(0)}")
            return device
        if announce:
            print("device auto: no CUDA GPU found, running on the CPU")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError(
                f"parameter 'device' is {name!r} but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                "use device='auto' or 'cpu'"
            )
        return torch.device(name)
    return torch.device("cpu")


def autocast(device, precision: str = "fp32"):
    """A mixed-precision context on CUDA (``bf16`` or ``fp16``); a no-op for ``fp32`` and on the CPU
    (bf16 autocast is about 7x slower on this kind of CPU)."""
    import torch

    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device, precision: str = "fp32"):
    """A GradScaler for fp16 on CUDA, else None (bf16 and fp32 need none)."""
    import torch

    if precision == "fp16" and torch.device(device).type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
