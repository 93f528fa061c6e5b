"""stellarexp's imports read with ``ast``: which sit inside functions, what each module's
top-level imports load, and which modules the light paths of :mod:`stellarexp.lazy_imports`
run. Used by ``tests/test_layers.py``."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from stellarexp.lazy_imports import EXCEPTIONS, LAZY, LIGHT_PATHS

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Import:
    """One import statement of ``module``."""

    module: str
    lineno: int
    node: ast.Import | ast.ImportFrom
    targets: list[str]  # the dotted modules it imports (a from-import's submodules included)
    top: bool  # runs when the module is imported (not inside a function)
    guarded: bool  # inside ``try`` with ``except ImportError`` (an optional dependency)
    type_checking: bool  # under ``if TYPE_CHECKING:`` (never runs)


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds):
            return True
    return False


def parse_imports(module: str, path: Path, modules) -> list[Import]:
    """Every import statement of one file, with where it sits."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def record(node, in_function, guarded, type_checking):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
        found.append(Import(module, node.lineno, node, targets, not in_function, guarded, type_checking))

    def visit(node, in_function, guarded, type_checking):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            record(node, in_function, guarded, type_checking)
            return
        in_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, in_function, guarded, True)
            for child in node.orelse:
                visit(child, in_function, guarded, type_checking)
            return
        if isinstance(node, ast.Try):
            for child in node.body:
                visit(child, in_function, guarded or _catches_import_error(node), type_checking)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, in_function, guarded, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, in_function, guarded, type_checking)

    visit(ast.parse(path.read_text(), str(path)), False, False, False)
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class ImportGraph:
    """The imports of every module of ``package`` (default: stellarexp)."""

    def __init__(self, package: Path = ROOT / "stellarexp", lazy=LAZY, paths=LIGHT_PATHS,
                 exceptions=EXCEPTIONS):
        self.package = package
        files = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
        self.modules = set(files)
        self.imports = {m: parse_imports(m, p, self.modules) for m, p in files.items()}
        self.lazy, self.exceptions = set(lazy), exceptions
        self.paths = {name: (tuple(entry) + (self.plugin_entries() if not entry else ()), set(forbidden))
                      for name, (entry, forbidden) in paths.items()}
        self._closure: dict[str, tuple[frozenset, frozenset]] = {}

    def plugin_entries(self) -> tuple[str, ...]:
        """The stellarexp modules hydra_plugins imports at its top (Hydra's scan runs them)."""
        out = set()
        for path in (self.package.parent / "hydra_plugins").rglob("*.py"):
            for imp in parse_imports("hydra_plugins._", path, self.modules):
                if imp.top and not imp.type_checking:
                    out |= {t for t in imp.targets if t in self.modules}
        return tuple(sorted(out))

    def own(self, name: str) -> list[str]:
        """The stellarexp modules importing ``name`` runs (its packages' ``__init__`` too)."""
        parts = name.split(".")
        return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in self.modules]

    def invalidate(self) -> None:
        self._closure.clear()

    def closure(self, module: str) -> tuple[frozenset, frozenset]:
        """(stellarexp modules, other modules) that importing ``module`` runs at top level."""
        if module not in self._closure:
            seen, other, todo = set(), set(), self.own(module)
            while todo:
                m = todo.pop()
                if m in seen:
                    continue
                seen.add(m)
                for imp in self.imports[m]:
                    if imp.top and not imp.type_checking:
                        for t in imp.targets:
                            if t.split(".")[0] == self.package.name:
                                todo += self.own(t)
                            else:
                                other.add(t)
            self._closure[module] = (frozenset(seen), frozenset(other))
        return self._closure[module]

    def lazy_loaded(self, imp: Import) -> set[str]:
        """The :data:`LAZY` modules that ``imp`` loads (through stellarexp modules' tops too)."""
        names = set()
        for t in imp.targets:
            if t.split(".")[0] == self.package.name:
                for m in self.own(t):
                    names |= self.closure(m)[1]
            else:
                names.add(t)
        return {lazy for lazy in self.lazy if any(_matches(n, lazy) for n in names)}

    def exception(self, imp: Import) -> str | None:
        for (module, target), why in self.exceptions.items():
            if module == imp.module and any(_matches(t, target) for t in imp.targets):
                return why
        return None

    def function_level(self) -> list[Import]:
        return [imp for imps in self.imports.values() for imp in imps if not imp.top]

    def path_modules(self, name: str) -> set[str]:
        """The modules light path ``name`` may run: its entry modules, their top-level imports
        and the function-level imports that load none of its forbidden modules."""
        entry, forbidden = self.paths[name]
        seen, todo = set(), [m for e in entry for m in self.own(e)]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo += self.closure(m)[0] - seen
            for imp in self.imports[m]:
                if not imp.top and not imp.type_checking and not self.lazy_loaded(imp) & forbidden:
                    todo += [o for t in imp.targets for o in self.own(t) if o not in seen]
        return seen

    def justification(self, imp: Import, paths: dict[str, set[str]]) -> str | None:
        """Why ``imp`` may sit inside a function, or None."""
        if imp.guarded:
            return "optional dependency (except ImportError)"
        why = self.exception(imp)
        if why:
            return why
        loads = self.lazy_loaded(imp)
        for name, modules in paths.items():
            if imp.module in modules and loads & self.paths[name][1]:
                return f"{name} must not load {sorted(loads & self.paths[name][1])}"
        return None

    def unjustified(self) -> list[Import]:
        """Function-level imports that could sit at module top."""
        paths = {name: self.path_modules(name) for name in self.paths}
        return [imp for imp in self.function_level() if self.justification(imp, paths) is None]
