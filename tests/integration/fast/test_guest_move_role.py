# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared_execution_pool role's move entry point against a real guest on the private libvirtd.

A running spinning guest whose persistent XML names its tier partition, as
apply leaves it (pending: its QEMU stays in /machine). move --check restarts
nothing; move restarts it (the spin kernel ignores ACPI: through the shutdown
timeout and destroy) into the partition's folder, then its apply places it
live; a second move changes nothing. Read back independently: QEMU pid (libvirt's pid file), its
``/proc/<pid>/cgroup`` and its threads' affinity. The role runs through
ansible-playbook as in test_shared_execution_pool (its ``role`` fixture).
"""

from __future__ import annotations

from test_contention_guests import lab  # noqa: F401  pylint: disable=unused-import
from test_guest_move import cgroup_of, partition, pending  # noqa: F401  pylint: disable=unused-import
from test_shared_execution_pool import _two_cpu_pools, live, role  # noqa: F401  pylint: disable=unused-import


def test_move_entry_point_check_then_move_then_nothing(fastvirt, lab, partition, pending, role):  # noqa: F811
    name, pid = pending('move')                                      # partition pending, as after apply
    spec = [{'name': name, 'tier': 'gold'}]
    extra = dict(shared_execution_pool_tiers=lab['tiers'], shared_execution_pool_move_shutdown_timeout=1,
                 shared_execution_pool_move_destroy_after_timeout=True)

    changed, _, out = role('move', spec, check=True, **extra)
    assert changed >= 1 and '%s: would restart into' % name in out
    assert fastvirt.guest_pid(name) == pid

    changed, facts, out = role('move', spec, **extra)
    new_pid = fastvirt.guest_pid(name)
    assert new_pid not in (None, pid) and cgroup_of(new_pid).startswith('%s.partition/' % partition)
    assert '%s: restarted into' % name in out
    assert changed >= 1, 'a restart is a change: the recap says changed=%d' % changed
    threads = live(fastvirt, name)
    assert threads['vcpus'] == {0: '1'} and threads['emulator'] == {'0'}      # placed live by the move's apply
    assert facts['result']['guests'][0]['pending'] == []

    changed, _, out = role('move', spec, **extra)
    assert changed == 0 and fastvirt.guest_pid(name) == new_pid
    assert 'nothing to move' in out
