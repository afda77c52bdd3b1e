"""Build fake host trees (proc, sys, run) for the metrics collector.

Each ``FakeHost`` writes the files the kernel, systemd and libvirt would
expose under a root directory, so the collector's real reading code runs on
real files; counters are advanced by rewriting those files.
"""
import json
import os
import shlex
import shutil
import sys


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(text)


def escape_unit(text):
    return text.replace('-', '\\x2d')


class FakeHost(object):
    """A fake host below ``root`` with CPUs, cgroups, guests, KSM, zram, swap and PSI."""

    def __init__(self, root, cpus=8, clock_ticks=100):
        self.root = str(root)
        self.cpus = cpus
        self.clock_ticks = clock_ticks
        self.cpu_ticks = dict((cpu, [0] * 10) for cpu in range(cpus))
        self.uptime = 1000.0
        self.next_pid = 1000
        self.guests = {}
        self.write_boot_id('11111111-2222-3333-4444-555555555555')
        self.write_uptime()
        self.write_proc_stat()

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip('/'))

    def write(self, rel, text):
        _write(self.path(rel), text)

    # clock and CPUs
    def write_boot_id(self, boot_id):
        self.write('/proc/sys/kernel/random/boot_id', boot_id + '\n')

    def write_uptime(self):
        self.write('/proc/uptime', '%.2f %.2f\n' % (self.uptime, self.uptime * 2))

    def advance(self, seconds):
        self.uptime += seconds
        self.write_uptime()

    def add_cpu_ticks(self, cpu, user=0, system=0, idle=0, iowait=0, steal=0):
        ticks = self.cpu_ticks[cpu]
        ticks[0] += user
        ticks[2] += system
        ticks[3] += idle
        ticks[4] += iowait
        ticks[7] += steal
        self.write_proc_stat()

    def write_proc_stat(self):
        total = [sum(t[i] for t in self.cpu_ticks.values()) for i in range(10)]
        lines = ['cpu  ' + ' '.join(str(v) for v in total)]
        for cpu in sorted(self.cpu_ticks):
            lines.append('cpu%d ' % cpu + ' '.join(str(v) for v in self.cpu_ticks[cpu]))
        lines += ['intr 1 2 3', 'ctxt 123', 'btime 1700000000', 'processes 99']
        self.write('/proc/stat', '\n'.join(lines) + '\n')

    # cgroups
    def cgroup(self, path, usage_usec=None, effective=None, procs=None):
        base = '/sys/fs/cgroup/' + path.strip('/')
        os.makedirs(self.path(base), exist_ok=True)
        if usage_usec is not None:
            self.write(base + '/cpu.stat', 'usage_usec %d\nuser_usec %d\nsystem_usec %d\nnr_periods 0\n'
                       % (usage_usec, usage_usec // 2, usage_usec - usage_usec // 2))
        if effective is not None:
            self.write(base + '/cpuset.cpus.effective', effective + '\n')
        if procs is not None:
            self.write(base + '/cgroup.procs', ''.join('%d\n' % p for p in procs))
        return base

    # processes
    def process(self, pid, comm, cgroup, allowed, utime=0, stime=0, starttime=500):
        self.write('/proc/%d/cgroup' % pid, '0::%s\n' % cgroup)
        self.write('/proc/%d/status' % pid, 'Name:\t%s\nPid:\t%d\nCpus_allowed_list:\t%s\n' % (comm, pid, allowed))
        fields = ['S', '1', str(pid), str(pid), '0', '-1', '4194560', '0', '0', '0', '0',
                  str(utime), str(stime), '0', '0', '20', '0', '1', '0', str(starttime), '0', '0']
        self.write('/proc/%d/stat' % pid, '%d (%s) %s\n' % (pid, comm, ' '.join(fields + ['0'] * 30)))

    def thread(self, pid, tid, comm, allowed, run_ns=0, delay_ns=0):
        base = '/proc/%d/task/%d' % (pid, tid)
        self.write(base + '/comm', comm + '\n')
        self.write(base + '/status', 'Name:\t%s\nCpus_allowed_list:\t%s\n' % (comm, allowed))
        self.write(base + '/schedstat', '%d %d %d\n' % (run_ns, delay_ns, 10))

    def guest(self, name, vcpus, tier_slice=None, allowed='2-7', usage_usec=0, delay_ns=0, domain_id=None,
              pid_file=True, emulator_allowed='0-1'):
        """A running libvirt guest: pid file, QEMU process with threads, its machine scope."""
        pid = self.next_pid
        self.next_pid += 100
        domain_id = domain_id or len(self.guests) + 1
        scope = 'machine-qemu\\x2d%d\\x2d%s.scope' % (domain_id, escape_unit(name))
        parent = '/machine.slice' + ('/' + tier_slice if tier_slice else '')
        cgroup = parent + '/' + scope
        self.cgroup(cgroup, usage_usec=usage_usec)
        self.cgroup(cgroup + '/libvirt/emulator', procs=[pid])
        self.process(pid, 'qemu-system-x86', cgroup + '/libvirt/emulator', emulator_allowed)
        self.thread(pid, pid, 'qemu-system-x86', emulator_allowed)
        self.thread(pid, pid + 1, 'call_rcu', emulator_allowed)
        self.thread(pid, pid + 2, 'IO iothread1', emulator_allowed)
        for index in range(vcpus):
            self.thread(pid, pid + 10 + index, 'CPU %d/KVM' % index, allowed, run_ns=1000, delay_ns=delay_ns)
        if pid_file:
            self.write('/run/libvirt/qemu/%s.pid' % name, '%d' % pid)
        self.guests[name] = {'pid': pid, 'cgroup': cgroup, 'vcpus': vcpus}
        return pid

    def set_guest(self, name, usage_usec=None, delay_ns=None):
        guest = self.guests[name]
        if usage_usec is not None:
            self.cgroup(guest['cgroup'], usage_usec=usage_usec)
        if delay_ns is not None:
            for index in range(guest['vcpus']):
                tid = guest['pid'] + 10 + index
                self.write('/proc/%d/task/%d/schedstat' % (guest['pid'], tid), '1000 %d 10\n' % delay_ns)

    # memory, pressure
    def ksm(self, sharing, shared):
        self.write('/sys/kernel/mm/ksm/pages_sharing', '%d\n' % sharing)
        self.write('/sys/kernel/mm/ksm/pages_shared', '%d\n' % shared)

    def zram(self, device, orig, compr, used):
        self.write('/sys/block/%s/mm_stat' % device, '%8d %8d %8d        0  1234  5  0  0  0\n' % (orig, compr, used))

    def swaps(self, used_kb):
        text = 'Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n'
        for index, used in enumerate(used_kb):
            text += '/dev/zram%d                              partition\t8388604\t\t%d\t\t100\n' % (index, used)
        self.write('/proc/swaps', text)

    def pressure(self, resource, some_total, full_total):
        self.write('/proc/pressure/%s' % resource,
                   'some avg10=1.50 avg60=0.80 avg300=0.20 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=%d\n'
                   % (some_total, full_total))

    def policy(self, path, layers):
        self.write(path, json.dumps({'layers': layers}))


TIERS = {
    'gold': {'slice': 'machine-gold.slice', 'cpu_weight': 512},
    'silver': {'slice': 'machine-silver.slice', 'cpu_weight': 333},
    'bronze': {'slice': 'machine-bronze.slice', 'cpu_weight': 167},
}

POOLS = {'host_reserved': '0-1', 'host_housekeeping': '0-1', 'host_emulator': '0-1', 'guest_domain': '2-7'}

# Seed 001's 13 guests: (name, tier, vCPUs)
SEED001_GUESTS = [
    ('ocp-master-01', 'gold', 8), ('ocp-master-02', 'gold', 8), ('ocp-master-03', 'gold', 8),
    ('ocp-infra-01', 'silver', 16), ('ocp-infra-02', 'silver', 16), ('ocp-infra-03', 'silver', 16),
    ('idm-01', 'silver', 2), ('ocp-worker-01', 'bronze', 12), ('ocp-worker-02', 'bronze', 12),
    ('ocp-worker-03', 'bronze', 12), ('mirror-registry', 'bronze', 4), ('bastion-01', 'bronze', 4),
    ('ad-01', 'bronze', 4),
]


def config(**overrides):
    data = {'schema': 'kvmlab.host_resources/metrics-config', 'version': 1, 'tiers': TIERS, 'pools': POOLS,
            'guests': {}, 'busy_threshold_cpus': 0.1, 'policy_status_file': '/var/lib/kvmlab/policy_status.json'}
    data.update(overrides)
    return data


# The pools of seed001_host's 96 CPUs
SEED001_POOLS = {'host_reserved': '0-5,24-29,48-53,72-77', 'guest_domain': '6-23,30-47,54-71,78-95'}


def seed001_host(root):
    """Seed 001's 13 guests (122 vCPUs) on 96 CPUs, in their tier slices, with KSM and zram (SEED001_POOLS)."""
    host = FakeHost(root, cpus=96)
    for tier in ('gold', 'silver', 'bronze'):
        host.cgroup('/machine.slice/machine-%s.slice' % tier, usage_usec=0)
    for name, tier, vcpus in SEED001_GUESTS:
        host.guest(name, vcpus, tier_slice='machine-%s.slice' % tier, allowed=SEED001_POOLS['guest_domain'])
    host.cgroup('/system.slice', effective=SEED001_POOLS['host_reserved'])
    host.ksm(1, 1)
    host.zram('zram0', 1, 1, 1)
    return host


def service_argv(metrics, lib_dir, state_dir, cfg, out, state):
    """The service's ExecStart (``_metrics.service_unit``) as argv, on a copy of the collector installed in ``lib_dir``.

    ``metrics``: the _metrics module; the system interpreter when there is one, as on a host.
    """
    python = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
    installed = os.path.join(str(lib_dir), metrics.COLLECTOR_NAME)
    shutil.copy(metrics.__file__, installed)
    unit = metrics.service_unit(python, installed, cfg, out, state, [str(state_dir)],
                                os.path.join(str(state_dir), metrics.PYCACHE_NAME))
    line = [text for text in unit.splitlines() if text.startswith('ExecStart=')][0]
    return shlex.split(line[len('ExecStart='):])
