#!/bin/bash
# Say which accelerator a guest really used in a run, from <run>/<guest>/guest.json.
# Usage: ci/check-accel.sh RUN_DIR GUEST   (e.g. ci/check-accel.sh runs/latest debian-bookworm)
# A fall-back to TCG (or a missing guest.json) is a GitHub warning, never a failure.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 RUN_DIR GUEST" >&2
	exit 2
fi
guest=$2
guest_json="$1/$guest/guest.json"

if [ ! -f "$guest_json" ]; then
	echo "::warning::$guest: no $guest_json, cannot tell which accelerator was used"
	exit 0
fi

# field KEY DEFAULT: one value of guest.json (python3's json, so no jq needed).
field() {
	python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], sys.argv[3]))' \
		"$guest_json" "$1" "$2"
}
accel=$(field accel unknown)
reason=$(field accel_reason "no reason given")

echo "$guest: accelerator $accel ($reason)"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
	echo "**$guest**: accelerator \`$accel\` ($reason)" >>"$GITHUB_STEP_SUMMARY"
fi
if [ "$accel" != "kvm" ]; then
	echo "::warning::$guest ran under $accel, not KVM: $reason"
fi
# The guest's own word: under KVM the kernel picks the kvm-clock clocksource.
clocksource=$(field clocksource unknown)
echo "$guest: guest clocksource $clocksource"
if [ "$accel" = "kvm" ] && [ "$clocksource" != "kvm-clock" ]; then
	echo "::warning::$guest: QEMU ran with KVM but the guest's clocksource is $clocksource"
fi
