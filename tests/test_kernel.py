"""The inotify binding (``daemon.kernel``): watches through descriptors, raw events parsed, errors explained.

Everything runs on a real inotify instance and real directories. What needs
another uid or a user namespace with its own watch limit runs in a forked
child (``in_child``), so the test process itself keeps its identity.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inotifier.daemon.kernel import (
    NO_SPACE_PREFIX,
    Inotify,
    Kind,
    WatchError,
    fd_path,
    fs_type,
    open_root,
    open_subdir,
    parse,
    read_sysctl,
    real_path,
    watch_limit,
)
from inotifier.masks import (
    BITS,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE_SELF,
    IN_DONT_FOLLOW,
    IN_IGNORED,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
)

from .kernelstate import CLONE_NEWUSER, in_child

IN_ATTRIB = BITS["IN_ATTRIB"]
IN_OPEN = BITS["IN_OPEN"]
NOBODY = 65534
TMPFS_MAGIC = 0x01021994
PROC_SUPER_MAGIC = 0x9FA0


@pytest.fixture
def inotify() -> Iterator[Inotify]:
    ino = Inotify()
    yield ino
    ino.close()


def events(ino: Inotify) -> list[tuple[int, int, int, str]]:
    """Return every event queued on ``ino`` now (queued before the syscall that caused it returned)."""
    chunks = []
    while True:
        try:
            chunks.append(os.read(ino.fd, 65536))
        except BlockingIOError:
            return list(parse(b"".join(chunks)))


def watch(ino: Inotify, path: Path, mask: int) -> int:
    """Watch the directory ``path`` the way the daemon does: through an open descriptor."""
    fd = open_root(str(path), mask)
    try:
        return ino.add_watch_fd(fd, mask, str(path))
    finally:
        os.close(fd)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def failure(call: Callable[[], Any]) -> WatchError:
    with pytest.raises(WatchError) as info:
        call()
    return info.value


def as_nobody() -> None:
    """Become uid/gid 65534 without supplementary groups (in a forked child only)."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


# -- the instance and its watches ------------------------------------------------------------


def test_an_instance_is_non_blocking_and_not_inherited_by_child_processes(inotify: Inotify) -> None:
    assert fcntl.fcntl(inotify.fd, fcntl.F_GETFL) & os.O_NONBLOCK
    assert not os.get_inheritable(inotify.fd)


def test_a_watch_added_through_a_descriptor_reports_what_happens_in_that_directory(
    inotify: Inotify, watch_dir: Path
) -> None:
    fd = open_root(str(watch_dir), IN_CREATE)
    wd = inotify.add_watch_fd(fd, IN_CREATE, str(watch_dir))
    os.close(fd)  # the watch outlives the descriptor it was added through

    (watch_dir / "new").touch()

    assert events(inotify) == [(wd, IN_CREATE, 0, "new")]


def test_in_dont_follow_is_dropped_so_the_open_directory_and_not_the_proc_link_is_watched(
    inotify: Inotify, watch_dir: Path
) -> None:
    fd = open_root(str(watch_dir), 0)
    wd = inotify.add_watch_fd(fd, IN_CREATE | IN_DONT_FOLLOW)
    os.close(fd)

    (watch_dir / "new").touch()

    assert events(inotify) == [(wd, IN_CREATE, 0, "new")]


def test_a_link_root_opened_with_in_dont_follow_is_watched_as_the_link_itself(
    inotify: Inotify, watch_dir: Path
) -> None:
    target = watch_dir / "target"
    target.mkdir()
    link = watch_dir / "link"
    link.symlink_to(target)

    fd = open_root(str(link), IN_ATTRIB | IN_CREATE | IN_DONT_FOLLOW)
    assert stat.S_ISLNK(os.fstat(fd).st_mode)
    wd = inotify.add_watch_fd(fd, IN_ATTRIB | IN_CREATE | IN_DONT_FOLLOW, str(link))
    os.close(fd)

    (target / "inside").touch()  # in the directory the link leads to: not watched
    os.utime(link, follow_symlinks=False)  # the link itself

    assert events(inotify) == [(wd, IN_ATTRIB, 0, "")]


def test_removing_a_watch_ends_its_events_and_removing_it_again_is_not_an_error(
    inotify: Inotify, watch_dir: Path
) -> None:
    wd = watch(inotify, watch_dir, IN_CREATE)

    inotify.rm_watch(wd)
    (watch_dir / "after").touch()

    assert events(inotify) == [(wd, IN_IGNORED, 0, "")]
    inotify.rm_watch(wd)  # the kernel no longer knows it (EINVAL): fine


def test_a_watch_the_kernel_dropped_with_its_directory_can_be_removed_without_error(
    inotify: Inotify, watch_dir: Path
) -> None:
    gone = watch_dir / "gone"
    gone.mkdir()
    wd = watch(inotify, gone, IN_DELETE_SELF)

    gone.rmdir()

    assert events(inotify) == [(wd, IN_DELETE_SELF, 0, ""), (wd, IN_IGNORED, 0, "")]
    inotify.rm_watch(wd)


def test_removing_a_watch_from_a_closed_instance_raises(inotify: Inotify, watch_dir: Path) -> None:
    wd = watch(inotify, watch_dir, IN_CREATE)
    inotify.close()

    with pytest.raises(OSError) as info:
        inotify.rm_watch(wd)

    assert info.value.errno == errno.EBADF


def test_close_releases_the_descriptor_once_and_may_be_called_again(watch_dir: Path) -> None:
    ino = Inotify()
    fd = ino.fd

    ino.close()
    ino.close()

    assert ino.fd == -1
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


def test_a_failed_watch_names_the_path_it_was_given_else_the_descriptor(
    inotify: Inotify, watch_dir: Path
) -> None:
    name = watch_dir / "file"
    name.touch()
    fd = open_root(str(name), IN_CREATE)
    try:
        named = failure(lambda: inotify.add_watch_fd(fd, IN_CREATE | IN_ONLYDIR, str(name)))
        unnamed = failure(lambda: inotify.add_watch_fd(fd, IN_CREATE | IN_ONLYDIR))
    finally:
        os.close(fd)

    assert (named.errno, named.kind, named.path) == (errno.ENOTDIR, Kind.MISSING, str(name))
    assert named.message() == f"{str(name)!r} is not a directory"
    assert unnamed.path == f"/proc/self/fd/{fd}"


# -- parsing raw events ------------------------------------------------------------------------


def test_parse_yields_every_event_of_a_chunk_in_order_names_without_their_padding(
    inotify: Inotify, watch_dir: Path
) -> None:
    one, two = watch_dir / "one", watch_dir / "two"
    one.mkdir()
    two.mkdir()
    wd1 = watch(inotify, one, IN_CREATE | IN_DELETE_SELF)
    wd2 = watch(inotify, two, IN_CREATE)
    sixteen = "x" * 16  # the kernel pads names with NULs to 16 bytes: one more than a whole block
    long_name = "é" * 100

    (one / "a").touch()
    (two / sixteen).touch()
    (one / "sub").mkdir()
    (two / long_name).touch()
    shutil.rmtree(one)
    chunk = os.read(inotify.fd, 65536)

    assert list(parse(chunk)) == [
        (wd1, IN_CREATE, 0, "a"),
        (wd2, IN_CREATE, 0, sixteen),
        (wd1, IN_CREATE | IN_ISDIR, 0, "sub"),
        (wd2, IN_CREATE, 0, long_name),
        (wd1, IN_DELETE_SELF, 0, ""),
        (wd1, IN_IGNORED, 0, ""),
    ]
    assert list(parse(b"")) == []


def test_parse_gives_both_halves_of_a_rename_the_same_cookie(inotify: Inotify, watch_dir: Path) -> None:
    src, dst = watch_dir / "src", watch_dir / "dst"
    src.mkdir()
    dst.mkdir()
    wd_src = watch(inotify, src, IN_MOVED_FROM)
    wd_dst = watch(inotify, dst, IN_MOVED_TO)
    (src / "f").touch()

    (src / "f").rename(dst / "g")

    [(wd1, mask1, cookie1, name1), (wd2, mask2, cookie2, name2)] = events(inotify)
    assert (wd1, mask1, name1) == (wd_src, IN_MOVED_FROM, "f")
    assert (wd2, mask2, name2) == (wd_dst, IN_MOVED_TO, "g")
    assert cookie1 == cookie2 != 0


def test_a_name_that_is_not_utf8_survives_parse_byte_for_byte(inotify: Inotify, watch_dir: Path) -> None:
    wd = watch(inotify, watch_dir, IN_CREATE)
    raw = b"bad-\xff\xfe-utf8"

    with open(os.path.join(os.fsencode(watch_dir), raw), "wb"):
        pass

    [(got_wd, mask, _cookie, name)] = events(inotify)
    assert (got_wd, mask) == (wd, IN_CREATE)
    assert os.fsencode(name) == raw


# -- opening what is watched --------------------------------------------------------------------


def test_fd_path_reaches_the_open_inode_even_after_it_was_renamed(watch_dir: Path) -> None:
    before = watch_dir / "before"
    before.mkdir()
    fd = os.open(before, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before.rename(watch_dir / "after")
        (watch_dir / "before").mkdir()  # a new directory under the old name

        assert isinstance(fd_path(fd), bytes)
        assert os.stat(fd_path(fd)).st_ino == os.stat(watch_dir / "after").st_ino
    finally:
        os.close(fd)


def test_real_path_is_where_the_open_directory_is_now_links_resolved(watch_dir: Path) -> None:
    target = watch_dir / "target"
    target.mkdir()
    (watch_dir / "link").symlink_to(target)
    fd = os.open(watch_dir / "link", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert real_path(fd) == os.path.realpath(target)
        target.rename(watch_dir / "moved")
        assert real_path(fd) == os.path.realpath(watch_dir / "moved")
        (watch_dir / "moved").rmdir()
        assert real_path(fd) is None  # deleted
    finally:
        os.close(fd)


def test_real_path_is_none_for_what_is_not_a_path_or_not_open() -> None:
    r, w = os.pipe()
    os.close(w)
    try:
        assert real_path(r) is None  # "pipe:[…]"
    finally:
        os.close(r)
    assert real_path(w) is None  # closed


def test_fs_type_is_the_file_systems_magic_number_or_zero(watch_dir: Path) -> None:
    fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fs_type(fd) == PROC_SUPER_MAGIC
    finally:
        os.close(fd)
    assert fs_type(fd) == 0  # closed
    if str(watch_dir).startswith("/dev/shm/"):
        fd = os.open(watch_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert fs_type(fd) == TMPFS_MAGIC
        finally:
            os.close(fd)


def test_a_directory_root_is_opened_so_that_it_can_be_listed(watch_dir: Path) -> None:
    (watch_dir / "inside").touch()
    fd = open_root(str(watch_dir), IN_CREATE)
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
        assert os.listdir(fd) == ["inside"]  # the tree walk lists the root through this descriptor
    finally:
        os.close(fd)


@pytest.mark.timeout(10)
def test_a_file_root_is_opened_without_reading_it_so_a_fifo_does_not_hang(watch_dir: Path) -> None:
    fifo = watch_dir / "fifo"
    os.mkfifo(fifo)
    plain = watch_dir / "plain"
    plain.write_text("data")

    for path, is_kind in ((fifo, stat.S_ISFIFO), (plain, stat.S_ISREG)):
        fd = open_root(str(path), IN_CLOSE_WRITE)
        try:
            assert is_kind(os.fstat(fd).st_mode)
            assert real_path(fd) == str(path)
            with pytest.raises(OSError):  # O_PATH: no reading
                os.read(fd, 1)
        finally:
            os.close(fd)


def test_a_link_root_is_followed_unless_the_mask_says_in_dont_follow(watch_dir: Path) -> None:
    target = watch_dir / "target"
    target.mkdir()
    link = watch_dir / "link"
    link.symlink_to(target)

    followed = open_root(str(link), IN_CREATE)
    itself = open_root(str(link), IN_CREATE | IN_DONT_FOLLOW)
    try:
        assert real_path(followed) == str(target)
        assert stat.S_ISDIR(os.fstat(followed).st_mode)
        assert real_path(itself) == str(link)
        assert stat.S_ISLNK(os.fstat(itself).st_mode)
    finally:
        os.close(followed)
        os.close(itself)


def test_a_root_that_is_not_there_is_missing_and_said_so(watch_dir: Path) -> None:
    missing = str(watch_dir / "missing")
    (watch_dir / "file").touch()
    below_a_file = str(watch_dir / "file" / "sub")

    absent = failure(lambda: open_root(missing, IN_CREATE))
    not_dir = failure(lambda: open_root(below_a_file, IN_CREATE))

    assert (absent.kind, absent.errno, absent.path) == (Kind.MISSING, errno.ENOENT, missing)
    assert absent.message() == f"{missing!r} does not exist"
    assert (not_dir.kind, not_dir.errno) == (Kind.MISSING, errno.ENOTDIR)
    assert not_dir.message() == f"{below_a_file!r} is not a directory"


def test_a_root_that_is_a_link_loop_is_said_to_be_one(watch_dir: Path) -> None:
    (watch_dir / "a").symlink_to(watch_dir / "b")
    (watch_dir / "b").symlink_to(watch_dir / "a")
    path = str(watch_dir / "a")

    exc = failure(lambda: open_root(path, IN_CREATE))

    assert (exc.kind, exc.errno) == (Kind.LOOP, errno.ELOOP)
    assert exc.message() == f"{path!r} is a symbolic link loop"


def test_a_subdirectory_where_it_is_expected_is_opened_so_that_it_can_be_listed(watch_dir: Path) -> None:
    sub = watch_dir / "sub"
    sub.mkdir()
    (sub / "inside").touch()

    fd = open_subdir(str(sub), os.path.realpath(sub))
    try:
        assert os.listdir(fd) == ["inside"]
    finally:
        os.close(fd)


def test_a_subdirectory_below_a_link_root_is_checked_against_its_real_place_not_its_name(
    watch_dir: Path,
) -> None:
    real = watch_dir / "releases" / "1"
    (real / "sub").mkdir(parents=True)
    current = watch_dir / "current"
    current.symlink_to(real)

    fd = open_subdir(str(current / "sub"), str(real / "sub"))
    os.close(fd)
    exc = failure(lambda: open_subdir(str(current / "sub"), str(current / "sub")))

    assert exc.kind is Kind.REPLACED


def test_a_parent_swapped_for_a_link_below_a_root_is_refused_and_nothing_is_left_open(
    watch_dir: Path,
) -> None:
    root = watch_dir / "root"
    (root / "a" / "b").mkdir(parents=True)
    expected = os.path.realpath(root / "a" / "b")
    elsewhere = watch_dir / "elsewhere"
    (elsewhere / "b").mkdir(parents=True)
    (root / "a").rename(watch_dir / "a.old")
    (root / "a").symlink_to(elsewhere)
    path = str(root / "a" / "b")
    fds = open_fds()

    exc = failure(lambda: open_subdir(path, expected))

    assert (exc.kind, exc.path) == (Kind.REPLACED, path)
    assert exc.message() == f"{path!r} was moved or replaced by a link while being watched; not followed"
    assert open_fds() == fds


def test_a_subdirectory_swapped_for_a_link_is_not_even_opened(inotify: Inotify, watch_dir: Path) -> None:
    elsewhere = watch_dir / "elsewhere"
    elsewhere.mkdir()
    watch(inotify, elsewhere, IN_OPEN)
    assert events(inotify) == []
    sub = watch_dir / "sub"
    sub.symlink_to(elsewhere)  # where the walk listed a directory
    fds = open_fds()

    failure(lambda: open_subdir(str(sub), str(sub)))

    assert open_fds() == fds
    assert events(inotify) == []  # the directory the link leads to was not opened


def test_a_subdirectory_that_is_gone_or_a_file_is_missing(watch_dir: Path) -> None:
    (watch_dir / "file").touch()
    gone = str(watch_dir / "gone")
    file = str(watch_dir / "file")

    assert failure(lambda: open_subdir(gone, gone)).kind is Kind.MISSING
    not_dir = failure(lambda: open_subdir(file, file))
    assert (not_dir.kind, not_dir.errno) == (Kind.MISSING, errno.ENOTDIR)


def test_what_the_daemons_user_may_not_read_is_a_permission_error_naming_its_uid(watch_dir: Path) -> None:
    watch_dir.chmod(0o755)
    locked = watch_dir / "locked"
    (locked / "sub").mkdir(parents=True)
    locked.chmod(0o000)
    secret = watch_dir / "secret"
    secret.touch()
    secret.chmod(0o000)

    def attempts() -> dict[str, Any]:
        as_nobody()
        if os.getuid() == 0:
            pytest.skip("could not leave root")
        found: dict[str, Any] = {"uid": os.getuid()}
        for name, call in (
            ("root", lambda: open_root(str(locked), IN_CREATE)),
            ("subdir", lambda: open_subdir(str(locked / "sub"), str(locked / "sub"))),
        ):
            try:
                os.close(call())
            except WatchError as exc:
                found[name] = (exc.kind, exc.errno, exc.message())
        fd = open_root(str(secret), IN_CLOSE_WRITE)  # a file is opened O_PATH: no read needed
        ino = Inotify()
        try:
            ino.add_watch_fd(fd, IN_CLOSE_WRITE, str(secret))
        except WatchError as exc:
            found["file"] = (exc.kind, exc.errno, exc.message())
        return found

    try:
        found = in_child(attempts)
    finally:
        locked.chmod(0o700)  # removable again

    uid = found["uid"]
    assert found["root"] == (
        Kind.PERMISSION,
        errno.EACCES,
        f"permission denied watching {str(locked)!r} (the daemon runs as uid {uid})",
    )
    assert found["subdir"][:2] == (Kind.PERMISSION, errno.EACCES)
    assert found["file"] == (
        Kind.PERMISSION,
        errno.EACCES,
        f"permission denied watching {str(secret)!r} (the daemon runs as uid {uid})",
    )


# -- limits and the errors that explain them ----------------------------------------------------


def test_read_sysctl_reads_an_inotify_limit_and_is_none_for_an_unknown_one() -> None:
    with open("/proc/sys/fs/inotify/max_queued_events") as fh:
        expected = int(fh.read())

    assert read_sysctl("max_queued_events") == expected
    assert read_sysctl("no_such_limit") is None


def test_watch_limit_here_is_the_lower_sysctl_the_system_wide_one_on_a_tie() -> None:
    with open("/proc/sys/fs/inotify/max_user_watches") as fh:
        system = int(fh.read())
    try:
        with open("/proc/sys/user/max_inotify_watches") as fh:
            per_namespace: int | None = int(fh.read())
    except OSError:
        per_namespace = None

    if per_namespace is not None and per_namespace < system:
        assert watch_limit() == ("user.max_inotify_watches", per_namespace)
    else:
        assert watch_limit() == ("fs.inotify.max_user_watches", system)


def test_out_of_watches_in_a_user_namespace_names_its_limit_and_what_to_set(watch_dir: Path) -> None:
    for i in range(3):
        (watch_dir / f"d{i}").mkdir()

    def fill() -> dict[str, Any]:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER) != 0:
            pytest.skip(f"no user namespace: {os.strerror(ctypes.get_errno())}")
        found: dict[str, Any] = {"unlimited": watch_limit()}
        with open("/proc/sys/user/max_inotify_watches", "w") as fh:
            fh.write("2")
        found["limited"] = watch_limit()
        ino = Inotify()
        wds = []
        for i in range(3):
            path = str(watch_dir / f"d{i}")
            fd = open_root(path, IN_CREATE)
            try:
                wds.append(ino.add_watch_fd(fd, IN_CREATE, path))
            except WatchError as exc:
                found["error"] = (exc.kind, exc.errno, exc.path)
                found["message"] = WatchError.of(exc, path, needed=5).message()
            finally:
                os.close(fd)
        found["added"] = len(wds)
        return found

    found = in_child(fill)

    assert found["unlimited"][0] == "fs.inotify.max_user_watches"  # a new namespace's own limit is huge
    assert found["limited"] == ("user.max_inotify_watches", 2)
    assert found["added"] == 2
    path = str(watch_dir / "d2")
    assert found["error"] == (Kind.NO_SPACE, errno.ENOSPC, path)
    assert found["message"] == (
        f"{NO_SPACE_PREFIX} while watching {path!r}: the sysctl user.max_inotify_watches (2) "
        "is reached; at least 5 more needed (e.g. sysctl user.max_inotify_watches=1031)"
    )


def test_watch_error_of_converts_an_os_error_and_keeps_the_largest_need(watch_dir: Path) -> None:
    missing = str(watch_dir / "missing")
    try:
        os.open(missing, os.O_RDONLY)
    except OSError as exc:
        converted = WatchError.of(exc, missing, needed=3)

    assert isinstance(converted, OSError)
    assert (converted.kind, converted.errno, converted.path, converted.needed) == (
        Kind.MISSING,
        errno.ENOENT,
        missing,
        3,
    )
    assert WatchError.of(converted, "elsewhere", needed=2) is converted
    assert (converted.path, converted.needed) == (missing, 3)
    assert WatchError.of(converted, missing, needed=7).needed == 7


def test_an_error_without_errno_or_of_another_kind_is_still_explained() -> None:
    eio = WatchError.of(OSError("no errno"), "/p")
    outside = WatchError(errno.EPERM, "/srv/link", Kind.OUTSIDE, detail="is really '/etc', outside /srv")

    assert (eio.kind, eio.errno) == (Kind.OTHER, errno.EIO)
    assert eio.message() == f"cannot watch '/p': {os.strerror(errno.EIO)}"
    assert outside.message() == "'/srv/link' is really '/etc', outside /srv"


# -- found while writing these tests: each failed before its fix ----------------------------


def test_a_live_directory_whose_name_ends_in_deleted_has_a_real_path(tmp_path: Path) -> None:
    live = tmp_path / "data (deleted)"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert real_path(fd) == str(live)  # not None, as if it had been removed
    finally:
        os.close(fd)


def test_a_subdirectory_named_like_a_deleted_one_is_opened_not_refused_as_replaced(tmp_path: Path) -> None:
    sub = tmp_path / "x (deleted)"
    sub.mkdir()

    try:
        fd = open_subdir(str(sub), str(sub))
    except WatchError as exc:  # was: REPLACED, "moved or replaced by a link"
        pytest.fail(f"refused: {exc.kind}: {exc.message()}")
    os.close(fd)


def test_running_out_of_file_descriptors_is_not_blamed_on_the_inotify_instance_limit() -> None:
    def attempt() -> str:
        free = os.dup(0)  # the lowest free descriptor
        os.close(free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (free, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        try:
            Inotify()
        except OSError as exc:
            return str(exc)
        return "no error"

    message = in_child(attempt)

    # inotify_init1() fails with EMFILE both when the user has too many inotify instances and when
    # the process has no descriptor left (RLIMIT_NOFILE); the message was always
    # "too many inotify instances: raise the sysctl fs.inotify.max_user_instances (now None)".
    assert "max_user_instances" not in message and "RLIMIT_NOFILE" in message, message
