"""The state file of a VM that ``invoke up`` left running (``runs/active-<guest>.json``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..progress import Reporter, to_stderr


@dataclass
class LiveState:
    """How later tasks reach the VM: its pid, SSH port, QMP socket and host key."""

    guest: str
    pid: int
    ssh_port: int
    qmp_socket: str
    console_log: str
    host_key: str
    accel: str
    accel_reason: str
    cpu: str
    kernel_release: str
    image_sha256: str
    run_dir: str
    boot_seconds: float = 0.0
    resumed: bool = False
    started_at: float = field(default_factory=time.time)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, report: Reporter = to_stderr) -> LiveState | None:
        """The saved state, or None (with a message) when it is unreadable or of another
        version: the caller then treats the VM as not running."""
        try:
            data = json.loads(path.read_text())
            names = {f.name for f in fields(cls)}
            if not isinstance(data, dict) or not names.issuperset(data):
                raise ValueError("unknown fields")
            return cls(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            report(f"ignoring {path}: not a state file this version can read ({exc})")
            return None
