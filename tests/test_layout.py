"""The architecture as a test: every import of fastkrb's own modules goes down the floors of docs/architecture.md,
there is no import circle, and a sidecar client loads neither the native core nor a replay backend."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "fastkrb"

# floor of each top-level part of the package (docs/architecture.md); a module imports only its floor or lower
FLOORS = {
    "_native": 0, "errors": 0, "enctypes": 0, "files": 0,
    "krb": 1, "replay": 1,
    "keytab": 2, "diagnose": 2, "validator": 2, "testing": 2, "policy": 2, "groups": 2, "sessions": 2, "challenge": 2,
    "client": 3, "sidecar": 3, "web": 3,
    "tools": 4, "capacity": 4, "__main__": 4,
}
# what a part must never import, whatever its floor
FORBIDDEN = {
    "sidecar": {"testing", "tools", "capacity", "web", "client"},   # the daemon runs no minting code
    "web": {"testing", "sidecar", "tools", "capacity"},
    "sessions": {"testing", "_native"},   # the daemon opens sessions: no minting code; no native core needed
    "client": {"_native", "replay", "validator", "keytab", "testing", "policy"},   # policy loads _native
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    out["fastkrb._native"] = PKG / "_native.pyi"
    return out


NATIVE = SRC.parent / "native"


def _native_imports(mods: dict[str, Path]) -> set[str]:
    """What the compiled core imports at run time (its .pyx/.pxi; the .pyi's imports serve types only)."""
    found = set()
    for p in [*NATIVE.glob("*.pyx"), *NATIVE.glob("*.pxi")]:
        for m in re.finditer(r"^\s*from (fastkrb[\w.]*) (?:c?import) ([\w, ]+)|^\s*import (fastkrb[\w.]*)",
                             p.read_text(), re.M):
            module = m.group(1) or m.group(3)
            names = [n.strip() for n in (m.group(2) or "").split(",") if n.strip()]
            found |= {f"{module}.{n}" if f"{module}.{n}" in mods else module for n in names} or {module}
    return found & set(mods)


def _imports(path: Path, mods: dict[str, Path], name: str) -> set[str]:
    """fastkrb modules that ``path`` imports, at any depth of the file (lazy imports count too)."""
    if name == "fastkrb._native":
        return _native_imports(mods) - {name}
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastkrb"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fastkrb"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in mods else node.module)
    found.discard(name)
    return {m for m in found if m in mods}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, mods, name) for name, path in mods.items() if name != "fastkrb"}


def test_every_part_has_a_floor() -> None:
    assert {_part(m) for m in _graph()} <= set(FLOORS), "a new part of the package needs a floor in FLOORS"


def test_imports_go_down_the_floors() -> None:
    wrong = []
    for mod, deps in _graph().items():
        me = _part(mod)
        for dep in deps:
            them = _part(dep)
            if them == "" or them == me:
                continue
            if FLOORS[them] > FLOORS[me] or them in FORBIDDEN.get(me, ()):
                wrong.append(f"{mod} -> {dep}")
    assert not wrong, wrong


def test_no_import_circle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not circles, circles


def test_client_import_is_light() -> None:
    code = ("import sys, fastkrb.client; "
            "print(sorted(m for m in sys.modules if m.startswith(('fastkrb', 'redis', 'cryptography', 'pyasn1'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)   # a list literal printed by the child
    assert loaded == ["fastkrb", "fastkrb.client", "fastkrb.errors", "fastkrb.sidecar", "fastkrb.sidecar.protocol"]


def test_top_level_names_load_on_use() -> None:
    import fastkrb

    assert sorted(fastkrb.__all__) == sorted(fastkrb._WHERE)
    for name in fastkrb.__all__:
        assert getattr(fastkrb, name) is not None
    assert "Validator" in dir(fastkrb)
