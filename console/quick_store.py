"""`engine.store.first_frame` without `engine.store`'s package import (SQLAlchemy, ~0.33 s).

`engine/store/__init__.py` imports the SQLAlchemy store, so any `import engine.store.x` pays for
it before the first frame. The board's first page needs only `first_frame` (stdlib `sqlite3`)
and `views` (dataclasses): this loads those two files under their own module names, so that a
later `import engine.store...` (in a worker, after the first frame) finds them in `sys.modules`
and every class (BoardRow, SearchView, …) stays one and the same class.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

_lock = threading.Lock()
_NAME = "engine.store.first_frame"


def first_frame() -> ModuleType:
    with _lock:
        module = sys.modules.get(_NAME)
        if module is not None:
            return module
        if "engine.store" in sys.modules:  # the store is loaded already: import as usual
            return importlib.import_module(_NAME)
        import engine

        folder = Path(engine.__file__).parent / "store"
        for name in ("views", "first_frame"):
            full = f"engine.store.{name}"
            if full in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(full, folder / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[full]
                raise
        return sys.modules[_NAME]
