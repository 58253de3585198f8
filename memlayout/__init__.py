"""memlayout: a reproducible pipeline around the procmem kernel module.

The stages, one subpackage each, called by ``invoke all`` (``pipeline.run_all``)
and by every single-stage task alike:

guest/        an x86_64 guest in QEMU: images, machines, saved states, SSH
module/       procmem.ko built in the guest, captured with /proc, verified, cycled
experiments/  the app's scenarios (one file each): rules, summaries, plots
report/       the PDF report and the hand-in bundle

Around them: ``pipeline`` (the stages in order), ``rundir`` (every file name of
a run), ``errors`` (one exception base and the exit codes), ``paths``,
``progress``, ``plotting`` and ``humanize``.
"""

__version__ = "0.2.0"
