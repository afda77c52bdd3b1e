# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""guest_move's main() against a fake libvirt that starts fake QEMU processes.

The fake domain of test_libvirt_pin is given a life cycle: ``create`` writes a
libvirt pid file and a ``/proc/<pid>`` entry whose cgroup is the systemd
slice of the partition the guest starts with (the persistent one, or the one
in its managed save image, as real libvirt does); ``shutdown`` powers it off
only when the guest answers ACPI; ``destroy`` always. Time is a fake clock,
so timeouts cost nothing. Every life-cycle call is recorded, so check mode
and refusals can be shown to touch nothing.
"""

from __future__ import annotations

import os
import re

import pytest

from ansible_collections.kvmlab.host_resources.plugins.modules import guest_move
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
from ansible_collections.kvmlab.host_resources.tests.unit.plugins.modules.test_host_lock import warnings
from ansible_collections.kvmlab.host_resources.tests.unit.plugins.modules.test_libvirt_pin import (
    FakeDomain,
    FakeError,
    FakeLibvirt,
)

NS = 'https://kvmlab.invalid/host_resources/1'
RUNNING, PAUSED, SHUTOFF = 1, 3, 5


def scope_cgroup(ident, name, partition):
    parts = [p for p in (partition or '/machine').strip('/').split('/') if p]
    slices = ['%s.slice' % '-'.join(parts[:i + 1]) for i in range(len(parts))]
    return '/%s/machine-qemu\\x2d%d\\x2d%s.scope/libvirt/emulator' % ('/'.join(slices), ident, name)


class MoveDomain(FakeDomain):
    def __init__(self, lib, name, tier='gold', partition=None, active=True, acpi=True, paused=False):
        FakeDomain.__init__(self, lib, name, vcpus=1, iothreads=(), active=False)
        self.tier = tier
        self.config['partition'] = '/machine/%s' % tier if partition is None else partition
        self.acpi = acpi
        self.paused = paused
        self.saved = None
        self.pid = None
        self.refuse = set()
        if active:
            self.boot('/machine')  # it ran before apply gave it the tier partition

    def boot(self, partition):
        self.active = True
        self.live['partition'] = partition
        self.lib.ident += 1
        self.lib.next_pid += 1
        self.pid = self.lib.next_pid
        if self.name() not in self.lib.no_pid:
            self.lib.spawn(self.name(), self.pid, scope_cgroup(self.lib.ident, self.name(), partition))

    def halt(self):
        self.active = False
        self.lib.reap(self.name(), self.pid)
        self.pid = None

    def _life(self, what):
        if what in self.refuse:
            raise FakeError('%s refused by the test' % what)
        self.lib.life.append((self.name(), what))

    def state(self):
        if not self.active:
            return [SHUTOFF, 1]
        return [PAUSED if self.paused else RUNNING, 1]

    def XMLDesc(self, flags):  # noqa: N802  pylint: disable=invalid-name
        xml = FakeDomain.XMLDesc(self, flags)
        if self.tier:
            xml = xml.replace('<os>', '<metadata><kvmlab:guest xmlns:kvmlab="%s"><kvmlab:tier>%s</kvmlab:tier>'
                                      '</kvmlab:guest></metadata><os>' % (NS, self.tier))
        return xml

    def shutdownFlags(self, flags):  # noqa: N802  pylint: disable=invalid-name
        self._life('shutdown(%d)' % flags)
        if self.acpi:
            self.halt()

    def destroy(self):
        self._life('destroy')
        self.halt()

    def create(self):
        self._life('create')
        if self.saved is not None:
            partition = re.search(r'<partition>([^<]*)</partition>', self.saved)
            self.saved = None
            self.boot(partition.group(1) if partition else '/machine')
        else:
            self.boot(self.config['partition'] or '/machine')
        return 0

    def managedSave(self, flags):  # noqa: N802  pylint: disable=invalid-name
        self._life('managedSave')
        self.saved = FakeDomain.XMLDesc(self, 0)  # the live XML, with the partition it runs in
        self.halt()

    def managedSaveGetXMLDesc(self, flags):  # noqa: N802  pylint: disable=invalid-name
        if self.saved is None:
            raise FakeError('no managed save image')
        return self.saved

    def managedSaveDefineXML(self, xml, flags):  # noqa: N802  pylint: disable=invalid-name
        self._life('managedSaveDefineXML')
        self.saved = xml


class MoveLibvirt(FakeLibvirt):
    def __init__(self, root):
        FakeLibvirt.__init__(self)
        self.root = str(root)
        self.pid_dir = os.path.join(self.root, 'run')
        self.proc = os.path.join(self.root, 'proc')
        os.makedirs(self.pid_dir)
        os.makedirs(self.proc)
        self.ident = 0
        self.next_pid = 1000
        self.life = []
        self.no_pid = set()

    def add(self, name, **kwargs):
        self.domains[name] = MoveDomain(self, name, **kwargs)
        return self.domains[name]

    def spawn(self, name, pid, cgroup):
        task = os.path.join(self.proc, str(pid), 'task', str(pid))
        os.makedirs(task)
        with open(os.path.join(task, 'status'), 'w') as handle:
            handle.write('Name:\tqemu-system-x86\nCpus_allowed_list:\t0-3\n')
        with open(os.path.join(self.proc, str(pid), 'cgroup'), 'w') as handle:
            handle.write('0::%s\n' % cgroup)
        with open(os.path.join(self.pid_dir, '%s.pid' % name), 'w') as handle:
            handle.write('%d' % pid)

    def reap(self, name, pid):
        path = os.path.join(self.pid_dir, '%s.pid' % name)
        if os.path.exists(path):
            os.unlink(path)
        if pid is not None and os.path.isdir(os.path.join(self.proc, str(pid))):
            task = os.path.join(self.proc, str(pid), 'task', str(pid))
            os.unlink(os.path.join(task, 'status'))
            os.rmdir(task)
            os.rmdir(os.path.dirname(task))
            os.unlink(os.path.join(self.proc, str(pid), 'cgroup'))
            os.rmdir(os.path.join(self.proc, str(pid)))

    def cgroup(self, name):
        with open(os.path.join(self.proc, str(self.domains[name].pid), 'cgroup')) as handle:
            return handle.read().strip()[3:]


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def fake(monkeypatch, tmp_path):
    lib = MoveLibvirt(tmp_path)
    clock = Clock()
    monkeypatch.setattr(guest_move, 'libvirt', lib)
    monkeypatch.setattr(guest_move, 'CLOCK', clock)
    monkeypatch.setattr(guest_move, 'SLEEP', clock.sleep)
    lib.clock = clock
    return lib


def run(fake, check_mode=False, diff=False, **args):
    args.setdefault('pid_dir', fake.pid_dir)
    args.setdefault('proc_root', fake.proc)
    return run_module(guest_move.main, args, check_mode=check_mode, diff=diff)


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def reasons(result):
    return dict((entry['name'], entry['reason']) for entry in result['left_alone'])


def test_moves_pending_guests_one_at_a_time_then_nothing(fake):
    fake.add('app', tier='silver')
    fake.add('ci', tier='bronze')
    fake.add('db')
    fake.add('off', active=False)
    fake.add('plain', tier=None, partition='')
    pids = dict((name, fake.domains[name].pid) for name in ('app', 'ci', 'db'))
    first = ok(run(fake, never_restart=['db'], diff=True))
    assert first['changed'] is True
    assert [m['name'] for m in first['moved']] == ['app', 'ci']
    assert fake.life == [('app', 'shutdown(1)'), ('app', 'create'), ('ci', 'shutdown(1)'), ('ci', 'create')]
    assert fake.cgroup('app') == r'/machine.slice/machine-silver.slice/machine-qemu\x2d5\x2dapp.scope/libvirt/emulator'
    assert fake.cgroup('ci').startswith('/machine.slice/machine-bronze.slice/')
    app = first['moved'][0]
    assert app['pid_before'] == pids['app'] and app['pid_after'] == fake.domains['app'].pid != pids['app']
    assert app['cgroup_after'] == fake.cgroup('app') and app['destroyed'] is False
    assert fake.domains['db'].pid == pids['db']                       # never restarted
    assert reasons(first) == {'db': 'never_restart', 'off': 'not_running', 'plain': 'excluded'}
    assert first['waiting'] == ['db']
    assert [p['tier'] for p in first['planned']] == ['silver', 'bronze']
    assert first['diff'][0] == {'before_header': 'app', 'after_header': 'app',
                                'before': {'pid': pids['app'], 'cgroup': app['cgroup_before']},
                                'after': {'pid': app['pid_after'], 'cgroup': app['cgroup_after']}}
    assert first['report'][0].startswith('app: restarted into machine-silver.slice, pid %d -> ' % pids['app'])
    fake.life[:] = []
    second = ok(run(fake, never_restart=['db']))
    assert second['changed'] is False and second['moved'] == [] and second['planned'] == []
    assert fake.life == []
    assert reasons(second)['app'] == 'in_slice' and reasons(second)['ci'] == 'in_slice'
    assert second['waiting'] == ['db']


def test_result_never_uses_a_key_ansible_reads_as_the_task_state(fake):
    # Ansible takes a truthy "skipped" in a module's result for a skipped task (shown as skipping, never
    # counted as changed): found on the lab, a move that restarted two guests and left one alone said changed=0
    fake.add('app', tier='silver')
    fake.add('db')
    result = ok(run(fake, never_restart=['db']))
    assert result['changed'] is True and [m['name'] for m in result['moved']] == ['app']
    assert reasons(result) == {'db': 'never_restart'}
    assert not set(result) & {'skipped', 'unreachable', 'failed'}


def test_check_mode_lists_and_restarts_nothing(fake):
    fake.add('app', tier='silver')
    fake.add('moved')
    fake.domains['moved'].halt()
    fake.domains['moved'].boot('/machine/gold')
    pid = fake.domains['app'].pid
    result = ok(run(fake, check_mode=True, diff=True))
    assert result['changed'] is True and result['moved'] == []
    assert [p['name'] for p in result['planned']] == ['app']
    assert result['planned'][0]['steps'][0] == 'shutdown (ACPI)'
    assert fake.life == [] and fake.domains['app'].pid == pid
    assert result['waiting'] == ['app'] and reasons(result) == {'moved': 'in_slice'}
    assert result['diff'][0]['after'] == {'cgroup': 'in machine-silver.slice (/machine/silver)'}
    assert result['report'][0].startswith('app: would restart into machine-silver.slice')
    real = ok(run(fake))
    assert [m['name'] for m in real['moved']] == [p['name'] for p in result['planned']]


def test_check_mode_with_nothing_pending_reports_no_change(fake):
    fake.add('off', active=False)
    result = ok(run(fake, check_mode=True))
    assert result['changed'] is False and result['planned'] == []


def test_shutdown_timeout_without_destroy_fails_for_that_guest_and_leaves_it_running(fake):
    fake.add('a')
    fake.add('b', acpi=False)
    fake.add('c')
    pid_b, pid_c = fake.domains['b'].pid, fake.domains['c'].pid
    started = fake.clock.now
    result = run(fake, guests=['a', 'b', 'c'], shutdown_timeout=30)
    assert result['failed'] is True
    assert result['msg'].startswith('guest b did not shut down within 30 s of the ACPI shutdown request; it is '
                                    'left running in /machine.slice/machine-qemu')
    assert 'destroy_after_timeout' in result['msg'] and result['msg'].endswith('(guests moved before: a)')
    assert fake.clock.now - started == pytest.approx(30)
    assert fake.domains['b'].active and fake.domains['b'].pid == pid_b
    assert fake.domains['c'].pid == pid_c and ('c', 'shutdown(1)') not in fake.life   # the guests after it untouched
    assert [m['name'] for m in result['moved']] == ['a'] and result['changed'] is True
    assert result['waiting'] == ['b', 'c']


def test_shutdown_timeout_with_destroy_moves_it(fake):
    fake.add('a', acpi=False)
    result = ok(run(fake, shutdown_timeout=5, destroy_after_timeout=True))
    assert fake.life == [('a', 'shutdown(1)'), ('a', 'destroy'), ('a', 'create')]
    assert result['moved'][0]['destroyed'] is True and result['moved'][0]['seconds'] >= 5
    assert fake.cgroup('a').startswith('/machine.slice/machine-gold.slice/')
    assert 'destroyed after the shutdown timeout' in result['report'][0]


def test_managedsave_puts_the_tier_partition_into_the_saved_image(fake):
    fake.add('a')
    pid = fake.domains['a'].pid
    result = ok(run(fake, method='managedsave'))
    assert fake.life == [('a', 'managedSave'), ('a', 'managedSaveDefineXML'), ('a', 'create')]
    assert result['moved'][0]['pid_after'] != pid
    assert fake.cgroup('a').startswith('/machine.slice/machine-gold.slice/')
    assert result['planned'][0]['steps'][0].startswith('managedsave')


def test_managedsave_image_that_cannot_be_changed_is_restored_where_it_ran(fake):
    fake.add('a').refuse.add('managedSaveDefineXML')
    result = run(fake, method='managedsave')
    assert result['failed'] is True
    assert 'guest a: cannot set partition /machine/gold in its managed save image' in result['msg']
    assert 'it was restored where it ran before' in result['msg']
    assert fake.domains['a'].active and fake.cgroup('a').startswith(r'/machine.slice/machine-qemu')


def test_a_restarted_guest_outside_its_slice_fails(fake, monkeypatch):
    dom = fake.add('a')
    monkeypatch.setattr(dom, 'create', lambda: dom.boot('/machine') or 0)   # libvirt ignored the partition
    result = run(fake)
    assert result['failed'] is True
    assert result['msg'].startswith('guest a restarted, but it runs in cgroup /machine.slice/machine-qemu')
    assert 'not in its tier partition /machine/gold (slice machine-gold.slice)' in result['msg']


def test_a_start_refused_says_the_guest_is_not_running(fake):
    fake.add('a').refuse.add('create')
    result = run(fake)
    assert result['failed'] is True
    assert 'guest a was stopped to move it, and libvirt refused to start it: create refused by the test' in result['msg']
    assert 'it is NOT running now' in result['msg'] and not fake.domains['a'].active


def test_a_guest_that_does_not_come_back_fails_after_start_timeout(fake):
    fake.add('a')
    fake.no_pid.add('a')   # libvirt says running, but no QEMU process shows up
    started = fake.clock.now
    result = run(fake, start_timeout=7)
    assert result['failed'] is True
    assert result['msg'].startswith('guest a did not come back within 7 s of its start: libvirt says running, '
                                    'it has no running QEMU process')
    assert fake.clock.now - started == pytest.approx(7)


def test_a_named_guest_that_does_not_exist_fails_before_anything(fake):
    fake.add('a')
    result = run(fake, guests=['a', 'nope'])
    assert result['failed'] is True
    assert result['msg'] == 'guests nope: not defined at uri "qemu:///system" (guests moved before: none)'
    assert fake.life == []


def test_unknown_never_restart_names_warn(fake, capsys):
    fake.add('a', active=False)
    result = ok(run(fake, never_restart=['typo']))
    assert 'never_restart or exclude names typo, which is not a guest' in warnings(result, capsys)


def test_excluded_and_paused_guests_are_not_touched(fake):
    fake.add('scratch')
    fake.add('held', paused=True)
    result = ok(run(fake, exclude=['scratch']))
    assert result['changed'] is False and fake.life == []
    assert reasons(result) == {'scratch': 'excluded', 'held': 'not_running'}


def test_a_running_guest_without_pid_file_fails_naming_it(fake):
    fake.add('a')
    os.unlink(os.path.join(fake.pid_dir, 'a.pid'))
    result = run(fake)
    assert result['failed'] is True
    assert result['msg'].startswith('guest a is running but its QEMU process\'s cgroup is unknown')
    assert '%s/a.pid' % fake.pid_dir in result['msg'] and fake.life == []


def test_a_guest_without_pid_file_that_is_not_to_be_moved_is_no_error(fake):
    fake.add('a')
    fake.add('b')
    fake.add('c')
    for name in ('a', 'b'):
        os.unlink(os.path.join(fake.pid_dir, '%s.pid' % name))
    result = ok(run(fake, exclude=['a'], never_restart=['b']))
    assert [m['name'] for m in result['moved']] == ['c']
    assert reasons(result) == {'a': 'excluded', 'b': 'never_restart'}


@pytest.mark.parametrize('args, message', [
    (dict(shutdown_timeout=-1), 'shutdown_timeout must be at least 0 seconds, got -1'),
    (dict(start_timeout=0), 'start_timeout must be at least 1 seconds, got 0'),
    (dict(method='reboot'), 'value of method must be one of: shutdown, managedsave'),
])
def test_bad_arguments_fail_before_anything(fake, args, message):
    fake.add('a')
    result = run(fake, **args)
    assert result['failed'] is True and message in result['msg'] and fake.life == []


def test_connection_failure_names_the_uri(fake):
    result = run(fake, uri='xen:///nope')
    assert result['failed'] is True
    assert result['msg'].startswith('cannot connect to libvirt at uri "xen:///nope"')


def test_missing_libvirt_python(monkeypatch, tmp_path):
    monkeypatch.setattr(guest_move, 'libvirt', None)
    result = run_module(guest_move.main, {})
    assert result['failed'] is True and 'libvirt-python' in result['msg']
