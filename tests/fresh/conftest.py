"""Fresh machines: a bootstrapped minimal Debian and a throwaway non-root user.

Every test here is marked ``fresh``; run them alone with ``bash ci/test.sh -m fresh``.
They need root (or passwordless sudo), mmdebstrap and the network a set-up needs
(a Debian mirror and PyPI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.fresh)


def privileged() -> list[str]:
    """The prefix that runs a command as root: nothing, or ``sudo -n``."""
    if os.getuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], check=False).returncode == 0:
        return ["sudo", "-n"]
    pytest.fail("the fresh-machine tests need root or passwordless sudo (to add a user)")
