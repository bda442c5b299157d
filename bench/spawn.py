"""Runs one command and reports its wall time and peak RSS: ``python bench/spawn.py OUT CMD...``.

Linux carries a process's peak RSS across ``fork`` and ``exec``: a child forked from the bench
(which holds whole catalogs) would report the bench's memory as its own. Spawned from this small
process instead, the command's ``ru_maxrss`` is its own (at least this launcher's few MiB). Wall
time runs from just before the spawn to the command's exit, so it includes the command's
interpreter start but not this launcher's. Writes ``{"wall_s", "maxrss_kib", "status"}`` as JSON
to OUT and exits with the command's exit code.
"""

import json
import os
import sys
import time


def main() -> int:
    out, *argv = sys.argv[1:]
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as handle:
        json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "status": code}, handle)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
