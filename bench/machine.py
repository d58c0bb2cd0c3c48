"""Machine facts printed with every result: cores, CPU, memory, kernel,
inotify limits, filesystems, Python and package versions, tools, git state."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

PACKAGES = (
    "Django",
    "pyinotify",
    "inotify-simple",
    "watchdog",
    "psycopg",
    "django-environ",
    "django-inotifier",
)
INOTIFY_LIMITS = ("max_queued_events", "max_user_instances", "max_user_watches")


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def inotify_limit(name: str) -> int:
    value = _read(f"/proc/sys/fs/inotify/{name}")
    return int(value) if value.isdigit() else 0


def _first_line(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_total() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def fs_type(path: str) -> str:
    """Filesystem type of the mount holding ``path`` (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, parts[2]
    return f"{kind} ({best})" if best else kind


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """1, 5 and 15 minute load averages (other work on the machine skews
    every figure: compare with the number of cores)."""
    return " / ".join(_read("/proc/loadavg").split()[:3])


def _git(repo: str) -> str:
    out = subprocess.run(
        ["git", "-C", repo, "describe", "--always", "--dirty", "--tags"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "no commit yet"


def facts(repo: str, shm: str, workdir: str) -> list[tuple[str, str]]:
    affinity = len(os.sched_getaffinity(0))
    rows = [
        ("cores (nproc / online)", f"{affinity} / {os.cpu_count()}"),
        ("CPU", _cpu_model()),
        ("memory", _mem_total()),
        ("load average 1/5/15 min, at start", load_average()),
        ("kernel", f"{platform.system()} {platform.release()} {platform.machine()}"),
    ]
    rows += [(f"fs.inotify.{n}", _read(f"/proc/sys/fs/inotify/{n}")) for n in INOTIFY_LIMITS]
    rows += [
        ("watched dirs on", f"{shm}: {fs_type(shm)}"),
        ("databases on", f"{workdir}: {fs_type(workdir)}"),
        (
            "python",
            f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        ),
    ]
    rows += [(package, _version(package)) for package in PACKAGES]
    rows += [
        ("inotifywait", _first_line(["inotifywait", "--help"])),
        ("gcc", _first_line(["gcc", "--version"])),
        ("git", _git(repo)),
    ]
    return rows
