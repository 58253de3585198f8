"""The README's set-up on a freshly bootstrapped minimal Debian 12, as a user with sudo.

What a student's new machine has: a minimal system with sudo, git, ca-certificates and
procps. In it a user with passwordless sudo clones the repository and runs
``bash ci/setup.sh`` (apt through sudo, the venv from PyPI), then ``invoke --list`` and
renders a recorded run into a PDF: a missing apt package (as libpango once was) or Python
dependency fails here, not on the user's machine. About 4-6 minutes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from memlayout.paths import REPO_ROOT

# Extra CA certificates of this machine (a TLS-inspecting proxy, a company CA): the
# bootstrapped system needs them to reach the registries, as the host does.
CA_DIR = Path(os.environ.get("MEMLAYOUT_EXTRA_CA_DIR", "/usr/local/share/ca-certificates"))
SUITE = os.environ.get("MEMLAYOUT_FRESH_SUITE", "bookworm")
BASE_PACKAGES = "sudo,git,ca-certificates,procps"

# Runs inside the bootstrapped system, as the user, from the clone.
USER_SCRIPT = """
set -eux
cd ~/memlayout
bash ci/setup.sh
.venv/bin/invoke --list
cp -r tests/data/run-sample ~/recorded-run
.venv/bin/invoke report --run ~/recorded-run
pdftotext ~/recorded-run/report.pdf - | grep -c 'Verification against /proc'
"""

# mmdebstrap's customize hook: $1 is the new system, which is thrown away afterwards.
HOOK = """
set -eu
root="$1"
if [ -d "$CA_DIR" ]; then
	cp -r "$CA_DIR"/. "$root/usr/local/share/ca-certificates/"
	chroot "$root" update-ca-certificates >/dev/null
fi
chroot "$root" useradd -m -s /bin/bash student
echo 'student ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/student"
git clone -q --no-hardlinks "$REPO" "$root/home/student/memlayout"
chroot "$root" chown -R student: /home/student/memlayout
cp "$USER_SCRIPT_FILE" "$root/home/student/fresh.sh"
status=0
chroot "$root" runuser -u student -- env -i HOME=/home/student USER=student \\
	PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 \\
	PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
	bash /home/student/fresh.sh > "$OUT/fresh.log" 2>&1 || status=$?
cp "$root/home/student/recorded-run/report.pdf" "$OUT/" 2>/dev/null || true
chroot "$root" dpkg-query -W -f='${Package}\\n' > "$OUT/packages.txt"
exit $status
"""


@pytest.fixture(scope="module")
def fresh_machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bootstrap, set up, render; the directory holds the log, the PDF and the package list."""
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed (bash ci/setup.sh installs it)")
    out = tmp_path_factory.mktemp("fresh-rootfs")
    out.chmod(0o755)
    hook = out / "hook.sh"
    hook.write_text(HOOK)
    script = out / "user.sh"
    script.write_text(USER_SCRIPT)
    env = dict(os.environ, CA_DIR=str(CA_DIR), REPO=str(REPO_ROOT), OUT=str(out),
               USER_SCRIPT_FILE=str(script))  # fmt: skip
    cmd = [
        "mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "--format=null",
        f"--customize-hook=sh {shlex.quote(str(hook))} \"$1\"", SUITE, "/dev/null",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    log = out / "fresh.log"
    tail = log.read_text()[-4000:] if log.exists() else "(no log)"
    assert proc.returncode == 0, f"{proc.stderr[-2000:]}\n--- the set-up's log ---\n{tail}"
    return out


def test_setup_installs_what_the_pipeline_needs(fresh_machine: Path) -> None:
    packages = set((fresh_machine / "packages.txt").read_text().split())
    setup = (REPO_ROOT / "ci" / "setup.sh").read_text()
    wanted = setup.split("APT_PACKAGES=(", 1)[1].split(")", 1)[0].split()
    assert set(wanted) <= packages, f"not installed: {set(wanted) - packages}"
    log = (fresh_machine / "fresh.log").read_text()
    assert "setup: installing" in log, "setup.sh found nothing to install on a fresh system?"
    assert "setup: done" in log


def test_invoke_lists_its_tasks(fresh_machine: Path) -> None:
    log = (fresh_machine / "fresh.log").read_text()
    for name in ("all", "image", "up", "inspect", "verify", "report"):
        assert f"\n  {name} " in log, f"invoke --list did not show {name}"


def test_a_recorded_run_renders_into_a_pdf(fresh_machine: Path) -> None:
    pdf = fresh_machine / "report.pdf"
    assert pdf.exists(), (fresh_machine / "fresh.log").read_text()[-3000:]
    text = "\n".join(page.extract_text() or "" for page in PdfReader(pdf).pages)
    assert "Verification against /proc" in text and len(PdfReader(pdf).pages) > 5
