"""Test settings whose inotifier part is example/settings_example.py, run from a copy in a temporary project.

The copy's own directory becomes its PROJECT_PATH, so the example runs exactly
as written: its watch paths, output files and pid file all land in the test's
temporary directory.
"""

from __future__ import annotations

import os
import runpy

from tests.settings import *  # noqa: F403

_example = runpy.run_path(os.environ["INOTIFIER_TEST_EXAMPLE_SETTINGS"])
globals().update({name: value for name, value in _example.items() if name.isupper()})
# As in the 2010 app, the pid file follows PROJECT_PATH (tests.settings would set one).
INOTIFIER_PID_FILE = None
