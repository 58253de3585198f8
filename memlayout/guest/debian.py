"""The Debian builder: a base image made from Debian's packages with mmdebstrap.

No internet is needed, only a Debian mirror (mmdebstrap's default, or ``--mirror``).
The root tree gets the project's customize hook (qemu/debian-customize.sh); a second
hook (qemu/debian-disk.sh) makes it an ext4 disk with ``mke2fs -d`` (no loop mount)
and copies the image's own kernel and initrd out for direct kernel boot; the disk
becomes qcow2. As root, mmdebstrap runs in root mode; as anyone else, in unshare
mode (a user namespace: needs newuidmap and a /etc/subuid range), where the hooks
run as the namespace's root, so the guest's files are owned by root either way.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError
from ..paths import REPO_ROOT
from ..progress import Step
from . import keys
from .image import BaseImage, publish, sha256_file
from .profiles import GuestProfile

CUSTOMIZE_HOOK = REPO_ROOT / "qemu" / "debian-customize.sh"
DISK_HOOK = REPO_ROOT / "qemu" / "debian-disk.sh"
DISK_SIZE = "4G"
# The root tree (~0.9 GB) and the ext4 disk made from it (~1 GB used) exist at once,
# then its qcow2 copy (~0.6 GB).
NEEDS_BYTES = 3 << 30


def require_space(directory: Path, needed: int) -> None:
    """Fail up front, naming the place and the sizes, when ``directory`` is too full."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ImageError(
            f"building an image needs about {needed >> 20} MiB free in {directory}; "
            f"it has {free >> 20} MiB (set MEMLAYOUT_CACHE to a roomier place)"
        )


def mmdebstrap_mode() -> str:
    """root mode for root; unshare mode (a user namespace) for everyone else."""
    return "root" if os.geteuid() == 0 else "unshare"


def check_unshare_mode() -> None:
    """What unshare mode needs, each missing piece with the command that fixes it."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    if shutil.which("newuidmap") is None:
        raise ImageError(
            "building images without root needs newuidmap (sudo apt-get install uidmap)"
        )
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        ranges = path.read_text().splitlines() if path.exists() else []
        if not any(line.split(":")[0] in (user, str(os.geteuid())) for line in ranges):
            raise ImageError(
                f"{path} has no range for {user} (sudo usermod --add-subuids 100000-165535 "
                f"--add-subgids 100000-165535 {user})"
            )
    restrict = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if restrict.exists() and restrict.read_text().strip() == "1":
        raise ImageError(
            "AppArmor forbids unprivileged user namespaces (Ubuntu 24.04): "
            "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0, or run as root"
        )
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        raise ImageError(
            "unprivileged user namespaces do not work here "
            f"({probe.stderr.decode(errors='replace').strip()}); "
            "sudo sysctl kernel.unprivileged_userns_clone=1, or run as root"
        )


def mmdebstrap_command(
    profile: GuestProfile,
    hooks: Path,
    out: Path,
    mirror: str | None,
    allow_expired: bool = False,
    mode: str = "root",
) -> list[str]:
    """mmdebstrap with no output tree: the hooks write the disk, kernel and initrd into ``out``."""
    cmd = [
        "mmdebstrap",
        f"--mode={mode}",
        "--variant=apt",
        "--format=null",
        "--include=" + ",".join(profile.packages),
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        *(['--aptopt=Acquire::Check-Valid-Until "false"'] if allow_expired else []),
        f'--customize-hook={shlex.quote(str(hooks / CUSTOMIZE_HOOK.name))} "$1"',
        f'--customize-hook={shlex.quote(str(hooks / DISK_HOOK.name))} "$1" '
        f"{shlex.quote(str(out))} {DISK_SIZE}",
        profile.suite,
        "/dev/null",
    ]
    if mirror:
        cmd.append(mirror)
    return cmd


def run_logged(cmd: list[str], log: Path, step: Step, env: dict[str, str] | None = None) -> None:
    """Run ``cmd``, appending its output to ``log`` and its main steps to ``step``."""
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        except OSError as exc:
            raise ImageError(f"cannot run {cmd[0]}: {exc}", log=log) from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if line.startswith("I: ") and "..." in line:
                step(line[3:].strip())
        if proc.wait() != 0:
            tail = log.read_text().splitlines()[-15:]
            raise ImageError(
                f"{cmd[0]} failed (exit {proc.returncode})\n" + "\n".join(tail), log=log
            )


def kernel_files(out: Path) -> tuple[Path, Path, str]:
    """The kernel the disk hook copied out, its initrd, and its release."""
    kernels = sorted(out.glob("vmlinuz-*"))
    if not kernels:
        raise ImageError(f"the image has no kernel (nothing in {out})")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    initrd = out / f"initrd.img-{release}"
    if not initrd.exists():
        raise ImageError(f"no initrd for {release} in {out}")
    return kernel, initrd, release


@dataclass(frozen=True)
class DebianBuilder:
    """Builds ``profile`` with mmdebstrap from ``mirror`` (None: mmdebstrap's default)."""

    profile: GuestProfile
    mirror: str | None = None
    allow_expired: bool = False

    def recipe(self) -> dict[str, object]:
        hooks = {p.name: p.read_text() for p in (CUSTOMIZE_HOOK, DISK_HOOK)}
        return {"hooks": hooks, "disk_size": DISK_SIZE}

    def build(self, directory: Path, recipe: str, client: keys.KeyPair, step: Step) -> BaseImage:
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap is not installed (sudo apt-get install mmdebstrap)")
        mode = mmdebstrap_mode()
        if mode == "unshare":
            check_unshare_mode()
        directory.parent.mkdir(parents=True, exist_ok=True)
        require_space(directory.parent, NEEDS_BYTES)
        work = Path(tempfile.mkdtemp(prefix=f".{self.profile.name}-", dir=directory.parent))
        # Where the hooks write: reachable by the user namespace's root, which is not
        # this user (a home directory may be closed to it); sticky, so only we delete.
        out = Path(tempfile.mkdtemp(prefix="memlayout-image-"))
        out.chmod(0o1777)
        # The log lives beside the work dir, so it outlives a failed build.
        log = directory.parent / f"{self.profile.name}-build.log"
        log.unlink(missing_ok=True)
        try:
            return self._build(work, out, directory, recipe, client, step, log, mode)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)

    def _build(
        self,
        work: Path,
        out: Path,
        directory: Path,
        recipe: str,
        client: keys.KeyPair,
        step: Step,
        log: Path,
        mode: str,
    ) -> BaseImage:
        host_key = keys.generate(work / "ssh_host_ed25519_key", "memlayout-guest")
        for hook in (CUSTOMIZE_HOOK, DISK_HOOK):
            shutil.copy(hook, out / hook.name)
            (out / hook.name).chmod(0o755)
        env = dict(os.environ)
        env["MEMLAYOUT_AUTHORIZED_KEY"] = client.public_line
        env["MEMLAYOUT_HOST_KEY"] = host_key.private.read_text().strip()
        env["MEMLAYOUT_HOST_KEY_PUB"] = host_key.public_line
        step(f"mmdebstrap {self.profile.suite}, {mode} mode (log: {log})")
        cmd = mmdebstrap_command(self.profile, out, out, self.mirror, self.allow_expired, mode)
        try:
            run_logged(cmd, log, step, env)
        except ImageError as exc:
            if "is expired" in log.read_text():
                raise ImageError(
                    f"{exc}\nThe mirror's Release file has expired (a stale mirror?). If you "
                    "trust it, pass --allow-expired-release.",
                    log=log,
                ) from None
            raise
        kernel, initrd, release = kernel_files(out)
        shutil.copyfile(kernel, work / "vmlinuz")
        shutil.copyfile(initrd, work / "initrd.img")
        step(f"kernel {release}; converting the disk to qcow2")
        run_logged(
            ["qemu-img", "convert", "-O", "qcow2", str(out / "disk.raw"), str(work / "disk.qcow2")],
            log,
            step,
            env,
        )
        host_key.private.unlink()  # the guest has it; the host needs only the public half
        image = BaseImage(
            guest=self.profile.name,
            directory=directory,
            disk="disk.qcow2",
            kernel="vmlinuz",
            initrd="initrd.img",
            kernel_release=release,
            host_key=" ".join(host_key.public_line.split()[:2]),
            sha256=sha256_file(work / "disk.qcow2"),
            recipe=recipe,
            build_seconds=round(step.elapsed(), 1),
        )
        shutil.copyfile(log, work / "build.log")
        published = publish(image, work)
        step(f"done: {directory}")
        return published
