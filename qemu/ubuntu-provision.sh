#!/bin/sh
# First-boot provisioning of the Ubuntu 16.04 cloud guest, run by cloud-init's runcmd.
# Usage: ubuntu-provision.sh ARCHIVE FALLBACK PACKAGE...
# Installs PACKAGEs and the running kernel's headers from the Ubuntu archive ARCHIVE, or
# from FALLBACK (old-releases) when ARCHIVE no longer serves xenial. Its output goes to
# /var/log/cloud-init-output.log; success leaves /var/lib/memlayout/provisioned.
set -eu
archive=$1
fallback=$2
shift 2
export DEBIAN_FRONTEND=noninteractive
LOCK_TIMEOUT=900
# Where it writes; the unit tests run it on the host with other places and a fake apt-get.
sources_list=${MEMLAYOUT_SOURCES_LIST:-/etc/apt/sources.list}
state_dir=${MEMLAYOUT_STATE_DIR:-/var/lib/memlayout}
modules_dir=${MEMLAYOUT_MODULES_DIR:-/lib/modules}

# apt-daily and unattended-upgrades also start at first boot and take dpkg's lock. Their
# timers are stopped for good (they would disturb later measurements too); a run that
# has started already is waited for, never killed: that would leave dpkg half-done.
systemctl stop apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
systemctl mask apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true

# xenial's apt 1.2 has neither DPkg::Lock::Timeout nor dpkg's lock-frontend, and flock(1)
# does not see apt's locks (they are fcntl locks): probe those with python3 (cloud-init's).
locks_free() {
	python3 - <<'PY'
import fcntl, os, sys
for path in ("/var/lib/dpkg/lock", "/var/lib/apt/lists/lock", "/var/cache/apt/archives/lock"):
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        continue
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(1)
    finally:
        os.close(fd)
PY
}

wait_for_apt() {
	waited=0
	until locks_free; do
		if [ "$waited" -ge "$LOCK_TIMEOUT" ]; then
			echo "memlayout: apt/dpkg still locked after ${LOCK_TIMEOUT} s; trying anyway"
			return 0
		fi
		if [ $((waited % 60)) -eq 0 ]; then
			echo "memlayout: waiting for another apt/dpkg to finish"
		fi
		sleep 5
		waited=$((waited + 5))
	done
}

apt_get() {
	wait_for_apt
	apt-get -o Acquire::Retries=3 "$@"
}

write_sources() {
	cat >"$sources_list" <<EOF
deb $1 xenial main restricted universe
deb $1 xenial-updates main restricted universe
deb $1 xenial-security main restricted universe
EOF
}

# An archive serves xenial when apt-get update fetched every index: apt 1.2 exits 100 on
# "Some index files failed to download", and a missing Release file is only a warning.
update_from() {
	write_sources "$1"
	log=$(mktemp)
	status=0
	apt_get update >"$log" 2>&1 || status=$?
	cat "$log"
	if grep -Eq '^(E|W): (Failed to fetch|The repository .* does not have a Release file)' "$log"; then
		status=1
	fi
	rm -f "$log"
	return "$status"
}

if update_from "$archive"; then
	echo "memlayout: packages from $archive"
elif [ "$fallback" != "$archive" ] && update_from "$fallback"; then
	echo "memlayout: $archive does not serve xenial (any more); packages from $fallback"
else
	echo "memlayout: neither $archive nor $fallback serves xenial" >&2
	exit 1
fi

apt_get install -y "$@" "linux-headers-$(uname -r)"
test -d "$modules_dir/$(uname -r)/build"
mkdir -p "$state_dir"
touch "$state_dir/provisioned"
echo "memlayout: provisioned"
