"""The layering rules of docs/architecture.md, read from the source tree with ``ast``.

* ``ikev2/`` is sans-I/O: it imports no ``asyncio``, ``socket``, ``time``, ``selectors`` or
  ``threading`` (the caller owns I/O and the clock).
* The protocol packages (``ikev2 esp nat_t tun``) never import ``aioipsec``; no product
  package imports ``bench``, ``fuzz`` or ``tests``.
* No import cycles between the modules of the repository.

What counts as an import (decided here, documented in docs/architecture.md):

* The layering rules count every import: module level, inside functions, under
  ``if TYPE_CHECKING:``.
* The cycle graph has an edge for every import too, inside functions and under
  ``if TYPE_CHECKING:`` (a type-only import is still a dependency: two modules that need each
  other's names are one module split in two). Only one kind is left out: an import inside a
  function whose statement carries a comment ``# cycle: <which cycle it breaks>``. Such a
  comment must tell the truth: the test fails when the marked import would close no cycle
  (it could move to the module top), or when it sits on a module-level import.
* ``from package import name`` is an edge to ``package.name`` when that is a module of the
  repository, else to ``package`` (its ``__init__``). Parent packages are not edges: Python
  runs a package's ``__init__`` before its submodules, which is not a cycle.

Run ``python -m tests.test_layering`` to print the import cycles found.

One typing rule is checked here too, on every Python file of the packages and the tests: a
``# type: ignore`` names its error code and is followed by a comment saying why
(``# type: ignore[attr-defined]  # scapy adds fields at runtime``). mypy checks the codes
and the unused ones in the packages; nothing else checks the reasons.
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ikev2", "esp", "nat_t", "tun", "aioipsec", "bench", "fuzz")
PROTOCOL_PACKAGES = ("ikev2", "esp", "nat_t", "tun")
PRODUCT_PACKAGES = (*PROTOCOL_PACKAGES, "aioipsec")
SANS_IO_FORBIDDEN = ("asyncio", "socket", "time", "selectors", "threading")
CYCLE_MARK = "# cycle:"
# An ignore comment with its [code, ...] list, then, in the same comment, "# " and a reason.
IGNORE_WITH_REASON = re.compile(r"type:\s*ignore\[[a-z0-9-]+(?:,\s*[a-z0-9-]+)*\]\s+#\s*\S")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the file
    target: str  # dotted module the statement imports (resolved, see module docstring)
    path: Path
    line: int
    in_function: bool
    type_checking: bool
    cycle_mark: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(root, path)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(
    node: ast.AST, in_function: bool, type_checking: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_checking
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True, type_checking)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), in_function, False)
        else:
            yield from _walk(child, in_function, type_checking)


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import statement of one file, resolved to dotted module names."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node, in_function, type_checking in _walk(tree, False, False):
        end = node.end_lineno or node.lineno
        marked = any(CYCLE_MARK in lines[i - 1] for i in range(node.lineno, end + 1))
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = module.split(".")
                # A package's own name is its base for "from . import"; a module's is its parent.
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}"
                targets.append(candidate if candidate in known else prefix)
        for target in dict.fromkeys(targets):
            found.append(
                Import(module, target, path, node.lineno, in_function, type_checking, marked)
            )
    return found


def all_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    modules = source_modules(root, packages)
    known = set(modules)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, known)]


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _where(root: Path, imp: Import) -> str:
    return f"{imp.path.relative_to(root)}:{imp.line} imports {imp.target}"


def layering_violations(root: Path, imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        source, target = _top(imp.importer), _top(imp.target)
        if source == "ikev2" and target in SANS_IO_FORBIDDEN:
            problems.append(f"{_where(root, imp)}: ikev2/ is sans-I/O")
        if source in PROTOCOL_PACKAGES and target == "aioipsec":
            problems.append(f"{_where(root, imp)}: protocol packages never import aioipsec")
        if source in PRODUCT_PACKAGES and target in ("bench", "fuzz", "tests"):
            problems.append(f"{_where(root, imp)}: product code never imports {target}")
    return problems


def cycle_graph(imports: list[Import], known: set[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in imports:
        if imp.in_function and imp.cycle_mark:
            continue
        if imp.target in known and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); returns the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def _reaches(graph: dict[str, set[str]], source: str, goal: str) -> bool:
    seen, todo = {source}, [source]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def stale_cycle_marks(root: Path, imports: list[Import], known: set[str]) -> list[str]:
    """``# cycle:`` imports that would close no cycle at the module top (or sit there)."""
    graph = cycle_graph(imports, known)
    stale = []
    for imp in imports:
        if not imp.cycle_mark:
            continue
        if not imp.in_function:
            stale.append(f"{_where(root, imp)}: '{CYCLE_MARK}' on a module-level import")
        elif imp.target in known and not _reaches(graph, imp.target, imp.importer):
            stale.append(f"{_where(root, imp)}: breaks no cycle, move it to the module top")
    return stale


def import_cycles(root: Path = REPO) -> list[list[str]]:
    imports = all_imports(root)
    known = set(source_modules(root))
    return strongly_connected(cycle_graph(imports, known))


# -- the rules, on this repository ---------------------------------------------------------


def test_protocol_packages_keep_their_layer() -> None:
    assert layering_violations(REPO, all_imports(REPO)) == []


def test_no_import_cycles_between_modules() -> None:
    cycles = import_cycles(REPO)
    assert cycles == [], "import cycles (each line one strongly connected set):\n" + "\n".join(
        " <-> ".join(component) for component in cycles
    )


def test_cycle_comments_name_a_real_cycle() -> None:
    imports = all_imports(REPO)
    assert stale_cycle_marks(REPO, imports, set(source_modules(REPO))) == []


def type_ignores_without_reason(root: Path, packages: tuple[str, ...]) -> list[str]:
    """``file:line`` of every ``type: ignore`` comment without an error code and a reason."""
    bad = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
            for token in tokens:
                if token.type != tokenize.COMMENT or not re.search(r"type:\s*ignore", token.string):
                    continue
                if not IGNORE_WITH_REASON.search(token.string):
                    bad.append(f"{path.relative_to(root)}:{token.start[0]}: {token.string}")
    return bad


def test_every_type_ignore_names_its_code_and_reason() -> None:
    assert type_ignores_without_reason(REPO, (*PACKAGES, "tests")) == []


# -- the checker itself, on small made-up trees (so that the rules above can fail) ----------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_forbidden_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "ikev2/__init__.py": "",
            "ikev2/a.py": "def f():\n    import time\n",
            "ikev2/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from aioipsec import daemon\n",
            "esp/__init__.py": "from asyncio import sleep\n",  # allowed outside ikev2
            "aioipsec/__init__.py": "",
            "aioipsec/daemon.py": "import bench.compare\n",
            "bench/__init__.py": "",
            "bench/compare.py": "",
        },
    )
    problems = layering_violations(root, all_imports(root))
    assert len(problems) == 3
    assert "ikev2/a.py:2 imports time" in problems[0]
    assert "ikev2/b.py:3 imports aioipsec.daemon" in problems[1]
    assert "aioipsec/daemon.py:1 imports bench.compare" in problems[2]


def test_checker_finds_cycles_and_honours_cycle_marks(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "ikev2/__init__.py": "",
            "ikev2/a.py": "from ikev2 import b\n",
            "ikev2/b.py": "from .c import X\n",
            "ikev2/c.py": "X = 1\ndef f():\n    from ikev2.a import g\n",
            "ikev2/d.py": "import ikev2.e\n",
            "ikev2/e.py": "def f():\n    from ikev2.d import y  # cycle: d imports e\n",
            "ikev2/f.py": "def f():\n    from ikev2.c import X  # cycle: none really\n",
            "ikev2/g.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from ikev2.h import H\n",
            "ikev2/h.py": "from ikev2.g import G\n",
        },
    )
    imports = all_imports(root)
    known = set(source_modules(root))
    # a -> b -> c -> a (inside a function, unmarked: counts); d <-> e is marked: left out;
    # g <-> h through a type-only import counts.
    assert import_cycles(root) == [["ikev2.a", "ikev2.b", "ikev2.c"], ["ikev2.g", "ikev2.h"]]
    stale = stale_cycle_marks(root, imports, known)
    assert len(stale) == 1 and "ikev2/f.py:2" in stale[0]


def test_checker_finds_type_ignores_without_reason(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "ikev2/a.py": "x = f()  # type: ignore\n"
            "y = g()  # type: ignore[attr-defined]\n"
            "z = h()  # type: ignore[attr-defined]  # scapy adds fields at runtime\n"
            "w = '# type: ignore'\n",
        },
    )
    bad = type_ignores_without_reason(root, ("ikev2",))
    assert [entry.split(": ", 1)[0] for entry in bad] == ["ikev2/a.py:1", "ikev2/a.py:2"]


if __name__ == "__main__":
    found = import_cycles(REPO)
    for component in found:
        print(" <-> ".join(component))
    print(f"{len(found)} import cycle(s)")
    sys.exit(1 if found else 0)
