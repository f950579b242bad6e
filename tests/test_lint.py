"""The package's own checks: ruff's lint (configured in pyproject.toml), no import cycle among
tvm_s2d's modules (function-level imports and package __init__s included), small modules."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tvm_s2d"


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    result = subprocess.run([ruff, "check", "tvm_s2d", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the tvm_s2d modules it imports anywhere in its code (importing ``a.b.c``
    also runs ``a.b``'s ``__init__``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
                targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for found in targets:
                if found in modules and found != name:
                    parts = found.split(".")
                    deps |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
        graph[name] = {d for d in deps if d in modules and d != name and not name.startswith(d + ".")}
    return graph


def test_no_import_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


#: The floors of the package, lowest first (the README's chain as data): a module imports only
#: from its own floor or below. The longest prefix names a module's floor.
FLOORS = [
    ["geometry"],
    ["targets"],
    ["schedules", "emulator", "qoperator", "onnx_shapes", "quantize", "checks"],  # emulator: the kernel runner (qemu, layer)
    ["passes.relax_tools", "passes.outcome", "passes.rules", "passes.fold_constants", "passes.conv_layout",
     "passes.channel_shuffle"],  # the Relax toolkit, the refusal protocol, rewrite rules, constants folded with numpy, conv
    # layouts, the channel shuffle they carry
    ["passes.quantized", "passes.power_as_roots", "passes.remove_dropout", "passes.fold_batch_norm", "passes.sum_as_adds",
     "passes.prepare"],
    # integer ops, powers as roots, dropouts as the identity, batch norms folded: before the rewrite
    ["passes.s2d"],  # the rewrite
    ["passes"],  # the targets' passes (passes.hexagon, passes.cpu) and the package's __init__
    ["tuning"],  # the tuning log and the tuned values the pipeline reads
    ["pipeline"],
    ["report", "emulator.model", "emulator.kinds", "onnx_import", "onnx_names", "tuner"],  # what compiles, runs, names kernels, measures
    ["demo", "bench", "models", "zoo", "zoo_check", "cli", "__init__"],
]


def _floor(module: str) -> int:
    rest = module.removeprefix("tvm_s2d").removeprefix(".") or "__init__"
    found = [(len(prefix), i) for i, floor in enumerate(FLOORS) for prefix in floor
             if rest == prefix or rest.startswith(prefix + ".")]
    assert found, f"{module} is on no floor of FLOORS"
    return max(found)[1]


def test_imports_only_go_down():
    graph = import_graph()
    upward = [f"{m} (floor {_floor(m)}) imports {d} (floor {_floor(d)})"
              for m, deps in graph.items() for d in deps if _floor(d) > _floor(m) and d != "tvm_s2d"]
    assert not upward, "\n".join(upward)
