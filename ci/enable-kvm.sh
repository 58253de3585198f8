#!/bin/bash
# Make /dev/kvm usable by the (non-root) CI user, so guests boot under KVM rather
# than TCG. Hosted runners expose /dev/kvm but only to root and the kvm group.
# Never fails: without KVM the pipeline falls back to TCG and says so.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

if [ ! -e /dev/kvm ]; then
	echo "enable-kvm: /dev/kvm does not exist; guests will run under TCG"
	exit 0
fi

if ! command -v udevadm >/dev/null; then
	# No udev (a container, a chroot): nothing re-applies rules; leave the node alone.
	echo "enable-kvm: no udev on this machine; /dev/kvm left as it is"
	ls -l /dev/kvm
	exit 0
fi

# A udev rule, so the mode survives udev re-applying its rules to the node.
echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' |
	$SUDO tee /etc/udev/rules.d/99-kvm4all.rules >/dev/null
$SUDO udevadm control --reload-rules
$SUDO udevadm trigger --name-match=kvm
$SUDO udevadm settle || true

ls -l /dev/kvm
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
	echo "enable-kvm: /dev/kvm is readable and writable by $(id -un)"
else
	echo "enable-kvm: /dev/kvm is still not usable by $(id -un); guests will run under TCG"
fi
