"""Build targets: this machine's CPU, the Hexagon core the emulator runs, what a target's
vectors hold, and the cost model the rewrite decides by on each target."""

from __future__ import annotations

import os

import tvm

from .geometry import CostModel, HVXCostModel

#: The Hexagon core and HVX the emulator runs (QEMU 7.2: a v67 core with HVX v66).
HEXAGON_CPU, HEXAGON_HVX = "hexagonv66", ["+hvxv66", "+hvx-length128b"]


def is_hexagon(target: tvm.target.Target | None) -> bool:
    """A Hexagon target (LLVM with a hexagon triple, or kind ``hexagon``)."""
    return target is not None and (target.kind.name == "hexagon" or "hexagon" in str(target.attrs.get("mtriple", "")))


def pass_target(target: tvm.target.Target | None) -> tvm.target.Target | None:
    """The target a pass was made for, else the one of the enclosing ``with target:`` (None
    when neither is given)."""
    return target or tvm.target.Target.current(allow_none=True)


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


def use_all_cores() -> int:
    """Let TVM's kernels run on every core, as ONNX Runtime's do: unless ``TVM_NUM_THREADS`` says
    otherwise, TVM's runtime takes half the logical CPUs (it assumes two hyperthreads a core),
    one thread on a 2-core machine (a whole ResNet-like model measured 1.8x slower). Sets
    ``TVM_NUM_THREADS`` if unset; it counts only before TVM's thread pool starts (the first
    parallel kernel). Returns the thread count."""
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
    return int(os.environ["TVM_NUM_THREADS"])


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


#: LLVM options for Hexagon code. TVM's bundled LLVM software-pipelines some HVX loops wrongly (the
#: 192-channel depthwise kernel of MobileNetV2 read one weight vector of the previous group:
#: ``tests/test_hexagon_zoo_regressions.py``), so every Hexagon object is built without the pipeliner.
#: ``-hvc-va=false``: unaligned vector loads stay ``vmemu`` (one load slot) instead of LLVM's
#: HexagonVectorCombine realigning them into aligned loads and a ``valign`` each, which takes the
#: HVX slot pairs ``vrmpy`` needs (the seed layer's fused conv: 24 ``valign`` a block beside 144
#: ``vrmpy``); measured on the quantized zoo in session 19: every model 0.04-4.1% fewer packets.
HEXAGON_LLVM_OPTIONS = ("-enable-pipeliner=false", "-hvc-va=false")


def hexagon_target() -> tvm.target.Target:
    """The Hexagon target QEMU can run: v66 with 128-byte HVX, through plain LLVM codegen
    (``HEXAGON_LLVM_OPTIONS``: what ``compile --target hexagon`` writes is what the emulator ran)."""
    return tvm.target.Target({"kind": "llvm", "mtriple": "hexagon-unknown-linux-musl", "mcpu": HEXAGON_CPU,
                              "mattr": HEXAGON_HVX, "cl-opt": list(HEXAGON_LLVM_OPTIONS)})


# ---- the rewrite's cost model per target ------------------------------------------------------

# LLVM CPU targets, measured on this project's machines with schedules/x86.py:
# * the conv schedule vectorizes the width, so a width stride gathers: the ResNet stem
#   (7x7/2, 3->64) ran 2.2-2.5x slower than its S2D form although that executes 1.3x more MACs;
#   with 16 or more input channels the gather costs nothing measurable: 3x3/2 convs with
#   16-512 channels ran 0.9-2.6x slower rewritten, as their 1.8x more MACs say
#   (scripts/calibrate_cpu.py, results/calibrate_cpu.json), so only convs with at most
#   CPU_STRIDED_CHANNELS input channels (image stems) are charged;
# * the S2D of a 1024x1024x3 float image (25 MB read + written) took 2.1 ms, the time of
#   ~94M MACs of the scheduled conv: ~4 MAC-equivalents per byte moved. With it the
#   demo's small 3x3/2 stem (3->8) stays as it is, which measured faster (3.0 vs 6.7 ms).
CPU_STRIDED_WIDTH = 3.0
CPU_STRIDED_CHANNELS = 4
CPU_MOVE_COST = 4.0


def default_lane_width(target: tvm.target.Target | None) -> int:
    """The cost model's lane width for a build target: 32 for Hexagon (HTP, HVX ``vrmpy``) and
    when no target is known; 1 for LLVM CPU targets, whose vectors hold pixels, not channels,
    so that S2D there pays only by turning strided convs into stride-1 ones."""
    return 1 if is_cpu(target) else 32


def default_model(target: tvm.target.Target | None, lane_width: int | None, move_cost: float | None) -> CostModel:
    """The cost model for a build target (an option None: the target's default): on Hexagon
    the HVX packet model (``geometry.HVXCostModel``: both mappings, both forms, measured
    rates); with ``lane_width`` given, or no target, the lane model (32: HTP, analytic)."""
    if is_hexagon(target) and lane_width is None and move_cost is None:
        return HVXCostModel()
    cpu = is_cpu(target)
    lanes = default_lane_width(target) if lane_width is None else lane_width
    if move_cost is None:
        move_cost = CPU_MOVE_COST if cpu else CostModel.move_cost
    return CostModel(lanes, move_cost, CPU_STRIDED_WIDTH if cpu else 1.0, CPU_STRIDED_CHANNELS if cpu else None)
