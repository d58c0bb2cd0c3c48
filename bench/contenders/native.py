"""Native baselines: the raw C reader (bench/c/rawread.c) and inotifywait.

The C reader speaks the consumer protocol itself: its contender functions
put the protocol channel on fd 1 and ``exec`` it.  inotifywait is driven by
a thin Python wrapper that counts the lines it prints; inotifywait does not
print IN_Q_OVERFLOW, so its overflow count is reported as n/a.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import IO, NoReturn

from bench.common import (
    INOTIFYWAIT_EVENTS,
    SetupContext,
    SetupResult,
    Skip,
    StreamContext,
    vm_rss_kb,
)
from bench.contenders import setup, stream

#: Name of the option (set by the harness) holding the compiled reader's path.
RAWREAD_OPTION = "rawread"


def compile_rawread(source: str, out_dir: str) -> str:
    """Compile bench/c/rawread.c with gcc into ``out_dir``; return the binary."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Skip("no C compiler (gcc/cc) found")
    binary = os.path.join(out_dir, "rawread")
    subprocess.run([gcc, "-O2", "-Wall", "-o", binary, source], check=True)
    return binary


def _exec_protocol(channel_fd: int, argv: list[str]) -> NoReturn:
    """Replace this process by ``argv`` with the protocol channel as stdout."""
    os.dup2(channel_fd, 1)
    os.execv(argv[0], argv)


def _rawread(options: dict[str, str]) -> str:
    binary = options.get(RAWREAD_OPTION)
    if not binary:
        raise Skip("raw C reader not compiled (no gcc?)")
    return binary


@stream("raw-c", "raw C read of the inotify fd")
def raw_c_stream(ctx: StreamContext) -> None:
    binary = _rawread(ctx.options)
    rec = ctx.rec
    _exec_protocol(
        ctx.channel.fd,
        [
            binary,
            "stream",
            ctx.mode,
            ctx.path,
            hex(ctx.mask),
            str(rec.expected),
            str(rec.per_cycle),
            str(int(ctx.idle_s * 1000)),
            str(int(ctx.start_timeout_s * 1000)),
            str(int(ctx.hard_timeout_s * 1000)),
        ],
    )


@setup("raw-c", "raw C: readdir walk + inotify_add_watch")
def raw_c_setup(ctx: SetupContext) -> SetupResult:
    _exec_protocol(ctx.channel.fd, [_rawread(ctx.options), "setup", ctx.root, hex(ctx.mask)])


# -- inotifywait -------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when the consumer process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _inotifywait(args: list[str], stdout: int | IO[bytes]) -> subprocess.Popen[bytes]:
    """Start inotifywait and wait for its "Watches established." line."""
    exe = shutil.which("inotifywait")
    if exe is None:
        raise Skip("inotifywait not installed (inotify-tools)")
    events = [x for e in INOTIFYWAIT_EVENTS for x in ("-e", e)]
    proc = subprocess.Popen(
        [exe, "-m", *events, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"Watches established" in line:
            return proc
    proc.kill()
    raise RuntimeError(f"inotifywait exited with {proc.wait()} before watching")


@stream("inotifywait", "inotifywait -m (C, prints each line)")
def inotifywait_stream(ctx: StreamContext) -> None:
    rec = ctx.rec
    rec.overflow_visible = False
    proc = _inotifywait([ctx.path], subprocess.PIPE)
    ctx.at_finish(proc.kill)
    ctx.ready(pid=proc.pid)
    assert proc.stdout is not None
    hit = rec.hit
    latency = ctx.mode == "latency"
    for line in proc.stdout:
        # "<dir>/ EVENT[,EVENT] <name>\n"
        if b",ISDIR" in line:
            rec.sentinel()
            break
        if latency:
            hit(line[line.rfind(b" ") + 1 : -1].decode())
        else:
            hit()


@setup("inotifywait", "inotifywait -m -r")
def inotifywait_setup(ctx: SetupContext) -> SetupResult:
    # Baseline memory: the same program watching one empty directory.
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as empty:
        base = _inotifywait([empty], subprocess.DEVNULL)
        rss_base = vm_rss_kb(base.pid)
        base.kill()
        base.wait()
    t0 = time.monotonic_ns()
    proc = _inotifywait(["-r", ctx.root], subprocess.DEVNULL)
    t1 = time.monotonic_ns()
    return SetupResult(
        keep=proc,
        pid=proc.pid,
        setup_ns=t1 - t0,
        rss_before_kb=rss_base,
        rss_after_kb=vm_rss_kb(proc.pid),
    )
