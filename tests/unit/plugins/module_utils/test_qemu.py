# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_qemu: thread classes, pid files, status and cgroup parsing, readers on fake /proc trees."""

from __future__ import annotations

import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _qemu as q


@pytest.mark.parametrize('name, expected', [
    ('CPU 0/TCG', ('vcpu', 0)),
    ('CPU 15/KVM', ('vcpu', 15)),
    ('CPU 3/KVM\n', ('vcpu', 3)),
    ('IO iothread1', ('iothread', 1)),
    ('IO iothread12', ('iothread', 12)),
    ('IO mon_iothread', ('emulator', None)),
    ('qemu-system-x86', ('emulator', None)),
    ('call_rcu', ('emulator', None)),
    ('worker', ('emulator', None)),
    ('CPU 1/HVF', ('emulator', None)),
    ('CPU x/TCG', ('emulator', None)),
])
def test_classify_thread(name, expected):
    assert q.classify_thread(name) == expected


def test_parse_status_fields_and_trailing_nul():
    text = 'Name:\tCPU 0/TCG\nState:\tS (sleeping)\nCpus_allowed_list:\t2-3,6\n\0'
    fields = q.parse_status(text)
    assert fields['Name'] == 'CPU 0/TCG'
    assert fields['Cpus_allowed_list'] == '2-3,6'


@pytest.mark.parametrize('text, expected', [('4242\n', 4242), ('4242\0', 4242), ('', None), ('abc', None),
                                            ('0', None), (None, None), (' 17 ', 17)])
def test_parse_pid(text, expected):
    assert q.parse_pid(text) == expected


def test_canonical_cpus():
    assert q.canonical_cpus('0,1,2,3,8') == '0-3,8'
    assert q.canonical_cpus('0-1\0') == '0-1'
    assert q.canonical_cpus('garbage') == 'garbage'


def test_parse_cgroup_unified_and_v1():
    unified = '0::/machine.slice/machine-qemu\\x2d3\\x2dvm.scope/libvirt/emulator\n'
    assert q.cgroup_path(q.parse_cgroup(unified)) == '/machine.slice/machine-qemu\\x2d3\\x2dvm.scope/libvirt/emulator'
    hybrid = ('12:cpuset:/machine/qemu-3-vm.libvirt-qemu/emulator\n'
              '4:cpu,cpuacct:/machine/qemu-3-vm.libvirt-qemu/emulator\n'
              '1:name=systemd:/user.slice\n0::/\n')
    paths = q.parse_cgroup(hybrid)
    assert paths['cpu'] == paths['cpuacct'] == '/machine/qemu-3-vm.libvirt-qemu/emulator'
    assert paths['name=systemd'] == '/user.slice'
    # the unified line says only "/": the cpuset hierarchy is more telling
    assert q.cgroup_path(paths) == '/machine/qemu-3-vm.libvirt-qemu/emulator'
    assert q.cgroup_path(q.parse_cgroup('4:cpu,cpuacct:/x\n')) == '/x'
    assert q.cgroup_path({}) is None


def test_scope_and_slice_of():
    path = '/machine.slice/machine-gold.slice/machine-qemu\\x2d7\\x2dvm.scope/libvirt/vcpu0'
    assert q.scope_of(path) == 'machine-qemu\\x2d7\\x2dvm.scope'
    assert q.slice_of(path) == 'machine-gold.slice'
    path = '/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator'
    assert q.slice_of(path) == 'machine.slice'
    assert q.scope_of('/machine/qemu-1-vm.libvirt-qemu') is None
    assert q.slice_of('/machine/qemu-1-vm.libvirt-qemu') is None
    assert q.scope_of(None) is None


def test_summarize_threads():
    threads = [{'tid': 10, 'name': 'qemu-system-x86', 'cpus': '0'},
               {'tid': 11, 'name': 'call_rcu', 'cpus': '0'},
               {'tid': 12, 'name': 'CPU 0/TCG', 'cpus': '2-3'},
               {'tid': 13, 'name': 'CPU 1/TCG', 'cpus': '2,3'},
               {'tid': 14, 'name': 'IO iothread1', 'cpus': '0-1'}]
    summary = q.summarize_threads(threads)
    assert summary['cpus'] == {'vcpu': ['2-3'], 'emulator': ['0'], 'iothread': ['0-1']}
    assert summary['vcpus'] == {0: '2-3', 1: '2-3'}
    assert summary['iothreads'] == {1: '0-1'}
    assert summary['counts'] == {'vcpu': 2, 'emulator': 2, 'iothread': 1}


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(text)


def fake_guest(root, name, pid, threads, cgroup):
    """A fake /proc tree and pid file for one QEMU process."""
    proc = str(root / 'proc')
    _write(str(root / 'run' / ('%s.pid' % name)), '%d\n' % pid)
    _write(os.path.join(proc, str(pid), 'cgroup'), cgroup)
    for tid, (comm, cpus) in threads.items():
        base = os.path.join(proc, str(pid), 'task', str(tid))
        _write(os.path.join(base, 'status'), 'Name:\t%s\nCpus_allowed_list:\t%s\n' % (comm, cpus))
        _write(os.path.join(base, 'comm'), comm + '\n')
    return proc, str(root / 'run')


def test_read_guest_on_a_fake_tree(tmp_path):
    proc, run = fake_guest(tmp_path, 'vm1', 500, {
        500: ('qemu-system-x86', '0-1'), 501: ('CPU 0/TCG', '4-7'), 502: ('CPU 1/TCG', '4-7'),
        503: ('IO iothread1', '0-1'), 504: ('IO mon_iothread', '0-1')},
        '0::/machine.slice/machine-qemu\\x2d2\\x2dvm1.scope/libvirt/emulator\n')
    guest = q.read_guest(run, 'vm1', proc)
    assert guest['running'] is True and guest['pid'] == 500
    assert guest['scope'] == 'machine-qemu\\x2d2\\x2dvm1.scope'
    assert guest['slice'] == 'machine.slice'
    assert guest['cpus'] == {'vcpu': ['4-7'], 'emulator': ['0-1'], 'iothread': ['0-1']}
    assert guest['vcpus'] == {0: '4-7', 1: '4-7'}
    assert [t['tid'] for t in guest['threads']] == [500, 501, 502, 503, 504]


def test_read_guest_mixed_affinity_and_vanished_thread(tmp_path):
    proc, run = fake_guest(tmp_path, 'vm2', 600, {
        600: ('qemu-system-x86', '0'), 601: ('CPU 0/TCG', '1'), 602: ('CPU 1/TCG', '0-1')}, '0::/x.scope\n')
    os.makedirs(os.path.join(proc, '600', 'task', '603'))  # a thread that ended: no status file
    guest = q.read_guest(run, 'vm2', proc)
    assert guest['cpus']['vcpu'] == ['0-1', '1']
    assert len(guest['threads']) == 3


def test_read_guest_not_running(tmp_path):
    proc = str(tmp_path / 'proc')
    os.makedirs(proc)
    run = str(tmp_path / 'run')
    assert q.read_guest(run, 'absent', proc)['running'] is False
    _write(os.path.join(run, 'stale.pid'), '99999\n')  # no such process
    stale = q.read_guest(run, 'stale', proc)
    assert stale['running'] is False and stale['pid'] is None and stale['cpus']['vcpu'] == []
    _write(os.path.join(run, 'junk.pid'), 'not a pid')
    assert q.read_guest(run, 'junk', proc)['running'] is False


def test_read_threads_falls_back_to_comm(tmp_path):
    base = tmp_path / 'proc' / '700' / 'task' / '701'
    _write(str(base / 'status'), 'Cpus_allowed_list:\t3\n')
    _write(str(base / 'comm'), 'CPU 2/KVM\n')
    assert q.read_threads(700, str(tmp_path / 'proc')) == [{'tid': 701, 'name': 'CPU 2/KVM', 'cpus': '3'}]
    assert q.read_threads(701, str(tmp_path / 'proc')) == []
