# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd_slice_weight against a fake systemctl that keeps state.

The fake reads the unit files the module writes at ``daemon-reload``, keeps
runtime properties set with ``set-property --runtime``, refuses
``set-property`` without ``--runtime`` and mirrors live values into a fake
cgroup v2 tree, so that check mode, idempotence, rollback and the number of
systemctl calls can be checked without systemd.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils import basic
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import patch_module_args

from ansible_collections.kvmlab.host_resources.plugins.modules import systemd_slice_weight as mod
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _systemd as sd

SYSTEMCTL = '/usr/bin/systemctl'
PROPS = ('CPUAccounting', 'CPUWeight', 'CPUQuota', 'AllowedCPUs')


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


def _quota_show(pct):
    if not pct:
        return 'infinity'
    usec = sd.quota_usec(pct)
    if usec >= 1000000:
        return '%d.%06ds' % divmod(usec, 1000000)
    return '%gms' % (usec / 1000.0)


class FakeSystemd(object):
    """Just enough of systemd 252 for the module: slices, scopes, drop-ins, runtime properties."""

    def __init__(self, unit_dir, cgroup_root):
        self.unit_dir = unit_dir
        self.cgroup_root = cgroup_root
        self.calls = []
        self.units = {}
        self.vendor = {}
        self.fail_on = None
        self.processes = set()
        self.control = {}
        self.keep_cpuset = False  # systemd leaves cpuset.cpus when AllowedCPUs is reset
        self.runtime_dir = None  # /run/systemd/system: drop-ins there override the unit files

    def add_control_dropin(self, name, key, value):
        """What ``systemctl set-property`` without ``--runtime`` leaves in /etc/systemd/system.control."""
        self.control[name] = ('/etc/systemd/system.control/%s.d/50-%s.conf' % (name, key), key, value)

    def add_vendor(self, name, **props):
        self.vendor[name] = dict(props)

    def add_scope(self, name, slice_name='machine.slice'):
        self.units[name] = {'transient': True, 'active': True, 'config': {}, 'runtime': {},
                            'fragment': '/run/systemd/transient/' + name, 'dropins': [],
                            'cgroup': '/%s/%s' % (slice_name, name), 'loaded': True}
        self.processes.add(name)
        self._sync_cgroup(name)

    # -- unit loading ------------------------------------------------------

    def _parse(self, path):
        props = {}
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if '=' in line and not line.startswith('#'):
                    key, value = line.split('=', 1)
                    if key in PROPS:
                        props[key] = value
        return props

    def _load(self, name):
        unit = self.units.get(name)
        if unit and unit['transient']:
            return unit
        path = os.path.join(self.unit_dir, name)
        config = {}
        fragment = ''
        if name in self.vendor:
            fragment = '/usr/lib/systemd/system/' + name
            config.update(self.vendor[name])
        if os.path.exists(path):
            fragment = path
            config = self._parse(path)
        dropins = []
        ddir = path + '.d'
        if os.path.isdir(ddir):
            for fname in sorted(os.listdir(ddir)):
                dropins.append(os.path.join(ddir, fname))
                config.update(self._parse(os.path.join(ddir, fname)))
        runtime_ddir = os.path.join(self.runtime_dir, name + '.d') if self.runtime_dir else None
        if runtime_ddir and os.path.isdir(runtime_ddir):
            for fname in sorted(os.listdir(runtime_ddir)):
                dropins.append(os.path.join(runtime_ddir, fname))
                config.update(self._parse(os.path.join(runtime_ddir, fname)))
        if name in self.control:
            path, key, value = self.control[name]
            dropins.insert(0, path)
            config[key] = value
        old = unit or {'active': False, 'runtime': {}, 'transient': False}
        old.update({'config': config, 'fragment': fragment, 'dropins': dropins, 'loaded': True,
                    'cgroup': self._cgroup_of(name)})
        self.units[name] = old
        return old

    @staticmethod
    def _cgroup_of(name):
        parts = name[:-len('.slice')].split('-')
        path = ''
        for index in range(1, len(parts)):
            path += '/%s.slice' % '-'.join(parts[:index])
        return path + '/' + name

    def _live(self, unit):
        live = {'CPUAccounting': 'no', 'CPUWeight': '', 'CPUQuota': '', 'AllowedCPUs': ''}
        live.update(unit['config'])
        live.update(unit['runtime'])
        return live

    def _sync_cgroup(self, name):
        unit = self.units[name]
        path = os.path.join(self.cgroup_root, unit['cgroup'].lstrip('/'))
        if not unit['active']:
            return
        if not os.path.isdir(path):
            os.makedirs(path)
        live = self._live(unit)
        files = {'cpu.weight': live['CPUWeight'] or '100',
                 'cpu.max': '%d 100000' % (sd.quota_usec(live['CPUQuota']) // 10)
                 if live['CPUQuota'] else 'max 100000',
                 'cpuset.cpus': live['AllowedCPUs'],
                 'cgroup.events': 'populated %d\nfrozen 0' % (name in self.processes)}
        if self.keep_cpuset and not live['AllowedCPUs'] and os.path.exists(os.path.join(path, 'cpuset.cpus')):
            del files['cpuset.cpus']
        for fname, text in files.items():
            with open(os.path.join(path, fname), 'w') as handle:
                handle.write(text + '\n')

    # -- commands ----------------------------------------------------------

    def run_command(self, module, args, **kwargs):
        assert isinstance(args, list), 'run_command must get an argument list'
        assert kwargs.get('environ_update', {}).get('LC_ALL') == 'C'
        assert args[0] == SYSTEMCTL
        self.calls.append(args[1:])
        verb = args[1]
        if self.fail_on == verb:
            return 1, 'some output', 'Failed to %s: Access denied' % verb
        names = args[args.index('--') + 1:] if '--' in args else []
        if verb == 'show':
            return 0, '\n'.join(self._show(name) for name in names), ''
        if verb == 'daemon-reload':
            for name in list(self.units):
                if not self.units[name]['transient']:
                    self._load(name)
                    self._sync_cgroup(name)
            return 0, '', ''
        if verb in ('start', 'stop'):
            for name in names:
                unit = self._load(name)
                unit['active'] = verb == 'start'
                self._sync_cgroup(name)
            return 0, '', ''
        if verb == 'set-property':
            assert args[2] == '--runtime', 'set-property without --runtime leaves drop-ins behind'
            name = names[0]
            unit = self.units.get(name)
            if not unit:
                return 1, '', 'Failed to set unit properties on %s: Unit %s not found.' % (name, name)
            for assignment in names[1:]:
                key, value = assignment.split('=', 1)
                unit['runtime'][key] = value
            self._sync_cgroup(name)
            return 0, '', ''
        raise AssertionError('unexpected systemctl call %r' % (args,))

    def _show(self, name):
        unit = self.units.get(name)
        if unit is None or not unit['transient']:
            if name.endswith('.slice') or os.path.exists(os.path.join(self.unit_dir, name)):
                unit = self.units.get(name) or self._load(name)
        if unit is None:
            values = {'Id': name, 'LoadState': 'not-found', 'ActiveState': 'inactive', 'Transient': 'no',
                      'FragmentPath': '', 'DropInPaths': '', 'ControlGroup': ''}
            live = {'CPUAccounting': 'no', 'CPUWeight': '', 'CPUQuota': '', 'AllowedCPUs': ''}
        else:
            values = {'Id': name, 'LoadState': 'loaded',
                      'ActiveState': 'active' if unit['active'] else 'inactive',
                      'Transient': 'yes' if unit['transient'] else 'no',
                      'FragmentPath': unit['fragment'], 'DropInPaths': ' '.join(unit['dropins']),
                      'ControlGroup': unit['cgroup'] if unit['active'] else ''}
            live = self._live(unit)
        values.update({'NeedDaemonReload': 'no', 'TasksCurrent': '[not set]',
                       'CPUAccounting': live['CPUAccounting'],
                       'CPUWeight': live['CPUWeight'] or '[not set]',
                       'CPUQuotaPerSecUSec': _quota_show(live['CPUQuota']),
                       # systemd prints CPU sets with spaces between ranges
                       'AllowedCPUs': live['AllowedCPUs'].replace(',', ' '), 'SubState': 'active'})
        return '\n'.join('%s=%s' % item for item in values.items()) + '\n'

    def changing_calls(self):
        return [call for call in self.calls if call[0] != 'show']


@pytest.fixture
def env(tmp_path, monkeypatch):
    unit_dir = tmp_path / 'etc-systemd-system'
    unit_dir.mkdir()
    cgroup_root = tmp_path / 'cgroup'
    cgroup_root.mkdir()
    online = tmp_path / 'online'
    online.write_text('0-3\n')
    fake = FakeSystemd(str(unit_dir), str(cgroup_root))
    runtime_dir = tmp_path / 'run-systemd-system'
    runtime_dir.mkdir()
    fake.runtime_dir = str(runtime_dir)

    def exit_json(module, **kwargs):
        raise ExitJson(kwargs)

    def fail_json(module, **kwargs):
        kwargs['failed'] = True
        raise FailJson(kwargs)

    def run_command(module, args, **kwargs):
        return fake.run_command(module, args, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', fail_json)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda module, name, **kw: SYSTEMCTL)
    monkeypatch.setattr(mod, 'ONLINE_CPUS_PATH', str(online))
    fake.base_args = {'unit_dir': str(unit_dir), 'cgroup_root': str(cgroup_root), 'runtime_unit_dir': str(runtime_dir)}
    return fake


def run(fake, check=False, diff=False, **args):
    params = dict(fake.base_args)
    params.update(args)
    params['_ansible_check_mode'] = check
    params['_ansible_diff'] = diff
    fake.calls = []
    with patch_module_args(params):
        with pytest.raises((ExitJson, FailJson)) as info:
            mod.main()
    result = info.value.args[0]
    json.dumps(result)  # everything returned must serialize
    return result


TIERS = [
    {'name': 'machine-gold.slice', 'cpu_weight': 512},
    {'name': 'machine-silver.slice', 'cpu_weight': 333, 'allowed_cpus': '2-3'},
    {'name': 'machine-bronze.slice', 'cpu_weight': 167, 'cpu_quota': '150%'},
]


def unit_file(fake, name):
    return os.path.join(fake.unit_dir, name)


def cgroup_weight(fake, name):
    return sd.read_cgroup_cpu_weight(fake._cgroup_of(name), fake.cgroup_root)


def test_check_mode_predicts_and_touches_nothing(env):
    result = run(env, check=True, diff=True, units=TIERS)
    assert result['changed'] is True
    assert env.changing_calls() == []
    assert len(env.calls) == 1  # one show for all units
    assert os.listdir(env.unit_dir) == []
    assert cgroup_weight(env, 'machine-gold.slice') is None
    gold = result['units'][0]
    assert gold['changes']['CPUWeight'] == {'before': '', 'after': '512'}
    assert gold['actions'] == ['write %s' % unit_file(env, 'machine-gold.slice'), 'daemon-reload', 'start']
    assert gold['in_sync'] is False
    assert result['commands'] == [[SYSTEMCTL, 'daemon-reload'],
                                  [SYSTEMCTL, 'start', '--', 'machine-gold.slice', 'machine-silver.slice',
                                   'machine-bronze.slice']]
    live = result['diff'][0]
    assert live['after']['machine-silver.slice']['AllowedCPUs'] == '2-3'
    files = dict((d['after_header'], d['after']) for d in result['diff'][1:])
    assert 'CPUWeight=167\nCPUQuota=150%' in files[unit_file(env, 'machine-bronze.slice')]


def test_apply_then_idempotent(env):
    result = run(env, units=TIERS)
    assert result['changed'] is True
    assert env.changing_calls() == [['daemon-reload'],
                                    ['start', '--', 'machine-gold.slice', 'machine-silver.slice',
                                     'machine-bronze.slice']]
    assert [call[0] for call in env.calls].count('show') == 2  # before and after
    for unit, weight in zip(result['units'], (512, 333, 167)):
        assert unit['in_sync'] is True
        assert unit['properties']['CPUWeight'] == str(weight)
        assert unit['cgroup']['cpu_weight'] == weight
        assert unit['definition'] == 'unit_file'
        assert unit['systemd']['ControlGroup'].endswith(unit['name'])
        assert sd.has_marker(open(unit['path']).read())
        assert oct(os.stat(unit['path']).st_mode & 0o777) == '0o644'
    assert result['units'][1]['cgroup']['cpuset_cpus'] == '2-3'
    assert result['units'][2]['cgroup']['cpu_quota'] == '150%'
    assert result['units'][2]['properties']['CPUQuota'] == '150%'

    mtime = os.stat(unit_file(env, 'machine-gold.slice')).st_mtime_ns
    again = run(env, units=TIERS)
    assert again['changed'] is False
    assert env.changing_calls() == []
    assert len(env.calls) == 1
    assert all(not unit['changed'] and unit['in_sync'] for unit in again['units'])
    assert os.stat(unit_file(env, 'machine-gold.slice')).st_mtime_ns == mtime


def test_weight_budget_dropin_is_the_expected_live_weight(env):
    assert run(env, units=TIERS)['changed'] is True
    # the shared execution pool holds gold at a third of its weight while two of its three guests wait
    dropin_dir = os.path.join(env.runtime_dir, 'machine-gold.slice.d')
    os.mkdir(dropin_dir)
    with open(os.path.join(dropin_dir, ep.BUDGET_DROPIN), 'w') as handle:
        handle.write(ep.budget_dropin_text('machine-gold.slice', 'gold', 171, 512))
    env.run_command(None, [SYSTEMCTL, 'daemon-reload'], environ_update={'LC_ALL': 'C'})
    result = run(env, units=TIERS)
    assert result.get('failed') is not True, result.get('msg')
    assert result['changed'] is False and env.changing_calls() == []
    gold = result['units'][0]
    assert gold['in_sync'] is True and gold['properties']['CPUWeight'] == '171'
    with open(unit_file(env, 'machine-gold.slice')) as handle:
        assert 'CPUWeight=512' in handle.read()
    # a drop-in without our marker is somebody else's override: drift, fixed by nobody but reported
    with open(os.path.join(dropin_dir, ep.BUDGET_DROPIN), 'w') as handle:
        handle.write('[Slice]\nCPUWeight=171\n')
    env.run_command(None, [SYSTEMCTL, 'daemon-reload'], environ_update={'LC_ALL': 'C'})
    result = run(env, units=TIERS)
    assert result['failed'] is True and 'machine-gold.slice: CPUWeight is "171", expected "512"' in result['msg']


def test_one_weight_changes_only_that_unit(env):
    run(env, units=TIERS)
    tiers = [dict(t) for t in TIERS]
    tiers[0]['cpu_weight'] = 600
    result = run(env, diff=True, units=tiers)
    assert [u['changed'] for u in result['units']] == [True, False, False]
    assert result['units'][0]['changes'] == {'CPUWeight': {'before': '512', 'after': '600'}}
    assert env.changing_calls() == [['daemon-reload']]
    assert cgroup_weight(env, 'machine-gold.slice') == 600
    assert [d['before_header'] for d in result['diff']] == ['live properties',
                                                            unit_file(env, 'machine-gold.slice')]


def test_dropping_quota_rewrites_file(env):
    run(env, units=TIERS)
    tiers = [dict(t) for t in TIERS]
    del tiers[2]['cpu_quota']
    result = run(env, units=tiers)
    assert result['units'][2]['changes'] == {'CPUQuota': {'before': '150%', 'after': ''}}
    assert 'CPUQuota' not in open(unit_file(env, 'machine-bronze.slice')).read()


def test_absent_restores(env):
    run(env, units=TIERS)
    env.processes.add('machine-silver.slice')  # a guest still runs in silver
    env._sync_cgroup('machine-silver.slice')
    result = run(env, state='absent', units=[{'name': t['name']} for t in TIERS])
    assert result['changed'] is True
    assert env.changing_calls() == [['stop', '--', 'machine-gold.slice', 'machine-bronze.slice'],
                                    ['daemon-reload']]
    assert os.listdir(env.unit_dir) == []
    silver = result['units'][1]
    assert silver['warnings'] and 'still has processes' in silver['warnings'][0]
    assert silver['properties']['CPUWeight'] == ''
    assert silver['changes']['CPUWeight'] == {'before': '333', 'after': ''}
    assert result['units'][0]['systemd']['ActiveState'] == 'inactive'
    again = run(env, state='absent', units=[{'name': t['name']} for t in TIERS])
    assert again['changed'] is False and env.changing_calls() == []


def test_absent_check_mode(env):
    run(env, units=TIERS)
    result = run(env, check=True, state='absent', units=[{'name': 'machine-gold.slice'}])
    assert result['changed'] is True
    assert result['commands'] == [[SYSTEMCTL, 'stop', '--', 'machine-gold.slice'], [SYSTEMCTL, 'daemon-reload']]
    assert env.changing_calls() == []
    assert os.path.exists(unit_file(env, 'machine-gold.slice'))


def test_vendor_slice_gets_dropin_and_keeps_its_file(env):
    env.add_vendor('machine.slice', CPUWeight='200')
    result = run(env, units=[{'name': 'machine.slice', 'allowed_cpus': '1-3'}])
    unit = result['units'][0]
    dropin = os.path.join(env.unit_dir, 'machine.slice.d', '50-kvmlab.conf')
    assert (unit['definition'], unit['path']) == ('dropin', dropin)
    assert unit['properties'] == {'CPUAccounting': 'yes', 'CPUWeight': '200', 'CPUQuota': '',
                                  'AllowedCPUs': '1-3'}
    assert not os.path.exists(unit_file(env, 'machine.slice'))
    assert run(env, units=[{'name': 'machine.slice', 'allowed_cpus': '1-3'}])['changed'] is False
    gone = run(env, state='absent', units=[{'name': 'machine.slice'}])
    assert gone['changed'] is True
    assert not os.path.exists(os.path.dirname(dropin))
    assert ['stop', '--', 'machine.slice'] not in env.changing_calls()
    assert gone['units'][0]['properties']['AllowedCPUs'] == ''
    assert gone['units'][0]['properties']['CPUWeight'] == '200'


def test_unmarked_file_in_unit_dir_is_left_alone(env):
    path = unit_file(env, 'machine-gold.slice')
    with open(path, 'w') as handle:
        handle.write('[Slice]\nCPUWeight=9\n')
    result = run(env, units=[TIERS[0]])
    assert result['units'][0]['definition'] == 'dropin'
    assert open(path).read() == '[Slice]\nCPUWeight=9\n'
    assert result['units'][0]['properties']['CPUWeight'] == '512'
    failed = run(env, foreign_units='fail', units=[TIERS[0]])
    assert failed['failed'] and 'not by this module' in failed['msg']


def test_scope_runtime_only(env):
    scope = r'machine-qemu\x2d3\x2dkvm\x2dworker\x2d01.scope'
    env.add_scope(scope, 'machine.slice/machine-gold.slice')
    result = run(env, check=True, units=[{'name': scope, 'cpu_weight': 512, 'allowed_cpus': '0-3'}])
    assert result['changed'] and env.changing_calls() == []
    result = run(env, units=[{'name': scope, 'cpu_weight': 512, 'allowed_cpus': '0-3'}])
    assert env.changing_calls() == [['set-property', '--runtime', '--', scope, 'CPUAccounting=yes',
                                     'CPUWeight=512', 'AllowedCPUs=0-3']]
    unit = result['units'][0]
    assert (unit['mode'], unit['definition'], unit['path']) == ('runtime', None, None)
    assert unit['cgroup']['cpu_weight'] == 512 and unit['cgroup']['cpuset_cpus'] == '0-3'
    assert os.listdir(env.unit_dir) == []
    again = run(env, units=[{'name': scope, 'cpu_weight': 512, 'allowed_cpus': '0-3'}])
    assert again['changed'] is False
    reset = run(env, state='absent', units=[{'name': scope}])
    assert env.changing_calls() == [['set-property', '--runtime', '--', scope, 'CPUWeight=', 'AllowedCPUs=']]
    assert reset['units'][0]['cgroup']['cpu_weight'] == 100
    # the guest is gone: nothing to reset, no failure
    del env.units[scope]
    assert run(env, state='absent', units=[{'name': scope}])['changed'] is False


def test_absent_resets_only_named_properties(env):
    env.add_scope('vm.scope')
    run(env, units=[{'name': 'vm.scope', 'cpu_weight': 50, 'allowed_cpus': '1'}])
    run(env, state='absent', units=[{'name': 'vm.scope', 'cpu_weight': 1}])
    assert env.changing_calls() == [['set-property', '--runtime', '--', 'vm.scope', 'CPUWeight=']]


def test_mixed_set_minimal_calls(env):
    env.add_scope('a.scope')
    env.add_scope('b.scope')
    units = TIERS + [{'name': 'a.scope', 'cpu_weight': 10}, {'name': 'b.scope', 'cpu_weight': 20}]
    run(env, units=units)
    verbs = [call[0] for call in env.calls]
    assert verbs == ['show', 'daemon-reload', 'start', 'set-property', 'set-property', 'show']


@pytest.mark.parametrize('units,needle', [
    ([{'name': 'g.slice', 'cpu_weight': 0}], 'cpu_weight 0 is outside 1-10000'),
    ([{'name': 'g.slice', 'cpu_weight': 10001}], 'outside 1-10000'),
    ([{'name': 'g.slice', 'allowed_cpus': '1-x'}], 'cannot parse "1-x"'),
    ([{'name': 'g.slice', 'allowed_cpus': '2-9'}], 'not online: 4-9'),
    ([{'name': 'g.slice', 'cpu_quota': 'half'}], 'not a percentage'),
    ([{'name': 'vm.scope', 'persistent': True, 'cpu_weight': 5}], 'transient by nature'),
    ([{'name': 'sshd.service', 'cpu_weight': 5}], 'need persistent: false'),
    ([{'name': 'g.slice'}, {'name': 'g.slice'}], 'listed more than once'),
])
def test_validation_fails_before_any_call(env, units, needle):
    result = run(env, units=units)
    assert result['failed'] and needle in result['msg']
    assert env.calls == []
    assert os.listdir(env.unit_dir) == []


def test_all_validation_errors_reported_together(env):
    result = run(env, units=[{'name': 'a.slice', 'cpu_weight': 0}, {'name': 'b.slice', 'allowed_cpus': '7'}])
    assert len(result['errors']) == 2


def test_missing_live_unit_fails_before_changes(env):
    result = run(env, units=[TIERS[0], {'name': 'gone.scope', 'cpu_weight': 5}])
    assert result['failed'] and 'gone.scope does not exist' in result['msg']
    assert env.changing_calls() == []
    assert os.listdir(env.unit_dir) == []


def test_bad_dropin_name(env):
    result = run(env, dropin_name='../x', units=[TIERS[0]])
    assert result['failed'] and 'dropin_name' in result['msg']


def test_systemctl_failure_reports_rc_and_output(env):
    env.fail_on = 'show'
    result = run(env, units=[TIERS[0]])
    assert result['failed'] and result['rc'] == 1
    assert result['stderr'] == 'Failed to show: Access denied' and result['stdout'] == 'some output'
    assert result['cmd'][1] == 'show'
    env.fail_on = 'daemon-reload'
    result = run(env, units=[TIERS[0]])
    assert result['failed'] and 'daemon-reload failed (rc=1)' in result['msg']
    assert result['commands'] == [[SYSTEMCTL, 'daemon-reload']]


def test_overriding_dropin_is_reported(env):
    # a set-property without --runtime left a higher-priority drop-in behind
    run(env, units=[TIERS[0]])
    env.add_control_dropin('machine-gold.slice', 'CPUWeight', '42')
    env._load('machine-gold.slice')
    result = run(env, units=[TIERS[0]])
    assert result['failed']
    assert 'CPUWeight is "42", expected "512"' in result['msg']
    assert 'system.control' in result['msg']


def test_header_is_written(env):
    result = run(env, header='Ansible managed: do not edit\nsecond line', units=[TIERS[0]])
    text = open(result['units'][0]['path']).read()
    assert text.startswith('# Ansible managed: do not edit\n# second line\n')


# -- snapshot and exact restore ------------------------------------------------

def cgroup_file(fake, name, fname):
    path = os.path.join(fake.cgroup_root, fake._cgroup_of(name).lstrip('/'), fname)
    with open(path) as handle:
        return handle.read().strip()


def tree(root):
    found = []
    for base, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            found.append(os.path.relpath(os.path.join(base, name), str(root)))
    return sorted(found)


@pytest.fixture
def snapshot_path(env):
    return os.path.join(os.path.dirname(env.unit_dir), 'snapshots', 'slices.json')


HOST = TIERS[:2] + [{'name': 'system.slice', 'allowed_cpus': '0,2-3'}]


def test_snapshot_taken_once_before_changes(env, snapshot_path):
    env.add_vendor('system.slice')
    env._load('system.slice')
    env.units['system.slice']['active'] = True
    env._sync_cgroup('system.slice')
    check = run(env, check=True, units=HOST, snapshot_path=snapshot_path)
    assert check['changed'] is True and check['snapshot']['written'] is True
    assert not os.path.exists(snapshot_path)
    result = run(env, units=HOST, snapshot_path=snapshot_path)
    assert result['snapshot']['written'] is True
    assert oct(os.stat(snapshot_path).st_mode & 0o777) == '0o600'
    data = snap.load(snapshot_path, 'systemd_slice_weight')
    gold = data['values']['units']['machine-gold.slice']
    assert gold == {'mode': 'persistent', 'active': False, 'cgroup_cpuset_cpus': None,
                    'properties': {'CPUAccounting': 'no', 'CPUWeight': '', 'CPUQuota': '', 'AllowedCPUs': ''}}
    assert data['values']['units']['system.slice']['active'] is True
    assert data['values']['units']['system.slice']['cgroup_cpuset_cpus'] == ''
    assert data['files'][unit_file(env, 'machine-gold.slice')] == {'exists': False}
    assert data['dirs'][os.path.join(env.unit_dir, 'system.slice.d')] == {'exists': False}
    assert data['dirs'][os.path.dirname(snapshot_path)] == {'exists': False}
    text = open(snapshot_path).read()
    again = run(env, units=HOST, snapshot_path=snapshot_path)
    assert again['changed'] is False and again['snapshot']['written'] is False
    assert open(snapshot_path).read() == text


def test_restored_brings_back_the_stock_state_exactly(env, snapshot_path):
    env.add_vendor('system.slice')
    env._load('system.slice')
    env.units['system.slice']['active'] = True
    env._sync_cgroup('system.slice')
    env.keep_cpuset = True
    before = tree(env.unit_dir)
    run(env, units=HOST, snapshot_path=snapshot_path)
    assert cgroup_file(env, 'system.slice', 'cpuset.cpus') == '0,2-3'

    check = run(env, check=True, state='restored', snapshot_path=snapshot_path)
    assert check['changed'] is True and env.changing_calls() == []
    assert os.path.exists(snapshot_path)

    result = run(env, diff=True, state='restored', snapshot_path=snapshot_path)
    assert result['changed'] is True
    assert env.changing_calls() == [['stop', '--', 'machine-gold.slice', 'machine-silver.slice'],
                                    ['daemon-reload']]
    assert tree(env.unit_dir) == before
    assert not os.path.exists(os.path.dirname(snapshot_path))  # made by the apply, empty now
    # systemd kept the cpuset: the module writes the recorded (inherit) value back
    assert cgroup_file(env, 'system.slice', 'cpuset.cpus') == ''
    system = [u for u in result['units'] if u['name'] == 'system.slice'][0]
    assert 'write cgroup cpuset.cpus ""' in system['actions']
    assert result['not_restored'] == {}
    assert env.units['machine-gold.slice']['active'] is False
    assert sorted(d['before_header'] for d in result['diff']) == sorted(
        [unit_file(env, 'machine-gold.slice'), unit_file(env, 'machine-silver.slice'),
         os.path.join(env.unit_dir, 'system.slice.d', '50-kvmlab.conf')])

    nothing = run(env, state='restored', snapshot_path=snapshot_path)
    assert nothing['changed'] is False and nothing['snapshot'] is None
    assert 'nothing to restore' in nothing['msg'] and env.changing_calls() == []


def test_restored_keeps_a_foreign_unit_file_and_removes_only_ours(env, snapshot_path):
    path = unit_file(env, 'machine-gold.slice')
    with open(path, 'w') as handle:
        handle.write('[Slice]\nCPUWeight=9\n')
    run(env, units=[TIERS[0]], snapshot_path=snapshot_path)
    assert os.path.exists(os.path.join(env.unit_dir, 'machine-gold.slice.d', '50-kvmlab.conf'))
    run(env, state='restored', snapshot_path=snapshot_path)
    assert open(path).read() == '[Slice]\nCPUWeight=9\n'
    assert not os.path.exists(os.path.join(env.unit_dir, 'machine-gold.slice.d'))
    assert env._live(env.units['machine-gold.slice'])['CPUWeight'] == '9'


def test_restored_gives_a_scope_its_recorded_properties(env, snapshot_path):
    env.add_scope('vm.scope')
    env.units['vm.scope']['runtime'] = {'CPUWeight': '77'}
    run(env, units=[{'name': 'vm.scope', 'cpu_weight': 512, 'allowed_cpus': '0-3'}], snapshot_path=snapshot_path)
    run(env, state='restored', snapshot_path=snapshot_path)
    assert env.changing_calls() == [['set-property', '--runtime', '--', 'vm.scope', 'CPUWeight=77', 'AllowedCPUs=']]
    assert env._live(env.units['vm.scope'])['CPUWeight'] == '77'


def test_restored_reports_what_it_could_not_restore(env, snapshot_path):
    run(env, units=[TIERS[0]], snapshot_path=snapshot_path)
    env.add_control_dropin('machine-gold.slice', 'CPUWeight', '42')  # someone else's override
    result = run(env, state='restored', snapshot_path=snapshot_path)
    assert result['not_restored'] == {'machine-gold.slice': {'CPUWeight': {'recorded': '', 'live': '42'}}}


def test_restored_with_a_bad_snapshot_changes_nothing(env, snapshot_path):
    run(env, units=[TIERS[0]], snapshot_path=snapshot_path)
    with open(snapshot_path, 'w') as handle:
        handle.write('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "host_res')
    result = run(env, state='restored', snapshot_path=snapshot_path)
    assert result['failed'] and snapshot_path in result['msg'] and 'truncated' in result['msg']
    assert env.changing_calls() == [] and os.path.exists(unit_file(env, 'machine-gold.slice'))


def test_absent_clears_a_cpuset_systemd_left_behind(env):
    env.add_vendor('system.slice')
    env.keep_cpuset = True
    run(env, units=[{'name': 'system.slice', 'allowed_cpus': '0-1'}])
    assert cgroup_file(env, 'system.slice', 'cpuset.cpus') == '0-1'
    result = run(env, state='absent', units=[{'name': 'system.slice'}])
    assert cgroup_file(env, 'system.slice', 'cpuset.cpus') == ''
    assert result['units'][0]['cgroup']['cpuset_cpus'] == ''
    assert 'write cgroup cpuset.cpus "" (was "0-1")' in result['units'][0]['actions']


def test_units_required_unless_restored(env):
    result = run(env, units=[])
    assert result['failed'] and 'units is required with state=present' in result['msg']
