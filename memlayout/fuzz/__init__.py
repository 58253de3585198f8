"""Randomized differential churn: seeded operation sequences, verified at every step.

``ops`` generates sequences of mmap/munmap/mprotect/madvise/mremap/touch/
mlock/fork/thread/brk operations from a seed; guest/app.c's ``churn`` mode
executes them; ``runner`` freezes the app after each step and compares the
module's record with /proc (maps, smaps, statm, status, pagemap), and on a
mismatch ``shrink`` reduces the sequence to a short replayable one.
"""
