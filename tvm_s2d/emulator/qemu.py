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

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm

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
    """A TIR ``PrimFunc`` compiled for ``codegen_target()`` under the symbol ``name``."""
    mod = tvm.IRModule({name: func.with_attr("global_symbol", name)})
    return tvm.compile(mod, target=codegen_target()).mod


def run_kernel(func, inputs: list[np.ndarray], outputs: list[tuple[tuple[int, ...], str]], name: str = "kernel",
               workdir: str | os.PathLike | None = None) -> Run:
    """Compile ``func`` (a TIR ``PrimFunc`` whose parameters are the inputs, then the outputs),
    run it on ``inputs`` under qemu-hexagon, return the outputs and the packets executed."""
    check_tools()
    inputs = [np.require(x, requirements="C") for x in inputs]  # ascontiguousarray would make 0-d arrays 1-d
    with tempfile.TemporaryDirectory(prefix="s2d-hexagon-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        compile_kernel(func, name).write_to_file(str(work / "kernel.o"))
        (work / "main.c").write_text(_main_source(name, [(x.shape, str(x.dtype)) for x in inputs], outputs))
        program, libm = _link(work)
        lo, hi = _kernel_range([work / "kernel.o", libm], program)
        result = subprocess.run(
            ["qemu-hexagon", "-d", "plugin", "-plugin", f"{_plugin()},lo={lo:#x},hi={hi:#x}", str(program)],
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
