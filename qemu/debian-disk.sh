#!/bin/sh
# mmdebstrap customize hook, run after debian-customize.sh: make the guest's
# disk from the finished root tree and copy its kernel and initrd out.
#   debian-disk.sh ROOT OUT SIZE
# Inside the hook the files are owned by root (also in unshare mode, where
# "root" is the user namespace's), so the ext4 disk gets the right owners
# without any loop mount. The hook's /proc and /sys mounts are detached first:
# they must not end up on the disk.
set -eu
root=$1
out=$2
size=$3

umount -l "$root/proc" "$root/sys" 2>/dev/null || true
kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n 1)
release=${kernel##*/vmlinuz-}
cp "$kernel" "$out/vmlinuz-$release"
cp "$root/boot/initrd.img-$release" "$out/initrd.img-$release"
chmod a+r "$out/vmlinuz-$release" "$out/initrd.img-$release"
mke2fs -q -t ext4 -L root -d "$root" -F "$out/disk.raw" "$size"
chmod a+r "$out/disk.raw"
