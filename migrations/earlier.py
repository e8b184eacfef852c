"""An earlier revision's module, for a downgrade that restores what it defined.

A revision that replaces a SQL function restores the previous definition from the
revision that wrote it, rather than keeping a second copy of its text.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

VERSIONS = Path(__file__).parent / "versions"


def revision(number: str) -> ModuleType:
    """The module of revision `number` (its file is `versions/{number}_*.py`)."""
    [path] = VERSIONS.glob(f"{number}_*.py")
    spec = importlib.util.spec_from_file_location(f"revision_{number}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
