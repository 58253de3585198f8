#!/bin/sh
# capture.sh PID TAG [MODULE_ARGS...]
#
# Freeze process PID (SIGSTOP), read the kernel's own views of its memory and
# load procmem.ko for it at the same moment, read its record from
# /proc/procmem and its printk lines from the kernel log, unload it, resume
# PID. Output is a series of sections, each starting with a line
# "=== NAME ===".
# NOSTOP=1 in the environment skips the freeze (for pids that must not stop);
# NOPID=1 leaves pid= out of the module's arguments (to test that error).
set -u
pid=$1
tag=$2
shift 2
here=$(dirname "$0")
KMSG_KEEP=${KMSG_KEEP:-$here/../kmsg.log}
module=${MODULE:-$here/../kernel-module/procmem.ko}
va=
for arg in "$@"; do
	case $arg in va=*) va=${arg#va=} ;; esac
done

section() { echo "=== $1 ==="; }

all_stopped() {
	for s in /proc/"$pid"/task/*/stat; do
		state=$(sed 's/.*) //' "$s" 2>/dev/null | cut -d' ' -f1)
		case $state in T | t | Z | X | "") ;; *) return 1 ;; esac
	done
	return 0
}

stopped=0
if [ -z "${NOSTOP:-}" ] && [ -d /proc/"$pid" ] && [ "$pid" != "$$" ] &&
	kill -STOP "$pid" 2>/dev/null; then
	stopped=1
	i=0
	while ! all_stopped && [ $i -lt 200 ]; do
		sleep 0.01
		i=$((i + 1))
	done
fi

section meta
echo "stopped=$stopped"
echo "kernel=$(uname -r)"
for view in maps stat statm status smaps; do
	section "$view"
	cat /proc/"$pid"/"$view" 2>&1
done
# The tools the assignment names, at the same frozen moment.
section ps
ps aux 2>/dev/null | awk -v p="$pid" 'NR == 1 || $2 == p'
section top
{ top -b -n 1 -e k -p "$pid" 2>/dev/null || top -b -n 1 -p "$pid"; } |
	awk -v p="$pid" '$1 == "PID" || $1 == p'
# System-wide memory: free and anonymous pages, free pages per zone.
section system
awk '$1 == "MemFree:" || $1 == "AnonPages:" { print $1, $2 }' /proc/meminfo
awk '$1 == "nr_free_pages" || $1 == "nr_anon_pages" { print $1, $2 }' /proc/vmstat
awk '/^Node/ { zone = $4 } $1 == "pages" && $2 == "free" { print "zone_" zone "_free", $3 }' \
	/proc/zoneinfo
if [ -n "$va" ]; then
	section pagemap
	page=$(($va / 4096))
	echo "va=$va"
	dd if=/proc/"$pid"/pagemap bs=8 skip="$page" count=1 2>/dev/null | od -An -tx8
fi

# Move what the kernel logged so far to the keep file, so this load's lines
# are read from a short log (the keep file plus dmesg is the whole story).
dmesg -c >>"$KMSG_KEEP"
echo "memlayout-mark $tag" >/dev/kmsg
section insmod
if [ -n "${NOPID:-}" ]; then
	insmod "$module" tag="$tag" "$@" 2>&1
else
	insmod "$module" pid="$pid" tag="$tag" "$@" 2>&1
fi
status=$?
echo "insmod_status=$status"
# The record as the module keeps it (complete, whatever the log lost).
section record
[ $status = 0 ] && cat /proc/procmem 2>&1
# The same lines through printk: from the mark on, or the whole log when
# the mark is gone (the log overflowed and lost the start of the record).
section dmesg
log=$(dmesg -c | tee -a "$KMSG_KEEP")
if printf '%s\n' "$log" | grep -q "memlayout-mark $tag\$"; then
	echo "memlayout-log mark=1"
	printf '%s\n' "$log" | sed -n "/memlayout-mark $tag\$/,\$p"
else
	echo "memlayout-log mark=0"
	printf '%s\n' "$log"
fi
rmmod procmem 2>/dev/null

[ $stopped = 1 ] && kill -CONT "$pid"
section end
