"""The contention report of the converge, and a host with nothing left running."""
import json
import os
import xml.etree.ElementTree as ET

import pytest

REPORT_DIR = os.path.join(os.environ.get('MOLECULE_EPHEMERAL_DIRECTORY', '.'), 'report')


@pytest.fixture(scope='module')
def report():
    with open(os.path.join(REPORT_DIR, 'kvmlab-host.json')) as handle:
        return json.load(handle)


def _scenario(report, name):
    return dict((s['name'], s) for s in report['scenarios'])[name]


def _share(scen, tier):
    return scen['tiers'][tier]['share_pct']['mean']


def test_every_format_is_written(report):
    with open(os.path.join(REPORT_DIR, 'kvmlab-host.md')) as handle:
        markdown = handle.read()
    assert '| all_loaded | gold | 512 | 50.6 |' in markdown
    assert 'playbooks/contention_validate.yml' in markdown
    root = ET.parse(os.path.join(REPORT_DIR, 'kvmlab-host.svg')).getroot()
    assert root.tag.endswith('svg')
    assert report['command'].startswith('ansible-playbook')


def test_the_scenarios_of_the_issue_ran(report):
    assert [s['name'] for s in report['scenarios']] == ['all_loaded', 'gold_idle', 'gold_alone',
                                                      'silver_alone', 'bronze_alone']
    assert report['pool']['guest_domain'] == '2-3,6-7'
    assert dict((t, v['live_weight']) for t, v in report['tiers'].items()) == {'gold': 512, 'silver': 333,
                                                                               'bronze': 167}


def test_weights_order_the_tiers(report):
    every = _scenario(report, 'all_loaded')
    assert _share(every, 'gold') > _share(every, 'silver') > _share(every, 'bronze')
    idle = _scenario(report, 'gold_idle')
    assert _share(idle, 'silver') > 1.4 * _share(idle, 'bronze')


def test_a_lone_tier_borrows_the_pool(report):
    for tier in ('gold', 'silver', 'bronze'):
        scen = _scenario(report, '%s_alone' % tier)
        assert scen['loaded_pool_pct']['min'] >= 90.0, scen['name']
        assert scen['passed'], scen['name']


def test_the_pool_was_busy(report):
    every = _scenario(report, 'all_loaded')
    assert every['pool_busy_pct']['min'] >= 90.0


def test_burners_stayed_in_the_pool(report):
    burners = report['placement']['burners']
    assert burners['evidence'] == 'affinity'
    assert burners['ran_on_reserved'] is False


def test_nothing_left_running(host, report):
    assert report['leftover_units'] == []
    units = host.check_output("systemctl list-units --all --plain --no-legend 'kvmlab-burn*'")
    assert units.strip() == ''
    busy = host.check_output("ps -eo args | grep -c '[w]hile :; do :; done' || true")
    assert busy.strip() == '0'
    for tier in ('gold', 'silver', 'bronze'):
        procs = host.run('cat /sys/fs/cgroup/machine.slice/machine-%s.slice/cgroup.procs' % tier)
        assert procs.stdout.strip() == ''
