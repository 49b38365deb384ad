"""Import hygiene: no cycles inside tracker/, and each command loads only what it uses.

What a process loads is read from `sys.modules` at its exit, in a real process started the way
the `tracker` entry point starts (`tracker.cli:main`): a lazy import counts as much as one at
the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from itertools import pairwise
from pathlib import Path

import pytest
from support import ROOT, epochs, free_port, gpsr_section, mmt_section, stored_times, wait_for

import tracker
from tracker import cli, config

PACKAGE = ROOT / "tracker"

# `python -c` as the `tracker` console script, writing the loaded modules to argv[1] at exit.
DUMP_MODULES = """\
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
from tracker.cli import main
sys.exit(main(sys.argv[1:]))
"""


def loaded_by(*args: str, tmp_path: Path) -> set[str]:
    """The modules loaded by `tracker <args>`, run to its end."""
    out = tmp_path / "modules.txt"
    subprocess.run(
        [sys.executable, "-c", DUMP_MODULES, str(out), *args],
        capture_output=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    return set(out.read_text().split())


def test_the_version_is_pyprojects():
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert tracker.__version__ == tomllib.load(f)["project"]["version"]


def test_the_clis_default_config_is_the_configs():
    assert Path(cli.DEFAULT_CONFIG) == config.DEFAULT_PATH


# --- no cycles -------------------------------------------------------------------------------


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_edges(mods: dict[str, Path], root: Path = ROOT) -> dict[str, dict[str, str]]:
    """module -> {imported tracker module: where ("file:line" from `root`)}, counting every
    import statement: at the top, inside functions, under `if TYPE_CHECKING:`."""
    edges: dict[str, dict[str, str]] = {name: {} for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the package, up level - 1
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from tracker.x import y` imports tracker.x, and tracker.x.y if y is a module
                targets = [source, *(f"{source}.{a.name}" for a in node.names)]
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
            for target in targets:
                if target in mods and target != name:
                    edges[name].setdefault(target, where)
    return edges


def strongly_connected(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Tarjan's components, iteratively (no recursion limit to think about)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def a_cycle(start: str, members: list[str], edges: dict[str, dict[str, str]]) -> list[str]:
    """The shortest path from `start` back to itself inside one component."""
    paths = {start: [start]}
    queue = [start]
    for node in queue:
        for child in sorted(edges[node]):
            if child == start:
                return paths[node] + [start]
            if child in members and child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    raise AssertionError(f"{start} is on no cycle in {members}")


def test_no_import_cycles_inside_tracker():
    edges = import_edges(modules())
    cycles = []
    for members in strongly_connected(edges):
        if len(members) > 1:
            path = a_cycle(members[0], members, edges)
            steps = "".join(f" -> {b} ({edges[a][b]})" for a, b in pairwise(path))
            cycles.append(f"{path[0]}{steps}; modules on cycles with it: {', '.join(members)}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_one():
    edges = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:1"}, "c": {"a": "c.py:1"}, "d": {"a": ""}}
    assert [c for c in strongly_connected(edges) if len(c) > 1] == [["a", "b", "c"]]
    assert a_cycle("a", ["a", "b", "c"], edges) == ["a", "b", "c", "a"]


def test_relative_imports_and_modules_named_in_from_imports_are_edges(tmp_path):
    pkg = tmp_path / "tracker"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("def f():\n    from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..sub import other\n"
    )
    (pkg / "sub" / "other.py").write_text("from tracker import sub\n")
    mods = {
        "tracker": pkg / "__init__.py",
        "tracker.sub": pkg / "sub" / "__init__.py",
        "tracker.sub.leaf": pkg / "sub" / "leaf.py",
        "tracker.sub.other": pkg / "sub" / "other.py",
    }
    edges = import_edges(mods, tmp_path)
    assert set(edges["tracker.sub"]) == {"tracker.sub.leaf"}
    assert set(edges["tracker.sub.leaf"]) == {"tracker.sub", "tracker.sub.other"}
    assert set(edges["tracker.sub.other"]) == {"tracker", "tracker.sub"}


# --- what each command loads -------------------------------------------------------------------

# Not for the daemon: a command's module, a test server, or what only those use.
# ... nor what costs resident memory it does not use (scripts/bench.py, `memory`): asyncio is
# for BLE sensors only; requests is the tests' HTTP client, the senders use http.client.
NOT_FOR_RUN = ("tracker.demo", "tracker.simulate", "tracker.doctor", "tracker.testing", "gpxpy",
               "importlib.metadata", "asyncio", "requests", "urllib3", "charset_normalizer",
               "pynmea2")  # fmt: skip
NOT_FOR_RUN_PACKAGES = tuple(f"{name}." for name in NOT_FOR_RUN)  # and their submodules


def test_tracker_help_loads_no_command_module(tmp_path):
    loaded = loaded_by("--help", tmp_path=tmp_path)
    assert {m for m in loaded if m.split(".")[0] == "tracker"} == {"tracker", "tracker.cli"}
    assert "importlib.metadata" not in loaded


def test_a_module_commands_help_loads_its_module_only(tmp_path):
    loaded = loaded_by("serve-gpsr", "--help", tmp_path=tmp_path)
    assert "tracker.testing.gpsr" in loaded
    assert not {"tracker.demo", "tracker.simulate", "tracker.doctor"} & loaded


@pytest.mark.slow
def test_tracker_run_loads_no_demo_simulator_doctor_test_server_or_gpxpy(daemon, gps, tmp_path):
    """A real daemon with both HTTP backends (nothing listens: each makes its connection and
    fails), recording fixes from a pty, then stopped by SIGTERM."""
    nobody = f"http://127.0.0.1:{free_port()}/"
    d = daemon(mmt_section(nobody, "pw") + gpsr_section(nobody, "token"))
    out = tmp_path / "modules.txt"
    with d.log.open("a") as log:
        d.proc = subprocess.Popen(
            [sys.executable, "-c", DUMP_MODULES, str(out), "run", "-c", str(d.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    d.wait_gps_open()
    for epoch in epochs(30):
        gps.write(epoch.data)
    wait_for(lambda: stored_times(d.db), what=f"fixes stored (log: {d.log})")
    assert d.terminate() == 0
    loaded = set(out.read_text().split())
    assert "tracker.daemon" in loaded and "tracker.gps" in loaded, "the daemon really ran"
    wrong = sorted(m for m in loaded if m in NOT_FOR_RUN or m.startswith(NOT_FOR_RUN_PACKAGES))
    assert not wrong, f"`tracker run` loaded {wrong}"
