"""The production image definition (deploy/Dockerfile) and its health probe.

No Docker engine runs here, so the Dockerfile is checked statically for the properties the
deployment relies on; the health probe runs for real against local servers.
"""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
PROBE = REPO / "deploy" / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for op, rest in instructions():
        if op == "FROM":
            result.append([])
        if result:
            result[-1].append((op, rest))
    return result


def test_multi_stage_non_root_runtime() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    runtime = all_stages[-1]
    users = [rest for op, rest in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # the runtime stage installs nothing with pip and carries the venv from the build stage
    assert not any(op == "RUN" and "pip install" in rest for op, rest in runtime)
    assert any(op == "COPY" and rest.startswith("--from=build /opt/venv") for op, rest in runtime)
    entry = [rest for op, rest in runtime if op == "CMD"]
    assert entry and "callsense" in entry[-1]


def test_cpu_torch_matches_project_pins() -> None:
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(p for p in pins if p.startswith("torch=="))
    torchaudio = next(p for p in pins if p.startswith("torchaudio=="))
    version = torch.split("==")[1]
    assert torchaudio.split("==")[1] == version
    text = DOCKERFILE.read_text()
    assert f"ARG TORCH_VERSION={version}" in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert '"torch==${TORCH_VERSION}" "torchaudio==${TORCH_VERSION}"' in text
    # the CPU build is pinned while the project's other dependencies resolve
    assert "PIP_CONSTRAINT=/opt/torch-cpu.txt pip install ." in text


def test_model_is_baked_in_and_runtime_is_offline() -> None:
    runtime = stages()[-1]
    env = " ".join(rest for op, rest in runtime if op == "ENV")
    for var in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "OMP_NUM_THREADS=1"):
        assert var in env
    runs = " ".join(rest for op, rest in runtime if op == "RUN")
    assert "whisper_base_path()" in runs and "model_dir" in runs
    # the bake step runs as the runtime user, after the switch to it
    ops = [op for op, _ in runtime]
    bake = next(i for i, (op, rest) in enumerate(runtime) if "whisper_base_path" in rest)
    assert ops.index("USER") < bake


def test_copy_sources_exist_and_context_is_trimmed() -> None:
    for op, rest in instructions():
        if op != "COPY" or rest.startswith("--from="):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY source {src} missing"
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    for heavy in (".venv", ".git", "var", "tests"):
        assert heavy in ignore


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            code = int(self.path.strip("/") or 200)
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _probe(target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBE), target], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (401, True), (503, False)])
def test_health_probe_http(http_server: str, status: int, healthy: bool) -> None:
    res = _probe(f"{http_server}/{status}")
    assert (res.returncode == 0) is healthy, res.stdout + res.stderr
    assert f"HTTP {status}" in res.stdout


def test_health_probe_unreachable_and_tcp(http_server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: connections are refused
        assert _probe(f"http://127.0.0.1:{closed}/").returncode == 1
        assert _probe(f"tcp://127.0.0.1:{closed}").returncode == 1
    port = http_server.rsplit(":", 1)[1]
    assert _probe(f"tcp://127.0.0.1:{port}").returncode == 0
    assert _probe("ftp://example").returncode == 1
    assert _probe("").returncode == 1


def test_regular_install_carries_model_migrations_and_samples(tmp_path: Path) -> None:
    """The image does ``pip install .`` (not editable): the wheel must carry the shipped
    emotion model, the Alembic migrations and the sample calls, or the container cannot run
    offline. Built from a copy of the sources so the working tree stays untouched."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("callsense", "ingest", "processors", "dashboard", "models"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=ignore)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--no-cache-dir", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("callsense-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    def expect(top: str, sub: str, prefix: str, pattern: str = "*") -> list[str]:
        files = [p for p in (REPO / top / sub).rglob(pattern) if p.is_file()]
        files = [p for p in files if "__pycache__" not in p.parts]
        assert files, f"nothing under {top}/{sub}"
        return [f"{prefix}/{sub}/{p.relative_to(REPO / top / sub).as_posix()}" for p in files]

    wanted = (
        expect("models", "artifacts", "callsense/models")
        + expect("callsense", "storage/migrations", "callsense", "*.py")
        + expect("callsense", "storage/migrations", "callsense", "*.mako")
        + expect("ingest", "samples", "callsense/ingest", "*.flac")
    )
    missing = sorted(set(wanted) - names)
    assert not missing, missing
    assert "callsense/models/artifacts/default/model.json" in names
