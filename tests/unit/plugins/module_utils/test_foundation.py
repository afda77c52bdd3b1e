# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_foundation: file texts, plans and status items, rule by rule."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _foundation as fd
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap

TIERS = {
    'gold': {'slice': 'machine-gold.slice', 'cpu_weight': 512, 'intended_class': 'control plane'},
    'silver': {'slice': 'machine-silver.slice', 'cpu_weight': 333},
}
R = '0-1,4-5'


# -- arguments ----------------------------------------------------------------

def test_cpus_of_canonical_and_online():
    assert fd.cpus_of('4-5,0-1', 'host_reserved', frozenset(range(8))) == R
    with pytest.raises(fd.FoundationError, match='not online: 8'):
        fd.cpus_of('0,8', 'host_reserved', frozenset(range(8)))
    with pytest.raises(fd.FoundationError, match='host_reserved is required'):
        fd.cpus_of('', 'host_reserved')
    assert fd.cpus_of(None, 'host_housekeeping', required=False) is None


def test_cpus_of_refuses_malformed_lists():
    with pytest.raises(fd.FoundationError, match='host_reserved'):
        fd.cpus_of('0-1,,4-5', 'host_reserved')


def test_slice_units_tiers_then_host_slices():
    units = fd.slice_units(TIERS, ['system.slice', 'user.slice'], R)
    assert units == [
        {'name': 'machine-gold.slice', 'cpu_weight': 512,
         'description': 'kvmlab gold performance domain (control plane)'},
        {'name': 'machine-silver.slice', 'cpu_weight': 333,
         'description': 'kvmlab silver performance domain (silver)'},
        {'name': 'system.slice', 'allowed_cpus': R},
        {'name': 'user.slice', 'allowed_cpus': R},
    ]


@pytest.mark.parametrize('tiers,hosts,needle', [
    ({}, [], 'tiers must map'),
    ({'gold': {'cpu_weight': 5}}, [], 'tier gold must be a dict with slice'),
    ({'gold': {'slice': 'a.slice', 'cpu_weight': 'x'}}, [], 'not an integer'),
    ({'a': {'slice': 'x.slice', 'cpu_weight': 1}, 'b': {'slice': 'x.slice', 'cpu_weight': 2}}, [], 'used by another'),
    ({'a': {'slice': 'system.slice', 'cpu_weight': 1}}, ['system.slice'], 'both a tier slice and a host slice'),
])
def test_slice_units_refuses(tiers, hosts, needle):
    with pytest.raises(fd.FoundationError, match=needle):
        fd.slice_units(tiers, hosts, R)


# -- texts --------------------------------------------------------------------

def test_manager_dropin_text():
    text = fd.manager_dropin_text(R, True, 'managed\nby us')
    assert text.startswith('# managed\n# by us\n')
    assert '[Manager]\nDefaultCPUAccounting=yes\nCPUAffinity=0-1,4-5\n' in text
    assert 'DefaultCPUAccounting' not in fd.manager_dropin_text(R, False)


def test_boot_unit_runs_after_cgroup_setup_and_starts_the_tiers():
    text = fd.boot_unit_text(R, '/usr/bin/taskset', ['machine-gold.slice'])
    lines = text.splitlines()
    assert 'After=basic.target systemd-machined.service libvirtd.service virtqemud.service' in lines
    assert 'Wants=machine-gold.slice' in lines and 'After=machine-gold.slice' in lines
    assert 'Type=oneshot' in lines and 'RemainAfterExit=yes' in lines
    assert 'ExecStart=/usr/bin/taskset --all-tasks --cpu-list --pid 0-1,4-5 1' in lines
    assert not any(line.startswith('Wants=') for line in fd.boot_unit_text(R, 't').splitlines())


def test_boot_wants_and_paths():
    assert fd.boot_wants_text().endswith('[Unit]\nWants=kvmlab-host-cpu-reserve.service\n')
    assert fd.boot_paths('/etc/systemd/system/', 'multi-user.target') == (
        '/etc/systemd/system/kvmlab-host-cpu-reserve.service',
        '/etc/systemd/system/multi-user.target.d/90-kvmlab-host-cpu-reserve.conf')


def test_grub_dropin_text():
    assert ('GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} systemd.cpu_affinity=0-1,4-5 irqaffinity=0,4"'
            in fd.grub_dropin_text(R, '0,4'))


def test_env_lines():
    text = 'A=1\n#IRQBALANCE_BANNED_CPULIST=\nB=2\n'
    assert fd.set_env_line(text, '2-3') == 'A=1\nIRQBALANCE_BANNED_CPULIST=2-3\nB=2\n'
    assert fd.set_env_line(None, '2-3') == 'IRQBALANCE_BANNED_CPULIST=2-3\n'
    assert fd.set_env_line('A=1', '2-3') == 'A=1\nIRQBALANCE_BANNED_CPULIST=2-3\n'
    assert fd.env_value('IRQBALANCE_BANNED_CPULIST="2-3"\n') == '2-3'
    assert fd.env_value('#IRQBALANCE_BANNED_CPULIST=2-3\n') is None
    assert fd.drop_env_line('A=1\nIRQBALANCE_BANNED_CPULIST=2-3\n') == 'A=1\n'
    assert fd.drop_env_line('IRQBALANCE_BANNED_CPULIST=2-3\n') == ''


# -- plans --------------------------------------------------------------------

def test_file_plan_and_actions():
    plan = fd.file_plan({'/a': 'x\n', '/b': 'y\n'}, {'/a': 'x\n', '/b': None})
    assert [(i['path'], i['action']) for i in plan] == [('/a', 'keep'), ('/b', 'write')]
    assert fd.apply_actions(plan, R, R, ['/b']) == ['daemon-reload']
    assert fd.apply_actions(plan, R, R, ['/a']) == []
    # PID 1 off the reserve: the reload applies CPUAffinity again
    assert fd.apply_actions(plan, '0-7', R, ['/a']) == ['daemon-reload']
    assert fd.apply_actions(plan, R, R, [], grub_path='/b', irqbalance_path='/a') == ['update-grub']


def test_snapshot_dirs():
    dirs = fd.snapshot_dirs(['/etc/systemd/system.conf.d/x.conf', '/etc/systemd/system/u.service',
                             '/etc/systemd/system/t.d/w.conf'], '/var/lib/kvmlab/snapshots/s.json')
    assert dirs == ['/etc/systemd/system.conf.d', '/etc/systemd/system', '/etc/systemd/system/t.d',
                    '/var/lib/kvmlab/snapshots', '/var/lib/kvmlab']


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def _snapshot(files):
    data = snap.new_snapshot(fd.LAYER, host='h', created='2026-01-01T00:00:00Z')
    data['files'] = files
    return data


def test_restore_plan_removes_what_apply_made_and_writes_back_what_was_there():
    data = _snapshot({'/m': {'exists': False},
                      '/i': {'exists': True, 'mode': '0644', 'owner': 'root', 'group': 'root',
                             'content_b64': _b64('A=1\n')}})
    current = {'/m': {'exists': True, 'mode': '0644', 'owner': 'root', 'group': 'root', 'content_b64': _b64('x')},
               '/i': {'exists': True, 'mode': '0644', 'owner': 'root', 'group': 'root',
                      'content_b64': _b64('A=1\nIRQBALANCE_BANNED_CPULIST=2-3\n')}}
    files, dirs = fd.restore_plan(data, current, {}, '/i')
    assert [(a['path'], a['action']) for a in files] == [('/i', 'write'), ('/m', 'remove')]
    assert base64.b64decode(files[0]['content_b64']) == b'A=1\n'
    assert fd.restore_actions(files, ['/m'], None, '/i') == ['daemon-reload', 'restart-irqbalance']


def test_restore_plan_keeps_an_irqbalance_file_its_package_installed_later():
    data = _snapshot({'/i': {'exists': False}})
    current = {'/i': {'exists': True, 'mode': '0640', 'owner': 'root', 'group': 'adm',
                      'content_b64': _b64('OPT=1\nIRQBALANCE_BANNED_CPULIST=2-3\n')}}
    files, _dirs = fd.restore_plan(data, current, {}, '/i')
    assert files[0]['action'] == 'write' and files[0]['mode'] == '0640' and files[0]['group'] == 'adm'
    assert base64.b64decode(files[0]['content_b64']) == b'OPT=1\n'
    # only our line in it: the file goes, as it was not there
    current['/i']['content_b64'] = _b64('IRQBALANCE_BANNED_CPULIST=2-3\n')
    assert fd.restore_plan(data, current, {}, '/i')[0][0]['action'] == 'remove'


def test_pid1_restore_target():
    assert fd.pid1_restore_target({'pid1_cpus_allowed': '0-7'}, frozenset(range(8))) == '0-7'
    # a CPU went offline since the snapshot: the rest
    assert fd.pid1_restore_target({'pid1_cpus_allowed': '0-7'}, frozenset(range(6))) == '0-5'
    with pytest.raises(fd.FoundationError, match='records no pid1_cpus_allowed'):
        fd.pid1_restore_target({}, frozenset([0]))
    with pytest.raises(fd.FoundationError, match='is online now'):
        fd.pid1_restore_target({'pid1_cpus_allowed': '4-5'}, frozenset([0, 1]))


def test_legacy_slices_only_from_a_migrated_snapshot():
    old = {'version': 1, 'role': 'lab_host_resource_management', 'pid1_cpus_allowed': '0-7',
           'files': {}, 'dirs': {}, 'slices': ['machine-gold.slice', 'system.slice']}
    data = snap.validate(old, '/s.json', fd.LAYER)
    assert fd.legacy_slices(data) == ['machine-gold.slice', 'system.slice']
    assert data['values']['pid1_cpus_allowed'] == '0-7'
    current = snap.new_snapshot(fd.LAYER)
    current['values']['slices'] = ['x.slice']
    assert fd.legacy_slices(current) == []


# -- status items -------------------------------------------------------------

def test_manager_dropin_item():
    wanted = fd.manager_dropin_text(R)
    assert fd.manager_dropin_item('/d', None, wanted, R)['state'] == 'stock'
    assert fd.manager_dropin_item('/d', wanted, wanted, R)['state'] == 'applied'
    item = fd.manager_dropin_item('/d', wanted + '# edited\n', wanted, R)
    assert (item['state'], item['live']) == ('drifted', 'present, differs')
    assert item['intended'] == '/d with CPUAffinity=0-1,4-5'


def test_pid1_item():
    assert fd.pid1_item(R, R, '0-7')['state'] == 'applied'
    assert fd.pid1_item('0-7', R, '0-7')['state'] == 'stock'
    assert fd.pid1_item('0-3', R, '0-7')['state'] == 'drifted'


def test_boot_unit_item():
    args = ('/u', 'U', 'U', '/w', 'W', 'W')
    assert fd.boot_unit_item(True, *args)['state'] == 'applied'
    assert fd.boot_unit_item(True, '/u', None, 'U', '/w', None, 'W')['state'] == 'stock'
    half = fd.boot_unit_item(True, '/u', 'U', 'U', '/w', None, 'W')
    assert (half['state'], half['live']) == ('drifted', 'only /u')
    assert fd.boot_unit_item(True, '/u', 'old', 'U', '/w', 'W', 'W')['live'] == 'present, differs'
    assert fd.boot_unit_item(False, '/u', None, None, '/w', None, 'W')['state'] == 'info'
    assert fd.boot_unit_item(True, *args, active=True)['live'] == 'present (ran this boot)'


def test_kernel_args_item():
    cmdline = 'root=/dev/vda systemd.cpu_affinity=0-1,4-5 irqaffinity=0,4'
    assert fd.kernel_args_item(True, cmdline, R, '0,4')['state'] == 'applied'
    assert fd.kernel_args_item(True, 'root=/dev/vda', R, '0,4')['state'] == 'stock'
    assert fd.kernel_args_item(True, 'irqaffinity=0', R, '0,4')['state'] == 'drifted'
    off = fd.kernel_args_item(False, cmdline, R, '0,4')
    assert (off['state'], off['intended']) == ('info', 'not managed (opt-in off)')
    pending = fd.kernel_args_item(True, 'root=/dev/vda', R, '0,4', dropin_present=True)
    assert 'reboot pending' in pending['live']


def test_irqbalance_item():
    assert fd.irqbalance_item(True, 'IRQBALANCE_BANNED_CPULIST=2-3,6-7\n', '2-3,6-7')['state'] == 'applied'
    assert fd.irqbalance_item(True, 'IRQBALANCE_BANNED_CPULIST=2-3\n', '2-3,6-7')['state'] == 'drifted'
    assert fd.irqbalance_item(True, 'OTHER=1\n', '2-3')['state'] == 'stock'
    assert fd.irqbalance_item(True, None, '2-3')['live'] == '(file absent)'
    assert fd.irqbalance_item(False, None, None)['state'] == 'info'


def _reading(defined=True, current=True, weight='', allowed='', active=True, **cgroup):
    return {'defined': defined, 'current': current, 'active': active,
            'properties': {'CPUAccounting': 'yes', 'CPUWeight': weight, 'CPUQuota': '', 'AllowedCPUs': allowed},
            'cgroup': cgroup}


def test_tier_slice_applied_needs_the_kernel_weight():
    assert fd.tier_slice_item('g', 512, _reading(weight='512', cpu_weight=512))['state'] == 'applied'
    # cpu.weight missing (cpu controller off) on an active slice: not effective
    item = fd.tier_slice_item('g', 512, _reading(weight='512', cpu_weight=None))
    assert item['state'] == 'drifted' and 'cgroup cpu.weight none' in item['live']
    # inactive slice: no cgroup, judged on the definition
    assert fd.tier_slice_item('g', 512, _reading(weight='512', active=False))['state'] == 'applied'


def test_tier_slice_runtime_override_is_drift():
    item = fd.tier_slice_item('machine-silver.slice', 333, _reading(weight='100', cpu_weight=100))
    assert item['state'] == 'drifted' and item['live'] == 'systemd 100, cgroup cpu.weight 100'


def test_tier_slice_stock_means_default_weight():
    for weight, kernel in (('', None), ('', 100), ('100', 100)):
        assert fd.tier_slice_item('g', 512, _reading(False, False, weight, cpu_weight=kernel))['state'] == 'stock'
    assert fd.tier_slice_item('g', 512, _reading(False, False, '200', cpu_weight=200))['state'] == 'drifted'


def test_tier_slice_file_differs():
    item = fd.tier_slice_item('g', 512, _reading(current=False, weight='512', cpu_weight=512))
    assert item['state'] == 'drifted' and item['live'].endswith('unit file differs')


BUDGET = '/run/systemd/system/machine-gold.slice.d/40-kvmlab-weight-budget.conf'
SET_PROPERTY = '/run/systemd/system.control/machine-gold.slice.d/50-CPUWeight.conf'


def _budget(weight, dropins=(BUDGET,), **cgroup):
    reading = _reading(weight=str(weight), **cgroup)
    reading.update(dropins=list(dropins), budget={'path': BUDGET, 'weight': weight})
    return reading


def test_tier_slice_weight_budget_is_applied():
    item = fd.tier_slice_item('machine-gold.slice', 512, _budget(341, cpu_weight=341))
    assert item['state'] == 'applied'
    assert item['live'] == ('systemd 341, cgroup cpu.weight 341, applied (weight budget 341 of 512 while guests '
                            'wait for their move)')
    # the budget drop-in says 341 but systemd was not reloaded, or the kernel does not carry it
    assert fd.tier_slice_item('machine-gold.slice', 512, dict(_budget(341, cpu_weight=512),
                                                              properties={'CPUWeight': '512'}))['state'] == 'drifted'
    assert fd.tier_slice_item('machine-gold.slice', 512, _budget(341, cpu_weight=512))['state'] == 'drifted'


def test_tier_slice_other_runtime_override_is_drift_even_with_the_budget():
    # set-property --runtime beside the budget drop-in: drift, whichever of the two wins
    for weight in (341, 100):
        reading = _budget(341, dropins=(BUDGET, SET_PROPERTY), cpu_weight=weight)
        reading['properties']['CPUWeight'] = str(weight)
        item = fd.tier_slice_item('machine-gold.slice', 512, reading)
        assert item['state'] == 'drifted' and ('runtime override %s' % SET_PROPERTY) in item['live']
    # a set-property override alone that happens to carry the tier weight is drift too
    reading = dict(_reading(weight='512', cpu_weight=512), dropins=[SET_PROPERTY])
    assert fd.tier_slice_item('machine-gold.slice', 512, reading)['state'] == 'drifted'
    # the foundation's own definition and vendor drop-ins are not overrides
    reading = dict(_reading(weight='512', cpu_weight=512), dropins=['/etc/systemd/system/machine-gold.slice.d/x.conf'])
    assert fd.tier_slice_item('machine-gold.slice', 512, reading)['state'] == 'applied'


def test_tier_slice_budget_file_not_ours_is_drift():
    reading = dict(_reading(weight='341', cpu_weight=341), dropins=[BUDGET], budget={'path': BUDGET, 'weight': None})
    item = fd.tier_slice_item('machine-gold.slice', 512, reading)
    assert item['state'] == 'drifted' and ('runtime override %s' % BUDGET) in item['live']
    assert 'is not a weight budget drop-in of ours' in item['live']


def test_runtime_overrides():
    assert fd.runtime_overrides([BUDGET, SET_PROPERTY, '/etc/systemd/system.control/x.slice.d/50-CPUWeight.conf',
                                 '/etc/systemd/system/x.slice.d/y.conf'], BUDGET) == [
        SET_PROPERTY, '/etc/systemd/system.control/x.slice.d/50-CPUWeight.conf']
    assert fd.runtime_overrides(None) == []


def test_host_slice_judged_on_effective_cpuset():
    ok = _reading(allowed=R, cpuset_cpus=R, cpuset_cpus_effective=R)
    assert fd.host_slice_item('system.slice', R, ok)['state'] == 'applied'
    # systemd says so but the cpuset controller is off: nothing confines the slice
    off = _reading(allowed=R, cpuset_cpus=None, cpuset_cpus_effective=None)
    assert fd.host_slice_item('system.slice', R, off)['state'] == 'drifted'
    assert fd.host_slice_item('system.slice', R, _reading(allowed=R, cpuset_cpus=R,
                                                          cpuset_cpus_effective='0-7'))['state'] == 'drifted'


def test_host_slice_stock_and_stale_cpuset():
    stock = _reading(False, False, cpuset_cpus='', cpuset_cpus_effective='0-7')
    item = fd.host_slice_item('system.slice', R, stock)
    assert item['state'] == 'stock' and item['live'] == 'systemd unrestricted, cgroup cpuset.cpus unrestricted, effective 0-7'
    assert fd.host_slice_item('system.slice', R, _reading(False, False))['state'] == 'stock'
    # drop-in gone but the kernel kept the cpuset: still confined, not stock
    stale = _reading(False, False, cpuset_cpus=R, cpuset_cpus_effective=R)
    assert fd.host_slice_item('system.slice', R, stale)['state'] == 'drifted'
    assert fd.host_slice_item('system.slice', R, stale, '0-7')['state'] == 'drifted'


def test_host_slice_widened_to_every_cpu_is_stock():
    # after rollback on a kernel that refuses to empty a populated cgroup's cpuset.cpus
    widened = _reading(False, False, cpuset_cpus='0-7', cpuset_cpus_effective='0-7')
    item = fd.host_slice_item('system.slice', R, widened, '0-7')
    assert item['state'] == 'stock'
    assert item['live'].endswith('(every online CPU: confines nothing; empty again from the next boot)')
    # without the online set, or with a CPU missing, it is not
    assert fd.host_slice_item('system.slice', R, widened)['state'] == 'drifted'
    assert fd.host_slice_item('system.slice', R, widened, '0-8')['state'] == 'drifted'
    narrower = _reading(False, False, cpuset_cpus='0-6', cpuset_cpus_effective='0-6')
    assert fd.host_slice_item('system.slice', R, narrower, '0-7')['state'] == 'drifted'
    # systemd still restricting it is drift whatever the cgroup says
    restricted = _reading(False, False, allowed='0-7', cpuset_cpus='0-7', cpuset_cpus_effective='0-7')
    assert fd.host_slice_item('system.slice', R, restricted, '0-7')['state'] == 'drifted'


def test_status_verdict_and_summary():
    items = [fd.pid1_item(R, R, '0-7'), fd.tier_slice_item('machine-silver.slice', 333,
                                                           _reading(weight='100', cpu_weight=100)),
             fd.kernel_args_item(False, '', R, '0')]
    result = fd.status(items, {'host_reserved': R}, '/s.json')
    assert result['verdict'] == 'drifted'
    assert 'machine-silver.slice' in result['summary'] and 'PID 1' not in result['summary']
    assert result['pools'] == {'host_reserved': R} and result['snapshot'] == '/s.json'
    assert fd.status([fd.pid1_item('0-7', R, '0-7')])['verdict'] == 'stock'
