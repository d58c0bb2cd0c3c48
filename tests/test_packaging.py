"""The wheel carries what a `pip install .` needs: migrations, templates, py.typed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import ROOT


def test_wheel_contains_migrations_templates_and_py_typed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("django_inotifier-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "inotifier/py.typed",
        "inotifier/migrations/0001_initial.py",
        "inotifier/templates/admin/inotifier/watchpath/change_list.html",
        "inotifier/templates/admin/inotifier/eventlog/change_list.html",
        "inotifier/management/commands/inotifier_start.py",
        "inotifier/daemon/runner.py",
    ):
        assert required in names, required
    assert not [n for n in names if n.startswith(("tests/", "bench/", "example/"))]
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: pyasyncore" in text and 'python_version >= "3.12"' in text
    assert "Requires-Dist: Django>=4.2" in text
