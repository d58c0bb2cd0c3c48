"""The kernel watch descriptors of the daemon, shared between the watches that own them.

One inotify instance serves every watch. The kernel gives one descriptor (wd)
per inode, so two watches on the same directory share it: a ``Node`` holds the
owners of one wd and the kernel mask is the union of theirs.
"""

from __future__ import annotations

import os
from typing import Generic, Protocol, TypeVar

from ..escaping import get_logger
from ..masks import IN_ONLYDIR
from .kernel import Inotify, WatchError

logger = get_logger("inotifier.daemon")


class Owner(Protocol):
    """What the table needs of a watch that owns kernel watches."""

    paths: dict[str, int]  # path -> wd, for every kernel watch it holds

    @property
    def kernel_mask(self) -> int: ...

    def open_verified(self, path: str) -> int: ...


OwnerT = TypeVar("OwnerT", bound=Owner)


class Node(Generic[OwnerT]):
    """One kernel watch descriptor and the watches that own it (usually one)."""

    __slots__ = ("owners", "wd")

    def __init__(self, wd: int) -> None:
        self.wd = wd
        self.owners: dict[OwnerT, str] = {}  # watch -> path of this wd in that watch

    def kernel_mask(self) -> int:
        mask = 0
        for owner in self.owners:
            mask |= owner.kernel_mask
        return mask


class WatchTable(Generic[OwnerT]):
    """Every kernel watch of the daemon, by wd, with reference counting across watches."""

    def __init__(self, inotify: Inotify) -> None:
        self.inotify = inotify
        self.nodes: dict[int, Node[OwnerT]] = {}

    def attach(self, watch: OwnerT, path: str, fd: int, mask: int) -> int:
        """Watch the inode open as ``fd`` (at ``path``) for ``watch``; return the wd.

        Raise WatchError. Watching through the descriptor, never the name, is
        what keeps a name swapped for a link from being watched.
        """
        wd = self.inotify.add_watch_fd(fd, mask, path)
        node = self.nodes.get(wd)
        if node is None:
            node = self.nodes[wd] = Node(wd)
        node.owners[watch] = path
        watch.paths[path] = wd
        if len(node.owners) > 1:
            # The inode is watched for others too (whether or not ``watch`` already held it):
            # the add above replaced the kernel mask, so set the union again.
            self.inotify.add_watch_fd(fd, node.kernel_mask() | (mask & IN_ONLYDIR), path)
        return wd

    def add_node(self, watch: OwnerT, path: str, wd: int) -> None:
        """Record a wd nobody held yet, added by the tree walk's hot loop for ``watch``."""
        # Node(wd), not Node[OwnerT](wd): a subscripted class costs typing's __call__ (0.3 s
        # in 50 000 directories, bench target 6); the annotation gives the type.
        node: Node[OwnerT] = Node(wd)
        self.nodes[wd] = node
        node.owners[watch] = path
        watch.paths[path] = wd

    def detach(self, watch: OwnerT, wd: int) -> None:
        """Stop watching ``wd`` for ``watch``; remove the kernel watch when nobody owns it."""
        node = self.nodes.get(wd)
        if node is None:
            return
        path = node.owners.pop(watch, None)
        if path is not None and watch.paths.get(path) == wd:
            del watch.paths[path]
        if not node.owners:
            del self.nodes[wd]
            try:
                self.inotify.rm_watch(wd)
            except OSError as exc:
                logger.warning("removing kernel watch %s failed: %s", wd, exc)
        else:
            self._remask(node)

    def detach_all(self, watch: OwnerT, keep: int | None = None) -> None:
        """Remove every wd of ``watch`` (but ``keep``, a wd the kernel is dropping itself)."""
        for wd in list(watch.paths.values()):
            if wd != keep:
                self.detach(watch, wd)
        if keep is None:
            watch.paths.clear()

    def rename(self, watch: OwnerT, old: str, new: str) -> None:
        """A directory of ``watch`` was renamed within its tree: its wds keep going, renamed."""
        prefix = old + "/"
        paths = watch.paths
        for path, wd in list(paths.items()):
            if path == old or path.startswith(prefix):
                moved = new + path[len(old) :]
                del paths[path]
                paths[moved] = wd
                node = self.nodes.get(wd)
                if node is not None and watch in node.owners:
                    node.owners[watch] = moved

    def detach_under(self, watch: OwnerT, top: str) -> None:
        """Stop watching ``top`` and everything below it for ``watch``."""
        prefix = top + "/"
        for path, wd in list(watch.paths.items()):
            if path == top or path.startswith(prefix):
                self.detach(watch, wd)

    def forget(self, wd: int) -> Node[OwnerT] | None:
        """Drop a wd the kernel removed on its own (IN_IGNORED); return its node."""
        node = self.nodes.pop(wd, None)
        if node is not None:
            for watch, path in node.owners.items():
                if watch.paths.get(path) == wd:
                    del watch.paths[path]
        return node

    def remask(self, watch: OwnerT) -> None:
        """Apply a changed ``watch.kernel_mask`` to all its wds without removing any."""
        for wd in list(watch.paths.values()):
            node = self.nodes.get(wd)
            if node is not None:
                self._remask(node)

    def _remask(self, node: Node[OwnerT]) -> None:
        """Set the union of the owners' masks on ``node``'s inode, reached by a checked open."""
        watch, path = next(iter(node.owners.items()))
        try:
            fd = watch.open_verified(path)
        except OSError as exc:
            logger.warning("updating the mask of %r failed: %s", path, WatchError.of(exc, path).message())
            return
        try:
            wd = self.inotify.add_watch_fd(fd, node.kernel_mask(), path)
            if wd != node.wd:
                # Another inode answers to that name now: undo what the add did to it.
                other = self.nodes.get(wd)
                if other is None:
                    self.inotify.rm_watch(wd)
                else:
                    self.inotify.add_watch_fd(fd, other.kernel_mask(), path)
                logger.warning("updating the mask of %r failed: it was replaced", path)
        except OSError as exc:
            logger.warning("updating the mask of %r failed: %s", path, exc)
        finally:
            os.close(fd)
