"""The dramatiq-resilience command's frame: version, help, usage errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dramatiq_resilience as dr
from dramatiq_resilience.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"dramatiq-resilience {dr.__version__}\n"


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits 2 with argparse's message."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`dramatiq-resilience health | head -1`: no traceback when the pipe closes, exit 141."""
    from dramatiq_resilience.testing.redis_server import free_port

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command prints anything
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from dramatiq_resilience.cli import main; sys.exit(main())",
         "health", "--redis", f"redis://127.0.0.1:{free_port()}/0"],
        stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
    )  # fmt: skip
    os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
