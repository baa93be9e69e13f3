"""Package names that load on first use (PEP 562 module `__getattr__`).

A writer child (`python -m server.batching.child`) imports one module deep inside a package, and
Python imports every package `__init__` on the way. When those re-export their handlers eagerly,
the child loads the whole server (gRPC, metrics, the HTTP stack) to run one batch function: it
took about a second to start, and every server start waits for its children. A package whose
`__init__` re-exports through `exports` loads a name's module only when the name is first read.

    __getattr__ = exports(__name__, handler=("Campaigns", "Choice"), spec=("CampaignSpec",))

Type checkers do not see such names: list them under `if TYPE_CHECKING:` as plain imports too.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["exports"]


def exports(package: str, **modules: tuple[str, ...]) -> Callable[[str], object]:
    """The module `__getattr__` of `package`: each keyword names a submodule (relative) and the
    names it defines. A value is kept on the package after its first read."""
    names = {name: module for module, defined in modules.items() for name in defined}

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__
