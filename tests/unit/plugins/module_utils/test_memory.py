import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory as m
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_conflicts as conf
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_effect as eff
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_files as fl
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_kernel as kern
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_plan as plan
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_sizes as sz

GIB = 1024 ** 3
MIB = 1024 ** 2

MEMINFO = """MemTotal:        3014656 kB
MemFree:          812000 kB
MemAvailable:    2048000 kB
Buffers:           10240 kB
SwapTotal:       1507324 kB
SwapFree:        1507324 kB
HugePages_Total:       0
"""

SWAPS = """Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/zram0                              partition\t1507324\t\t10240\t\t100
/swap\\040file                           file\t\t524284\t\t0\t\t-2
"""


def test_parse_bracketed():
    assert kern.parse_bracketed('always [madvise] never\n') == ('madvise', ['always', 'madvise', 'never'])
    assert kern.parse_bracketed('always defer defer+madvise [madvise] never')[0] == 'madvise'
    assert kern.parse_bracketed('lzo lzo-rle lz4 [zstd]') == ('zstd', ['lzo', 'lzo-rle', 'lz4', 'zstd'])
    assert kern.parse_bracketed('madvise\n') == ('madvise', ['madvise'])
    assert kern.parse_bracketed('') == (None, [])


def test_parse_meminfo():
    info = kern.parse_meminfo(MEMINFO)
    assert info['MemTotal'] == 3014656 * 1024
    assert info['MemAvailable'] == 2048000 * 1024
    assert info['HugePages_Total'] == 0


def test_parse_proc_swaps():
    swaps = kern.parse_proc_swaps(SWAPS)
    assert swaps[0] == {'device': '/dev/zram0', 'type': 'partition', 'size_bytes': 1507324 * 1024,
                        'used_bytes': 10240 * 1024, 'priority': 100}
    assert swaps[1]['device'] == '/swap file'
    assert swaps[1]['priority'] == -2
    assert kern.parse_proc_swaps('Filename Type Size Used Priority\n') == []


def test_parse_proc_swaps_error():
    with pytest.raises(m.OversubError, match='/proc/swaps'):
        kern.parse_proc_swaps('Filename Type Size Used Priority\n/dev/x partition lots 0 1\n')


def test_parse_mm_stat_old_and_new_kernels():
    stat = kern.parse_mm_stat('  4194304   1048576  1310720        0  1310720       12        0        0\n')
    assert stat['orig_data_size'] == 4194304
    assert stat['compr_data_size'] == 1048576
    assert stat['same_pages'] == 12
    assert 'huge_pages_since' not in stat
    stat = kern.parse_mm_stat('1 2 3 4 5 6 7 8 9')
    assert stat['huge_pages_since'] == 9


def test_zram_target_absolute_capped_on_small_host():
    target = sz.zram_target('16G', 3000 * MIB, 50)
    assert target['bytes'] == 1472 * MIB  # 1500 MiB rounded down to 64 MiB
    assert target['capped'] is True
    assert 'sized down to 1472MiB (50% of 3000MiB RAM) from the requested 16G' in target['message']


def test_zram_target_absolute_fits_on_big_host():
    target = sz.zram_target('16G', 384 * GIB, 50)
    assert target == {'bytes': 16 * GIB, 'mib': 16384, 'requested': '16G', 'capped': False,
                      'share_of_ram': 4.2, 'message': None}


def test_zram_target_rounds_absolute_to_mib():
    assert sz.zram_target('1000000000', 8 * GIB)['bytes'] == (1000000000 // MIB) * MIB


def test_zram_target_share_rounds_to_64mib():
    target = sz.zram_target('25%', 3014656 * 1024)
    assert target['bytes'] % (64 * MIB) == 0
    assert target['bytes'] == 704 * MIB
    # a few KiB less MemTotal after a kernel update gives the same size
    assert sz.zram_target('25%', 3014656 * 1024 - 4096)['bytes'] == 704 * MIB


def test_zram_target_errors():
    with pytest.raises(sz.SizeError, match='zram.size'):
        sz.zram_target('lots', GIB)
    with pytest.raises(sz.SizeError, match='share'):
        sz.zram_target('0%', GIB)
    with pytest.raises(sz.SizeError, match='below 1MiB'):
        sz.zram_target('512K', GIB)
    with pytest.raises(sz.SizeError, match='max_ram_share'):
        sz.zram_target('1G', GIB, 0)
    with pytest.raises(sz.SizeError, match='MemTotal'):
        sz.zram_target('1G', 0)


def policy(**over):
    args = dict(zram={'size': '16G', 'max_ram_share': 50, 'algorithm': 'zstd', 'priority': 100},
                thp={'enabled': 'madvise', 'defrag': 'madvise'},
                ksm={'run': 1, 'pages_to_scan': 1000, 'sleep_millisecs': 20},
                sysctl={}, mem_total=3000 * MIB)
    args.update(over)
    return m.normalize_wanted(**args)


def test_normalize_wanted_seed_policy():
    wanted = policy()
    assert wanted['zram']['size_bytes'] == 1472 * MIB
    assert wanted['zram']['device'] == 'zram0'
    assert wanted['thp'] == {'enabled': 'madvise', 'defrag': 'madvise'}
    assert wanted['ksm'] == {'run': 1, 'pages_to_scan': 1000, 'sleep_millisecs': 20}
    assert m.flat_wanted(wanted) == [
        ('zram.swap', True), ('zram.size', 1472 * MIB), ('zram.algorithm', 'zstd'), ('zram.priority', 100),
        ('thp.enabled', 'madvise'), ('thp.defrag', 'madvise'),
        ('ksm.pages_to_scan', 1000), ('ksm.sleep_millisecs', 20), ('ksm.run', 1)]


def test_normalize_wanted_unmanaged_and_disabled():
    wanted = m.normalize_wanted(zram={'enabled': False}, thp={'enabled': None}, mem_total=GIB)
    assert wanted == {'zram': None, 'thp': {}, 'ksm': {}, 'sysctl': {}}
    assert m.flat_wanted(wanted) == []


@pytest.mark.parametrize('over, match', [
    (dict(zram={'device': 'sda'}), 'zram.device'),
    (dict(zram={'priority': 40000}), 'zram.priority'),
    (dict(zram={'algorithm': 'z std'}), 'zram.algorithm'),
    (dict(zram={'size': '16X'}), 'zram.size'),
    (dict(thp={'enabled': 'sometimes'}), 'thp.enabled'),
    (dict(ksm={'run': 2}), 'ksm.run'),
    (dict(ksm={'pages_to_scan': 0}), 'pages_to_scan'),
    (dict(sysctl={'kernel.panic': 1}), 'not a vm'),
    (dict(sysctl={'vm.swappiness': 'high'}), 'not an integer'),
    (dict(sysctl={'vm.swappiness': 300}), 'outside 0..200'),
    (dict(sysctl={'vm.page-cluster': 11}), 'outside 0..10'),
])
def test_normalize_wanted_errors(over, match):
    with pytest.raises(m.OversubError, match=match):
        policy(**over)


def live_state(**over):
    live = {
        'thp': {'enabled': 'always', 'defrag': 'madvise'},
        'ksm': {'run': 0, 'pages_to_scan': 100, 'sleep_millisecs': 20, 'merge_across_nodes': 1,
                'pages_shared': 0, 'pages_sharing': 0, 'pages_unshared': 0, 'pages_volatile': 0,
                'full_scans': 0},
        'sysctl': {'vm.swappiness': 60, 'vm.page-cluster': 3},
        'zram': {'loaded': False, 'devices': {}},
        'swaps': [],
        'meminfo': {'MemTotal': 3000 * MIB, 'MemAvailable': 2000 * MIB},
    }
    live.update(over)
    return live


def applied_live():
    return live_state(
        thp={'enabled': 'madvise', 'defrag': 'madvise'},
        ksm={'run': 1, 'pages_to_scan': 1000, 'sleep_millisecs': 20, 'merge_across_nodes': 1,
             'pages_shared': 10, 'pages_sharing': 90},
        zram={'loaded': True, 'devices': {'zram0': {'disksize': 1472 * MIB, 'algorithm': 'zstd',
                                                    'mm_stat': {'orig_data_size': 4 * MIB,
                                                                'compr_data_size': MIB,
                                                                'mem_used_total': 2 * MIB}}}},
        swaps=[{'device': '/dev/zram0', 'type': 'partition', 'size_bytes': 1472 * MIB - 4096,
                'used_bytes': 4 * MIB, 'priority': 100}])


def test_compare_stock_host():
    items = m.compare(m.flat_wanted(policy()), m.flat_live(live_state()))
    bad = [i['name'] for i in items if not i['ok']]
    assert bad == ['zram.swap', 'zram.size', 'zram.algorithm', 'zram.priority', 'thp.enabled',
                   'ksm.pages_to_scan', 'ksm.run']
    assert m.verdict(items, files_present=False) == ('stock', bad)
    assert m.verdict(items, files_present=True)[0] == 'drifted'
    assert m.verdict(items, files_present=False, snapshot_present=True)[0] == 'drifted'


def test_compare_applied_host():
    items = m.compare(m.flat_wanted(policy()), m.flat_live(applied_live()))
    assert all(i['ok'] for i in items)
    assert m.verdict(items, files_present=True) == ('applied', [])
    assert not m.zram_needs_rebuild(policy()['zram'], applied_live(), 'zram0')


@pytest.mark.parametrize('change', [
    {'priority': 50}, {'algorithm': 'lz4'}, {'size': '1G'},
])
def test_zram_needs_rebuild_on_changed_value(change):
    zram = dict({'size': '16G', 'max_ram_share': 50, 'algorithm': 'zstd', 'priority': 100}, **change)
    assert m.zram_needs_rebuild(policy(zram=zram)['zram'], applied_live(), 'zram0')


def test_zram_needs_rebuild_when_not_swap():
    live = applied_live()
    live['swaps'] = []
    assert m.zram_needs_rebuild(policy()['zram'], live, 'zram0')
    assert m.zram_live(live, 'zram0') == {'swap': False, 'size': 1472 * MIB, 'algorithm': 'zstd',
                                          'priority': None}


def test_ksm_writes_order_and_merge_across_nodes():
    writes, held = m.ksm_writes({'run': 1, 'pages_to_scan': 1000, 'sleep_millisecs': 20,
                                 'merge_across_nodes': 0}, live_state()['ksm'])
    assert writes == [('merge_across_nodes', 0), ('pages_to_scan', 1000), ('run', 1)]
    assert held == []


def test_ksm_writes_holds_merge_across_nodes_with_merged_pages():
    live = dict(live_state()['ksm'], pages_shared=120, run=1)
    writes, held = m.ksm_writes({'merge_across_nodes': 0, 'pages_to_scan': 500}, live)
    assert writes == [('pages_to_scan', 500)]
    assert held[0]['name'] == 'ksm.merge_across_nodes'
    assert '120 pages are merged' in held[0]['reason']


def test_ksm_writes_holds_merge_across_nodes_without_numa():
    live = dict(live_state()['ksm'], merge_across_nodes=None)
    writes, held = m.ksm_writes({'merge_across_nodes': 0}, live)
    assert writes == [] and 'no NUMA' in held[0]['reason']


def test_render_zram_generator():
    text = fl.render_zram_generator(policy()['zram'])
    assert text.startswith(fl.MANAGED_MARKER)
    sections = kern.zram_generator_devices(text)
    assert sections == {'zram0': {'host-memory-limit': 'none', 'zram-size': '1472',
                                  'compression-algorithm': 'zstd', 'swap-priority': '100'}}
    no_algo = fl.render_zram_generator(policy(zram={'size': '1G'})['zram'])
    assert 'compression-algorithm' not in no_algo


def test_render_zram_unit():
    bins = dict((b, '/usr/sbin/' + b) for b in ('zramctl', 'mkswap', 'swapon', 'swapoff', 'modprobe'))
    bins['udevadm'] = '/usr/bin/udevadm'
    text = fl.render_zram_unit(policy()['zram'], bins)
    assert 'ExecStart=/usr/sbin/zramctl --size %d --algorithm zstd /dev/zram0' % (1472 * MIB) in text
    assert 'ExecStart=/usr/sbin/swapon --priority 100 --discard /dev/zram0' in text
    assert 'ExecStop=/usr/sbin/zramctl --reset /dev/zram0' in text
    assert fl.is_managed(text)
    assert fl.render_unit_wants('kvmlab-zram-swap.service').endswith('[Unit]\nWants=kvmlab-zram-swap.service\n')


def test_render_tmpfiles_and_sysctl():
    text = fl.render_tmpfiles(policy(ksm={'run': 1, 'pages_to_scan': 1000, 'merge_across_nodes': 0}))
    lines = [l for l in text.splitlines() if not l.startswith('#')]
    assert lines == [
        'w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise',
        'w /sys/kernel/mm/transparent_hugepage/defrag - - - - madvise',
        'w /sys/kernel/mm/ksm/merge_across_nodes - - - - 0',
        'w /sys/kernel/mm/ksm/pages_to_scan - - - - 1000',
        'w /sys/kernel/mm/ksm/run - - - - 1',
    ]
    assert fl.render_tmpfiles(m.normalize_wanted(mem_total=GIB)) is None
    text = fl.render_sysctl(policy(sysctl={'vm.swappiness': 100, 'vm.page-cluster': 0}))
    assert text.splitlines()[1:] == ['vm.page-cluster = 0', 'vm.swappiness = 100']
    assert fl.render_sysctl(policy()) is None
    assert m.sysctl_path('vm.page-cluster') == 'sys/vm/page-cluster'


def test_effect_figures():
    figures = eff.effect(applied_live(), page_size=4096)
    assert figures['ksm']['pages_sharing'] == 90
    assert figures['ksm']['saved_bytes'] == 90 * 4096
    assert figures['ksm']['saved'] == '360KiB'
    assert figures['zram'] == [{'device': 'zram0', 'orig_data_bytes': 4 * MIB, 'compr_data_bytes': MIB,
                                'mem_used_bytes': 2 * MIB, 'same_pages': 0, 'ratio': 4.0,
                                'orig_data': '4MiB', 'compr_data': '1MiB', 'mem_used': '2MiB'}]
    assert figures['swap']['used_bytes'] == 4 * MIB
    assert eff.zram_effect('zram1', {})['ratio'] is None


def test_swapoff_fits():
    meminfo = {'MemTotal': 3000 * MIB, 'MemAvailable': 1000 * MIB}
    assert conf.swapoff_fits(0, meminfo) is None
    assert conf.swapoff_fits(500 * MIB, meminfo) is None
    problem = conf.swapoff_fits(900 * MIB, meminfo)  # margin 150 MiB (5%)
    assert '900MiB is swapped out' in problem and '1000MiB available' in problem and '150MiB margin' in problem


def test_find_conflicts():
    swaps = [{'device': '/dev/zram0', 'type': 'partition', 'size_bytes': GIB, 'used_bytes': 0, 'priority': 100},
             {'device': '/dev/vda2', 'type': 'partition', 'size_bytes': GIB, 'used_bytes': 0, 'priority': -2},
             {'device': '/swapfile', 'type': 'file', 'size_bytes': GIB, 'used_bytes': 0, 'priority': 100}]
    found = conf.find_conflicts(
        'zram0', 100, swaps, {'zram0': {'disksize': GIB}, 'zram1': {'disksize': GIB}},
        {'ksmtuned.service': 'active', 'tuned.service': 'active', 'zramswap.service': 'inactive'},
        {'profile': 'virtual-host', 'thp': 'never', 'ksm_off': True},
        {'/etc/systemd/zram-generator.conf': ['zram0', 'zram1']})
    kinds = [(c['kind'], c['blocking']) for c in found]
    assert kinds == [('ksmtuned', True), ('tuned', True), ('tuned', True), ('zram', True), ('zram', True),
                     ('swap', False), ('swap', True)]
    assert 'used only after zram is full' in found[5]['message']
    assert conf.find_conflicts('zram0', 100, [], {}, {}, None, {}) == []


def test_zram_generator_devices_and_debian_default():
    debian = ('# comment\n[zram0]\n')
    assert kern.zram_generator_devices(debian) == {'zram0': {}}
    assert kern.zram_generator_devices('[zram0]\nzram-size = ram / 2\n[other]\nx=1\n') == {
        'zram0': {'zram-size': 'ram / 2'}}
    with pytest.raises(m.OversubError, match='zram-generator.conf'):
        kern.zram_generator_devices('zram-size = 1\n')


def test_tuned_findings():
    found = kern.tuned_findings('[main]\ninclude=throughput-performance\n[vm]\ntransparent_hugepages=never\n'
                                '[sysfs]\n/sys/kernel/mm/ksm/run=0\n')
    assert found == {'includes': ['throughput-performance'], 'thp': 'never', 'ksm_off': True}
    found = kern.tuned_findings('[bootloader]\ncmdline=transparent_hugepage=never\n[service]\nservice.ksm=stop,disable\n')
    assert found['thp'] == 'never' and found['ksm_off'] is True
    assert kern.tuned_findings('[main]\nsummary=x\n') == {'includes': [], 'thp': None, 'ksm_off': False}


def test_snapshot_and_restore_writes():
    snap = plan.snapshot_values(live_state())
    assert 'pages_shared' not in snap['ksm']
    assert snap['zram'] == {'loaded': False, 'devices': {}}
    writes, held = plan.restore_writes(snap, applied_live())
    assert writes == [('thp.enabled', 'always'), ('ksm.pages_to_scan', 100), ('ksm.run', 0)]
    assert held == []
    items = plan.restore_items(snap, applied_live(), 'zram0')
    bad = [i['name'] for i in items if not i['ok']]
    assert bad == ['thp.enabled', 'ksm.pages_to_scan', 'ksm.run', 'zram.swap']
    assert all(i['ok'] for i in plan.restore_items(snap, live_state(), 'zram0'))


def test_restore_items_with_zram_in_snapshot():
    snap = plan.snapshot_values(applied_live())
    items = plan.restore_items(snap, applied_live(), 'zram0')
    assert [i['name'] for i in items][-4:] == ['zram.swap', 'zram.size', 'zram.algorithm', 'zram.priority']
    assert all(i['ok'] for i in items)


def test_format_report():
    items = m.compare(m.flat_wanted(policy()), m.flat_live(applied_live()))
    lines = eff.format_report('lab', 'applied', [], items, eff.effect(applied_live()),
                              messages=['zram sized down'])
    assert lines[0] == 'lab: memory oversubscription applied'
    assert any(l.split()[:3] == ['zram.size', '1472MiB', '1472MiB'] for l in lines)
    assert any('KSM: run 1, 10 pages shared, 90 sharing, 360KiB saved' in l for l in lines)
    assert any('zram /dev/zram0: 4MiB stored in 1MiB compressed (2MiB used), ratio 4.0' in l for l in lines)
    assert any(l.startswith('  swap: 4MiB of') for l in lines)
    assert lines[-1] == '  note: zram sized down'
    drift = eff.format_report('lab', 'drifted', ['ksm.run'], items, eff.effect(live_state()))
    assert drift[0] == 'lab: memory oversubscription drifted (ksm.run)'


def test_human_size():
    assert sz.human_size(0) == '0B'
    assert sz.human_size(3000 * MIB) == '3000MiB'
    assert sz.human_size(2993328 * 1024) == '2.9GiB'
    assert sz.human_size(GIB - 4096) == '1.0GiB'
    assert sz.human_size(1472 * MIB) == '1472MiB'
    assert sz.human_size(360 * 1024) == '360KiB'
    assert sz.human_size(64) == '64B'
