# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils._services: running services, their affinity, and which ones host_cpu_reserve restarts."""

from __future__ import annotations

import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _services as svc
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import SystemdConfigError

R = frozenset([0, 1, 4, 5])
ALL = frozenset(range(8))

LISTING = """\
cron.service      loaded active running Regular background program processing daemon
ssh.service       loaded active running OpenBSD Secure Shell server
systemd-journald.service loaded active running Journal Service

"""


def show(*blocks):
    return '\n'.join('Id=%s\nMainPID=%s\n' % block for block in blocks)


def entry(unit, cpus, pid=100):
    return {'unit': unit, 'main_pid': pid, 'cpus_allowed': cpus, 'matches': cpus == '0-1,4-5'}


# -- listing and affinities ---------------------------------------------------

def test_parse_listing_takes_the_first_column_and_skips_blank_lines():
    assert svc.parse_listing(LISTING) == ['cron.service', 'ssh.service', 'systemd-journald.service']
    assert svc.parse_listing('') == [] and svc.parse_listing(None) == []


def test_list_command():
    assert svc.list_command('/usr/bin/systemctl') == [
        '/usr/bin/systemctl', 'list-units', '--type=service', '--state=running', '--no-legend', '--plain', '--no-pager']


def test_service_affinities_compares_each_main_process_with_expected():
    units = ['cron.service', 'ssh.service']
    shown = {'cron.service': {'Id': 'cron.service', 'MainPID': '410'},
             'ssh.service': {'Id': 'ssh.service', 'MainPID': '412'}}
    affinity = {410: R, 412: ALL}
    services = svc.service_affinities(units, shown, affinity.get, R)
    assert services == [{'unit': 'cron.service', 'main_pid': 410, 'cpus_allowed': '0-1,4-5', 'matches': True},
                        {'unit': 'ssh.service', 'main_pid': 412, 'cpus_allowed': '0-7', 'matches': False}]
    assert svc.stale_units(services) == ['ssh.service']


@pytest.mark.parametrize('main_pid', ['0', '', 'garbage', '-3'])
def test_service_affinities_leaves_out_services_without_a_main_process(main_pid):
    shown = {'oneshot.service': {'Id': 'oneshot.service', 'MainPID': main_pid}}
    assert svc.service_affinities(['oneshot.service'], shown, lambda pid: ALL, R) == []


def test_service_affinities_leaves_out_a_process_that_ended():
    shown = {'gone.service': {'Id': 'gone.service', 'MainPID': '999'}}
    assert svc.service_affinities(['gone.service'], shown, lambda pid: None, R) == []


def write_status(proc, pid, cpus):
    os.makedirs(os.path.join(proc, str(pid)))
    with open(os.path.join(proc, str(pid), 'status'), 'w') as handle:
        handle.write('Name:\tx\nPid:\t%d\nCpus_allowed_list:\t%s\n' % (pid, cpus))


def test_proc_reader_reads_procfs_and_returns_none_for_gone_or_corrupt(tmp_path):
    proc = str(tmp_path)
    write_status(proc, 410, '0-1,4-5')
    os.makedirs(os.path.join(proc, '411'))  # the process ended: its directory without status
    write_status(proc, 412, '0-1,,4')
    read = svc.proc_reader(proc)
    assert read(410) == R
    assert read(411) is None and read(412) is None and read(413) is None


def test_read_services_runs_list_units_then_one_show(tmp_path):
    proc = str(tmp_path)
    write_status(proc, 410, '0-1,4-5')
    write_status(proc, 412, '0-7')
    calls = []

    def run(args):
        calls.append(args)
        if args[1] == 'list-units':
            return 'cron.service loaded active running cron\nssh.service loaded active running ssh\n'
        return show(('cron.service', 410), ('ssh.service', 412))

    services = svc.read_services(run, 'systemctl', R, proc)
    assert [c[1] for c in calls] == ['list-units', 'show']
    assert calls[1][-3:] == ['--', 'cron.service', 'ssh.service'] and 'Id,MainPID' in calls[1]
    assert svc.stale_units(services) == ['ssh.service']


def test_read_services_with_nothing_running_runs_no_show():
    calls = []

    def run(args):
        calls.append(args)
        return ''

    assert svc.read_services(run, 'systemctl', R) == [] and len(calls) == 1


def test_read_services_refuses_a_show_that_does_not_match_the_listing():
    def run(args):
        return 'a.service loaded active running a\nb.service loaded active running b\n' \
            if args[1] == 'list-units' else show(('a.service', 1))

    with pytest.raises(SystemdConfigError, match='1 blocks for 2 units'):
        svc.read_services(run, 'systemctl', R)


# -- names --------------------------------------------------------------------

@pytest.mark.parametrize('name,unit', [
    ('ssh', 'ssh.service'),
    ('ssh.service', 'ssh.service'),
    ('getty@tty1', 'getty@tty1.service'),
    ('foo.bar', 'foo.bar.service'),
    ('cups.socket', 'cups.socket'),
])
def test_unit_name(name, unit):
    assert svc.unit_name(name) == unit


@pytest.mark.parametrize('name', ['', ' ', ' ssh', 'ssh service', None])
def test_unit_name_refuses_what_is_not_a_name(name):
    with pytest.raises(svc.ServicesError, match='restart_services: .* is not a unit name'):
        svc.unit_name(name)


# -- the decision, rule by rule -----------------------------------------------

def test_stale_and_named_is_restarted():
    plan = svc.restart_plan([entry('ssh.service', '0-7')], ['ssh.service'])
    assert plan == {'restart': ['ssh.service'], 'stale': [], 'not_running': []}


def test_named_without_suffix_is_the_service():
    assert svc.restart_plan([entry('ssh.service', '0-7')], ['ssh'])['restart'] == ['ssh.service']


def test_stale_and_not_named_is_reported():
    plan = svc.restart_plan([entry('cron.service', '0-7'), entry('ssh.service', '0-7')], ['ssh.service'])
    assert plan == {'restart': ['ssh.service'], 'stale': ['cron.service'], 'not_running': []}


def test_matching_is_left_alone_named_or_not():
    services = [entry('cron.service', '0-1,4-5'), entry('ssh.service', '0-1,4-5')]
    assert svc.restart_plan(services, ['ssh.service']) == {'restart': [], 'stale': [], 'not_running': []}
    assert svc.restart_plan(services, []) == {'restart': [], 'stale': [], 'not_running': []}


def test_named_but_not_running_is_nothing_and_no_error():
    plan = svc.restart_plan([entry('cron.service', '0-7')], ['nosuch.service', 'nosuch'])
    assert plan == {'restart': [], 'stale': ['cron.service'], 'not_running': ['nosuch.service']}


def test_nothing_running_nothing_named():
    assert svc.restart_plan([], None) == {'restart': [], 'stale': [], 'not_running': []}


def test_restart_order_follows_the_listing_and_names_are_deduplicated():
    services = [entry('a.service', '0-7'), entry('b.service', '0-7')]
    assert svc.restart_plan(services, ['b', 'a.service', 'b.service'])['restart'] == ['a.service', 'b.service']


def test_check_mode_prediction_is_the_same_comparison_before_the_reserve_is_in_place():
    # before the apply every service runs on every CPU: a named one would be restarted, the others stay stale
    before_apply = [entry('cron.service', '0-7'), entry('ssh.service', '0-7')]
    prediction = svc.restart_plan(before_apply, ['ssh.service'])
    assert prediction['restart'] == ['ssh.service'] and prediction['stale'] == ['cron.service']
    lines = svc.report_lines(prediction['stale'], prediction['restart'], prediction['not_running'], check=True)
    assert lines == ['running services that keep their old affinity until restarted: cron.service',
                     'would restart: ssh.service']


def test_after_restart_reports_what_is_still_stale():
    plan = svc.restart_plan([entry('cron.service', '0-7'), entry('ssh.service', '0-7'),
                             entry('x.service', '0-7')], ['ssh.service', 'x.service'])
    after = [entry('cron.service', '0-7'), entry('ssh.service', '0-1,4-5', pid=200),
             entry('x.service', '0-7', pid=201)]
    assert svc.after_restart(plan, after) == {'stale': ['cron.service', 'x.service'], 'still_stale': ['x.service']}


def test_report_lines():
    assert svc.report_lines([], [], []) == ['running services that keep their old affinity until restarted: none']
    assert svc.report_lines(['a.service', 'b.service'], ['c.service'], ['d.service']) == [
        'running services that keep their old affinity until restarted: a.service, b.service',
        'restarted: c.service',
        'named in restart_services but not running: d.service']
