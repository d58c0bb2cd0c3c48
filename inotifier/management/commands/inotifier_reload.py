"""Make every daemon reconcile its watches: bump the version counter, SIGHUP the local one."""

from __future__ import annotations

import os
import signal
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ...conf import app_settings
from ...escaping import printable
from ._base import InotifierCommand


class Command(InotifierCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Reconcile the watches now: bump the configuration version (every daemon on every "
        "host reconciles: at once on PostgreSQL, else at its next poll) and send SIGHUP to "
        "this host's daemon if one runs."
    )
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        from ...daemon.pidfile import running_pid
        from ...models import ConfigVersion

        did = []
        try:
            version = ConfigVersion.bump_now()
            did.append(
                _(
                    "Configuration version bumped to %d (every daemon reconciles: at once where it "
                    "listens for changes, else at its next poll)."
                )
                % version
            )
        except DatabaseError as exc:
            message = _("Could not bump the version: %s") % printable(str(exc), backslash=False)
            self.stderr.write(self.style.WARNING(message))
        pid = running_pid(app_settings.pid_file)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            did.append(_("SIGHUP sent to the local daemon (pid %d).") % pid)
        else:
            did.append(_("No daemon runs on this host."))
        if len(did) == 1 and pid is None:
            raise CommandError(_("Nothing reloaded: the database is unavailable and no daemon runs."))
        for line in did:
            self.stdout.write(self.style.SUCCESS(line))
