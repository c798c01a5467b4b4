"""Device profiles: the memory and dense peak throughput the resource model plans for, by name.

`search.resources.device_profile` or `--device-profile` picks one; without either, a space
that asks for GPUs plans for an `h100` and one that does not for `cpu`. Peaks are the vendors'
dense (not sparse) bf16 tensor figures for the SXM parts; `fp32` is the plain FP32 peak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from search_space.registry import Registry

GB = 1e9  # memory in decimal gigabytes, as vendors and `est_mem_gb` state it


@dataclass(frozen=True)
class DeviceProfile:
    memory_gb: float        # accelerator memory (host RAM for `cpu`)
    peak_bf16_tflops: float  # dense bf16 peak, TFLOP/s
    peak_fp32_tflops: float  # dense fp32 peak, TFLOP/s
    cuda: bool = True        # bf16 autocast and fused attention kernels apply

    def peak_tflops(self, precision: str) -> float:
        return self.peak_bf16_tflops if precision == "bf16" else self.peak_fp32_tflops


def _host_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return 16.0


DEVICE_PROFILES: Registry[DeviceProfile] = Registry("device profile")
for _name, _profile, _desc in [
    ("h100", DeviceProfile(80, 989, 67), "NVIDIA H100 SXM 80 GB: 989 TFLOP/s dense bf16"),
    ("h200", DeviceProfile(141, 989, 67), "NVIDIA H200 SXM 141 GB: 989 TFLOP/s dense bf16"),
    ("a100-80g", DeviceProfile(80, 312, 19.5), "NVIDIA A100 SXM 80 GB: 312 TFLOP/s dense bf16"),
    ("a100-40g", DeviceProfile(40, 312, 19.5), "NVIDIA A100 SXM 40 GB: 312 TFLOP/s dense bf16"),
    ("l40s", DeviceProfile(48, 362, 91.6), "NVIDIA L40S 48 GB: 362 TFLOP/s dense bf16"),
    ("cpu", DeviceProfile(round(_host_memory_gb(), 1), 1.0, 1.0, cuda=False),
     "this machine's CPU: its RAM, a nominal 1 TFLOP/s"),
]:
    DEVICE_PROFILES.register(_name, _profile, _desc)


def default_profile(gpus: float) -> str:
    """The profile a space plans for when it names none."""
    return "h100" if gpus > 0 else "cpu"
