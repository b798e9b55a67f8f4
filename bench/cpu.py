"""CPU accounting for the benchmarks on a shared machine.

The machine's busy CPU seconds come from /proc/stat; ours are those of the
process trees the benchmark started (the postmaster with every backend and
worker, the test servers, the driver itself), exited children included
(their time is in their parent's cutime/cstime once reaped).  What the rest
of the machine used during a run is the difference: a run where that
figure is high ran on a loaded machine and is marked so in the reports.
"""
import os

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system (idle iowait) irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), [int(x) for x in fields[11:15]]
    except (OSError, ValueError, IndexError):
        return None, None


def tree_cpu_s(roots):
    """CPU seconds of the processes in roots and all their descendants."""
    parent = {}
    times = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ppid, t = _stat(int(name))
            if t is not None:
                parent[int(name)] = ppid
                times[int(name)] = t
    keep = set(r for r in roots if r in times)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                changed = True
    # own time plus that of reaped children
    return sum(sum(times[p]) for p in keep) / HZ


class Meter:
    """Others' CPU over an interval: machine busy minus our process trees."""

    def __init__(self, roots):
        self.roots = roots
        self.busy0 = machine_busy_s()
        self.ours0 = tree_cpu_s(roots)

    def stop(self):
        busy = machine_busy_s() - self.busy0
        ours = tree_cpu_s(self.roots) - self.ours0
        return {"machine_busy_s": round(busy, 2), "ours_s": round(ours, 2),
                "others_s": round(max(0.0, busy - ours), 2)}


def postmaster_pid(pgdata):
    with open(os.path.join(pgdata, "postmaster.pid")) as f:
        return int(f.readline())
