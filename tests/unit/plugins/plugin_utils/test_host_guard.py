# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host_guard action's decisions, rule by rule."""

from __future__ import annotations

import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.plugin_utils import _host_guard as guard


def test_defaults_come_from_the_kvmlab_variables_then_the_builtin_ones():
    conf = guard.settings({}, {})
    assert conf['state'] == 'acquired' and conf['install_packages'] is True and conf['lock'] is True
    assert conf['lock_path'] == '/run/lock/kvmlab-host-resources.lock'
    assert (conf['lock_timeout'], conf['lock_max_hold']) == (300, 3600)
    conf = guard.settings({}, {'kvmlab_install_packages': 'false', 'kvmlab_host_lock': False,
                               'kvmlab_host_lock_path': '/tmp/l', 'kvmlab_host_lock_timeout': '5'})
    assert (conf['install_packages'], conf['lock'], conf['lock_path'], conf['lock_timeout']) == (False, False, '/tmp/l', 5)


def test_an_argument_wins_over_the_variable():
    variables = {'kvmlab_install_packages': False, 'kvmlab_host_lock_timeout': 5}
    conf = guard.settings({'install_packages': True, 'lock_timeout': 7}, variables)
    assert conf['install_packages'] is True and conf['lock_timeout'] == 7


@pytest.mark.parametrize('args, variables, message', [
    ({'state': 'held'}, {}, "state must be acquired or released, got 'held'"),
    ({'lock_timeout': 'soon'}, {}, "lock_timeout must be a whole number of seconds, got 'soon'"),
    ({}, {'kvmlab_host_lock_timeout': -1}, 'kvmlab_host_lock_timeout must not be negative, got -1'),
    ({}, {'kvmlab_install_packages': 'maybe'}, "kvmlab_install_packages must be a boolean, got 'maybe'"),
    ({'packages': [1]}, {}, 'packages must be a list of names, got [1]'),
    ({'inputs': 'x'}, {}, "inputs must be a mapping, got 'x'"),
    ({'colour': 'red'}, {}, 'unsupported argument: colour'),
    ({}, {'kvmlab_host_lock_path': ''}, 'lock_path must not be empty'),
])
def test_bad_settings_name_the_argument_or_variable(args, variables, message):
    with pytest.raises(guard.GuardError) as info:
        guard.settings(args, variables)
    assert str(info.value).startswith(message)


def test_prerequisites_do_not_require_what_the_install_step_brings():
    conf = guard.settings({'packages': ['python3-libvirt'], 'python_modules': ['libvirt'],
                           'executables': ['systemctl']}, {})
    assert guard.prerequisites_args(conf) == {'systemd': True, 'cgroup2': True, 'cgroup_controllers': ['cpu', 'cpuset'],
                                              'python_modules': [], 'executables': ['systemctl']}
    # without installing, the modules must be there already
    conf = guard.settings({'packages': ['python3-libvirt'], 'python_modules': ['libvirt'], 'install_packages': False}, {})
    assert guard.prerequisites_args(conf)['python_modules'] == ['libvirt']
    # no systemd required: no cgroup v2 either
    conf = guard.settings({'systemd': False}, {})
    assert guard.prerequisites_args(conf)['cgroup2'] is False and guard.prerequisites_args(conf)['cgroup_controllers'] == []


def test_install_only_what_is_asked_and_never_in_check_mode():
    conf = guard.settings({'packages': ['a', 'b']}, {})
    assert guard.install_args(conf, False) == {'name': ['a', 'b'], 'state': 'present'}
    assert guard.install_args(conf, True) is None
    assert guard.install_args(guard.settings({}, {}), False) is None
    assert guard.install_args(guard.settings({'packages': ['a']}, {'kvmlab_install_packages': False}), False) is None


def test_install_only_what_dpkg_lacks_and_no_apt_call_when_all_are_there():
    conf = guard.settings({'packages': ['a', 'b']}, {})
    assert guard.install_args(conf, False, ['b']) == {'name': ['b'], 'state': 'present'}
    assert guard.install_args(conf, False, []) is None
    # unknown (no dpkg database reading): every package goes to apt
    assert guard.install_args(conf, False, None) == {'name': ['a', 'b'], 'state': 'present'}
    assert guard.install_args(conf, True, ['a']) is None


def test_lock_calls():
    conf = guard.settings({'owner': 'lab_host_resource_management apply'}, {'kvmlab_host_lock_timeout': 9})
    assert guard.lock_args(conf, 'run-1-2', 'ops') == {
        'path': '/run/lock/kvmlab-host-resources.lock', 'state': 'acquired', 'token': 'run-1-2',
        'owner': 'ops: lab_host_resource_management apply', 'timeout': 9, 'max_hold': 3600,
        'prerequisites': guard.prerequisites_args(conf), 'installed': []}
    # the same call checks the prerequisites and reads the packages
    conf = guard.settings({'packages': ['python3-libvirt'], 'python_modules': ['libvirt']}, {})
    acquire = guard.lock_args(conf, 'run-1-2', 'ops')
    assert acquire['installed'] == ['python3-libvirt']
    assert acquire['prerequisites'] == guard.prerequisites_args(conf)
    released = guard.settings({'state': 'released'}, {})
    assert guard.lock_args(released, 'run-1-2', None) == {
        'path': '/run/lock/kvmlab-host-resources.lock', 'state': 'released', 'token': 'run-1-2'}
    assert guard.lock_args(guard.settings({'lock': False}, {}), 't', 'ops') is None


def test_run_token_is_the_main_process_pid_and_start(tmp_path):
    proc = tmp_path / 'proc'
    (proc / '4242').mkdir(parents=True)
    # a command name with spaces and parentheses; field 22 (starttime) is 98765
    fields = ['S'] + [str(n) for n in range(4, 22)] + ['98765', '0']
    (proc / '4242' / 'stat').write_text('4242 (ansible (pb) x) %s\n' % ' '.join(fields))
    assert guard.process_start(4242, str(proc)) == '98765'
    token = guard.run_token(4242, str(proc))
    assert token.startswith('run-4242-') and len(token) == len('run-4242-') + 20 and len(token) >= 16
    # another start time of the same pid (a reused pid) is another run
    (proc / '4242' / 'stat').write_text('4242 (ansible (pb) x) %s\n' % ' '.join(fields).replace('98765', '98766'))
    assert guard.run_token(4242, str(proc)) != token
    assert guard.run_token(4243, str(proc)).startswith('run-4243-')


def test_run_token_of_this_process_is_stable():
    assert guard.run_token(os.getpid()) == guard.run_token(os.getpid())
    assert guard.process_start(os.getpid()) is not None


def test_controller_user(monkeypatch):
    monkeypatch.setenv('USER', 'ops')
    assert guard.controller_user() == 'ops'
    monkeypatch.delenv('USER')
    monkeypatch.delenv('LOGNAME', raising=False)
    assert guard.controller_user()


def test_module_guard_is_the_lock_call_without_state_and_stops_only_for_packages_this_run_installs():
    conf = guard.settings({'owner': 'shared_execution_pool present placement', 'packages': ['python3-libvirt'],
                           'python_modules': ['libvirt'], 'systemd': False}, {'kvmlab_host_lock_timeout': 9})
    made = guard.module_guard(conf, 'run-1-' + 'a' * 20, 'ops', check_mode=False)
    assert set(made) == {'path', 'token', 'owner', 'timeout', 'max_hold', 'prerequisites', 'installed'}
    assert made['owner'] == 'ops: shared_execution_pool present placement' and made['timeout'] == 9
    assert made['installed'] == ['python3-libvirt']
    # the install step brings libvirt: not required before it (as for the guard task)
    assert made['prerequisites']['python_modules'] == []
    # check mode installs nothing, so nothing stops the module for a package
    assert guard.module_guard(conf, 'run-1-' + 'a' * 20, 'ops', check_mode=True)['installed'] == []
    # installs off: the missing package is the prerequisites' to report (libvirt required)
    off = guard.module_guard(dict(conf, install_packages=False), 'run-1-' + 'a' * 20, 'ops', check_mode=False)
    assert off['installed'] == [] and off['prerequisites']['python_modules'] == ['libvirt']
    # the lock off: the prerequisites (and the packages) only
    unlocked = guard.module_guard(dict(conf, lock=False), 'run-1-' + 'a' * 20, 'ops', check_mode=False)
    assert set(unlocked) == {'prerequisites', 'installed'} and unlocked['installed'] == ['python3-libvirt']


class Host(object):
    """The module calls of one run_guarded, answered in order; dpkg lacks ``missing`` until apt installs it."""

    def __init__(self, missing, apt=None, installs=True):
        self.missing = list(missing)
        self.apt = apt or {'changed': True}
        self.installs = installs
        self.calls = []

    def __call__(self, name, args):
        self.calls.append((name, args))
        if name == 'ansible.builtin.apt':
            if self.installs and not self.apt.get('failed'):
                self.missing = []
            return dict(self.apt)
        if self.missing:
            return {'changed': False, 'guard': {'not_installed': list(self.missing)}}
        return {'changed': True, 'guard': {'not_installed': []}, 'guests': ['g0']}


CONF = guard.settings({'packages': ['python3-libvirt', 'systemd-container']}, {})
ARGS = {'state': 'present', 'guard': {'installed': ['python3-libvirt', 'systemd-container']}}


def test_run_guarded_calls_once_when_nothing_is_missing():
    host = Host([])
    out = guard.run_guarded(host, 'ns.c.execution_pool', ARGS, CONF, False)
    assert [name for name, _args in host.calls] == ['ns.c.execution_pool'] and out['guests'] == ['g0']


def test_run_guarded_installs_what_dpkg_lacks_then_calls_again():
    host = Host(['systemd-container'])
    out = guard.run_guarded(host, 'ns.c.execution_pool', ARGS, CONF, False)
    assert [name for name, _args in host.calls] == ['ns.c.execution_pool', 'ansible.builtin.apt', 'ns.c.execution_pool']
    assert host.calls[1][1] == {'name': ['systemd-container'], 'state': 'present'}
    assert out['changed'] is True and out['guests'] == ['g0'] and out['guard']['installed'] == {'changed': True}


def test_run_guarded_fails_naming_the_packages_when_apt_fails_and_calls_no_more():
    host = Host(['python3-libvirt'], apt={'failed': True, 'msg': 'no network'})
    out = guard.run_guarded(host, 'ns.c.execution_pool', ARGS, CONF, False)
    assert out['failed'] is True and out['msg'] == 'cannot install python3-libvirt: no network'
    assert [name for name, _args in host.calls] == ['ns.c.execution_pool', 'ansible.builtin.apt']


def test_run_guarded_fails_when_apt_leaves_the_package_missing():
    host = Host(['python3-libvirt'], apt={'changed': False}, installs=False)
    out = guard.run_guarded(host, 'ns.c.execution_pool', ARGS, CONF, False)
    assert out['failed'] is True
    assert out['msg'] == 'apt installed nothing of python3-libvirt: dpkg still lacks python3-libvirt'


def test_run_guarded_never_installs_in_check_mode_or_when_installs_are_off():
    for conf, check_mode in ((CONF, True), (dict(CONF, install_packages=False), False)):
        host = Host(['python3-libvirt'])
        out = guard.run_guarded(host, 'ns.c.execution_pool', ARGS, conf, check_mode)
        assert out['failed'] is True and 'may not install: python3-libvirt' in out['msg']
        assert [name for name, _args in host.calls] == ['ns.c.execution_pool']


def test_a_failed_module_is_returned_as_it_is():
    def call(name, args):
        return {'failed': True, 'msg': 'pools: pools.guest_domain is empty', 'guard': {'not_installed': ['x']}}
    assert guard.run_guarded(call, 'm', ARGS, CONF, False)['msg'] == 'pools: pools.guest_domain is empty'
