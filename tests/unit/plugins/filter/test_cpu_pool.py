# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cpu_pool_* filters: registered, delegating to _cpupool, errors as AnsibleFilterError."""

from __future__ import annotations

import base64
import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.filter.cpu_pool import FilterModule

FILTERS = FilterModule().filters()
GROUPS = {'all': ['hv1', 'hv2'], 'ungrouped': [], 'cpu_pool_alpha': ['hv1', 'hv2']}
MODEL = {'model': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'digest': 'd1', 'features': ['avx', 'sse'],
         'xml': '<cpu>model</cpu>',
         'members': [{'name': 'hv1', 'model': 'Haswell', 'features': 3, 'gives_up': ['invtsc'], 'lacks': []},
                     {'name': 'hv2', 'model': 'Skylake', 'features': 4, 'gives_up': ['avx512f', 'invtsc'],
                      'lacks': []}]}


def _slurp(record):
    return {'content': base64.b64encode(json.dumps(record).encode()).decode()}


def test_the_filters_are_registered():
    assert set(FILTERS) == {'cpu_pool_membership', 'cpu_pool_plan', 'cpu_pool_models', 'cpu_pool_checks',
                            'cpu_pool_record', 'cpu_pool_report', 'cpu_pool_summary'}


def test_a_join_through_the_filters():
    slurped = {'hv1': _slurp({'pool': 'alpha', 'members': ['hv1'], 'model': dict(MODEL, name='Old', digest='d0',
                                                                                 features=['sse'])}),
               'hv2': {'failed': True, 'msg': 'file not found'}}
    membership = FILTERS['cpu_pool_membership'](GROUPS, 'cpu_pool_', ['hv1', 'hv2'], slurped=slurped)
    assert membership['states'] == {'hv1': 'member', 'hv2': 'joining'}
    plan = FILTERS['cpu_pool_plan'](membership, 'join')
    assert plan['pools'] == {'alpha': ['hv1', 'hv2']} and plan['errors'] == []
    results = [{'item': {'key': 'alpha', 'value': ['hv1', 'hv2']}, 'baseline': MODEL}]
    model = FILTERS['cpu_pool_models'](results)['alpha']
    guests = {'hv1': {'domains': [{'name': 'web', 'cpu_after': '<cpu>web</cpu>', 'pending': False,
                                   'active': False, 'changed': True}]},
              'hv2': {'domains': []}}
    checks = FILTERS['cpu_pool_checks'](model['xml'], plan['pools']['alpha'], guests)
    assert [check['name'] for check in checks] == ['pool model', 'hv1/web']
    record = FILTERS['cpu_pool_record'](model, 'alpha', ['hv2', 'hv1'], 'hv2', {'model': 'Skylake', 'vendor': 'Intel',
                                                                                'features': ['avx']})
    assert record['members'] == ['hv1', 'hv2'] and record['gives_up'] == ['avx512f', 'invtsc']
    fits = {'hv1': {'comparisons': [{'name': 'pool model', 'compatible': True}]},
            'hv2': {'comparisons': [{'name': 'hv1/web', 'compatible': False, 'result': 'incompatible',
                                     'message': 'lacks avx'}]}}
    report = FILTERS['cpu_pool_report'](plan, membership, results, guests=guests, fits=fits, check_mode=True)
    entry = report['pools'][0]
    assert entry['gained'] == ['avx'] and entry['lost'] == [] and entry['joined'] == ['hv2']
    assert report['misfits'][0]['text'] == 'hv1/web on hv2 (incompatible: lacks avx)'
    assert FILTERS['cpu_pool_summary'](report) == [
        'check mode: nothing was changed, this is what join would do',
        'pool alpha: 2 member(s), Intel, model Haswell-noTSX-IBRS (2 features, digest d1)',
        '  model changed from Old: 1 feature(s) gained (avx), 0 lost',
        '  joined: hv2',
        '  hv1 [member] Haswell: gives up 1 (invtsc)',
        '  hv2 [joining] Skylake: gives up 2 (avx512f, invtsc)',
        '  guests: 1, 1 changed, 0 can start on every member',
        'misfit: hv1/web would not start on hv2 (incompatible: lacks avx)',
    ]


def test_a_stat_through_the_report_filter():
    membership = FILTERS['cpu_pool_membership'](GROUPS, 'cpu_pool_', ['hv1', 'hv2'])
    plan = FILTERS['cpu_pool_plan'](membership, 'stat', None)
    report = FILTERS['cpu_pool_report'](plan, membership, [], host_cpus={}, guests={})
    assert report['action'] == 'stat' and [entry['pool'] for entry in report['pools']] == ['alpha']
    assert report['pools'][0]['recorded_model'] is None


@pytest.mark.parametrize('name, args, kwargs, message', [
    ('cpu_pool_membership', (GROUPS, '', ['hv1']), {}, 'cpu_pool_membership: cpu_pool_group_prefix must not be empty'),
    ('cpu_pool_membership', (GROUPS, 'cpu_pool_', ['hv1']), {'leave': 3},
     'cpu_pool_membership: cpu_pool_leave must be a list'),
    ('cpu_pool_plan', ({}, 'join'), {}, r'cpu_pool_plan: membership \(the result of cpu_pool_membership\) lacks'),
    ('cpu_pool_plan', (FILTERS['cpu_pool_membership'](GROUPS, 'cpu_pool_', []), 'grow'), {},
     "cpu_pool_plan: unknown action 'grow'"),
    ('cpu_pool_checks', ('', ['hv1'], {}), {}, 'cpu_pool_checks: the pool model XML is empty'),
    ('cpu_pool_record', (MODEL, 'alpha', ['hv9'], 'hv9', {}), {}, 'cpu_pool_record: pool alpha: hv9 is not among'),
    ('cpu_pool_report', ([], {}, []), {}, r'cpu_pool_report: plan \(the result of cpu_pool_plan\) must be a dict'),
    ('cpu_pool_summary', ({'pools': []},), {}, 'cpu_pool_summary: expects a report of cpu_pool_report'),
])
def test_errors_name_the_filter(name, args, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        FILTERS[name](*args, **kwargs)
