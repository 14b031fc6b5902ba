"""Packaging: the wheel carries the Lua scripts and py.typed; importing has no side effects."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_lua_scripts_and_py_typed(tmp_path: Path) -> None:
    """Build the wheel and look inside: every Lua script, py.typed, the console script."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("dramatiq_resilience-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    lua_in_tree = {
        f"dramatiq_resilience/backends/lua/{p.name}"
        for p in (ROOT / "dramatiq_resilience/backends/lua").glob("*.lua")
    }
    assert lua_in_tree <= names
    assert "dramatiq_resilience/backends/lua/_prelude.lua" in names
    assert "dramatiq_resilience/py.typed" in names
    assert not any(name.startswith(("tests/", "actors/", "benchmarks/")) for name in names)
    [entry_points] = [name for name in names if name.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "dramatiq-resilience = dramatiq_resilience.cli:main" in text


def test_importing_has_no_side_effects(tmp_path: Path) -> None:
    """Importing the package connects nothing, starts no thread, and writes no file."""
    (tmp_path / "cwd").mkdir()
    probe = f"""
import os, socket, sys, tempfile, threading
connects = []
real_connect = socket.socket.connect
socket.socket.connect = lambda self, *a: connects.append(a) or real_connect(self, *a)
threads = threading.active_count()
os.chdir({str(tmp_path / "cwd")!r})
before = set(os.listdir(tempfile.gettempdir()))
import dramatiq_resilience, dramatiq_resilience.testing, dramatiq_resilience.cli
from dramatiq_resilience.cli import build_parser
build_parser()
assert connects == [], connects
assert threading.active_count() == threads, threading.enumerate()
assert os.listdir(".") == [], os.listdir(".")
assert set(os.listdir(tempfile.gettempdir())) == before
print("clean")
"""
    # A private TMPDIR: other processes (parallel test runs) write to the shared /tmp.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )
    assert result.stdout.strip() == "clean", result.stderr


def test_every_public_name_is_in_the_readme_reference() -> None:
    """Each name in ``dramatiq_resilience.__all__`` appears in the README's reference section."""
    import re

    import dramatiq_resilience

    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("\n## Reference\n") : readme.index("\n## Development\n")]
    missing = [
        name
        for name in dramatiq_resilience.__all__
        if not re.search(rf"(?<![\w.]){re.escape(name)}\b", reference)
    ]
    assert missing == []
