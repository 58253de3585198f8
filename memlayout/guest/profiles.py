"""Guest profiles: what each ``--guest NAME`` boots."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError

DEFAULT_GUEST = "debian-bookworm"

# Everything a guest needs to build and load a module without the network.
DEBIAN_PACKAGES = (
    "linux-image-amd64",
    "linux-headers-amd64",
    "gcc",
    "make",
    "libc6-dev",
    "openssh-server",
    "systemd-sysv",
    "udev",
    "dbus",
    "e2fsprogs",
    "kmod",
    "procps",
    "iproute2",
    "initramfs-tools",
)


@dataclass(frozen=True)
class GuestProfile:
    """One guest: how its base image is made and how it boots."""

    name: str
    kind: str  # "debian" (built with mmdebstrap) or "cloud" (downloaded image): the builder
    suite: str = ""
    packages: tuple[str, ...] = DEBIAN_PACKAGES
    # Cloud images: pinned URL of the disk, its SHA256 (the trust root; "" when not known
    # yet: see cloud.pinned_sha256), and the checksum list that is only a cross-check.
    image_url: str = ""
    image_sha256: str = ""
    sums_url: str = ""
    cloud_packages: tuple[str, ...] = field(default=())


UBUNTU_XENIAL_BUILD = "20211001"
# The SHA256 of that build's ubuntu-16.04-server-cloudimg-amd64-disk1.img, as its
# SHA256SUMS (signed by SHA256SUMS.gpg) lists it. Not known when this was written, offline,
# so left empty rather than guessed: until it is filled in, building the image needs
# MEMLAYOUT_UBUNTU_XENIAL_SHA256 set to a digest you have checked that signature for.
UBUNTU_XENIAL_SHA256 = ""
_XENIAL_BASE = f"https://cloud-images.ubuntu.com/releases/16.04/release-{UBUNTU_XENIAL_BUILD}/"

PROFILES: dict[str, GuestProfile] = {
    p.name: p
    for p in (
        GuestProfile("debian-bookworm", "debian", "bookworm"),  # 6.1
        GuestProfile("debian-bullseye", "debian", "bullseye"),  # 5.10
        GuestProfile("debian-trixie", "debian", "trixie"),  # 6.12
        # The newest. Its essential set no longer pulls in mount, which has swapon
        # (the page-state zoo and the fuzz give the guest a swap file).
        GuestProfile("debian-sid", "debian", "sid", packages=(*DEBIAN_PACKAGES, "mount")),
        GuestProfile(
            "ubuntu-xenial",
            "cloud",
            packages=(),
            image_url=_XENIAL_BASE + "ubuntu-16.04-server-cloudimg-amd64-disk1.img",
            image_sha256=UBUNTU_XENIAL_SHA256,
            sums_url=_XENIAL_BASE + "SHA256SUMS",
            cloud_packages=("build-essential", "kmod", "procps"),
        ),
    )
}


def get_profile(name: str) -> GuestProfile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise UsageError(f"unknown guest {name!r}; known guests: {known}") from None
