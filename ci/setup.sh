#!/bin/bash
# Install everything the pipeline needs on a fresh Debian (or Ubuntu) machine:
# the apt packages (QEMU, image tools, PDF tools) and the Python dependencies
# in .venv/. Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
	qemu-system-x86 qemu-utils mmdebstrap debootstrap e2fsprogs genisoimage uidmap
	openssh-client poppler-utils python3-venv git
	fonts-dejavu-core libharfbuzz-subset0 libpango-1.0-0 libpangoft2-1.0-0
)

# mmdebstrap checks Debian's Release files with Debian's keys, which Ubuntu lacks.
if grep -qs '^ID=ubuntu' /etc/os-release; then
	APT_PACKAGES+=(debian-archive-keyring)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
	echo "setup: $("$PYTHON" -V 2>&1) is too old: the pipeline needs Python 3.10 or newer" >&2
	echo "setup: install one and run again with PYTHON=python3.11 bash ci/setup.sh" >&2
	exit 2
fi
if [ ! -x .venv/bin/python ]; then
	"$PYTHON" -m venv .venv
fi
# Runtime pins, and the test command's tools (ruff, mypy, pytest).
.venv/bin/python -m pip install -q --disable-pip-version-check \
	-r requirements.txt -r requirements-dev.txt
echo "setup: done (.venv ready; run .venv/bin/invoke --list)"
