"""The docs say what the code has: settings, signals, processors, commands; no dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inotifier import signals
from inotifier.conf import DEFAULTS
from inotifier.event_processors import BUILTIN_PROCESSORS

from .conftest import ROOT

DOCS = ROOT / "docs"
SETTINGS_MD = DOCS / "settings.md"


def headings(path: Path) -> list[str]:
    return re.findall(r"^#{2,4} `([A-Z_]+)`\s*$", path.read_text(), flags=re.M)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_setting_has_a_section_with_type_default_and_example(name: str) -> None:
    text = SETTINGS_MD.read_text()
    assert name in headings(SETTINGS_MD), f"docs/settings.md has no section for {name}"
    section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
    for field in ("**Type:**", "**Default:**", "**Example:**"):
        assert field in section, f"the section of {name} in docs/settings.md lacks {field}"


def test_settings_md_lists_no_setting_the_code_lacks() -> None:
    documented = set(headings(SETTINGS_MD))
    assert documented - set(DEFAULTS) == set()
    mentioned = set(re.findall(r"\bINOTIFIER_[A-Z_]*[A-Z]\b", SETTINGS_MD.read_text()))
    assert mentioned - set(DEFAULTS) == set()


def test_every_default_is_the_documented_one() -> None:
    text = SETTINGS_MD.read_text()
    for name, default in DEFAULTS.items():
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        line = next(ln for ln in section.splitlines() if "**Default:**" in ln)
        shown = "()" if default == () else repr(default).replace("'", '"')
        if isinstance(default, float) and default.is_integer():
            shown = repr(default)
        assert f"`{shown}`" in line, f"{name}: default {shown} not in {line!r}"


def test_every_signal_and_processor_is_documented() -> None:
    text = (DOCS / "processors-and-signals.md").read_text()
    lifecycle = ["daemon_started", "daemon_stopping", "reconciled"]
    for name in [*(n.lower() for n in signals.SIGNALS), *lifecycle]:
        assert f"`{name}`" in text, name
    for dotted in BUILTIN_PROCESSORS:
        assert f"`{dotted.rsplit('.', 1)[1]}`" in text, dotted


def test_every_command_is_documented() -> None:
    folder = ROOT / "inotifier" / "management" / "commands"
    commands = sorted(p.stem for p in folder.glob("inotifier_*.py"))
    assert commands
    text = (DOCS / "index.md").read_text()
    for name in commands:
        assert f"`{name}" in text, name


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_resolve(page: str) -> None:
    text = (DOCS / page).read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _sep, anchor = target.partition("#")
        resolved = (DOCS / page).parent / path if path else DOCS / page
        assert resolved.exists(), f"{page}: dead link {target}"
        if anchor and resolved.suffix == ".md":
            slugs = {
                re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", resolved.read_text(), flags=re.M)
            }
            assert anchor in slugs, f"{page}: no heading for #{anchor} in {path or page}"


def test_every_daemon_module_has_its_room_in_the_internals_and_the_contract() -> None:
    """A newcomer finds each part of the daemon in docs/internals.md; the import contract holds them all."""
    import tomllib

    package = ROOT / "inotifier" / "daemon"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in package.glob("*/__init__.py")}
    diagram = (DOCS / "internals.md").read_text().split("  -> inotifier.daemon\n", 1)[1]
    diagram = diagram.split("  -> inotifier.health", 1)[0]
    heads = [re.split(r"\s{3,}", line.strip())[0] for line in diagram.splitlines()]  # before the words
    named = {name.strip().rstrip("/") for head in heads for name in head.split("|")}
    assert modules - named == set(), "daemon modules missing from the diagram of docs/internals.md"
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (daemon,) = [c for c in contracts if c.get("containers") == ["inotifier.daemon"]]
    layered = {name.strip() for layer in daemon["layers"] for name in layer.split("|")}
    assert layered == modules, "the daemon's layers contract (pyproject.toml) must name every module"


def test_every_test_the_docs_cite_exists() -> None:
    """A row of reliability.md that names a test which was renamed away proves nothing."""
    defined: dict[str, set[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        defined[f"tests/{path.name}"] = set(
            re.findall(r"^(?:async )?def (test_\w+)\(", path.read_text(), re.M)
        )
    every = set().union(*defined.values())
    missing = []
    for doc in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        text = doc.read_text()
        for file, name in re.findall(r"`(tests/test_\w+\.py)::(test_\w+)", text):
            if name not in defined.get(file, ()):
                missing.append(f"{doc.name}: {file}::{name}")
        for name in re.findall(r"`(test_\w+)`", text):
            if name not in every:
                missing.append(f"{doc.name}: {name}")
    assert missing == []
