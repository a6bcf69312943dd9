"""Device and numeric precision choices, shared by training and inference."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = full fp32

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.dtype]

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def _cpu_has_fast_bf16() -> bool:
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((is_supported and is_supported()) or (amx and amx()))


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """CUDA when present; bf16 autocast where the hardware runs it fast (AMX/AVX512-BF16 CPUs, Ampere+ GPUs)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if _cpu_has_fast_bf16() else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
    if dtype is torch.float16 and dev.type != "cuda":
        dtype = torch.bfloat16  # fp16 autocast on CPU is slow and unstable; bf16 is the CPU half type
    return Runtime(dev, dtype)
