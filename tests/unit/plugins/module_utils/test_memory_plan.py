"""The memory layer's planning functions, rule by rule, without a host."""
import copy

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import OversubError, normalize_wanted
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_files as fl
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_plan as plan

MIB = 1024 ** 2
ROOT = '/t'
DROPIN = ROOT + '/' + fl.GENERATOR_DROPIN
UNIT = ROOT + '/' + fl.UNIT_FILE
TMPFILES = ROOT + '/' + fl.TMPFILES_FILE
SYSCTL = ROOT + '/' + fl.SYSCTL_FILE
BINS = dict((b, '/usr/sbin/' + b) for b in ('zramctl', 'mkswap', 'swapon', 'swapoff', 'modprobe', 'udevadm'))


def wanted(**over):
    args = dict(zram={'size': '16G', 'max_ram_share': 50, 'algorithm': 'zstd', 'priority': 100},
                thp={'enabled': 'madvise', 'defrag': 'madvise'},
                ksm={'run': 1, 'pages_to_scan': 1000, 'sleep_millisecs': 20},
                sysctl={}, mem_total=3000 * MIB)
    args.update(over)
    return normalize_wanted(**args)


def stock():
    return {
        'thp': {'enabled': 'always', 'defrag': 'madvise'},
        'ksm': {'run': 0, 'pages_to_scan': 100, 'sleep_millisecs': 20, 'merge_across_nodes': 1, 'pages_shared': 0},
        'sysctl': {'vm.swappiness': 60, 'vm.page-cluster': 3},
        'zram': {'loaded': False, 'devices': {}},
        'swaps': [],
        'meminfo': {'MemTotal': 3000 * MIB, 'MemAvailable': 2000 * MIB},
    }


def with_zram(live, size=1472 * MIB, algorithm='zstd', priority=100, used=0):
    live = copy.deepcopy(live)
    live['zram'] = {'loaded': True, 'devices': {'zram0': {'disksize': size, 'algorithm': algorithm,
                                                          'algorithms': ['lzo-rle', 'zstd']}}}
    live['swaps'] = [{'device': '/dev/zram0', 'type': 'partition', 'size_bytes': size - 4096,
                      'used_bytes': used, 'priority': priority}]
    return live


def applied():
    live = with_zram(stock())
    live['thp']['enabled'] = 'madvise'
    live['ksm'].update(run=1, pages_to_scan=1000)
    return live


def files_after_apply():
    want = wanted()
    return {DROPIN: fl.render_zram_generator(want['zram']), TMPFILES: fl.render_tmpfiles(want)}


# -- present ------------------------------------------------------------------

def test_present_on_stock_host():
    result = plan.plan_present(wanted(), stock(), {}, backend='zram-generator', root=ROOT)
    assert result['writes'] == [('thp.enabled', 'madvise'), ('ksm.pages_to_scan', 1000), ('ksm.run', 1)]
    assert result['rebuild'] is True and result['teardown'] is False and result['reload'] is True
    assert [(p[0], p[1]) for p in result['file_plan']] == [(DROPIN, 'written'), (TMPFILES, 'written')]
    assert result['files'] == {DROPIN: 'written', UNIT: 'absent', ROOT + '/' + fl.UNIT_WANTS: 'absent',
                               TMPFILES: 'written', SYSCTL: 'absent'}
    assert result['changes'] == ['thp.enabled', 'ksm.pages_to_scan', 'ksm.run', 'zram.rebuild', DROPIN, TMPFILES]
    assert 'thp.enabled: always\n' in result['diff']['before']
    assert 'zram.size: 1472MiB\n' in result['diff']['after']


def test_present_on_applied_host_changes_nothing():
    result = plan.plan_present(wanted(), applied(), files_after_apply(), backend='zram-generator', root=ROOT)
    assert result['changes'] == [] and result['writes'] == [] and result['file_plan'] == []
    assert result['rebuild'] is False and result['reload'] is False and result['diff'] is None


@pytest.mark.parametrize('live, reason', [
    (with_zram(applied(), priority=50), 'priority'),
    (with_zram(applied(), size=1024 * MIB), 'size'),
    (with_zram(applied(), algorithm='lzo-rle'), 'algorithm'),
])
def test_present_rebuilds_a_device_that_differs(live, reason):
    result = plan.plan_present(wanted(), live, files_after_apply(), backend='zram-generator', root=ROOT)
    assert result['rebuild'] is True, reason
    assert result['changes'] == ['zram.rebuild']


def test_present_rebuild_refused_when_swapped_data_does_not_fit():
    live = with_zram(applied(), priority=50, used=1900 * MIB)
    with pytest.raises(OversubError, match='refusing to rebuild /dev/zram0: .* would not fit back into memory'):
        plan.plan_present(wanted(), live, files_after_apply(), backend='zram-generator', root=ROOT)


def test_present_backend_switch_rebuilds_and_removes_the_other_backend():
    want = wanted()
    current = {UNIT: fl.render_zram_unit(want['zram'], BINS), TMPFILES: fl.render_tmpfiles(want)}
    result = plan.plan_present(want, applied(), current, backend='zram-generator', root=ROOT)
    assert result['rebuild'] is True
    assert [(p[0], p[1]) for p in result['file_plan']] == [(DROPIN, 'written'), (UNIT, 'removed')]


def test_present_leaves_a_foreign_file_in_place():
    current = dict(files_after_apply())
    current[SYSCTL] = 'vm.swappiness = 10\n'  # not ours: no header
    result = plan.plan_present(wanted(), applied(), current, backend='zram-generator', root=ROOT)
    assert result['file_plan'] == [] and result['files'][SYSCTL] == 'unchanged'


def test_present_zram_disabled_tears_down_ours():
    want = wanted(zram={'enabled': False})
    result = plan.plan_present(want, applied(), files_after_apply(), zram_managed=True, root=ROOT)
    assert result['teardown'] is True and result['rebuild'] is False
    assert (DROPIN, 'removed') in [(p[0], p[1]) for p in result['file_plan']]
    assert 'zram.teardown' in result['changes']
    assert 'zram.swap: False\n' in result['diff']['after']


def test_present_zram_not_managed_leaves_the_device():
    want = wanted(zram=None)
    result = plan.plan_present(want, applied(), files_after_apply(), zram_managed=False, root=ROOT)
    assert result['teardown'] is False
    assert DROPIN not in result['files']


def test_present_holds_merge_across_nodes_with_merged_pages():
    live = stock()
    live['ksm']['pages_shared'] = 120
    result = plan.plan_present(wanted(zram=None, ksm={'merge_across_nodes': 0, 'pages_to_scan': 300}), live, {},
                               zram_managed=False, root=ROOT)
    assert [h['name'] for h in result['held']] == ['ksm.merge_across_nodes']
    assert ('ksm.merge_across_nodes', 0) not in result['writes']
    assert ('ksm.pages_to_scan', 300) in result['writes']


def test_present_missing_thp_knob_fails_naming_it():
    live = stock()
    live['thp']['defrag'] = None
    with pytest.raises(OversubError, match='transparent_hugepage/defrag: it cannot set thp.defrag'):
        plan.plan_present(wanted(zram=None), live, {}, zram_managed=False, root=ROOT)


def test_present_warns_about_an_algorithm_the_device_does_not_offer():
    live = with_zram(stock(), algorithm='lzo-rle')
    result = plan.plan_present(wanted(zram={'size': '1G', 'algorithm': 'lz4'}), live, {},
                               backend='zram-generator', root=ROOT)
    assert result['warnings'] == ['zram.algorithm lz4 is not among the algorithms /dev/zram0 offers now '
                                  '(lzo-rle zstd); the kernel may load it on demand']


def test_present_sysctl_written_live_and_to_its_file():
    result = plan.plan_present(wanted(zram=None, thp=None, ksm=None, sysctl={'vm.swappiness': 100}), stock(), {},
                               zram_managed=False, root=ROOT)
    assert result['writes'] == [('sysctl.vm.swappiness', 100)]
    assert [(p[0], p[1]) for p in result['file_plan']] == [(SYSCTL, 'written')]
    assert result['file_plan'][0][3].endswith('vm.swappiness = 100\n')


# -- restore --------------------------------------------------------------------

def test_snapshot_values_keep_knobs_not_counters():
    values = plan.snapshot_values(applied(), generator_installed=False)
    assert 'pages_shared' not in values['ksm']
    assert values['zram'] == {'loaded': True, 'devices': {'zram0': {'disksize': 1472 * MIB, 'algorithm': 'zstd'}}}
    assert values['zram_generator_installed'] is False
    assert 'meminfo' not in values


def test_restore_to_a_host_without_zram():
    values = plan.snapshot_values(stock())
    result = plan.plan_restore(values, applied())
    assert result['writes'] == [('thp.enabled', 'always'), ('ksm.pages_to_scan', 100), ('ksm.run', 0)]
    assert (result['down'], result['up'], result['unload']) == (True, False, True)
    assert result['changes'] == ['thp.enabled', 'ksm.pages_to_scan', 'ksm.run', 'zram.teardown', 'zram.unload']
    assert 'zram.swap: False\n' in result['diff']['after']


def test_restore_rebuilds_the_device_that_was_there():
    before = with_zram(stock(), size=512 * MIB, algorithm='lzo-rle', priority=5)
    result = plan.plan_restore(plan.snapshot_values(before), applied())
    assert (result['down'], result['up'], result['unload']) == (True, True, False)
    assert result['was'] == {'swap': True, 'size': 512 * MIB, 'algorithm': 'lzo-rle', 'priority': 5}
    assert 'zram.priority: 5\n' in result['diff']['after']


def test_restore_of_a_restored_host_changes_nothing():
    values = plan.snapshot_values(stock())
    result = plan.plan_restore(values, stock())
    assert result['changes'] == [] and result['diff'] is None
    assert all(i['ok'] for i in plan.restore_items(values, stock(), 'zram0'))


def test_restore_keeps_the_module_loaded_for_another_device():
    live = applied()
    live['zram']['devices']['zram1'] = {'disksize': 64 * MIB, 'algorithm': 'lz4'}
    assert plan.plan_restore(plan.snapshot_values(stock()), live)['unload'] is False


def test_restore_items_name_what_did_not_come_back():
    values = plan.snapshot_values(stock())
    bad = [i['name'] for i in plan.restore_items(values, applied(), 'zram0') if not i['ok']]
    assert bad == ['thp.enabled', 'ksm.pages_to_scan', 'ksm.run', 'zram.swap']


@pytest.mark.parametrize('values, problem', [
    ({}, 'values.thp is missing'),
    ({'thp': {}, 'ksm': {}, 'sysctl': {}, 'zram': {'devices': []}}, 'values.zram.devices must be a mapping'),
    ({'thp': {}, 'ksm': {}, 'sysctl': {}, 'zram': {}, 'swaps': {}}, 'values.swaps must be a list'),
])
def test_check_values(values, problem):
    with pytest.raises(OversubError, match='^/s.json: ' + problem):
        plan.check_values(values, '/s.json')


def test_remove_ours_without_snapshot():
    current = dict(files_after_apply())
    current[SYSCTL] = 'vm.swappiness = 10\n'
    result = plan.plan_remove_ours(applied(), current, root=ROOT)
    assert [(p[0], p[1]) for p in result['file_plan']] == [(DROPIN, 'removed'), (TMPFILES, 'removed')]
    assert result['down'] is True
    assert result['changes'] == ['zram.teardown', DROPIN, TMPFILES]
