#!/usr/bin/env python
"""What "one count on every rank" costs (issue 31.1): 2 processes on gloo (CPU), started by torchrun.

    .venv/bin/python benchmarks/bench_ranks.py           # starts torchrun itself; ~20 s on 2 CPU cores

1. Between checks: `scheduler.step()` with `check_ranks_every` set (to 10**12, so no check falls inside the timed
   calls: the path between two checks exactly) against without (the option off), in alternating blocks; best-of
   blocks, per call. Timed on rank 0 while rank 1 waits. Target: < 0.1 us more per call (a
   no-op step() is ~0.5 us, a real update milliseconds: unmeasurable there).
2. The check itself: `check_ranks()`, one all_gather of 3 int64 on gloo, 2 processes, median of 500 calls.
   Target: < 1 ms. The default check_ranks_every is left off (None): see docs/ranks.md for why, and N = 100
   costs (2) / 100 per update.
Exit status 0 when both targets pass.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def worker() -> int:
    import torch
    import torch.distributed as dist

    from noam_plugin import NoamLR

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = torch.nn.Linear(2, 1)
    off = NoamLR(torch.optim.SGD(model.parameters(), lr=0.0), warmup_max_lr=1e-3, warmup_num_steps=100)
    model2 = torch.nn.Linear(2, 1)
    on = NoamLR(
        torch.optim.SGD(model2.parameters(), lr=0.0), warmup_max_lr=1e-3, warmup_num_steps=100, check_ranks_every=10**12
    )
    calls, blocks = 2_000, 200
    best = {"off": float("inf"), "on": float("inf")}
    diffs = []
    if rank == 0:  # no communication between checks: timed on rank 0 while rank 1 waits (no contention from it)
        for block in range(blocks):
            took = {}
            for name, sched in (("off", off), ("on", on)) if block % 2 else (("on", on), ("off", off)):
                start = time.perf_counter()
                for _ in range(calls):
                    sched.step()
                took[name] = (time.perf_counter() - start) / calls
                best[name] = min(best[name], took[name])
            diffs.append(took["on"] - took["off"])
    dist.barrier()
    times = []
    for _ in range(500):
        start = time.perf_counter()
        on.check_ranks()
        times.append(time.perf_counter() - start)
    dist.barrier()
    if rank == 0:
        per_check = statistics.median(times)
        between = best["on"] - best["off"]
        print(f"torch {torch.__version__}, gloo, 2 processes, load average {os.getloadavg()[0]:.1f}")
        print(f"step() without check_ranks_every: {best['off'] * 1e6:.3f} us per call (best of {blocks} blocks)")
        print(f"step() with check_ranks_every, between checks: {best['on'] * 1e6:.3f} us per call")
        print(
            f"between checks: {between * 1e6:+.3f} us per call, best-of; "
            f"median of pairs {statistics.median(diffs) * 1e6:+.3f} us "
            "(target: < 0.1 us; a real update takes milliseconds)"
        )
        print(f"with check_ranks_every=100: {per_check / 100 * 1e6:.2f} us per update on average (a check / 100)")
        print(f"check_ranks(): median {per_check * 1e3:.3f} ms, p90 {sorted(times)[449] * 1e3:.3f} ms (target < 1 ms)")
        ok = per_check < 1e-3 and min(between, statistics.median(diffs)) < 0.1e-6
        print("PASS" if ok else "FAIL")
        code = 0 if ok else 1
    else:
        code = 0
    dist.destroy_process_group()
    return code


def main() -> int:
    if "RANK" in os.environ:
        return worker()
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [torchrun, "--nproc-per-node=2", "--master-addr=127.0.0.1", "--master-port=29517", __file__]
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
