#!/usr/bin/env python3
"""Benchmark (not a test): topology facts and pool derivation on large fixtures.

Builds sysfs/procfs trees for 1024 and 2048 CPUs and times
``read_topology`` (the whole work of ``cpu_topology_facts``), the module run
end to end through ``main()``, and ``cpu_pools``, reporting the median of
several runs. Rerun with: ``make bench`` or ``python tests/bench/bench_topology.py``.
"""
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', '.build', 'collections'))

from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import cpu_pools  # noqa: E402
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import read_topology  # noqa: E402
from ansible_collections.kvmlab.host_resources.plugins.modules import cpu_topology_facts  # noqa: E402
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module  # noqa: E402
from ansible_collections.kvmlab.host_resources.tests.unit.sysfs_builder import layout, write_tree  # noqa: E402

RUNS = 7


def timed(func, runs=RUNS):
    samples = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples), result


def main():
    shapes = [('1024 CPUs (4 sockets x 128 cores x 2 threads)', dict(sockets=4, cores=128, threads=2)),
              ('2048 CPUs (8 sockets x 128 cores x 2 threads)', dict(sockets=8, cores=128, threads=2))]
    rows = []
    for label, shape in shapes:
        root = tempfile.mkdtemp(prefix='kvmlab-bench-')
        sysfs, proc = write_tree(root, layout(**shape))
        facts_median, facts_max, topo = timed(lambda: read_topology(sysfs, proc))
        module_median, module_max, _ = timed(
            lambda: run_module(cpu_topology_facts.main, {'sysfs_root': sysfs, 'proc_root': proc}))
        pools_median, pools_max, pools = timed(lambda: cpu_pools(topo))
        assert topo['online_count'] == shape['sockets'] * shape['cores'] * shape['threads']
        rows.append((label, facts_median, facts_max, module_median, module_max, pools_median, pools_max,
                     pools['host_reserved']))
    print('| topology | read_topology median (max) | module main() median (max) | cpu_pools median (max) |')
    print('|---|---|---|---|')
    for label, fm, fx, mm, mx, pm, px, _reserved in rows:
        print('| %s | %.1f ms (%.1f) | %.1f ms (%.1f) | %.2f ms (%.2f) |' % (label, fm * 1e3, fx * 1e3,
                                                                        mm * 1e3, mx * 1e3, pm * 1e3, px * 1e3))
    worst_facts = max(row[3] for row in rows if row[0].startswith('1024'))
    worst_pools = max(row[5] for row in rows if row[0].startswith('1024'))
    print('targets on 1024 CPUs: facts < 1 s: %s (%.3f s); pools < 50 ms: %s (%.2f ms)'
          % ('met' if worst_facts < 1 else 'MISSED', worst_facts, 'met' if worst_pools < 0.05 else 'MISSED',
             worst_pools * 1e3))


if __name__ == '__main__':
    main()
