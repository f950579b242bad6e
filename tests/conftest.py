"""Test configuration: under CI, property tests draw the same examples every run; a pass
that fails raises (``TVM_S2D_STRICT``) instead of becoming an outcome, so no test passes
over a failure the guard would hide."""

import os

os.environ.setdefault("TVM_S2D_STRICT", "1")

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(items):
    """``hexagon``: the tests that need the emulator (they call ``require_hexagon_tools``, or
    their module does in an autouse fixture); ``-m "not hexagon"`` runs the rest.
    ``compile``: the tests that compile a model (they call ``tvm.compile``, ``relax.build``,
    ``helpers.run`` or the emulator's ``run_model``, directly or through a function of their
    module); ``-m "not compile"`` runs the rest."""
    import inspect

    import pytest

    modules, compiling = {}, {}
    for item in items:
        module = item.module
        if module not in modules:
            source = inspect.getsource(module)
            modules[module] = "autouse=True" in source and "def _tools():\n    require_hexagon_tools()" in source
            compiling[module] = _compiling_functions(module)
        function = getattr(item, "function", None)
        if modules[module] or (function is not None and "require_hexagon_tools" in inspect.getsource(function)):
            item.add_marker(pytest.mark.hexagon)
        if function is not None and function.__name__ in compiling[module]:
            item.add_marker(pytest.mark.compile)


def _compiling_functions(module) -> set[str]:
    """The names of the module's functions that compile a model, directly or through another."""
    import ast
    import inspect

    import tvm
    from tvm import relax

    from helpers import run
    from tvm_s2d.emulator.model import run_model

    roots = (tvm.compile, relax.build, run, run_model)

    def resolve(node):  # a called name or attribute chain, in the module's globals
        if isinstance(node, ast.Name):
            return module.__dict__.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = resolve(node.value)
            return getattr(owner, node.attr, None) if owner is not None else None
        return None

    calls = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.FunctionDef):
            calls[node.name] = [n.func for n in ast.walk(node) if isinstance(n, ast.Call)]
    found = {name for name, funcs in calls.items() if any(any(resolve(f) is r for r in roots) for f in funcs)}
    while True:
        more = {name for name, funcs in calls.items()
                if name not in found and any(isinstance(f, ast.Name) and f.id in found for f in funcs)}
        if not more:
            return found
        found |= more
