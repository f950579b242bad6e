"""Halide as a peer on the Hexagon emulator: the benchmark's quantized layers scheduled in Halide
for HVX, against tvm-s2d's whole kernel chain for the same layer, packets side by side.

Each layer is quantized as the zoo's are (uint8 activations with a zero point, per-output-channel
int8 weights, an int32 bias) and requantized to uint8 by tvm-s2d's integer scheme
(``passes/quantized/integer_requantize.py``: 31-bit multiplier, headroom shift, rounding shift,
zero point, clamp), on seeded random data, NHWC in and out. numpy computes the same integers:
both sides must give them bit for bit.

* Halide 21 (``pip install -e '.[peers]'``): the pipelines below (schedules adapted from Halide's
  apps/hannk; constant shapes, strides and 128-byte alignment, or loads become gathers), compiled
  for ``TARGET``, linked freestanding with the emulator's runtime and ``halide_runtime_stubs.c``,
  run under qemu-hexagon, the plugin counting each pipeline's object (argument checks included).
* tvm-s2d: the layer as the Relax graph its ONNX importer writes for a QDQ layer, but NHWC at
  both ends (ONNX's NCHW would add graph-boundary transposes), lowered by the ``"s2d"`` pipeline,
  run kernel by kernel (``emulator.model.interpret``, as ``run_model`` does), checked against its
  CPU build. Every kernel counts: pads, layout changes, conv, requantization.

    python scripts/bench_hexagon_peers.py [--layers conv16,rgb,seed,stem,dw,fc] \\
        [--json results/bench_hexagon_peers.json --table results/bench_hexagon_peers.md]
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.relax.pipeline import default_build_pipeline

from tvm_s2d.emulator import qemu
from tvm_s2d.emulator.model import HVX_MACS_PER_PACKET, interpret, lower_for_hexagon
from tvm_s2d.geometry.fixed_point import fixed_point, requantize
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.targets import host_target

HERE = Path(__file__).resolve().parent
TARGET = "hexagon-32-noos-hvx_128-hvx_v66-no_runtime"
ZX, ZY, SX = 113, 128, np.float32(0.05)
X0 = 32  # column of the packed input where the image starts: on a vector, so the pad's selects partition away
CONSTANTS = ("bias", "pre", "m", "half", "shift")  # per output channel, int32


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "conv", "depthwise" or "dense"
    hw: int  # input height = width (dense: 1)
    cin: int
    cout: int
    k: int = 3
    stride: int = 1
    pad: int = 1
    tile: int = 1  # Halide: HVX vectors of output pixels per tile (the best of 1, 2 measured)

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.k) // self.stride + 1

    @property
    def macs(self) -> int:
        return self.out_hw ** 2 * self.cout * self.k * self.k * (1 if self.kind == "depthwise" else self.cin)


LAYERS = {
    "conv16": Layer("3x3 conv 16->16, 64x64", "conv", 64, 16, 16),
    "rgb": Layer("3x3 conv 3->16, 64x64", "conv", 64, 3, 16),
    "seed": Layer("3x3 conv 8->8, 128x128 (the seed layer)", "conv", 128, 8, 8, tile=2),
    "stem": Layer("3x3/2 RGB stem 3->16, 96x96", "conv", 96, 3, 16, stride=2),
    "dw": Layer("3x3 depthwise, 32 channels, 48x48", "depthwise", 48, 32, 32, tile=2),
    "fc": Layer("fully connected 512->1000", "dense", 1, 512, 1000, k=1, pad=0),
    "tiny": Layer("3x3 conv 8->8, 32x32 (smoke test)", "conv", 32, 8, 8),
}
DEFAULT = ["conv16", "rgb", "seed", "stem", "dw", "fc"]


def quantized(layer: Layer, seed: int = 0) -> dict:
    """Seeded data, OHWI weights, bias and scales, the integer requantization tvm-s2d derives
    from them (``M, r = fixed_point(sx*sw/sy)``, ``pre`` its headroom shift), numpy's result."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (layer.hw, layer.hw, layer.cin) if layer.kind != "dense" else (layer.cin,)).astype(np.uint8)
    w = rng.integers(-127, 128, (layer.cout, layer.k, layer.k, 1 if layer.kind == "depthwise" else layer.cin)).astype(np.int8)
    sw = (rng.random(layer.cout) * 0.004 + 0.001).astype(np.float32)
    b = rng.integers(-2000, 2000, layer.cout).astype(np.int32)
    acc = accumulate(layer, x, w) + b
    sy = np.float32(6 * np.std(acc * (SX * sw)) / 256)  # the outputs spread over the uint8 range
    m, r = fixed_point((SX * sw).astype(np.float64) / np.float64(sy))
    bound = 255 * np.abs(w.astype(np.int64)).sum(axis=(1, 2, 3)) + np.abs(b)
    pre = np.minimum(np.clip(30 - np.ceil(np.log2(bound + 1.0)).astype(np.int64), 0, None), 30 - r)
    return {"x": x, "w": w, "sw": sw, "b": b, "sy": sy, "m": m.astype(np.int32), "shift": (r + pre).astype(np.int32),
            "pre": pre.astype(np.int32), "expected": requantize(acc, m, r + pre, ZY, 0, 255, "uint8", pre)}


def accumulate(layer: Layer, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """int64 sums of ``(x - ZX) * w``, ``x - ZX`` zero-padded (NHWC x OHWI, or dense)."""
    if layer.kind == "dense":
        return (x.astype(np.int64) - ZX) @ w.reshape(layer.cout, -1).T.astype(np.int64)
    p, s, n = layer.pad, layer.stride, layer.out_hw
    xp = np.pad(x.astype(np.int64) - ZX, ((p, p), (p, p), (0, 0)))
    acc = np.zeros((n, n, layer.cout), np.int64)
    for ky in range(layer.k):
        for kx in range(layer.k):
            patch = xp[ky:ky + s * (n - 1) + 1:s, kx:kx + s * (n - 1) + 1:s]
            acc += patch * w[:, ky, kx, 0] if layer.kind == "depthwise" else patch @ w[:, ky, kx].T.astype(np.int64)
    return acc


# ---- Halide ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """A buffer as a pipeline sees it: a memory of the program, a type, dense dims (innermost first)."""
    memory: str
    dtype: str
    extents: tuple

    @property
    def dims(self) -> list[tuple[int, int]]:
        strides = np.cumprod((1,) + self.extents[:-1])
        return [(int(e), int(s)) for e, s in zip(self.extents, strides)]

    def nbytes(self) -> int:
        return int(np.prod(self.extents)) * np.dtype(self.dtype).itemsize

    def constrain(self, buffer) -> None:
        for d, (extent, stride) in enumerate(self.dims):
            buffer.dim(d).set_min(0).set_extent(extent).set_stride(stride)
        buffer.set_host_alignment(128)


def stage(hl, name: str, views: list, output: View, define, schedule) -> tuple:
    """A pipeline ``name``: ``define(*ImageParams of views)`` returns its Funcs (the output
    first), ``schedule(*funcs)`` schedules them."""
    params = []
    for i, v in enumerate(views):
        bits = 8 * np.dtype(v.dtype).itemsize
        params.append(hl.ImageParam(hl.UInt(bits) if v.dtype[0] == "u" else hl.Int(bits), len(v.extents), f"{name}{i}"))
        v.constrain(params[-1])
    funcs = define(*params)
    output.constrain(funcs[0].output_buffer())
    schedule(*funcs)
    return name, hl.Pipeline(funcs[0]), params, views + [output]


def requant(hl, a, c, k):
    """``a`` (accumulator plus bias) -> uint8, numpy's ``requantize`` with the per-channel ``k``."""
    t = hl.rounding_mul_shift_right(a << k["pre"][c], k["m"][c], 31)  # vmpye + vmpyo:<<1:rnd:sat
    return hl.u8_sat(hl.saturating_add(hl.i16_sat((t + k["half"][c]) >> k["shift"][c]), hl.i16(ZY)))  # hannk's narrowing


def halide_stages(layer: Layer, q: dict) -> tuple[list, dict, View]:
    """The layer's pipelines, the inputs by memory, the output's view."""
    import halide as hl

    x, y, c, k, g, co, xo, xv, xi, cx = (hl.Var(name) for name in ("x", "y", "c", "k", "g", "co", "xo", "xv", "xi", "cx"))
    folded = (q["b"] - ZX * q["w"].astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32)  # sum (x - zx) w = sum x w - zx sum w
    consts = {"bias": folded, "pre": q["pre"], "m": q["m"], "half": (1 << q["shift"]) >> 1, "shift": q["shift"]}
    n, s, p, kk = layer.out_hw, layer.stride, layer.pad, layer.k
    stages, inputs = [], {"x": q["x"]}
    if layer.kind == "conv":
        # Width in lanes, vrmpy(Vu.ub, Rt.b) (hannk's conv with the operands' roles swapped: the
        # int8 weights are the scalar, uint8 pixels fill the lanes). The input packed as
        # [C/4][rows][cols][4] (pad and layout in one stage): a vector is 32 output pixels x 4
        # input channels, one vrmpy per output channel, channel group and tap; tile x 32 pixels
        # x all output channels accumulate in registers, then requantize and interleave to NHWC.
        groups, rows = (layer.cin + 3) // 4, (n - 1) * s + kk
        cols = -(-(X0 + (n - 1) * s + kk - p) // 32) * 32  # the last tile shifts inwards: reads stay inside
        packed = View("packed", "uint8", (4, cols, rows, groups))
        if layer.cin % 4 == 0:  # whole channel groups: 32-bit words, a stride-G deinterleave of dense loads
            source, target, fill = View("x", "uint32", (groups, layer.hw, layer.hw)), View("packed", "uint32", (cols, rows, groups)), \
                hl.u32(ZX * 0x01010101)
            def pack(inp):
                f = hl.Func("pack")
                f[x, y, g] = hl.BoundaryConditions.constant_exterior(inp, fill)[g, x - X0, y - p]
                return (f,)
            stages.append(stage(hl, "pack", [source], target, pack,
                                lambda f: f.bound(g, 0, groups).reorder(g, x, y).unroll(g).vectorize(x, 32)))
        else:  # RGB: bytes, a stride-3 deinterleave; the 4th channel (zero weights) gets the zero point
            def pack(inp):
                f = hl.Func("pack")
                f[k, x, y, g] = hl.BoundaryConditions.constant_exterior(inp, hl.u8(ZX))[g * 4 + k, x - X0, y - p]
                return (f,)
            stages.append(stage(hl, "pack", [View("x", "uint8", (layer.cin, layer.hw, layer.hw))], packed, pack,
                                lambda f: f.bound(k, 0, 4).reorder(k, x, y, g).unroll(k).vectorize(x, 32)))
        wt = np.zeros((layer.cout, kk, kk, groups * 4), np.int8)
        wt[..., :layer.cin] = q["w"]
        inputs["wt"] = wt  # [co][ky][kx][g][4]: 4 bytes a vrmpy's scalar
        views = [packed, View("wt", "int8", (4, groups, kk, kk, layer.cout))]
        output = View("y", "uint8", (layer.cout, n, n))
        r = hl.RDom([hl.Range(0, 4), hl.Range(0, groups), hl.Range(0, kk), hl.Range(0, kk)], "r")

        def define(pk, w, *constants):
            acc, out, kc = hl.Func("acc"), hl.Func("conv"), dict(zip(CONSTANTS, constants))
            acc[x, y, co] = kc["bias"][co]
            acc[x, y, co] += hl.i32(pk[r.x, x * s + r.z + X0 - p, y * s + r.w, r.y]) * hl.i32(w[r.x, r.y, r.z, r.w, co])
            out[co, x, y] = requant(hl, acc[x, y, co], co, kc)
            return out, acc

        def schedule(out, acc):
            out.bound(co, 0, layer.cout).split(x, xo, xi, 32 * layer.tile).reorder(co, xi, xo, y).vectorize(xi).unroll(co)
            acc.compute_at(out, xo).store_in(hl.MemoryType.Register).split(x, xv, x, 32).vectorize(x).unroll(xv).unroll(co)
            acc.update().split(x, xv, x, 32).reorder(r.x, x, co, xv, r.y, r.z, r.w).atomic().vectorize(r.x).vectorize(x) \
                .unroll(co).unroll(xv).unroll(r.y).unroll(r.z)
    elif layer.kind == "depthwise":
        # hannk's depthwise, its "shallow" form: channels and pixels share the lanes (4 pixels x 32
        # channels a vector, NHWC as it is), weights repeated to 128 lanes; vmpy(Vu.ub, Vv.b) to
        # 16 bits, widened into int32 sums. A pad stage first, a vector of pad on each side.
        lanes = 128 // layer.cin
        padded = View("padded", "uint8", (layer.cin, layer.hw + 2 * lanes, layer.hw + 2 * p))

        def pad(inp):
            f = hl.Func("pad")
            f[c, x, y] = hl.BoundaryConditions.constant_exterior(inp, hl.u8(ZX))[c, x - lanes, y - p]
            return (f,)
        stages.append(stage(hl, "pad", [View("x", "uint8", (layer.cin, layer.hw, layer.hw))], padded, pad,
                            lambda f: f.bound(c, 0, layer.cin).fuse(c, x, cx).vectorize(cx, 128)))
        inputs["wt"] = np.ascontiguousarray(np.tile(q["w"][:, :, :, 0].transpose(1, 2, 0), (1, 1, lanes)))  # [ky][kx][128]
        views, output = [padded, View("wt", "int8", (128, kk, kk))], View("y", "uint8", (layer.cin, n, n))
        r = hl.RDom([hl.Range(0, kk), hl.Range(0, kk)], "r")

        def define(pd, w, *constants):
            acc, out, kc = hl.Func("acc"), hl.Func("conv"), dict(zip(CONSTANTS, constants))
            acc[c, x, y] = kc["bias"][c]
            acc[c, x, y] += hl.i32(pd[c, x * s + r.x + lanes - p, y * s + r.y]) * hl.i32(w[c + layer.cin * (x % lanes), r.x, r.y])
            out[c, x, y] = requant(hl, acc[c, x, y], c, kc)
            return out, acc

        def schedule(out, acc):
            out.bound(c, 0, layer.cin).split(x, xo, xv, lanes * layer.tile).split(xv, xv, xi, lanes).fuse(c, xi, cx) \
                .reorder(cx, xv, xo, y).vectorize(cx).unroll(xv)
            acc.compute_at(out, xo).store_in(hl.MemoryType.Register).split(x, xv, xi, lanes).fuse(c, xi, cx).vectorize(cx).unroll(xv)
            acc.update().split(x, xv, xi, lanes).fuse(c, xi, cx).reorder(cx, xv, r.x, r.y).vectorize(cx).unroll(xv) \
                .unroll(r.x).unroll(r.y)
    else:
        # Channels in lanes, vector x vector vrmpy(Vu.ub, Vv.b): 4 input bytes splat to all lanes,
        # the weights [co/32][k/4][32][4] a vector each; 8 accumulators of 32 outputs. Outputs are
        # computed to whole blocks of 256 (1024; the layer's 1000 are compared).
        cout = -(-layer.cout // 256) * 256
        w = np.zeros((cout, layer.cin), np.int8)
        w[:layer.cout] = q["w"].reshape(layer.cout, -1)
        inputs["wt"] = np.ascontiguousarray(w.reshape(cout // 32, 32, layer.cin // 4, 4).transpose(0, 2, 1, 3))
        consts = {name: np.pad(value, (0, cout - layer.cout)) for name, value in consts.items()}
        views = [View("x", "uint8", (layer.cin,)), View("wt", "int8", (4, 32, layer.cin // 4, cout // 32))]
        output = View("y", "uint8", (cout,))
        r = hl.RDom([hl.Range(0, 4), hl.Range(0, layer.cin // 4)], "r")

        def define(xin, w, *constants):
            acc, out, kc = hl.Func("acc"), hl.Func("dense"), dict(zip(CONSTANTS, constants))
            acc[co] = kc["bias"][co]
            acc[co] += hl.i32(xin[r.y * 4 + r.x]) * hl.i32(w[r.x, co % 32, r.y, co / 32])
            out[co] = requant(hl, acc[co], co, kc)
            return out, acc

        def schedule(out, acc):
            out.split(co, xo, xi, 256).vectorize(xi)
            acc.compute_at(out, xo).store_in(hl.MemoryType.Register).split(co, xv, co, 32).vectorize(co).unroll(xv)
            acc.update().split(co, xv, co, 32).reorder(r.x, co, xv, r.y).atomic().vectorize(r.x).vectorize(co).unroll(xv)
    inputs.update(consts)
    views += [View(name, "int32", (len(consts[name]),)) for name in CONSTANTS]
    stages.append(stage(hl, "conv", views, output, define, schedule))
    return stages, inputs, output


C_TYPES = r"""#include <stdint.h>
typedef struct { int32_t min, extent, stride; uint32_t flags; } halide_dimension_t;  /* HalideRuntime.h's, without libc */
typedef struct { uint64_t device; const void* interface; uint8_t* host; uint64_t flags; struct { uint8_t code, bits;
  uint16_t lanes; } type; int32_t dimensions; halide_dimension_t* dim; void* padding; } halide_buffer_t;
void s2d_exit(int); void s2d_read_all(void*, long); void s2d_write_all(int, const void*, long); void halide_stub_say(const char*);
"""


def run_halide(layer: Layer, q: dict, work: Path) -> dict:
    """Compile the layer's pipelines; link them with a main (read the inputs, call each pipeline on
    halide_buffer_t views of static memories, write the output); run it once per pipeline, the
    plugin counting that pipeline's code; compare the output with numpy's."""
    import halide as hl

    stages, inputs, output = halide_stages(layer, q)
    objects = [work / f"{name}.o" for name, *_ in stages]
    for (name, pipeline, params, _), obj in zip(stages, objects):
        pipeline.compile_to({hl.OutputFileType.object: str(obj), hl.OutputFileType.stmt: str(obj.with_suffix(".stmt"))},
                            params, name, hl.Target(TARGET))
    memories = {}
    for *_, views in stages:
        memories.update({v.memory: max(memories.get(v.memory, 0), v.nbytes()) for v in views})
    lines = [C_TYPES] + [f"static unsigned char {m}[{size}] __attribute__((aligned(128)));" for m, size in memories.items()]
    calls = []
    for name, *_, views in stages:
        for v in views:
            i, code, dims = len(lines), int(v.dtype[0] == "u"), ", ".join(f"{{0, {e}, {st}, 0}}" for e, st in v.dims)
            lines.append(f"static halide_dimension_t d{i}[] = {{{dims}}}; static halide_buffer_t b{i} = {{0, 0, {v.memory}, 0, "
                         f"{{{code}, {8 * np.dtype(v.dtype).itemsize}, 1}}, {len(v.dims)}, d{i}, 0}};")
        args = [f"&b{i}" for i in range(len(lines) - len(views), len(lines))]
        lines.append(f"int {name}({', '.join(['halide_buffer_t*'] * len(args))});")
        calls.append(f"  if (rc == 0) rc = {name}({', '.join(args)});")
    undefined = subprocess.run(["llvm-nm-14", "-u", *map(str, objects)], capture_output=True, text=True, check=True).stdout
    lines += [f'int {e}(void) {{ halide_stub_say("{e}"); return -1; }}'  # Halide's error reporters: say which, fail
              for e in sorted(set(re.findall(r"\b(halide_error_\w+)", undefined)))]
    lines += ["void _start(void) {", *[f"  s2d_read_all({m}, {a.nbytes});" for m, a in inputs.items()], "  int rc = 0;", *calls,
              f"  s2d_write_all(1, {output.memory}, {output.nbytes()});", "  s2d_exit(rc);", "}"]
    (work / "main.c").write_text("\n".join(lines) + "\n")
    flags = ["--target=hexagon-unknown-linux-musl", f"-mcpu={qemu.HEXAGON_CPU}", "-mhvx", "-mhvx-length=128b",
             "-ffreestanding", "-nostdlib", "-O2", *qemu._ffi_includes()]
    qemu._run(["clang-14", *flags, "-c", str(work / "main.c"), "-o", str(work / "main.o")], "compiling main.c")
    harness = [qemu._harness_object(source, flags) for source in (qemu.HERE / "runtime.c", HERE / "halide_runtime_stubs.c")]
    program = work / "program"
    qemu._run(["ld.lld-14", "-static", "-e", "_start", str(work / "main.o"), *map(str, harness), *map(str, objects),
               "-o", str(program), f"-Map={work / 'program.map'}"], "linking")
    data, packets = b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values()), {}
    for (name, *_), obj in zip(stages, objects):
        lo, hi = text_range(work / "program.map", obj)
        run = subprocess.run(["qemu-hexagon", "-d", "plugin", "-plugin", f"{qemu._plugin()},lo={lo:#x},hi={hi:#x}", str(program)],
                             input=data, capture_output=True, timeout=1800)
        found = re.search(rb"packets (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            raise qemu.EmulatorError(f"{layer.name}: Halide's program failed (exit {run.returncode}): {run.stderr[-500:]!r}")
        packets[name] = int(found.group(1))
    expected = q["expected"].reshape(-1)
    return {"packets": sum(packets.values()), "kernels": packets,
            "exact": bool(np.array_equal(np.frombuffer(run.stdout, np.uint8)[:expected.size], expected))}


def text_range(mapfile: Path, obj: Path) -> tuple[int, int]:
    """Where the linker put ``obj``'s code (its .text sections, consecutive), from the link map:
    symbols cannot say it, every Halide object defines the same weak runtime functions."""
    spans = [(int(f[0], 16), int(f[0], 16) + int(f[2], 16)) for f in map(str.split, mapfile.read_text().splitlines())
             if len(f) >= 5 and f[4].startswith(f"{obj}:(.text")]
    return min(a for a, _ in spans), max(b for _, b in spans)


# ---- tvm-s2d --------------------------------------------------------------------------------


def tvm_module(layer: Layer, q: dict):
    """The layer as the Relax graph tvm-s2d imports for a QDQ layer: dequantize, conv2d (NHWC,
    OHWI) or matmul (what ONNX's MatMul imports as), bias, quantize."""
    scale, zeros = (SX * q["sw"]).astype(np.float32), np.zeros(layer.cout, np.int8)
    shape = (1, layer.cin) if layer.kind == "dense" else (1, layer.hw, layer.hw, layer.cin)
    bb, x = relax.BlockBuilder(), relax.Var("x", relax.TensorType(shape, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            xf = bb.emit(relax.op.dequantize(x, relax.const(SX), relax.const(np.uint8(ZX)), axis=len(shape) - 1))
            if layer.kind == "dense":
                wf = relax.op.dequantize(relax.const(q["w"].reshape(layer.cout, -1).T.copy()), relax.const(q["sw"]),
                                         relax.const(zeros), axis=1)
                yf = bb.emit(relax.op.matmul(xf, bb.emit(wf)), "fc")
            else:
                wf = bb.emit(relax.op.dequantize(relax.const(q["w"]), relax.const(q["sw"]), relax.const(zeros), axis=0))
                yf = bb.emit(relax.op.nn.conv2d(xf, wf, strides=layer.stride, padding=layer.pad, data_layout="NHWC",
                                                kernel_layout="OHWI", groups=layer.cin if layer.kind == "depthwise" else 1), "conv")
            yf = bb.emit(relax.op.add(yf, relax.const((q["b"].astype(np.float32) * scale).astype(np.float32))))
            out = relax.op.quantize(yf, relax.const(q["sy"]), relax.const(np.uint8(ZY)), axis=len(shape) - 1, out_dtype="uint8")
            y = bb.emit_output(out)
        bb.emit_func_output(y)
    return bb.get()


def run_tvm(layer: Layer, q: dict) -> dict:
    """``tvm_module`` lowered by the ``"s2d"`` pipeline, each kernel under qemu-hexagon on the
    tensors before it; the output against the CPU build's (HVX kernels as plain loops) and numpy's."""
    mod, x = tvm_module(layer, q), q["x"][None]
    out, kernels = interpret(lower_for_hexagon(mod, S2DPipeline(), ()), [x])
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(lower_for_hexagon(mod, S2DPipeline(hvx=False), ()), target=host_target(),
                         relax_pipeline=default_build_pipeline())
    cpu = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    return {"packets": sum(k.packets for k in kernels), "conv_packets": sum(k.packets for k in kernels if k.kind == "conv"),
            "kernels": [{"kernel": k.name, "kind": k.kind, "hvx": k.hvx, "packets": k.packets} for k in kernels],
            "matches_cpu": bool(np.array_equal(cpu, out)), "exact": bool(np.array_equal(out.reshape(-1), q["expected"].reshape(-1)))}


# ---- the benchmark --------------------------------------------------------------------------


def measure(layer: Layer, seed: int = 0) -> dict:
    start, q = time.perf_counter(), quantized(layer, seed)
    with tempfile.TemporaryDirectory(prefix="s2d-halide-") as tmp:
        halide = run_halide(layer, q, Path(tmp))
    tvm_s2d = run_tvm(layer, q)
    return {"layer": layer.name, "shape": asdict(layer), "macs": layer.macs, "ideal_packets": layer.macs / HVX_MACS_PER_PACKET,
            "halide": halide, "tvm_s2d": tvm_s2d, "ratio": tvm_s2d["packets"] / halide["packets"],
            "exact": halide["exact"] and tvm_s2d["exact"] and tvm_s2d["matches_cpu"], "seconds": time.perf_counter() - start}


NOTE = """Packets executed under qemu-hexagon (QEMU 7.2: a v67 core, 128-byte HVX v66) on seeded random data, uint8 NHWC in
and out. HVX ideal: MACs / 256 (two 128-MAC vrmpy a packet). Halide (21.0.0, hexagon-32-noos-hvx_128-hvx_v66-no_runtime):
all its pipelines' code, the packing or pad stage included (convs: width-in-lanes vrmpy on the input packed to
[C/4][rows][cols][4], pad included; depthwise: 4 pixels x 32 channels a vector on a padded NHWC copy; fully connected:
channels in lanes, vector x vector vrmpy; weights laid out at compile time, as tvm-s2d's are). tvm-s2d: every kernel
of the layer lowered by the "s2d" pipeline (pads, layout changes, conv, requantization); the graph is NHWC at both
ends, so no NCHW<->NHWC transposes of a graph boundary, and takes uint8, so no float quantize. Exact: both sides equal
numpy's integers (tvm-s2d's requantization scheme) bit for bit, and tvm-s2d equals its CPU build. The fully connected
layer: both compute 1024 outputs, 1000 are compared."""


def table(rows: list[dict]) -> str:
    lines = ["| layer | MACs | HVX ideal packets | Halide packets | tvm-s2d packets (chain) | ratio tvm-s2d/Halide | both exact "
             "| tvm-s2d conv kernels | Halide stages | tvm-s2d kernels |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = ", ".join(f"{name} {p:,}" for name, p in r["halide"]["kernels"].items())
        kernels = ", ".join(f"{k['kernel']}{'' if k['hvx'] else ' (scalar)'} {k['packets']:,}" for k in r["tvm_s2d"]["kernels"])
        lines.append(f"| {r['layer']} | {r['macs']:,} | {r['ideal_packets']:,.0f} | {r['halide']['packets']:,} "
                     f"| {r['tvm_s2d']['packets']:,} | {r['ratio']:.2f} | {'yes' if r['exact'] else '**NO**'} "
                     f"| {r['tvm_s2d']['conv_packets']:,} | {stages} | {kernels} |")
    return "\n".join(lines) + "\n\n" + NOTE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", help=f"comma-separated, of {', '.join(LAYERS)} (default: {','.join(DEFAULT)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows as JSON")
    parser.add_argument("--table", help="write the table as Markdown")
    args = parser.parse_args(argv)
    names = args.layers.split(",") if args.layers else DEFAULT
    unknown = [n for n in names if n not in LAYERS]
    if unknown:
        parser.error(f"unknown layers: {', '.join(unknown)} (known: {', '.join(LAYERS)})")
    qemu.check_tools()
    rows = []
    for name in names:
        rows.append(row := measure(LAYERS[name], args.seed))
        print(f"{name:8s} Halide {row['halide']['packets']:>9,}  tvm-s2d {row['tvm_s2d']['packets']:>9,}  ratio {row['ratio']:.2f}"
              f"  exact {row['exact']}  ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.table:
        Path(args.table).write_text(text + "\n")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
