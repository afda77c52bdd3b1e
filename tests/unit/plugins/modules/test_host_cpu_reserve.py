# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_cpu_reserve on a fake host: a /proc tree, files under a temp root and a fake systemctl.

The fake manager behaves as systemd 252 does (HARNESS.md section 4):
``daemon-reload`` applies a ``CPUAffinity=`` found in the manager drop-in
directory to PID 1, and removing the drop-in leaves PID 1 as it is. Its
running services have a main process in the /proc tree; ``restart`` gives a
service a new main process with PID 1's affinity (or, for a service whose
slice confines it, the slice's CPUs).
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible.module_utils import basic
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import patch_module_args

from ansible_collections.kvmlab.host_resources.plugins.modules import host_cpu_reserve as mod
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _systemd as sd

SYSTEMCTL = '/usr/bin/systemctl'
TASKSET = '/usr/bin/taskset'
UPDATE_GRUB = '/usr/sbin/update-grub'
R = '0-1,4-5'


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


class FakeHost(object):
    def __init__(self, root):
        self.root = str(root)
        self.proc = os.path.join(self.root, 'proc')
        os.makedirs(os.path.join(self.proc, '1', 'task', '1'))
        with open(os.path.join(self.proc, 'cmdline'), 'w') as handle:
            handle.write('BOOT_IMAGE=/vmlinuz root=/dev/vda rw\0')
        self.online_path = os.path.join(self.root, 'online')
        with open(self.online_path, 'w') as handle:
            handle.write('0-7\n')
        self.set_pid1('0-7')
        self.etc = os.path.join(self.root, 'etc')
        self.unit_dir = os.path.join(self.etc, 'systemd', 'system')
        os.makedirs(self.unit_dir)
        self.dropin = os.path.join(self.etc, 'systemd', 'system.conf.d', '90-kvmlab-host-resource-management.conf')
        self.grub = os.path.join(self.etc, 'default', 'grub.d', '90-kvmlab.cfg')
        self.irqbalance = os.path.join(self.etc, 'default', 'irqbalance')
        self.snapshot = os.path.join(self.root, 'var', 'lib', 'kvmlab', 'snapshots', 'host-resource-management.json')
        self.cgroup = os.path.join(self.root, 'cgroup')
        os.makedirs(self.cgroup)
        self.calls = []
        self.reload_applies = True
        self.slices = {}
        self.services = {}
        self.next_pid = 400
        self.missing = set()
        self.warnings = []

    # -- PID 1 -------------------------------------------------------------

    def set_pid1(self, cpus):
        with open(os.path.join(self.proc, '1', 'status'), 'w') as handle:
            handle.write('Name:\tsystemd\nPid:\t1\nCpus_allowed_list:\t%s\n' % cpus)

    def pid1(self):
        with open(os.path.join(self.proc, '1', 'status')) as handle:
            return handle.read().split('Cpus_allowed_list:\t')[1].strip()

    # -- services ----------------------------------------------------------

    def add_service(self, name, cpus, confined=None):
        """A running service whose main process runs on ``cpus``; ``confined``: its slice's CPUs after a restart."""
        self.next_pid += 1
        pid = self.next_pid
        os.makedirs(os.path.join(self.proc, str(pid)))
        with open(os.path.join(self.proc, str(pid), 'status'), 'w') as handle:
            handle.write('Name:\t%s\nPid:\t%d\nCpus_allowed_list:\t%s\n' % (name.split('.')[0], pid, cpus))
        self.services[name] = {'pid': pid, 'confined': confined}
        return pid

    def service_cpus(self, name):
        pid = self.services[name]['pid']
        with open(os.path.join(self.proc, str(pid), 'status')) as handle:
            return handle.read().split('Cpus_allowed_list:\t')[1].strip()

    def restart(self, name):
        old = self.services.pop(name)
        os.remove(os.path.join(self.proc, str(old['pid']), 'status'))
        os.rmdir(os.path.join(self.proc, str(old['pid'])))
        self.add_service(name, old['confined'] or self.pid1(), old['confined'])

    # -- slices ------------------------------------------------------------

    def add_slice(self, name, weight='', allowed='', cgroup_weight=None, cpuset='', effective='0-7', active=True):
        path = '/' + name if name in ('system.slice', 'user.slice') else '/machine.slice/' + name
        self.slices[name] = {'weight': weight, 'allowed': allowed, 'active': active, 'cgroup': path}
        directory = os.path.join(self.cgroup, path.lstrip('/'))
        if not os.path.isdir(directory):
            os.makedirs(directory)
        files = {'cpuset.cpus': cpuset, 'cpuset.cpus.effective': effective, 'cgroup.events': 'populated 0'}
        if cgroup_weight is not None:
            files['cpu.weight'] = str(cgroup_weight)
        for fname, text in files.items():
            with open(os.path.join(directory, fname), 'w') as handle:
                handle.write(text + '\n')

    def _show(self, name):
        if name in self.services:
            return 'Id=%s\nMainPID=%d\n' % (name, self.services[name]['pid'])
        unit = self.slices.get(name)
        if unit is None:
            return 'Id=%s\nLoadState=loaded\nActiveState=inactive\nControlGroup=\nCPUWeight=[not set]\n' % name
        fragment = os.path.join(self.unit_dir, name)
        if not os.path.exists(fragment):
            fragment = '/usr/lib/systemd/system/' + name if name in ('system.slice', 'user.slice') else ''
        return ('Id=%s\nLoadState=loaded\nActiveState=%s\nTransient=no\nFragmentPath=%s\nDropInPaths=\n'
                'ControlGroup=%s\nCPUAccounting=yes\nCPUWeight=%s\nCPUQuotaPerSecUSec=infinity\nAllowedCPUs=%s\n'
                % (name, 'active' if unit['active'] else 'inactive', fragment,
                   unit['cgroup'] if unit['active'] else '', unit['weight'] or '[not set]',
                   unit['allowed'].replace(',', ' ')))

    # -- commands ----------------------------------------------------------

    def run_command(self, module, args, **kwargs):
        assert isinstance(args, list)
        assert kwargs.get('environ_update', {}).get('LC_ALL') == 'C'
        self.calls.append(args)
        if args[0] == UPDATE_GRUB:
            return 0, '', ''
        assert args[0] == SYSTEMCTL
        verb = args[1]
        if verb == 'show':
            names = args[args.index('--') + 1:]
            return 0, '\n'.join(self._show(name) for name in names), ''
        if verb == 'daemon-reload':
            conf_dir = os.path.dirname(self.dropin)
            if self.reload_applies and os.path.isdir(conf_dir):
                for fname in sorted(os.listdir(conf_dir)):
                    with open(os.path.join(conf_dir, fname)) as handle:
                        for line in handle:
                            if line.startswith('CPUAffinity='):
                                self.set_pid1(line.split('=', 1)[1].strip())
            return 0, '', ''
        if verb == 'list-units':
            assert args[2:] == ['--type=service', '--state=running', '--no-legend', '--plain', '--no-pager']
            return 0, ''.join('%s loaded active running %s\n' % (name, name) for name in self.services), ''
        if verb == 'restart':
            names = args[args.index('--') + 1:]
            for name in names:
                if name not in self.services:
                    return 5, '', 'Failed to restart %s: Unit %s not found.\n' % (name, name)
            for name in names:
                self.restart(name)
            return 0, '', ''
        if verb in ('try-restart', 'stop'):
            return 0, '', ''
        raise AssertionError('unexpected command %r' % (args,))

    def changing_calls(self):
        return [call[1:] if call[0] == SYSTEMCTL else call for call in self.calls
                if call[0] != SYSTEMCTL or call[1] not in ('show', 'list-units')]


@pytest.fixture
def host(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path)

    def exit_json(module, **kwargs):
        raise ExitJson(kwargs)

    def fail_json(module, **kwargs):
        kwargs['failed'] = True
        raise FailJson(kwargs)

    def get_bin_path(module, name, required=False, **kwargs):
        path = {'systemctl': SYSTEMCTL, 'taskset': TASKSET, 'update-grub': UPDATE_GRUB}.get(name)
        if name in fake.missing:
            path = None
        if path is None and required:
            module.fail_json(msg='%s not found' % name)
        return path

    def set_affinity(pid, cpus):
        assert pid == 1
        from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist
        fake.set_pid1(format_cpulist(cpus))

    def run_command(module, args, **kwargs):
        return fake.run_command(module, args, **kwargs)

    def warn(module, msg):
        fake.warnings.append(msg)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', get_bin_path)
    monkeypatch.setattr(basic.AnsibleModule, 'warn', warn)
    monkeypatch.setattr(mod, 'PROC_ROOT', fake.proc)
    monkeypatch.setattr(mod, 'ONLINE_CPUS_PATH', fake.online_path)
    monkeypatch.setattr(mod, 'CGROUP_ROOT', fake.cgroup)
    monkeypatch.setattr(mod, 'set_affinity', set_affinity)
    fake.base = {'manager_dropin': fake.dropin, 'boot_unit_dir': fake.unit_dir, 'grub_dropin': fake.grub,
                 'irqbalance_config': fake.irqbalance, 'slice_unit_dir': fake.unit_dir}
    return fake


def run(host, check=False, diff=False, **args):
    params = dict(host.base)
    params.update(args)
    params['_ansible_check_mode'] = check
    params['_ansible_diff'] = diff
    host.calls = []
    with patch_module_args(params):
        with pytest.raises((ExitJson, FailJson)) as info:
            mod.main()
    result = info.value.args[0]
    json.dumps(result)
    return result


def apply(host, **args):
    params = {'host_reserved': R, 'snapshot_path': host.snapshot}
    params.update(args)
    return run(host, **params)


def tree(root):
    found = []
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(base, name), root))
    return sorted(found)


def boot_unit(host):
    return os.path.join(host.unit_dir, 'kvmlab-host-cpu-reserve.service')


def boot_wants(host):
    return os.path.join(host.unit_dir, 'multi-user.target.d', '90-kvmlab-host-cpu-reserve.conf')


# -- present ------------------------------------------------------------------

def test_check_mode_predicts_and_changes_nothing(host):
    before = tree(host.root)
    result = apply(host, check=True, diff=True)
    assert result['changed'] is True
    assert tree(host.root) == before
    assert host.changing_calls() == []
    assert result['commands'] == [[SYSTEMCTL, 'daemon-reload']]
    assert result['pid1'] == {'before': '0-7', 'after': R, 'wanted': R}
    assert result['snapshot']['written'] is True and result['snapshot']['exists'] is True
    diffs = dict((d['after_header'], d['after']) for d in result['diff'])
    assert 'CPUAffinity=0-1,4-5' in diffs[host.dropin]
    assert diffs['PID 1 Cpus_allowed_list'] == R + '\n'
    assert 'would write snapshot %s' % host.snapshot in result['report']


def test_apply_snapshots_first_then_idempotent(host):
    result = apply(host, slices=[{'name': 'machine-gold.slice', 'cpu_weight': 512}])
    assert result['changed'] is True
    assert host.pid1() == R
    assert host.changing_calls() == [['daemon-reload']]
    assert [f['action'] for f in result['files']] == ['write', 'write', 'write']
    with open(host.dropin) as handle:
        assert 'CPUAffinity=0-1,4-5\n' in handle.read()
    with open(boot_unit(host)) as handle:
        text = handle.read()
    assert 'ExecStart=/usr/bin/taskset --all-tasks --cpu-list --pid 0-1,4-5 1' in text
    assert 'Wants=machine-gold.slice' in text
    assert os.path.exists(boot_wants(host))
    # the snapshot: root only, the stock state
    assert stat.S_IMODE(os.stat(host.snapshot).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(host.snapshot)).st_mode) == 0o700
    data = snap.load(host.snapshot, 'host_resource_management')
    assert data['values'] == {'pid1_cpus_allowed': '0-7', 'online_cpus': '0-7'}
    assert data['files'][host.dropin] == {'exists': False}
    assert data['dirs'][os.path.dirname(host.dropin)] == {'exists': False}
    assert data['dirs'][os.path.dirname(os.path.dirname(host.snapshot))] == {'exists': False}

    again = apply(host, slices=[{'name': 'machine-gold.slice', 'cpu_weight': 512}])
    assert again['changed'] is False
    assert host.changing_calls() == []
    assert again['snapshot']['written'] is False and again['snapshot']['created'] == data['created']


def test_snapshot_is_never_overwritten(host):
    apply(host)
    first = open(host.snapshot).read()
    apply(host, host_reserved='0-3')
    assert open(host.snapshot).read() == first


def test_pid1_reset_after_boot_is_fixed_by_reload(host):
    apply(host)
    host.set_pid1('0-7')  # the cpuset controller reset it
    result = apply(host)
    assert result['changed'] is True and host.changing_calls() == [['daemon-reload']]
    assert result['pid1'] == {'before': '0-7', 'after': R, 'wanted': R}


def test_reload_that_does_not_apply_fails_clearly(host):
    host.reload_applies = False
    result = apply(host)
    assert result['failed']
    assert 'PID 1 runs on 0-7 after daemon-reload, not host_reserved 0-1,4-5' in result['msg']


def test_without_boot_unit(host):
    result = apply(host, boot_unit=False)
    assert [f['path'] for f in result['files']] == [host.dropin]
    assert not os.path.exists(boot_unit(host))


def test_taskset_missing_fails_before_changes(host):
    host.missing.add('taskset')
    result = apply(host)
    assert result['failed'] and 'taskset (util-linux) is not installed' in result['msg']
    assert not os.path.exists(host.dropin) and not os.path.exists(host.snapshot)


@pytest.mark.parametrize('reserved,needle', [
    ('0-9', 'not online: 8-9'),
    ('0-1,,4-5', 'host_reserved'),
    ('', 'host_reserved is required'),
])
def test_bad_reserve_fails_before_anything(host, reserved, needle):
    result = apply(host, host_reserved=reserved)
    assert result['failed'] and needle in result['msg']
    assert host.calls == [] and not os.path.exists(host.snapshot)


def test_opt_in_grub_and_irqbalance(host):
    os.makedirs(os.path.dirname(host.irqbalance))
    with open(host.irqbalance, 'w') as handle:
        handle.write('#IRQBALANCE_BANNED_CPULIST=\nOPTIONS=""\n')
    result = apply(host, kernel_args=True, host_housekeeping='0,4', irqbalance_ban=True, guest_domain='2-3,6-7')
    assert host.changing_calls() == [['daemon-reload'], [UPDATE_GRUB], ['try-restart', 'irqbalance.service']]
    with open(host.grub) as handle:
        assert 'systemd.cpu_affinity=0-1,4-5 irqaffinity=0,4' in handle.read()
    with open(host.irqbalance) as handle:
        assert handle.read() == 'IRQBALANCE_BANNED_CPULIST=2-3,6-7\nOPTIONS=""\n'
    assert result['changed']
    again = apply(host, kernel_args=True, host_housekeeping='0,4', irqbalance_ban=True, guest_domain='2-3,6-7')
    assert again['changed'] is False and host.changing_calls() == []

    restored = run(host, state='restored', snapshot_path=host.snapshot)
    assert restored['changed'] is True
    assert [UPDATE_GRUB] in host.changing_calls() and ['try-restart', 'irqbalance.service'] in host.changing_calls()
    with open(host.irqbalance) as handle:
        assert handle.read() == '#IRQBALANCE_BANNED_CPULIST=\nOPTIONS=""\n'
    assert not os.path.exists(host.grub) and not os.path.exists(os.path.dirname(host.grub))


def test_kernel_args_need_housekeeping(host):
    result = apply(host, kernel_args=True)
    assert result['failed'] and 'host_housekeeping' in result['msg']


# -- restart_services -----------------------------------------------------------

STALE_LINE = 'running services that keep their old affinity until restarted: '


def test_apply_restarts_the_stale_services_named_and_reports_the_others(host):
    host.add_service('cron.service', '0-7')
    old_ssh = host.add_service('ssh.service', '0-7')
    host.add_service('systemd-journald.service', R)
    result = apply(host, restart_services=['ssh', 'systemd-journald.service'], diff=True)
    assert result['changed'] is True
    assert host.changing_calls() == [['daemon-reload'], ['restart', '--', 'ssh.service']]
    assert result['commands'][-1] == [SYSTEMCTL, 'restart', '--', 'ssh.service']
    # the new main process got PID 1's new affinity; the stale service not named kept its own
    assert host.services['ssh.service']['pid'] != old_ssh and host.service_cpus('ssh.service') == R
    assert host.service_cpus('cron.service') == '0-7'
    assert result['restarted_services'] == ['ssh.service']
    assert result['stale_services'] == ['cron.service']
    assert STALE_LINE + 'cron.service' in result['report'] and 'restarted: ssh.service' in result['report']
    diffs = dict((d['after_header'], d) for d in result['diff'])
    assert diffs['restarted services Cpus_allowed_list']['before'] == 'ssh.service 0-7\n'
    assert diffs['restarted services Cpus_allowed_list']['after'] == 'ssh.service %s\n' % R
    assert host.warnings == []

    again = apply(host, restart_services=['ssh', 'systemd-journald.service'])
    assert again['changed'] is False and host.changing_calls() == []
    assert again['restarted_services'] == [] and again['stale_services'] == ['cron.service']
    assert not any(line.startswith('restarted') for line in again['report'])


def test_a_restart_alone_is_a_change(host):
    apply(host)
    host.add_service('ssh.service', '0-7')  # started before the apply ran, say, from a stock unit
    result = apply(host, restart_services=['ssh.service'])
    assert all(f['action'] == 'keep' for f in result['files']) and result['snapshot']['written'] is False
    assert result['changed'] is True and host.changing_calls() == [['restart', '--', 'ssh.service']]
    assert result['restarted_services'] == ['ssh.service'] and result['stale_services'] == []


def test_stale_services_not_named_are_reported_and_left_running(host):
    pid = host.add_service('cron.service', '0-7')
    result = apply(host)
    assert host.changing_calls() == [['daemon-reload']]
    assert result['stale_services'] == ['cron.service'] and result['restarted_services'] == []
    assert host.services['cron.service']['pid'] == pid
    assert STALE_LINE + 'cron.service' in result['report']


def test_matching_or_not_running_named_services_are_left_alone(host):
    pid = host.add_service('ssh.service', R)
    result = apply(host, restart_services=['ssh.service', 'nosuch.service'])
    assert 'failed' not in result
    assert host.changing_calls() == [['daemon-reload']] and host.services['ssh.service']['pid'] == pid
    assert result['restarted_services'] == [] and result['stale_services'] == []
    assert STALE_LINE + 'none' in result['report']
    assert 'named in restart_services but not running: nosuch.service' in result['report']


def test_check_mode_predicts_the_restart_and_restarts_nothing(host):
    host.add_service('cron.service', '0-7')
    pid = host.add_service('ssh.service', '0-7')
    before = tree(host.root)
    result = apply(host, check=True, diff=True, restart_services=['ssh.service'])
    assert tree(host.root) == before and host.changing_calls() == []
    assert host.services['ssh.service']['pid'] == pid and host.service_cpus('ssh.service') == '0-7'
    assert result['changed'] is True
    assert result['commands'] == [[SYSTEMCTL, 'daemon-reload'], [SYSTEMCTL, 'restart', '--', 'ssh.service']]
    assert result['restarted_services'] == ['ssh.service'] and result['stale_services'] == ['cron.service']
    assert 'would restart: ssh.service' in result['report']
    diffs = dict((d['after_header'], d) for d in result['diff'])
    assert diffs['restarted services Cpus_allowed_list']['after'] == 'ssh.service %s\n' % R


def test_check_mode_on_an_applied_host_with_matching_services_predicts_no_change(host):
    apply(host)
    host.add_service('ssh.service', R)
    result = apply(host, check=True, restart_services=['ssh.service'])
    assert result['changed'] is False and result['commands'] == []
    assert result['restarted_services'] == [] and result['stale_services'] == []


def test_a_restarted_service_its_slice_confines_elsewhere_stays_stale_with_a_warning(host):
    host.add_service('pinned.service', '0-7', confined='2-3')
    result = apply(host, restart_services=['pinned.service'])
    assert result['changed'] is True and result['restarted_services'] == ['pinned.service']
    assert result['stale_services'] == ['pinned.service'] and host.service_cpus('pinned.service') == '2-3'
    assert len(host.warnings) == 1
    assert 'pinned.service was restarted but its main process runs on 2-3, not host_reserved 0-1,4-5' in host.warnings[0]


def test_a_failed_restart_fails_naming_the_command(host):
    host.add_service('ssh.service', '0-7')
    real = host.run_command

    def refusing(module, args, **kwargs):
        if args[1] == 'restart':
            host.calls.append(args)
            return 1, '', 'Job for ssh.service failed because the control process exited with error code.\n'
        return real(module, args, **kwargs)

    host.run_command = refusing
    result = apply(host, restart_services=['ssh.service'])
    assert result['failed']
    assert 'systemctl restart -- ssh.service failed (rc=1): Job for ssh.service failed' in result['msg']


@pytest.mark.parametrize('name', ['', ' ssh', 'ssh service'])
def test_a_bad_service_name_fails_before_anything_changes(host, name):
    before = tree(host.root)
    result = apply(host, restart_services=[name])
    assert result['failed'] and 'restart_services: %r is not a unit name' % name in result['msg']
    assert tree(host.root) == before and host.changing_calls() == []


# -- restored -----------------------------------------------------------------

def test_rollback_restores_exactly_and_pid1_from_the_snapshot(host):
    before = tree(host.root)
    apply(host)
    assert host.pid1() == R
    result = run(host, state='restored', snapshot_path=host.snapshot, diff=True)
    assert result['changed'] is True
    # removing the drop-in and reloading leaves PID 1 alone: the module sets it from the snapshot
    assert host.pid1() == '0-7'
    assert result['pid1'] == {'before': R, 'after': '0-7', 'wanted': '0-7'}
    assert host.changing_calls() == [['daemon-reload']]
    assert tree(host.root) == before
    for directory in (os.path.dirname(host.dropin), os.path.dirname(boot_wants(host)),
                      os.path.dirname(host.snapshot), os.path.dirname(os.path.dirname(host.snapshot))):
        assert directory in result['dirs_removed']
    assert host.unit_dir not in result['dirs_removed']  # it was there before
    assert result['legacy_slices'] == []
    assert any(d['before_header'] == host.dropin and 'CPUAffinity' in d['before'] for d in result['diff'])

    again = run(host, state='restored', snapshot_path=host.snapshot)
    assert again['failed'] and 'nothing to roll back: no snapshot at %s' % host.snapshot in again['msg']


def test_rollback_check_mode_changes_nothing(host):
    apply(host)
    before = tree(host.root)
    result = run(host, check=True, state='restored', snapshot_path=host.snapshot)
    assert result['changed'] is True
    assert tree(host.root) == before and host.pid1() == R
    assert host.changing_calls() == []
    assert result['pid1']['after'] == '0-7'
    assert {f['path']: f['action'] for f in result['files']}[host.dropin] == 'remove'


def test_rollback_puts_a_pre_existing_file_back(host):
    os.makedirs(os.path.dirname(host.dropin))
    with open(host.dropin, 'w') as handle:
        handle.write('[Manager]\nCPUAffinity=0-3\n')
    os.chmod(host.dropin, 0o640)
    apply(host)
    run(host, state='restored', snapshot_path=host.snapshot)
    with open(host.dropin) as handle:
        assert handle.read() == '[Manager]\nCPUAffinity=0-3\n'
    assert stat.S_IMODE(os.stat(host.dropin).st_mode) == 0o640
    assert os.path.isdir(os.path.dirname(host.dropin))


@pytest.mark.parametrize('content,needle', [
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "mem', 'truncated'),
    ('not json', 'not JSON'),
    (json.dumps(snap.new_snapshot('memory')), 'a snapshot of the memory layer'),
])
def test_bad_snapshot_fails_naming_the_file_and_changes_nothing(host, content, needle):
    apply(host)
    with open(host.snapshot, 'w') as handle:
        handle.write(content)
    before = tree(host.root)
    result = run(host, state='restored', snapshot_path=host.snapshot)
    assert result['failed'] and host.snapshot in result['msg'] and needle in result['msg']
    assert tree(host.root) == before and host.pid1() == R and host.changing_calls() == []


def test_release_1_snapshot_rolls_back_and_names_its_slices(host):
    apply(host, snapshot_path=None)
    os.makedirs(os.path.dirname(host.snapshot))
    legacy = {'version': 1, 'role': 'lab_host_resource_management', 'pid1_cpus_allowed': '0-7',
              'online_cpus': '0-7', 'files': {host.dropin: {'exists': False, 'mode': None, 'owner': None,
                                                            'group': None, 'content': None}},
              'dirs': {os.path.dirname(host.dropin): False},
              'slices': ['machine-gold.slice', 'system.slice']}
    with open(host.snapshot, 'w') as handle:
        json.dump(legacy, handle)
    result = run(host, state='restored', snapshot_path=host.snapshot)
    assert result['changed'] and host.pid1() == '0-7'
    assert not os.path.exists(host.dropin) and not os.path.exists(os.path.dirname(host.dropin))
    assert result['legacy_slices'] == [{'name': 'machine-gold.slice'}, {'name': 'system.slice'}]
    assert result['snapshot']['migrated_from'] == 'lab_host_resource_management version 1'
    assert not os.path.exists(host.snapshot)


# -- query --------------------------------------------------------------------

SLICES = [{'name': 'machine-gold.slice', 'cpu_weight': 512, 'description': 'kvmlab gold'},
          {'name': 'system.slice', 'allowed_cpus': R}]


def make_slices_applied(host, silver_weight=None):
    gold = os.path.join(host.unit_dir, 'machine-gold.slice')
    with open(gold, 'w') as handle:
        handle.write(sd.render_unit('machine-gold.slice', {'CPUAccounting': 'yes', 'CPUWeight': '512'},
                                    description='kvmlab gold'))
    dropin = os.path.join(host.unit_dir, 'system.slice.d', '50-kvmlab.conf')
    os.makedirs(os.path.dirname(dropin))
    with open(dropin, 'w') as handle:
        handle.write(sd.render_unit('system.slice', {'CPUAccounting': 'yes', 'AllowedCPUs': R}, dropin=True))
    host.add_slice('machine-gold.slice', weight=silver_weight or '512', cgroup_weight=int(silver_weight or 512))
    host.add_slice('system.slice', allowed=R, cpuset=R, effective=R)


def query(host, **args):
    params = {'state': 'query', 'host_reserved': R, 'snapshot_path': host.snapshot, 'slices': SLICES}
    params.update(args)
    return run(host, **params)


def test_query_stock_host(host):
    host.add_slice('system.slice')
    result = query(host)
    assert result['changed'] is False and host.changing_calls() == []
    status = result['status']
    assert status['verdict'] == 'stock', status['summary']
    states = dict((i['name'], i['state']) for i in status['items'])
    assert states == {'manager drop-in': 'stock', 'PID 1 affinity': 'stock', 'boot re-apply unit': 'stock',
                      'machine-gold.slice': 'stock', 'system.slice': 'stock', 'kernel arguments': 'info',
                      'irqbalance': 'info'}
    assert status['snapshot'] is None
    assert result['report'][0] == 'host foundation: stock: none of the policy is in place'


def test_query_applied_then_drifted(host):
    apply(host, slices=SLICES)
    make_slices_applied(host)
    status = query(host)['status']
    assert status['verdict'] == 'applied', status['summary']
    assert status['snapshot'] == host.snapshot
    # a runtime override of the tier's weight
    host.slices['machine-gold.slice']['weight'] = '100'
    status = query(host)['status']
    assert status['verdict'] == 'drifted'
    assert 'machine-gold.slice' in status['summary'] and 'PID 1' not in status['summary']


def test_query_after_reboot_judges_what_is_effective(host):
    apply(host, slices=SLICES)
    make_slices_applied(host)
    host.set_pid1('0-7')  # PID 1 reset at boot, drop-in still there
    status = query(host)['status']
    items = dict((i['name'], i) for i in status['items'])
    assert items['manager drop-in']['state'] == 'applied'
    assert items['PID 1 affinity']['state'] == 'stock' and items['PID 1 affinity']['live'] == '0-7'
    assert status['verdict'] == 'drifted'


def test_query_host_slice_with_stale_cpuset_is_not_stock(host):
    host.add_slice('system.slice', allowed='', cpuset=R, effective=R)
    status = query(host)['status']
    item = [i for i in status['items'] if i['name'] == 'system.slice'][0]
    assert item['state'] == 'drifted' and 'cgroup cpuset.cpus 0-1,4-5' in item['live']


def test_query_with_a_corrupt_snapshot_still_reports(host):
    os.makedirs(os.path.dirname(host.snapshot))
    with open(host.snapshot, 'w') as handle:
        handle.write('{')
    result = query(host, slices=[])
    assert result['status']['verdict'] == 'stock'
    assert result['snapshot']['exists'] is True


def test_rollback_after_a_reboot_stops_the_boot_unit_first(host):
    apply(host)
    host.slices['kvmlab-host-cpu-reserve.service'] = {'weight': '', 'allowed': '', 'active': True,
                                                      'cgroup': '/system.slice/kvmlab-host-cpu-reserve.service'}
    result = run(host, state='restored', snapshot_path=host.snapshot)
    assert host.changing_calls() == [['stop', '--', 'kvmlab-host-cpu-reserve.service'], ['daemon-reload']]
    assert result['commands'][0] == [SYSTEMCTL, 'stop', '--', 'kvmlab-host-cpu-reserve.service']
    assert not os.path.exists(boot_unit(host))
