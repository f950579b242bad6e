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
    their module does in an autouse fixture); ``-m "not hexagon"`` runs the rest."""
    import inspect

    import pytest

    modules = {}
    for item in items:
        module = item.module
        if module not in modules:
            source = inspect.getsource(module)
            modules[module] = "autouse=True" in source and "def _tools():\n    require_hexagon_tools()" in source
        function = getattr(item, "function", None)
        if modules[module] or (function is not None and "require_hexagon_tools" in inspect.getsource(function)):
            item.add_marker(pytest.mark.hexagon)
