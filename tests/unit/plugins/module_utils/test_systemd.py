# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parts of module_utils._systemd: no systemd, no Ansible."""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _systemd as sd

SHOW_TWO = """\
ControlGroup=/machine.slice/machine-gold.slice
TasksCurrent=[not set]
CPUAccounting=yes
CPUWeight=512
CPUQuotaPerSecUSec=1.500000s
AllowedCPUs=2-5,7
Id=machine-gold.slice
LoadState=loaded
ActiveState=active
FragmentPath=/etc/systemd/system/machine-gold.slice
DropInPaths=
NeedDaemonReload=no
Transient=no

ControlGroup=
TasksCurrent=[not set]
CPUAccounting=no
CPUWeight=[not set]
CPUQuotaPerSecUSec=infinity
AllowedCPUs=
Id=nosuch.scope
LoadState=not-found
ActiveState=inactive
FragmentPath=
DropInPaths=
NeedDaemonReload=no
Transient=no
"""


def show_block(**kw):
    block = {'Id': 'x.slice', 'LoadState': 'loaded', 'ActiveState': 'inactive', 'Transient': 'no',
             'FragmentPath': '', 'DropInPaths': '', 'NeedDaemonReload': 'no', 'ControlGroup': '',
             'TasksCurrent': '[not set]', 'CPUAccounting': 'no', 'CPUWeight': '[not set]',
             'CPUQuotaPerSecUSec': 'infinity', 'AllowedCPUs': ''}
    block.update(kw)
    return block


# -- systemctl show --------------------------------------------------------

def test_parse_show_splits_blocks_in_order():
    shows = sd.parse_show(SHOW_TWO, ['machine-gold.slice', 'nosuch.scope'])
    assert shows['machine-gold.slice']['CPUWeight'] == '512'
    assert shows['machine-gold.slice']['ControlGroup'] == '/machine.slice/machine-gold.slice'
    assert shows['nosuch.scope']['LoadState'] == 'not-found'
    assert shows['nosuch.scope']['FragmentPath'] == ''


def test_parse_show_keeps_equal_signs_in_values():
    shows = sd.parse_show('Id=a.slice\nDescription=a=b\n', ['a.slice'])
    assert shows['a.slice']['Description'] == 'a=b'


def test_parse_show_block_count_mismatch():
    with pytest.raises(sd.SystemdConfigError, match='2 blocks for 3 units'):
        sd.parse_show(SHOW_TWO, ['a.slice', 'b.slice', 'c.slice'])


def test_show_command_is_one_call_for_all_units():
    cmd = sd.show_command('/bin/systemctl', ['a.slice', 'b.scope'])
    assert cmd[:2] == ['/bin/systemctl', 'show']
    assert cmd[-3:] == ['--', 'a.slice', 'b.scope']
    assert 'CPUWeight' in cmd[cmd.index('-p') + 1].split(',')


@pytest.mark.parametrize('text,usec', [
    ('1.500000s', 1500000), ('333.300ms', 333300), ('200ms', 200000), ('1s', 1000000),
    ('1min 30s', 90000000), ('2min', 120000000), ('500us', 500), ('12345', 12345),
    ('infinity', None), ('', None), ('[not set]', None),
])
def test_parse_timespan(text, usec):
    assert sd.parse_timespan(text) == usec


@pytest.mark.parametrize('text', ['1.5 parsecs', 'abc', '5s garbage'])
def test_parse_timespan_rejects_garbage(text):
    with pytest.raises(sd.SystemdConfigError):
        sd.parse_timespan(text)


@pytest.mark.parametrize('text,value', [
    ('512', 512), ('[not set]', None), ('', None), (str(sd.UINT64_MAX), None), (None, None), (' 100\n', 100),
])
def test_parse_weight(text, value):
    assert sd.parse_weight(text) == value


@pytest.mark.parametrize('text,usec', [
    ('150%', 1500000), ('150', 1500000), ('33.33%', 333300), ('0.5%', 5000), ('', None),
    (None, None), ('infinity', None), (' 20 % ', 200000),
])
def test_quota_usec(text, usec):
    assert sd.quota_usec(text) == usec


@pytest.mark.parametrize('text', ['0%', 'fifty', '1.234%', '-5%', '5%%'])
def test_quota_usec_rejects(text):
    with pytest.raises(sd.SystemdConfigError):
        sd.quota_usec(text)


@pytest.mark.parametrize('usec,text', [
    (1500000, '150%'), (333300, '33.33%'), (5000, '0.5%'), (None, ''), (200000, '20%'),
])
def test_format_quota(usec, text):
    assert sd.format_quota(usec) == text


def test_live_properties_spelling():
    shows = sd.parse_show(SHOW_TWO, ['machine-gold.slice', 'nosuch.scope'])
    assert sd.live_properties(shows['machine-gold.slice']) == {
        'CPUAccounting': 'yes', 'CPUWeight': '512', 'CPUQuota': '150%', 'AllowedCPUs': '2-5,7'}
    assert sd.live_properties(shows['nosuch.scope']) == {
        'CPUAccounting': 'no', 'CPUWeight': '', 'CPUQuota': '', 'AllowedCPUs': ''}


# -- names and wanted values -----------------------------------------------

@pytest.mark.parametrize('name,persistent', [
    ('machine-gold.slice', True), ('machine-gold.slice', None), ('machine-gold.slice', False),
    (r'machine-qemu\x2d1\x2dvm.scope', None), (r'machine-qemu\x2d1\x2dvm.scope', False),
    ('libvirtd.service', False), ('a:b_c.slice', True),
])
def test_validate_name_accepts(name, persistent):
    sd.validate_name(name, persistent)


@pytest.mark.parametrize('name,persistent,match', [
    ('machine-qemu.scope', True, 'transient by nature'),
    ('libvirtd.service', True, 'must be slices'),
    ('libvirtd.service', None, 'need persistent: false'),
    ('machine--gold.slice', True, 'must be slices'),
    ('-machine.slice', True, 'must be slices'),
    ('machine-.slice', True, 'must be slices'),
    ('-.slice', None, 'root slice'),
    ('a/b.slice', False, 'live-only units'),
    ('foo.timer', False, 'live-only units'),
    ('', None, 'non-empty'),
    ('a' * 250 + '.slice', None, 'longer than 255'),
])
def test_validate_name_rejects(name, persistent, match):
    with pytest.raises(sd.SystemdConfigError, match=match):
        sd.validate_name(name, persistent)


def test_wanted_properties_full():
    props = sd.wanted_properties(512, '150', '3,2,1', {0, 1, 2, 3}, 'g.slice')
    assert props == {'CPUAccounting': 'yes', 'CPUWeight': '512', 'CPUQuota': '150%', 'AllowedCPUs': '1-3'}


def test_wanted_properties_unmanaged_and_defaults():
    assert sd.wanted_properties() == {'CPUAccounting': 'yes'}
    assert sd.wanted_properties(cpu_quota='', allowed_cpus='') == {
        'CPUAccounting': 'yes', 'CPUQuota': '', 'AllowedCPUs': ''}


@pytest.mark.parametrize('kwargs,match', [
    ({'cpu_weight': 0}, 'outside 1-10000'),
    ({'cpu_weight': 10001}, 'outside 1-10000'),
    ({'cpu_weight': True}, 'must be an integer'),
    ({'allowed_cpus': '0-x'}, 'cannot parse'),
    ({'allowed_cpus': '3-1'}, 'runs backwards'),
    ({'allowed_cpus': '0-5', 'online_cpus': {0, 1}}, 'not online: 2-5'),
    ({'cpu_quota': 'lots'}, 'not a percentage'),
])
def test_wanted_properties_rejects(kwargs, match):
    with pytest.raises(sd.SystemdConfigError, match=match):
        sd.wanted_properties(name='u.slice', **kwargs)


def test_property_changes_only_wanted_keys():
    current = {'CPUAccounting': 'yes', 'CPUWeight': '100', 'CPUQuota': '50%', 'AllowedCPUs': ''}
    wanted = {'CPUAccounting': 'yes', 'CPUWeight': '512'}
    assert sd.property_changes(wanted, current) == {'CPUWeight': {'before': '100', 'after': '512'}}
    assert sd.property_changes(current, current) == {}


def test_reset_and_assignments():
    current = {'CPUAccounting': 'yes', 'CPUWeight': '77', 'CPUQuota': '', 'AllowedCPUs': '0-1'}
    reset = sd.reset_properties(current)
    assert reset == {'CPUWeight': '', 'AllowedCPUs': ''}
    assert sd.assignments(reset) == ['CPUWeight=', 'AllowedCPUs=']
    assert sd.assignments({'AllowedCPUs': '1', 'CPUWeight': '5', 'CPUAccounting': 'yes'}) == [
        'CPUAccounting=yes', 'CPUWeight=5', 'AllowedCPUs=1']


def test_mismatches():
    assert sd.mismatches({'CPUWeight': '5'}, {'CPUWeight': '6'}) == {'CPUWeight': ('5', '6')}
    assert sd.mismatches({'CPUWeight': ''}, {}) == {}


# -- unit text -------------------------------------------------------------

def test_render_unit_file():
    text = sd.render_unit('machine-gold.slice', {'CPUAccounting': 'yes', 'CPUWeight': '512', 'CPUQuota': ''},
                          header='line one\n\nline three', description='Gold tier')
    lines = text.splitlines()
    assert lines[:3] == ['# line one', '#', '# line three']
    assert sd.MARKER in lines
    assert 'Description=Gold tier' in lines
    assert lines[-3:] == ['[Slice]', 'CPUAccounting=yes', 'CPUWeight=512']
    assert 'CPUQuota' not in text
    assert text.endswith('\n')
    assert sd.has_marker(text)


def test_render_dropin_has_no_unit_section():
    text = sd.render_unit('machine.slice', {'CPUAccounting': 'yes', 'AllowedCPUs': '2-11'}, dropin=True)
    assert '[Unit]' not in text
    assert text.rstrip().endswith('[Slice]\nCPUAccounting=yes\nAllowedCPUs=2-11')
    assert sd.has_marker(text)


def test_render_is_stable():
    props = sd.wanted_properties(333, None, '1', {0, 1})
    assert sd.render_unit('s.slice', props) == sd.render_unit('s.slice', dict(props))


def test_has_marker():
    assert not sd.has_marker(None)
    assert not sd.has_marker('[Slice]\nCPUWeight=5\n')


# -- planning --------------------------------------------------------------

UNIT = '/etc/systemd/system/machine-gold.slice'
DROPIN = '/etc/systemd/system/machine-gold.slice.d/50-kvmlab.conf'


def item(name='machine-gold.slice', state='present', persistent=None, **props):
    wanted = sd.wanted_properties(**props) if state == 'present' else {}
    return {'name': name, 'state': state, 'persistent': persistent, 'wanted': wanted}


def test_plan_new_slice_writes_reloads_starts():
    plan = sd.plan_unit(item(cpu_weight=512), show_block(), UNIT, None, DROPIN, None)
    assert (plan.mode, plan.definition, plan.path, plan.file_action) == (
        'persistent', 'unit_file', UNIT, 'write')
    assert plan.reload and plan.start and not plan.runtime_set
    assert plan.changes['CPUWeight'] == {'before': '', 'after': '512'}
    assert plan.actions() == ['write %s' % UNIT, 'daemon-reload', 'start']
    assert plan.changed


def test_plan_in_sync_slice_changes_nothing():
    wanted = sd.wanted_properties(512)
    text = sd.render_unit('machine-gold.slice', wanted)
    show = show_block(ActiveState='active', FragmentPath=UNIT, CPUAccounting='yes', CPUWeight='512')
    plan = sd.plan_unit(item(cpu_weight=512), show, UNIT, text, DROPIN, None)
    assert not plan.changed
    assert plan.actions() == []


def test_plan_weight_budget_runtime_value_is_expected_live():
    # the shared execution pool's budget drop-in holds the slice at 171 while guests wait for their move
    wanted = sd.wanted_properties(512)
    text = sd.render_unit('machine-gold.slice', wanted)
    show = show_block(ActiveState='active', FragmentPath=UNIT, CPUAccounting='yes', CPUWeight='171')
    plan = sd.plan_unit(item(cpu_weight=512), show, UNIT, text, DROPIN, None, runtime_values={'CPUWeight': '171'})
    assert not plan.changed and plan.actions() == []
    assert plan.expected['CPUWeight'] == '171'
    assert 'CPUWeight=512' in plan.content
    # without it the same live value is a change to make (and a mismatch after it)
    plan = sd.plan_unit(item(cpu_weight=512), show, UNIT, text, DROPIN, None)
    assert plan.changes == {'CPUWeight': {'before': '171', 'after': '512'}} and plan.reload
    # a live value that is neither is still a change
    show = show_block(ActiveState='active', FragmentPath=UNIT, CPUAccounting='yes', CPUWeight='100')
    plan = sd.plan_unit(item(cpu_weight=512), show, UNIT, text, DROPIN, None, runtime_values={'CPUWeight': '171'})
    assert plan.changes == {'CPUWeight': {'before': '100', 'after': '171'}}


def test_plan_unit_file_leaves_out_what_is_not_wanted():
    # our file is the whole definition: a quota left over in systemd is a change
    wanted = sd.wanted_properties(512)
    text = sd.render_unit('machine-gold.slice', wanted)
    show = show_block(ActiveState='active', FragmentPath=UNIT, CPUAccounting='yes', CPUWeight='512',
                      CPUQuotaPerSecUSec='500ms')
    plan = sd.plan_unit(item(cpu_weight=512), show, UNIT, text, DROPIN, None)
    assert plan.file_action is None
    assert plan.reload
    assert plan.changes == {'CPUQuota': {'before': '50%', 'after': ''}}


def test_plan_reload_pending():
    text = sd.render_unit('machine-gold.slice', sd.wanted_properties(512))
    show = show_block(ActiveState='active', FragmentPath=UNIT, CPUAccounting='yes', CPUWeight='512',
                      NeedDaemonReload='yes')
    plan = sd.plan_unit(item(cpu_weight=512), show, UNIT, text, DROPIN, None)
    assert plan.reload and plan.file_action is None


def test_plan_start_false_leaves_inactive():
    plan = sd.plan_unit(item(cpu_weight=5), show_block(), UNIT, None, DROPIN, None, start=False)
    assert not plan.start


def test_plan_vendor_unit_gets_dropin():
    show = show_block(Id='machine.slice', FragmentPath='/lib/systemd/system/machine.slice')
    unit = '/etc/systemd/system/machine.slice'
    dropin = '/etc/systemd/system/machine.slice.d/50-kvmlab.conf'
    plan = sd.plan_unit(item('machine.slice', allowed_cpus='2-3'), show, unit, None, dropin, None)
    assert (plan.definition, plan.path, plan.file_action) == ('dropin', dropin, 'write')
    assert '[Unit]' not in plan.content
    # a drop-in only adds what is wanted: nothing else is compared
    assert set(plan.changes) == {'CPUAccounting', 'AllowedCPUs'}


def test_plan_unmarked_file_in_unit_dir_is_foreign():
    plan = sd.plan_unit(item(cpu_weight=5), show_block(FragmentPath=UNIT), UNIT, '[Slice]\n', DROPIN, None)
    assert plan.definition == 'dropin'


def test_plan_foreign_fail():
    show = show_block(FragmentPath='/lib/systemd/system/machine-gold.slice')
    with pytest.raises(sd.SystemdConfigError, match='not by this module'):
        sd.plan_unit(item(cpu_weight=5), show, UNIT, None, DROPIN, None, foreign='fail')


def test_plan_refuses_unmarked_dropin_with_our_name():
    show = show_block(FragmentPath='/lib/systemd/system/machine-gold.slice')
    with pytest.raises(sd.SystemdConfigError, match='dropin_name'):
        sd.plan_unit(item(cpu_weight=5), show, UNIT, None, DROPIN, '[Slice]\nCPUWeight=1\n')


def test_plan_masked_and_bad_units():
    with pytest.raises(sd.SystemdConfigError, match='masked'):
        sd.plan_unit(item(cpu_weight=5), show_block(LoadState='masked'), UNIT, None, DROPIN, None)
    with pytest.raises(sd.SystemdConfigError, match='bad-setting'):
        sd.plan_unit(item(cpu_weight=5), show_block(LoadState='bad-setting'), UNIT, None, DROPIN, None)


def test_plan_transient_slice_is_runtime():
    show = show_block(Transient='yes', ActiveState='active', FragmentPath='/run/systemd/transient/x.slice')
    plan = sd.plan_unit(item(cpu_weight=5), show, UNIT, None, DROPIN, None)
    assert plan.mode == 'runtime'
    assert plan.runtime_set == {'CPUAccounting': 'yes', 'CPUWeight': '5'}
    assert plan.file_action is None and not plan.reload


def test_plan_scope_runtime_and_idempotent():
    name = r'machine-qemu\x2d1\x2dvm.scope'
    show = show_block(Id=name, Transient='yes', ActiveState='active', CPUAccounting='yes', CPUWeight='100')
    plan = sd.plan_unit(item(name, cpu_weight=512, allowed_cpus='0-1'), show, None, None, None, None)
    assert plan.runtime_set == {'CPUWeight': '512', 'AllowedCPUs': '0-1'}
    show.update(CPUWeight='512', AllowedCPUs='0-1')
    plan = sd.plan_unit(item(name, cpu_weight=512, allowed_cpus='0-1'), show, None, None, None, None)
    assert not plan.changed


def test_plan_runtime_unit_must_exist():
    show = show_block(LoadState='not-found')
    with pytest.raises(sd.SystemdConfigError, match='does not exist'):
        sd.plan_unit(item('gone.scope', cpu_weight=5), show, None, None, None, None)
    # an undefined slice loads but is no unit to set live
    with pytest.raises(sd.SystemdConfigError, match='does not exist'):
        sd.plan_unit(item('x.slice', persistent=False, cpu_weight=5), show_block(), None, None, None, None)


def test_plan_runtime_absent_resets_and_tolerates_missing():
    show = show_block(Transient='yes', ActiveState='active', CPUWeight='77', AllowedCPUs='0-1')
    absent = dict(item('vm.scope', state='absent'), reset=['CPUWeight', 'AllowedCPUs', 'CPUQuota'])
    plan = sd.plan_unit(absent, show, None, None, None, None)
    assert plan.runtime_set == {'CPUWeight': '', 'AllowedCPUs': ''}
    plan = sd.plan_unit(absent, show_block(LoadState='not-found'), None, None, None, None)
    assert not plan.changed


def test_plan_absent_removes_our_file_and_stops_when_empty():
    text = sd.render_unit('machine-gold.slice', sd.wanted_properties(5))
    show = show_block(ActiveState='active', FragmentPath=UNIT, CPUWeight='5')
    plan = sd.plan_unit(item(state='absent'), show, UNIT, text, DROPIN, None, populated=False)
    assert plan.file_action == 'remove' and plan.reload and plan.stop
    assert plan.actions() == ['stop', 'remove %s' % UNIT, 'daemon-reload']
    plan = sd.plan_unit(item(state='absent'), show, UNIT, text, DROPIN, None, populated=True)
    assert not plan.stop and plan.stop_skipped == 'still has processes'
    plan = sd.plan_unit(item(state='absent'), show, UNIT, text, DROPIN, None, populated=None)
    assert not plan.stop and 'cannot tell' in plan.stop_skipped


def test_plan_absent_dropin_never_stops_vendor_unit():
    show = show_block(ActiveState='active', FragmentPath='/lib/systemd/system/machine-gold.slice')
    text = sd.render_unit('machine-gold.slice', sd.wanted_properties(5), dropin=True)
    plan = sd.plan_unit(item(state='absent'), show, UNIT, None, DROPIN, text, populated=False)
    assert (plan.definition, plan.file_action, plan.stop) == ('dropin', 'remove', False)


def test_plan_absent_nothing_to_do():
    plan = sd.plan_unit(item(state='absent'), show_block(), UNIT, None, DROPIN, None)
    assert not plan.changed and plan.path is None


def test_plan_absent_leaves_foreign_unit_file():
    show = show_block(FragmentPath=UNIT)
    plan = sd.plan_unit(item(state='absent'), show, UNIT, '[Slice]\nCPUWeight=9\n', DROPIN, None)
    assert not plan.changed


# -- cgroup readers --------------------------------------------------------

def make_cgroup(root, rel, **files):
    path = root.joinpath(*rel.strip('/').split('/'))
    path.mkdir(parents=True)
    for name, text in files.items():
        path.joinpath(name.replace('_', '.')).write_text(text + '\n')
    return path


def test_read_cgroup_values(tmp_path):
    make_cgroup(tmp_path, '/machine.slice/machine-gold.slice', cpu_weight='512', cpu_max='150000 100000',
                cpuset_cpus='2-3,4', **{'cpuset_cpus_effective': '2-4', 'cgroup_events': 'populated 1\nfrozen 0'})
    values = sd.read_cgroup_values('/machine.slice/machine-gold.slice', str(tmp_path))
    assert values == {'path': str(tmp_path / 'machine.slice' / 'machine-gold.slice'), 'cpu_weight': 512,
                      'cpu_max': '150000 100000', 'cpu_quota': '150%', 'cpuset_cpus': '2-4',
                      'cpuset_cpus_effective': '2-4', 'populated': True}
    assert sd.read_cgroup_cpu_weight('/machine.slice/machine-gold.slice', str(tmp_path)) == 512


def test_read_cgroup_values_missing_files(tmp_path):
    make_cgroup(tmp_path, '/x.slice', cgroup_events='populated 0')
    values = sd.read_cgroup_values('/x.slice', str(tmp_path))
    assert values['cpu_weight'] is None and values['cpu_max'] is None and values['cpuset_cpus'] is None
    assert values['populated'] is False
    assert sd.read_cgroup_values('', str(tmp_path))['path'] is None
    assert sd.read_cgroup_cpu_weight('', str(tmp_path)) is None
    assert sd.cgroup_populated('/nope.slice', str(tmp_path)) is None


@pytest.mark.parametrize('text,pct', [('max 100000', ''), ('50000 100000', '50%'), ('33330 100000', '33.33%'),
                                      ('bogus', None), (None, None)])
def test_cpu_max_percent(text, pct):
    assert sd.cpu_max_percent(text) == pct


def test_detect_cgroup_root(tmp_path):
    assert sd.detect_cgroup_root(str(tmp_path)) == str(tmp_path)
    (tmp_path / 'unified').mkdir()
    (tmp_path / 'unified' / 'cgroup.controllers').write_text('')
    assert sd.detect_cgroup_root(str(tmp_path)) == str(tmp_path / 'unified')
    (tmp_path / 'cgroup.controllers').write_text('cpu cpuset')
    assert sd.detect_cgroup_root(str(tmp_path)) == str(tmp_path)


def test_cgroup_mismatches():
    wanted = {'CPUAccounting': 'yes', 'CPUWeight': '512', 'CPUQuota': '', 'AllowedCPUs': '2-3'}
    good = {'cpu_weight': 512, 'cpu_quota': '', 'cpuset_cpus': '2-3'}
    assert sd.cgroup_mismatches(wanted, good) == {}
    assert sd.cgroup_mismatches(wanted, {'cpu_weight': 100, 'cpu_quota': None, 'cpuset_cpus': None}) == {
        'CPUWeight': ('512', 100)}
    # unset weight is the kernel's 100
    assert sd.cgroup_mismatches({'CPUWeight': ''}, {'cpu_weight': 100}) == {}


# -- snapshot and exact restore ------------------------------------------------

def _show_block(active=True, weight='', allowed='', load='loaded', transient='no'):
    return {'Id': 'x', 'LoadState': load, 'ActiveState': 'active' if active else 'inactive',
            'Transient': transient, 'CPUAccounting': 'yes', 'CPUWeight': weight or '[not set]',
            'CPUQuotaPerSecUSec': 'infinity', 'AllowedCPUs': allowed}


def _record(mode='persistent', active=False, weight='', allowed='', cpuset=None):
    return {'mode': mode, 'active': active, 'cgroup_cpuset_cpus': cpuset,
            'properties': {'CPUAccounting': 'no', 'CPUWeight': weight, 'CPUQuota': '', 'AllowedCPUs': allowed}}


def test_unit_paths_and_record():
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import unit_paths, unit_record
    assert unit_paths('system.slice', '/etc/systemd/system') == (
        '/etc/systemd/system/system.slice', '/etc/systemd/system/system.slice.d/50-kvmlab.conf')
    record = unit_record('persistent', _show_block(weight='512', allowed='0-1 4-5'), {'cpuset_cpus': '0-1,4-5'})
    assert record == {'mode': 'persistent', 'active': True, 'cgroup_cpuset_cpus': '0-1,4-5',
                      'properties': {'CPUAccounting': 'yes', 'CPUWeight': '512', 'CPUQuota': '',
                                     'AllowedCPUs': '0-1,4-5'}}


def test_restore_unit_plan_stops_only_empty_slices_that_were_inactive():
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import restore_unit_plan
    assert restore_unit_plan('g', _record(active=False), _show_block(), populated=False)['stop'] is True
    assert restore_unit_plan('g', _record(active=False), _show_block(), populated=True)['stop'] is False
    assert restore_unit_plan('g', _record(active=False), _show_block(), populated=None)['stop'] is False
    assert restore_unit_plan('g', _record(active=True), _show_block(active=False))['start'] is True
    plan = restore_unit_plan('g', _record(active=True), _show_block())
    assert plan == {'stop': False, 'start': False, 'runtime_set': {}}


def test_restore_unit_plan_runtime_units():
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import restore_unit_plan
    rec = _record('runtime', True, weight='77')
    plan = restore_unit_plan('vm.scope', rec, _show_block(weight='512', allowed='0-3', transient='yes'))
    assert plan['runtime_set'] == {'CPUWeight': '77', 'AllowedCPUs': ''}
    gone = restore_unit_plan('vm.scope', rec, _show_block(active=False, load='not-found'))
    assert gone['runtime_set'] == {}


def test_cgroup_cpuset_fix_only_for_a_stale_kernel_value():
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import cgroup_cpuset_fix
    rec = _record(cpuset='')
    assert cgroup_cpuset_fix(rec, _show_block(), {'cpuset_cpus': '0-1'}) == ''
    assert cgroup_cpuset_fix(rec, _show_block(), {'cpuset_cpus': ''}) is None
    assert cgroup_cpuset_fix(rec, _show_block(), {'cpuset_cpus': None}) is None
    # systemd itself still holds AllowedCPUs: not the kernel's doing, leave it
    assert cgroup_cpuset_fix(rec, _show_block(allowed='0-1'), {'cpuset_cpus': '0-1'}) is None
    assert cgroup_cpuset_fix(_record(cpuset=None), _show_block(), {'cpuset_cpus': '0-1'}) is None


def test_restore_mismatches():
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import restore_mismatches
    assert restore_mismatches(_record(cpuset=''), _show_block(), {'cpuset_cpus': ''}) == {}
    bad = restore_mismatches(_record(cpuset=''), _show_block(weight='42'), {'cpuset_cpus': '0-1'})
    assert bad == {'CPUWeight': ('', '42'), 'cpuset.cpus': ('', '0-1')}
