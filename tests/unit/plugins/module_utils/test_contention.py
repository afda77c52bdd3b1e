# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils._contention: scenarios, share arithmetic, checks, parsers (rendering: tests/unit/plugins/filter)."""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _contention as c

TIERS = {
    'gold': {'slice': 'machine-gold.slice', 'cpu_weight': 512, 'intended_class': 'control plane'},
    'silver': {'slice': 'machine-silver.slice', 'cpu_weight': 333},
    'bronze': {'slice': 'machine-bronze.slice', 'cpu_weight': 167},
}
NAMES = ['gold', 'silver', 'bronze']
WEIGHTS = {'gold': 512, 'silver': 333, 'bronze': 167}
SEC = 1000000


# -- tiers and scenarios -------------------------------------------------------

def test_normalize_tiers_keeps_order_and_ignores_extra_keys():
    assert c.normalize_tiers(TIERS) == [('gold', 'machine-gold.slice', 512),
                                        ('silver', 'machine-silver.slice', 333),
                                        ('bronze', 'machine-bronze.slice', 167)]


@pytest.mark.parametrize('tiers, message', [
    ({}, 'tiers must map'),
    ({'Gold': {'slice': 'a.slice', 'cpu_weight': 1}}, 'lower case'),
    ({'gold': {'slice': 'a.slice'}}, 'needs slice and cpu_weight'),
    ({'gold': {'slice': 'a.service', 'cpu_weight': 1}}, 'not a .slice'),
    ({'gold': {'slice': 'a.slice', 'cpu_weight': 'x'}}, 'not a number'),
    ({'gold': {'slice': 'a.slice', 'cpu_weight': 0}}, 'outside 1-10000'),
])
def test_normalize_tiers_rejects(tiers, message):
    with pytest.raises(c.ContentionError, match=message):
        c.normalize_tiers(tiers)


def test_default_scenarios_are_the_issue_s():
    out = c.normalize_scenarios(None, NAMES)
    assert [(s['name'], s['loaded'], s['checks']) for s in out] == [
        ('all_loaded', NAMES, ['shares']),
        ('gold_idle', ['silver', 'bronze'], ['ratios']),
        ('gold_alone', ['gold'], ['pool']),
        ('silver_alone', ['silver'], ['pool']),
        ('bronze_alone', ['bronze'], ['pool']),
    ]


def test_two_tiers_have_no_idle_scenario():
    assert c.default_scenarios(['a', 'b']) == ['all_loaded', 'a_alone', 'b_alone']


def test_scenario_dicts_keep_tier_order_and_take_checks():
    out = c.normalize_scenarios([{'loaded': 'bronze, gold'},
                                 {'name': 'gb', 'loaded': ['bronze', 'gold'], 'checks': 'shares'},
                                 'all'], NAMES)
    assert out[0] == {'name': 'gold_bronze_loaded', 'loaded': ['gold', 'bronze'], 'checks': ['ratios']}
    assert out[1] == {'name': 'gb', 'loaded': ['gold', 'bronze'], 'checks': ['shares']}
    assert out[2]['name'] == 'all_loaded'


@pytest.mark.parametrize('items, message', [
    (['platinum_idle'], 'is not all_loaded'),
    ([{'loaded': []}], 'needs a list of loaded tiers'),
    ([{'loaded': ['lead']}], 'unknown tiers lead'),
    ([{'loaded': ['gold'], 'checks': ['speed']}], 'unknown checks speed'),
    ([{'loaded': ['gold'], 'checks': ['shares']}], 'only the pool check'),
    (['gold_alone', 'gold_alone'], 'unique: gold_alone'),
    ([{'name': 'a b', 'loaded': ['gold']}], 'must be letters'),
    ('all', 'must be a list'),
    ([3], 'neither a name nor a dict'),
])
def test_bad_scenarios(items, message):
    with pytest.raises(c.ContentionError, match=message):
        c.normalize_scenarios(items, NAMES)


# -- share arithmetic ---------------------------------------------------------------

def test_promised_shares_match_the_seed():
    promised = c.promised_shares(WEIGHTS, NAMES)
    assert round(promised['gold'], 1) == 50.6
    assert round(promised['silver'], 1) == 32.9
    assert round(promised['bronze'], 1) == 16.5
    idle = c.promised_shares(WEIGHTS, ['silver', 'bronze'])
    assert round(idle['silver'] / idle['bronze'], 2) == 1.99


def _usage(gold, silver, bronze, total=4 * 30 * SEC):
    """Usage in microseconds from percentages of ``total``."""
    return {'gold': int(total * gold / 100.0), 'silver': int(total * silver / 100.0),
            'bronze': int(total * bronze / 100.0)}


def test_all_loaded_public_measurement_fails_bronze_and_silver_is_close():
    # the public implementation's hand measurement: 48.7 / 36.4 / 15.0
    run = c.compute_run(WEIGHTS, NAMES, _usage(48.7, 36.4, 15.0), 30 * SEC, 4, pool_busy_pct=99.5)
    assert run['tiers']['gold']['delta_points'] == pytest.approx(-1.94, abs=0.01)
    assert run['tiers']['gold']['within'] is True
    assert run['tiers']['silver']['within'] is False       # +3.5 points
    assert run['tiers']['bronze']['within'] is True        # -1.5 points
    assert run['checks'] == {'shares': False}
    assert run['passed'] is False
    assert run['pool_busy_pct'] == 99.5


def test_all_loaded_within_tolerance_passes_and_reports_ratios():
    run = c.compute_run(WEIGHTS, NAMES, _usage(50.0, 33.5, 16.5), 30 * SEC, 4)
    assert run['passed'] is True
    assert [r['pair'] for r in run['ratios']] == ['gold:silver', 'gold:bronze', 'silver:bronze']
    assert run['ratios'][2]['promised'] == 1.994
    assert run['ratios'][2]['achieved'] == pytest.approx(33.5 / 16.5, abs=0.001)
    assert run['loaded_pool_pct'] == pytest.approx(100.0, abs=0.01)
    assert run['tiers']['gold']['pool_pct'] == pytest.approx(50.0, abs=0.01)


def test_tolerance_is_inclusive_and_configurable():
    usage = _usage(52.55, 31.05, 16.4)   # gold +1.96 points
    assert c.compute_run(WEIGHTS, NAMES, usage, 30 * SEC, 4)['tiers']['gold']['within'] is True
    assert c.compute_run(WEIGHTS, NAMES, usage, 30 * SEC, 4, tolerance=1.0)['passed'] is False


def test_gold_idle_public_ratio_fails_and_a_good_one_passes():
    # the public implementation: Silver:Bronze 1.26 against 1.99
    bad = c.compute_run(WEIGHTS, ['silver', 'bronze'], {'silver': 126, 'bronze': 100, 'gold': 5}, 1000, 1,
                        checks=['ratios'])
    assert bad['ratios'][0]['error_pct'] == pytest.approx(-36.8, abs=0.1)
    assert bad['passed'] is False
    good = c.compute_run(WEIGHTS, ['silver', 'bronze'], {'silver': 1850, 'bronze': 1000}, 1000, 4,
                         checks=['ratios'])
    assert good['ratios'][0]['within'] is True            # 1.85 is -7.2 %
    assert good['tiers']['gold']['loaded'] is False
    assert good['tiers']['gold']['share_pct'] is None
    assert good['tiers']['silver']['share_pct'] == pytest.approx(64.91, abs=0.01)
    assert c.compute_run(WEIGHTS, ['silver', 'bronze'], {'silver': 1850, 'bronze': 1000}, 1000, 4,
                         checks=['ratios'], ratio_tolerance=5)['passed'] is False


def test_idle_tier_usage_is_reported_but_not_in_the_shares():
    run = c.compute_run(WEIGHTS, ['silver', 'bronze'], {'gold': 50000, 'silver': 2000000, 'bronze': 1000000},
                        1 * SEC, 4, checks=['ratios', 'shares'])
    assert run['tiers']['gold']['pool_pct'] == 1.25
    assert run['tiers']['silver']['share_pct'] == pytest.approx(66.67, abs=0.01)
    assert run['checks'] == {'ratios': True, 'shares': True}


def test_lone_tier_pool_check():
    ok = c.compute_run(WEIGHTS, ['bronze'], {'bronze': int(0.93 * 4 * 10 * SEC)}, 10 * SEC, 4)
    assert ok['checks'] == {'pool': True}
    assert ok['tiers']['bronze']['share_pct'] == 100.0
    assert ok['loaded_pool_pct'] == 93.0
    low = c.compute_run(WEIGHTS, ['bronze'], {'bronze': int(0.85 * 4 * 10 * SEC)}, 10 * SEC, 4)
    assert low['passed'] is False
    assert c.compute_run(WEIGHTS, ['bronze'], {'bronze': int(0.85 * 4 * 10 * SEC)}, 10 * SEC, 4,
                         min_pool_share=80)['passed'] is True


def test_zero_usage_does_not_divide_by_zero():
    run = c.compute_run(WEIGHTS, NAMES, {}, 10 * SEC, 4)
    assert run['tiers']['gold']['share_pct'] == 0.0
    assert run['ratios'][0]['achieved'] is None
    assert run['ratios'][0]['within'] is False
    assert run['passed'] is False


def test_bad_window():
    with pytest.raises(c.ContentionError, match='must be positive'):
        c.compute_run(WEIGHTS, NAMES, {}, 0, 4)


def test_summary_spread_and_pass_only_when_every_run_passes():
    scen = {'name': 'all_loaded', 'loaded': NAMES, 'checks': ['shares']}
    runs = [c.compute_run(WEIGHTS, NAMES, _usage(*u), 30 * SEC, 4, pool_busy_pct=99.0)
            for u in ((50.0, 33.5, 16.5), (51.0, 32.5, 16.5), (49.0, 34.0, 17.0))]
    summary = c.summarize_scenario(scen, runs)
    assert summary['tiers']['gold']['share_pct'] == {'mean': 50.0, 'min': 49.0, 'max': 51.0, 'stdev': 1.0, 'n': 3}
    assert summary['tiers']['gold']['promised_pct'] == 50.59
    assert summary['ratios'][0]['pair'] == 'gold:silver'
    assert summary['pool_busy_pct']['mean'] == 99.0
    assert summary['passed'] is True
    runs.append(c.compute_run(WEIGHTS, NAMES, _usage(45.0, 38.0, 17.0), 30 * SEC, 4))
    assert c.summarize_scenario(scen, runs)['passed'] is False
    assert c.summarize_scenario(scen, [])['passed'] is False


# -- parsers ----------------------------------------------------------------------

def test_parse_cpu_stat():
    text = 'usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 0\n'
    assert c.parse_cpu_stat(text)['usage_usec'] == 123456
    assert c.parse_cpu_stat('') == {}


PROC_STAT = """cpu  100 0 100 1000 0 0 0 0 0 0
cpu0 10 0 10 500 5 0 0 0 0 0
cpu1 20 0 20 400 0 0 0 0 0 0
cpu2 300 1 9 10 0 0 0 0 0 0
cpu3 400 0 0 0 0 0 0 0 0 0
intr 1 2 3
"""


def test_parse_proc_stat_counts_only_the_pool():
    busy, total = c.parse_proc_stat(PROC_STAT, [2, 3])
    assert (busy, total) == (710, 720)
    assert c.busy_pct((0, 0), (busy, total)) == pytest.approx(98.61, abs=0.01)
    assert c.busy_pct((5, 5), (5, 5)) is None
    with pytest.raises(c.ContentionError, match='no line for CPUs 7'):
        c.parse_proc_stat(PROC_STAT, [2, 7])


def test_parse_task_stat_with_awkward_comm():
    fields = ['S'] + ['0'] * 10 + ['150', '25'] + ['0'] * 23 + ['6', '0', '0']
    text = '1234 (CPU 0/TCG) (x)) ' + ' '.join(fields)
    stat = c.parse_task_stat(text)
    assert stat == {'comm': 'CPU 0/TCG) (x)', 'state': 'S', 'utime': 150, 'stime': 25, 'processor': 6}
    with pytest.raises(c.ContentionError):
        c.parse_task_stat('1234 (sh) R 1 2')
    with pytest.raises(c.ContentionError):
        c.parse_task_stat('garbage')


def test_parse_schedstat_and_names():
    assert c.parse_schedstat('123456789 2000 3\n') == 123456789
    with pytest.raises(c.ContentionError):
        c.parse_schedstat('')
    assert c.vcpu_index('CPU 3/TCG') == 3
    assert c.vcpu_index('CPU 0/KVM') == 0
    assert c.vcpu_index('IO iothread1') is None
    assert c.qemu_guest_name(['qemu-system-x86_64', '-name', 'guest=kvm-worker-01,debug-threads=on']) == 'kvm-worker-01'
    assert c.qemu_guest_name(['qemu', '-name', 'plain']) == 'plain'
    assert c.qemu_guest_name(['qemu', '-m', '32']) is None


def test_attribute_samples_counts_time_on_the_later_cpu():
    samples = [(0, 2), (1000, 2), (3000, 0), (3500, 3)]
    got = c.attribute_samples(samples, {0, 1, 4, 5})
    assert got == {'samples': 4, 'samples_on_reserved': 1, 'runtime_ns': 3500,
                   'runtime_on_reserved_ns': 2000, 'cpus': [0, 2, 3]}


def test_a_sleeping_thread_s_stale_processor_does_not_count():
    # pinned to the pool while asleep: /proc still shows the reserved CPU it last ran on
    got = c.attribute_samples([(500, 1), (500, 1), (500, 1)], {0, 1, 4, 5})
    assert got['samples_on_reserved'] == 0 and got['runtime_on_reserved_ns'] == 0 and got['cpus'] == []
    verdict = c.placement_verdict([{'name': 'vm CPU 0/TCG', 'allowed': {2, 3}, 'sampled': got}],
                                  {2, 3, 6, 7}, {0, 1, 4, 5})
    assert verdict['evidence'] == 'affinity' and verdict['ran_on_reserved'] is False


def test_placement_verdict_affinity_and_samples():
    pool, reserved = {2, 3, 6, 7}, {0, 1, 4, 5}
    confined = [{'name': 'b%d' % i, 'allowed': {cpu},
                 'sampled': c.attribute_samples([(0, cpu), (10000, cpu)], reserved)} for i, cpu in enumerate(pool)]
    verdict = c.placement_verdict(confined, pool, reserved)
    assert verdict['evidence'] == 'affinity'
    assert verdict['ran_on_reserved'] is False
    assert verdict['confined_to_pool'] == 4
    assert verdict['runtime_usec'] == 40
    loose = confined + [{'name': 'vm CPU 0/TCG', 'allowed': set(range(8)),
                         'sampled': c.attribute_samples([(0, 1), (5000000, 1)], reserved)}]
    verdict = c.placement_verdict(loose, pool, reserved)
    assert verdict['evidence'] == 'samples'
    assert verdict['may_leave_pool'] == ['vm CPU 0/TCG']
    assert verdict['ran_on_reserved'] is True
    assert verdict['runtime_on_reserved_usec'] == 5000
    assert c.placement_verdict([], pool, reserved)['evidence'] == 'none'


def test_merge_placement():
    a = {'threads': 12, 'confined_to_pool': 12, 'may_leave_pool': [], 'evidence': 'affinity',
         'ran_on_reserved': False, 'samples_on_reserved': 0, 'runtime_on_reserved_usec': 0, 'runtime_usec': 10}
    b = dict(a, threads=4, confined_to_pool=4)
    merged = c.merge_placement([a, b, None])
    assert merged['threads'] == 12 and merged['confined_to_pool'] == 12 and merged['runtime_usec'] == 20
    assert merged['ran_on_reserved'] is False
    v = dict(a, threads=6, confined_to_pool=0, may_leave_pool=['x', 'y'], evidence='samples', ran_on_reserved=True)
    merged = c.merge_placement([v, v])
    assert merged['confined_to_pool'] == 4 and merged['may_leave_pool'] == ['x', 'y'] and merged['ran_on_reserved']
    assert c.merge_placement([])['evidence'] == 'none'


# -- burner units ------------------------------------------------------------------

def test_burner_plan_one_unit_per_tier_one_loop_per_cpu():
    plan = c.burner_plan('kvmlab-burn', ['gold', 'my_tier'], {7, 2, 3, 6}, burners_per_cpu=2)
    assert [p['unit'] for p in plan] == ['kvmlab-burn-gold.service', 'kvmlab-burn-my-tier.service']
    assert plan[0]['cpus'] == [2, 3, 6, 7, 2, 3, 6, 7]
    with pytest.raises(c.ContentionError, match='unit_prefix'):
        c.burner_plan('Bad Prefix', ['gold'], {2})


def test_burner_command():
    burner = c.burner_plan('kvmlab-burn', ['gold'], {2, 3})[0]
    argv = c.burner_command('/usr/bin/systemd-run', burner, 'machine-gold.slice', '2-3', 'cpu', 95.5,
                            taskset='/usr/bin/taskset')
    assert argv[:4] == ['/usr/bin/systemd-run', '--unit=kvmlab-burn-gold.service', '--slice=machine-gold.slice',
                        '--collect']
    assert 'AllowedCPUs=2-3' in argv and 'CPUAffinity=2-3' in argv and 'RuntimeMaxSec=96' in argv
    assert 'KillMode=control-group' in argv
    assert argv[-3:-1] == ['/bin/sh', '-c']
    assert argv[-1] == ("/usr/bin/taskset -c 2 /bin/sh -c 'while :; do :; done' & "
                        "/usr/bin/taskset -c 3 /bin/sh -c 'while :; do :; done' & wait")
    floating = c.burner_command('systemd-run', burner, 'machine-gold.slice', '2-3', 'pool', 10)
    assert floating[-1] == "/bin/sh -c 'while :; do :; done' & /bin/sh -c 'while :; do :; done' & wait"


def test_burner_script_refuses_systemd_expansion():
    with pytest.raises(c.ContentionError, match='expanded by systemd'):
        c.burner_script([2], 'cpu', taskset='/opt/$HOME/taskset')


def test_slice_cgroup_and_unit_list():
    assert c.slice_cgroup('machine-gold.slice') == '/machine.slice/machine-gold.slice'
    assert c.slice_cgroup('a-b-c.slice') == '/a.slice/a-b.slice/a-b-c.slice'
    assert c.slice_cgroup('machine-gold.slice', '/elsewhere') == '/elsewhere'
    assert c.slice_cgroup('-.slice') == '/'
    with pytest.raises(c.ContentionError):
        c.slice_cgroup('x.service')
    text = ('kvmlab-burn-gold.service loaded active running kvmlab contention burner\n'
            'kvmlab-burn-silver.service loaded failed failed x\n'
            'other.service loaded active running y\n')
    assert c.parse_unit_list(text, 'kvmlab-burn') == ['kvmlab-burn-gold.service', 'kvmlab-burn-silver.service']
    assert c.parse_unit_list('', 'kvmlab-burn') == []


# -- the guests' own cgroups and the phases -------------------------------------

def test_parse_cpuacct_usage():
    assert c.parse_cpuacct_usage('123456789\n') == 123456
    assert c.parse_cpuacct_usage('') is None
    assert c.parse_cpuacct_usage('x') is None


V2_CGROUP = '0::/machine.slice/machine-qemu\\x2d4\\x2dkvmlab\\x2dbusy\\x2dgold\\x2d1.scope/libvirt/emulator\n'
V1_CGROUP = ('12:cpuset:/machine/gold.partition/qemu-7-busy-gold-1.libvirt-qemu/emulator\n'
             '3:cpuacct:/machine/gold.partition/qemu-7-busy-gold-1.libvirt-qemu/emulator\n'
             '2:cpu:/machine/gold.partition/qemu-7-busy-gold-1.libvirt-qemu/emulator\n'
             '1:name=systemd:/\n0::/\n')


def test_guest_cgroup_is_read_from_the_process():
    assert c.guest_cgroup(V2_CGROUP) == '/machine.slice/machine-qemu\\x2d4\\x2dkvmlab\\x2dbusy\\x2dgold\\x2d1.scope'
    assert c.guest_cgroup(V1_CGROUP, 'cpuacct') == '/machine/gold.partition/qemu-7-busy-gold-1.libvirt-qemu'
    # the unified line of a v1 host says nothing: no path is guessed
    assert c.guest_cgroup(V1_CGROUP) is None
    assert c.guest_cgroup('', 'cpuacct') is None
    assert c.guest_cgroup('4:cpu,cpuacct:/machine/qemu-1-a.libvirt-qemu/vcpu0\n', 'cpuacct') == \
        '/machine/qemu-1-a.libvirt-qemu'


def test_partition_cgroup():
    assert c.partition_cgroup('/machine/gold') == '/machine/gold.partition'
    assert c.partition_cgroup('/machine') == '/machine'
    assert c.partition_cgroup('/machine/a/b') == '/machine/a.partition/b.partition'
    with pytest.raises(c.ContentionError):
        c.partition_cgroup('/')


def _phase_summary(phase, name, loaded, usage):
    scen = {'name': name, 'loaded': loaded, 'checks': c.default_checks(loaded, NAMES), 'phase': phase}
    run = c.compute_run(WEIGHTS, loaded, usage, 30 * SEC, 4, checks=scen['checks'])
    return c.summarize_scenario(scen, [run])


def test_compare_phases_sets_the_same_scenario_side_by_side():
    scenarios = [
        _phase_summary('in_place', 'all_loaded', NAMES, _usage(40.0, 36.0, 24.0)),
        _phase_summary('in_place', 'gold_alone', ['gold'], _usage(95.0, 0, 0)),
        _phase_summary('moved', 'all_loaded', NAMES, _usage(50.0, 33.0, 17.0)),
        _phase_summary('moved', 'gold_alone', ['gold'], _usage(97.0, 0, 0)),
        _phase_summary('moved', 'gold_idle', ['silver', 'bronze'], _usage(0, 66.0, 34.0)),
    ]
    assert scenarios[0]['phase'] == 'in_place'
    compared = c.compare_phases(scenarios)
    assert [(e['scenario'], e['tier']) for e in compared] == [
        ('all_loaded', 'gold'), ('all_loaded', 'silver'), ('all_loaded', 'bronze'), ('gold_alone', 'gold')]
    gold = compared[0]
    assert gold['shares'] == {'in_place': 40.0, 'moved': 50.0}
    assert gold['spread_points'] == 10.0 and gold['promised_pct'] == 50.59
    assert compared[2]['spread_points'] == 7.0
    alone = compared[3]
    assert alone['promised_pct'] == 100.0 and alone['shares'] == {'in_place': 95.0, 'moved': 97.0}
    assert alone['spread_points'] == 2.0
