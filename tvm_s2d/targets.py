"""Build targets: this machine's CPU, and what a target's vectors hold."""

from __future__ import annotations

import tvm


def is_hexagon(target: tvm.target.Target | None) -> bool:
    """A Hexagon target (LLVM with a hexagon triple, or kind ``hexagon``)."""
    return target is not None and (target.kind.name == "hexagon" or "hexagon" in str(target.attrs.get("mtriple", "")))


def is_cpu(target: tvm.target.Target | None) -> bool:
    """An LLVM target for a CPU (not Hexagon)."""
    return target is not None and target.kind.name == "llvm" and "hexagon" not in str(target.attrs.get("mtriple", ""))


def vector_lanes(target: tvm.target.Target | None, dtype: str = "float32") -> int:
    """``dtype`` lanes in the target's widest vector (float32: 16 with AVX-512, 8 with AVX2,
    else 4)."""
    bits = 128
    if target is not None and target.kind.name == "llvm":
        cpu = str(target.attrs.get("mcpu", ""))
        features = tvm.target.codegen.llvm_get_cpu_features(target) if cpu else {}
        if "avx512f" in features:
            bits = 512
        elif "avx2" in features or "avx" in features:
            bits = 256
    return max(1, bits // tvm.DataType(dtype).bits)


def host_target() -> tvm.target.Target:
    """LLVM for this machine's CPU (``{"kind": "llvm"}`` alone means generic x86-64: no AVX)."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def describe(target: tvm.target.Target | None) -> str:
    """A short name: ``llvm -mcpu=znver3``, ``hexagon (hexagonv66)``."""
    if target is None:
        return "no target"
    cpu = target.attrs.get("mcpu")
    if is_hexagon(target):
        return f"hexagon ({cpu})" if cpu else "hexagon"
    return f"{target.kind.name}{f' -mcpu={cpu}' if cpu else ''}"
