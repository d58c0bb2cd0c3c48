"""A module with an import side effect: proves the daemon never imports non-allowlisted code."""

import os

import pyinotify

marker = os.environ.get("INOTIFIER_TEST_EVIL_MARKER")
if marker:
    with open(marker, "w") as fh:
        fh.write("imported")


class Processor(pyinotify.ProcessEvent):
    pass
