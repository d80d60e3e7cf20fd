"""``examples/gallery.py`` loaded as a module (``examples/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

GALLERY = Path(__file__).resolve().parents[2] / "examples" / "gallery.py"


def load_gallery() -> ModuleType:
    """The gallery module, loaded once per process (its entity classes must stay the same ones)."""
    module = sys.modules.get("gallery")
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location("gallery", GALLERY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gallery"] = module
    spec.loader.exec_module(module)
    return module
