"""metrics_collector: install, idempotence, check mode, diff and uninstall on a tree, with a fake systemctl."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _metrics
from ansible_collections.kvmlab.host_resources.plugins.modules import metrics_collector
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

TIERS = {'gold': {'slice': 'machine-gold.slice', 'cpu_weight': 512, 'shares': 512, 'intended_class': 'cp'},
         'bronze': {'slice': 'machine-bronze.slice', 'cpu_weight': 167}}
POOLS = {'host_reserved': '0-1', 'host_housekeeping': '0-1', 'host_emulator': '0-1', 'guest_domain': '2-7',
         'counts': {'x': 1}, 'source': 'derived'}


class FakeSystemd(object):
    def __init__(self, unit_dir):
        self.unit_dir = unit_dir
        self.calls = []
        self.enabled = set()
        self.active = set()

    def run_command(self, module, args, **kwargs):
        verb = args[1:]
        self.calls.append(verb)
        if verb[0] == 'is-enabled':
            return (0, 'enabled\n', '') if verb[1] in self.enabled else (1, 'disabled\n', '')
        if verb[0] == 'is-active':
            return (0, 'active\n', '') if verb[1] in self.active else (3, 'inactive\n', '')
        if verb[:2] == ['enable', '--now']:
            if not os.path.exists(os.path.join(self.unit_dir, verb[2])):
                return 1, '', 'Unit file %s does not exist.' % verb[2]
            self.enabled.add(verb[2])
            self.active.add(verb[2])
        elif verb[:2] == ['disable', '--now']:
            self.enabled.discard(verb[2])
            self.active.discard(verb[2])
        return 0, '', ''


@pytest.fixture
def tree(tmp_path, monkeypatch):
    root = tmp_path / 'host'
    (root / 'etc/systemd/system').mkdir(parents=True)
    (root / 'var/lib').mkdir(parents=True)
    fake = FakeSystemd(str(root / 'etc/systemd/system'))

    def run_command(module, args, **kwargs):
        return fake.run_command(module, args, **kwargs)

    monkeypatch.setattr(AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(AnsibleModule, 'get_bin_path', lambda module, name, *a, **kw: '/bin/' + name)
    args = {
        'tiers': TIERS, 'pools': POOLS, 'guests': [{'name': 'kvm-worker-03', 'tier': 'bronze', 'vcpus': 2}],
        'install_dir': str(root / 'usr/local/lib/kvmlab'), 'config_path': str(root / 'etc/kvmlab/metrics.json'),
        'textfile_dir': str(root / 'var/lib/prometheus/node-exporter'), 'state_dir': str(root / 'var/lib/kvmlab/metrics'),
        'unit_dir': str(root / 'etc/systemd/system'), 'snapshot_path': str(root / 'var/lib/kvmlab/snapshots/metrics.json'),
        'policy_status_file': str(root / 'var/lib/kvmlab/policy_status.json'),
    }
    return root, fake, args


def _listing(root):
    out = []
    for base, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(base, name), str(root)))
    return sorted(out)


def test_install_check_mode_changes_nothing(tree):
    root, fake, args = tree
    before = _listing(root)
    result = run_module(metrics_collector.main, args, check_mode=True, diff=True)
    assert result['changed'] is True
    assert _listing(root) == before
    assert result['systemctl'] == [['daemon-reload'], ['enable', '--now', 'kvmlab-metrics.timer']]
    assert [os.path.relpath(f, str(root)) for f in result['files']] == [
        'usr/local/lib/kvmlab/kvmlab_metrics.py', 'etc/kvmlab/metrics.json',
        'etc/systemd/system/kvmlab-metrics.service', 'etc/systemd/system/kvmlab-metrics.timer']
    assert str(root / 'var/lib/prometheus') in result['dirs']
    assert result['snapshot']['action'] == 'created'
    assert len(result['diff']) == 4 and result['diff'][0]['before'] == ''
    assert [c[0] for c in fake.calls] == ['is-enabled', 'is-active']


def test_install_then_idempotent_then_uninstall(tree):
    root, fake, args = tree
    before = _listing(root)
    result = run_module(metrics_collector.main, args, diff=True)
    assert result['changed'] is True, result
    collector = root / 'usr/local/lib/kvmlab/kvmlab_metrics.py'
    with open(_metrics.__file__) as handle:
        assert collector.read_text() == handle.read()
    config = json.loads((root / 'etc/kvmlab/metrics.json').read_text())
    assert config['tiers'] == {'bronze': {'slice': 'machine-bronze.slice', 'weight': 167},
                               'gold': {'slice': 'machine-gold.slice', 'weight': 512}}
    assert config['pools'] == {'host_reserved': '0-1', 'host_housekeeping': '0-1', 'host_emulator': '0-1',
                               'guest_domain': '2-7'}
    assert config['guests'] == {'kvm-worker-03': 'bronze'}
    service = (root / 'etc/systemd/system/kvmlab-metrics.service').read_text()
    pycache = root / 'var/lib/kvmlab/metrics/pycache'
    launcher = "import sys; sys.path.insert(0, '%s'); import kvmlab_metrics; sys.exit(kvmlab_metrics.main())" % (
        collector.parent)
    exec_start = '/usr/bin/python3 -I -S -X pycache_prefix=%s -c "%s" --config %s --output %s --state %s' % (
        pycache, launcher, root / 'etc/kvmlab/metrics.json', root / 'var/lib/prometheus/node-exporter/kvmlab.prom',
        root / 'var/lib/kvmlab/metrics/state.json')
    assert 'ExecStart=%s\n' % exec_start in service
    timer = (root / 'etc/systemd/system/kvmlab-metrics.timer').read_text()
    assert 'OnUnitActiveSec=15s' in timer and 'AccuracySec=1s' in timer
    assert oct((root / 'var/lib/kvmlab/metrics').stat().st_mode & 0o777) == '0o700'
    assert oct((root / 'var/lib/kvmlab/snapshots/metrics.json').stat().st_mode & 0o777) == '0o600'
    assert fake.enabled == {'kvmlab-metrics.timer'} and fake.active == {'kvmlab-metrics.timer'}
    assert result['timer'] == {'enabled': True, 'active': True}

    # the collector runs as the service runs it (its ExecStart, reading a generated host) and writes its
    # files; the import leaves its bytecode in the cache, not beside the installed file
    out = root / 'var/lib/prometheus/node-exporter/kvmlab.prom'
    argv = shlex.split(exec_start)
    argv[0] = sys.executable
    proc = subprocess.run(argv + ['--root', str(tmp_root(root))], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'kvmlab_collector_success 1\n' in out.read_text()
    assert (pycache / str(collector.parent).lstrip('/') / ('kvmlab_metrics.%s.pyc' % sys.implementation.cache_tag)).is_file()
    assert not (collector.parent / '__pycache__').exists()

    # the status playbook writes the verdicts while the collector is installed
    (root / 'var/lib/kvmlab/policy_status.json').write_text('{"layers": {"shared_execution_pool": "stock"}}\n')

    again = run_module(metrics_collector.main, args)
    assert again['changed'] is False, again
    assert again['files'] == [] and again['systemctl'] == []

    # a new interval rewrites the timer and restarts it
    changed = run_module(metrics_collector.main, dict(args, interval=30), diff=True)
    assert changed['changed'] is True
    assert changed['systemctl'] == [['daemon-reload'], ['restart', 'kvmlab-metrics.timer']]
    assert '-OnUnitActiveSec=15s' not in str(changed['diff'])  # diff is before/after, not a patch
    assert changed['diff'][0]['before'].count('15s') == 2 and changed['diff'][0]['after'].count('30s') == 2

    check = run_module(metrics_collector.main, dict(args, state='absent'), check_mode=True, diff=True)
    assert check['changed'] is True and out.exists()
    assert check['systemctl'] == [['disable', '--now', 'kvmlab-metrics.timer'], ['daemon-reload']]
    assert str(root / 'var/lib/prometheus') in check['dirs']

    gone = run_module(metrics_collector.main, dict(args, state='absent'))
    assert gone['changed'] is True
    # everything it added is gone, the policy status file included
    assert not (root / 'var/lib/kvmlab/policy_status.json').exists()
    assert _listing(root) == before
    assert gone['snapshot']['action'] == 'restored'
    assert fake.enabled == set()
    assert sorted(check['dirs']) == sorted(gone['dirs'])

    twice = run_module(metrics_collector.main, dict(args, state='absent'))
    assert twice['changed'] is False and twice['files'] == []


def tmp_root(root):
    fake_root = root.parent / 'fakeroot'
    fake_root.mkdir(exist_ok=True)
    return fake_root


def test_uninstall_without_snapshot_removes_only_its_files(tree):
    root, fake, args = tree
    args = dict(args, systemd=False)
    run_module(metrics_collector.main, args)
    os.unlink(args['snapshot_path'])
    (root / 'etc/systemd/system/other.service').write_text('[Service]\n')
    result = run_module(metrics_collector.main, dict(args, state='absent'))
    assert result['changed'] is True
    assert not (root / 'usr/local/lib/kvmlab/kvmlab_metrics.py').exists()
    assert not (root / 'etc/systemd/system/kvmlab-metrics.timer').exists()
    assert (root / 'etc/systemd/system/other.service').exists()
    assert (root / 'usr/local/lib/kvmlab').is_dir()  # origin unknown without a snapshot: left
    assert fake.calls == []


def test_bad_arguments_fail_with_a_message(tree):
    _root, _fake, args = tree
    result = run_module(metrics_collector.main, dict(args, tiers={'gold': {'cpu_weight': 0}}))
    assert result['failed'] and 'tiers.gold.weight' in result['msg']
    result = run_module(metrics_collector.main, dict(args, output_name='x.txt'))
    assert result['failed'] and 'output_name' in result['msg']
    result = run_module(metrics_collector.main, dict(args, interval=0))
    assert result['failed'] and 'interval' in result['msg']
    result = run_module(metrics_collector.main, dict(args, install_dir='/opt/with space'))
    assert result['failed'] and 'without spaces' in result['msg']
    result = run_module(metrics_collector.main, dict(args, tiers=None))
    assert result['failed'] and 'tiers is required' in result['msg']


def test_query_reports_items_verdict_and_latest(tree):
    root, fake, args = tree
    stock = run_module(metrics_collector.main, dict(args, state='query'))
    assert stock['changed'] is False and stock['verdict']['verdict'] == 'stock'
    assert [i['state'] for i in stock['items']] == ['stock'] * 6
    assert stock['latest'] == {} and stock['output_age_seconds'] is None
    run_module(metrics_collector.main, args)
    out = root / 'var/lib/prometheus/node-exporter/kvmlab.prom'
    out.write_text('# HELP kvmlab_tier_entitled_share x\n# TYPE kvmlab_tier_entitled_share gauge\n'
                   'kvmlab_tier_entitled_share{tier="gold"} 0.75\nkvmlab_guest_vcpus{guest="a",tier="gold"} 2\n')
    live = run_module(metrics_collector.main, dict(args, state='query'))
    assert live['verdict']['verdict'] == 'applied', live['items']
    assert live['latest'] == {'kvmlab_tier_entitled_share': [{'labels': {'tier': 'gold'}, 'value': 0.75}]}
    fake.active.clear()
    (root / 'etc/kvmlab/metrics.json').write_text('{}')
    drifted = run_module(metrics_collector.main, dict(args, state='query'))
    assert drifted['verdict']['verdict'] == 'drifted'
    states = dict((i['name'], i['state']) for i in drifted['items'])
    assert states['collector config'] == 'drifted' and states['kvmlab-metrics.timer'] == 'drifted'
    assert states['collector script'] == 'applied'
    assert metrics_collector.parse_latest('kvmlab_tier_x{a="q\\"b"} 1\n') == {
        'kvmlab_tier_x': [{'labels': {'a': 'q\\"b'}, 'value': 1.0}]}
