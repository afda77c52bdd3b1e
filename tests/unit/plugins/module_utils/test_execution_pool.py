# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""_execution_pool: tiers and sources, metadata, status rules, verdicts, snapshot values, restore plans, budget."""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import guest_placement

TIERS = {'gold': {'slice': 'machine-gold.slice', 'partition': '/machine/gold', 'cpu_weight': 512, 'shares': 512},
         'silver': {'slice': 'machine-silver.slice', 'partition': '/machine/silver', 'cpu_weight': 333,
                    'shares': 333},
         'bronze': {'slice': 'machine-bronze.slice', 'partition': '/machine/bronze', 'cpu_weight': 167,
                    'shares': 167}}
POOLS = {'host_reserved': '0-1', 'host_housekeeping': '0', 'host_emulator': '1', 'guest_domain': '2-7'}
NS = ep.METADATA_NS


def domain_xml(metadata=''):
    return ("<domain type='qemu'><name>vm</name>%s<vcpu>2</vcpu><iothreads>1</iothreads></domain>" % metadata)


# -- metadata ---------------------------------------------------------------

def test_metadata_fragment_and_bad_tier():
    assert ep.metadata_fragment('gold') == '<guest><tier>gold</tier></guest>'
    with pytest.raises(ep.PoolError, match='cannot be written'):
        ep.metadata_fragment('go<ld')


def test_parse_metadata_guest_element():
    xml = domain_xml('<metadata><kvmlab:guest xmlns:kvmlab="%s"><kvmlab:tier> silver </kvmlab:tier>'
                     '</kvmlab:guest></metadata>' % NS)
    meta = ep.parse_metadata(xml)
    assert meta == {'has_metadata': True, 'element': '<guest><tier> silver </tier></guest>', 'prefix': 'kvmlab',
                    'tier': 'silver'}


def test_parse_metadata_bare_tier_other_prefix_and_unqualified_child():
    meta = ep.parse_metadata(domain_xml('<metadata><k:tier xmlns:k="%s">gold</k:tier></metadata>' % NS))
    assert meta['tier'] == 'gold' and meta['prefix'] == 'k'
    meta = ep.parse_metadata(domain_xml('<metadata><guest xmlns="%s"><tier>bronze</tier></guest></metadata>' % NS))
    assert meta['tier'] == 'bronze'


def test_parse_metadata_absent_foreign_or_empty():
    assert ep.parse_metadata(domain_xml()) == {'has_metadata': False, 'element': None, 'prefix': 'kvmlab',
                                               'tier': None}
    foreign = ep.parse_metadata(domain_xml(
        '<metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">'
        '<libosinfo:os id="x"/></libosinfo:libosinfo></metadata>'))
    assert foreign['has_metadata'] is True and foreign['element'] is None and foreign['tier'] is None
    empty = ep.parse_metadata(domain_xml('<metadata><kvmlab:guest xmlns:kvmlab="%s"/></metadata>' % NS))
    assert empty['element'] == '<guest />' and empty['tier'] is None


# -- guests and tier sources -------------------------------------------------

def test_resolve_tiers_from_inventory_metadata_default_and_exclude():
    resolved = ep.resolve_guests(
        ['zeta', 'alpha', 'listed', 'tagged', 'skip'],
        [{'name': 'listed', 'tier': 'Gold', 'iothreads': 1}, {'name': 'tagged', 'emulator_policy': 'float'}],
        ['skip'], {'tagged': 'silver', 'listed': 'bronze', 'zeta': 'silver'}, 'bronze', TIERS)
    guests = resolved['guests']
    # the list's order first, then the others by name
    assert [g['name'] for g in guests] == ['listed', 'tagged', 'alpha', 'zeta']
    assert [(g['tier'], g['tier_source']) for g in guests] == [
        ('Gold', 'inventory'), ('silver', 'metadata'), ('bronze', 'default'), ('silver', 'metadata')]
    assert guests[0]['iothreads'] == 1 and guests[1]['emulator_policy'] == 'float'
    assert resolved['excluded'] == ['skip']


def test_resolve_fails_on_unknown_listed_guest_unless_excluded():
    with pytest.raises(ep.PoolError, match='ghost of the guest list are not defined'):
        ep.resolve_guests(['a'], [{'name': 'ghost', 'tier': 'gold'}], [], {}, 'bronze', TIERS)
    resolved = ep.resolve_guests(['a'], [{'name': 'ghost', 'tier': 'gold'}], ['ghost'], {}, 'bronze', TIERS)
    assert [g['name'] for g in resolved['guests']] == ['a'] and resolved['excluded'] == []


@pytest.mark.parametrize('inventory, metadata, default, message', [
    ([{'name': 'a', 'tier': 'platinum'}], {}, 'bronze', 'tier "platinum" \\(from the guest list\\)'),
    ([], {'a': 'iron'}, 'bronze', 'tier "iron" \\(from the guest\'s libvirt metadata\\)'),
    ([], {}, 'tin', 'default_tier "tin" is not one of the tiers'),
    ([{'name': 'a'}, {'name': 'a'}], {}, 'bronze', 'listed more than once'),
    (['a'], {}, 'bronze', 'must be a dict with a name'),
])
def test_resolve_errors_name_the_problem(inventory, metadata, default, message):
    with pytest.raises(ep.PoolError, match=message):
        ep.resolve_guests(['a'], inventory, [], metadata, default, TIERS)


def test_wants_metadata_only_for_inventory_tiers_and_placement():
    assert ep.wants_metadata({'tier': 'gold', 'tier_source': 'inventory'}, 'placement') == 'gold'
    assert ep.wants_metadata({'tier': 'gold', 'tier_source': 'metadata'}, 'placement') is None
    assert ep.wants_metadata({'tier': 'bronze', 'tier_source': 'default'}, 'placement') is None
    assert ep.wants_metadata({'tier': 'gold', 'tier_source': 'inventory'}, 'weights') is None


def placed(name='vm', tier='gold', source='inventory', **extra):
    guest = dict(name=name, tier=tier, **extra)
    entry = guest_placement([guest], TIERS, POOLS)['guests'][0]
    entry['tier_source'] = source
    return entry


def test_pin_request_and_scope_wanted_by_kind():
    entry = placed()
    assert ep.pin_request(entry, 'placement') == {
        'name': 'vm', 'cpu_shares': 512, 'partition': '/machine/gold', 'vcpu_cpuset': '2-7',
        'emulator_cpuset': '1', 'iothread_cpuset': '1'}
    assert ep.pin_request(entry, 'weights') == {'name': 'vm', 'cpu_shares': 512, 'partition': '/machine/gold'}
    # an unrestricted scope that already reaches every pool CPU keeps AllowedCPUs unset
    assert ep.scope_wanted(entry, 'placement', '0-7', effective='0-7') == {'CPUWeight': '512'}
    # a restricted scope, or one whose effective CPUs miss some, is widened
    assert ep.scope_wanted(entry, 'placement', '0-7', allowed='0-1', effective='0-1') == \
        {'CPUWeight': '512', 'AllowedCPUs': '0-7'}
    assert ep.scope_wanted(entry, 'placement', '0-7', effective='0-5') == {'CPUWeight': '512', 'AllowedCPUs': '0-7'}
    assert ep.scope_wanted(entry, 'placement', '0-7') == {'CPUWeight': '512', 'AllowedCPUs': '0-7'}
    assert ep.scope_wanted(entry, 'weights', '0-7') == {'CPUWeight': '512'}
    assert ep.scope_wanted(entry, 'weights', '0-7', weight=256) == {'CPUWeight': '256'}


# -- status rules -------------------------------------------------------------

@pytest.mark.parametrize('seen, state', [(['2-7'], 'applied'), (['0-7'], 'stock'), (['0-7', '2-7'], 'drifted'),
                                         (['2-3'], 'drifted'), ([], 'drifted')])
def test_thread_state(seen, state):
    assert ep.thread_state(seen, '2-7', '0-7') == state


def test_on_reserved():
    assert ep.on_reserved(['0-7'], '0-1') == '0-1'
    assert ep.on_reserved(['2-7', '1-3'], '0-1') == '1'
    assert ep.on_reserved(['2-7'], '0-1') == ''
    assert ep.on_reserved(['2-7'], None) == ''


@pytest.mark.parametrize('prop, cgroup, state', [
    ('512', 512, 'applied'), ('512', None, 'applied'), ('512', 100, 'drifted'),
    ('', 100, 'stock'), ('100', 100, 'stock'), ('', None, 'stock'), ('100', None, 'stock'),
    ('', 512, 'drifted'), ('333', 333, 'drifted'), ('1024', 1024, 'drifted')])
def test_weight_state_stock_is_default_or_100(prop, cgroup, state):
    assert ep.weight_state(prop, cgroup, 512) == state


@pytest.mark.parametrize('shares, state', [(512, 'applied'), (1024, 'stock'), (100, 'stock'), (333, 'drifted'),
                                           (None, 'drifted')])
def test_shares_state_stock_is_100_or_1024(shares, state):
    assert ep.shares_state(shares, 512) == state


@pytest.mark.parametrize('allowed, effective, state', [
    ('0-1,2-7', '0-7', 'drifted'), ('0-7', '0-7', 'applied'), ('', '0-7', 'info'), ('', '0-9', 'info'),
    ('', '0-5', 'drifted'), ('', None, 'drifted'), ('2-7', '2-7', 'drifted')])
def test_allowed_state_judges_what_is_effective(allowed, effective, state):
    assert ep.allowed_state(allowed, '0-7', effective) == state


def test_covers():
    assert ep.covers('0-7', '0-1,4-5') and ep.covers('0-7', '0-7')
    assert not ep.covers('0-3', '0-7') and not ep.covers(None, '0-7') and not ep.covers('0-7', 'x')


def config(vcpu='unpinned', emulator='unpinned', iothread=None, shares=0, partition=''):
    return {'vcpu_pins': {'0': vcpu, '1': vcpu}, 'emulator_cpuset': emulator,
            'iothread_pins': {} if iothread is None else {'1': iothread}, 'cpu_shares': shares,
            'partition': partition}


def test_persistent_state_rules():
    entry = placed()
    applied = config('2-7', '1', None, 512, '/machine/gold')
    assert ep.persistent_state(applied, entry, 'gold') == 'applied'
    assert ep.persistent_state(applied, entry, 'GOLD') == 'applied'
    # the tier the inventory gave is missing from the metadata
    assert ep.persistent_state(applied, entry, None) == 'drifted'
    assert ep.persistent_state(config('2-7', '1', '1', 512, '/machine/gold'), entry, 'gold') == 'applied'
    assert ep.persistent_state(config('2-7', '1', 'unpinned', 512, '/machine/gold'), entry, 'gold') == 'drifted'
    assert ep.persistent_state(config(), entry, None) == 'stock'
    # metadata left behind by the layer is not stock; the operator's own (tier from metadata) is
    assert ep.persistent_state(config(), entry, 'gold') == 'drifted'
    assert ep.persistent_state(config(), placed(source='metadata'), 'gold') == 'stock'
    assert ep.persistent_state(config(shares=512), entry, None) == 'drifted'
    # a default-tier guest needs no metadata
    bronze = placed(tier='bronze', source='default')
    assert ep.persistent_state(config('2-7', '1', None, 167, '/machine/bronze'), bronze, None) == 'applied'


def test_persistent_state_weights_kind_ignores_pins_and_metadata():
    entry = placed()
    assert ep.persistent_state(config(shares=512, partition='/machine/gold'), entry, None, 'weights') == 'applied'
    assert ep.persistent_state(config('2-7'), entry, None, 'weights') == 'stock'
    assert ep.persistent_state(config(shares=333, partition='/machine/gold'), entry, None, 'weights') == 'drifted'


def view(entry, running=True, vcpu='2-7', emulator='1', iothread=None, weight='512', cgroup_weight=512,
         allowed='', cfg=None, meta_tier='gold', shares=512, live_partition='/machine', effective='0-7'):
    proc = {'running': running, 'cpus': {'vcpu': [vcpu], 'emulator': [emulator],
                                         'iothread': [iothread] if iothread else []},
            'counts': {'vcpu': 2, 'emulator': 3, 'iothread': 1 if iothread else 0}}
    return {'entry': entry, 'active': running, 'proc': proc if running else None,
            'libvirt': {'live': {'cpu_shares': shares, 'partition': live_partition} if running else None,
                        'config': cfg or config('2-7', '1', None, 512, '/machine/gold')},
            'scope': {'unit': 'machine-qemu\\x2d1\\x2dvm.scope', 'properties': {'CPUWeight': weight,
                                                                                'AllowedCPUs': allowed},
                      'cgroup': {'cpu_weight': cgroup_weight, 'cpuset_cpus_effective': effective}} if running else None,
            'metadata': {'tier': meta_tier}}


CONTEXT = {'online': '0-7', 'reserved': '0-1', 'scope_allowed_cpus': '0-7', 'systemd': True}


def by_name(items):
    return dict((item['name'], item) for item in items)


def test_guest_items_applied_systemd():
    items = by_name(ep.guest_items(view(placed()), CONTEXT))
    assert sorted(items) == ['vm emulator threads', 'vm partition', 'vm persistent XML', 'vm scope AllowedCPUs',
                             'vm tier', 'vm vCPU threads', 'vm weight']
    assert items['vm tier']['live'] == 'gold from inventory' and items['vm tier']['state'] == 'info'
    assert items['vm weight']['live'] == 'CPUWeight 512, cpu.weight 512'
    assert all(item['state'] == 'applied' for item in items.values() if item['class'] != 'info'
               and item['name'] != 'vm scope AllowedCPUs')
    # unrestricted scope reaching every pool CPU: shown, not counted
    assert items['vm scope AllowedCPUs']['state'] == 'info'
    assert items['vm partition']['live'] == 'running in /machine, next start in /machine/gold (pending)'
    assert all(item['tier_source'] == 'inventory' for item in items.values())


def test_guest_items_stock_and_reserved_drift_text():
    items = by_name(ep.guest_items(view(placed(), vcpu='0-7', emulator='0-7', weight='', cgroup_weight=100,
                                        allowed='', cfg=config(), meta_tier=None), CONTEXT))
    assert items['vm vCPU threads']['state'] == 'stock'
    assert items['vm vCPU threads']['live'] == '0-7 (can run on reserved CPUs 0-1)'
    assert items['vm weight']['live'] == 'CPUWeight default, cpu.weight 100'
    assert items['vm scope AllowedCPUs']['live'].startswith('unrestricted')
    assert set(item['state'] for item in items.values() if item['class'] != 'info') == {'stock', 'info'}
    assert [n for n, i in items.items() if i['class'] != 'info' and i['state'] == 'info'] == ['vm scope AllowedCPUs']


def test_guest_items_iothreads_and_not_running():
    items = by_name(ep.guest_items(view(placed(iothreads=1), iothread='1'), CONTEXT))
    assert items['vm IOThread threads']['state'] == 'applied'
    stopped = by_name(ep.guest_items(view(placed(), running=False), CONTEXT))
    assert stopped['vm vCPU threads'] == dict(stopped['vm vCPU threads'], state='info', live=ep.NOT_RUNNING)
    assert stopped['vm weight']['state'] == 'info'
    assert stopped['vm persistent XML']['state'] == 'applied'
    assert stopped['vm partition']['live'] == 'not running, next start in /machine/gold'


def test_guest_items_without_systemd_use_live_shares():
    context = dict(CONTEXT, systemd=False)
    items = by_name(ep.guest_items(view(placed(), shares=1024), context))
    assert 'vm scope AllowedCPUs' not in items
    assert items['vm weight']['live'] == 'cpu_shares 1024' and items['vm weight']['state'] == 'stock'


def test_guest_items_weights_kind():
    items = ep.guest_items(view(placed()), CONTEXT, 'weights')
    assert [item['name'] for item in items] == ['vm weight', 'vm persistent XML']


def test_status_verdicts_and_mixed():
    good = ep.guest_items(view(placed()), CONTEXT)
    assert ep.status(good, 'placement')['verdict'] == 'shared execution pool'
    bad = ep.guest_items(view(placed(), vcpu='0-7'), CONTEXT)
    result = ep.status(bad, 'placement')
    assert result['verdict'] == 'mixed' and result['mixed'] == ['vm vCPU threads']
    weights = ep.status(bad, 'weights')
    assert weights['verdict'] == 'weighted' and [i['name'] for i in weights['items']] == ['vm weight']
    stock = ep.guest_items(view(placed(), vcpu='0-7', emulator='0-7', weight='', cgroup_weight=100, allowed='',
                                cfg=config(), meta_tier=None), CONTEXT)
    assert ep.status(stock, 'placement')['verdict'] == 'stock'
    assert ep.status(stock, 'placement')['mixed'] == []
    with pytest.raises(ep.PoolError):
        ep.status([], 'other')


def test_slice_and_excluded_items():
    items = ep.slice_items({'machine-gold.slice': {'FragmentPath': '/etc/systemd/system/machine-gold.slice',
                                                   'CPUWeight': '512'},
                            'machine-silver.slice': {'FragmentPath': '', 'DropInPaths': '', 'CPUWeight': '[not set]'}},
                           TIERS)
    assert [(i['name'], i['live']) for i in items] == [
        ('machine-gold.slice', 'defined, CPUWeight 512'),
        ('machine-silver.slice', 'no unit file (guests of this tier would get the default weight)')]
    assert ep.excluded_items(['x'])[0]['state'] == 'info'


# -- snapshot and restore ------------------------------------------------------

ENTRIES = [
    {'name': 'vm', 'scope': 'config', 'vcpu_pins': {'0': 'unpinned'}, 'emulator_cpuset': 'unpinned',
     'iothread_pins': {}, 'cpu_shares': 0, 'partition': ''},
    {'name': 'vm', 'scope': 'live', 'vcpu_pins': {'0': '0-7'}, 'emulator_cpuset': '0-7', 'iothread_pins': {},
     'cpu_shares': 1024},
    {'name': 'off', 'scope': 'config', 'vcpu_pins': {'0': 'unpinned'}, 'emulator_cpuset': 'unpinned',
     'iothread_pins': {}, 'cpu_shares': 0, 'partition': ''},
]
SCOPES = {'vm': {'unit': 'vm.scope', 'properties': {'CPUWeight': '', 'AllowedCPUs': '', 'CPUQuota': ''},
                 'cgroup': {'cpuset_cpus': ''}}}
META = {'vm': {'element': None, 'prefix': 'kvmlab', 'has_metadata': False, 'tier': None},
        'off': {'element': '<guest><tier>gold</tier></guest>', 'prefix': 'kvmlab', 'has_metadata': True,
                'tier': 'gold'}}


def test_snapshot_values_placement():
    values = ep.snapshot_values('placement', 'qemu:///system', ['vm', 'off'], ENTRIES, SCOPES, META,
                                {'vm': {'has_metadata': False, 'iothreadids': False}})
    assert values['kind'] == 'apply' and values['guests'] == ['vm', 'off']
    assert values['domains'] == ENTRIES
    assert values['scopes'] == [{'guest': 'vm', 'unit': 'vm.scope', 'properties': {'CPUWeight': '', 'AllowedCPUs': ''},
                                 'cgroup': {'cpuset_cpus': ''}}]
    assert values['metadata']['off'] == {'element': '<guest><tier>gold</tier></guest>', 'prefix': 'kvmlab',
                                         'has_metadata': True}
    assert values['xml_shape'] == {'vm': {'has_metadata': False, 'iothreadids': False}}


def test_snapshot_values_weights_keep_only_weights():
    values = ep.snapshot_values('weights', 'u', ['vm', 'off'], ENTRIES, SCOPES, META)
    assert values['kind'] == 'contention'
    assert values['domains'] == [{'name': 'vm', 'scope': 'config', 'cpu_shares': 0, 'partition': ''},
                                 {'name': 'vm', 'scope': 'live', 'cpu_shares': 1024},
                                 {'name': 'off', 'scope': 'config', 'cpu_shares': 0, 'partition': ''}]
    assert values['scopes'][0]['properties'] == {'CPUWeight': ''} and 'cgroup' not in values['scopes'][0]
    assert 'metadata' not in values
    # a live entry without shares (no cpu controller) has nothing to restore
    entries = [{'name': 'vm', 'scope': 'live', 'vcpu_pins': {}, 'emulator_cpuset': '0', 'iothread_pins': {}}]
    assert ep.snapshot_values('weights', 'u', ['vm'], entries, {}, {})['domains'] == []


def test_check_values():
    values = ep.snapshot_values('placement', 'u', ['vm'], ENTRIES[:2], SCOPES, META)
    ep.check_values(values, 'placement', '/s.json')
    with pytest.raises(ep.PoolError, match='/s.json: a snapshot of apply, not of contention'):
        ep.check_values(values, 'weights', '/s.json')
    with pytest.raises(ep.PoolError, match='domains\\[0\\] needs a name'):
        ep.check_values(dict(values, domains=[{'name': 'vm'}]), 'placement', '/s.json')
    with pytest.raises(ep.PoolError, match='scopes\\[0\\] needs a unit'):
        ep.check_values(dict(values, scopes=[{'guest': 'vm'}]), 'placement', '/s.json')


def test_restore_plan_running_stopped_restarted_gone():
    values = ep.snapshot_values('placement', 'u', ['vm', 'off', 'gone'], ENTRIES, SCOPES, META)
    now = {'vm': {'defined': True, 'running': True, 'scope': 'vm-new.scope'},
           'off': {'defined': True, 'running': True, 'scope': 'off.scope'},
           'gone': {'defined': False}}
    plan = ep.restore_plan(values, 'placement', now)
    assert plan['gone'] == ['gone']
    # "off" was stopped at snapshot time and runs now: its live threads follow the recorded persistent pins
    assert plan['domains'][-1] == {'name': 'off', 'scope': 'live', 'vcpu_pins': {'0': 'unpinned'},
                                   'emulator_cpuset': 'unpinned', 'iothread_pins': {}}
    assert len(plan['domains']) == 4
    scopes = dict((s['guest'], s) for s in plan['scopes'])
    assert scopes['vm']['unit'] == 'vm-new.scope' and scopes['vm']['restarted'] is True
    assert scopes['vm']['properties'] == {'CPUWeight': '', 'AllowedCPUs': ''}
    # a scope not recorded gets the defaults, inherit for AllowedCPUs
    assert scopes['off']['properties'] == {'CPUWeight': '', 'AllowedCPUs': ''}
    assert scopes['off']['cgroup'] == {'cpuset_cpus': ''} and scopes['off']['restarted'] is True
    assert sorted(plan['metadata']) == ['off', 'vm']


def test_restore_plan_weights_derives_no_live_pins_and_same_scope_not_restarted():
    values = ep.snapshot_values('weights', 'u', ['vm', 'off'], ENTRIES, SCOPES, {})
    now = {'vm': {'defined': True, 'running': True, 'scope': 'vm.scope'},
           'off': {'defined': True, 'running': False, 'scope': None}}
    plan = ep.restore_plan(values, 'weights', now)
    assert [d['scope'] for d in plan['domains']] == ['config', 'live', 'config']
    assert plan['scopes'] == [{'guest': 'vm', 'unit': 'vm.scope', 'properties': {'CPUWeight': ''}, 'cgroup': {},
                               'restarted': False}]


def test_scope_restore_resets_with_empty_values():
    assert ep.scope_restore({'CPUWeight': '', 'AllowedCPUs': ''}, {'CPUWeight': '512', 'AllowedCPUs': '0-7'}) == {
        'AllowedCPUs': '', 'CPUWeight': ''}
    assert ep.scope_restore({'CPUWeight': '200', 'AllowedCPUs': ''}, {'CPUWeight': '200', 'AllowedCPUs': ''}) == {}


def test_cpuset_fixup_only_for_recorded_inherit():
    record = {'properties': {'AllowedCPUs': ''}, 'cgroup': {'cpuset_cpus': ''}}
    assert ep.cpuset_fixup(record, {'cpuset_cpus': '0-7'}) == ''
    assert ep.cpuset_fixup(record, {'cpuset_cpus': ''}) is None
    assert ep.cpuset_fixup(record, {'cpuset_cpus': None}) is None
    assert ep.cpuset_fixup({'properties': {'AllowedCPUs': '0-3'}, 'cgroup': {'cpuset_cpus': '0-3'}},
                           {'cpuset_cpus': '0-7'}) is None
    assert ep.cpuset_fixup({'properties': {'AllowedCPUs': ''}, 'cgroup': {'cpuset_cpus': '0-7'}},
                           {'cpuset_cpus': '0-7'}) is None


def test_metadata_restore_actions():
    gold = '<guest><tier>gold</tier></guest>'
    assert ep.metadata_restore({'element': None}, {'element': gold}) == ('remove', None)
    assert ep.metadata_restore({'element': None}, {'element': None}) == ('keep', None)
    assert ep.metadata_restore({'element': gold}, {'element': '<guest>\n  <tier>gold</tier>\n</guest>'}) == (
        'keep', None)
    assert ep.metadata_restore({'element': gold}, {'element': '<guest><tier>silver</tier></guest>'}) == (
        'set', gold)
    assert ep.metadata_restore({'element': gold}, {'element': None}) == ('set', gold)


def test_xml_shape_and_tidy():
    stock = "<domain>\n  <name>vm</name>\n  <iothreads>2</iothreads>\n</domain>"
    assert ep.xml_shape(stock) == {'has_metadata': False, 'metadata_block': None, 'iothreadids': False}
    after = ("<domain>\n  <name>vm</name>\n  <metadata xmlns:kvmlab=\"%s\"/>\n  <iothreads>2</iothreads>\n"
             "  <iothreadids>\n    <iothread id='1'/>\n    <iothread id='2'/>\n  </iothreadids>\n</domain>" % NS)
    assert ep.tidy_xml(after, ep.xml_shape(stock)) == stock
    with_meta = "<domain>\n  <name>vm</name>\n  <metadata/>\n  <iothreads>2</iothreads>\n</domain>"
    assert ep.tidy_xml(after, ep.xml_shape(with_meta)) == with_meta
    assert ep.tidy_xml(with_meta, ep.xml_shape(with_meta)) is None
    # ids other than 1..N carry information: kept
    odd = after.replace("id='2'", "id='5'")
    assert '<iothreadids>' in ep.tidy_xml(odd, ep.xml_shape(stock))
    # metadata with content that the record does not have is never touched
    full = after.replace('/>\n  <iothreads>', '><kvmlab:guest/></metadata>\n  <iothreads>', 1)
    assert '<kvmlab:guest/>' in ep.tidy_xml(full, ep.xml_shape(stock))


def test_tidy_puts_back_moved_namespace_declarations():
    element = '<metadata>\n    <kvmlab:guest xmlns:kvmlab="%s">\n      <kvmlab:tier>silver</kvmlab:tier>\n' \
              '    </kvmlab:guest>\n  </metadata>' % NS
    recorded = "<domain>\n  <name>vm</name>\n  %s\n</domain>" % element
    moved = ('<domain>\n  <name>vm</name>\n  <metadata xmlns:kvmlab="%s">\n    <kvmlab:guest>\n'
             '      <kvmlab:tier>silver</kvmlab:tier>\n    </kvmlab:guest>\n  </metadata>\n</domain>' % NS)
    shape = ep.xml_shape(recorded)
    assert shape['metadata_block'] == element
    assert ep.tidy_xml(moved, shape) == recorded
    # another tier is another content: left as it is
    assert ep.tidy_xml(moved.replace('silver', 'gold'), shape) is None
    # a shape recorded by an earlier release (no metadata_block) still drops an empty <metadata/>
    assert ep.tidy_xml(with_empty_metadata(), {'has_metadata': False}) == "<domain>\n  <name>vm</name>\n</domain>"


def with_empty_metadata():
    return "<domain>\n  <name>vm</name>\n  <metadata/>\n</domain>"


# -- budget --------------------------------------------------------------------

BUDGET_TIERS = dict((k, {'slice': v['slice'], 'cpu_weight': v['cpu_weight']}) for k, v in TIERS.items())


def guests(tier, moved, waiting):
    out = [{'name': '%s-m%d' % (tier, n), 'tier': tier, 'scope': '%s-m%d.scope' % (tier, n),
            'slice': 'machine-%s.slice' % tier} for n in range(moved)]
    out += [{'name': '%s-w%d' % (tier, n), 'tier': tier, 'scope': '%s-w%d.scope' % (tier, n),
             'slice': 'machine.slice'} for n in range(waiting)]
    return out


def test_budget_all_in_machine_slice():
    result = ep.weight_budget(BUDGET_TIERS, guests('gold', 0, 3) + guests('silver', 0, 4) + guests('bronze', 0, 6))
    assert [result['nodes']['gold-w%d.scope' % n] for n in range(3)] == [171, 171, 170]
    assert sum(result['nodes']['silver-w%d.scope' % n] for n in range(4)) == 333
    assert sorted(result['nodes']['bronze-w%d.scope' % n] for n in range(6)) == [27, 28, 28, 28, 28, 28]
    assert dict((k, v['total']) for k, v in result['tiers'].items()) == {'gold': 512, 'silver': 333, 'bronze': 167}


def test_budget_some_moved():
    result = ep.weight_budget(BUDGET_TIERS, guests('gold', 2, 1) + guests('silver', 1, 0))
    assert result['nodes'] == {'machine-gold.slice': 341, 'gold-w0.scope': 171, 'machine-silver.slice': 333}
    assert result['tiers']['gold']['nodes'] == {'machine-gold.slice': 2, 'gold-w0.scope': 1}


def test_budget_all_moved_and_tier_without_running_guests():
    result = ep.weight_budget(BUDGET_TIERS, guests('gold', 3, 0) + guests('bronze', 6, 0))
    assert result['nodes'] == {'machine-gold.slice': 512, 'machine-bronze.slice': 167}
    assert result['tiers']['silver'] == {'weight': 333, 'total': 0, 'nodes': {}}


def test_budget_never_below_one_and_unknown_tier():
    tiers = {'tiny': {'slice': 'machine-tiny.slice', 'cpu_weight': 2}}
    result = ep.weight_budget(tiers, guests('tiny', 0, 3))
    assert sorted(result['nodes'].values()) == [1, 1, 1]
    with pytest.raises(ep.PoolError, match='not one of the tiers'):
        ep.weight_budget(tiers, [{'name': 'x', 'tier': 'gold', 'scope': 'x.scope', 'slice': 'machine.slice'}])


# -- budget wiring: what apply sets live, the drop-ins, the status totals ---------

def test_plan_budget_all_waiting_in_machine_slice():
    plan = ep.plan_budget(BUDGET_TIERS, guests('gold', 0, 1) + guests('silver', 0, 2) + guests('bronze', 0, 2))
    assert plan['scopes'] == {'gold-w0.scope': 512, 'silver-w0.scope': 167, 'silver-w1.scope': 166,
                              'bronze-w0.scope': 84, 'bronze-w1.scope': 83}
    # no slice holds a guest: no drop-in anywhere (the slices keep their configured weight)
    assert plan['slices'] == {'machine-gold.slice': None, 'machine-silver.slice': None, 'machine-bronze.slice': None}


def test_plan_budget_some_moved_gives_the_slice_a_drop_in():
    plan = ep.plan_budget(BUDGET_TIERS, guests('gold', 2, 1) + guests('bronze', 1, 1))
    assert plan['scopes'] == {'gold-w0.scope': 171, 'bronze-w0.scope': 83}
    assert plan['slices'] == {'machine-gold.slice': 341, 'machine-silver.slice': None, 'machine-bronze.slice': 84}
    assert plan['tiers']['gold']['total'] == 512 and plan['tiers']['gold']['slice'] == 'machine-gold.slice'


def test_plan_budget_all_moved_or_none_running_needs_no_drop_in():
    plan = ep.plan_budget(BUDGET_TIERS, guests('gold', 3, 0))
    assert plan['scopes'] == {}
    assert plan['slices'] == {'machine-gold.slice': None, 'machine-silver.slice': None, 'machine-bronze.slice': None}
    assert plan['nodes'] == {'machine-gold.slice': 512}
    assert plan['tiers']['silver']['nodes'] == {} and plan['tiers']['silver']['total'] == 0


def test_plan_budget_leaves_out_scopes_elsewhere_and_unknown_scopes():
    odd = [{'name': 'x', 'tier': 'silver', 'scope': 'x.scope', 'slice': 'machine-gold.slice'},  # tier changed
           {'name': 'y', 'tier': 'silver', 'scope': None, 'slice': None}]                        # no scope found
    plan = ep.plan_budget(BUDGET_TIERS, odd + guests('silver', 0, 1))
    assert plan['scopes'] == {'silver-w0.scope': 333}
    with pytest.raises(ep.PoolError, match='guest z: tier "iron"'):
        ep.plan_budget(BUDGET_TIERS, [{'name': 'z', 'tier': 'iron', 'scope': 'z.scope', 'slice': 'machine.slice'}])


def test_parent_slice():
    assert ep.parent_slice('machine-gold.slice') == 'machine.slice'
    assert ep.parent_slice('machine-a-b.slice') == 'machine-a.slice'
    assert ep.parent_slice('machine.slice') == '-.slice'


def test_budget_dropin_text_round_trip_and_foreign_files():
    text = ep.budget_dropin_text('machine-gold.slice', 'gold', 341, 512)
    assert text.startswith(ep.BUDGET_MARKER + '\n') and text.endswith('[Slice]\nCPUWeight=341\n')
    assert 'weight budget 341 of 512 while guests wait for their move' in text
    assert ep.parse_budget_dropin(text) == 341
    assert ep.parse_budget_dropin(None) is None
    assert ep.parse_budget_dropin('[Slice]\nCPUWeight=341\n') is None  # not ours
    assert ep.parse_budget_dropin(ep.BUDGET_MARKER + '\n[Slice]\nCPUWeight=x\n') is None
    assert ep.budget_dropin_path('machine-gold.slice', '/run/systemd/system/') == \
        '/run/systemd/system/machine-gold.slice.d/40-kvmlab-weight-budget.conf'


def test_budget_dropin_plan_write_keep_remove():
    path = '/run/systemd/system/machine-gold.slice.d/40-kvmlab-weight-budget.conf'
    write = ep.budget_dropin_plan('machine-gold.slice', 'gold', 341, 512, None, path)
    assert (write['action'], write['before'], write['after']) == ('write', None, 341)
    keep = ep.budget_dropin_plan('machine-gold.slice', 'gold', 341, 512, write['content'], path)
    assert keep['action'] is None
    other = ep.budget_dropin_plan('machine-gold.slice', 'gold', 256, 512, write['content'], path)
    assert (other['action'], other['before'], other['after']) == ('write', 341, 256)
    remove = ep.budget_dropin_plan('machine-gold.slice', 'gold', None, 512, write['content'], path)
    assert (remove['action'], remove['before'], remove['after'], remove['content']) == ('remove', 341, None, None)
    assert ep.budget_dropin_plan('machine-gold.slice', 'gold', None, 512, None, path)['action'] is None
    with pytest.raises(ep.PoolError, match='was not written by execution_pool'):
        ep.budget_dropin_plan('machine-gold.slice', 'gold', 341, 512, '[Slice]\nCPUWeight=1\n', path)


def test_budget_items_totals_applied_drifted_and_info():
    plan = ep.plan_budget(BUDGET_TIERS, guests('gold', 2, 1) + guests('silver', 0, 2))
    live = {'machine-gold.slice': 341, 'gold-w0.scope': 171, 'silver-w0.scope': 167, 'silver-w1.scope': 166}
    items = dict((item['name'], item) for item in ep.budget_items(plan, live))
    gold = items['gold weight budget']
    assert gold['state'] == 'applied' and gold['class'] == 'weight' and gold['total'] == 512
    assert gold['live'] == 'total 512: machine-gold.slice 341 (2 guests), gold-w0.scope 171 (1 guest)'
    assert gold['intended'] == 'total CPUWeight 512 under machine.slice'
    assert gold['nodes']['machine-gold.slice'] == {'budget': 341, 'live': 341, 'guests': 2}
    assert items['silver weight budget']['state'] == 'applied'
    assert items['bronze weight budget']['state'] == 'info' and items['bronze weight budget']['total'] is None
    # every scope still at the full tier weight: the tier's share grows with its guests
    stale = dict(live, **{'machine-gold.slice': 512, 'gold-w0.scope': 512})
    gold = [item for item in ep.budget_items(plan, stale) if item['tier'] == 'gold'][0]
    assert gold['state'] == 'drifted' and gold['total'] == 1024
    assert gold['live'] == ('total 1024: machine-gold.slice 512 [budget 341] (2 guests), '
                            'gold-w0.scope 512 [budget 171] (1 guest)')
    unreadable = dict(live, **{'gold-w0.scope': None})
    gold = [item for item in ep.budget_items(plan, unreadable) if item['tier'] == 'gold'][0]
    assert gold['state'] == 'drifted' and 'gold-w0.scope unreadable' in gold['live']


def test_budget_state_rule():
    assert ep.budget_state(512, 512, []) == 'applied'
    assert ep.budget_state(512, 511, []) == 'drifted'
    assert ep.budget_state(512, 512, ['x.scope']) == 'drifted'
    assert ep.budget_state(512, 200, [], stock=True) == 'stock'


def test_budget_items_stock_host():
    # before any apply: every scope at the kernel's default, the slice at its configured weight, no drop-in
    plan = ep.plan_budget(BUDGET_TIERS, guests('gold', 1, 2) + guests('silver', 0, 2))
    live = {'machine-gold.slice': 512, 'gold-w0.scope': 100, 'gold-w1.scope': 100,
            'silver-w0.scope': 100, 'silver-w1.scope': 100}
    found = dict((item['tier'], item['state']) for item in ep.budget_items(plan, live))
    assert found == {'gold': 'stock', 'silver': 'stock', 'bronze': 'info'}
    # a budget drop-in left on the slice is the layer's doing: not stock
    found = dict((item['tier'], item['state'])
                 for item in ep.budget_items(plan, live, {'machine-gold.slice': 171}))
    assert found['gold'] == 'drifted'
    # one scope weighted, the other not: drift
    found = dict((item['tier'], item['state'])
                 for item in ep.budget_items(plan, dict(live, **{'silver-w0.scope': 167})))
    assert found['silver'] == 'drifted'


def test_weight_item_judges_a_waiting_scope_on_its_budget_share():
    entry = placed()
    unit = 'machine-qemu\\x2d1\\x2dvm.scope'
    waiting = view(entry, weight='171', cgroup_weight=171)
    context = dict(CONTEXT, weights={unit: 171})
    item = [i for i in ep.guest_items(waiting, context) if i['class'] == 'weight'][0]
    assert item['state'] == 'applied' and item['intended'] == 'gold CPUWeight 171'
    # the full tier weight on a scope the budget gives 171 is drift
    item = [i for i in ep.guest_items(view(entry), context) if i['class'] == 'weight'][0]
    assert item['state'] == 'drifted'


def test_budget_lines_and_dropin_values():
    budget = {'tiers': {'gold': {'weight': 512, 'total': 512, 'slice': 'machine-gold.slice',
                                 'nodes': {'a.scope': 171, 'machine-gold.slice': 341}},
                        'silver': {'weight': 333, 'total': 0, 'slice': 'machine-silver.slice', 'nodes': {}}},
              'slices': [{'slice': 'machine-gold.slice', 'action': 'write', 'before': None, 'after': 341,
                          'path': '/run/x.conf'},
                         {'slice': 'machine-silver.slice', 'action': None, 'before': None, 'after': None,
                          'path': '/run/y.conf'}]}
    assert ep.budget_lines(budget) == [
        'weight budget gold 512: machine-gold.slice 341, a.scope 171',
        'machine-gold.slice: no budget drop-in (the configured weight) -> CPUWeight 341 (runtime budget drop-in) '
        '(/run/x.conf)']
    assert ep.budget_lines(None) == []


# -- reports --------------------------------------------------------------------

def test_reports():
    entry = placed()
    result = {'guests': [{'name': 'vm', 'changed': True, 'pending': ['partition']}], 'excluded': ['x'],
              'scope_allowed_cpus': '0-7', 'missing_slices': ['machine-gold.slice'],
              'snapshot': {'path': '/s', 'existed': False}}
    lines = ep.apply_report(result, [entry], 'placement')
    assert lines[0].startswith('vm: gold from inventory (CPUWeight 512, shares 512, partition /machine/gold)')
    assert lines[0].endswith('changed; pending until its next start: partition')
    assert 'excluded (left alone): x' in lines and lines[-1] == 'rollback snapshot: /s (written now)'
    assert any(line.startswith('WARNING: no unit file for machine-gold.slice') for line in lines)
    items = ep.guest_items(view(entry), CONTEXT)
    status = dict(ep.status(items, 'placement'), guests=[{'name': 'vm', 'tier': 'gold', 'tier_source': 'inventory'}],
                  pools=POOLS, scope_allowed_cpus='0-7', excluded=[])
    lines = ep.status_report(status, 'placement')
    assert lines[0] == 'shared-execution-pool-status: shared execution pool: all 4 items match the policy'
    assert lines[2] == 'vm: tier gold from inventory'
    restore = ep.restore_report({'guests': [{'name': 'vm', 'changed': False, 'pending': []}], 'restarted': ['vm'],
                                 'gone': [], 'fixups': ['vm.scope'], 'snapshot': {'path': '/s'}})
    assert restore[0] == 'vm: already as in the snapshot' and restore[-1] == 'snapshot /s restored and removed'
