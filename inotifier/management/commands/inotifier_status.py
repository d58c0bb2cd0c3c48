"""Print the daemon of this host and a table of watches; exit 0 when it runs, 3 when not."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from django.core.management.base import CommandParser
from django.db import DatabaseError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ...conf import app_settings
from ...escaping import printable
from ...masks import describe_mask
from ...states import UNKNOWN, UNKNOWN_LABEL
from ._base import InotifierCommand

if TYPE_CHECKING:
    from ...models import DaemonStatus, WatchState

#: LSB: "program is not running".
EXIT_NOT_RUNNING = 3

#: Widest a column (other than the last) is padded to; longer cells push the rest right.
MAX_COLUMN = 60


class Command(InotifierCommand):
    help = gettext_lazy(  # type: ignore[assignment]
        "Show whether the inotifier daemon runs on this host, and the state of every watch. "
        "A watch whose daemon is not alive (stopped, killed, or no recent heartbeat) shows as "
        "UNKNOWN with what it last reported. Exit status 0 when the daemon runs, 3 when it "
        "does not (LSB). --json prints one JSON document instead (same exit status)."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all-hosts",
            action="store_true",
            help=_("Show the daemons and watches of every host."),
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help=_(
                "Print one JSON document: this host, every host's daemon (alive, heartbeat age, "
                "version lag, counters) and the watches (of every host with --all-hosts)."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...daemon.pidfile import running_pid
        from ...models import DaemonStatus, WatchState

        all_hosts = bool(options["all_hosts"])
        if options["json"]:
            self.write_json(all_hosts)
            return
        # Every value below that came from a file name, a host name, the daemon or a
        # processor goes through printable(): a directory named "\x1b]0;...\x07" must
        # show as text, never drive the terminal of whoever runs this.
        host = app_settings.hostname
        pid = running_pid(app_settings.pid_file)
        if pid is None:
            self.stdout.write(_("inotifier is not running on %s.") % printable(host))
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    _("inotifier is running on %(host)s (pid %(pid)d).")
                    % {"host": printable(host), "pid": pid}
                )
            )
        rows: list[tuple[str, ...]] = []
        try:
            daemons = DaemonStatus.objects.all()
            states = WatchState.objects.order_by("host", "path")
            if not all_hosts:
                daemons = daemons.filter(host=host)
                states = states.filter(host=host)
            alive = DaemonStatus.objects.alive_hosts()
            if pid is None:
                # The pid file's lock knows better than a heartbeat that may be up to
                # heartbeat_limit() old: a daemon killed a second ago is not alive.
                alive.discard(host)
            for daemon in daemons:
                self.write_daemon(daemon, daemon.host in alive, local=daemon.host == host)
            rows = [self.row(state, state.host in alive, all_hosts) for state in states.iterator()]
        except DatabaseError as exc:
            message = _("Database unavailable: %s") % printable(str(exc), backslash=False)
            self.stderr.write(self.style.WARNING(message))
        if rows:
            self.write_table(rows, all_hosts)
        elif pid is not None:
            self.stdout.write(_("No watches reported yet."))
        self.write_outbox()
        if pid is None:
            sys.exit(EXIT_NOT_RUNNING)

    def write_json(self, all_hosts: bool) -> None:
        """Write the JSON document; exit 3 when this host's daemon does not run."""
        from ...daemon.pidfile import running_pid
        from ...health import Problem, assess, health_json
        from ...models import WatchState

        host = app_settings.hostname
        pid = running_pid(app_settings.pid_file)
        document: dict[str, object] = {"host": host, "running": pid is not None, "pid": pid}
        try:
            health = assess()
            report = health_json(health, detail=True)
            for entry in report["hosts"]:
                entry["local"] = entry["host"] == host
                if entry["local"] and pid is None:
                    # The pid file's lock knows better than a heartbeat up to heartbeat_limit() old.
                    entry.update(alive=False, healthy=False, problem=entry["problem"] or Problem.NOT_RUNNING)
            report["healthy"] = bool(report["hosts"]) and all(e["healthy"] for e in report["hosts"])
            alive = {h.host for h in health.hosts if h.alive} - (set() if pid is not None else {host})
            states = WatchState.objects.order_by("host", "path")
            if not all_hosts:
                states = states.filter(host=host)
            watches = [self.watch_json(state, state.host in alive) for state in states.iterator()]
            document.update(
                healthy=report["healthy"],
                config_version=report["config_version"],
                daemons=report["hosts"],
                watches=watches,
                database_error=None,
            )
        except DatabaseError as exc:
            document.update(
                healthy=False, config_version=None, daemons=[], watches=[], database_error=str(exc)
            )
        # ensure_ascii: every control, format and non-ASCII character is a \u escape, so
        # nothing in a path can drive the terminal, and json.loads gives it back exactly.
        self.stdout.write(json.dumps(document, indent=2, ensure_ascii=True))
        if pid is None:
            sys.exit(EXIT_NOT_RUNNING)

    @staticmethod
    def watch_json(state: WatchState, alive: bool) -> dict[str, object]:
        """Return one watch as JSON-ready data: its state as shown (unknown when its daemon is not alive)."""
        return {
            "host": state.host,
            "key": state.key,
            "watch_id": state.watch_id,
            "source": state.source,
            "path": state.path,
            "mask": state.mask,
            "mask_names": describe_mask(state.mask),
            "processor": state.processor,
            "state": state.state if alive else UNKNOWN,
            "reported_state": state.state,
            "message": state.message,
            "kernel_watches": state.kernel_watches,
            "events": state.events,
            "processor_errors": state.errors,
            "last_event": state.last_event.isoformat() if state.last_event else None,
        }

    def write_outbox(self) -> None:
        """Write the outbox's counts (every host's rows: any daemon may hand them off), if it has rows."""
        from ...outbox import OutboxEntry

        try:
            summary = OutboxEntry.objects.summary()
        except DatabaseError:
            return  # said above, or the table is not migrated yet
        states = summary["states"]
        if not any(states.values()):
            return
        oldest = summary["oldest_pending"]
        age = _(", oldest waiting %.0f s") % (timezone.now() - oldest).total_seconds() if oldest else ""
        line = _(
            "outbox: %(pending)d pending, %(failed)d failed (retrying), %(dead)d dead, %(done)d done%(age)s"
        ) % {
            **states,
            "age": age,
        }
        self.stdout.write(self.style.WARNING(line) if states["dead"] or states["failed"] else line)
        for label, key, counts in summary["watches"]:
            self.stdout.write(
                _("  %(watch)s: %(pending)d pending, %(failed)d failed, %(dead)d dead")
                % {**counts, "watch": printable(label or key or "-")}
            )

    def write_daemon(self, daemon: DaemonStatus, alive: bool, local: bool) -> None:
        """Write one daemon's line: alive or why not, then what it counted."""
        from ...models import heartbeat_limit

        age = None
        if daemon.heartbeat:
            age = (timezone.now() - daemon.heartbeat).total_seconds()
        if alive:
            condition = _("running")
        elif not daemon.running:
            condition = _("stopped")
        elif local and age is not None and age < heartbeat_limit():
            condition = _("not running (killed? it did not record its stop)")
        else:
            condition = _("no heartbeat for %(age)s (more than %(limit).0f s): not alive") % {
                "age": _("%.0f s") % age if age is not None else _("ever"),
                "limit": heartbeat_limit(),
            }
        line = _(
            "host %(host)s: %(condition)s; pid %(pid)s, started %(started)s, last heartbeat "
            "%(heartbeat)s%(age)s, config version %(version)s, %(kw)s kernel watches, "
            "%(events)s events, %(errors)s processor errors, %(overflows)s overflows, "
            "%(dropped)s log rows dropped"
        ) % {
            "host": printable(daemon.host),
            "condition": condition,
            "pid": daemon.pid if daemon.running and daemon.pid is not None else "-",
            "started": _when(daemon.started),
            "heartbeat": _when(daemon.heartbeat),
            "age": _(" (%.0f s ago)") % age if age is not None else "",
            "version": daemon.version_applied,
            "kw": daemon.kernel_watches,
            "events": daemon.events,
            "errors": daemon.errors,
            "overflows": daemon.overflows,
            "dropped": daemon.log_dropped,
        }
        self.stdout.write(self.style.SUCCESS(line) if alive else self.style.WARNING(line))
        share = daemon.watch_limit_share()
        if share is not None:
            limit = _("  kernel watches: %(used)d of %(name)s = %(limit)d (%(share).0f %%)") % {
                "used": daemon.kernel_watches,
                "name": printable(daemon.kernel_watch_limit_name),
                "limit": daemon.kernel_watch_limit,
                "share": 100 * share,
            }
            if daemon.near_watch_limit():
                limit += _(": near the limit, raise it before new directories go unwatched")
                self.stdout.write(self.style.WARNING(limit))
            else:
                self.stdout.write(limit)
        if daemon.progress:
            self.stdout.write(_("  in progress: %s") % printable(daemon.progress, backslash=False))
        if daemon.message:
            self.stdout.write(_("  message: %s") % printable(daemon.message, backslash=False))

    def row(self, state: WatchState, alive: bool, all_hosts: bool) -> tuple[str, ...]:
        """Return the cells of one watch; its stored state only while its daemon is alive."""
        shown = str(state.get_state_display())
        if alive:
            label, message = shown, state.message
        else:
            # What a dead daemon last wrote is history, not health: say so, and keep
            # what it reported (an error's reason above all) in the message.
            label = UNKNOWN
            message = _("%(unknown)s, last reported %(state)s") % {
                "unknown": UNKNOWN_LABEL,
                "state": shown,
            }
            if state.message:
                message += ": " + state.message
        # Names are shown one way only (a backslash doubled); a message is a sentence
        # that may already quote a name, so only its control characters are escaped.
        cells = [printable(label.upper())]
        if all_hosts:
            cells.append(printable(state.host))
        cells += [
            printable(state.source),
            printable(state.path),
            describe_mask(state.mask),
            printable(state.processor),
            str(state.kernel_watches),
            str(state.events),
            _when(state.last_event),
            printable(message, backslash=False),
        ]
        return tuple(cells)

    def write_table(self, rows: list[tuple[str, ...]], all_hosts: bool) -> None:
        """Write ``rows`` under a header, columns padded (the message, last, is not)."""
        header = [_("STATE")]
        if all_hosts:
            header.append(_("HOST"))
        header += [
            _("SOURCE"),
            _("PATH"),
            _("EVENTS"),
            _("PROCESSOR"),
            _("KWATCHES"),
            _("COUNT"),
            _("LAST EVENT"),
            _("MESSAGE"),
        ]
        table = [tuple(header), *rows]
        widths = [min(MAX_COLUMN, max(len(r[i]) for r in table)) for i in range(len(header) - 1)]
        for row in table:
            cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
            self.stdout.write(("  ".join(cells) + "  " + row[-1]).rstrip())


def _when(moment: Any) -> str:
    """Return a stored time as ``YYYY-MM-DD HH:MM:SS`` in the current time zone, or ``-``."""
    if moment is None:
        return "-"
    return str(timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S"))
