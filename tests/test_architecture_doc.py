"""docs/architecture.md names what the code has, and the code has what it names (issue 12).

The package tree must list every module of the product packages and nothing else; every
event class, task module, TaskContext member and routed exchange must be named on the page;
every dotted or backticked ``module.name`` reference in the text must resolve.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import ikev2.events
from ikev2.tasks import context
from ikev2.tasks.dispatch import ROUTES

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
PRODUCT = ("ikev2", "esp", "nat_t", "tun", "aioipsec")


def _tree_block() -> str:
    start = DOC.index("## The package tree")
    return DOC[start:].split("```", 2)[1]


def tree_paths() -> set[str]:
    """Module and folder paths in the tree, rebuilt from the indentation."""
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in _tree_block().splitlines():
        match = re.match(r"^( *)([A-Za-z_][\w.]*/?)(?:\s|$)", line)
        if not match or (match.group(1) and len(match.group(1)) % 2):
            continue
        indent, name = len(match.group(1)), match.group(2)
        if not (name.endswith("/") or name.endswith(".py")):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = parent + name
        paths.add(path)
        if name.endswith("/"):
            stack.append((indent, path))
    return paths


def code_modules() -> set[str]:
    found: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py") or "__pycache__" in path.parts:
                continue
            found.add(path.relative_to(ROOT).as_posix())
    return found


def test_tree_lists_every_module_and_nothing_else() -> None:
    listed = {p for p in tree_paths() if p.endswith(".py")}
    modules = code_modules()
    missing = sorted(modules - listed)
    extra = sorted(listed - modules)
    assert not missing, f"modules missing from docs/architecture.md's tree: {missing}"
    assert not extra, f"docs/architecture.md's tree names modules that do not exist: {extra}"


def test_tree_folders_exist() -> None:
    for folder in (p for p in tree_paths() if p.endswith("/")):
        assert (ROOT / folder).is_dir(), f"docs/architecture.md names a missing folder {folder}"


def test_every_event_is_named() -> None:
    events = [
        name
        for name, value in vars(ikev2.events).items()
        if isinstance(value, type)
        and issubclass(value, ikev2.events.Event)
        and value is not ikev2.events.Event
        and value.__module__ == "ikev2.events"
    ]
    assert events
    missing = [name for name in events if f"`{name}`" not in DOC]
    assert not missing, f"events not in docs/architecture.md: {missing}"


def test_every_task_context_member_is_named() -> None:
    tree = ast.parse(Path(context.__file__).read_text())
    protocol = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == "TaskContext"
    )
    members = set()
    for node in protocol.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            members.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members.add(node.target.id)
    members = {m for m in members if not m.startswith("_")}
    assert len(members) > 20
    section = DOC[DOC.index("### Tasks and their context") : DOC.index("### Exchange routing")]
    missing = sorted(m for m in members if f"`{m}`" not in section)
    assert not missing, f"TaskContext members not in docs/architecture.md: {missing}"


def test_every_routed_exchange_and_responder_is_named() -> None:
    section = DOC[DOC.index("### Exchange routing") : DOC.index("### Errors")]
    for exchange, route in ROUTES.items():
        assert exchange.name in section, exchange
        if route.responder is not None:
            assert f"`{type(route.responder).__name__}`" in section, route


def test_dotted_references_resolve() -> None:
    """`pkg.module.Name` references in backticks name real modules and attributes."""
    failures = []
    for ref in sorted(set(re.findall(r"`((?:ikev2|esp|nat_t|tun|aioipsec)(?:\.\w+)+)", DOC))):
        parts = ref.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                if not hasattr(obj, attr):
                    failures.append(ref)
                    break
                obj = getattr(obj, attr)
            break
        else:
            failures.append(ref)
    assert not failures, f"docs/architecture.md references that do not resolve: {failures}"
