# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cpu_contention_measure against a fake host.

The fake keeps a cgroup v2 tree and a procfs tree in a temporary directory,
answers systemctl and systemd-run like systemd 252 would for transient burner
units, and drives a fake clock: every sleep hands the guest pool's CPU time
to the running burner units in proportion to their slices' weights (times a
per-tier distortion, to make a tier miss its share), so that a whole
measurement runs in milliseconds and its numbers are known in advance.
"""

from __future__ import annotations

import os
import signal

import pytest

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _contention_run as run_mod
from ansible_collections.kvmlab.host_resources.plugins.modules import cpu_contention_measure as mod

from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

TIERS = {
    'gold': {'slice': 'machine-gold.slice', 'cpu_weight': 512},
    'silver': {'slice': 'machine-silver.slice', 'cpu_weight': 333},
    'bronze': {'slice': 'machine-bronze.slice', 'cpu_weight': 167},
}
POOL = [2, 3, 6, 7]
ONLINE = frozenset(range(8))


class FakeClock(object):
    def __init__(self, host):
        self.now = 1000.0
        self.host = host

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.host.advance(seconds)


class FakeHost(object):
    def __init__(self, root):
        self.root = str(root)
        self.cgroup = os.path.join(self.root, 'cgroup')
        self.proc = os.path.join(self.root, 'proc')
        self.calls = []
        self.units = {}          # name -> {'tier', 'pid', 'loops', 'cgroup'}
        self.usage = {}          # slice cgroup -> usec
        self.proc_busy = 0
        self.proc_total = 0
        self.next_pid = 1000
        self.slices_loaded = dict((t['slice'], t['cpu_weight']) for t in TIERS.values())
        self.live_weight = dict(self.slices_loaded)
        self.distortion = {}
        self.kill_after = None   # seconds of fake time after which SIGTERM arrives
        self.elapsed = 0.0
        self.fail_start = False
        self.leave_running = False
        os.makedirs(self.cgroup)
        os.makedirs(self.proc)
        self.write(self.cgroup, 'cgroup.controllers', 'cpuset cpu io memory pids\n')
        self.write_proc_stat()
        self.add_guest('kvm-worker-01', 500, allowed='0-7', processor=1)

    # -- files ---------------------------------------------------------------

    @staticmethod
    def write(base, rel, text):
        path = os.path.join(base, rel.lstrip('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as handle:
            handle.write(text)

    def write_proc_stat(self):
        lines = ['cpu  0 0 0 0 0 0 0 0 0 0']
        for cpu in range(8):
            if cpu in POOL:
                busy = self.proc_busy // 4
                idle = (self.proc_total - self.proc_busy) // 4
            else:
                busy, idle = 0, 0
            lines.append('cpu%d %d 0 0 %d 0 0 0 0 0 0' % (cpu, busy, idle))
        self.write(self.proc, 'stat', '\n'.join(lines) + '\n')

    def write_task(self, pid, tid, comm, allowed, processor, runtime_ns):
        base = '%d/task/%d' % (pid, tid)
        fields = ['R'] + ['0'] * 10 + ['10', '5'] + ['0'] * 23 + [str(processor), '0', '0']
        self.write(self.proc, base + '/stat', '%d (%s) %s\n' % (tid, comm, ' '.join(fields)))
        self.write(self.proc, base + '/schedstat', '%d 0 0\n' % runtime_ns)
        self.write(self.proc, base + '/status', 'Name:\t%s\nCpus_allowed_list:\t%s\n' % (comm, allowed))
        self.write(self.proc, base + '/comm', comm + '\n')

    def add_guest(self, name, pid, allowed, processor):
        self.write(self.proc, '%d/cmdline' % pid,
                   '\0'.join(['/usr/bin/qemu-system-x86_64', '-name', 'guest=%s,debug-threads=on' % name]) + '\0')
        self.write(self.proc, '%d/cgroup' % pid, '0::/machine.slice/machine-qemu\\x2d1\\x2d%s.scope/libvirt/emulator\n'
                   % name)
        self.write_task(pid, pid, 'qemu-system-x86', allowed, 0, 0)
        self.write_task(pid, pid + 1, 'CPU 0/TCG', allowed, processor, 0)
        self.write_task(pid, pid + 2, 'IO iothread1', allowed, 0, 0)
        self.guest_runtime = 0

    def remove_pid(self, pid):
        base = os.path.join(self.proc, str(pid))
        for top, dirs, files in os.walk(base, topdown=False):
            for name in files:
                os.unlink(os.path.join(top, name))
            for name in dirs:
                os.rmdir(os.path.join(top, name))
        if os.path.isdir(base):
            os.rmdir(base)

    # -- the scheduler -------------------------------------------------------------

    def advance(self, seconds):
        self.elapsed += seconds
        if self.kill_after is not None and self.elapsed >= self.kill_after:
            self.kill_after = None
            os.kill(os.getpid(), signal.SIGTERM)
        active = {}
        for unit in self.units.values():
            weight = self.live_weight[unit['slice']] * self.distortion.get(unit['tier'], 1.0)
            active[unit['slice']] = weight
        total = sum(active.values())
        capacity = int(seconds * 1000000 * len(POOL))
        for slice_name, weight in active.items():
            self.usage[slice_name] = self.usage.get(slice_name, 0) + int(capacity * weight / total)
            self.write(self.cgroup, '/machine.slice/%s/cpu.stat' % slice_name,
                       'usage_usec %d\nuser_usec 0\nsystem_usec 0\n' % self.usage[slice_name])
        self.proc_total += int(seconds * 100 * len(POOL))
        self.proc_busy += int(seconds * 100 * len(POOL)) if active else 0
        self.write_proc_stat()
        self.guest_runtime += int(seconds * 1e9)
        self.write_task(500, 501, 'CPU 0/TCG', '0-7', 1, self.guest_runtime)
        for unit in self.units.values():
            for index, pid in enumerate(unit['loops']):
                unit['runtime'] += int(seconds * 1e9 / 3)
                self.write_task(pid, pid, 'sh', str(unit['cpus'][index]), unit['cpus'][index], unit['runtime'])

    # -- commands ---------------------------------------------------------------

    def run_command(self, module, args, **kwargs):
        assert isinstance(args, list), 'run_command must get an argument list'
        self.calls.append(' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(args)))
        cmd = os.path.basename(args[0])
        if cmd == 'systemd-run':
            return self.systemd_run(args)
        verb = args[1]
        if verb == 'show':
            return self.show(args)
        if verb == 'list-units':
            prefix = args[-1].rstrip('*')
            lines = ['%s loaded active running burner' % u for u in sorted(self.units) if u.startswith(prefix)]
            return 0, '\n'.join(lines) + ('\n' if lines else ''), ''
        if verb == 'stop':
            if not self.leave_running:
                for name in args[3:]:
                    self.stop(name)
            return 0, '', ''
        if verb == 'reset-failed':
            return 0, '', ''
        raise AssertionError('unexpected command %s' % args)

    def systemd_run(self, args):
        if self.fail_start:
            return 1, '', 'Failed to start transient service unit: Access denied'
        unit = [a for a in args if a.startswith('--unit=')][0].split('=', 1)[1]
        slice_name = [a for a in args if a.startswith('--slice=')][0].split('=', 1)[1]
        props = dict(args[i + 1].split('=', 1) for i, a in enumerate(args) if a == '-p')
        script = args[-1]
        assert '$' not in script and '%' not in script
        cpus = [int(part.split()[2]) for part in script.split(' & ') if part.startswith('/usr/bin/taskset -c ')]
        if not cpus:
            cpus = [POOL[i % len(POOL)] for i in range(script.count('while :'))]
        pid = self.next_pid
        self.next_pid += 10
        loops = [pid + 1 + i for i in range(len(cpus))]
        cgroup = '/machine.slice/%s/%s' % (slice_name, unit)
        tier = unit.split('-')[2].split('.')[0]
        self.units[unit] = {'tier': tier, 'slice': slice_name, 'pid': pid, 'loops': loops, 'cgroup': cgroup,
                            'cpus': cpus, 'props': props, 'runtime': 0}
        self.write(self.cgroup, cgroup + '/cgroup.procs', '\n'.join(str(p) for p in [pid] + loops) + '\n')
        self.write(self.cgroup, '/machine.slice/%s/cpu.weight' % slice_name, '%d\n' % self.live_weight[slice_name])
        stat = '/machine.slice/%s/cpu.stat' % slice_name
        if not os.path.exists(os.path.join(self.cgroup, stat.lstrip('/'))):
            self.write(self.cgroup, stat, 'usage_usec %d\n' % self.usage.get(slice_name, 0))
        self.write_task(pid, pid, 'sh', props['AllowedCPUs'], POOL[0], 0)
        for index, loop in enumerate(loops):
            self.write_task(loop, loop, 'sh', str(cpus[index]), cpus[index], 0)
        return 0, '', ''

    def stop(self, name):
        unit = self.units.pop(name, None)
        if unit is None:
            return
        for pid in [unit['pid']] + unit['loops']:
            self.remove_pid(pid)
        os.unlink(os.path.join(self.cgroup, unit['cgroup'].lstrip('/'), 'cgroup.procs'))

    def show(self, args):
        props = args[args.index('-p') + 1].split(',')
        names = args[args.index('--') + 1:]
        blocks = []
        for name in names:
            values = {'Id': name}
            if name.endswith('.slice'):
                loaded = name in self.slices_loaded
                values.update(LoadState='loaded' if loaded else 'not-found', ActiveState='active',
                              CPUWeight=str(self.slices_loaded.get(name, '')),
                              ControlGroup='/machine.slice/%s' % name)
            elif name in self.units:
                unit = self.units[name]
                values.update(LoadState='loaded', ActiveState='active', MainPID=str(unit['pid']),
                              ControlGroup=unit['cgroup'])
            else:
                values.update(LoadState='not-found', ActiveState='inactive', MainPID='0', ControlGroup='')
            blocks.append('\n'.join('%s=%s' % (p, values.get(p, '')) for p in props))
        return 0, '\n\n'.join(blocks) + '\n', ''


@pytest.fixture
def host(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path)
    clock = FakeClock(fake)

    def run_command(module, args, **kwargs):
        return fake.run_command(module, args, **kwargs)

    monkeypatch.setattr(AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(AnsibleModule, 'get_bin_path',
                        lambda self, name, required=False, opt_dirs=None: '/usr/bin/' + name)
    monkeypatch.setattr(run_mod, 'time', clock)
    monkeypatch.setattr(run_mod, 'online_cpus', lambda: ONLINE)
    fake.affinity = []
    monkeypatch.setattr(run_mod.os, 'sched_setaffinity', lambda pid, cpus: fake.affinity.append(set(cpus)))
    return fake


def args(host, **over):
    base = {'tiers': TIERS, 'guest_cpus': '2-3,6-7', 'reserved_cpus': '0-1,4-5', 'window': 4, 'warmup': 1,
            'sample_interval': 1, 'cgroup_root': host.cgroup, 'proc_root': host.proc,
            'guest_kernel': os.path.join(host.root, 'no-such-kernel.elf')}
    base.update(over)
    return base


def run(host, check=False, **over):
    return run_module(mod.main, args(host, **over), check_mode=check, diff=True)


def test_all_scenarios_pass_on_an_exact_scheduler(host):
    result = run(host)
    assert result.get('failed') is not True, result.get('msg')
    report = result['report']
    assert report['passed'] is True
    assert [s['name'] for s in report['scenarios']] == [
        'all_loaded', 'gold_idle', 'gold_alone', 'silver_alone', 'bronze_alone']
    every = report['scenarios'][0]
    assert every['tiers']['gold']['share_pct']['mean'] == pytest.approx(50.59, abs=0.02)
    assert every['tiers']['bronze']['share_pct']['mean'] == pytest.approx(16.5, abs=0.02)
    assert every['runs'][0]['pool_busy_pct'] == pytest.approx(100.0)
    idle = report['scenarios'][1]
    assert idle['ratios'][0]['pair'] == 'silver:bronze'
    assert idle['ratios'][0]['achieved']['mean'] == pytest.approx(1.994, abs=0.01)
    assert idle['tiers']['gold']['pool_pct']['mean'] == 0.0
    alone = report['scenarios'][4]
    assert alone['loaded_pool_pct']['mean'] == pytest.approx(100.0, abs=0.01)
    assert report['tiers']['gold'] == {'slice': 'machine-gold.slice', 'cpu_weight': 512, 'unit_weight': 512,
                                       'live_weight': 512}
    assert report['pool'] == {'guest_domain': '2-3,6-7', 'host_reserved': '0-1,4-5', 'cpus': 4}
    # nothing left, and the measuring process moved itself to the host reserve
    assert host.units == {}
    assert result['leftover_units'] == [] and report['leftover_units'] == []
    assert result['changed'] is False
    assert host.affinity == [{0, 1, 4, 5}]


def test_burner_units_are_confined_and_bounded(host):
    run(host, scenarios=['all_loaded'], window=30, warmup=5, runtime_margin=100, placement='cpu')
    starts = [c for c in host.calls if c.startswith('systemd-run')]
    assert len(starts) == 3
    assert '--unit=kvmlab-burn-gold.service --slice=machine-gold.slice --collect' in starts[0]
    assert 'AllowedCPUs=2-3,6-7' in starts[0] and 'CPUAffinity=2-3,6-7' in starts[0]
    assert 'RuntimeMaxSec=135' in starts[0]
    assert "/usr/bin/taskset -c 7 /bin/sh -c 'while :; do :; done' & wait" in starts[0]
    stops = [c for c in host.calls if c.startswith('systemctl stop')]
    assert stops[0] == 'systemctl stop -- kvmlab-burn-bronze.service kvmlab-burn-gold.service kvmlab-burn-silver.service'


def test_placement_evidence(host):
    report = run(host, scenarios=['all_loaded'])['report']
    burners = report['placement']['burners']
    assert burners['threads'] == 12 and burners['evidence'] == 'affinity'
    assert burners['ran_on_reserved'] is False
    vcpus = report['placement']['vcpus']
    assert vcpus['threads'] == 1 and vcpus['evidence'] == 'samples'
    assert vcpus['may_leave_pool'] == ['kvm-worker-01 CPU 0/TCG']
    assert vcpus['ran_on_reserved'] is True
    assert vcpus['runtime_on_reserved_usec'] == pytest.approx(4000000, rel=0.05)
    assert report['guests'][0]['name'] == 'kvm-worker-01'
    assert report['guests'][0]['vcpu_threads'][0]['allowed'] == list(range(8))


def test_a_tier_that_misses_its_share_fails_the_scenario(host):
    host.distortion = {'bronze': 0.5}
    report = run(host, scenarios=['all_loaded', 'gold_idle', 'bronze_alone'])['report']
    assert report['passed'] is False
    by_name = dict((s['name'], s) for s in report['scenarios'])
    assert by_name['all_loaded']['passed'] is False
    assert by_name['all_loaded']['runs'][0]['tiers']['bronze']['within'] is False
    assert by_name['gold_idle']['passed'] is False         # 1.99 became 3.99
    assert by_name['bronze_alone']['passed'] is True       # alone it still takes the pool
    assert host.units == {}


def test_repeats_give_a_spread(host):
    report = run(host, scenarios=['gold_idle'], repeats=3)['report']
    scen = report['scenarios'][0]
    assert len(scen['runs']) == 3
    assert scen['tiers']['silver']['share_pct']['n'] == 3
    assert scen['duration_sec'] > 0


def test_policy_not_applied_fails_before_starting_anything(host):
    host.slices_loaded.pop('machine-silver.slice')
    result = run(host)
    assert result['failed'] is True
    assert 'machine-silver.slice is not-found' in result['msg'] and 'site.yml' in result['msg']
    assert not [c for c in host.calls if c.startswith('systemd-run')]


def test_live_weight_differs(host):
    host.live_weight['machine-gold.slice'] = 100
    result = run(host, scenarios=['all_loaded'])
    assert result['failed'] is True
    assert 'cpu.weight 100 live, not 512' in result['msg']
    assert host.units == {}
    assert 'left running: nothing' in result['msg']


def test_without_require_policy_the_weights_are_only_reported(host):
    host.live_weight['machine-gold.slice'] = 100
    result = run(host, scenarios=['all_loaded'], require_policy=False)
    assert result['report']['tiers']['gold']['live_weight'] == 100
    assert result['report']['passed'] is False


def test_sigterm_stops_the_burners(host):
    host.kill_after = 6
    result = run(host, scenarios=['all_loaded', 'gold_idle'])
    assert result['failed'] is True
    assert 'interrupted by signal %d' % signal.SIGTERM in result['msg']
    assert 'left running: nothing' in result['msg']
    assert host.units == {}
    assert result['leftover_units'] == []
    # the handlers the module replaced are back
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN


def test_controller_gone_stops_the_burners(host, monkeypatch):
    parents = iter([100] + [1] * 1000)
    monkeypatch.setattr(run_mod.os, 'getppid', lambda: next(parents))
    result = run(host, scenarios=['all_loaded'])
    assert result['failed'] is True
    assert 'controller went away' in result['msg']
    assert host.units == {}


def test_a_start_failure_still_cleans_up(host):
    host.fail_start = True
    result = run(host, scenarios=['all_loaded'])
    assert result['failed'] is True
    assert 'Access denied' in result['msg']
    assert host.units == {}


def test_units_that_refuse_to_stop_fail_the_run(host):
    host.leave_running = True
    result = run(host, scenarios=['gold_alone'])
    assert result['failed'] is True
    assert result['leftover_units'] == ['kvmlab-burn-gold.service']


def test_leftovers_of_an_earlier_run_are_stopped_first(host):
    host.systemd_run(['systemd-run', '--unit=kvmlab-burn-gold.service', '--slice=machine-gold.slice',
                      '-p', 'AllowedCPUs=2-3,6-7', '--', '/bin/sh', '-c', "/bin/sh -c 'while :; do :; done' & wait"])
    result = run(host, scenarios=['silver_alone'])
    assert result['changed'] is True
    assert result['stopped'] == ['kvmlab-burn-gold.service']
    assert result['diff'] == {'before': {'units': ['kvmlab-burn-gold.service'], 'guests': []},
                              'after': {'units': [], 'guests': []}}
    assert result['report']['scenarios'][0]['passed'] is True


def test_cleanup_mode(host):
    host.systemd_run(['systemd-run', '--unit=kvmlab-burn-gold.service', '--slice=machine-gold.slice',
                      '-p', 'AllowedCPUs=2-3,6-7', '--', '/bin/sh', '-c', "/bin/sh -c 'while :; do :; done' & wait"])
    checked = run(host, check=True, mode='cleanup')
    assert checked['changed'] is True and checked['stopped'] == ['kvmlab-burn-gold.service']
    assert 'kvmlab-burn-gold.service' in host.units
    done = run(host, mode='cleanup')
    assert done['changed'] is True and done['leftover_units'] == []
    assert host.units == {}
    again = run(host, mode='cleanup')
    assert again['changed'] is False and again['stopped'] == []


def test_check_mode_starts_nothing_and_returns_the_plan(host):
    result = run(host, check=True, scenarios=['all_loaded', 'bronze_alone'])
    assert result['changed'] is False
    assert not [c for c in host.calls if c.startswith('systemd-run')]
    assert result['plan'][0]['promised_pct'] == {'gold': 50.59, 'silver': 32.91, 'bronze': 16.5}
    assert result['plan'][1]['units'] == ['kvmlab-burn-bronze.service']


def test_burners_float_by_default_and_the_existing_load_starts_nothing(host):
    report = run(host, scenarios=['all_loaded'])['report']
    assert report['options']['placement'] == 'pool' and report['load'] == 'burners'
    assert report['phases'] == ['pool'] and report['scenarios'][0]['phase'] == 'pool'
    starts = [c for c in host.calls if c.startswith('systemd-run')]
    assert 'taskset' not in starts[0]
    host.calls[:] = []
    result = run(host, scenarios=['all_loaded'], load='existing')
    assert not [c for c in host.calls if c.startswith('systemd-run')]
    assert result['report']['passed'] is False   # nothing loaded the tiers
    assert result['report']['phases'] == ['existing']


def test_placement_both_reports_floating_then_bound(host):
    report = run(host, scenarios=['all_loaded', 'gold_idle'], placement='both')['report']
    assert [(s['phase'], s['name']) for s in report['scenarios']] == [
        ('pool', 'all_loaded'), ('pool', 'gold_idle'), ('cpu', 'all_loaded'), ('cpu', 'gold_idle')]
    starts = [c for c in host.calls if c.startswith('systemd-run')]
    assert len(starts) == 10
    assert 'taskset' not in starts[0] and 'taskset -c 2 ' in starts[5]
    assert report['passed'] is True and host.units == {}


def test_auto_load_is_guests_only_with_the_spin_kernel(host, tmp_path):
    params = {'load': 'auto', 'guest_kernel': str(tmp_path / 'spinall.elf')}
    assert run_mod.resolve_load(params) == 'burners'
    (tmp_path / 'spinall.elf').write_text('x')
    assert run_mod.resolve_load(params) == 'guests'
    assert run_mod.resolve_load(dict(params, load='existing')) == 'existing'


def test_guests_need_the_kernel(host):
    result = run(host, load='guests')
    assert result['failed'] is True and 'no-such-kernel.elf does not exist' in result['msg']


def test_guests_need_libvirt_python(host, tmp_path, monkeypatch):
    kernel = tmp_path / 'spinall.elf'
    kernel.write_text('x')
    monkeypatch.setattr(mod._libvirt_conn, 'libvirt', None)
    result = run(host, load='guests', guest_kernel=str(kernel))
    assert result['failed'] is True
    assert result['msg'] == 'load=guests needs libvirt-python (python3-libvirt) on the host'


def test_burners_need_systemd(host):
    result = run(host, load='burners', systemd=False)
    assert result['failed'] is True and 'needs systemd' in result['msg']


@pytest.mark.parametrize('over, message', [
    ({'guest_cpus': '2-9'}, 'must be online CPUs'),
    ({'guest_cpus': 'x'}, 'guest_cpus'),
    ({'reserved_cpus': '0-2'}, 'overlaps'),
    ({'window': 0}, 'window must be positive'),
    ({'repeats': 0}, 'repeats must be at least 1'),
    ({'runtime_margin': 5}, 'runtime_margin'),
    ({'unit_prefix': 'Bad'}, 'unit_prefix'),
    ({'scenarios': ['platinum_alone']}, 'is not all_loaded'),
    ({'tiers': {'gold': {'slice': 'x.slice'}}}, 'needs slice and cpu_weight'),
])
def test_bad_arguments(host, over, message):
    result = run(host, **over)
    assert result['failed'] is True
    assert message in result['msg']
    assert not host.calls or not [c for c in host.calls if c.startswith('systemd-run')]
