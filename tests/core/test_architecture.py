"""The house rules, checked on the source: packages import in one direction, no module imports
itself back through others, and the wheel carries runtime code and data only.

Layers, lowest first (a module may import its own layer's modules and lower layers only):

0. ``callsense.settings``, ``callsense.palette`` (and the ``callsense`` package itself):
   configuration and the charts' colours
1. ``callsense.models``: audio and emotion
2. ``callsense.storage``: the database
3. ``callsense.processors``: stages, diarization, the stream (Faust), alerts, webhooks
4. ``callsense.ingest``: files and producers
5. ``callsense.dashboard``
6. brokers, demo and the command line (``callsense.broker``, ``callsense.cli``, ...)

``benchmarks`` and ``tests`` sit above all of them and are never imported by runtime code.
Imports inside functions count the same as top-level ones.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

LAYERS: list[tuple[str, ...]] = [
    ("callsense", "callsense.settings", "callsense.palette"),
    ("callsense.models",),
    ("callsense.storage",),
    ("callsense.processors",),
    ("callsense.ingest",),
    ("callsense.dashboard",),
    (
        "callsense.broker",
        "callsense.kafka_broker",
        "callsense.broker_cli",
        "callsense.demo",
        "callsense.cli",
    ),
]


def _mapped_folders() -> dict[str, str]:
    """Source folder -> package, read from setup.py's MAPPED (the design card's folders)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    mapped: tuple[str, ...] = ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "MAPPED":
            mapped = ast.literal_eval(node.value)
    assert mapped, "setup.py defines MAPPED"
    return {"callsense": "callsense", **{top: f"callsense.{top}" for top in mapped}}


def runtime_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in _mapped_folders().items():
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = [p for p in f.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = f
    return mods


def imports_of(path: Path, module: str) -> set[str]:
    """Every absolute or relative module name ``path`` imports (functions included)."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    """module -> the runtime modules it imports."""
    mods = runtime_modules()
    return {m: {i for i in imports_of(p, m) if i in mods and i != m} for m, p in mods.items()}


def layer_of(module: str) -> int:
    best, level = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            hit = module == name or (name != "callsense" and module.startswith(name + "."))
            if hit and len(name) > best:
                best, level = len(name), i
    if module == "callsense":
        return 0
    assert level >= 0, f"{module} is in no layer: add it to LAYERS"
    return level


def test_every_runtime_module_is_in_a_layer() -> None:
    for m in runtime_modules():
        layer_of(m)


def test_imports_go_down_the_layers_only() -> None:
    wrong = sorted(
        f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})"
        for m, deps in graph().items()
        for i in deps
        if layer_of(i) > layer_of(m)
    )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    g = graph()
    # a package's __init__ re-exporting its submodules is not a cycle of behaviour
    g = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in g.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, "modules importing each other: " + "; ".join(map(", ".join, cycles))


def test_runtime_code_never_imports_benchmarks_or_tests() -> None:
    mods = runtime_modules()
    bad = sorted(
        f"{m} imports {i}"
        for m, p in mods.items()
        for i in imports_of(p, m)
        if i.split(".")[0] in ("benchmarks", "tests", "support")
    )
    assert not bad, "\n".join(bad)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    """The checks above read real imports: a lower layer importing a higher one is found."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from callsense.dashboard import app\n    from . import stages\n")
    found = imports_of(f, "callsense.processors.m")
    assert {"callsense.dashboard.app", "callsense.processors.stages"} <= found
    assert layer_of("callsense.dashboard.app") > layer_of("callsense.processors.m")


@pytest.mark.timeout(300)
def test_wheel_carries_no_benchmarks_results_or_plots(tmp_path: Path) -> None:
    # built from a copy: setuptools writes build/ and *.egg-info beside the sources
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "build", "var", "bench-results", "*.egg-info", "__py*")
    shutil.copytree(REPO, src, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, timeout=280,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("callsense-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("callsense/processors/app.py") for n in names)
    assert any(n.startswith("callsense/models/artifacts/default/") for n in names)
    bad = [
        n
        for n in names
        if n.startswith(("benchmarks/", "tests/"))
        or "/results/" in n
        or (n.endswith(".png") and not n.startswith("callsense/dashboard/assets/"))
    ]
    assert not bad, bad
