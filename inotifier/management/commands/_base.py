"""What every inotifier command shares: output whose reader may stop reading (``| head``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandParser, OutputWrapper


class ReaderMayGo(OutputWrapper):
    """An ``OutputWrapper`` for which a reader that stopped reading is not an error.

    ``inotifier_status | head -1``: head reads one line and exits, and the
    command's next write gets EPIPE. Django lets the ``BrokenPipeError`` end the
    command with a traceback, and Python's last flush at exit prints another.
    Here the stream is pointed at /dev/null instead, so the command finishes
    its work quietly and ends with the exit status it would have had.
    """

    gone = False

    def __init__(self, out: TextIO, ending: str = "\n") -> None:
        super().__init__(out, ending)
        self.stream = out

    def write(  # type: ignore[override]  # the signature of OutputWrapper.write, as in its stub
        self, msg: str = "", style_func: Callable[[str], str] | None = None, ending: str | None = None
    ) -> None:
        if self.gone:
            return
        try:
            super().write(msg, style_func, ending)
        except BrokenPipeError:
            self._reader_gone()

    def flush(self) -> None:
        if self.gone:
            return
        try:
            super().flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        self.gone = True
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not a file: nothing buffered below us can fail again at exit
        # What is still buffered in sys.stdout is written at interpreter exit: let it
        # go to /dev/null rather than raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def _reader_may_go(old: OutputWrapper, stream: TextIO) -> ReaderMayGo:
    new = ReaderMayGo(stream)
    new.style_func = old.style_func  # keep Django's choice (ERROR on a terminal's stderr)
    return new


class InotifierCommand(BaseCommand):
    """A management command whose output may be piped into ``head``, ``grep -q`` or ``true``."""

    def __init__(
        self,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        no_color: bool = False,
        force_color: bool = False,
    ) -> None:
        super().__init__(stdout, stderr, no_color, force_color)
        self.stdout = _reader_may_go(self.stdout, stdout or sys.stdout)
        self.stderr = _reader_may_go(self.stderr, stderr or sys.stderr)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # ``help`` is a lazy translation; argparse wants a str (``--help`` raised TypeError).
        self.help = str(self.help)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        finally:
            # Flushed here, where an EPIPE is caught, not at interpreter exit, where it is not.
            self.stdout.flush()
            self.stderr.flush()
