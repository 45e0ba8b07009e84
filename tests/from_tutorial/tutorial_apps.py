"""Where the guide and its two apps are (``examples/from-tutorial/{before,after}/app.py``); both modules are
named ``app``, so a test that imports one gives it a name of its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from helpers import ROOT

FROM_TUTORIAL = ROOT / "examples" / "from-tutorial"
BEFORE = FROM_TUTORIAL / "before" / "app.py"
AFTER = FROM_TUTORIAL / "after" / "app.py"
MANIFEST = FROM_TUTORIAL / "after" / "items.toml"
GUIDE = ROOT / "docs" / "from-tutorial.md"


def load_app(path: Path, name: str) -> ModuleType:
    """A fresh copy of the module at ``path``, imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
