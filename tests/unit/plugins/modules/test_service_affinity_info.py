# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""service_affinity_info on a fake host: a /proc tree in a temp dir and a fake systemctl."""

from __future__ import annotations

import os

import pytest

from ansible.module_utils import basic
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

from ansible_collections.kvmlab.host_resources.plugins.modules import service_affinity_info as mod

SYSTEMCTL = '/usr/bin/systemctl'


class FakeHost(object):
    def __init__(self, root):
        self.proc = str(root)
        self.services = []  # (unit, main pid)
        self.calls = []
        self.show_blocks = None  # a show output that does not match the listing

    def add(self, unit, pid, cpus=None):
        self.services.append((unit, pid))
        if cpus is not None:
            os.makedirs(os.path.join(self.proc, str(pid)))
            with open(os.path.join(self.proc, str(pid), 'status'), 'w') as handle:
                handle.write('Name:\tx\nPid:\t%d\nCpus_allowed_list:\t%s\n' % (pid, cpus))

    def run_command(self, args, **kwargs):
        assert kwargs.get('environ_update', {}).get('LC_ALL') == 'C'
        self.calls.append(args)
        assert args[0] == SYSTEMCTL
        if args[1] == 'list-units':
            return 0, ''.join('%s loaded active running %s\n' % (unit, unit) for unit, _pid in self.services), ''
        if args[1] == 'show':
            services = self.services if self.show_blocks is None else self.services[:self.show_blocks]
            return 0, '\n'.join('Id=%s\nMainPID=%d\n' % item for item in services), ''
        raise AssertionError('unexpected command %r' % (args,))


@pytest.fixture
def host(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda module, args, **kw: fake.run_command(args, **kw))
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda module, name, required=False, **kw: SYSTEMCTL)
    return fake


def run(host, expected='0-1,4-5', check=False):
    return run_module(mod.main, {'expected': expected, 'proc_root': host.proc}, check_mode=check)


def test_lists_running_services_and_names_the_stale_ones(host):
    host.add('cron.service', 410, '0-1,4-5')
    host.add('ssh.service', 412, '0-7')
    host.add('oneshot.service', 0)  # no main process
    host.add('gone.service', 413)  # ended between the listing and the read
    result = run(host, expected='5,4,0-1')
    assert result['changed'] is False
    assert result['expected'] == '0-1,4-5'
    assert result['services'] == [
        {'unit': 'cron.service', 'main_pid': 410, 'cpus_allowed': '0-1,4-5', 'matches': True},
        {'unit': 'ssh.service', 'main_pid': 412, 'cpus_allowed': '0-7', 'matches': False}]
    assert result['stale'] == ['ssh.service']
    assert [call[1] for call in host.calls] == ['list-units', 'show']


def test_check_mode_reads_the_same(host):
    host.add('ssh.service', 412, '0-7')
    assert run(host, check=True)['stale'] == ['ssh.service']


def test_nothing_running(host):
    result = run(host)
    assert result['services'] == [] and result['stale'] == []
    assert [call[1] for call in host.calls] == ['list-units']


@pytest.mark.parametrize('expected,needle', [('0-1,,4', 'expected'), ('', 'expected is empty')])
def test_bad_expected_fails_clearly(host, expected, needle):
    result = run(host, expected=expected)
    assert result['failed'] and needle in result['msg'] and host.calls == []


def test_show_that_does_not_match_the_listing_fails_clearly(host):
    host.add('a.service', 410, '0-7')
    host.add('b.service', 411, '0-7')
    host.show_blocks = 1
    result = run(host)
    assert result['failed'] and 'systemctl show returned 1 blocks for 2 units' in result['msg']
