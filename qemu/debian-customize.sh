#!/bin/sh
# mmdebstrap customize hook for the Debian guests: $1 is the new root.
# Reads MEMLAYOUT_AUTHORIZED_KEY (a public key line), MEMLAYOUT_HOST_KEY and
# MEMLAYOUT_HOST_KEY_PUB (the ed25519 host key to install, private and public).
# Runs as root in root mode and as the user namespace's root in unshare mode.
set -eu
root="$1"

echo memlayout-guest >"$root/etc/hostname"
printf '127.0.1.1\tmemlayout-guest\n' >>"$root/etc/hosts"
printf '/dev/vda\t/\text4\trw,relatime\t0\t1\n' >"$root/etc/fstab"

# DHCP on whatever the NIC is called.
mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/10-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
chroot "$root" systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1

# Root logs in with the cache's key only; the host key is known in advance.
install -d -m 700 "$root/root/.ssh"
printf '%s\n' "$MEMLAYOUT_AUTHORIZED_KEY" >"$root/root/.ssh/authorized_keys"
chmod 600 "$root/root/.ssh/authorized_keys"
rm -f "$root"/etc/ssh/ssh_host_*
(umask 077 && printf '%s\n' "$MEMLAYOUT_HOST_KEY" >"$root/etc/ssh/ssh_host_ed25519_key")
printf '%s\n' "$MEMLAYOUT_HOST_KEY_PUB" >"$root/etc/ssh/ssh_host_ed25519_key.pub"
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n' >>"$root/etc/ssh/sshd_config"

# A small initramfs that knows exactly the drivers the VM needs.
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >>"$root/etc/initramfs-tools/modules"
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
chroot "$root" update-initramfs -u -k all >/dev/null 2>&1

# A quiet, fast boot: no timers or getty on the serial line that we never use.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
	fstrim.timer man-db.timer serial-getty@ttyS0.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
