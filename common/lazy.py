"""Package surfaces whose names are imported when first used (PEP 562), so importing the
package stays cheap (no torch, MLflow, Optuna or Ray until a name that needs them is used)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_names(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `where` maps each public name to "module" (the
    same name there, or the module itself when it is `package.name`) or "module:attribute"."""

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        module, _, attribute = where[name].partition(":")
        found = import_module(module)
        return found if module == f"{package}.{name}" else getattr(found, attribute or name)

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return getattr_, dir_
