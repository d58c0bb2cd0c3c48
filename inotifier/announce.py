"""Announcing a configuration change: after the caller's commit, once per transaction, and by NOTIFY."""

from __future__ import annotations

from collections.abc import Callable

from django.db import DatabaseError, connections

from .escaping import get_logger

logger = get_logger("inotifier.models")

#: The PostgreSQL channel every daemon LISTENs on; the payload is the new config version.
CONFIG_CHANNEL = "inotifier_config"


class _AfterCommit:
    """A callback registered with ``on_commit``, recognisable so a transaction registers it once."""

    def __init__(self, key: str, func: Callable[[], object]) -> None:
        self.key = key
        self.func = func
        self.ran = False  # run already (a test's captureOnCommitCallbacks runs hooks before the commit)

    def __call__(self) -> None:
        self.ran = True
        try:
            self.func()
        except DatabaseError as exc:
            # The caller's change is committed; raising now would report a failure that
            # did not happen. The daemons' forced resync (INOTIFIER_RESYNC_INTERVAL) applies it.
            logger.warning(
                "the change is saved but could not be announced to the daemons (%s); they apply "
                "it at their next resync (INOTIFIER_RESYNC_INTERVAL)",
                exc,
            )


def after_commit(key: str, func: Callable[[], object], using: str) -> None:
    """Run ``func`` once the transaction on ``using`` commits; at once (errors raised) outside one.

    Inside a transaction the work holds no lock until the caller's commit, and
    one registration per ``key`` is kept: a second one is skipped when an
    earlier one survives every rollback that would drop the new one (its
    savepoints are among the open ones), so a loop of saves costs one run.
    """
    connection = connections[using]
    if not connection.in_atomic_block:
        func()  # autocommit (or manual transactions, where Django runs no hooks): now
        return
    open_savepoints = set(connection.savepoint_ids)
    for entry in connection.run_on_commit:
        savepoints, callback = entry[0], entry[1]
        if (
            isinstance(callback, _AfterCommit)
            and callback.key == key
            and not callback.ran
            and set(savepoints) <= open_savepoints
        ):
            return
    connection.on_commit(_AfterCommit(key, func))


def notify(using: str, payload: str, channel: str = CONFIG_CHANNEL) -> None:
    """Send ``NOTIFY channel, payload`` on PostgreSQL (delivered when the current transaction commits)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])
