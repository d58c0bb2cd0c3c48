"""Reconcile: the difference between the desired watches and the active ones, applied in place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..escaping import get_logger
from ..specs import WatchSpec
from ..states import State
from .watchset import UpdateKind, WatchSet

logger = get_logger("inotifier.daemon.reconcile")

#: Fields whose change needs the kernel watches rebuilt (not only re-masked).
TREE_FIELDS = ("path", "recursive", "auto_add", "excludes", "fence")


@dataclass
class Plan:
    """What a reconcile does: keys to add, remove, update in place, and those left alone."""

    add: list[WatchSpec] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    update: list[WatchSpec] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def touched(self) -> int:
        """Return how many watches the plan changes."""
        return len(self.add) + len(self.remove) + len(self.update)

    def summary(self) -> dict[str, int]:
        return {
            "added": len(self.add),
            "removed": len(self.remove),
            "updated": len(self.update),
            "unchanged": len(self.unchanged),
        }


def diff(desired: Mapping[str, WatchSpec], actual: Mapping[str, WatchSpec]) -> Plan:
    """Return the Plan turning ``actual`` into ``desired`` (both keyed by ``spec.key``)."""
    plan = Plan()
    for key, spec in desired.items():
        current = actual.get(key)
        if current is None:
            plan.add.append(spec)
        elif current is not spec and current != spec:
            plan.update.append(spec)
        else:
            plan.unchanged.append(key)
    plan.remove = [key for key in actual if key not in desired]
    return plan


def update_kind(old: WatchSpec, new: WatchSpec) -> UpdateKind:
    """Return how a changed spec is applied: no kernel change, another mask, or a new tree."""
    if old.error or new.error:
        return UpdateKind.REBUILD
    if any(getattr(old, name) != getattr(new, name) for name in TREE_FIELDS):
        return UpdateKind.REBUILD
    if old.mask != new.mask or (old.settle > 0) != (new.settle > 0):  # settle asks the kernel for more
        return UpdateKind.REMASK
    return UpdateKind.SWAP


def apply(plan: Plan, watches: WatchSet) -> None:
    """Apply ``plan`` to the watch set; one bad watch never stops the others."""
    for key in plan.remove:
        try:
            watches.remove(key)
        except Exception:
            logger.exception("removing watch %s failed", key)
        else:
            logger.debug("stopped watching %s", key)
    for spec in plan.update:
        try:
            kind = update_kind(watches.watches[spec.key].spec, spec)
            watches.update(spec, kind)
        except Exception:
            logger.exception("updating watch %s failed", spec.key)
        else:
            logger.debug("updated watch %s (%s): %s", spec.label, spec.key, kind.value)
    for spec in plan.add:
        try:
            watches.add(spec)
        except Exception:
            logger.exception("adding watch %s failed", spec.key)


def log_plan(plan: Plan, seconds: float, watches: WatchSet) -> None:
    """Log one line for a reconcile that changed something.

    Each watch in error or missing has said so itself (once); the healthy
    ones are counted here.
    """
    if not plan.touched:
        return
    counts = watches.counts()
    logger.info(
        "reconciled in %.1f ms: %d added, %d removed, %d updated, %d unchanged; "
        "%d watches: %d active, %d missing, %d in error",
        seconds * 1000,
        len(plan.add),
        len(plan.remove),
        len(plan.update),
        len(plan.unchanged),
        len(watches.watches),
        counts[State.ACTIVE],
        counts[State.MISSING],
        counts[State.ERROR],
    )


__all__ = ["Plan", "UpdateKind", "apply", "diff", "log_plan", "update_kind"]
