"""Linux inotify watches for Django projects, reconciled live by a daemon."""

__version__ = "1.0.0a1"
