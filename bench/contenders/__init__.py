"""Registry of contenders.

A contender is a plain function registered with one of the decorators below,
in one of the modules of this package:

* ``baselines.py`` -- Python libraries (pyinotify, inotify_simple, watchdog,
  Django signal / ORM variants);
* ``native.py``    -- the raw C reader and inotifywait;
* ``project.py``   -- this project (slots to fill in).

Kinds and signatures:

``@stream(name, label, cost=...)``  ``def f(ctx: StreamContext) -> None``
    Used by the drain, burst and latency scenarios.
``@setup(name, label)``  ``def f(ctx: SetupContext) -> SetupResult``
    Used by the recursive-setup scenario.
``@task(scenario, name, label)``  ``def f(ctx: TaskContext) -> dict[str, float]``
    A project-only measurement (reload, reconcile, admin); one run per call.

A function that raises ``NotImplementedError`` or ``common.Skip`` is shown
as *skipped* with the message, not as a failure.  Module-level code must stay
light (stdlib only): each contender imports its libraries inside its
function, so that contender processes do not pay for each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``cost`` classes: they pick the burst and drain sizes (see scenarios.Sizes).
COSTS = ("fast", "db", "slow")


@dataclass(frozen=True)
class Contender:
    kind: str  # "stream", "setup" or "task"
    name: str
    label: str
    func: Callable[[Any], Any]
    scenario: str = ""  # for tasks: the scenario name
    cost: str = "fast"
    project: bool = False


REGISTRY: dict[tuple[str, str], Contender] = {}


def _register(contender: Contender) -> None:
    key = (contender.scenario or contender.kind, contender.name)
    if key in REGISTRY:
        raise ValueError(f"contender {key} registered twice")
    REGISTRY[key] = contender


def stream(
    name: str, label: str, *, cost: str = "fast", project: bool = False
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register a stream contender (drain, burst, latency scenarios)."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}")

    def deco(func: Callable[[Any], None]) -> Callable[[Any], None]:
        _register(Contender("stream", name, label, func, cost=cost, project=project))
        return func

    return deco


def setup(
    name: str, label: str, *, project: bool = False
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register a recursive-setup contender."""

    def deco(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        _register(Contender("setup", name, label, func, project=project))
        return func

    return deco


def task(
    scenario: str, name: str, label: str
) -> Callable[[Callable[[Any], dict[str, float]]], Callable[[Any], dict[str, float]]]:
    """Register a project-only task measured by one function call per run."""

    def deco(func: Callable[[Any], dict[str, float]]) -> Callable[[Any], dict[str, float]]:
        _register(Contender("task", name, label, func, scenario=scenario, project=True))
        return func

    return deco


def load() -> dict[tuple[str, str], Contender]:
    """Import the contender modules (registering them) and return the registry."""
    from bench.contenders import baselines, native, project  # noqa: F401

    return REGISTRY


def of_kind(kind: str) -> list[Contender]:
    return [c for c in load().values() if c.kind == kind]


def get(kind_or_scenario: str, name: str) -> Contender:
    return load()[(kind_or_scenario, name)]
