"""Run TVM kernels on a Hexagon core under ``qemu-hexagon`` and count executed packets.

No Qualcomm SDK: TVM's bundled LLVM writes a Hexagon object (``hexagon_target``, without its
software pipeliner: ``LLVM_OPTIONS``), Debian's ``clang-14`` and ``ld.lld-14`` link it with a
freestanding harness (``runtime.c``; ``libm.c``, the float functions TVM's scalar lowering
calls, computing what the host's glibc computes, so that float kernels too are bit-exact
against the CPU build; plus a main generated here for the kernel's arguments), and Debian's
``qemu-hexagon`` (QEMU 7.2: a v67 core with HVX v66) runs it. A TCG plugin
(``count_packets.c``) counts the packets executed inside the kernel's code and the libm
functions it calls. Packet counts are deterministic; QEMU's wall time means nothing.

Inputs go to the program on stdin and outputs come back on stdout, as raw bytes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi

from ..targets import HEXAGON_CPU, HEXAGON_LLVM_OPTIONS, hexagon_target

HERE = Path(__file__).resolve().parent
#: Debian package of each tool the emulator needs.
TOOLS = {"qemu-hexagon": "qemu-user", "clang-14": "clang-14", "ld.lld-14": "lld-14", "llvm-nm-14": "llvm-14", "gcc": "gcc"}
DL_TYPES = {"int8": ("kDLInt", 8), "uint8": ("kDLUInt", 8), "int16": ("kDLInt", 16), "int32": ("kDLInt", 32),
            "int64": ("kDLInt", 64), "float32": ("kDLFloat", 32), "bool": ("kDLBool", 8)}


#: LLVM options of every Hexagon object (``targets.HEXAGON_LLVM_OPTIONS``): TVM's bundled LLVM (22)
#: software-pipelines some HVX loops wrongly: in the HVX depthwise kernel of 192 channels
#: (MobileNetV2's) its MachinePipeliner loads one weight vector of the next iteration through an
#: address register computed from the current iteration's base, so each 128-output group but the
#: first took the previous group's weights for one tap (found under qemu: the kernel against its
#: plain loops; the address is in the assembly). Without the pipeliner the kernels match.
LLVM_OPTIONS = HEXAGON_LLVM_OPTIONS


def codegen_target() -> tvm.target.Target:
    """The target kernels are compiled for here: ``hexagon_target()``, which carries ``LLVM_OPTIONS``."""
    return hexagon_target()


class EmulatorError(RuntimeError):
    """The emulator cannot run: a missing tool (named with its Debian package) or a failed step."""


def check_tools() -> None:
    missing = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise EmulatorError("the Hexagon emulator needs " + ", ".join(missing) +
                            ": apt-get install -y qemu-user clang-14 lld-14 llvm-14")


@dataclass
class Run:
    outputs: list[np.ndarray]
    packets: int  # packets executed inside the kernel's code


def compile_kernel(func, name: str) -> tvm.runtime.Module:
    """A TIR ``PrimFunc`` compiled for ``codegen_target()`` under the symbol ``name``. Its code
    is generated when the module is written or inspected, in the calling thread: for the same
    code every time, ``kernel_object`` / ``kernel_assembly``."""
    mod = tvm.IRModule({name: func.with_attr("global_symbol", name)})
    return tvm.compile(mod, target=codegen_target()).mod


def kernel_object(func, name: str, path: Path) -> None:
    """``compile_kernel`` written as an object file at ``path``, in the one compile thread."""
    _in_compiler(lambda: compile_kernel(func, name).write_to_file(str(path)))


def kernel_assembly(func, name: str = "kernel") -> str:
    """``compile_kernel``'s assembly, in the one compile thread."""
    return _in_compiler(lambda: compile_kernel(func, name).inspect_source("asm"))


def _in_compiler(work):
    """``work()`` in the one thread every kernel's code is generated in: TVM's LLVM options (the
    target's ``-enable-pipeliner=false``) are process-wide, and code generated in two threads,
    even one at a time, sometimes came out with the pipeliner on (the stem's fused kernel: 1.8
    KB or 3.2 KB of code, 15.9k or 18.3k packets, whichever build reached the cache;
    ``tests/test_run.py``)."""
    global _compiler
    with _lock:
        _compiler = _compiler or ThreadPoolExecutor(max_workers=1, thread_name_prefix="s2d-compile")
    return _compiler.submit(work).result()


@dataclass(frozen=True)
class Program:
    """A kernel linked into a program for qemu-hexagon, and the address range of its code."""
    path: Path
    lo: int
    hi: int


#: The symbol every kernel is compiled under (the cache shares a program between kernels of one
#: body whatever their names).
SYMBOL = "s2d_kernel"
#: ``0``: build every program afresh (no cache of linked programs).
CACHE_ENV = "TVM_S2D_PROGRAM_CACHE"
_building: dict[str, Future] = {}
_lock = threading.Lock()
_compiler: ThreadPoolExecutor | None = None  # the one thread kernels' code is generated in (``_in_compiler``)
_pool: ThreadPoolExecutor | None = None
_scratch: tempfile.TemporaryDirectory | None = None


def run_kernel(func, inputs: list[np.ndarray], outputs: list[tuple[tuple[int, ...], str]], name: str = "kernel",
               workdir: str | os.PathLike | None = None) -> Run:
    """Compile ``func`` (a TIR ``PrimFunc`` whose parameters are the inputs, then the outputs),
    run it on ``inputs`` under qemu-hexagon, return the outputs and the packets executed."""
    check_tools()
    inputs = [np.require(x, requirements="C") for x in inputs]  # ascontiguousarray would make 0-d arrays 1-d
    specs = [(x.shape, str(x.dtype)) for x in inputs]
    if workdir is not None:  # the build's files kept there, no cache
        program = _build(func, specs, outputs, Path(workdir))
    else:
        program = build_program(func, specs, outputs)
    return run_program(program, inputs, outputs, name)


def build_program(func, inputs, outputs) -> Program:
    """``func`` compiled and linked for the shapes and dtypes ``inputs`` and ``outputs``: from
    the user's cache when a kernel of the same body and shapes was built before (or is being
    built by ``prefetch``), else built now and cached."""
    key = _program_key(func, inputs, outputs)
    with _lock:
        pending = _building.get(key)
    if pending is not None:
        return pending.result()
    return _cached_build(key, func, inputs, outputs)


def prefetch(func, inputs, outputs) -> None:
    """Start building ``func``'s program in a worker thread (the linker runs outside the GIL,
    the code generation in the one compile thread, ``_in_compiler``), for a later
    ``build_program`` of it; the whole-model runner prefetches every kernel before running the
    first, so compiling overlaps running."""
    global _pool
    key = _program_key(func, inputs, outputs)
    with _lock:
        if key in _building:
            return
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="s2d-build")
        _building[key] = _pool.submit(_cached_build, key, func, inputs, outputs)


def cancel_prefetched() -> None:
    """Drop the prefetched builds not started yet (a run that stopped early)."""
    with _lock:
        for future in _building.values():
            future.cancel()
        _building.clear()


def _program_key(func, inputs, outputs) -> str:
    body = tvm_ffi.structural_hash(func.with_attr("global_symbol", SYMBOL))
    parts = [str(body), repr([(tuple(int(d) for d in shape), str(dtype)) for shape, dtype in inputs]),
             repr([(tuple(int(d) for d in shape), str(dtype)) for shape, dtype in outputs]), _toolchain()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


@functools.cache
def _toolchain() -> str:
    """What else a program depends on: TVM, its LLVM options, the harness."""
    sources = [source.read_text() for source in (Path(__file__), HERE / "runtime.c", HERE / "libm.c")]
    return "\n".join([tvm.__version__, str(LLVM_OPTIONS), HEXAGON_CPU, *sources])


def _cached_build(key: str, func, inputs, outputs) -> Program:
    global _scratch
    if os.environ.get(CACHE_ENV, "") == "0":  # built into a directory removed when the process ends
        with _lock:
            _scratch = _scratch or tempfile.TemporaryDirectory(prefix="s2d-hexagon-")
        return _build(func, inputs, outputs, Path(tempfile.mkdtemp(dir=_scratch.name)))
    where = _cache() / "programs" / key
    if not (where / "range").exists():
        where.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=where.parent, prefix=".building-"))
        try:
            program = _build(func, inputs, outputs, tmp)
            for scratch in ("main.c", "main.o", "kernel.o"):
                (tmp / scratch).unlink()
            (tmp / "range").write_text(f"{program.lo} {program.hi}")
            os.rename(tmp, where)  # whole or not at all
        except OSError:
            if not (where / "range").exists():  # not a race another build won
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = (int(v) for v in (where / "range").read_text().split())
    return Program(where / "program", lo, hi)


def _build(func, inputs, outputs, work: Path) -> Program:
    work.mkdir(parents=True, exist_ok=True)
    kernel_object(func, SYMBOL, work / "kernel.o")
    (work / "main.c").write_text(_main_source(SYMBOL, inputs, outputs))
    program, libm = _link(work)
    lo, hi = _kernel_range([work / "kernel.o", libm], program)
    return Program(program, lo, hi)


def run_program(program: Program, inputs: list[np.ndarray], outputs, name: str = "kernel") -> Run:
    """``program`` run under qemu-hexagon on ``inputs``: its outputs and the packets it executed."""
    result = subprocess.run(
        ["qemu-hexagon", "-d", "plugin", "-plugin", f"{_plugin()},lo={program.lo:#x},hi={program.hi:#x}", str(program.path)],
        input=b"".join(x.tobytes() for x in inputs), capture_output=True, timeout=1800,
    )
    packets = re.search(rb"packets (\d+)", result.stderr)
    if result.returncode != 0 or packets is None:
        raise EmulatorError(f"{name} failed under qemu-hexagon (exit {result.returncode}): "
                            + result.stderr.decode(errors="replace")[-500:])
    arrays, offset = [], 0
    for shape, dtype in outputs:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        arrays.append(np.frombuffer(result.stdout[offset : offset + size], dtype).reshape(shape))
        offset += size
    if offset != len(result.stdout):
        raise EmulatorError(f"{name} wrote {len(result.stdout)} bytes, expected {offset}")
    return Run(arrays, int(packets.group(1)))


def _main_source(name: str, inputs, outputs) -> str:
    """``_start``: read the inputs, call ``__tvm_ffi_<name>`` with DLTensor arguments, write the outputs."""
    lines = [
        "#include <stdint.h>",
        '#include "dlpack/dlpack.h"',
        '#include "tvm/ffi/c_api.h"',
        "void s2d_exit(int); void s2d_read_all(void*, long); void s2d_write_all(int, const void*, long);",
        f"extern int __tvm_ffi_{name}(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);",
    ]
    tensors = list(inputs) + list(outputs)
    for i, (shape, dtype) in enumerate(tensors):
        if dtype not in DL_TYPES:
            raise EmulatorError(f"unsupported dtype {dtype}")
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        lines.append(f"static unsigned char buf{i}[{size}] __attribute__((aligned(128)));")
        lines.append(f"static int64_t shape{i}[{len(shape)}] = {{{', '.join(str(d) for d in shape)}}};")
    lines += ["void _start(void) {", f"  static DLTensor t[{len(tensors)}];", f"  TVMFFIAny args[{len(tensors)}] = {{{{0}}}};",
              "  TVMFFIAny ret = {0};"]
    for i, (shape, dtype) in enumerate(tensors):
        code, bits = DL_TYPES[dtype]
        lines += [
            f"  t[{i}].data = buf{i}; t[{i}].device.device_type = kDLCPU; t[{i}].ndim = {len(shape)};",
            f"  t[{i}].dtype.code = {code}; t[{i}].dtype.bits = {bits}; t[{i}].dtype.lanes = 1; t[{i}].shape = shape{i};",
            f"  args[{i}].type_index = kTVMFFIDLTensorPtr; args[{i}].v_ptr = &t[{i}];",
        ]
        if i < len(inputs):
            lines.append(f"  s2d_read_all(buf{i}, sizeof buf{i});")
    lines.append(f"  int rc = __tvm_ffi_{name}(0, args, {len(tensors)}, &ret);")
    lines += [f"  s2d_write_all(1, buf{i}, sizeof buf{i});" for i in range(len(inputs), len(tensors))]
    lines += ["  s2d_exit(rc);", "}"]
    return "\n".join(lines) + "\n"


def _ffi_includes() -> list[str]:
    import tvm_ffi

    root = Path(tvm_ffi.__file__).resolve().parent
    return [f"-I{root / 'include'}", f"-I{root / '3rdparty' / 'dlpack' / 'include'}"]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        missing = sorted(set(re.findall(r"undefined symbol: (\S+)", result.stderr)))
        if missing:  # the first line says it: a function the freestanding harness does not have
            raise EmulatorError(f"{what} failed: the kernel calls {', '.join(missing)}, which the harness's libm.c "
                                f"does not provide\n{' '.join(command)}\n{result.stderr[-2000:]}")
        raise EmulatorError(f"{what} failed: {' '.join(command)}\n{result.stderr[-2000:]}")


def _link(work: Path) -> tuple[Path, Path]:
    """The program, and the harness's ``libm.c`` object in it (linked just before the kernel, so
    that the float functions the kernel calls count as its packets)."""
    flags = ["--target=hexagon-unknown-linux-musl", f"-mcpu={HEXAGON_CPU}", "-mhvx", "-mhvx-length=128b",
             "-ffreestanding", "-nostdlib", "-O2", "-ffp-contract=off", *_ffi_includes()]
    objects = [_harness_object(source, flags) for source in (HERE / "runtime.c", HERE / "libm.c")]
    _run(["clang-14", *flags, "-c", str(work / "main.c"), "-o", str(work / "main.o")], "compiling main.c")
    program = work / "program"
    _run(["ld.lld-14", "-static", "-e", "_start", str(work / "main.o"), *map(str, objects), str(work / "kernel.o"),
          "-o", str(program)], "linking")
    return program, objects[1]


def _harness_object(source: Path, flags: list[str]) -> Path:
    """``source`` (``runtime.c``, ``libm.c``) compiled once per version into the user's cache."""
    digest = hashlib.sha256(source.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    obj = _cache() / f"{source.stem}-{digest}.o"
    if not obj.exists():
        obj.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=obj.parent) as tmp:
            _run(["clang-14", *flags, "-c", str(source), "-o", f"{tmp}/{obj.name}"], f"compiling {source.name}")
            os.replace(f"{tmp}/{obj.name}", obj)  # whole or not at all, when processes race
    return obj


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tvm-s2d"


def _symbols(path: Path) -> dict[str, tuple[int, int]]:
    """Defined text symbols: name -> (address, size)."""
    out = subprocess.run(["llvm-nm-14", "-S", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lower() in ("t", "w"):
            symbols[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    return symbols


def _kernel_range(objects: list[Path], program: Path) -> tuple[int, int]:
    """The address range of the code of ``objects`` (the kernel's, and the libm functions it
    calls, linked next to it) inside the linked program."""
    ours = {name for obj in objects for name in _symbols(obj)}
    placed = [(addr, size) for name, (addr, size) in _symbols(program).items() if name in ours]
    if not placed:
        raise EmulatorError("no kernel code found in the linked program")
    return min(a for a, _ in placed), max(a + s for a, s in placed)


def _plugin() -> Path:
    """The packet-counting plugin, built once per source version into the user's cache."""
    source = HERE / "count_packets.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    library = _cache() / f"libcount_packets-{digest}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        _run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], "building the packet-counting plugin")
    return library
