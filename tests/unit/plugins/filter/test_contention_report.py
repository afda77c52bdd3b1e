# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugin_utils._contention_report and the contention_report filter: Markdown and SVG of a report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _contention as c
from ansible_collections.kvmlab.host_resources.plugins.plugin_utils import _contention_report as r

NAMES = ['gold', 'silver', 'bronze']
WEIGHTS = {'gold': 512, 'silver': 333, 'bronze': 167}
SEC = 1000000


def _usage(gold, silver, bronze, total=4 * 30 * SEC):
    """Usage in microseconds from percentages of ``total``."""
    return {'gold': int(total * gold / 100.0), 'silver': int(total * silver / 100.0),
            'bronze': int(total * bronze / 100.0)}


# -- rendering -------------------------------------------------------------------

def sample_report(passed=True):
    scenarios = []
    for scen, usages in (
            ({'name': 'all_loaded', 'loaded': NAMES, 'checks': ['shares']},
             [(50.5, 33.0, 16.5), (50.9, 32.8, 16.3)]),
            ({'name': 'gold_idle', 'loaded': ['silver', 'bronze'], 'checks': ['ratios']},
             [(0.0, 66.0, 34.0), (0.0, 66.5, 33.5)]),
            ({'name': 'bronze_alone', 'loaded': ['bronze'], 'checks': ['pool']},
             [(0.0, 0.0, 97.0 if passed else 60.0), (0.0, 0.0, 98.0)])):
        runs = [c.compute_run(WEIGHTS, scen['loaded'], _usage(*u), 30 * SEC, 4, pool_busy_pct=99.2,
                              checks=scen['checks']) for u in usages]
        summary = c.summarize_scenario(scen, runs)
        summary['duration_sec'] = 81.0
        scenarios.append(summary)
    verdict = {'threads': 6, 'confined_to_pool': 0, 'may_leave_pool': ['kvm-worker-01 CPU 0/TCG'],
               'evidence': 'samples', 'ran_on_reserved': True, 'samples_on_reserved': 3,
               'runtime_on_reserved_usec': 12000, 'runtime_usec': 90000}
    return {
        'passed': all(s['passed'] for s in scenarios), 'host': 'kvmlab-host', 'kernel': '6.1.0',
        'generated': '2026-01-01T00:00:00Z', 'duration_sec': 400.0,
        'options': {'window': 30.0, 'warmup': 5.0, 'repeats': 2, 'sample_interval': 1.0, 'tolerance': 2.0,
                    'ratio_tolerance': 10.0, 'min_pool_share': 90.0, 'load': 'burners', 'placement': 'cpu',
                    'burners_per_cpu': 1},
        'pool': {'guest_domain': '2-3,6-7', 'host_reserved': '0-1,4-5', 'cpus': 4},
        'scenarios': scenarios,
        'placement': {'vcpus': verdict,
                      'burners': dict(verdict, evidence='affinity', may_leave_pool=[], ran_on_reserved=False,
                                      runtime_on_reserved_usec=0, confined_to_pool=12, threads=12)},
        'leftover_units': [],
    }


def test_markdown_has_the_tables_and_the_command():
    text = r.render_markdown(sample_report(), command='ansible-playbook -i INVENTORY playbooks/contention_validate.yml')
    assert '**Result: PASS**' in text
    assert 'ansible-playbook -i INVENTORY playbooks/contention_validate.yml' in text
    assert '| all_loaded | gold | 512 | 50.6 | 50.7 [50.5, 50.9] | 0.1 [-0.1, 0.3] | 50.7 [50.5, 50.9] | pass |' in text
    assert '| gold_idle | gold (idle) | 512 | - | - | - |' in text
    assert '| gold_idle | silver:bronze | 1.99 |' in text
    assert '| bronze_alone | bronze | 167 | 100.0 | 100.0 | 0.0 | 97.5 [97.0, 98.0] | pass |' in text
    assert '| guest vCPU threads | 6 | 0 | samples | yes | 12 |' in text
    assert '`kvm-worker-01 CPU 0/TCG`' in text
    assert 'Left running after the run: nothing.' in text


def test_markdown_failure():
    report = sample_report(passed=False)
    assert report['passed'] is False
    text = r.render_markdown(report)
    assert '**Result: FAIL**' in text
    assert '| bronze_alone | bronze, | ' not in text
    assert '| bronze_alone | bronze | pool |' in text and '| FAIL |' in text


def test_svg_is_well_formed_and_draws_every_tier():
    svg = r.render_svg(sample_report(), title='Lab <host> & co')
    root = ET.fromstring(svg)
    assert root.tag == '{http://www.w3.org/2000/svg}svg'
    texts = [t.text for t in root.iter('{http://www.w3.org/2000/svg}text')]
    assert 'all_loaded' in texts and 'gold_idle' in texts and 'bronze_alone' in texts
    assert 'Lab <host> & co' in texts
    titles = [t.text for t in root.iter('{http://www.w3.org/2000/svg}title')]
    assert any(t.startswith('all_loaded gold: achieved 50.7 %, promised 50.6 %') for t in titles)
    assert any(t.startswith('bronze_alone bronze: achieved 97.5 %, promised 100.0 %') for t in titles)
    fills = [r.get('fill') for r in root.iter('{http://www.w3.org/2000/svg}rect')]
    assert r.TIER_COLOURS['gold'] in fills and r.TIER_COLOURS['bronze'] in fills
    assert int(root.get('width')) >= 650


def test_svg_colours_for_other_tiers():
    assert r.tier_colour('gold', ['gold']) == r.TIER_COLOURS['gold']
    assert r.tier_colour('x', ['gold', 'x', 'y']) == r._PALETTE[0]
    assert r.tier_colour('y', ['gold', 'x', 'y']) == r._PALETTE[1]


def test_report_is_json_serializable():
    json.dumps(sample_report())


# -- the contention_report filter (a thin face of the renderers above) ------------

def test_filter_formats():
    # ansible-test runs module_utils tests where only ansible.module_utils imports; plain pytest runs this
    errors = pytest.importorskip('ansible.errors')
    AnsibleFilterError = errors.AnsibleFilterError
    from ansible_collections.kvmlab.host_resources.plugins.filter.contention_report import FilterModule

    render = FilterModule().filters()['contention_report']
    report = sample_report()
    assert render(report).startswith('# Measured contention')
    assert render(report, 'markdown', command='make it', title='Lab').startswith('# Lab')
    assert render(report, 'svg').startswith('<svg')
    data = json.loads(render(report, 'json', command='ansible-playbook x'))
    assert data['command'] == 'ansible-playbook x' and data['passed'] is True
    assert 'command' not in report
    with pytest.raises(AnsibleFilterError, match='format must be one of'):
        render(report, 'pdf')
    with pytest.raises(AnsibleFilterError, match='expects the report'):
        render({'passed': True})
    with pytest.raises(AnsibleFilterError, match='malformed report'):
        render({'scenarios': [{'name': 'x'}]})


def test_no_negative_zero():
    assert r._fmt(-0.04) == '0.0'
    assert r._fmt(-0.05, 2) == '-0.05'
    assert r._fmt(-1.0) == '-1.0'
    assert r._fmt(None) == '-'


def test_phases_get_their_own_tables_and_a_comparison():
    report = sample_report()
    moved = []
    for scen in report['scenarios']:
        scen['phase'] = 'in_place'
        copy = json.loads(json.dumps(scen))
        copy['phase'] = 'moved'
        if copy['name'] == 'all_loaded':
            copy['tiers']['gold']['share_pct']['mean'] = 51.7
        moved.append(copy)
    report['scenarios'] += moved
    report['options'].update(load='guests', busy_vcpus=2, guest_kernel='/var/lib/kvmlab/spinall.elf')
    report['guest_load'] = {'per_tier': {'gold': 3, 'silver': 4, 'bronze': 6}}
    report['leftover_guests'] = []
    text = r.render_markdown(report)
    assert '## Shares: busy guests where they started (machine.slice)' in text
    assert '## Shares: busy guests restarted into their tier slices' in text
    assert 'busy guests (3 gold, 4 silver, 6 bronze), 2 vCPU(s) each' in text
    assert "the sum over its guests' vCPU cgroups (`libvirt/vcpuN`" in text
    assert '| scenario | tier | promised % | in_place % | moved % | spread points |' in text
    assert '| all_loaded | gold | 50.6 | 50.7 | 51.7 | 1.0 |' in text
    assert '| all_loaded (moved) | gold, silver, bronze |' in text
    svg = r.render_svg(report)
    texts = [t.text for t in ET.fromstring(svg).iter('{http://www.w3.org/2000/svg}text')]
    assert texts.count('all_loaded') == 2 and 'moved' in texts and 'in_place' in texts
