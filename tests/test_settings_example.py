"""example/settings_example.py, the 2010 app's settings shape: it passes the checks and its daemon delivers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, DaemonProcess, Record

EXAMPLE = ROOT / "example" / "settings_example.py"


@pytest.fixture
def project(daemon: DaemonProcess, tmp_path: Path) -> Path:
    """A copy of the example in a directory of its own, and the daemon runner set up to use it."""
    project = Path(os.path.realpath(tmp_path)) / "project"
    project.mkdir()
    shutil.copy(EXAMPLE, project / "settings_example.py")
    daemon.env_extra.update(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings_from_example",
            "INOTIFIER_TEST_EXAMPLE_SETTINGS": str(project / "settings_example.py"),
        }
    )
    daemon.pid_file = project / "inotifier.pid"
    daemon.stdout_file = project / "inotifier-stdout.log"
    daemon.stderr_file = project / "inotifier-stderr.log"
    return project


def test_the_example_passes_manage_py_check(daemon: DaemonProcess, project: Path) -> None:
    result = daemon.manage("check")
    assert result.returncode == 0, result.stderr
    hint = "\tHINT: Create the directory, or remove the entry."
    assert result.stderr.splitlines() == [
        "System check identified some issues:",
        "",
        "WARNINGS:",
        f"settings.INOTIFIER_WATCH_PATHS: (inotifier.W001) INOTIFIER_WATCH_PATHS[0]: path '{project}/incoming' does not exist (yet); it is watched once it appears",
        hint,
        f"settings.INOTIFIER_WATCH_PATHS: (inotifier.W001) INOTIFIER_WATCH_PATHS[1]: path '{project}/busy_dir' does not exist (yet); it is watched once it appears",
        hint,
        f"settings.INOTIFIER_WATCH_PATHS: (inotifier.W001) INOTIFIER_WATCH_PATHS[2]: path '{project}/uploads' does not exist (yet); it is watched once it appears",
        hint,
        "",
        "System check identified 3 issues (0 silenced).",
    ]
    assert result.stdout == ""
    for name in ("incoming", "busy_dir", "uploads"):
        (project / name).mkdir()
    result = daemon.manage("check")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "System check identified no issues (0 silenced).\n",
        "",
    )


def test_a_daemon_started_with_the_example_delivers(
    daemon: DaemonProcess, project: Path, record: Record
) -> None:
    for name in ("incoming", "busy_dir", "uploads"):
        (project / name).mkdir()
    pid = daemon.start()
    assert pid and daemon.pid_file.read_text().strip() == str(pid)  # PROJECT_PATH/inotifier.pid
    arrived = project / "incoming" / "arrived.csv"
    arrived.write_text("x")
    busy = project / "busy_dir" / "busy.txt"
    busy.write_text("x")
    busy.unlink()
    with open(project / "uploads" / "report.pdf.part", "wb") as fh:
        fh.write(b"%PDF" * 1024)
    os.rename(project / "uploads" / "report.pdf.part", project / "uploads" / "report.pdf")
    record.wait_path(project / "uploads" / "report.pdf", "IN_CREATE")
    record.wait_path(busy, "IN_DELETE")
    events = [(name, path) for name, path, _mask in record.events()]
    # incoming/: in_create only; busy_dir/: every event; uploads/: only the finished file.
    assert [e for e in events if e[1].startswith(str(project / "incoming"))] == [("IN_CREATE", str(arrived))]
    busy_names = [name for name, path in events if path == str(busy)]
    assert busy_names[0] == "IN_CREATE" and busy_names[-1] == "IN_DELETE"
    assert {"IN_OPEN", "IN_MODIFY", "IN_CLOSE_WRITE"} <= set(busy_names)
    assert [e for e in events if e[1].startswith(str(project / "uploads"))] == [
        ("IN_CREATE", str(project / "uploads" / "report.pdf"))
    ]
    assert daemon.stderr_file.exists() and "Traceback" not in daemon.stderr_text()
    stopped = daemon.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert not daemon.pid_file.exists()
