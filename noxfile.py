"""The version matrix: each supported Python with the Django releases it runs (nox sessions).

Run ``nox -l`` for the list, ``nox`` for all of it, ``nox -s "tests-3.11(django='4.2')"``
for one combination. The tests run on a SQLite file of the session's own, or on the
database named by ``DATABASE_URL`` when it is set (e.g. PostgreSQL)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test nox -s "tests-3.13(django='6.1')"

Arguments after ``--`` go to pytest (``-- -m "not browser"`` leaves the browser test out).
Interpreters are taken from PATH, else from pyenv's ``versions/`` (its shims fail for
versions that are not the global one).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Callable

import nox

#: Python -> the Django feature releases tested with it. Django 6.x needs Python >= 3.12.
MATRIX: dict[str, tuple[str, ...]] = {
    "3.11": ("4.2", "5.2"),
    "3.12": ("5.2", "6.1"),
    "3.13": ("6.1",),
}
#: The two ends of the matrix, run by CI beside the main suite.
OLDEST = "tests-3.11(django='4.2')"
NEWEST = "tests-3.13(django='6.1')"

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True
nox.options.tags = ["tests"]


def _runs(executable: str) -> bool:
    try:
        return subprocess.run([executable, "-c", ""], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _version_key(path: str) -> tuple[int, ...]:
    parts = os.path.basename(os.path.dirname(path)).split(".")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def _find_pyenv_interpreters() -> None:
    """Put pyenv's real interpreter directories first on PATH for versions PATH lacks."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    extra = []
    for version in MATRIX:
        found = shutil.which(f"python{version}")
        if found and _runs(found):
            continue
        candidates = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin"))
        candidates = [c for c in candidates if os.access(os.path.join(c, f"python{version}"), os.X_OK)]
        if candidates:
            extra.append(max(candidates, key=_version_key))
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])


_find_pyenv_interpreters()


def _django_requirement(feature: str) -> str:
    major, minor = feature.split(".")
    return f"Django>={feature},<{major}.{int(minor) + 1}"


def _make_tests(python: str) -> Callable[[nox.Session, str], None]:
    def tests(session: nox.Session, django: str) -> None:
        # Playwright's Python package only: the browser test drives Debian's Chromium.
        # django-tasks-db (a real worker for the hand-off tests) needs Django >= 5.2.
        extras = "test,browser" + (",tasks-db" if tuple(map(int, django.split("."))) >= (5, 2) else "")
        session.install(
            "-e",
            f".[{extras}]",
            _django_requirement(django),
            env={"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
        )
        session.run(
            "python",
            "-c",
            "import sys, django; print(sys.version.split()[0], 'Django', django.__version__)",
        )
        env = {}
        if not os.environ.get("DATABASE_URL"):
            # A file of this session's own: sessions never share a test database.
            env["DATABASE_URL"] = f"sqlite:///{os.path.abspath(session.create_tmp())}/tests.sqlite3"
        session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs, env=env)

    tests.__doc__ = f"Run the tests on Python {python} with the Django release named."
    return tests


for _python, _djangos in MATRIX.items():
    nox.session(python=_python, name=f"tests-{_python}", tags=["tests"])(
        nox.parametrize("django", list(_djangos))(_make_tests(_python))
    )


@nox.session(python="3.11", tags=["lint"])
def lint(session: nox.Session) -> None:
    """Run ruff (with the DJ rules) and mypy with django-stubs."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", ".")
    session.run("mypy", "inotifier")
