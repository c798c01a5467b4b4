"""Deep imports only inside a package: a module of one top-level package (or a bench script)
imports another package only through its public surface, a name in that package's `__all__`
(`from search_space import TrialConfig`, not `from search_space.point import TrialConfig`).
The imports are read with `ast` (nothing imported); `python tests/test_import_surface.py` lists
every deep import, each with the surface name to use instead."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "search_space", "trials", "storage", "dashboard", "vlmsearch")
SCANNED = (*PACKAGES, "bench")
# A package (or module) whose `__all__` others may import from: every top-level package, and a
# subpackage or module that declares one (trials.search has no `__init__` yet: its public names
# are in `trials`; storage.testing is test infrastructure, apart from the store's surface).
SURFACES = tuple(name for name in (*PACKAGES, "trials.search", "storage.testing", "search_space.analysis")
                 if (ROOT / f"{name.replace('.', '/')}/__init__.py").exists()
                 or (ROOT / f"{name.replace('.', '/')}.py").exists())



@dataclass(frozen=True)
class DeepImport:
    """One imported name (or module) that reaches past another package's surface."""

    file: str
    line: int
    module: str
    name: str | None  # None for `import a.b.c`
    use: str  # the import to write instead, or what to add to a surface

    def __str__(self) -> str:
        what = f"from {self.module} import {self.name}" if self.name else f"import {self.module}"
        return f"{self.file}:{self.line}: {what} -> {self.use}"


def _surface_file(surface: str) -> Path:
    folder = ROOT / surface.replace(".", "/")
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _strings(node: ast.expr | None, literals: dict[str, ast.expr]) -> list[str]:
    """The strings an `__all__` expression lists: a list or tuple literal, `sorted(D)` of a dict
    literal `D` (the lazy packages' name -> module table), `[*A, "b"]`, `A + B`."""
    if isinstance(node, ast.Name):
        return _strings(literals.get(node.id), literals)
    if isinstance(node, ast.Call) and len(node.args) == 1:
        return _strings(node.args[0], literals)
    if isinstance(node, ast.BinOp):
        return _strings(node.left, literals) + _strings(node.right, literals)
    if isinstance(node, ast.Starred):
        return _strings(node.value, literals)
    if isinstance(node, ast.Dict):
        return [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [s for elt in node.elts for s in _strings(elt, literals)]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    return []


@dataclass(frozen=True)
class Surface:
    names: frozenset[str]  # `__all__`
    origins: dict[tuple[str, str], str]  # (module, name there) -> the public name


def read_surface(name: str) -> Surface:
    """`__all__` of a surface, and where its names come from (its imports and lazy tables)."""
    path = _surface_file(name)
    tree = ast.parse(path.read_text())
    literals, origins = {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    literals[target.id] = node.value
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                origins[(_absolute(node, path), alias.name)] = alias.asname or alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant) \
                        and isinstance(value.value, str):
                    module, _, attribute = value.value.partition(":")
                    origins[(module, attribute or key.value)] = key.value
    return Surface(frozenset(_strings(literals.get("__all__"), literals)), origins)


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def _surface_of(module: str) -> str | None:
    """The longest surface that `module` is, or lies inside."""
    found = [s for s in SURFACES if module == s or module.startswith(s + ".")]
    return max(found, key=len) if found else None


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    if not node.level:
        return node.module or ""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)  # an __init__'s last part: its package
    return ".".join(parts[: len(parts) - node.level] + ([node.module] if node.module else []))


def _advice(module: str, name: str | None, surfaces: dict[str, Surface]) -> str:
    near = _surface_of(module)
    if name is None:
        return f"import {near} (and use its public names)"
    for where in sorted({near, module.split(".")[0]} - {None}, key=len, reverse=True):
        public = surfaces[where].origins.get((module, name))
        if public in surfaces[where].names:
            return f"from {where} import {public}"
    for where in sorted({near, module.split(".")[0]} - {None}, key=len, reverse=True):
        if name in surfaces[where].names:
            return f"from {where} import {name}"
    return f"add {name!r} to {near}.__all__ (or keep it inside its package)"


def deep_imports(files: list[Path] | None = None) -> Iterator[DeepImport]:
    """Every cross-package import in the scanned folders that does not go through a surface."""
    surfaces = {s: read_surface(s) for s in SURFACES}
    for path in files or sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py")):
        own, rel = _package(path), path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top, surface = alias.name.split(".")[0], _surface_of(alias.name)
                    if top in PACKAGES and top != own and alias.name != surface:
                        advice = _advice(alias.name, None, surfaces)
                        yield DeepImport(rel, node.lineno, alias.name, None, advice)
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, path)
                top, surface = module.split(".")[0], _surface_of(module)
                if top not in PACKAGES or top == own:
                    continue
                for alias in node.names:
                    public = module == surface and (alias.name in surfaces[surface].names
                                                    or f"{module}.{alias.name}" in SURFACES)
                    if not public:
                        yield DeepImport(rel, node.lineno, module, alias.name,
                                         _advice(module, alias.name, surfaces))


def test_cross_package_imports_go_through_the_surfaces() -> None:
    found = [str(deep) for deep in deep_imports()]
    assert not found, "deep imports across packages (use the surface):\n" + "\n".join(found)


def test_every_public_name_resolves() -> None:
    """Every name in a surface's `__all__` is there (a lazy table's entries too: imported now)."""
    for name in SURFACES:
        module = import_module(name)
        missing = [public for public in read_surface(name).names if not hasattr(module, public)]
        assert not missing, f"{name}.__all__ names what it does not have: {sorted(missing)}"


def test_the_surfaces_load_no_heavy_library() -> None:
    """Importing every package is cheap: the lazy surfaces load no torch, MLflow, Optuna or Ray."""
    code = (f"import sys; import {', '.join(PACKAGES)}\n"
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'optuna', 'ray')"
            " if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


if __name__ == "__main__":
    deep = list(deep_imports())
    print("\n".join(map(str, deep)))
    print(f"{len(deep)} deep imported names in {len({(d.file, d.line) for d in deep})} import statements")
