"""Where the system's Chromium is, for the report's browser tests and benchmark.

Debian's ``/usr/bin/chromium`` is a shell script that sets flags and runs
``/usr/lib/chromium/chromium``; Playwright needs the binary itself. The
CHROMIUM environment variable names another.
"""

from __future__ import annotations

import os
import shutil


def binary() -> str | None:
    """The Chromium binary, or None where none is installed."""
    for path in (os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium")):
        if path and os.access(path, os.X_OK):
            return path
    return None
