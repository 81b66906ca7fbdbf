"""Peak RSS of the running process, for the benchmarks' child processes.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is not it for a child: Linux keeps a
process's peak across exec, so a command started by a large process (a benchmark that
has just built its data) starts with that process's peak as its own. ``VmHWM`` belongs
to the memory map made at exec.
"""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM`` (Linux), else getrusage's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
