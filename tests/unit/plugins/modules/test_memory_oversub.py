"""memory_oversub against fixture trees (sysfs, procfs, /etc) and a stateful fake of the commands."""
import json
import os
import re
import stat

import pytest

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _memory_files as files
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_files import MANAGED_MARKER
from ansible_collections.kvmlab.host_resources.plugins.modules import memory_oversub
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

MIB = 1024 ** 2
MEM_TOTAL_KIB = 3000 * 1024
SEED = {
    'zram': {'size': '16G', 'max_ram_share': 50, 'algorithm': 'zstd', 'priority': 100},
    'thp': {'enabled': 'madvise', 'defrag': 'madvise'},
    'ksm': {'run': 1, 'pages_to_scan': 1000, 'sleep_millisecs': 20},
}
WANTED_SIZE = 1472 * MIB


class FakeHost(object):
    """A fixture tree plus a fake of systemctl, swapoff, zramctl, ... that changes it like the host would."""

    def __init__(self, base, generator=True, numa=True):
        self.sys = str(base / 'sys')
        self.proc = str(base / 'proc')
        self.root = str(base / 'root')
        self.calls = []
        self.active = {}
        self.swaps = []
        self.mem_available_kib = 2000 * 1024
        self.write(self.sys, 'kernel/mm/transparent_hugepage/enabled', '[always] madvise never\n')
        self.write(self.sys, 'kernel/mm/transparent_hugepage/defrag', 'always defer defer+madvise [madvise] never\n')
        ksm = {'run': 0, 'pages_to_scan': 100, 'sleep_millisecs': 20, 'pages_shared': 0, 'pages_sharing': 0,
               'pages_unshared': 0, 'pages_volatile': 0, 'full_scans': 0}
        if numa:
            ksm['merge_across_nodes'] = 1
        for name, value in ksm.items():
            self.write(self.sys, 'kernel/mm/ksm/' + name, '%s\n' % value)
        self.write(self.proc, 'sys/vm/swappiness', '60\n')
        self.write(self.proc, 'sys/vm/page-cluster', '3\n')
        self.write_meminfo()
        self.write_swaps()
        os.makedirs(os.path.join(self.sys, 'block'))
        os.makedirs(os.path.join(self.root, 'etc'))
        if generator:
            self.write(self.root, 'lib/systemd/system-generators/zram-generator', '#!/bin/false\n')
            self.write(self.root, 'etc/systemd/zram-generator.conf', '# Debian default\n[zram0]\n')

    # -- tree ---------------------------------------------------------------
    @staticmethod
    def write(base, rel, text):
        path = os.path.join(base, rel)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
        with open(path, 'w') as handle:
            handle.write(text)

    @staticmethod
    def read(base, rel):
        path = os.path.join(base, rel)
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return handle.read()

    def write_meminfo(self):
        self.write(self.proc, 'meminfo', 'MemTotal: %d kB\nMemFree: 100000 kB\nMemAvailable: %d kB\n'
                   % (MEM_TOTAL_KIB, self.mem_available_kib))

    def write_swaps(self):
        lines = ['Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority']
        for dev, size, used, prio in self.swaps:
            lines.append('%s partition\t%d\t%d\t%d' % (dev, size // 1024, used // 1024, prio))
        self.write(self.proc, 'swaps', '\n'.join(lines) + '\n')

    def sysval(self, rel):
        return (self.read(self.sys, rel) or '').strip()

    def zram_up(self, size, algorithm, priority, used=0):
        self.write(self.sys, 'block/zram0/disksize', '%d\n' % size)
        algos = ['lzo', 'lzo-rle', 'lz4', 'zstd']
        self.write(self.sys, 'block/zram0/comp_algorithm',
                   ' '.join('[%s]' % a if a == (algorithm or 'lzo-rle') else a for a in algos) + '\n')
        self.write(self.sys, 'block/zram0/mm_stat', '%d %d %d 0 0 0 0 0\n' % (used, used // 3, used // 2))
        self.write(self.sys, 'block/zram0/reset', '')
        os.makedirs(os.path.join(self.sys, 'class/zram-control'), exist_ok=True)
        self.swaps = [s for s in self.swaps if s[0] != '/dev/zram0'] + [('/dev/zram0', size - 4096, used, priority)]
        self.write_swaps()

    def zram_down(self):
        self.swaps = [s for s in self.swaps if s[0] != '/dev/zram0']
        self.write_swaps()
        if os.path.exists(os.path.join(self.sys, 'block/zram0')):
            self.write(self.sys, 'block/zram0/disksize', '0\n')

    # -- commands -----------------------------------------------------------
    def run_command(self, module, args, **kwargs):
        args = [os.path.basename(args[0])] + list(args[1:])
        self.calls.append(' '.join(args))
        if args[0] == 'systemctl':
            verb = args[1]
            units = [a for a in args[2:] if not a.startswith('-')]
            if verb == 'is-active':
                return 0, ''.join('%s\n' % self.active.get(u, 'inactive') for u in units), ''
            if verb == 'stop':
                for unit in units:
                    self.active[unit] = 'inactive'
                if 'systemd-zram-setup@zram0.service' in units or files.UNIT_NAME in units:
                    self.zram_down()
                return 0, '', ''
            if verb == 'start':
                unit = units[0]
                if unit == 'dev-zram0.swap':
                    conf = self.read(self.root, files.GENERATOR_DROPIN)
                    keys = dict(re.findall(r'^([\w-]+) = (.*)$', conf, re.M))
                    self.zram_up(int(keys['zram-size']) * MIB, keys.get('compression-algorithm'),
                                 int(keys['swap-priority']))
                    self.active.update({'dev-zram0.swap': 'active', 'systemd-zram-setup@zram0.service': 'active'})
                elif unit == files.UNIT_NAME:
                    text = self.read(self.root, files.UNIT_FILE)
                    size = int(re.search(r'--size (\d+)', text).group(1))
                    algo = re.search(r'--algorithm (\S+)', text)
                    prio = int(re.search(r'--priority (\d+)', text).group(1))
                    self.zram_up(size, algo.group(1) if algo else None, prio)
                    self.active[unit] = 'active'
                return 0, '', ''
            return 0, '', ''
        if args[0] == 'swapoff':
            self.zram_down()
        elif args[0] == 'zramctl':
            size = int(args[args.index('--size') + 1])
            algo = args[args.index('--algorithm') + 1] if '--algorithm' in args else None
            self.pending = (size, algo)
        elif args[0] == 'swapon':
            self.zram_up(self.pending[0], self.pending[1], int(args[args.index('--priority') + 1]))
        elif args[0] == 'modprobe' and '-r' in args:
            for rel in ('block/zram0', 'class/zram-control'):
                path = os.path.join(self.sys, rel)
                if os.path.isdir(path):
                    for name in os.listdir(path):
                        os.unlink(os.path.join(path, name))
                    os.rmdir(path)
        return 0, '', ''

    def args(self, **params):
        base = {'sysfs_root': self.sys, 'proc_root': self.proc, 'files_root': self.root}
        base.update(params)
        return base

    def commands(self):
        return [c for c in self.calls if not c.startswith('systemctl is-active')]


@pytest.fixture
def host(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path)
    install(monkeypatch, fake)
    return fake


def install(monkeypatch, fake):
    def run_command(module, args, **kwargs):
        return fake.run_command(module, args, **kwargs)
    monkeypatch.setattr(AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(AnsibleModule, 'get_bin_path',
                        lambda self, name, required=False, opt_dirs=None: '/usr/bin/' + name)


def seed(**over):
    """The seed policy with some options replaced."""
    args = dict(SEED)
    args.update(over)
    return args


def run(host, check=False, **params):
    return run_module(memory_oversub.main, host.args(**params), check_mode=check, diff=True)


def test_apply_on_stock_host(host):
    result = run(host, **SEED)
    assert result.get('failed') is not True, result.get('msg')
    assert result['changed'] is True
    assert host.sysval('kernel/mm/transparent_hugepage/enabled') == 'madvise'
    assert host.sysval('kernel/mm/ksm/run') == '1'
    assert host.sysval('kernel/mm/ksm/pages_to_scan') == '1000'
    assert host.sysval('block/zram0/disksize') == str(WANTED_SIZE)
    dropin = host.read(host.root, files.GENERATOR_DROPIN)
    assert 'zram-size = 1472' in dropin and 'swap-priority = 100' in dropin
    assert 'compression-algorithm = zstd' in dropin
    tmpfiles = host.read(host.root, files.TMPFILES_FILE)
    assert 'w /sys/kernel/mm/ksm/run - - - - 1' in tmpfiles
    assert host.read(host.root, files.SYSCTL_FILE) is None
    assert host.commands() == ['systemctl daemon-reload', 'systemctl start -- dev-zram0.swap']
    assert result['rebuilt'] is True
    assert result['verdict'] == 'applied' and result['drifted'] == []
    assert all(i['ok'] for i in result['comparison'])
    assert result['zram']['capped'] is True and result['zram']['size'] == '1472MiB'
    assert any('sized down to 1472MiB' in m for m in result['messages'])
    assert result['before']['thp']['enabled'] == 'always'
    assert result['after']['thp']['enabled'] == 'madvise'
    assert result['effect']['ksm']['run'] == 1
    assert result['effect']['zram'][0]['device'] == 'zram0'
    assert result['diff'][0]['before_header'] == 'live values'
    assert 'thp.enabled: always' in result['diff'][0]['before']
    assert 'thp.enabled: madvise' in result['diff'][0]['after']


def test_second_apply_changes_nothing(host):
    run(host, **SEED)
    host.calls = []
    result = run(host, **SEED)
    assert result['changed'] is False, result['changes']
    assert result['changes'] == [] and result['diff'] == []
    assert host.commands() == []
    assert result['verdict'] == 'applied'


def test_check_mode_changes_nothing(host):
    before = {p: host.sysval(p) for p in ('kernel/mm/transparent_hugepage/enabled', 'kernel/mm/ksm/run')}
    result = run(host, check=True, **SEED)
    assert result['changed'] is True
    assert 'zram.rebuild' in result['changes'] and 'thp.enabled' in result['changes']
    assert os.path.join(host.root, files.GENERATOR_DROPIN) in result['changes']
    assert host.commands() == []
    assert {p: host.sysval(p) for p in before} == before
    assert host.read(host.root, files.GENERATOR_DROPIN) is None
    assert result['verdict'] == 'stock'
    assert len(result['diff']) == 3  # live values, drop-in, tmpfiles


def test_check_mode_after_apply_reports_no_change(host):
    run(host, **SEED)
    result = run(host, check=True, **SEED)
    assert result['changed'] is False


def test_changed_priority_rebuilds_live(host):
    run(host, **SEED)
    host.calls = []
    wanted = seed(zram=dict(SEED['zram'], priority=50), ksm=dict(SEED['ksm'], pages_to_scan=500))
    result = run(host, **wanted)
    assert result['changed'] is True
    assert result['rebuilt'] is True
    assert host.commands() == [
        'systemctl stop -- dev-zram0.swap systemd-zram-setup@zram0.service',
        'systemctl daemon-reload',
        'systemctl start -- dev-zram0.swap',
    ]
    assert [s[3] for s in host.swaps if s[0] == '/dev/zram0'] == [50]
    assert host.sysval('kernel/mm/ksm/pages_to_scan') == '500'
    assert result['verdict'] == 'applied'
    assert 'zram.priority: 100' in result['diff'][0]['before']
    assert 'zram.priority: 50' in result['diff'][0]['after']


def test_rebuild_refused_when_swapped_data_does_not_fit(host):
    run(host, **SEED)
    host.zram_up(WANTED_SIZE, 'zstd', 100, used=1900 * MIB)
    host.mem_available_kib = 1000 * 1024
    host.write_meminfo()
    host.calls = []
    result = run(host, **seed(zram=dict(SEED['zram'], priority=50)))
    assert result['failed'] is True
    assert 'refusing to rebuild /dev/zram0' in result['msg']
    assert 'would not fit back into memory' in result['msg']
    assert host.commands() == []
    assert 'swap-priority = 100' in host.read(host.root, files.GENERATOR_DROPIN)


def test_unit_backend_without_generator(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path, generator=False)
    install(monkeypatch, fake)
    result = run(fake, **SEED)
    assert result.get('failed') is not True, result.get('msg')
    assert result['zram']['backend'] == 'unit'
    unit = fake.read(fake.root, files.UNIT_FILE)
    assert 'ExecStart=/usr/bin/swapon --priority 100 --discard /dev/zram0' in unit
    assert fake.read(fake.root, files.UNIT_WANTS).endswith('Wants=kvmlab-zram-swap.service\n')
    assert fake.commands() == ['systemctl daemon-reload', 'systemctl start -- kvmlab-zram-swap.service']
    assert result['verdict'] == 'applied'
    fake.calls = []
    assert run(fake, **SEED)['changed'] is False


def test_backend_switch_rebuilds_through_the_new_backend(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path, generator=False)
    install(monkeypatch, fake)
    run(fake, **SEED)
    fake.write(fake.root, 'lib/systemd/system-generators/zram-generator', '')
    fake.calls = []
    result = run(fake, **SEED)
    assert result['zram']['backend'] == 'zram-generator'
    assert result['rebuilt'] is True
    assert fake.commands()[0] == 'systemctl stop -- kvmlab-zram-swap.service'
    assert fake.read(fake.root, files.UNIT_FILE) is None
    assert fake.read(fake.root, files.GENERATOR_DROPIN) is not None


def test_explicit_generator_backend_missing_fails(tmp_path, monkeypatch):
    fake = FakeHost(tmp_path, generator=False)
    install(monkeypatch, fake)
    result = run(fake, zram=dict(SEED['zram'], backend='zram-generator'))
    assert result['failed'] is True
    assert 'systemd-zram-generator' in result['msg']


def test_snapshot_is_root_only_and_never_overwritten(host):
    path = os.path.join(host.root, 'var/lib/kvmlab/snapshots/memory.json')
    result = run(host, state='snapshot', snapshot_path=path, **SEED)
    assert result['changed'] is True and result['snapshot_written'] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    data = json.load(open(path))
    assert (data['schema'], data['version'], data['layer']) == ('kvmlab.host_resources/snapshot', 2, 'memory')
    assert data['values']['thp'] == {'enabled': 'always', 'defrag': 'madvise'}
    assert data['values']['ksm'] == {'run': 0, 'pages_to_scan': 100, 'sleep_millisecs': 20,
                                     'merge_across_nodes': 1}
    assert data['values']['sysctl'] == {'vm.swappiness': 60, 'vm.page-cluster': 3}
    assert data['values']['zram_generator_installed'] is True
    dropin = os.path.join(host.root, files.GENERATOR_DROPIN)
    assert data['files'][dropin] == {'exists': False}
    assert data['dirs'][os.path.dirname(path)] == {'exists': False}
    run(host, **SEED)
    again = run(host, state='snapshot', snapshot_path=path, **SEED)
    assert again['changed'] is False and again['snapshot_written'] is False
    assert json.load(open(path)) == data


def test_snapshot_check_mode_writes_nothing(host):
    path = os.path.join(host.root, 'snap/memory.json')
    result = run(host, check=True, state='snapshot', snapshot_path=path)
    assert result['changed'] is True
    assert not os.path.exists(path)


def test_rollback_restores_snapshot_exactly(host):
    path = os.path.join(host.root, 'var/lib/kvmlab/snapshots/memory.json')
    host.write(host.root, files.TMPFILES_FILE, 'w /sys/kernel/mm/ksm/run - - - - 0\n')
    os.chmod(os.path.join(host.root, files.TMPFILES_FILE), 0o640)
    run(host, state='snapshot', snapshot_path=path, **SEED)
    run(host, **seed(sysctl={'vm.swappiness': 100}))
    assert host.sysval('kernel/mm/ksm/run') == '1'
    assert host.read(host.proc, 'sys/vm/swappiness').strip() == '100'
    host.calls = []
    check = run(host, check=True, state='absent', snapshot_path=path)
    assert check['changed'] is True and host.commands() == []
    assert os.path.exists(path)
    result = run(host, state='absent', snapshot_path=path)
    assert result.get('failed') is not True, result.get('msg')
    assert result['changed'] is True
    assert host.sysval('kernel/mm/transparent_hugepage/enabled') == 'always'
    assert host.sysval('kernel/mm/ksm/run') == '0'
    assert host.sysval('kernel/mm/ksm/pages_to_scan') == '100'
    assert host.read(host.proc, 'sys/vm/swappiness').strip() == '60'
    assert host.read(host.root, files.GENERATOR_DROPIN) is None
    assert host.read(host.root, files.SYSCTL_FILE) is None
    assert not os.path.isdir(os.path.join(host.root, 'etc/systemd/zram-generator.conf.d'))
    tmpfiles = os.path.join(host.root, files.TMPFILES_FILE)
    assert host.read(host.root, files.TMPFILES_FILE) == 'w /sys/kernel/mm/ksm/run - - - - 0\n'
    assert stat.S_IMODE(os.stat(tmpfiles).st_mode) == 0o640
    assert host.commands() == [
        'systemctl stop -- dev-zram0.swap systemd-zram-setup@zram0.service',
        'systemctl daemon-reload',
        'modprobe -r zram',
    ]
    assert not any('/dev/zram0' == s[0] for s in host.swaps)
    assert all(i['ok'] for i in result['comparison']), result['comparison']
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))  # created by the snapshot, removed with it
    # its parent too: the snapshot's save created it (no other layer's snapshot lives there)
    assert not os.path.exists(os.path.join(host.root, 'var/lib/kvmlab'))
    assert result['snapshot']['values']['thp']['enabled'] == 'always'
    assert result['verdict'] == 'restored'
    host.calls = []
    again = run(host, state='absent', snapshot_path=path)
    assert again['changed'] is False
    assert host.commands() == []


def test_rollback_rebuilds_a_zram_device_that_existed(host):
    host.zram_up(512 * MIB, 'lzo-rle', 5)
    path = os.path.join(host.root, 'snap.json')
    run(host, state='snapshot', snapshot_path=path)
    run(host, **SEED)
    assert [s[3] for s in host.swaps] == [100]
    host.calls = []
    result = run(host, state='absent', snapshot_path=path)
    assert result.get('failed') is not True, result.get('msg')
    assert host.commands()[-3:] == ['zramctl --size %d --algorithm lzo-rle /dev/zram0' % (512 * MIB),
                                    'mkswap /dev/zram0', 'swapon --priority 5 /dev/zram0']
    assert 'modprobe -r zram' not in host.commands()
    assert all(i['ok'] for i in result['comparison']), result['comparison']


def test_rollback_without_snapshot_removes_only_our_files(host):
    run(host, **SEED)
    host.write(host.root, files.SYSCTL_FILE, 'vm.swappiness = 10\n')  # not ours
    result = run(host, state='absent', snapshot_path=os.path.join(host.root, 'none.json'))
    assert result['changed'] is True
    assert host.read(host.root, files.GENERATOR_DROPIN) is None
    assert host.read(host.root, files.TMPFILES_FILE) is None
    assert host.read(host.root, files.SYSCTL_FILE) == 'vm.swappiness = 10\n'
    assert host.sysval('kernel/mm/transparent_hugepage/enabled') == 'madvise'
    assert any('no snapshot' in m for m in result['messages'])
    assert 'systemctl stop -- dev-zram0.swap systemd-zram-setup@zram0.service' in host.commands()


def test_ksmtuned_blocks_with_on_conflict_fail(host):
    host.active['ksmtuned.service'] = 'active'
    result = run(host, on_conflict='fail', **SEED)
    assert result['failed'] is True
    assert 'ksmtuned.service is running' in result['msg']
    assert host.commands() == []
    assert host.sysval('kernel/mm/ksm/run') == '0'
    warned = run(host, **SEED)
    assert warned['changed'] is True
    assert [c['kind'] for c in warned['conflicts'] if c['blocking']] == ['ksmtuned']
    assert any('conflict: ksmtuned.service is running' in line for line in warned['report'])


def test_tuned_profile_conflict_found_through_include(host):
    host.active['tuned.service'] = 'active'
    host.write(host.root, 'etc/tuned/active_profile', 'my-host\n')
    host.write(host.root, 'etc/tuned/my-host/tuned.conf', '[main]\ninclude=base\n')
    host.write(host.root, 'usr/lib/tuned/base/tuned.conf', '[vm]\ntransparent_hugepages=never\n')
    result = run(host, state='query', **SEED)
    assert result['changed'] is False
    assert [c['kind'] for c in result['conflicts']] == ['tuned']
    assert 'tuned profile "my-host" sets transparent hugepages to never' in result['conflicts'][0]['message']


def test_other_zram_config_is_a_conflict(host):
    host.write(host.root, 'etc/systemd/zram-generator.conf.d/50-other.conf', '[zram1]\nzram-size = 100\n')
    result = run(host, state='query', **SEED)
    assert any('defines zram devices zram1' in c['message'] for c in result['conflicts'])


def test_merge_across_nodes_held_while_pages_are_merged(host):
    host.write(host.sys, 'kernel/mm/ksm/pages_shared', '120\n')
    result = run(host, ksm={'merge_across_nodes': 0, 'pages_to_scan': 300})
    assert result['changed'] is True
    assert host.sysval('kernel/mm/ksm/merge_across_nodes') == '1'
    assert host.sysval('kernel/mm/ksm/pages_to_scan') == '300'
    assert result['held'][0]['name'] == 'ksm.merge_across_nodes'
    assert result['verdict'] == 'drifted' and result['drifted'] == ['ksm.merge_across_nodes']
    host.write(host.sys, 'kernel/mm/ksm/pages_shared', '0\n')
    result = run(host, ksm={'merge_across_nodes': 0, 'pages_to_scan': 300})
    assert host.sysval('kernel/mm/ksm/merge_across_nodes') == '0'
    assert result['verdict'] == 'applied'


def test_query_on_stock_host(host):
    result = run(host, state='query', **SEED)
    assert result['changed'] is False
    assert result['verdict'] == 'stock'
    assert 'thp.enabled' in result['drifted']
    assert result['report'][0].endswith('memory oversubscription stock (zram.swap, zram.size, zram.algorithm, '
                                        'zram.priority, thp.enabled, ksm.pages_to_scan, ksm.run)')
    assert host.commands() == []


def test_query_after_drift(host):
    run(host, **SEED)
    host.write(host.sys, 'kernel/mm/ksm/pages_to_scan', '64\n')
    result = run(host, state='query', **SEED)
    assert result['verdict'] == 'drifted'
    assert result['drifted'] == ['ksm.pages_to_scan']


def test_zram_disabled_tears_down_ours(host):
    run(host, **SEED)
    host.calls = []
    result = run(host, zram={'enabled': False}, thp=SEED['thp'], ksm=SEED['ksm'])
    assert result['changed'] is True
    assert 'zram.teardown' in result['changes']
    assert host.read(host.root, files.GENERATOR_DROPIN) is None
    assert not any(s[0] == '/dev/zram0' for s in host.swaps)
    assert run(host, zram={'enabled': False}, thp=SEED['thp'], ksm=SEED['ksm'])['changed'] is False


def test_sysctl_applied_and_persisted(host):
    result = run(host, sysctl={'vm.swappiness': 100, 'vm.page-cluster': 0})
    assert result['changed'] is True
    assert host.read(host.proc, 'sys/vm/swappiness').strip() == '100'
    assert host.read(host.proc, 'sys/vm/page-cluster').strip() == '0'
    assert host.read(host.root, files.SYSCTL_FILE).startswith(MANAGED_MARKER)


def test_bad_values_fail_cleanly(host):
    result = run(host, sysctl={'kernel.panic': 1})
    assert result['failed'] is True and 'not a vm' in result['msg']
    result = run(host, zram={'size': 'lots'})
    assert result['failed'] is True and 'zram.size' in result['msg']
    assert 'Traceback' not in result['msg']


def test_missing_thp_file_fails_with_path(host):
    os.unlink(os.path.join(host.sys, 'kernel/mm/transparent_hugepage/enabled'))
    result = run(host, thp={'enabled': 'madvise'})
    assert result['failed'] is True
    assert 'transparent_hugepage/enabled' in result['msg']


def as_release_1(data, path):
    """The snapshot ``data`` in the form release 0.1 wrote it (``format: 1``, plain content, dirs as booleans)."""
    import base64
    old_files = {}
    for name, rec in data['files'].items():
        old_files[name] = ({'exists': True, 'content': base64.b64decode(rec['content_b64']).decode(),
                            'mode': rec['mode']} if rec['exists'] else {'exists': False, 'content': None, 'mode': None})
    values = dict(data['values'])
    installed = values.pop('zram_generator_installed')
    return {'format': 1, 'module': 'kvmlab.host_resources.memory_oversub', 'taken_at': data['created'],
            'live': values, 'files': old_files,
            'dirs': dict((d, r['exists']) for d, r in data['dirs'].items() if d != os.path.dirname(path)),
            'zram_generator_installed': installed, 'snapshot_dir_created': os.path.dirname(path)}


def test_rollback_from_a_release_1_snapshot(host):
    path = os.path.join(host.root, 'var/lib/kvmlab/snapshots/memory.json')
    host.write(host.root, files.TMPFILES_FILE, 'w /sys/kernel/mm/ksm/run - - - - 0\n')
    run(host, state='snapshot', snapshot_path=path, **SEED)
    old = as_release_1(json.load(open(path)), path)
    with open(path, 'w') as handle:
        json.dump(old, handle)
    run(host, **seed(sysctl={'vm.swappiness': 100}))
    result = run(host, state='absent', snapshot_path=path)
    assert result.get('failed') is not True, result.get('msg')
    assert result['verdict'] == 'restored'
    assert result['snapshot']['migrated_from'] == 'memory_oversub format 1'
    assert host.sysval('kernel/mm/transparent_hugepage/enabled') == 'always'
    assert host.read(host.proc, 'sys/vm/swappiness').strip() == '60'
    assert host.read(host.root, files.TMPFILES_FILE) == 'w /sys/kernel/mm/ksm/run - - - - 0\n'
    assert host.read(host.root, files.GENERATOR_DROPIN) is None
    assert not os.path.exists(os.path.dirname(path))


@pytest.mark.parametrize('text, problem', [
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "mem', 'truncated'),
    ('', 'empty file'),
    ('not json at all', 'not JSON'),
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "contention", "files": {}, "dirs": {}}',
     'a snapshot of the contention layer, not of memory'),
    ('{"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "memory", "files": {}, "dirs": {},'
     ' "values": {}}', 'values.thp is missing'),
])
def test_bad_snapshot_fails_naming_the_file_and_changes_nothing(host, text, problem):
    run(host, **SEED)
    path = os.path.join(host.root, 'snap.json')
    with open(path, 'w') as handle:
        handle.write(text)
    host.calls = []
    result = run(host, state='absent', snapshot_path=path)
    assert result['failed'] is True
    assert result['msg'].startswith(path + ': ') and problem in result['msg']
    assert host.commands() == []
    assert host.sysval('kernel/mm/transparent_hugepage/enabled') == 'madvise'
    assert host.read(host.root, files.GENERATOR_DROPIN) is not None
    assert open(path).read() == text
