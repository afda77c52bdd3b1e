"""The metrics collector: parsers, share arithmetic, reading fake hosts, the script end to end."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _metrics as m
from ansible_collections.kvmlab.host_resources.tests.unit.metrics_tree import (
    FakeHost, SEED001_POOLS, config, seed001_host, service_argv,
)

SCRIPT = m.__file__
TICKS = os.sysconf('SC_CLK_TCK')
PAGE = os.sysconf('SC_PAGE_SIZE')


# ---------------------------------------------------------------------------
# parsers

def test_cpulist():
    assert m.parse_cpulist('0-2,5,7-8\n') == frozenset([0, 1, 2, 5, 7, 8])
    assert m.parse_cpulist('') == frozenset()
    with pytest.raises(ValueError):
        m.parse_cpulist('3-1')
    with pytest.raises(ValueError):
        m.parse_cpulist('a')


def test_cpu_stat():
    text = 'usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n'
    assert m.parse_cpu_stat(text) == {'usage_usec': 1234567, 'user_usec': 1000000, 'system_usec': 234567,
                                      'nr_periods': 0}
    assert m.parse_cpu_stat('') == {}


def test_schedstat_field_two_is_run_delay():
    assert m.parse_schedstat('8716289 2133987 54\n') == (8716289, 2133987, 54)
    with pytest.raises(ValueError):
        m.parse_schedstat('garbage')


def test_proc_stat_busy_excludes_idle_and_iowait():
    text = ('cpu  10 0 10 100 5 0 0 0 0 0\n'
            'cpu0 1 2 3 100 50 4 5 6 7 8\n'
            'cpu1 10 0 0 0 0 0 0 0\nintr 5\n')
    stat = m.parse_proc_stat(text)
    assert stat[0] == (1 + 2 + 3 + 4 + 5 + 6, 1 + 2 + 3 + 100 + 50 + 4 + 5 + 6)
    assert stat[1] == (10, 10)
    assert m.busy_seconds(stat, [0, 1, 9], 100) == pytest.approx(0.31)


def test_pressure():
    text = ('some avg10=1.50 avg60=0.80 avg300=0.20 total=123456\n'
            'full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n')
    out = m.parse_pressure(text)
    assert out['some']['total'] == 123456 and out['some']['avg10'] == 1.5
    assert out['full']['total'] == 42
    assert m.parse_pressure('some avg10=1\n') == {}


def test_meminfo_swaps_and_swap_used():
    meminfo = 'MemTotal:  1000 kB\nSwapTotal: 4096 kB\nSwapFree: 1024 kB\nHugePages_Total: 0\n'
    assert m.parse_meminfo(meminfo)['SwapTotal'] == 4096 * 1024
    assert m.parse_meminfo(meminfo)['HugePages_Total'] == 0
    swaps = ('Filename Type Size Used Priority\n/dev/zram0 partition 8388604 2048 100\n'
             '/swapfile file 1048572 1024 -2\n')
    assert [s['used_bytes'] for s in m.parse_swaps(swaps)] == [2048 * 1024, 1024 * 1024]
    assert m.parse_swaps(swaps)[1]['priority'] == -2
    assert m.swap_used_bytes(swaps, meminfo) == 3072 * 1024
    assert m.swap_used_bytes(None, meminfo) == 3072 * 1024
    assert m.swap_used_bytes('Filename Type Size Used Priority\n', meminfo) == 0
    assert m.swap_used_bytes(None, None) is None


def test_zram_mm_stat_and_ksm():
    stat = m.parse_zram_mm_stat('  4096000   1024000   1200000        0  1234  5  0  0  0\n')
    assert stat == {'orig_data_size': 4096000, 'compr_data_size': 1024000, 'mem_used_total': 1200000}
    with pytest.raises(ValueError):
        m.parse_zram_mm_stat('1 2')
    assert m.ksm_figures(1000, 10, 4096) == {'pages_sharing': 1000, 'pages_shared': 10, 'saved_bytes': 4096000}


def test_pid_stat_with_parentheses_in_comm():
    text = '42 (a (b) c) S 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 555 0 0'
    assert m.parse_pid_stat(text) == {'comm': 'a (b) c', 'utime': 7, 'stime': 3, 'starttime': 555}
    with pytest.raises(ValueError):
        m.parse_pid_stat('42 (x) S 1')


def test_status_field_cgroup_and_vcpu_names():
    assert m.status_field('Name:\tCPU 0/KVM\nCpus_allowed_list:\t2-7\n', 'Cpus_allowed_list') == '2-7'
    assert m.status_field('Name: x\n', 'Cpus_allowed_list') is None
    assert m.parse_proc_cgroup('1:cpu:/\n0::/machine.slice/x.scope/libvirt/emulator\n') == \
        '/machine.slice/x.scope/libvirt/emulator'
    assert m.parse_proc_cgroup('1:cpu:/\n') is None
    assert m.vcpu_index('CPU 3/KVM\n') == 3
    assert m.vcpu_index('CPU 12/TCG') == 12
    assert m.vcpu_index('IO iothread1') is None
    assert m.vcpu_index('CPU 1/XYZ') is None


def test_guest_process_cgroup():
    assert m.is_guest_process_cgroup('/machine.slice/machine-gold.slice/machine-qemu\\x2d3\\x2dkvm\\x2dworker\\x2d01.scope/libvirt/emulator')
    assert m.is_guest_process_cgroup('/machine/qemu-3-kvm-worker-01.libvirt-qemu/emulator')
    assert not m.is_guest_process_cgroup('/system.slice/virtqemud.service')
    assert not m.is_guest_process_cgroup('/user.slice/user-0.slice/session-1.scope')
    assert not m.is_guest_process_cgroup('')
    assert not m.is_guest_process_cgroup(None)


def test_guest_names_and_cgroups():
    assert m.guest_name_of_cgroup('machine-qemu\\x2d3\\x2dkvm\\x2dworker\\x2d01.scope') == 'kvm-worker-01'
    assert m.guest_name_of_cgroup('qemu-7-vm1.libvirt-qemu') == 'vm1'
    assert m.guest_name_of_cgroup('session-1.scope') is None
    assert m.guest_cgroup('/machine.slice/machine-gold.slice/machine-qemu\\x2d1\\x2da.scope/libvirt/emulator') == \
        '/machine.slice/machine-gold.slice/machine-qemu\\x2d1\\x2da.scope'
    assert m.guest_cgroup('/machine/qemu-1-a.libvirt-qemu/emulator') == '/machine/qemu-1-a.libvirt-qemu'
    assert m.guest_cgroup('/odd/libvirt/emulator') == '/odd'
    assert m.slice_cgroup('machine-gold.slice') == '/machine.slice/machine-gold.slice'
    with pytest.raises(m.MetricsError):
        m.slice_cgroup('gold')


# ---------------------------------------------------------------------------
# configuration and computations

def test_normalize_config():
    cfg = m.normalize_config(config())
    assert cfg['tiers']['gold'] == {'slice': 'machine-gold.slice', 'weight': 512,
                                    'cgroup': '/machine.slice/machine-gold.slice'}
    assert cfg['pools']['guest_domain'] == frozenset(range(2, 8))
    assert cfg['busy_threshold_cpus'] == 0.1
    assert m.normalize_config({})['tiers'] == {}
    with pytest.raises(m.MetricsError, match='tiers.gold.weight'):
        m.normalize_config({'tiers': {'gold': {'slice': 'machine-gold.slice', 'weight': 0}}})
    with pytest.raises(m.MetricsError, match='pools.guest_domain'):
        m.normalize_config({'pools': {'guest_domain': 'x'}})
    with pytest.raises(m.MetricsError, match='busy_threshold_cpus'):
        m.normalize_config({'busy_threshold_cpus': -1})
    with pytest.raises(m.MetricsError, match='guests'):
        m.normalize_config({'guests': {'a': 1}})


def test_tier_of():
    tiers = m.normalize_config(config())['tiers']
    assert m.tier_of('/machine.slice/machine-silver.slice/machine-qemu\\x2d1\\x2da.scope', tiers) == ('silver', True)
    assert m.tier_of('/machine.slice/machine-qemu\\x2d1\\x2da.scope', tiers, 'a', {'a': 'gold'}) == ('gold', False)
    assert m.tier_of('/machine.slice/machine-qemu\\x2d1\\x2da.scope', tiers, 'a', {'a': 'platinum'}) == (None, False)


def test_tier_shares_all_busy():
    weights = {'gold': 512, 'silver': 333, 'bronze': 167}
    out = m.tier_shares(weights, {'gold': 30.0, 'silver': 20.0, 'bronze': 10.0}, 15.0, 0.1)
    assert out['gold']['entitled'] == pytest.approx(512 / 1012.0)
    assert out['bronze']['entitled'] == pytest.approx(167 / 1012.0)
    assert out['gold']['achieved'] == pytest.approx(0.5)
    assert out['silver']['cpus'] == pytest.approx(20 / 15.0)
    assert all(out[t]['busy'] for t in weights)


def test_tier_shares_idle_tier_leaves_the_entitlement():
    weights = {'gold': 512, 'silver': 333, 'bronze': 167}
    # gold used 1 s in 15 s (0.067 CPUs) < 0.1: idle
    out = m.tier_shares(weights, {'gold': 1.0, 'silver': 30.0, 'bronze': 15.0}, 15.0, 0.1)
    assert out['gold'] == {'busy': False, 'cpus': pytest.approx(1 / 15.0), 'entitled': None, 'achieved': None}
    assert out['silver']['entitled'] == pytest.approx(333 / 500.0)
    assert out['silver']['achieved'] == pytest.approx(30 / 45.0)
    assert out['bronze']['achieved'] == pytest.approx(15 / 45.0)


def test_tier_shares_without_interval_and_negative_delta():
    out = m.tier_shares({'gold': 512}, {'gold': 5.0}, None, 0.1)
    assert out['gold'] == {'busy': None, 'cpus': None, 'entitled': None, 'achieved': None}
    # a counter that went down (a guest left the tier) counts as no use
    out = m.tier_shares({'gold': 512, 'bronze': 167}, {'gold': -4.0, 'bronze': 15.0}, 15.0, 0.1)
    assert out['gold']['busy'] is False and out['bronze']['entitled'] == 1.0


def test_accumulate_outside():
    first = m.accumulate_outside(None, {'10:5': 200, '11:6': 100}, 100)
    assert first['total'] == pytest.approx(3.0)
    second = m.accumulate_outside(first, {'10:5': 250, '12:9': 40}, 100)
    assert second['total'] == pytest.approx(3.0 + 0.5 + 0.4)
    assert second['procs'] == {'10:5': 250, '12:9': 40}
    # pid reuse: a new start time is a new process
    third = m.accumulate_outside(second, {'10:77': 10}, 100)
    assert third['total'] == pytest.approx(3.9 + 0.1)


def test_policy_verdicts():
    assert m.policy_verdicts({'layers': {'memory': {'verdict': 'applied'}, 'x': {'verdict': ''}}}) == \
        {'memory': 'applied'}
    assert m.policy_verdicts({'memory': 'drift'}) == {'memory': 'drift'}
    assert m.policy_verdicts([1]) == {}


def test_render_escapes_and_leaves_out_empty_families():
    text = m.render([
        ('kvmlab_a', 'gauge', 'help with \\ and\nnewline', [({'x': 'q"u\\o\nte'}, 1.5), ({'x': 'b'}, 2)]),
        ('kvmlab_b_total', 'counter', 'empty', []),
        ('kvmlab_c', 'gauge', 'none value', [({}, None)]),
    ])
    assert text == ('# HELP kvmlab_a help with \\\\ and\\nnewline\n# TYPE kvmlab_a gauge\n'
                    'kvmlab_a{x="b"} 2\nkvmlab_a{x="q\\"u\\\\o\\nte"} 1.5\n'
                    '# HELP kvmlab_c none value\n# TYPE kvmlab_c gauge\n')
    with pytest.raises(m.MetricsError):
        m.render([('bad-name', 'gauge', 'x', [({}, 1)])])
    with pytest.raises(m.MetricsError):
        m.render([('kvmlab_x', 'gauge', 'x', [({'bad-label': 1}, 1)])])
    assert m.format_value(True) == '1' and m.format_value(3.0) == '3' and m.format_value(0.25) == '0.25'


# ---------------------------------------------------------------------------
# reading fake hosts

def _lab(tmp_path):
    host = FakeHost(tmp_path / 'root')
    host.cgroup('/machine.slice')
    host.cgroup('/machine.slice/machine-gold.slice', usage_usec=0)
    host.cgroup('/machine.slice/machine-silver.slice', usage_usec=0)
    host.guest('kvm-worker-01', 2, tier_slice='machine-gold.slice', usage_usec=0)
    host.guest('kvm-worker-02', 2, tier_slice='machine-silver.slice', usage_usec=0)
    # bronze: no slice yet; its guest still in machine.slice, tier from the configured map
    host.guest('kvm-worker-03', 2, usage_usec=0, allowed='0-7')
    return host


def _collect(host, previous=None, **cfg):
    data = config(guests={'kvm-worker-03': 'bronze'})
    data.update(cfg)
    return m.collect(m.normalize_config(data), m.Host(host.root), previous, clock_ticks=100, page_size=4096)


def _samples(families, name):
    for fam_name, _kind, _help, samples in families:
        if fam_name == name:
            return dict((tuple(sorted(labels.items())), value) for labels, value in samples if value is not None)
    raise KeyError(name)


def test_collect_first_and_second_sample(tmp_path):
    host = _lab(tmp_path)
    families, state = _collect(host)
    assert _samples(families, 'kvmlab_tier_running_guests') == {
        (('tier', 'bronze'),): 1, (('tier', 'gold'),): 1, (('tier', 'silver'),): 1}
    assert _samples(families, 'kvmlab_tier_slice_present') == {
        (('tier', 'bronze'),): 0, (('tier', 'gold'),): 1, (('tier', 'silver'),): 1}
    assert _samples(families, 'kvmlab_tier_entitled_share') == {}  # no previous sample yet
    assert state['uptime'] == 1000.0

    # 15 s later: gold's slice used 20 CPU-s, silver's 10, the bronze guest (outside its slice) 0.5
    host.advance(15)
    host.cgroup('/machine.slice/machine-gold.slice', usage_usec=20000000)
    host.cgroup('/machine.slice/machine-silver.slice', usage_usec=10000000)
    host.set_guest('kvm-worker-03', usage_usec=500000, delay_ns=250000000)
    families, state2 = _collect(host, json.loads(json.dumps(state)))
    assert _samples(families, 'kvmlab_collector_interval_seconds') == {(): 15.0}
    assert _samples(families, 'kvmlab_tier_cpu_seconds_total') == {
        (('tier', 'bronze'),): 0.5, (('tier', 'gold'),): 20.0, (('tier', 'silver'),): 10.0}
    busy = _samples(families, 'kvmlab_tier_busy')
    assert busy[(('tier', 'bronze'),)] == 0 and busy[(('tier', 'gold'),)] == 1
    entitled = _samples(families, 'kvmlab_tier_entitled_share')
    assert entitled == {(('tier', 'gold'),): pytest.approx(512 / 845.0), (('tier', 'silver'),): pytest.approx(333 / 845.0)}
    achieved = _samples(families, 'kvmlab_tier_achieved_share')
    assert achieved[(('tier', 'gold'),)] == pytest.approx(2 / 3.0)
    delay = _samples(families, 'kvmlab_guest_vcpu_run_delay_seconds_total')
    assert delay[(('guest', 'kvm-worker-03'), ('tier', 'bronze'))] == pytest.approx(0.5)  # 2 vCPUs x 0.25 s
    confined = _samples(families, 'kvmlab_guest_vcpus_confined')
    assert confined[(('guest', 'kvm-worker-01'), ('tier', 'gold'))] == 1
    assert confined[(('guest', 'kvm-worker-03'), ('tier', 'bronze'))] == 0
    assert _samples(families, 'kvmlab_guest_vcpus')[(('guest', 'kvm-worker-02'), ('tier', 'silver'))] == 2


def test_reboot_or_foreign_state_starts_over(tmp_path):
    host = _lab(tmp_path)
    _families, state = _collect(host)
    host.advance(15)
    host.write_boot_id('99999999-0000-0000-0000-000000000000')
    families, _state = _collect(host, state)
    assert _samples(families, 'kvmlab_collector_interval_seconds') == {}
    families, _state = _collect(host, {'version': 99, 'uptime': 1})
    assert _samples(families, 'kvmlab_tier_busy') == {}


def test_pool_busy_seconds(tmp_path):
    host = _lab(tmp_path)
    host.add_cpu_ticks(0, user=100, system=50, idle=1000)
    host.add_cpu_ticks(1, iowait=500, steal=25)
    host.add_cpu_ticks(5, user=300)
    families, _state = _collect(host)
    busy = _samples(families, 'kvmlab_pool_busy_seconds_total')
    assert busy[(('pool', 'host_reserved'),)] == pytest.approx(1.75)
    assert busy[(('pool', 'guest_domain'),)] == pytest.approx(3.0)
    assert _samples(families, 'kvmlab_pool_cpus')[(('pool', 'guest_domain'),)] == 6


def test_host_services_outside_reserve(tmp_path):
    host = _lab(tmp_path)
    # system.slice confined by the kernel: skipped whole even though a process inside claims all CPUs
    host.cgroup('/system.slice', effective='0-1')
    host.cgroup('/system.slice/ssh.service', effective='0-1', procs=[50])
    host.process(50, 'sshd', '/system.slice/ssh.service', '0-7', utime=1000)
    # user.slice not confined: one process inside the reserve, one outside
    host.cgroup('/user.slice', effective='0-7')
    host.cgroup('/user.slice/user-0.slice/session-1.scope', procs=[60, 61])
    host.process(60, 'bash', '/user.slice/user-0.slice/session-1.scope', '0-1', utime=500)
    host.process(61, 'make', '/user.slice/user-0.slice/session-1.scope', '0-7', utime=150, stime=50, starttime=900)
    families, state = _collect(host)
    assert _samples(families, 'kvmlab_host_services_outside_reserve_cpu_seconds_total') == {(): 2.0}
    assert _samples(families, 'kvmlab_host_services_outside_reserve_processes') == {(): 1}
    host.advance(15)
    host.process(61, 'make', '/user.slice/user-0.slice/session-1.scope', '0-7', utime=250, stime=50, starttime=900)
    families, _state = _collect(host, state)
    assert _samples(families, 'kvmlab_host_services_outside_reserve_cpu_seconds_total') == {(): 3.0}


def test_memory_pressure_and_policy(tmp_path):
    host = _lab(tmp_path)
    host.ksm(sharing=25600, shared=1000)
    host.zram('zram0', orig=400 << 20, compr=100 << 20, used=110 << 20)
    host.swaps([2048])
    host.pressure('cpu', 5000000, 0)
    host.pressure('memory', 250000, 125000)
    host.policy('/var/lib/kvmlab/policy_status.json', {'memory': {'verdict': 'applied'},
                                                       'shared_execution_pool': {'verdict': 'drift'}})
    families, _state = _collect(host)
    assert _samples(families, 'kvmlab_ksm_saved_bytes') == {(): 25600 * 4096}
    assert _samples(families, 'kvmlab_ksm_pages_shared') == {(): 1000}
    assert _samples(families, 'kvmlab_zram_original_bytes') == {(('device', 'zram0'),): 400 << 20}
    assert _samples(families, 'kvmlab_zram_compressed_bytes') == {(('device', 'zram0'),): 100 << 20}
    assert _samples(families, 'kvmlab_zram_used_bytes') == {(('device', 'zram0'),): 110 << 20}
    assert _samples(families, 'kvmlab_swap_used_bytes') == {(): 2048 * 1024}
    psi = _samples(families, 'kvmlab_pressure_stall_seconds_total')
    assert psi[(('kind', 'some'), ('resource', 'cpu'))] == 5.0
    assert psi[(('kind', 'full'), ('resource', 'memory'))] == 0.125
    assert _samples(families, 'kvmlab_policy_status') == {
        (('layer', 'memory'), ('verdict', 'applied')): 1,
        (('layer', 'shared_execution_pool'), ('verdict', 'drift')): 1}


def test_bare_host_reports_zero_or_absent(tmp_path):
    """No tier slice, no guest, no zram, no KSM, no PSI, no policy file, not even cgroups."""
    host = FakeHost(tmp_path / 'root')
    families, _state = _collect(host)
    text = m.render(families)
    assert 'kvmlab_tier_cpu_seconds_total{tier="gold"} 0' in text
    assert 'kvmlab_tier_slice_present{tier="gold"} 0' in text
    assert 'kvmlab_tier_running_guests{tier="gold"} 0' in text
    for absent in ('kvmlab_zram', 'kvmlab_ksm', 'kvmlab_guest_', 'kvmlab_pressure', 'kvmlab_policy', 'kvmlab_swap'):
        assert absent not in text


def test_guest_without_pid_file_found_by_its_scope_and_stale_pid_file(tmp_path):
    host = _lab(tmp_path)
    host.guest('lonely', 1, tier_slice='machine-gold.slice', pid_file=False)
    host.write('/run/libvirt/qemu/gone.pid', '99999')
    host.write('/run/libvirt/qemu/junk.pid', 'x')
    # libvirt 9's QEMU driver keeps its daemon's pid in driver.pid next to the guests'
    host.process(4242, 'virtqemud', '/system.slice/virtqemud.service', '0-1')
    host.write('/run/libvirt/qemu/driver.pid', '4242')
    families, _state = _collect(host)
    info = _samples(families, 'kvmlab_guest_tier_info')
    assert (('guest', 'lonely'), ('tier', 'gold')) in info
    assert not [k for k in info if ('guest', 'gone') in k]
    assert not [k for k in info if ('guest', 'driver') in k]
    assert sorted(dict(k)['guest'] for k in info) == ['kvm-worker-01', 'kvm-worker-02', 'kvm-worker-03', 'lonely']
    assert _samples(families, 'kvmlab_tier_running_guests')[(('tier', 'gold'),)] == 2


def test_guest_without_tier(tmp_path):
    host = FakeHost(tmp_path / 'root')
    host.guest('stray', 1, usage_usec=3000000)
    families, _state = _collect(host)
    assert _samples(families, 'kvmlab_guest_cpu_seconds_total') == {(('guest', 'stray'), ('tier', 'none')): 3.0}


# ---------------------------------------------------------------------------
# the script end to end

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? '
                        r'(-?[0-9.eE+-]+|NaN|[+-]Inf)$')


def check_format(text):
    """A small checker of the text format: HELP then TYPE before a family's samples, one block per family,
    valid names, escaped label values, numeric values, counters ending in _total; returns the families."""
    assert text.endswith('\n')
    families = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith('# HELP '):
            name = line.split()[2]
            assert name not in families, 'family %s repeated (line %d)' % (name, number)
            families[name] = {'type': None, 'samples': 0}
            current = name
        elif line.startswith('# TYPE '):
            _hash, _type, name, kind = line.split()
            assert name == current and families[name]['type'] is None, 'TYPE without HELP (line %d)' % number
            assert kind in ('counter', 'gauge')
            assert kind != 'counter' or name.endswith('_total'), name
            families[name]['type'] = kind
        else:
            match = _SAMPLE_RE.match(line)
            assert match, 'line %d does not parse: %r' % (number, line)
            assert match.group(1) == current and families[current]['type'], 'sample outside its family: %r' % line
            assert match.group(1).startswith('kvmlab_')
            float(match.group(3))
            families[current]['samples'] += 1
    assert all(f['samples'] for f in families.values())
    return families


def _write_config(tmp_path, host, **overrides):
    path = tmp_path / 'metrics.json'
    path.write_text(json.dumps(config(**overrides)))
    return str(path)


def _run_script(tmp_path, host, cfg_path):
    out = tmp_path / 'prom' / 'kvmlab.prom'
    out.parent.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, SCRIPT, '--config', cfg_path, '--output', str(out),
                           '--state', str(tmp_path / 'state.json'), '--root', host.root],
                          capture_output=True, text=True, check=False)
    return proc, out


def test_script_end_to_end(tmp_path):
    host = _lab(tmp_path)
    host.ksm(100, 10)
    host.zram('zram0', 4096, 1024, 2048)
    host.pressure('cpu', 10, 0)
    host.policy('/var/lib/kvmlab/policy_status.json', {'memory': {'verdict': 'applied'}})
    cfg = _write_config(tmp_path, host, guests={'kvm-worker-03': 'bronze'})
    proc, out = _run_script(tmp_path, host, cfg)
    assert proc.returncode == 0, proc.stderr
    first = check_format(out.read_text())
    assert 'kvmlab_tier_entitled_share' not in first
    host.advance(15)
    host.cgroup('/machine.slice/machine-gold.slice', usage_usec=15000000)
    host.cgroup('/machine.slice/machine-silver.slice', usage_usec=15000000)
    proc, out = _run_script(tmp_path, host, cfg)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    families = check_format(text)
    for name in ('kvmlab_tier_entitled_share', 'kvmlab_tier_achieved_share', 'kvmlab_guest_vcpu_run_delay_seconds_total',
                 'kvmlab_pool_busy_seconds_total', 'kvmlab_ksm_saved_bytes', 'kvmlab_zram_used_bytes',
                 'kvmlab_policy_status', 'kvmlab_collector_cpu_seconds'):
        assert name in families
    assert 'kvmlab_tier_achieved_share{tier="gold"} 0.5\n' in text
    assert 'kvmlab_collector_success 1\n' in text
    # nothing but the output and the state: the temp file was renamed
    assert sorted(os.listdir(str(out.parent))) == ['kvmlab.prom']
    assert oct(os.stat(str(tmp_path / 'state.json')).st_mode & 0o777) == '0o600'
    promtool = shutil.which('promtool')
    if promtool:
        check = subprocess.run([promtool, 'check', 'metrics'], input=text, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_accepts_output(tmp_path):
    promtool = shutil.which('promtool')
    if not promtool:
        pytest.skip('promtool not installed (Debian package prometheus)')
    host = _lab(tmp_path)
    proc, out = _run_script(tmp_path, host, _write_config(tmp_path, host))
    assert proc.returncode == 0
    check = subprocess.run([promtool, 'check', 'metrics'], input=out.read_text(), capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr


def test_script_bad_config_writes_failure_not_traceback(tmp_path):
    host = FakeHost(tmp_path / 'root')
    cfg = tmp_path / 'metrics.json'
    cfg.write_text('{"tiers": {"gold": {"weight": -1}}}')
    proc, out = _run_script(tmp_path, host, str(cfg))
    assert proc.returncode == 1
    assert 'tiers.gold.weight' in proc.stderr and 'Traceback' not in proc.stderr
    assert 'kvmlab_collector_success 0\n' in out.read_text()
    check_format(out.read_text())


def test_13_guests_in_process_and_as_the_service_runs_it(tmp_path):
    """seed 001's 13 guests (122 vCPUs), in-process and through the service's own ExecStart line.

    Its CPU per run (issue 14's goal, under 50 ms) is a benchmark, not a timed test:
    tests/bench/bench_metrics_collector.py.
    """
    host = seed001_host(tmp_path / 'root')
    cfg = _write_config(tmp_path, host, pools=SEED001_POOLS)
    out = str(tmp_path / 'kvmlab.prom')
    state = str(tmp_path / 'state.json')
    assert m.run(cfg, out, state, host.root) == 0
    host.advance(15)
    assert m.run(cfg, out, state, host.root) == 0
    text = open(out).read()
    assert text.count('kvmlab_guest_vcpus{') == 13
    assert 'kvmlab_guest_vcpus{guest="ocp-infra-01",tier="silver"} 16' in text
    # as the service runs it: its ExecStart line (the system interpreter, isolated, without
    # site-packages, importing the installed copy so that its bytecode is cached)
    lib, state_dir = tmp_path / 'lib', tmp_path / 'state'
    lib.mkdir()
    state_dir.mkdir()
    argv = service_argv(m, lib, state_dir, cfg, out, state)
    os.unlink(out)
    host.advance(15)
    subprocess.run(argv + ['--root', host.root], check=True)
    assert open(out).read().count('kvmlab_guest_vcpus{') == 13
    assert 'kvmlab_collector_success 1\n' in open(out).read()
    # the installed copy's bytecode is cached under the state directory, not next to it
    assert list((state_dir / m.PYCACHE_NAME).rglob('kvmlab_metrics*.pyc'))
    assert not list(lib.rglob('*.pyc'))


@pytest.mark.parametrize('argv, problem', [
    (['--output', 'o.prom'], 'missing --config'),
    (['--config', 'c'], 'missing --output'),
    ([], 'missing --config, --output'),
    (['--config', 'c', '--output'], '--output needs a value'),
    (['--config', 'c', '--output', 'o', '--colour', 'x'], "unknown argument '--colour'"),
    (['c', '--output', 'o'], "unknown argument 'c'"),
])
def test_parse_args_rejects(argv, problem):
    with pytest.raises(m.MetricsError) as err:
        m.parse_args(argv)
    assert str(err.value) == problem


def test_parse_args_forms_and_defaults():
    assert m.parse_args(['--config', 'c', '--output=o.prom']) == {'config': 'c', 'output': 'o.prom',
                                                                  'state': None, 'root': '/'}
    # a later word wins (the service's line plus a test's --root)
    assert m.parse_args(['--config', 'c', '--output', 'o', '--state', 's', '--root', '/a', '--root', '/b'])['root'] == '/b'


def test_main_usage_error_exit_2(capsys):
    assert m.main(['--config', 'c']) == 2
    err = capsys.readouterr().err
    assert 'kvmlab_metrics: missing --output' in err and m.USAGE in err and 'Traceback' not in err
