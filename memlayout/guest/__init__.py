"""Stage 1, the guest: an x86_64 Linux in QEMU, reached over SSH.

profiles   what each ``--guest NAME`` is
image      a finished base image, and the builder interface
debian     the Debian builder (mmdebstrap, no internet)
cloud      the cloud builder (Ubuntu 16.04: download, checksum, cloud-init)
download   resumable, checksum-checked downloads (cloud images)
seed       cloud-init NoCloud seeds
cache      the image cache: ensure_image picks the builder
keys       the client key and each image's host key
qemu       the QEMU command line (pure), overlays, ports
accel      KVM when a probe boot works, else TCG
machine    one QEMU process: launch, wait for SSH, shutdown
saved      saved states of booted guests (resume in ~2 s)
console    the serial console: kernel trouble, last lines
remote     SSH and SFTP with paramiko
state      the state file of a VM left running by ``invoke up``
session    a guest to work in: attached, or booted for the duration
"""
