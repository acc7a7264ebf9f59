"""GPU specifications for `batchsim estimate`: dense bf16 tensor TFLOPS, memory bandwidth
and memory size, each figure with its source.

Dense, not sparse: vendor sheets headline the 2:4-sparsity figure (twice the dense
one), and some reprints drop the footnote. GeForce cards run bf16 with FP32
accumulation (what torch uses) at half their FP16-accumulate rate; that is the figure
here. A spec file (YAML or JSON with the keys of GpuSpec) describes other hardware.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sim.errors import InputError


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_dense_tflops: float
    memory_bandwidth_gbs: float  # GB/s (10^9 bytes)
    memory_gb: float  # GB as the vendor states it
    l2_cache_mb: float  # last-level cache: activations smaller than half of it stay there
    source: str
    note: str = ""
    # names as torch.cuda.get_device_name() prints them, to recognise a profile's GPU
    device_names: tuple[str, ...] = ()
    # board power: the most it draws (the vendor's TDP / TGP / module power), with its source;
    # idle: no vendor publishes it, so IDLE_SHARE of the maximum, stated as an assumption
    max_w: float | None = None
    power_source: str = ""
    idle_w_stated: float | None = None  # a spec file's own idle figure (the table has none)

    @property
    def idle_w(self) -> float | None:
        if self.idle_w_stated is not None:
            return self.idle_w_stated
        return None if self.max_w is None else IDLE_SHARE * self.max_w

    @property
    def idle_source(self) -> str:
        return "stated in its spec file" if self.idle_w_stated is not None else IDLE_SOURCE

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("idle_w_stated")
        return {**out, "idle_w": self.idle_w}


# idle board power as a share of the maximum: no vendor datasheet states idle power; data-
# centre GPUs idling at their lowest performance state read of this order in nvidia-smi.
# An assumption, said so wherever it is used: measure it (batchsim profile samples power
# through NVML) or give the scenario's power: {idle_w, busy_w}
IDLE_SHARE = 0.1
IDLE_SOURCE = "assumed: 10% of the maximum (no vendor publishes idle board power)"


GPUS: dict[str, GpuSpec] = {
    spec.name: spec
    for spec in (
        GpuSpec(
            "h100",
            989.4,
            3350,
            80,
            50,
            "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column; L2 from the NVIDIA H100 "
            "Tensor Core GPU architecture whitepaper",
            "1,979 TFLOPS is the with-sparsity figure",
            ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"),
            700,
            "NVIDIA H100 datasheet, H100 SXM: max thermal design power up to 700 W (configurable)",
        ),
        GpuSpec(
            "h200",
            989.4,
            4800,
            141,
            50,
            "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column; L2 as the H100 SXM "
            "(the same GH100 chip)",
            "same compute as the H100 SXM; 1,979 TFLOPS is the with-sparsity figure",
            ("NVIDIA H200",),
            700,
            "NVIDIA H200 datasheet, H200 SXM: max thermal design power up to 700 W (configurable)",
        ),
        GpuSpec(
            "a100",
            312,
            2039,
            80,
            40,
            "NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM column; L2 from the NVIDIA "
            "A100 Tensor Core GPU architecture whitepaper",
            "624 TFLOPS is the with-sparsity figure; the PCIe card has 1,935 GB/s",
            ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"),
            400,
            "NVIDIA A100 datasheet, A100 80GB SXM: max thermal design power 400 W (the PCIe card: 300 W)",
        ),
        GpuSpec(
            "l40s",
            362.05,
            864,
            48,
            96,
            "NVIDIA L40S datasheet; L2 from the Ada Lovelace architecture whitepaper (AD102)",
            "733 TFLOPS is the with-sparsity figure",
            ("NVIDIA L40S",),
            350,
            "NVIDIA L40S datasheet: max power consumption 350 W",
        ),
        GpuSpec(
            "l40",
            181.05,
            864,
            48,
            96,
            "NVIDIA L40 datasheet; L2 from the Ada Lovelace architecture whitepaper (AD102)",
            "362.1 TFLOPS is the with-sparsity figure",
            ("NVIDIA L40",),
            300,
            "NVIDIA L40 datasheet: max power consumption 300 W",
        ),
        GpuSpec(
            "rtx4090",
            165.2,
            1008,
            24,
            72,
            "NVIDIA Ada Lovelace architecture whitepaper (v2.02), appendix table, GeForce "
            "RTX 4090 (72 MB L2)",
            "bf16 with FP32 accumulate; 330.3 is the FP16-accumulate rate and 660.6 / 330.4 "
            "the with-sparsity figures",
            ("NVIDIA GeForce RTX 4090",),
            450,
            "NVIDIA GeForce RTX 4090 specifications: total graphics power 450 W",
        ),
        GpuSpec(
            "rtx5090",
            209.5,
            1792,
            32,
            96,
            "NVIDIA RTX Blackwell GPU architecture whitepaper, GeForce RTX 5090 table (96 MB L2)",
            "bf16 with FP32 accumulate; 419 TFLOPS is the with-sparsity figure",
            ("NVIDIA GeForce RTX 5090",),
            575,
            "NVIDIA GeForce RTX 5090 specifications: total graphics power 575 W",
        ),
        GpuSpec(
            "b200",
            2250,
            8000,
            180,
            126,
            "NVIDIA HGX B200 specifications (per 8 GPUs: FP16/BF16 36 PFLOPS with sparsity, "
            "1,440 GB HBM3e, 64 TB/s), divided by 8; L2 not published by NVIDIA (126 MB as "
            "third-party microbenchmarks report)",
            "2.25 PFLOPS dense is half the 4.5 PFLOPS sparse figure",
            ("NVIDIA B200",),
            1000,
            "NVIDIA HGX B200 specifications: up to 1,000 W per GPU",
        ),
        GpuSpec(
            "orin",
            42.5,
            204.8,
            64,
            4,
            "NVIDIA Jetson AGX Orin series technical brief (v1.2), AGX Orin 64GB: GPU 170 "
            "sparse INT8 TOPS, 204.8 GB/s LPDDR5, 4 MB GPU L2",
            "dense FP16/BF16 tensor rate is a quarter of the 170 sparse INT8 TOPS; the 275 "
            "TOPS headline adds the DLAs and sparsity; memory is shared with the CPU",
            ("Orin",),
            60,
            "NVIDIA Jetson AGX Orin series technical brief (v1.2), AGX Orin 64GB: module power 15 W to 60 W",
        ),
    )
}


def gpu_for_device(device: str) -> GpuSpec | None:
    """The table's GPU for a profile's `device` or `gpu` field (torch's device name), or a
    name as `batchsim gpus` lists it (any case)."""
    for spec in GPUS.values():
        if device in spec.device_names or device.lower() == spec.name:
            return spec
    return None


def profile_gpu(provenance: Any) -> GpuSpec | None:
    """The GPU a profile was measured on (its sidecar's `gpu` or `device`) or estimated
    for (the estimate's target, its `gpu`); None for CPU and inline profiles."""
    if not isinstance(provenance, dict):
        return None
    for key in ("gpu", "device"):
        value = provenance.get(key)
        if isinstance(value, str) and (spec := gpu_for_device(value)) is not None:
            return spec
    return None


def load_gpu(name_or_path: str, option: str = "gpu") -> GpuSpec:
    """A GPU by table name, or a spec file (YAML or JSON) with GpuSpec's keys."""
    if name_or_path.lower() in GPUS:
        return GPUS[name_or_path.lower()]
    path = Path(name_or_path)
    if not path.suffix:
        raise InputError(
            f"unknown GPU '{name_or_path}'; one of {', '.join(GPUS)}, or a spec file "
            "(YAML or JSON: name, bf16_dense_tflops, memory_bandwidth_gbs, memory_gb, "
            "l2_cache_mb, source)",
            option=option,
        )
    from sim.io.files import read_yaml

    data = read_yaml(path, "GPU spec")  # YAML, and so JSON too
    if not isinstance(data, dict):
        raise InputError("a GPU spec file must be a mapping of keys to values", source=str(path))
    required = (
        "name",
        "bf16_dense_tflops",
        "memory_bandwidth_gbs",
        "memory_gb",
        "l2_cache_mb",
        "source",
    )
    allowed = {*required, "note", "device_names", "max_w", "idle_w", "power_source"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(
            f"unknown key '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}", source=str(path)
        )
    for key in required:
        if key not in data:
            raise InputError(f"'{key}' is required", source=str(path), field=key)
    for key in ("bf16_dense_tflops", "memory_bandwidth_gbs", "memory_gb", "l2_cache_mb"):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"must be a number (got {value!r})", source=str(path), field=key)
        if not (math.isfinite(value) and 0 < value <= 1e6):
            raise InputError(
                f"must be above 0 and at most 1,000,000 (got {value})", source=str(path), field=key
            )
    for key in ("name", "source"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise InputError("must be a non-empty string", source=str(path), field=key)
    for key in ("max_w", "idle_w"):
        watts = data.get(key)
        if watts is not None and (
            isinstance(watts, bool)
            or not isinstance(watts, (int, float))
            or not (math.isfinite(watts) and 0 <= watts <= 1e5)
        ):
            raise InputError(
                f"must be watts from 0 to 100,000 (got {watts!r})", source=str(path), field=key
            )
    max_w, idle_w = data.get("max_w"), data.get("idle_w")
    names = data.get("device_names", ())
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputError("must be a list of strings", source=str(path), field="device_names")
    return GpuSpec(
        data["name"],
        float(data["bf16_dense_tflops"]),
        float(data["memory_bandwidth_gbs"]),
        float(data["memory_gb"]),
        float(data["l2_cache_mb"]),
        data["source"],
        str(data.get("note", "")),
        tuple(names),
        None if not max_w else float(max_w),
        str(data.get("power_source", "the spec file")),
        None if idle_w is None else float(idle_w),
    )
