"""The shape of the code: an import graph without cycles, one-line module docstrings, hooks documented and
exercised through real plugins.

The import graph counts every import a module holds: at the top, inside functions and under
``TYPE_CHECKING`` (Python tolerates some cycles at run time, but each is an edge of the design), with
relative imports resolved. ``from pkg import mod`` is an edge to ``pkg.mod`` alone: a package's
``__init__`` runs before any of its modules anyway.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pytest

from mlop import hookspecs

ROOT = Path(__file__).parents[1]
SOURCES = sorted(ROOT.glob("packages/*/src"))


@dataclasses.dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def find_modules(sources: Iterable[Path]) -> dict[str, Module]:
    """Every module under the given source folders, by dotted name."""
    modules: dict[str, Module] = {}
    for src in sources:
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    return modules


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The module an imported name lands in: itself, or the nearest enclosing module that exists."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: Module, modules: dict[str, Module]) -> set[str]:
    """The modules (among ``modules``) that ``module`` imports anywhere in its body."""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != module.name:
                found.add(known)
    return found


def import_graph(sources: Iterable[Path]) -> dict[str, set[str]]:
    modules = find_modules(sources)
    return {name: imports_of(module, modules) for name, module in modules.items()}


def _groups(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def _shortest_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest cycle through the group's first module, as a path that ends where it starts."""
    start, members = group[0], set(group)
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start} in {group}")


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per group of modules that import each other: a cycle in it, and the whole group."""
    return [
        f"{' -> '.join(_shortest_cycle(graph, group))}   (group: {', '.join(group)})"
        for group in _groups(graph)
    ]


# -- the import graph -------------------------------------------------------------------------------------


def test_no_package_has_an_import_cycle() -> None:
    found = cycles(import_graph(SOURCES))
    assert not found, "import cycles (break each with a small types module, or merge):\n" + "\n".join(found)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def test_the_cycle_finder_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, TYPE_CHECKING and relative imports all make edges; a parent package does not."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg import a\n",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg.sub.c import C
            """,
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": """
                class C:
                    def f(self):
                        import pkg.a
            """,
            "pkg/d.py": "from .e import x\n",
            "pkg/e.py": "x = 1\ndef g():\n    from pkg import d\n",
            "pkg/f.py": "from pkg import a\n",  # pkg -> a, f -> a: no cycle through the package itself
        },
    )
    graph = import_graph([tmp_path])
    assert graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert cycles(graph) == [
        "pkg.a -> pkg.b -> pkg.sub.c -> pkg.a   (group: pkg.a, pkg.b, pkg.sub.c)",
        "pkg.d -> pkg.e -> pkg.d   (group: pkg.d, pkg.e)",
    ]
    (tmp_path / "pkg" / "e.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "c.py").write_text("class C: ...\n")
    assert cycles(import_graph([tmp_path])) == []


def test_core_imports_no_other_package_but_through_the_compat_shim() -> None:
    graph = import_graph(SOURCES)
    outside = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.split(".")[0] == "mlop" and not (name == "mlop.compat" or name.startswith("mlop.compat."))
        for target in targets
        if target.split(".")[0] != "mlop"
    )
    assert outside == []
    shim = {t for n, ts in graph.items() if n.startswith("mlop.compat") for t in ts if t.startswith("mlop_")}
    assert shim == {"mlop_compat", "mlop_compat.neptune", "mlop_compat.wandb"}


# -- module docstrings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", sorted(find_modules(SOURCES).values(), key=lambda m: m.name), ids=lambda m: m.name
)
def test_every_module_says_in_one_line_what_it_holds(module: Module) -> None:
    doc = ast.get_docstring(ast.parse(module.path.read_text()), clean=True)
    assert doc, f"{module.path.relative_to(ROOT)} has no docstring"
    lines = doc.splitlines()
    assert lines[0].strip(), f"{module.name}: the docstring's first line is empty"
    assert len(lines) == 1 or not lines[1].strip(), f"{module.name}: the summary runs over one line"


# -- hooks ------------------------------------------------------------------------------------------------

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("mlop_"))


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    signature = str(inspect.signature(getattr(hookspecs, hook))).replace("'", "")
    heading = f"### `{hook}{signature}`"
    assert heading in doc, f"docs/plugins.md has no '{heading}'"
    section = doc.split(heading, 1)[1].split("\n#", 1)[0]
    assert section.strip(), f"docs/plugins.md says nothing under {heading}"


# Collects, in a pytest run, which hooks were called on an implementation defined outside packages/ (a
# plugin that a test wrote and registered), through mlop's own plugin manager.
_RECORDER = """
import inspect, json, os
from pathlib import Path
import pluggy

PACKAGES = Path(os.environ["MLOP_ARCH_PACKAGES"]).resolve()
called = set()
_init = pluggy.PluginManager.__init__


def __init__(self, project_name, *args, **kwargs):
    _init(self, project_name, *args, **kwargs)
    if project_name != "mlop":
        return

    def before(hook_name, impls, kwargs):
        # Wrap each implementation from outside packages/ once, so that only a call that really reached it
        # counts (a first-result hook stops at the first answer).
        for impl in impls:
            if getattr(impl.function, "mlop_arch_hook", None):
                continue
            try:
                path = Path(inspect.getfile(impl.function)).resolve()
            except TypeError:
                continue
            if path.is_relative_to(PACKAGES):
                continue
            original = impl.function

            def wrapped(*args, _original=original, _hook=hook_name, **kwargs):
                called.add(_hook)
                return _original(*args, **kwargs)

            wrapped.mlop_arch_hook = hook_name
            impl.function = wrapped

    self.add_hookcall_monitoring(before, lambda outcome, hook_name, impls, kwargs: None)


pluggy.PluginManager.__init__ = __init__


def pytest_sessionfinish(session, exitstatus):
    Path(os.environ["MLOP_ARCH_RECORD"]).write_text(json.dumps(sorted(called)))
"""


def hooks_called_by_test_plugins(test_files: list[Path], tmp_path: Path) -> set[str]:
    """Run ``test_files`` and return the hooks they called on plugins of their own."""
    (tmp_path / "mlop_arch_recorder.py").write_text(_RECORDER)
    record = tmp_path / "called.json"
    env = {
        **os.environ,
        "MLOP_ARCH_PACKAGES": str(ROOT / "packages"),
        "MLOP_ARCH_RECORD": str(record),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "mlop_arch_recorder", "-p", "no:cacheprovider"]
        + [str(f) for f in test_files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return set(json.loads(record.read_text()))


def test_every_hook_is_called_through_a_real_plugin_in_a_test(tmp_path: Path) -> None:
    """Each hook spec has a test that registers a plugin implementing it and makes core call it.

    The test files that define an implementation of some hook are run with a recorder on mlop's plugin
    manager; a hook counts when core called it and an implementation from outside ``packages/`` (the
    test's own plugin) was among those called.
    """
    pattern = re.compile(rf"\bdef ({'|'.join(HOOKS)})\(")
    files = sorted(
        p
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.resolve() != Path(__file__).resolve() and pattern.search(p.read_text())
    )
    assert files, "no test file implements any hook"
    called = hooks_called_by_test_plugins(files, tmp_path)
    missing = sorted(set(HOOKS) - called)
    assert not missing, f"hooks no test calls through a plugin of its own: {missing} (ran {files})"
