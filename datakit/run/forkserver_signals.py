"""Imported only by the fork server that starts the local engine's workers (as a preload).

A terminal's Ctrl-C and `kill -TERM -- -PGID` (what `timeout`, Slurm and systemd do) signal
the whole process group. The main process turns the first signal into a clean stop; the fork
server and the workers must not die of it. Ignoring both signals here, at the fork server's
start, means every worker is born ignoring them: there is no moment between a fork and the
worker's initializer when a signal could kill it. The fork server still exits when the main
process does (multiprocessing closes its pipe), and the workers exit when the main process is
gone (`datakit.run.local_engine._worker_init`).

Never import this module anywhere else: it would make that process ignore Ctrl-C.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
