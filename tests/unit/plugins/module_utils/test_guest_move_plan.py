# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_guest_move: where a guest runs against its partition, the restart plan, rule by rule."""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _guest_move as gm

SCOPE = r'machine-qemu\x2d3\x2dvm.scope'
SYSTEMD_OLD = '/machine.slice/%s/libvirt/emulator' % SCOPE
SYSTEMD_GOLD = '/machine.slice/machine-gold.slice/%s/libvirt/emulator' % SCOPE
PLAIN_OLD = '/machine/qemu-3-vm.libvirt-qemu/emulator'
PLAIN_GOLD = '/machine/gold.partition/qemu-3-vm.libvirt-qemu/emulator'


# -- where a guest runs ----------------------------------------------------------

@pytest.mark.parametrize('cgroup, partition, expected', [
    (SYSTEMD_GOLD, '/machine/gold', True),            # systemd: the scope's slice is the tier slice
    (SYSTEMD_OLD, '/machine/gold', False),            # still in machine.slice
    (SYSTEMD_GOLD, '/machine/silver', False),         # another tier's slice
    (PLAIN_GOLD, '/machine/gold', True),              # no systemd: below the partition folder
    (PLAIN_OLD, '/machine/gold', False),
    ('/machine/golden.partition/qemu-3-vm.libvirt-qemu', '/machine/gold', False),  # a prefix is not the folder
    ('/machine.slice/machine-gold-db.slice/%s' % SCOPE, '/machine/gold/db', True),  # nested partition
    ('/machine/gold.partition/db.partition/qemu-1-vm.libvirt-qemu', '/machine/gold/db', True),
    ('/machine/gold.partition/qemu-1-vm.libvirt-qemu', '/machine/gold/db', False),
    (None, '/machine/gold', False),
    ('', '/machine/gold', False),
])
def test_in_partition(cgroup, partition, expected):
    assert gm.in_partition(cgroup, partition) is expected


def test_partition_places():
    assert gm.partition_places('/machine/gold') == {'slice': 'machine-gold.slice', 'cgroup': '/machine/gold.partition'}
    with pytest.raises(gm.MoveError):
        gm.partition_places('')


@pytest.mark.parametrize('partition, expected', [
    ('/machine/gold', True), ('/machine/gold/db', True), ('/machine', False), ('/machine/', False), ('', False),
    (None, False)])
def test_tier_partition(partition, expected):
    assert gm.tier_partition(partition) is expected


def test_pending_only_for_a_running_guest_outside_its_tier_partition():
    assert gm.partition_pending('running', '/machine/gold', SYSTEMD_OLD) is True
    assert gm.partition_pending('idle', '/machine/gold', PLAIN_OLD) is True
    assert gm.partition_pending('running', '/machine/gold', SYSTEMD_GOLD) is False
    assert gm.partition_pending('shut off', '/machine/gold', None) is False
    assert gm.partition_pending('paused', '/machine/gold', SYSTEMD_OLD) is False
    assert gm.partition_pending('running', '', SYSTEMD_OLD) is False       # no tier partition: nothing pending
    assert gm.partition_pending('running', '/machine', SYSTEMD_OLD) is False


def test_pending_of_a_running_guest_without_cgroup_is_an_error():
    with pytest.raises(gm.MoveError, match='cgroup is unknown'):
        gm.partition_pending('running', '/machine/gold', None)


def test_state_names():
    assert gm.state_name(1) == 'running' and gm.state_name(5) == 'shut off' and gm.state_name(3) == 'paused'
    assert gm.state_name(42) == 'state 42'


# -- the plan ----------------------------------------------------------------------

def guest(name, state='running', partition='/machine/gold', cgroup=SYSTEMD_OLD, tier='gold', pending=None):
    if state not in gm.RUNNING_STATES:
        cgroup = None
    if pending is None:
        pending = gm.partition_pending(state, partition, cgroup)
    return {'name': name, 'state': state, 'partition': partition, 'cgroup': cgroup, 'tier': tier, 'pending': pending}


def reasons(result):
    return dict((entry['name'], entry['reason']) for entry in result['left_alone'])


def test_a_pending_running_guest_is_restarted_with_its_slice_and_steps():
    result = gm.plan([guest('vm1')])
    assert result['left_alone'] == [] and result['unknown'] == []
    assert result['restart'] == [{'name': 'vm1', 'tier': 'gold', 'state': 'running', 'partition': '/machine/gold',
                                  'slice': 'machine-gold.slice', 'cgroup': SYSTEMD_OLD,
                                  'steps': gm.steps('shutdown', 120, False)}]


def test_a_guest_that_does_not_run_is_left_alone():
    result = gm.plan([guest('off', state='shut off'), guest('held', state='paused')])
    assert result['restart'] == []
    assert reasons(result) == {'off': 'not_running', 'held': 'not_running'}
    assert result['left_alone'][0]['detail'].startswith('paused')


def test_a_guest_already_in_its_slice_is_left_alone():
    result = gm.plan([guest('moved', cgroup=SYSTEMD_GOLD)])
    assert result['restart'] == [] and reasons(result) == {'moved': 'in_slice'}


def test_never_restart_wins_over_pending():
    result = gm.plan([guest('db'), guest('app')], never_restart=['db'])
    assert [entry['name'] for entry in result['restart']] == ['app']
    assert reasons(result) == {'db': 'never_restart'}
    assert SYSTEMD_OLD in result['left_alone'][0]['detail']


def test_never_restart_of_a_guest_with_nothing_pending_says_the_truth():
    result = gm.plan([guest('db', cgroup=SYSTEMD_GOLD), guest('off', state='shut off')], never_restart=['db', 'off'])
    assert reasons(result) == {'db': 'in_slice', 'off': 'not_running'}


def test_excluded_guests_are_left_alone():
    result = gm.plan([guest('scratch'), guest('app')], exclude=['scratch'])
    assert [entry['name'] for entry in result['restart']] == ['app']
    assert reasons(result) == {'scratch': 'excluded'}


def test_guests_not_selected_are_excluded_and_selection_gives_the_order():
    result = gm.plan([guest('a'), guest('b'), guest('c')], selected=['c', 'a'])
    assert [entry['name'] for entry in result['restart']] == ['c', 'a']
    assert reasons(result) == {'b': 'excluded'}
    assert result['left_alone'][0]['detail'] == 'not among the guests to move'


def test_without_selection_the_order_is_by_name():
    result = gm.plan([guest('c'), guest('a'), guest('b')], selected=[])
    assert [entry['name'] for entry in result['restart']] == ['a', 'b', 'c']


def test_a_guest_without_tier_partition_is_excluded():
    result = gm.plan([guest('plain', partition=''), guest('default', partition='/machine')])
    assert result['restart'] == []
    assert reasons(result) == {'plain': 'excluded', 'default': 'excluded'}
    assert 'no tier partition' in result['left_alone'][0]['detail']


def test_reasons_in_order_excluded_first():
    result = gm.plan([guest('x', state='shut off')], never_restart=['x'], exclude=['x'])
    assert reasons(result) == {'x': 'excluded'}


def test_a_selected_guest_that_does_not_exist_is_an_error():
    with pytest.raises(gm.MoveError, match='guests nope, gone: not defined'):
        gm.plan([guest('a')], selected=['a', 'nope', 'gone'])


def test_unknown_never_restart_and_exclude_names_are_returned_for_a_warning():
    result = gm.plan([guest('a')], never_restart=['typo'], exclude=['elsewhere'])
    assert result['unknown'] == ['elsewhere', 'typo']
    assert [entry['name'] for entry in result['restart']] == ['a']


@pytest.mark.parametrize('kwargs, message', [
    (dict(method='reboot'), 'method must be one of shutdown, managedsave'),
    (dict(shutdown_timeout=-1), 'shutdown_timeout'),
    (dict(shutdown_timeout=True), 'shutdown_timeout'),
    (dict(never_restart='db'), 'never_restart must be a list'),
    (dict(selected=['']), 'is not a guest name'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(gm.MoveError, match=message):
        gm.plan([guest('a')], **kwargs)


def test_a_guest_listed_twice_is_an_error():
    with pytest.raises(gm.MoveError, match='listed twice'):
        gm.plan([guest('a'), guest('a')])


def test_steps_follow_the_method():
    assert gm.steps('shutdown', 30, True)[:2] == ['shutdown (ACPI)', 'wait up to 30 s, then destroy']
    assert gm.steps('shutdown', 30, False)[1] == 'wait up to 30 s, then fail and leave it running'
    managed = gm.steps('managedsave', 30, False)
    assert managed[0].startswith('managedsave') and 'set the partition of the saved image' in managed
    result = gm.plan([guest('a')], method='managedsave')
    assert result['restart'][0]['steps'] == managed


def test_waiting_lists_never_restarted_and_unmoved():
    planned = gm.plan([guest('a'), guest('b'), guest('db'), guest('ok', cgroup=SYSTEMD_GOLD)], never_restart=['db'])
    assert gm.waiting(planned, []) == ['a', 'b', 'db']          # check mode: nothing moved
    assert gm.waiting(planned, ['a']) == ['b', 'db']            # stopped after a
    assert gm.waiting(planned, ['a', 'b']) == ['db']


# -- after the restart --------------------------------------------------------------

ENTRY = {'name': 'vm', 'partition': '/machine/gold', 'slice': 'machine-gold.slice'}


def test_check_restarted():
    assert gm.check_restarted(ENTRY, 10, {'running': True, 'pid': 11, 'cgroup': SYSTEMD_GOLD}) is None
    assert gm.check_restarted(ENTRY, 10, {'running': False, 'pid': None, 'cgroup': None}) == \
        'it has no running QEMU process'
    same = {'running': True, 'pid': 10, 'cgroup': SYSTEMD_GOLD}
    assert 'still the old one (pid 10)' in gm.check_restarted(ENTRY, 10, same)
    assert gm.check_restarted(ENTRY, 10, {'running': True, 'pid': 12, 'cgroup': SYSTEMD_OLD}) == (
        'it runs in cgroup %s, not in its tier partition /machine/gold (slice machine-gold.slice)' % SYSTEMD_OLD)


class Clock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_for_returns_as_soon_as_true():
    clock = Clock()
    answers = iter([False, False, True])
    assert gm.wait_for(lambda: next(answers), 10, clock, clock.sleep) is True
    assert clock.sleeps == [0.5, 0.5]


def test_wait_for_times_out_after_the_timeout_and_asks_at_the_deadline():
    clock = Clock()
    asked = []

    def never():
        asked.append(clock.now)
        return False

    assert gm.wait_for(never, 1.2, clock, clock.sleep) is False
    assert clock.now == pytest.approx(1.2)
    assert asked[-1] == pytest.approx(1.2)


def test_wait_for_zero_timeout_asks_once_more_and_never_sleeps():
    clock = Clock()
    assert gm.wait_for(lambda: False, 0, clock, clock.sleep) is False
    assert clock.sleeps == []


def test_report_lines():
    planned = gm.plan([guest('a'), guest('db'), guest('off', state='shut off')], never_restart=['db'])
    checked = {'planned': planned['restart'], 'moved': [], 'left_alone': planned['left_alone'],
               'waiting': gm.waiting(planned, [])}
    lines = gm.report(checked, check_mode=True)
    assert lines[0].startswith('a: would restart into machine-gold.slice (/machine/gold): shutdown (ACPI)')
    assert 'db: left alone (never restart): listed as never to be restarted' in lines[1]
    assert lines[-1] == 'still outside their tier slice: a, db'
    done = dict(checked, moved=[{'name': 'a', 'pid_before': 1, 'pid_after': 2, 'destroyed': True, 'seconds': 3.0}],
                waiting=['db'])
    lines = gm.report(done)
    assert lines[0] == 'a: restarted into machine-gold.slice, pid 1 -> 2, destroyed after the shutdown timeout (3.0 s)'
    assert lines[-1] == 'still outside their tier slice: db'
    nothing = gm.report({'planned': [], 'moved': [], 'left_alone': [], 'waiting': []})
    assert nothing == ['nothing to move: every running guest runs in its tier slice']
