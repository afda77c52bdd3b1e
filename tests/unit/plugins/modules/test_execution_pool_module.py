# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""execution_pool's main() on a fake host: libvirt in memory, a fake systemd and cgroup tree, fake /proc reads.

The weight budget wiring, rule by rule: all guests waiting in machine.slice,
some moved into their tier slice, all moved, a tier without running guests,
no systemd and a guest whose scope is not found. The fake libvirt writes a
running guest's live ``cpu_shares`` through the fake systemd into the scope's
CPUWeight and cgroup ``cpu.weight``, as libvirt's systemd backend does; the
fake ``daemon-reload`` gives a tier slice the CPUWeight of its runtime budget
drop-in, else its configured weight. The real daemon is exercised by
tests/integration/fast.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _lock as lk
from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import cpu_pools
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import read_topology
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _qemu
from ansible_collections.kvmlab.host_resources.plugins.modules import execution_pool as mod
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
from ansible_collections.kvmlab.host_resources.tests.unit.sysfs_builder import layout, write_tree
from ansible_collections.kvmlab.host_resources.tests.unit.plugins.modules.test_libvirt_pin import (
    FakeDomain,
    FakeLibvirt,
    LIVE,
)

SYSTEMCTL = '/usr/bin/systemctl'
TIERS = {'gold': {'slice': 'machine-gold.slice', 'partition': '/machine/gold', 'cpu_weight': 512, 'shares': 512},
         'silver': {'slice': 'machine-silver.slice', 'partition': '/machine/silver', 'cpu_weight': 333,
                    'shares': 333},
         'bronze': {'slice': 'machine-bronze.slice', 'partition': '/machine/bronze', 'cpu_weight': 167,
                    'shares': 167}}
POOLS = {'host_reserved': '0-1', 'host_housekeeping': '0', 'host_emulator': '1', 'guest_domain': '2-3'}


class Domain(FakeDomain):
    """A fake domain with kvmlab metadata whose live cpu_shares reaches its scope through systemd."""

    def __init__(self, lib, name, **kwargs):
        FakeDomain.__init__(self, lib, name, iothreads=(), **kwargs)
        self.metadata = None

    def setMetadata(self, kind, element, prefix, uri, flags):  # noqa: N802  pylint: disable=invalid-name
        self.lib.writes.append((self._name, 'metadata', flags))
        self.metadata = element

    def XMLDesc(self, flags):  # noqa: N802  pylint: disable=invalid-name
        xml = FakeDomain.XMLDesc(self, flags)
        if flags & 2 and self.metadata:
            element = self.metadata.replace('<guest>', '<kvmlab:guest xmlns:kvmlab="%s">' % ep.METADATA_NS)
            element = element.replace('</guest>', '</kvmlab:guest>').replace('tier>', 'kvmlab:tier>')
            xml = xml.replace('<vcpu', '<metadata>%s</metadata><vcpu' % element, 1)
        return xml

    def setSchedulerParametersFlags(self, params, flags):  # noqa: N802  pylint: disable=invalid-name
        FakeDomain.setSchedulerParametersFlags(self, params, flags)
        unit = self.lib.host.scope_of.get(self._name)
        if flags & LIVE and unit:
            self.lib.host.set_weight(unit, str(params['cpu_shares']))


class Lib(FakeLibvirt):
    def add(self, name, **kwargs):
        self.domains[name] = Domain(self, name, **kwargs)
        return self.domains[name]


class FakeHost(object):
    """systemd units, their cgroup files, the runtime drop-in directory and what /proc says per guest."""

    def __init__(self, root, lib):
        self.root = str(root)
        self.lib = lib
        lib.host = self
        self.cgroup = os.path.join(self.root, 'cgroup')
        self.run_dir = os.path.join(self.root, 'run', 'systemd', 'system')
        os.makedirs(self.cgroup)
        with open(os.path.join(self.cgroup, 'cgroup.controllers'), 'w') as handle:
            handle.write('cpuset cpu\n')
        self.units = {}
        self.scope_of = {}
        self.where = {}
        self.calls = []
        for tier in TIERS.values():
            self.units[tier['slice']] = {'cgroup': '/machine.slice/' + tier['slice'], 'weight': '',
                                         'configured': str(tier['cpu_weight']), 'slice': True}
            self.reload_slice(tier['slice'])

    # -- guests --------------------------------------------------------------
    def guest(self, name, tier, slice_name='machine.slice', running=True, number=None):
        """A guest, running in ``slice_name`` (or stopped); returns its scope unit."""
        self.lib.add(name, active=running)
        if not running:
            return None
        number = number if number is not None else len(self.scope_of) + 1
        unit = 'machine-qemu\\x2d%d\\x2d%s.scope' % (number, name)
        self.scope_of[name] = unit
        self.where[name] = slice_name
        inside = '' if slice_name == 'machine.slice' else slice_name + '/'
        self.units[unit] = {'cgroup': '/machine.slice/%s%s' % (inside, unit), 'weight': '', 'slice': False}
        self.write_weight(unit, 100)
        return unit

    def move(self, name, slice_name):
        """The guest restarted: a new scope inside ``slice_name`` with the default weight."""
        unit = self.scope_of.pop(name)
        del self.units[unit]
        self.lib.domains[name].live['shares'] = 1024
        return self.guest_again(name, slice_name)

    def guest_again(self, name, slice_name):
        number = 100 + len(self.units)
        unit = 'machine-qemu\\x2d%d\\x2d%s.scope' % (number, name)
        self.scope_of[name] = unit
        self.where[name] = slice_name
        self.units[unit] = {'cgroup': '/machine.slice/%s/%s' % (slice_name, unit), 'weight': '', 'slice': False}
        self.write_weight(unit, 100)
        return unit

    def read_guest(self, pid_dir, name, proc='/proc'):
        unit = self.scope_of.get(name)
        result = {'running': False, 'pid': None, 'cgroup': None, 'scope': None, 'slice': None, 'threads': [],
                  'cpus': {'vcpu': [], 'emulator': [], 'iothread': []}, 'vcpus': {}, 'iothreads': {},
                  'counts': {'vcpu': 0, 'emulator': 0, 'iothread': 0}}
        if unit is None:
            return result
        path = self.units[unit]['cgroup'] + '/libvirt/emulator'
        live = self.lib.domains[name].live
        vcpus = sorted(set(format_cpulist(cpus) for cpus in live['vcpu_pins'].values()))
        result.update({'running': True, 'pid': 4242, 'cgroup': path, 'scope': _qemu.scope_of(path),
                       'slice': _qemu.slice_of(path),
                       'cpus': {'vcpu': vcpus, 'emulator': [format_cpulist(live['emulator'])], 'iothread': []},
                       'counts': {'vcpu': len(live['vcpu_pins']), 'emulator': 1, 'iothread': 0}})
        return result

    # -- systemd and cgroup files ----------------------------------------------
    def cgroup_file(self, unit):
        return os.path.join(self.cgroup, self.units[unit]['cgroup'].lstrip('/'), 'cpu.weight')

    def write_weight(self, unit, value):
        path = self.cgroup_file(unit)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
            # an unrestricted cgroup that reaches every CPU (apply leaves its AllowedCPUs alone)
            for fname, text in (('cpuset.cpus', ''), ('cpuset.cpus.effective', '0-3')):
                with open(os.path.join(os.path.dirname(path), fname), 'w') as handle:
                    handle.write(text + '\n')
        with open(path, 'w') as handle:
            handle.write('%s\n' % value)

    def kernel_weight(self, unit):
        with open(self.cgroup_file(unit)) as handle:
            return int(handle.read())

    def set_weight(self, unit, value):
        self.units[unit]['weight'] = value
        self.write_weight(unit, value or 100)

    def dropin(self, slice_name):
        return ep.budget_dropin_path(slice_name, self.run_dir)

    def reload_slice(self, name):
        weight = self.units[name]['configured']
        path = self.dropin(name)
        if os.path.exists(path):
            with open(path) as handle:
                for line in handle:
                    if line.startswith('CPUWeight='):
                        weight = line.split('=', 1)[1].strip()
        self.units[name]['weight'] = weight
        self.write_weight(name, weight)

    def show(self, name):
        unit = self.units[name]
        fragment = '/etc/systemd/system/%s' % name if unit['slice'] else ''
        dropins = self.dropin(name) if unit['slice'] and os.path.exists(self.dropin(name)) else ''
        return ('Id=%s\nLoadState=loaded\nActiveState=active\nTransient=%s\nFragmentPath=%s\nDropInPaths=%s\n'
                'ControlGroup=%s\nCPUAccounting=yes\nCPUWeight=%s\nCPUQuotaPerSecUSec=infinity\nAllowedCPUs=\n'
                % (name, 'no' if unit['slice'] else 'yes', fragment, dropins, unit['cgroup'],
                   unit['weight'] or '[not set]'))

    def run_command(self, module, args, **kwargs):
        assert kwargs.get('environ_update', {}).get('LC_ALL') == 'C'
        assert args[0] == SYSTEMCTL
        self.calls.append(args[1:])
        if args[1] == 'show':
            return 0, '\n'.join(self.show(name) for name in args[args.index('--') + 1:]), ''
        if args[1] == 'set-property':
            unit = args[args.index('--') + 1]
            for assignment in args[args.index('--') + 2:]:
                key, value = assignment.split('=', 1)
                if key == 'CPUWeight':
                    self.set_weight(unit, value)
            return 0, '', ''
        if args[1] == 'daemon-reload':
            for name, unit in self.units.items():
                if unit['slice']:
                    self.reload_slice(name)
            return 0, '', ''
        raise AssertionError('unexpected command %r' % (args,))

    def changing(self):
        return [call for call in self.calls if call[0] != 'show']


@pytest.fixture
def host(tmp_path, monkeypatch):
    lib = Lib(ncpus=4)
    fake = FakeHost(tmp_path, lib)
    monkeypatch.setattr(mod, 'libvirt', lib)
    monkeypatch.setattr(mod._qemu, 'read_guest', fake.read_guest)

    def run_command(module, args, **kwargs):
        return fake.run_command(module, args, **kwargs)
    monkeypatch.setattr(mod.AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(mod.AnsibleModule, 'get_bin_path',
                        lambda module, name, required=False, **kw: SYSTEMCTL if name == 'systemctl' else None)
    fake.snapshot = os.path.join(fake.root, 'snapshots', 'pool.json')
    # the host's topology, which the module reads to validate the pools: 4 CPUs, one per core
    fake.sysfs, fake.proc = write_tree(str(tmp_path / 'topology'), layout(sockets=1, cores=4, threads=1),
                                       smt_control='notsupported')
    return fake


def run(host, state='present', check=False, diff=False, **args):
    params = {'state': state, 'cgroup_root': host.cgroup, 'runtime_unit_dir': host.run_dir,
              'pid_dir': os.path.join(host.root, 'pids'), 'sysfs_root': host.sysfs, 'proc_root': host.proc}
    if state != 'restored':
        params.update(tiers=TIERS, pools=POOLS)
    params.update(args)
    host.calls = []
    result = run_module(mod.main, params, check_mode=check, diff=diff)
    assert not result.get('failed'), result.get('msg')
    json.dumps(result)
    return result


def items(result):
    return dict((item['name'], item) for item in result['items'])


def weights(host, *names):
    return [host.kernel_weight(host.scope_of[name]) for name in names]


def dropin_weight(host, slice_name):
    path = host.dropin(slice_name)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return ep.parse_budget_dropin(handle.read())


# -- all guests waiting in machine.slice ------------------------------------------

def test_all_waiting_scopes_share_the_tier_weight_and_agree_with_libvirt(host):
    for n in range(3):
        host.guest('g%d' % n, 'gold')
    host.guest('s0', 'silver')
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}, {'name': 'g2', 'tier': 'gold'},
                 {'name': 's0', 'tier': 'silver'}]
    stock = run(host, state='query', guests=inventory)
    assert items(stock)['gold weight budget']['state'] == 'stock'
    assert items(stock)['gold weight budget']['total'] == 300
    first = run(host, guests=inventory, snapshot_path=host.snapshot)
    assert first['changed'] is True
    assert weights(host, 'g0', 'g1', 'g2') == [171, 171, 170]
    assert weights(host, 's0') == [333]
    # libvirt's live cpu_shares is the scope's CPUWeight; the persistent <shares> stays the tier weight
    for name in ('g0', 'g1', 'g2', 's0'):
        dom = host.lib.domains[name]
        unit = host.scope_of[name]
        assert dom.live['shares'] == int(host.units[unit]['weight']) == host.kernel_weight(unit)
        assert dom.config['shares'] == TIERS['gold' if name.startswith('g') else 'silver']['shares']
        assert 'cpu_shares' not in [g for g in first['guests'] if g['name'] == name][0]['pending']
    # no slice holds a guest: no budget drop-in, the slices keep their configured weight
    assert [dropin_weight(host, t['slice']) for t in TIERS.values()] == [None, None, None]
    assert first['budget']['tiers']['gold']['nodes'] == dict(
        (host.scope_of[n], w) for n, w in (('g0', 171), ('g1', 171), ('g2', 170)))
    second = run(host, guests=inventory, snapshot_path=host.snapshot)
    assert second['changed'] is False and host.changing() == []
    status = run(host, state='query', guests=inventory)
    found = items(status)
    assert status['verdict'] == 'shared execution pool', status['summary']
    assert found['gold weight budget']['state'] == 'applied' and found['gold weight budget']['total'] == 512
    assert found['g2 weight']['intended'] == 'gold CPUWeight 170'
    assert found['bronze weight budget']['state'] == 'info'


def test_full_tier_weight_on_every_waiting_scope_is_flagged(host):
    for n in range(2):
        host.guest('g%d' % n, 'gold')
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}]
    run(host, guests=inventory)
    for name in ('g0', 'g1'):
        host.set_weight(host.scope_of[name], '512')  # what the layer did before the budget
    found = items(run(host, state='query', guests=inventory))
    assert found['gold weight budget']['state'] == 'drifted' and found['gold weight budget']['total'] == 1024
    assert found['g0 weight']['state'] == 'drifted'


# -- some moved, all moved, a tier without running guests ----------------------------

def test_some_moved_gets_a_runtime_drop_in_then_all_moved_removes_it(host):
    host.guest('g0', 'gold', 'machine-gold.slice')
    host.guest('g1', 'gold', 'machine-gold.slice')
    host.guest('g2', 'gold')
    host.guest('b0', 'bronze', running=False)
    inventory = [{'name': n, 'tier': 'gold'} for n in ('g0', 'g1', 'g2')] + [{'name': 'b0', 'tier': 'bronze'}]
    checked = run(host, check=True, diff=True, guests=inventory, snapshot_path=host.snapshot)
    assert checked['changed'] is True and host.changing() == []
    assert not os.path.exists(host.dropin('machine-gold.slice')) and not os.path.exists(host.snapshot)
    slices = dict((item['slice'], item) for item in checked['budget']['slices'])
    assert (slices['machine-gold.slice']['action'], slices['machine-gold.slice']['after']) == ('write', 341)
    budget_diff = [d for d in checked['diff'] if d['after_header'] == 'weight budget (tier slices)'][0]
    assert budget_diff['before'] == {'machine-gold.slice': 'no budget drop-in (the configured weight)'}
    assert budget_diff['after'] == {'machine-gold.slice': 'CPUWeight 341 (runtime budget drop-in)'}

    applied = run(host, guests=inventory, snapshot_path=host.snapshot)
    assert applied['changed'] is True
    assert dropin_weight(host, 'machine-gold.slice') == 341
    with open(host.dropin('machine-gold.slice')) as handle:
        text = handle.read()
    assert text.startswith(ep.BUDGET_MARKER) and text.endswith('[Slice]\nCPUWeight=341\n')
    assert host.kernel_weight('machine-gold.slice') == 341 and weights(host, 'g2') == [171]
    # the moved guests' scopes share their slice at the tier weight
    assert weights(host, 'g0', 'g1') == [512, 512]
    assert ['daemon-reload'] in host.changing()
    assert [dropin_weight(host, s) for s in ('machine-silver.slice', 'machine-bronze.slice')] == [None, None]
    assert run(host, guests=inventory, snapshot_path=host.snapshot)['changed'] is False
    found = items(run(host, state='query', guests=inventory))
    assert found['gold weight budget']['state'] == 'applied'
    assert found['gold weight budget']['live'].startswith('total 512: machine-gold.slice 341 (2 guests), ')

    # the last one moves: the drop-in goes, the slice is back to its configured weight
    host.move('g2', 'machine-gold.slice')
    found = items(run(host, state='query', guests=inventory))
    assert found['gold weight budget']['state'] == 'drifted'  # 341 in the slice for all three guests
    done = run(host, guests=inventory, snapshot_path=host.snapshot)
    assert done['changed'] is True
    assert not os.path.exists(host.dropin('machine-gold.slice'))
    assert not os.path.exists(os.path.dirname(host.dropin('machine-gold.slice')))
    assert host.kernel_weight('machine-gold.slice') == 512 and weights(host, 'g2') == [512]
    assert items(run(host, state='query', guests=inventory))['gold weight budget']['state'] == 'applied'


def test_tier_whose_guests_all_stopped_loses_its_drop_in(host):
    host.guest('g0', 'gold', 'machine-gold.slice')
    host.guest('g1', 'gold')
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}]
    run(host, guests=inventory)
    assert dropin_weight(host, 'machine-gold.slice') == 256
    for name in ('g0', 'g1'):
        host.lib.domains[name].active = False
        unit = host.scope_of.pop(name)
        del host.units[unit]
    result = run(host, guests=inventory)
    assert result['changed'] is True and dropin_weight(host, 'machine-gold.slice') is None
    assert host.kernel_weight('machine-gold.slice') == 512
    found = items(run(host, state='query', guests=inventory))
    assert found['gold weight budget']['state'] == 'info'


def test_a_foreign_file_at_the_drop_in_path_fails_naming_it(host):
    host.guest('g0', 'gold', 'machine-gold.slice')
    host.guest('g1', 'gold')
    path = host.dropin('machine-gold.slice')
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as handle:
        handle.write('[Slice]\nCPUWeight=7\n')
    params = {'state': 'present', 'cgroup_root': host.cgroup, 'runtime_unit_dir': host.run_dir, 'tiers': TIERS,
              'pools': POOLS, 'guests': [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}],
              'sysfs_root': host.sysfs, 'proc_root': host.proc}
    result = run_module(mod.main, params)
    assert result['failed'] and path in result['msg'] and 'not written by execution_pool' in result['msg']
    assert host.changing() == [] and host.lib.writes == []


# -- rollback ---------------------------------------------------------------------

def test_rollback_restores_live_shares_and_removes_the_drop_ins(host):
    host.guest('g0', 'gold', 'machine-gold.slice')
    host.guest('g1', 'gold')
    host.guest('s0', 'silver')
    before = dict((name, host.lib.domains[name].live['shares']) for name in ('g0', 'g1', 's0'))
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}, {'name': 's0', 'tier': 'silver'}]
    run(host, guests=inventory, snapshot_path=host.snapshot)
    assert dropin_weight(host, 'machine-gold.slice') == 256
    with open(host.snapshot) as handle:
        snap = json.load(handle)
    assert snap['files'][host.dropin('machine-gold.slice')] == {'exists': False}
    assert snap['dirs'][os.path.dirname(host.dropin('machine-gold.slice'))] == {'exists': False}
    checked = run(host, state='restored', check=True, snapshot_path=host.snapshot)
    assert checked['budget_dropins'] == [host.dropin('machine-gold.slice')] and host.changing() == []
    assert os.path.exists(host.dropin('machine-gold.slice'))
    restored = run(host, state='restored', snapshot_path=host.snapshot)
    assert restored['changed'] is True and restored['budget_dropins'] == [host.dropin('machine-gold.slice')]
    assert not os.path.exists(os.path.dirname(host.dropin('machine-gold.slice')))
    assert host.kernel_weight('machine-gold.slice') == 512
    assert dict((name, host.lib.domains[name].live['shares']) for name in ('g0', 'g1', 's0')) == before
    assert [host.units[host.scope_of[name]]['weight'] for name in ('g0', 'g1', 's0')] == ['', '', '']
    assert any(line.startswith('weight budget drop-ins restored as recorded') for line in restored['report'])
    status = run(host, state='query', guests=inventory)
    assert dict((i['tier'], i['state']) for i in status['items'] if i['name'].endswith(' weight budget')) == {
        'gold': 'stock', 'silver': 'stock', 'bronze': 'info'}


def test_rollback_of_an_older_snapshot_still_removes_our_drop_ins(host):
    host.guest('g0', 'gold', 'machine-gold.slice')
    host.guest('g1', 'gold')
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}]
    run(host, guests=inventory, snapshot_path=host.snapshot)
    with open(host.snapshot) as handle:
        snap = json.load(handle)
    snap['files'], snap['dirs'] = {}, {}  # as release 0.2.0 wrote it
    os.chmod(host.snapshot, 0o600)
    with open(host.snapshot, 'w') as handle:
        json.dump(snap, handle)
    restored = run(host, state='restored', snapshot_path=host.snapshot)
    assert restored['budget_dropins'] == [host.dropin('machine-gold.slice')]
    assert not os.path.exists(host.dropin('machine-gold.slice'))


@pytest.mark.parametrize('text, problem', [
    ('', 'empty file (truncated?)'),
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "shared_execution_pool", "domains": {',
     'truncated (the JSON ends after'),
    ('{"name": "something else"}', 'not a kvmlab.host_resources snapshot'),
    ('<xml/>', 'not JSON'),
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 9, "layer": "shared_execution_pool"}',
     'schema version 9 is not supported'),
])
def test_rollback_with_a_bad_snapshot_fails_naming_the_file_and_changes_nothing(host, text, problem):
    host.guest('g0', 'gold', 'machine-gold.slice')
    host.guest('g1', 'gold')
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}]
    run(host, guests=inventory, snapshot_path=host.snapshot)
    dropin = host.dropin('machine-gold.slice')
    with open(dropin) as handle:
        dropin_text = handle.read()
    shares = dict((name, host.lib.domains[name].live['shares']) for name in ('g0', 'g1'))
    with open(host.snapshot, 'w') as handle:
        handle.write(text)
    host.calls, host.lib.writes = [], []
    result = run_module(mod.main, {'state': 'restored', 'cgroup_root': host.cgroup, 'runtime_unit_dir': host.run_dir,
                                   'pid_dir': os.path.join(host.root, 'pids'), 'snapshot_path': host.snapshot})
    assert result['failed'] and host.snapshot in result['msg'] and problem in result['msg'], result['msg']
    assert 'Traceback' not in result['msg']
    assert host.changing() == [] and host.lib.writes == []
    with open(dropin) as handle:
        assert handle.read() == dropin_text
    assert dict((name, host.lib.domains[name].live['shares']) for name in ('g0', 'g1')) == shares
    with open(host.snapshot) as handle:
        assert handle.read() == text  # kept for the operator to look at


# -- no systemd, no scope ----------------------------------------------------------

def test_without_systemd_no_budget_and_tier_shares_live(host):
    host.guest('g0', 'gold')
    host.guest('g1', 'gold')
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}]
    params = dict(guests=inventory, systemd=False)
    result = run(host, **params)
    assert result['budget'] is None and host.calls == []
    assert [host.lib.domains[n].live['shares'] for n in ('g0', 'g1')] == [512, 512]
    status = run(host, state='query', **params)
    assert 'gold weight budget' not in items(status) and status['verdict'] == 'shared execution pool'


def test_a_running_guest_without_a_scope_keeps_the_tier_weight(host, monkeypatch):
    host.guest('g0', 'gold')
    host.guest('g1', 'gold')
    real = host.read_guest

    def no_scope(pid_dir, name, proc='/proc'):
        result = real(pid_dir, name, proc)
        if name == 'g1':
            result.update(cgroup='/', scope=None, slice=None)
        return result
    monkeypatch.setattr(mod._qemu, 'read_guest', no_scope)
    inventory = [{'name': 'g0', 'tier': 'gold'}, {'name': 'g1', 'tier': 'gold'}]
    result = run(host, guests=inventory)
    assert result['budget']['tiers']['gold']['nodes'] == {host.scope_of['g0']: 512}
    assert host.lib.domains['g1'].live['shares'] == 512 and weights(host, 'g0') == [512]


def test_the_pools_are_derived_from_the_hosts_own_topology_when_none_are_given(host):
    host.guest('g0', 'gold')
    result = run(host, guests=[{'name': 'g0', 'tier': 'gold'}], pools=None, reserved_cores_per_socket=1)
    want = cpu_pools(read_topology(host.sysfs, host.proc), 1, None, None)
    assert result['pools'] == dict((key, want[key]) for key in result['pools']) and len(result['pools']) == 4
    assert want['guest_domain'] == '1-3'
    assert host.lib.domains['g0'].live['vcpu_pins'][0] == frozenset([1, 2, 3])
    # '' (an unset inventory variable) means derive, with the collection's default reserve
    default = cpu_pools(read_topology(host.sysfs, host.proc))
    assert run(host, state='query', pools='', reserved_cores_per_socket='')['pools'] == dict(
        (key, default[key]) for key in ('host_reserved', 'host_housekeeping', 'host_emulator', 'guest_domain'))


@pytest.mark.parametrize('args, message', [
    ({'pools': dict(POOLS, guest_domain='2-5')}, 'pools: pools.guest_domain names CPU(s) 4-5 that are not online'),
    ({'pools': dict(POOLS, guest_domain='')}, 'pools: pools.guest_domain is empty: guests would have no CPU'),
    ({'pools': POOLS, 'reserved_cores_per_socket': 1}, 'pools: pools (given masks) and reserved_cores_per_socket'),
    ({'pools': None, 'reserved_cores_per_socket': 4}, 'pools: reserved_cores_per_socket (4) leaves no guest core'),
])
def test_bad_pools_fail_before_anything_is_read_or_changed(host, tmp_path, args, message):
    host.guest('g0', 'gold')
    lock = str(tmp_path / 'pool.lock')
    params = dict({'cgroup_root': host.cgroup, 'runtime_unit_dir': host.run_dir, 'tiers': TIERS,
                   'sysfs_root': host.sysfs, 'proc_root': host.proc, 'snapshot_path': host.snapshot,
                   'guard': {'prerequisites': None, 'installed': [], 'path': lock, 'token': 'unit-pool-token-0123456',
                             'timeout': 0, 'max_hold': 60}},
                  **args)
    host.calls = []
    result = run_module(mod.main, params)
    assert result['failed'] and result['msg'].startswith(message), result['msg']
    assert host.calls == [] and host.lib.writes == [] and not os.path.exists(host.snapshot)
    assert not os.path.exists(lock)  # not even the lock was taken


def test_the_guard_holds_the_host_lock_for_the_call_only(host, tmp_path):
    host.guest('g0', 'gold')
    lock = str(tmp_path / 'pool.lock')
    token = 'unit-pool-token-0123456'
    guard = {'prerequisites': {'systemd': False, 'cgroup2': False, 'root_user': False, 'python_modules': ['json']},
             'installed': [], 'path': lock, 'token': token, 'owner': 'unit: pool', 'timeout': 0, 'max_hold': 60}
    result = run(host, guests=[{'name': 'g0', 'tier': 'gold'}], guard=guard)
    taken = result['guard']['lock']
    assert result['changed'] is True and taken['acquired'] is True and taken['holder']['owner'] == 'unit: pool'
    assert result['guard']['released']['released'] is True
    assert lk.read_holder(lock) is None and not lk.alive(taken['holder']['pid'], taken['holder']['starttime'])
    # another run holding the lock: the call waits (timeout 0 here), fails naming the holder, changes nothing
    other = lk.acquire(lock, 'another-run-token-0123456', 'ops: site.yml', 5, 60, None)
    try:
        host.calls = []
        params = {'cgroup_root': host.cgroup, 'runtime_unit_dir': host.run_dir, 'tiers': TIERS, 'pools': POOLS,
                  'sysfs_root': host.sysfs, 'proc_root': host.proc, 'guard': guard,
                  'guests': [{'name': 'g0', 'tier': 'silver'}]}
        writes = len(host.lib.writes)
        busy = run_module(mod.main, params)
        assert busy['failed'] and 'pid %d' % other['holder']['pid'] in busy['msg']
        assert host.changing() == [] and len(host.lib.writes) == writes
    finally:
        lk.release(lock, 'another-run-token-0123456')
    # packages this run installs and dpkg lacks: the module stops before libvirt, for the action to install them
    host.calls = []
    stopped = run(host, guests=[{'name': 'g0', 'tier': 'silver'}],
                  guard=dict(guard, installed=['kvmlab-surely-not-a-package']))
    assert stopped['changed'] is False and stopped['guard']['not_installed'] == ['kvmlab-surely-not-a-package']
    assert 'guests' not in stopped and host.changing() == []
    assert lk.read_holder(lock) is None
