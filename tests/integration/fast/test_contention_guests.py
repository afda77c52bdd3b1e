# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cpu_contention_measure load=guests against real busy guests on the private libvirtd.

No systemd here: cgroup v1 ``cpu.shares`` carries the weights, the tiers are
libvirt partitions (``machine/<name>.partition``, made by the fixture as the
host foundation would, with the tier's shares), and the guests' CPU time is
read by the module from their own cgroups. While the module runs, an
observer thread reads what the host shows independently: each QEMU process
of the measurement (libvirt's pid files), its ``/proc/<pid>/cgroup``, its
threads' ``Cpus_allowed_list`` and its cgroup's ``cpu.shares``. Afterwards no
domain, QEMU process or pid file of the measurement may be left, also after
an injected failure.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from fastvirt import read_threads

from ansible_collections.kvmlab.host_resources.plugins.modules import cpu_contention_measure as mod
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

V1 = '/sys/fs/cgroup'
CONTROLLERS = ('cpu', 'cpuset', 'memory', 'blkio', 'unified')
WEIGHTS = {'gold': 512, 'silver': 333, 'bronze': 167}
POOL, RESERVE = '1', '0'


def _online():
    with open('/sys/devices/system/cpu/online') as handle:
        text = handle.read().strip()
    cpus = set()
    for part in text.split(','):
        first, _sep, last = part.partition('-')
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


@pytest.fixture
def lab(fastvirt):
    """Tier partitions of this test (unique names) with the tiers' shares, and the module's arguments."""
    if not {0, 1} <= _online():
        pytest.skip('this test puts the guest pool on CPU 1 and the reserve on CPU 0')
    if not os.path.isdir(os.path.join(V1, 'cpu', 'machine')):
        pytest.skip('needs the cgroup v1 cpu controller with libvirt\'s machine folder (see HARNESS.md 2)')
    token = 'fv' + uuid.uuid4().hex[:6]
    made = []
    tiers = {}
    for tier, weight in WEIGHTS.items():
        folder = '%s%s.partition' % (token, tier)
        for controller in CONTROLLERS:
            parent = os.path.join(V1, controller, 'machine')
            if not os.path.isdir(parent):
                continue
            path = os.path.join(parent, folder)
            os.mkdir(path)
            made.append(path)
            if controller == 'cpuset':
                for name in ('cpuset.cpus', 'cpuset.mems'):
                    with open(os.path.join(parent, name)) as src, open(os.path.join(path, name), 'w') as dst:
                        dst.write(src.read())
            if controller == 'cpu':
                with open(os.path.join(path, 'cpu.shares'), 'w') as handle:
                    handle.write('%d\n' % weight)
        tiers[tier] = {'slice': 'machine-%s%s.slice' % (token, tier), 'partition': '/machine/%s%s' % (token, tier),
                       'cpu_weight': weight, 'shares': weight}
    affinity = os.sched_getaffinity(0)
    args = {'tiers': tiers, 'guest_cpus': POOL, 'reserved_cpus': RESERVE, 'emulator_cpus': RESERVE,
            'load': 'guests', 'systemd': False, 'uri': fastvirt.uri, 'pid_dir': fastvirt.path('run', 'qemu'),
            'guest_kernel': fastvirt.kernel('spinall'), 'guest_prefix': token, 'busy_vcpus': 1,
            'guests_per_tier': {'gold': 2, 'silver': 1, 'bronze': 1}, 'window': 3, 'warmup': 1,
            'sample_interval': 0.5, 'scenarios': ['all_loaded', 'gold_alone']}
    yield {'token': token, 'args': args, 'virt': fastvirt, 'tiers': tiers}
    os.sched_setaffinity(0, affinity)   # the module binds its process to the reserve
    for name in [d.name() for d in fastvirt.connect().listAllDomains() if d.name().startswith(token)]:
        fastvirt.remove_guest(name)
    for path in reversed(made):
        for _attempt in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.1)


class Observer(threading.Thread):
    """Reads the measurement's QEMU processes from the host while the module runs."""

    def __init__(self, virt, token, kill_in_phase=None):
        threading.Thread.__init__(self, daemon=True)
        self.virt, self.token, self.kill_in_phase = virt, token, kill_in_phase
        self.seen = {}           # pid -> {'name', 'cgroup', 'threads', 'shares'}
        self.killed = None
        self.done = threading.Event()

    def run(self):
        pid_dir = self.virt.path('run', 'qemu')
        while not self.done.is_set():
            for entry in sorted(os.listdir(pid_dir)) if os.path.isdir(pid_dir) else []:
                if not entry.startswith(self.token) or not entry.endswith('.pid'):
                    continue
                try:
                    with open(os.path.join(pid_dir, entry)) as handle:
                        pid = int(handle.read().strip())
                    with open('/proc/%d/cgroup' % pid) as handle:
                        lines = dict(line.rstrip('\n').split(':', 2)[1:] for line in handle)
                    threads = read_threads(pid)
                    guest = os.path.dirname(lines['cpu']) if lines['cpu'].endswith('/emulator') else lines['cpu']
                    with open('%s/cpu%s/cpu.shares' % (V1, guest)) as handle:
                        shares = int(handle.read())
                except (OSError, ValueError, KeyError):
                    continue
                if not threads['vcpus']:
                    continue
                self.seen[pid] = {'name': entry[:-4], 'cgroup': guest, 'threads': threads, 'shares': shares,
                                  'since': self.seen.get(pid, {}).get('since', time.monotonic())}
            moved = sorted((info['since'], pid) for pid, info in self.seen.items() if '.partition/' in info['cgroup'])
            if self.kill_in_phase and self.killed is None and len(moved) == 4 \
                    and time.monotonic() - moved[-1][0] > 2.0:
                # every guest moved and measuring: one QEMU dies in the window
                pid = moved[0][1]
                os.kill(pid, signal.SIGKILL)
                self.killed = (pid, self.seen[pid]['name'])
            time.sleep(0.2)


def _measure(lab, observer=None, after=None, **over):
    args = dict(lab['args'], **over)
    observer = observer or Observer(lab['virt'], lab['token'])
    observer.start()
    timer = None
    if after is not None:
        timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
    try:
        result = run_module(mod.main, args)
    finally:
        if timer is not None:
            timer.cancel()
        observer.done.set()
        observer.join(5)
    return result, observer


def _nothing_left(lab):
    token, virt = lab['token'], lab['virt']
    assert [d.name() for d in virt.connect().listAllDomains() if d.name().startswith(token)] == []
    pid_dir = virt.path('run', 'qemu')
    assert [e for e in os.listdir(pid_dir) if e.startswith(token)] == []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/cmdline' % entry) as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            assert 'guest=%s-' % token not in cmdline, 'QEMU %s of the measurement still runs' % entry


def test_busy_guests_are_measured_in_their_own_cgroups_and_removed(lab):
    result, seen = _measure(lab)
    assert result.get('failed') is not True, result.get('msg')
    report = result['report']
    token = lab['token']
    assert report['load'] == 'guests' and report['phases'] == ['in_place', 'moved']
    assert [(s['phase'], s['name']) for s in report['scenarios']] == [
        ('in_place', 'all_loaded'), ('in_place', 'gold_alone'), ('moved', 'all_loaded'), ('moved', 'gold_alone')]
    phases = dict((p['phase'], p) for p in report['guest_load']['phases'])

    # where the module says each guest ran is what /proc said, and the move gave every guest a new domain id
    by_pid = seen.seen
    for phase, parent in (('in_place', '/machine'), ('moved', None)):
        for guest in phases[phase]['guests']:
            observed = by_pid[guest['pid']]
            assert observed['name'] == guest['name']
            assert observed['cgroup'] == guest['cgroup']
            tier_dir = '/machine' if parent else '/machine/%s%s.partition' % (token, guest['tier'])
            assert os.path.dirname(guest['cgroup']) == tier_dir
            assert guest['cgroup'].endswith('-%s.libvirt-qemu' % guest['name'])
    moved_ids = dict((g['name'], g['id']) for g in phases['moved']['guests'])
    assert all(moved_ids[g['name']] != g['id'] for g in phases['in_place']['guests'])

    # apply's weight budget on the scopes of guests not yet moved: Gold's 512 split over its two guests
    assert phases['in_place']['scope_weights'] == {'%s-gold-1' % token: 256, '%s-gold-2' % token: 256,
                                                   '%s-silver-1' % token: 333, '%s-bronze-1' % token: 167}
    assert phases['moved']['scope_weights'] == {}
    for guest in phases['in_place']['guests']:
        assert by_pid[guest['pid']]['shares'] == phases['in_place']['scope_weights'][guest['name']]
    for guest in phases['moved']['guests']:
        assert by_pid[guest['pid']]['shares'] == WEIGHTS[guest['tier']]

    # every vCPU thread floats over the whole guest pool, the emulator stays on its CPUs
    for observed in by_pid.values():
        assert set(observed['threads']['vcpus'].values()) == {POOL}
        assert observed['threads']['emulator'] == {RESERVE}

    # a tier's CPU time is the sum over its guests' own cgroups
    for scen in report['scenarios']:
        run = scen['runs'][0]
        tier_of = dict((g['name'], g['tier']) for g in phases[scen['phase']]['guests'])
        for tier in WEIGHTS:
            own = sum(u for g, u in run['guest_usage_usec'].items() if tier_of[g] == tier)
            assert run['tiers'][tier]['usage_usec'] == own
        assert run['tiers']['gold']['usage_usec'] > 0
    alone = [s for s in report['scenarios'] if s['name'] == 'gold_alone']
    for scen in alone:
        assert scen['runs'][0]['tiers']['silver']['usage_usec'] < scen['runs'][0]['tiers']['gold']['usage_usec'] / 10
    every = [s for s in report['scenarios'] if s['name'] == 'all_loaded']
    for scen in every:
        share = dict((t, scen['tiers'][t]['share_pct']['mean']) for t in WEIGHTS)
        assert share['gold'] > share['silver'] > share['bronze'], (scen['phase'], share)
    assert report['placement']['vcpus']['evidence'] == 'affinity'
    assert report['placement']['vcpus']['ran_on_reserved'] is False
    assert report['leftover_guests'] == [] and result['leftover_guests'] == []
    _nothing_left(lab)


def test_sigterm_mid_measurement_removes_every_guest(lab):
    result, seen = _measure(lab, after=4.0, phases=['in_place'], window=20)
    assert result['failed'] is True
    assert 'interrupted by signal %d' % signal.SIGTERM in result['msg']
    assert 'left running: nothing' in result['msg']
    assert len(seen.seen) == 4          # the guests did run
    assert result['leftover_guests'] == []
    _nothing_left(lab)


def test_a_guest_that_dies_fails_the_run_and_the_rest_is_removed(lab):
    observer = Observer(lab['virt'], lab['token'], kill_in_phase='moved')
    result, seen = _measure(lab, observer=observer, scenarios=['all_loaded'], window=6)
    assert seen.killed is not None
    assert result['failed'] is True
    assert 'ended or left its cgroup' in result['msg'] and 'during the window' in result['msg'], result['msg']
    assert seen.killed[1] in result['msg']
    assert result['leftover_guests'] == []
    _nothing_left(lab)


def test_leftovers_of_a_killed_run_are_found_by_their_mark(lab):
    """A guest defined with the contention mark (as if the module had been SIGKILLed) goes at cleanup."""
    from ansible_collections.kvmlab.host_resources.plugins.module_utils import _contention_guests as cg
    token, virt = lab['token'], lab['virt']
    entry = {'name': '%s-gold-1' % token, 'tier': 'gold', 'vcpus': 1, 'vcpu_cpuset': POOL,
             'emulator_cpuset': RESERVE, 'partition': '/machine', 'cpu_shares': 512}
    virt.connect().defineXML(cg.domain_xml(entry, virt.kernel('idle'), 'in_place', 'killed-run')).create()
    virt.define_guest('%s-other' % token, vcpus=1, kernel='idle')       # no mark: never touched
    checked = run_module(mod.main, dict(lab['args'], mode='cleanup'), check_mode=True)
    assert checked['changed'] is True and checked['removed_guests'] == ['%s-gold-1' % token]
    assert virt.guest_pid('%s-gold-1' % token)
    done = run_module(mod.main, dict(lab['args'], mode='cleanup'))
    assert done['changed'] is True and done['leftover_guests'] == []
    names = [d.name() for d in virt.connect().listAllDomains() if d.name().startswith(token)]
    assert names == ['%s-other' % token]
    again = run_module(mod.main, dict(lab['args'], mode='cleanup'))
    assert again['changed'] is False
