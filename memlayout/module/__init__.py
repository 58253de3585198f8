"""Stage 2, the module: procmem.ko built in the guest, loaded for live processes, checked.

build      push kernel-module/ and guest/, kbuild them (warnings fail)
capture    freeze a pid, read /proc and load the module at the same moment
records    parse the module's output lines into one record
procviews  parse /proc/PID/{maps,stat,statm,status,smaps,pagemap}
verify     compare a record with the /proc views, check by check
targets    the verify stage: the standard targets, or given pids
cycles     insmod/rmmod cycles in one guest loop, latency and kernel-log checks
"""
