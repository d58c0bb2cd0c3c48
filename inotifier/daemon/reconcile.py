"""Reconcile: the difference between the desired watches and the active ones, applied in place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..escaping import get_logger
from ..specs import WatchSpec
from ..states import State

if TYPE_CHECKING:
    from .runner import Daemon
    from .watches import ActiveWatch

logger = get_logger("inotifier.daemon.reconcile")

#: Fields whose change needs the kernel watches rebuilt (not only re-masked).
TREE_FIELDS = ("path", "recursive", "auto_add", "excludes")


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


def update_kind(old: WatchSpec, new: WatchSpec) -> str:
    """Return how a changed spec is applied: ``"swap"`` (no kernel change), ``"remask"`` or ``"rebuild"``."""
    if old.error or new.error:
        return "rebuild"
    if any(getattr(old, name) != getattr(new, name) for name in TREE_FIELDS):
        return "rebuild"
    if old.mask != new.mask:
        return "remask"
    return "swap"


def apply(daemon: Daemon, plan: Plan) -> None:
    """Apply ``plan`` to the daemon's watches; one bad watch never stops the others."""
    active: dict[str, ActiveWatch] = daemon.watches
    for key in plan.remove:
        watch = active.pop(key)
        daemon.drop_queue(watch)
        try:
            watch.stop(daemon.table)
        except Exception:
            logger.exception("removing watch %s failed", key)
        daemon.forget_state(watch)
        logger.debug("stopped watching %s (%s)", watch.spec.label, key)
    for spec in plan.update:
        old = active[spec.key]
        try:
            kind = update_kind(old.spec, spec)
            if kind == "rebuild":
                # Build the new watch before dropping the old one: directories both
                # watch keep their kernel watch (shared node), so nothing is missed.
                new = daemon.make_watch(spec)
                new.start(daemon.table)
                old.stop(daemon.table)
                daemon.transfer_queue(old, new)
                new.events, new.errors, new.last_event = old.events, old.errors, old.last_event
                active[spec.key] = new
            else:
                processor = old.processor
                if spec.processor != old.spec.processor or old.processor is None:
                    processor = daemon.load_processor(spec)
                if processor is None:
                    old.stop(daemon.table)
                    old.spec = spec
                    old.processor = None
                    old.set_state(State.ERROR, daemon.processor_errors.get(spec.key, "unusable processor"))
                    continue
                old.spec = spec
                old.processor = processor
                old._configure()
                if kind == "remask":
                    daemon.table.remask(old)
                old.dirty = True
            logger.debug("updated watch %s (%s): %s", spec.label, spec.key, kind)
        except Exception:
            logger.exception("updating watch %s failed", spec.key)
    for spec in plan.add:
        try:
            watch = daemon.make_watch(spec)
            active[spec.key] = watch
            watch.start(daemon.table)
        except Exception:
            logger.exception("adding watch %s failed", spec.key)


def specs_of(watches: Mapping[str, Any]) -> dict[str, WatchSpec]:
    """Return the specs of the active watches, keyed like them."""
    return {key: watch.spec for key, watch in watches.items()}


__all__ = ["Plan", "apply", "diff", "specs_of", "update_kind"]
