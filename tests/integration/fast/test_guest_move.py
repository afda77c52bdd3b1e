# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""guest_move against real QEMU guests on the private libvirtd.

No systemd here: a tier partition ``/machine/<token>gold`` is the cgroup v1
folder ``machine/<token>gold.partition`` (made by test_contention_guests'
``lab`` fixture, as the host foundation would make the slice). A spinning guest starts in ``/machine``,
then gets the partition in its persistent XML, as apply gives it: the
partition is pending. The lab's spin kernel answers no ACPI shutdown, so
``method: shutdown`` times out: with ``destroy_after_timeout`` that proves
the destroy path, without it the guest must be left running. The effect is
read back independently: the QEMU pid from libvirt's pid file and its
``/proc/<pid>/cgroup``.
"""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv
from ansible_collections.kvmlab.host_resources.plugins.modules import guest_move
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
from test_contention_guests import lab  # noqa: F401  pylint: disable=unused-import


@pytest.fixture
def partition(lab):  # noqa: F811  pylint: disable=redefined-outer-name
    """The Gold partition of this test's tier partitions (test_contention_guests' ``lab``: unique folders)."""
    return lab['tiers']['gold']['partition']


def cgroup_of(pid):
    """The cpu controller's path of a process (v1), read here, not by the module."""
    with open('/proc/%d/cgroup' % pid) as handle:
        for line in handle:
            _hid, controllers, path = line.rstrip('\n').split(':', 2)
            if 'cpu' in controllers.split(','):
                return path
    raise AssertionError('no cpu cgroup for pid %d' % pid)


@pytest.fixture
def pending(fastvirt, partition, guests):
    """A spinning guest running in /machine whose persistent XML names the tier partition."""
    def make(name):
        full = guests(name, vcpus=1, kernel='spin')
        dom = fastvirt.connect().lookupByName(full)
        fastvirt.connect().defineXML(lv.edit_domain_xml(dom.XMLDesc(lv.XML_INACTIVE | lv.XML_SECURE),
                                                        partition=partition))
        pid = fastvirt.guest_pid(full)
        assert cgroup_of(pid).startswith('/machine/qemu-')
        return full, pid
    return make


def move(fastvirt, check_mode=False, **args):
    args.setdefault('uri', fastvirt.uri)
    args.setdefault('pid_dir', fastvirt.path('run', 'qemu'))
    return run_module(guest_move.main, args, check_mode=check_mode)


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def test_shutdown_times_out_then_destroy_moves_it(fastvirt, partition, pending):
    name, pid = pending('acpi')
    checked = ok(move(fastvirt, check_mode=True, guests=[name], shutdown_timeout=1, destroy_after_timeout=True))
    assert checked['changed'] is True and [p['name'] for p in checked['planned']] == [name]
    assert checked['moved'] == [] and checked['waiting'] == [name]
    assert fastvirt.guest_pid(name) == pid                          # check mode restarted nothing

    real = ok(move(fastvirt, guests=[name], shutdown_timeout=1, destroy_after_timeout=True))
    assert real['changed'] is True and real['waiting'] == []
    moved = real['moved'][0]
    new_pid = fastvirt.guest_pid(name)
    assert new_pid is not None and new_pid != pid and moved['pid_after'] == new_pid
    assert moved['destroyed'] is True                               # the spin kernel ignores ACPI
    assert cgroup_of(new_pid).startswith('%s.partition/' % partition)

    again = ok(move(fastvirt, guests=[name], shutdown_timeout=1, destroy_after_timeout=True))
    assert again['changed'] is False and again['moved'] == [] and fastvirt.guest_pid(name) == new_pid
    assert [(s['name'], s['reason']) for s in again['left_alone']] == [(name, 'in_slice')]


def test_shutdown_timeout_without_destroy_leaves_it_running(fastvirt, pending):
    name, pid = pending('stay')
    result = move(fastvirt, guests=[name], shutdown_timeout=1)
    assert result['failed'] is True
    assert result['msg'].startswith('guest %s did not shut down within 1 s' % name)
    assert fastvirt.guest_pid(name) == pid and cgroup_of(pid).startswith('/machine/qemu-')


def test_managedsave_moves_it_and_never_restart_is_kept(fastvirt, partition, pending):
    name, pid = pending('save')
    kept, kept_pid = pending('kept')
    checked = ok(move(fastvirt, check_mode=True, method='managedsave', never_restart=[kept]))
    assert [p['name'] for p in checked['planned']] == [name]
    assert fastvirt.guest_pid(name) == pid and fastvirt.guest_pid(kept) == kept_pid

    real = ok(move(fastvirt, method='managedsave', never_restart=[kept]))
    new_pid = fastvirt.guest_pid(name)
    assert [m['name'] for m in real['moved']] == [name] and new_pid not in (None, pid)
    assert cgroup_of(new_pid).startswith('%s.partition/' % partition)
    assert fastvirt.connect().lookupByName(name).state()[0] == 1    # restored and running
    assert fastvirt.guest_pid(kept) == kept_pid and real['waiting'] == [kept]
