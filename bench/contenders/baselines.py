"""Baseline contenders written in Python: pyinotify variants, inotify_simple
and watchdog.

Each function runs in its own process (see bench/consumer.py) and imports
its library itself.  Stream contenders report every kernel file event to
``ctx.rec`` once it has been *handled* the way the variant says (counted,
sent as a Django signal, inserted with the ORM...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bench.common import IN_ISDIR, IN_Q_OVERFLOW, SetupContext, SetupResult, StreamContext
from bench.contenders import setup, stream

# -- inotify_simple ----------------------------------------------------------


@stream("inotify_simple", "inotify_simple, read loop")
def inotify_simple_stream(ctx: StreamContext) -> None:
    from inotify_simple import INotify

    inotify = INotify()
    inotify.add_watch(ctx.path, ctx.mask)
    ctx.ready()
    rec = ctx.rec
    hit = rec.hit
    while not rec.finished:
        for event in inotify.read(timeout=100):
            mask = event.mask
            if mask & IN_Q_OVERFLOW:
                rec.overflow()
            elif mask & IN_ISDIR:
                rec.sentinel()
                break
            else:
                hit(event.name)


@setup("inotify_simple", "inotify_simple + os.scandir walk")
def inotify_simple_setup(ctx: SetupContext) -> SetupResult:
    from inotify_simple import INotify

    ctx.begin()
    inotify = INotify()
    add_watch, mask = inotify.add_watch, ctx.mask
    stack = [ctx.root]
    while stack:
        path = stack.pop()
        add_watch(path, mask)
        with os.scandir(path) as entries:
            stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    return SetupResult(keep=inotify)


# -- pyinotify ---------------------------------------------------------------


def _disable_eager_debug_string() -> None:
    """Stop ``pyinotify._RawEvent.__init__`` from building ``str(self)`` for a
    ``log.debug`` call that is discarded anyway (this process only)."""
    import pyinotify

    def raw_event_init(self: Any, wd: int, mask: int, cookie: int, name: str) -> None:
        self._str = None
        pyinotify._Event.__init__(self, {"wd": wd, "mask": mask, "cookie": cookie, "name": name.rstrip("\0")})

    pyinotify._RawEvent.__init__ = raw_event_init


def _pyinotify_run(
    ctx: StreamContext,
    handle: Callable[[Any], None],
    after_read: Callable[[], None] | None = None,
    on_sentinel: Callable[[], None] | None = None,
) -> None:
    """Run a pyinotify Notifier whose processor calls ``handle(event)`` for
    each file event; ``after_read`` runs after each read+process round and
    ``on_sentinel`` (default ``rec.sentinel``) on the end sentinel."""
    import pyinotify

    rec = ctx.rec
    sentinel = on_sentinel or rec.sentinel

    class Processor(pyinotify.ProcessEvent):  # type: ignore[misc]
        def process_IN_Q_OVERFLOW(self, event: Any) -> None:
            rec.overflow()

        def process_default(self, event: Any) -> None:
            if event.mask & IN_ISDIR:
                sentinel()
            else:
                handle(event)

    wm = pyinotify.WatchManager()
    notifier = pyinotify.Notifier(wm, Processor(), timeout=100)
    wm.add_watch(ctx.path, ctx.mask)
    ctx.ready()
    while not rec.finished:
        if notifier.check_events():
            notifier.read_events()
            notifier.process_events()
            if after_read is not None:
                after_read()


@stream("pyinotify", "pyinotify, no-op processor")
def pyinotify_noop(ctx: StreamContext) -> None:
    hit = ctx.rec.hit
    _pyinotify_run(ctx, lambda event: hit(event.name))


@stream("pyinotify-nodebug", "pyinotify without its eager debug string")
def pyinotify_nodebug(ctx: StreamContext) -> None:
    _disable_eager_debug_string()
    hit = ctx.rec.hit
    _pyinotify_run(ctx, lambda event: hit(event.name))


@stream("pyinotify-signal", "pyinotify + one Django signal per event")
def pyinotify_signal(ctx: StreamContext) -> None:
    from django.dispatch import Signal

    from bench.contenders.django_env import configure

    configure(ctx.workdir, database=False)
    file_event = Signal()
    hit = ctx.rec.hit

    def receiver(sender: object, event: Any, **kwargs: Any) -> None:
        hit(event.name)

    file_event.connect(receiver, weak=False)

    def handle(event: Any) -> None:
        file_event.send(sender=None, event=event)

    _pyinotify_run(ctx, handle)


@stream("pyinotify-bulk", "pyinotify + bulk_create per read (SQLite)", cost="db")
def pyinotify_bulk(ctx: StreamContext) -> None:
    from django.utils import timezone

    from bench.contenders.django_env import configure

    configure(ctx.workdir, database=True)
    from bench.djapp.models import BenchEvent

    rec = ctx.rec
    hit = rec.hit
    pending: list[Any] = []
    names: list[str] = []
    ended: list[bool] = []

    def handle(event: Any) -> None:
        pending.append(BenchEvent(path=event.pathname, mask=event.mask, created=timezone.now()))
        names.append(event.name)

    def flush() -> None:
        if pending:
            BenchEvent.objects.bulk_create(pending)
            for name in names:
                hit(name)
            pending.clear()
            names.clear()
        if ended:
            rec.sentinel()

    # The sentinel ends the run only once the rows before it are stored.
    _pyinotify_run(ctx, handle, after_read=flush, on_sentinel=lambda: ended.append(True))


@stream("pyinotify-orm", "pyinotify + ORM INSERT per event (SQLite)", cost="slow")
def pyinotify_orm(ctx: StreamContext) -> None:
    from django.utils import timezone

    from bench.contenders.django_env import configure

    configure(ctx.workdir, database=True)
    from bench.djapp.models import BenchEvent

    create = BenchEvent.objects.create
    hit = ctx.rec.hit

    def handle(event: Any) -> None:
        create(path=event.pathname, mask=event.mask, created=timezone.now())
        hit(event.name)

    _pyinotify_run(ctx, handle)


@setup("pyinotify", "pyinotify add_watch(rec=True)")
def pyinotify_setup(ctx: SetupContext) -> SetupResult:
    import pyinotify

    ctx.begin()
    wm = pyinotify.WatchManager()
    added = wm.add_watch(ctx.root, ctx.mask, rec=True)
    failed = [path for path, wd in added.items() if wd < 0]
    if failed:
        raise RuntimeError(f"pyinotify failed to watch {len(failed)} directories")
    return SetupResult(keep=wm)


# -- watchdog ----------------------------------------------------------------


def _count_watchdog_overflows(rec: Any) -> None:
    """Wrap watchdog's overflow hook to count IN_Q_OVERFLOW (this process)."""
    from watchdog.observers import inotify as wd_inotify

    for klass in vars(wd_inotify).values():
        hook = getattr(klass, "on_queue_overflow", None) if isinstance(klass, type) else None
        if hook is None or getattr(hook, "_bench_wrapped", False):
            continue

        def counting(self: Any, *args: Any, _hook: Any = hook, **kwargs: Any) -> Any:
            rec.overflow()
            return _hook(self, *args, **kwargs)

        counting._bench_wrapped = True  # type: ignore[attr-defined]
        klass.on_queue_overflow = counting


@stream("watchdog", "watchdog InotifyObserver, on_any_event")
def watchdog_stream(ctx: StreamContext) -> None:
    import time

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    rec = ctx.rec
    hit = rec.hit
    _count_watchdog_overflows(rec)

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory:
                # DirModifiedEvent of the watched directory is watchdog's
                # own addition, not a kernel event; a created directory is
                # the sentinel.
                if event.event_type == "created":
                    rec.sentinel()
                return
            src = event.src_path
            hit(os.path.basename(src if isinstance(src, str) else os.fsdecode(src)))

    observer = InotifyObserver()
    observer.schedule(Handler(), ctx.path, recursive=False)
    observer.start()
    ctx.ready()
    while not rec.finished:
        time.sleep(0.05)


@setup("watchdog", "watchdog InotifyObserver, recursive=True")
def watchdog_setup(ctx: SetupContext) -> SetupResult:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    ctx.begin()
    observer = InotifyObserver()
    observer.schedule(FileSystemEventHandler(), ctx.root, recursive=True)
    observer.start()
    return SetupResult(keep=observer)
