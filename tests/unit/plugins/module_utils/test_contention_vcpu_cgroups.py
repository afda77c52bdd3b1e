# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A busy guest's CPU time for the tier shares: its vCPU cgroups, not its emulator (real cgroup trees in tmp)."""

from __future__ import annotations

import os

from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention_run import Cgroups

SCOPE = '/machine.slice/machine-bronze.slice/machine-qemu\\x2d4\\x2dkvmlab\\x2dbusy\\x2dbronze\\x2d1.scope'


def _cgroup(root, path, usage_usec=None, name='cpu.stat'):
    directory = os.path.join(str(root), path.lstrip('/'))
    os.makedirs(directory, exist_ok=True)
    if usage_usec is not None:
        with open(os.path.join(directory, name), 'w') as handle:
            handle.write('usage_usec %d\nuser_usec 0\nsystem_usec 0\n' % usage_usec if name == 'cpu.stat'
                         else '%d\n' % usage_usec)


def test_v2_systemd_layout_counts_the_vcpus_only(tmp_path):
    _cgroup(tmp_path, SCOPE, 9000000)
    _cgroup(tmp_path, SCOPE + '/libvirt', 9000000)
    _cgroup(tmp_path, SCOPE + '/libvirt/emulator', 1000000)
    _cgroup(tmp_path, SCOPE + '/libvirt/vcpu0', 4000000)
    _cgroup(tmp_path, SCOPE + '/libvirt/vcpu1', 4000000)
    _cgroup(tmp_path, SCOPE + '/libvirt/vcpux')          # not a vCPU cgroup
    cgroups = Cgroups(2, str(tmp_path))
    assert cgroups.vcpu_cgroups(SCOPE) == [SCOPE + '/libvirt/vcpu0', SCOPE + '/libvirt/vcpu1']
    assert cgroups.vcpu_usage_usec(SCOPE) == 8000000
    assert cgroups.usage_usec(SCOPE) == 9000000           # the whole guest, emulator included


def test_v2_without_vcpu_cgroups_gives_none(tmp_path):
    _cgroup(tmp_path, SCOPE, 9000000)
    _cgroup(tmp_path, SCOPE + '/libvirt/emulator', 1000000)
    assert Cgroups(2, str(tmp_path)).vcpu_usage_usec(SCOPE) is None


def test_unreadable_vcpu_cgroup_gives_none(tmp_path):
    _cgroup(tmp_path, SCOPE + '/libvirt/vcpu0', 4000000)
    _cgroup(tmp_path, SCOPE + '/libvirt/vcpu1')           # no cpu.stat: the guest is going away
    assert Cgroups(2, str(tmp_path)).vcpu_usage_usec(SCOPE) is None


def test_v1_layout_vcpus_directly_below_the_guest(tmp_path):
    guest = '/machine/qemu-1-busy.libvirt-qemu'
    v1 = tmp_path / 'v1'
    _cgroup(v1 / 'cpu,cpuacct', guest + '/emulator', 500, name='cpuacct.usage')
    _cgroup(v1 / 'cpu,cpuacct', guest + '/vcpu0', 3000, name='cpuacct.usage')
    _cgroup(v1 / 'cpu,cpuacct', guest + '/vcpu1', 2000, name='cpuacct.usage')
    cgroups = Cgroups(1, str(tmp_path / 'unified'), v1_root=str(v1))
    assert cgroups.vcpu_cgroups(guest) == [guest + '/vcpu0', guest + '/vcpu1']
    assert cgroups.vcpu_usage_usec(guest) == 5
