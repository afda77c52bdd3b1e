# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU pool decisions: memberships, plans, what a converge sends and records, reports, summary."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpupool as cp

PREFIX = 'cpu_pool_'
BASE = ['avx', 'avx2', 'sse4.2', 'vmx']
HASWELL = BASE + ['invtsc']
SKYLAKE = BASE + ['avx512f', 'clwb', 'invtsc']
OLD_MODEL = {'name': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'digest': 'd-old', 'features': BASE, 'xml': '<cpu/>'}


def slurp(record):
    return {'content': base64.b64encode(json.dumps(record).encode()).decode(), 'encoding': 'base64',
            'source': '/etc/ansible/facts.d/kvmlab_cpu_pool.fact'}


def missing():
    return {'failed': True, 'msg': 'file not found: /etc/ansible/facts.d/kvmlab_cpu_pool.fact'}


def record(pool, members, model=None):
    return {'schema': 1, 'pool': pool, 'members': members, 'model': dict(model or OLD_MODEL)}


def membership(groups, records=None, hosts=None, leave=None):
    """memberships() of pool groups given without prefix; hosts default to every grouped host."""
    inventory = dict((PREFIX + pool, members) for pool, members in groups.items())
    inventory.update({'all': sorted(set(h for m in groups.values() for h in m) | set(records or ())),
                      'ungrouped': []})
    if hosts is None:
        hosts = inventory['all']
    slurped = dict((host, slurp(rec) if rec is not None else missing())
                   for host, rec in (records or {}).items())
    return cp.memberships(inventory, PREFIX, hosts, slurped, leave)


# ---------------------------------------------------------------------------
# membership
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('pool, recorded, leaving, state', [
    ('alpha', 'alpha', False, 'member'),
    ('beta', 'alpha', False, 'moving'),
    ('alpha', '', False, 'joining'),
    ('', 'alpha', False, 'outside'),
    ('', '', False, 'none'),
    ('alpha', 'alpha', True, 'leaving'),
    ('', '', True, 'leaving'),
])
def test_membership_state(pool, recorded, leaving, state):
    assert cp.membership_state(pool, recorded, leaving) == state


@pytest.mark.parametrize('value, hosts', [
    (None, []), ('', []), ([], []),
    ('hv1', ['hv1']),
    ('hv1, hv2,,hv1 ', ['hv1', 'hv2']),
    ([' hv3', 'hv1', ''], ['hv3', 'hv1']),
])
def test_leaving_hosts_take_lists_and_comma_separated_names(value, hosts):
    assert cp.leaving_hosts(value) == hosts


def test_leaving_hosts_refuse_other_types():
    with pytest.raises(cp.CpuPoolError, match='cpu_pool_leave must be a list'):
        cp.leaving_hosts({'hv1': 1})


def test_pool_groups_are_the_prefixed_groups():
    groups = {'cpu_pool_alpha': ['hv1', 'hv2'], 'cpu_pool_': ['hv9'], 'cpu_pools': ['hv8'], 'web': ['w1'],
              'cpu_pool_beta': []}
    assert cp.pool_groups(groups, 'cpu_pool_') == {'alpha': ['hv1', 'hv2'], 'beta': []}
    assert cp.pool_groups(groups, 'cpu_') == {'pool_alpha': ['hv1', 'hv2'], 'pool_': ['hv9'],
                                              'pools': ['hv8'], 'pool_beta': []}


def test_pool_groups_need_a_prefix():
    with pytest.raises(cp.CpuPoolError, match='must not be empty'):
        cp.pool_groups({'a': []}, '')


def test_decode_record():
    assert cp.decode_record(missing()) == {}
    assert cp.decode_record(None) == {}
    assert cp.decode_record(slurp(record('alpha', ['hv1'])))['pool'] == 'alpha'
    broken = {'content': base64.b64encode(b'{not json').decode(), 'source': '/x.fact'}
    with pytest.raises(cp.CpuPoolError, match=r'hv1: the pool record /x.fact is not valid JSON'):
        cp.decode_record(broken, 'hv1')
    with pytest.raises(cp.CpuPoolError, match='is not a JSON object'):
        cp.decode_record({'content': base64.b64encode(b'[1]').decode()}, 'hv1')


def test_memberships_classify_every_host():
    found = membership({'alpha': ['hv1', 'hv2', 'hv3'], 'beta': ['hv4']},
                       {'hv1': record('alpha', ['hv1']), 'hv2': None, 'hv3': record('gamma', ['hv3']),
                        'hv4': record('beta', ['hv4']), 'hv5': record('alpha', ['hv1', 'hv5']), 'hv6': None},
                       leave=['hv4'])
    assert found['states'] == {'hv1': 'member', 'hv2': 'joining', 'hv3': 'moving', 'hv4': 'leaving',
                               'hv5': 'outside', 'hv6': 'none'}
    assert found['recorded'] == {'hv1': 'alpha', 'hv2': '', 'hv3': 'gamma', 'hv4': 'beta', 'hv5': 'alpha',
                                 'hv6': ''}
    assert found['hosts']['hv3']['pool'] == 'alpha' and found['hosts']['hv3']['record']['pool'] == 'gamma'
    assert found['groups'] == {'alpha': ['hv1', 'hv2', 'hv3'], 'beta': ['hv4']}
    assert found['leaving'] == ['hv4'] and found['prefix'] == PREFIX
    assert all(entry['error'] == '' for entry in found['hosts'].values())


def test_a_host_in_two_pool_groups_is_an_error_and_has_no_state():
    found = membership({'alpha': ['hv1', 'hv2'], 'beta': ['hv2']}, {'hv1': None, 'hv2': None})
    assert found['hosts']['hv2']['error'] == ('hv2 is in several CPU pool groups (cpu_pool_alpha, cpu_pool_beta); '
                                              'a host belongs to one pool')
    assert 'hv2' not in found['states'] and 'hv2' not in found['recorded']
    assert found['states'] == {'hv1': 'joining'}


def test_an_unreadable_record_is_an_error_of_that_host():
    found = cp.memberships({'cpu_pool_alpha': ['hv1', 'hv2']}, PREFIX, ['hv1', 'hv2'],
                           {'hv1': {'content': base64.b64encode(b'garbage').decode()},
                            'hv2': slurp({'pool': 7})})
    assert 'hv1: the pool record' in found['hosts']['hv1']['error']
    assert found['hosts']['hv2']['error'] == 'hv2: the pool record names no pool'
    assert found['states'] == {}


def test_memberships_without_slurp_results_mean_no_records():
    found = cp.memberships({'cpu_pool_alpha': ['hv1']}, PREFIX, ['hv1'])
    assert found['states'] == {'hv1': 'joining'}


# ---------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------

def test_join_plans_the_pools_hosts_join_with_all_their_members():
    found = membership({'alpha': ['hv1', 'hv2'], 'beta': ['hv3']},
                       {'hv1': record('alpha', ['hv1']), 'hv2': None, 'hv3': record('beta', ['hv3'])})
    plan = cp.plan(found, 'join')
    assert plan['targets'] == ['alpha'] and plan['pools'] == {'alpha': ['hv1', 'hv2']}
    assert plan['member_of'] == {'hv1': 'alpha', 'hv2': 'alpha'}
    assert plan['errors'] == [] and plan['message'] is None
    assert plan['joining'] == ['hv2'] and plan['hosts'] == ['hv1', 'hv2', 'hv3']


def test_join_refuses_a_host_that_changes_into_a_joined_pool():
    found = membership({'alpha': ['hv1', 'hv2'], 'beta': ['hv3']},
                       {'hv1': None, 'hv2': record('beta', ['hv2', 'hv3']), 'hv3': record('beta', ['hv2', 'hv3'])})
    plan = cp.plan(found, 'join')
    assert plan['errors'] == ['hv2 is recorded in pool beta but listed in group cpu_pool_alpha; run the move '
                              'action for a host that changes pools']


def test_join_leaves_moves_into_other_pools_to_move():
    found = membership({'alpha': ['hv1'], 'beta': ['hv2']}, {'hv1': None, 'hv2': record('gamma', ['hv2'])})
    assert cp.plan(found, 'join')['errors'] == []


def test_join_with_nobody_joining_says_so():
    found = membership({'alpha': ['hv1']}, {'hv1': record('alpha', ['hv1'])})
    plan = cp.plan(found, 'join')
    assert plan['targets'] == [] and plan['pools'] == {}
    assert plan['message'] == ('No host to join: every host in a cpu_pool_<pool> group has joined its pool '
                               'already (add a host to such a group in the inventory, then run join)')


def test_a_converge_refuses_a_pool_with_members_outside_the_play():
    found = membership({'alpha': ['hv1', 'hv2', 'hv3']}, {'hv1': None}, hosts=['hv1'])
    plan = cp.plan(found, 'join')
    assert plan['errors'] == ['pool alpha: hv2, hv3 not in this play (left out by --limit, or unreachable); a '
                              'pool is recalculated with all its members or not at all']


def test_a_converge_leaves_the_leaving_hosts_out_of_the_members():
    found = membership({'alpha': ['hv1', 'hv2', 'hv3']},
                       dict((h, record('alpha', ['hv1', 'hv2', 'hv3'])) for h in ('hv1', 'hv2', 'hv3')),
                       leave='hv3')
    plan = cp.plan(found, 'leave')
    assert plan['targets'] == ['alpha'] and plan['pools'] == {'alpha': ['hv1', 'hv2']}
    assert plan['leaving'] == ['hv3'] and 'hv3' not in plan['member_of']


def test_a_leaving_host_outside_the_play_does_not_block_its_pool():
    found = membership({'alpha': ['hv1', 'hv2']}, {'hv1': record('alpha', ['hv1', 'hv2']),
                                                   'hv2': record('alpha', ['hv1', 'hv2'])}, leave=['hv2'])
    assert cp.plan(found, 'recalc')['pools'] == {'alpha': ['hv1']}


def test_move_plans_both_pools():
    found = membership({'alpha': ['hv1'], 'gamma': ['hv2']},
                       {'hv1': record('alpha', ['hv1', 'hv2']), 'hv2': record('alpha', ['hv1', 'hv2'])})
    plan = cp.plan(found, 'move')
    assert plan['targets'] == ['gamma', 'alpha'] and plan['moving'] == ['hv2']
    assert plan['pools'] == {'alpha': ['hv1'], 'gamma': ['hv2']} and plan['errors'] == []


def test_move_with_nobody_moving_says_so():
    found = membership({'alpha': ['hv1']}, {'hv1': None})
    plan = cp.plan(found, 'move')
    assert plan['pools'] == {} and plan['message'].startswith('No host to move: no host of the play')


def test_recalc_defaults_to_the_pools_of_the_play_and_takes_a_name():
    found = membership({'beta': ['hv2'], 'alpha': ['hv1'], 'gamma': ['hv9']},
                       {'hv1': record('alpha', ['hv1']), 'hv2': record('beta', ['hv2'])}, hosts=['hv1', 'hv2'])
    assert cp.plan(found, 'recalc')['targets'] == ['alpha', 'beta']
    assert cp.plan(found, 'recalc', 'beta')['pools'] == {'beta': ['hv2']}


def test_recalc_refuses_unknown_pools():
    found = membership({'alpha': ['hv1']}, {'hv1': record('alpha', ['hv1'])})
    assert cp.plan(found, 'recalc', 'nope')['errors'] == [
        'no inventory group for pool(s) nope (pools are the groups named cpu_pool_<pool>)']


def test_recalc_refuses_pending_joins_and_moves():
    found = membership({'alpha': ['hv1', 'hv2', 'hv3']},
                       {'hv1': record('alpha', ['hv1']), 'hv2': None, 'hv3': record('beta', ['hv3'])})
    assert cp.plan(found, 'recalc')['errors'] == [
        'hv2 is listed in group cpu_pool_alpha but has not joined; hv3 is listed in group cpu_pool_alpha but is '
        'recorded in pool beta; run join or move first']


@pytest.mark.parametrize('leave, hosts, missing', [
    (None, ['hv1'], 'none named'),
    (['hv2'], ['hv1'], 'hv2'),
])
def test_leave_needs_named_hosts_in_the_play(leave, hosts, missing):
    found = membership({'alpha': ['hv1', 'hv2']}, {'hv1': None}, hosts=hosts, leave=leave)
    errors = cp.plan(found, 'leave')['errors']
    assert errors[0] == ('leave needs cpu_pool_leave, the hosts that leave, each in the play (missing: %s)'
                         % missing)


def test_leave_targets_the_recorded_pools():
    found = membership({'alpha': ['hv1', 'hv2']},
                       {'hv1': record('alpha', ['hv1', 'hv2']), 'hv2': record('alpha', ['hv1', 'hv2']),
                        'hv3': None}, leave='hv2,hv3')
    plan = cp.plan(found, 'leave')
    assert plan['targets'] == ['alpha'] and plan['errors'] == [] and plan['leaving'] == ['hv2', 'hv3']


def test_stat_shows_inventory_and_recorded_pools_with_the_members_in_the_play():
    found = membership({'alpha': ['hv1', 'hv2'], 'beta': ['hv3']},
                       {'hv1': record('alpha', ['hv1']), 'hv3': None, 'hv4': record('gone', ['hv4'])},
                       hosts=['hv1', 'hv3', 'hv4'])
    plan = cp.plan(found, 'stat')
    assert plan['targets'] == ['alpha', 'beta', 'gone']
    assert plan['pools'] == {'alpha': ['hv1'], 'beta': ['hv3']} and plan['errors'] == []
    assert cp.plan(found, 'stat', 'beta')['targets'] == ['beta']


def test_plan_refuses_unknown_actions_and_other_input():
    with pytest.raises(cp.CpuPoolError, match="unknown action 'grow'"):
        cp.plan(membership({'alpha': ['hv1']}), 'grow')
    with pytest.raises(cp.CpuPoolError, match='membership .* lacks prefix'):
        cp.plan({'groups': {}}, 'stat')


# ---------------------------------------------------------------------------
# what a converge sends and records
# ---------------------------------------------------------------------------

GUESTS = {
    'hv1': {'domains': [
        {'name': 'web', 'cpu_after': '<cpu>web</cpu>', 'pending': True, 'live_cpu': '<cpu>old</cpu>'},
        {'name': 'db', 'cpu_after': '<cpu>db</cpu>', 'pending': False, 'live_cpu': None},
        {'name': 'bare', 'cpu_after': None, 'pending': False},
    ]},
    'hv2': {'skipped': True},
}


def test_pool_checks_list_the_model_and_each_guest():
    assert cp.pool_checks('<cpu>model</cpu>', ['hv1', 'hv2'], GUESTS) == [
        {'name': 'pool model', 'xml': '<cpu>model</cpu>'},
        {'name': 'hv1/web', 'xml': '<cpu>web</cpu>'},
        {'name': 'hv1/web (running)', 'xml': '<cpu>old</cpu>'},
        {'name': 'hv1/db', 'xml': '<cpu>db</cpu>'},
    ]
    assert cp.pool_checks('<cpu/>', ['hv3'], {}) == [{'name': 'pool model', 'xml': '<cpu/>'}]


def test_pool_checks_need_the_model():
    with pytest.raises(cp.CpuPoolError, match='the pool model XML is empty'):
        cp.pool_checks('', ['hv1'], GUESTS)


def test_models_by_pool():
    results = [{'item': {'key': 'alpha', 'value': ['hv1']}, 'baseline': {'model': 'M'}},
               {'item': {'key': 'beta', 'value': ['hv2']}, 'failed': True, 'msg': 'pool "beta" mixes CPU vendors'},
               {'item': {'key': 'gamma', 'value': ['hv3']}},
               {'item': {'key': 'delta', 'value': ['hv4']}, 'skipped': True},
               {'msg': 'no item'}]
    assert cp.models_by_pool(results) == ({'alpha': {'model': 'M'}},
                                          {'beta': 'pool "beta" mixes CPU vendors',
                                           'gamma': 'no model could be computed'})
    assert cp.models_by_pool(None) == ({}, {})


MODEL = {'model': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'digest': 'd-new', 'features': BASE,
         'xml': '<cpu>model</cpu>', 'computed_by': 'baselineHypervisorCPU',
         'members': [{'name': 'hv1', 'model': 'Haswell', 'features': 5, 'gives_up': ['invtsc'], 'lacks': []},
                     {'name': 'hv2', 'model': 'Skylake', 'features': 7, 'gives_up': ['avx512f', 'clwb', 'invtsc'],
                      'lacks': []}]}


def test_pool_record_keeps_the_model_host_cpu_and_what_the_member_gives_up():
    host_cpu = {'model': 'Skylake', 'vendor': 'Intel', 'features': SKYLAKE, 'xml': '<cpu/>', 'arch': 'x86_64'}
    assert cp.pool_record(MODEL, 'alpha', ['hv2', 'hv1'], 'hv2', host_cpu) == {
        'schema': 1, 'pool': 'alpha', 'members': ['hv1', 'hv2'],
        'model': {'name': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'digest': 'd-new', 'features': BASE,
                  'xml': '<cpu>model</cpu>'},
        'host_cpu': {'model': 'Skylake', 'vendor': 'Intel', 'features': SKYLAKE},
        'gives_up': ['avx512f', 'clwb', 'invtsc'],
    }
    assert cp.pool_record(MODEL, 'alpha', ['hv1'], 'hv1', host_cpu, schema=2)['schema'] == 2


def test_pool_record_refuses_a_host_the_model_was_not_computed_from_and_an_incomplete_model():
    with pytest.raises(cp.CpuPoolError, match='hv9 is not among the members'):
        cp.pool_record(MODEL, 'alpha', ['hv9'], 'hv9', {})
    with pytest.raises(cp.CpuPoolError, match='the pool model lacks digest'):
        cp.pool_record({'model': 'M', 'vendor': 'Intel', 'features': [], 'xml': '<cpu/>'}, 'alpha', [], 'hv1', {})


# ---------------------------------------------------------------------------
# converge report
# ---------------------------------------------------------------------------

def _baseline(pool, members, model=None):
    return {'item': {'key': pool, 'value': members}, 'baseline': dict(model or MODEL)}


def _fits(*failing):
    """A compare result with the named checks incompatible."""
    return {'comparisons': [{'name': name, 'compatible': False, 'result': 'incompatible', 'message': message}
                            for name, message in failing]}


def test_converge_report_for_a_join():
    found = membership({'alpha': ['hv1', 'hv2']}, {'hv1': record('alpha', ['hv1']), 'hv2': None})
    plan = cp.plan(found, 'join')
    wider = dict(MODEL, features=BASE + ['extra'])  # the old model lacked 'extra' and nothing was lost
    guests = {'hv1': {'domains': [{'name': 'web', 'active': True, 'changed': True, 'pending': True}]},
              'hv2': {'domains': [{'name': 'db', 'active': False, 'changed': False, 'pending': False}]}}
    fits = {'hv1': {'comparisons': [{'name': 'pool model', 'compatible': True}]},
            'hv2': _fits(('hv1/web', 'lacks avx'), ('hv1/web (running)', ''))}
    report = cp.converge_report(plan, found, [_baseline('alpha', ['hv1', 'hv2'], wider)], guests, fits,
                                check_mode=True)
    assert report['action'] == 'join' and report['check_mode'] is True and report['released'] == []
    entry = report['pools'][0]
    assert entry['pool'] == 'alpha' and entry['members'] == ['hv1', 'hv2'] and entry['features'] == 5
    assert entry['model_before'] == {'model': 'Haswell-noTSX-IBRS', 'digest': 'd-old'}
    assert entry['gained'] == ['extra'] and entry['lost'] == []
    assert entry['joined'] == ['hv2'] and entry['moved_in'] == [] and entry['departed'] == []
    assert [(m['name'], m['status'], m['model_fits']) for m in entry['members_detail']] == [
        ('hv1', 'member', True), ('hv2', 'joining', True)]
    assert entry['guests'][0] == {'host': 'hv1', 'name': 'web', 'active': True, 'changed': True, 'pending': True,
                                  'starts_on_every_member': False, 'does_not_start_on': ['hv2'],
                                  'running_cpu_does_not_fit': ['hv2']}
    assert entry['guests'][1]['starts_on_every_member'] is True and entry['pending'] == ['hv1/web']
    assert report['misfits'] == [{'pool': 'alpha', 'cpu': 'hv1/web', 'member': 'hv2', 'result': 'incompatible',
                                  'message': 'lacks avx', 'text': 'hv1/web on hv2 (incompatible: lacks avx)'}]
    assert report['running_misfits'][0]['text'] == 'hv1/web (running) on hv2 (incompatible)'


def test_converge_report_without_a_recorded_model_has_no_change():
    found = membership({'alpha': ['hv1']}, {'hv1': None})
    report = cp.converge_report(cp.plan(found, 'join'), found, [_baseline('alpha', ['hv1'])], {}, {})
    entry = report['pools'][0]
    assert entry['model_before'] is None and entry['gained'] == [] and entry['lost'] == []
    assert entry['guests'] == [] and report['check_mode'] is False


def test_converge_report_narrowing_and_a_model_that_does_not_fit():
    found = membership({'alpha': ['hv1']}, {'hv1': record('alpha', ['hv1'], dict(OLD_MODEL, features=SKYLAKE))})
    fits = {'hv1': _fits(('pool model', 'host lacks clwb'))}
    report = cp.converge_report(cp.plan(found, 'recalc'), found, [_baseline('alpha', ['hv1'])], {}, fits)
    entry = report['pools'][0]
    assert entry['lost'] == ['avx512f', 'clwb', 'invtsc'] and entry['gained'] == []
    assert entry['members_detail'][0]['model_fits'] is False
    assert report['misfits'][0]['cpu'] == 'pool model'


def test_converge_report_of_a_move_names_who_moved_in_and_out():
    both = ['hv1', 'hv2', 'hv3']
    found = membership({'alpha': ['hv1'], 'gamma': ['hv2']},
                       {'hv1': record('alpha', both), 'hv2': record('alpha', both)}, hosts=['hv1', 'hv2'])
    plan = cp.plan(found, 'move')
    report = cp.converge_report(plan, found, [_baseline('alpha', ['hv1']), _baseline('gamma', ['hv2'])], {}, {})
    alpha, gamma = report['pools']
    assert alpha['moved_out'] == ['hv2'] and alpha['moved_in'] == []
    assert alpha['departed'] == ['hv3']  # recorded, gone from the group without leave
    assert gamma['moved_in'] == ['hv2'] and gamma['model_before'] is None  # hv2's record is of alpha


def test_converge_report_of_a_leave_releases_the_hosts():
    members = ['hv1', 'hv2']
    found = membership({'alpha': members}, {'hv1': record('alpha', members), 'hv2': record('alpha', members)},
                       leave=['hv2'])
    plan = cp.plan(found, 'leave')
    restored = {'hv1': {'skipped': True}, 'hv2': {'changed_domains': ['web'], 'pending': ['web']}}
    report = cp.converge_report(plan, found, [_baseline('alpha', ['hv1'])], {}, {}, restored)
    assert report['released'] == [{'host': 'hv2', 'pool': 'alpha', 'restored': ['web'], 'pending': ['web']}]
    entry = report['pools'][0]
    assert entry['left'] == ['hv2'] and entry['departed'] == [] and entry['members'] == ['hv1']


def test_converge_report_skips_pools_without_a_model():
    found = membership({'alpha': ['hv1']}, {'hv1': None})
    failed = {'item': {'key': 'alpha', 'value': ['hv1']}, 'failed': True, 'msg': 'no'}
    assert cp.converge_report(cp.plan(found, 'join'), found, [failed], {}, {})['pools'] == []


# ---------------------------------------------------------------------------
# stat report
# ---------------------------------------------------------------------------

def _host_cpus():
    return {'hv1': {'host_cpu': {'model': 'Haswell', 'vendor': 'Intel', 'features': HASWELL}},
            'hv2': {'host_cpu': {'model': 'Skylake', 'vendor': 'Intel', 'features': SKYLAKE}}}


def test_stat_report_compares_the_recorded_model_with_what_the_members_give():
    members = ['hv1', 'hv2', 'hv3']
    found = membership({'alpha': members}, {'hv1': record('alpha', members), 'hv2': record('alpha', members)},
                       hosts=['hv1', 'hv2'])
    fresh = dict(MODEL, features=BASE + ['clwb'], digest='d-new')
    guests = {'hv1': {'domains': [{'name': 'web', 'pool_after': 'alpha', 'digest_after': 'd-old', 'pending': True},
                                  {'name': 'db', 'pool_after': 'beta', 'digest_after': 'x', 'pending': False}]},
              'hv2': {'domains': [{'name': 'bare', 'pool_after': None, 'digest_after': None, 'pending': False}]}}
    report = cp.stat_report(cp.plan(found, 'stat'), found, [_baseline('alpha', ['hv1', 'hv2'], fresh)],
                            _host_cpus(), guests)
    assert report['action'] == 'stat' and report['misfits'] == [] and report['notes'] == []
    entry = report['pools'][0]
    assert entry['members'] == members and entry['not_in_play'] == ['hv3']
    assert entry['recorded_model'] == {'model': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'digest': 'd-old',
                                       'features': 4, 'members': members}
    assert entry['records_agree'] is True
    assert entry['current_model'] == {'model': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'digest': 'd-new',
                                      'features': 5}
    assert entry['recalc_would_gain'] == ['clwb'] and entry['recalc_would_lose'] == []
    assert entry['recalc_needed'] is True and entry['departed'] == [] and 'error' not in entry
    hv1, hv2 = entry['members_detail']
    assert hv1 == {'name': 'hv1', 'status': 'member', 'recorded_pool': 'alpha', 'cpu': 'Haswell', 'vendor': 'Intel',
                   'features': 5, 'gives_up': ['invtsc'], 'lacks': [], 'gives_up_after_recalc': ['invtsc']}
    assert hv2['gives_up'] == ['avx512f', 'clwb', 'invtsc']  # against the recorded model, not the fresh one
    assert entry['guests_carrying_model'] == ['hv1/web']
    assert entry['guests_without_model'] == ['hv1/db (pool beta, other model)', 'hv2/bare']
    assert entry['pending'] == ['hv1/web']


def test_stat_report_disagreeing_records_departed_members_and_outside_hosts():
    found = membership({'alpha': ['hv1', 'hv2']},
                       {'hv1': record('alpha', ['hv1', 'hv2', 'hv9']),
                        'hv2': record('alpha', ['hv1', 'hv2'], dict(OLD_MODEL, digest='d-other')),
                        'hv5': record('alpha', ['hv5'])})
    report = cp.stat_report(cp.plan(found, 'stat'), found, [_baseline('alpha', ['hv1', 'hv2'],
                                                                      dict(MODEL, digest='d-old'))],
                            _host_cpus(), {})
    entry = report['pools'][0]
    assert entry['records_agree'] is False and entry['departed'] == ['hv9']
    assert entry['recalc_needed'] is False
    assert report['notes'] == ['hv5 is recorded in pool alpha but in no pool group: run leave with '
                               'cpu_pool_leave=hv5 to restore its guests']


def test_stat_report_before_anyone_joined_and_when_no_model_can_be_computed():
    found = membership({'alpha': ['hv1', 'hv2']}, {'hv1': None, 'hv2': None})
    failed = {'item': {'key': 'alpha', 'value': ['hv1', 'hv2']}, 'failed': True, 'msg': 'mixes CPU vendors'}
    report = cp.stat_report(cp.plan(found, 'stat'), found, [failed], _host_cpus(), {})
    entry = report['pools'][0]
    assert entry['recorded_model'] is None and entry['current_model'] is None
    assert entry['error'] == 'mixes CPU vendors' and 'departed' not in entry and 'recalc_needed' not in entry
    assert entry['members_detail'][0]['gives_up'] == [] and entry['members_detail'][0]['lacks'] == []
    assert entry['members_detail'][0]['gives_up_after_recalc'] is None


def test_stat_report_without_a_record_measures_against_the_fresh_model():
    found = membership({'alpha': ['hv1']}, {'hv1': None})
    narrow = dict(MODEL, features=BASE + ['avx512f'])
    report = cp.stat_report(cp.plan(found, 'stat'), found, [_baseline('alpha', ['hv1'], narrow)],
                            _host_cpus(), {'hv1': {'domains': [{'name': 'web', 'pool_after': None}]}})
    member = report['pools'][0]['members_detail'][0]
    assert member['status'] == 'joining' and member['recorded_pool'] is None
    assert member['gives_up'] == ['invtsc'] and member['lacks'] == ['avx512f']
    assert report['pools'][0]['guests_without_model'] == ['hv1/web']


def test_report_dispatches_on_the_action():
    found = membership({'alpha': ['hv1']}, {'hv1': None})
    assert cp.report(cp.plan(found, 'stat'), found, [])['action'] == 'stat'
    joined = cp.report(cp.plan(found, 'join'), found, [_baseline('alpha', ['hv1'])], guests={}, fits={})
    assert joined['action'] == 'join' and joined['pools'][0]['joined'] == ['hv1']
    with pytest.raises(cp.CpuPoolError, match='plan .* lacks action'):
        cp.report({}, found, [])


# ---------------------------------------------------------------------------
# summary (lines checked against the Jinja template it replaces)
# ---------------------------------------------------------------------------

CONVERGE = {
    'action': 'leave', 'check_mode': True,
    'released': [{'host': 'hv3', 'pool': 'alpha', 'restored': ['a', 'b'], 'pending': ['a']},
                 {'host': 'hv4', 'pool': None, 'restored': [], 'pending': []}],
    'pools': [{'pool': 'alpha', 'members': ['hv1', 'hv2'], 'vendor': 'Intel', 'model': 'Skylake-Server-IBRS',
               'features': 80, 'digest': 'd2', 'model_before': {'model': 'Haswell-noTSX-IBRS', 'digest': 'd1'},
               'gained': ['avx512f', 'clwb'], 'lost': [], 'joined': [], 'moved_in': ['hv2'], 'moved_out': [],
               'left': ['hv3'], 'departed': ['hv9'],
               'members_detail': [{'name': 'hv1', 'status': 'member', 'cpu': 'Skylake', 'gives_up': [],
                                   'model_fits': True},
                                  {'name': 'hv2', 'status': 'moving', 'cpu': 'Icelake', 'gives_up': ['gfni'],
                                   'model_fits': False}],
               'guests': [{'changed': True, 'starts_on_every_member': True},
                          {'changed': False, 'starts_on_every_member': False}],
               'pending': ['hv1/web']},
              {'pool': 'beta', 'members': ['hv5'], 'vendor': 'AMD', 'model': 'EPYC', 'features': 9, 'digest': 'd3',
               'model_before': {'model': 'EPYC', 'digest': 'd3'}, 'gained': [], 'lost': [],
               'members_detail': [], 'guests': [], 'pending': []}],
    'misfits': [{'cpu': 'hv1/web', 'member': 'hv2', 'result': 'incompatible', 'message': 'lacks x'},
                {'cpu': 'hv1/web', 'member': 'hv5', 'result': 'incompatible', 'message': 'lacks y'},
                {'cpu': 'hv1/db', 'member': 'hv2', 'result': 'error', 'message': ''}],
    'running_misfits': [{'cpu': 'hv1/web (running)', 'member': 'hv2', 'result': 'incompatible', 'message': ''}],
}

CONVERGE_LINES = [
    'check mode: nothing was changed, this is what leave would do',
    'hv3 left pool alpha: 2 guest(s) got their own CPU definition back, running with the pool CPU until their '
    'next start: a',
    'hv4 left pool (none recorded): 0 guest(s) got their own CPU definition back',
    'pool alpha: 2 member(s), Intel, model Skylake-Server-IBRS (80 features, digest d2)',
    '  model changed from Haswell-noTSX-IBRS: 2 feature(s) gained (avx512f, clwb), 0 lost',
    '  moved in: hv2',
    '  left: hv3',
    '  gone from the group without leave (their guests keep the old model): hv9',
    '  hv1 [member] Skylake: gives up 0',
    '  hv2 [moving] Icelake: gives up 1 (gfni) - THE MODEL DOES NOT FIT THIS MEMBER',
    '  guests: 2, 1 changed, 1 can start on every member; running with an older CPU until their next start: '
    'hv1/web',
    'pool beta: 1 member(s), AMD, model EPYC (9 features, digest d3)',
    '  guests: 0, 0 changed, 0 can start on every member',
    'misfit: hv1/db would not start on hv2 (error)',
    'misfit: hv1/web would not start on hv2, hv5 (incompatible: lacks x)',
    'hv1/web (running) with its current CPU cannot migrate to hv2 until its next start (incompatible)',
]

STAT = {
    'action': 'stat', 'check_mode': False, 'misfits': [],
    'pools': [{'pool': 'alpha', 'members': ['hv1', 'hv2', 'hv3'], 'not_in_play': ['hv3'],
               'recorded_model': {'model': 'Haswell', 'vendor': 'Intel', 'features': 60, 'digest': 'd1'},
               'records_agree': False,
               'current_model': {'model': 'Skylake', 'features': 80}, 'recalc_needed': True,
               'recalc_would_gain': ['avx512f'], 'recalc_would_lose': [],
               'members_detail': [{'name': 'hv1', 'status': 'member', 'cpu': 'Skylake', 'vendor': 'Intel',
                                   'gives_up': ['a', 'b'], 'lacks': []},
                                  {'name': 'hv2', 'status': 'moving', 'recorded_pool': 'beta', 'cpu': 'Icelake',
                                   'vendor': 'Intel', 'gives_up': [], 'lacks': ['x', 'y']}],
               'departed': ['hv9'], 'guests_carrying_model': ['hv1/a'],
               'guests_without_model': ['hv2/b (pool beta, other model)'], 'pending': ['hv1/a']},
              {'pool': 'beta', 'members': ['hv4'], 'not_in_play': [], 'recorded_model': None,
               'current_model': None, 'error': 'mixes CPU vendors', 'members_detail': [],
               'guests_carrying_model': [], 'guests_without_model': [], 'pending': []},
              {'pool': 'gamma', 'members': ['hv6'], 'not_in_play': [], 'recorded_model': {'model': 'M', 'vendor': 'AMD', 'features': 1,
                                                                                          'digest': 'd4'},
               'records_agree': True, 'current_model': {'model': 'M', 'features': 1}, 'recalc_needed': False,
               'members_detail': [], 'guests_carrying_model': [], 'guests_without_model': [], 'pending': []}],
    'notes': ['hv5 is recorded in pool alpha but in no pool group: run leave'],
}

STAT_LINES = [
    'pool alpha: 3 member(s) in the inventory, not in this play: hv3',
    '  recorded model: Haswell (Intel, 60 features, digest d1) - MEMBERS RECORD DIFFERENT MODELS: run recalc',
    '  current members give: Skylake (80 features); recalc would gain 1 (avx512f) and lose 0',
    '  hv1 [member] Skylake (Intel): gives up 2 (a, b)',
    '  hv2 [moving from beta] Icelake (Intel): gives up 0 - LACKS x, y',
    '  hv9: recorded as a member but no longer in the group (run leave on it)',
    '  guests: 1 carry the recorded model, without it: hv2/b (pool beta, other model); running with an older CPU '
    'until their next start: hv1/a',
    'pool beta: 1 member(s) in the inventory',
    '  recorded model: none (no member has joined)',
    '  cannot compute a model: mixes CPU vendors',
    '  guests: 0 carry the recorded model',
    'pool gamma: 1 member(s) in the inventory',
    '  recorded model: M (AMD, 1 features, digest d4)',
    '  current members give: M (1 features); the recorded model is up to date',
    '  guests: 0 carry the recorded model',
    'hv5 is recorded in pool alpha but in no pool group: run leave',
]


def test_summary_of_a_converge_report():
    assert cp.summary(CONVERGE) == CONVERGE_LINES


def test_summary_of_a_stat_report():
    assert cp.summary(STAT) == STAT_LINES


def test_summary_of_a_current_model_without_record_adds_nothing():
    entry = dict(STAT['pools'][1], current_model={'model': 'M', 'features': 3}, error=None)
    del entry['error']
    lines = cp.summary({'action': 'stat', 'pools': [entry]})
    assert lines[2] == '  current members give: M (3 features)'


def test_summary_of_real_reports_matches_the_role_test():
    found = membership({'alpha': ['hv1']}, {'hv1': None})
    report = cp.converge_report(cp.plan(found, 'join'), found, [_baseline('alpha', ['hv1'])],
                                {'hv1': {'domains': []}}, {'hv1': {'comparisons': []}})
    assert cp.summary(report) == [
        'pool alpha: 1 member(s), Intel, model Haswell-noTSX-IBRS (4 features, digest d-new)',
        '  joined: hv1',
        '  hv1 [joining] Haswell: gives up 1 (invtsc)',
        '  hv2 [member] Skylake: gives up 3 (avx512f, clwb, invtsc)',
        '  guests: 0, 0 changed, 0 can start on every member',
    ]
