"""memlayout: a reproducible pipeline around the procmem kernel module.

Each submodule has one job: ``guests`` (profiles), ``image`` (build or fetch
base images), ``vm`` (one QEMU process), ``remote`` (SSH/SFTP), ``kmod``
(build and load the module), ``records`` (parse its output), ``procviews``
and ``verify`` (check it against /proc), ``experiments``, ``plots``,
``report`` and ``submission``.
"""

__version__ = "0.1.0"
