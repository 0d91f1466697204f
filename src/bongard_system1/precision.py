"""Mixed precision: which dtype autocast uses on a device, for training and for inference.

CUDA: bf16 where the GPU supports it, else fp16 (training then scales the loss). CPU: bf16 on CPUs
that multiply bf16 in hardware, read from ``/proc/cpuinfo``: Intel AMX (``amx_bf16``) or AVX-512
BF16 (``avx512_bf16``: Intel Cooper Lake and later, AMD Zen 4 and later); other CPUs run in fp32,
where bf16 is emulated and not expected to pay (not measured). Measured on this project's 2-core
CPUs, ResNet-18 FCOS training at 416 px against fp32: 2.5x faster with AMX (Intel), 2.0x with
AVX-512 BF16 alone (AMD EPYC); inference (four views at 480 px, everything ``detect`` does) 3.0x
faster with AMX and 1.7x with AVX-512 BF16, with the same real-set AP (see the README).

Training on the CPU falls back to fp32 at 64 px or less (:func:`training_autocast_dtype`): there a
oneDNN bf16 kernel returns garbage weight gradients for FCOS's last FPN convolution.
"""

from __future__ import annotations

from functools import lru_cache

# /proc/cpuinfo flags of instructions that multiply bf16 in hardware, in order of preference.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def bf16_flag_in(cpuinfo: str) -> str | None:
    """The first of :data:`BF16_CPU_FLAGS` on the first ``flags`` line of a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return next((f for f in BF16_CPU_FLAGS if f in flags), None)
    return None


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX-512 BF16), where bf16 autocast pays."""
    try:
        with open("/proc/cpuinfo") as f:
            return bf16_flag_in(f.read()) is not None
    except OSError:
        return False


def autocast_dtype(device: str):
    """The dtype autocast should use on ``device`` ("cpu" or "cuda"), or None for plain fp32."""
    import torch
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


# Training images of this size or less train in fp32 on the CPU. With torch 2.14.1 (measured on AMD
# EPYC Zen 4 and Zen 5, one thread or two), the bf16 backward of a 3x3 stride-2 convolution whose
# input is 1x1 leaves the weight gradient's eight taps that see only padding unwritten: they hold
# whatever was in memory, different from run to run, sometimes NaN (fp32 writes their zeros).
# FCOS's P7 convolution gets a 1x1 input (P6) when the image is 64 px or less; from 65 px P6 is 2x2.
BF16_TRAIN_MAX_BROKEN_SIZE = 64


def training_autocast_dtype(device: str, smallest_size: int):
    """The autocast dtype for training on ``device`` whose smallest image side is ``smallest_size``:
    :func:`autocast_dtype`'s, except fp32 (None) on the CPU at :data:`BF16_TRAIN_MAX_BROKEN_SIZE` px or less."""
    dtype = autocast_dtype(device)
    if device == "cpu" and smallest_size <= BF16_TRAIN_MAX_BROKEN_SIZE:
        return None
    return dtype


def autocast(device: str, dtype):
    """An autocast context for ``device`` with ``dtype``, disabled when ``dtype`` is None."""
    import torch
    return torch.autocast(device_type=device, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
