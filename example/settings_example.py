"""The inotifier part of a project's settings, in the shape of the 2010 app's ``settings_example.py``.

Copy what you need into your ``settings.py`` (and add ``"inotifier"`` to
``INSTALLED_APPS``). A project written for the 2010 django-inotifier already has
this shape: it keeps working unchanged, and ``manage.py check`` now reports a
mistake in it (an unknown event, a relative path, a processor that cannot be
imported) before the daemon starts.

Every directory here lives under the project: ``incoming/`` gets a signal for
each new entry, ``busy_dir/`` one for every event, and ``uploads/`` one for
each file that arrived through a temporary ``name.part`` file. A directory that
does not exist yet is a warning (``inotifier.W001``), and is watched once it
appears. See docs/upgrading.md and docs/processors-and-signals.md.
"""

from __future__ import annotations

import os

# The project's directory (where this file is). The 2010 app put its pid file
# here too, and so does this one: PROJECT_PATH/inotifier.pid.
PROJECT_PATH = os.path.realpath(os.path.dirname(__file__))


def generate_watch_paths() -> tuple[tuple[str, int, str], ...]:
    """Return the watches: (absolute directory, pyinotify event mask, processor class as a dotted path)."""
    # Imported here, as the 2010 example did, so that the settings module gets no "pyinotify" name.
    import pyinotify

    return (
        # in_create for every file or directory created in incoming/.
        (
            os.path.join(PROJECT_PATH, "incoming"),
            pyinotify.IN_CREATE,
            "inotifier.event_processors.CreateSignaler",
        ),
        # The matching signal (in_modify, in_close_write, in_delete, ...) for every event in busy_dir/.
        (
            os.path.join(PROJECT_PATH, "busy_dir"),
            pyinotify.ALL_EVENTS,
            "inotifier.event_processors.AllEventsSignaler",
        ),
        # in_create once x.part was written and renamed to x: never an empty or half-written file.
        (
            os.path.join(PROJECT_PATH, "uploads"),
            pyinotify.IN_CREATE | pyinotify.IN_MOVED_FROM | pyinotify.IN_MOVED_TO,
            "inotifier.event_processors.CreateViaChunksSignaler",
        ),
    )


INOTIFIER_WATCH_PATHS = generate_watch_paths()

# Where the detached daemon's output goes (appended to; reopened on SIGUSR1 for logrotate).
INOTIFIER_DAEMON_STDOUT = os.path.join(PROJECT_PATH, "inotifier-stdout.log")
INOTIFIER_DAEMON_STDERR = os.path.join(PROJECT_PATH, "inotifier-stderr.log")

# New since 2010: watches can also be added in the admin; they may only live
# under these directories (without it, the check inotifier.W002 warns).
INOTIFIER_ALLOWED_ROOTS = [PROJECT_PATH]
