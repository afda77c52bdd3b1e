# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils._contention_guests: the busy guests' counts, names, placement, XML and live weights."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _contention_guests as cg
from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention import ContentionError

TIERS = {
    'gold': {'slice': 'machine-gold.slice', 'partition': '/machine/gold', 'cpu_weight': 512, 'shares': 512},
    'silver': {'slice': 'machine-silver.slice', 'partition': '/machine/silver', 'cpu_weight': 333, 'shares': 333},
    'bronze': {'slice': 'machine-bronze.slice', 'partition': '/machine/bronze', 'cpu_weight': 167, 'shares': 167},
}
NAMES = ['gold', 'silver', 'bronze']
POOLS = {'guest_domain': '2-3,6-7', 'host_emulator': '1,5', 'host_reserved': '0-1,4-5'}


def test_seed_001_counts_by_default_and_explicit_counts():
    assert cg.guest_counts(NAMES) == {'gold': 3, 'silver': 4, 'bronze': 6}
    assert cg.guest_counts(NAMES, {'gold': 1, 'silver': '2', 'bronze': 0}) == {'gold': 1, 'silver': 2, 'bronze': 0}


@pytest.mark.parametrize('names, counts, message', [
    (['gold', 'platinum'], None, 'no count for tier platinum'),
    (NAMES, {'gold': 1, 'silver': 1}, 'no count for tier bronze'),
    (NAMES, {'gold': 1, 'silver': 1, 'bronze': 1, 'iron': 1}, 'unknown tiers iron'),
    (NAMES, {'gold': 'x', 'silver': 1, 'bronze': 1}, 'must be an integer'),
    (NAMES, {'gold': -1, 'silver': 1, 'bronze': 1}, 'must be 0-64'),
    (NAMES, {'gold': 0, 'silver': 0, 'bronze': 0}, 'no guest at all'),
    (NAMES, [1, 2], 'must map tier names'),
])
def test_bad_counts(names, counts, message):
    with pytest.raises(ContentionError, match=message):
        cg.guest_counts(names, counts)


def test_names_and_prefix():
    guests = cg.load_guests('kvmlab-busy', {'gold': 2, 'silver': 0, 'bronze': 1})
    assert guests == [{'name': 'kvmlab-busy-gold-1', 'tier': 'gold'}, {'name': 'kvmlab-busy-gold-2', 'tier': 'gold'},
                      {'name': 'kvmlab-busy-bronze-1', 'tier': 'bronze'}]
    for bad in ('Busy', '-x', 'a' * 32, 'a_b'):
        with pytest.raises(ContentionError, match='guest_prefix'):
            cg.validate_guest_prefix(bad)


def test_plan_places_as_the_shared_execution_pool():
    plan = cg.guest_plan(cg.load_guests('b', {'gold': 1, 'silver': 1, 'bronze': 1}), TIERS, POOLS, 2)
    gold = plan[0]
    assert gold == {'name': 'b-gold-1', 'tier': 'gold', 'vcpus': 2, 'vcpu_cpuset': '2-3,6-7',
                    'emulator_cpuset': '1,5', 'partition': '/machine/gold', 'slice': 'machine-gold.slice',
                    'cpu_shares': 512, 'cpu_weight': 512}
    with pytest.raises(ContentionError, match='busy_vcpus'):
        cg.guest_plan([], TIERS, POOLS, 0)
    with pytest.raises(ContentionError, match='host_emulator'):
        cg.guest_plan([{'name': 'x', 'tier': 'gold'}], TIERS, {'guest_domain': '2'}, 1)


def _xml(phase, **kw):
    plan = cg.guest_plan([{'name': 'b-gold-1', 'tier': 'gold'}], TIERS, POOLS, 2)
    return ET.fromstring(cg.domain_xml(plan[0], '/var/lib/kvmlab/spinall.elf', phase, 'run-1', **kw))


def test_in_place_xml_is_pinned_without_partition_or_shares():
    root = _xml('in_place', emulator='/usr/bin/qemu-system-x86_64')
    assert root.get('type') == 'qemu' and root.findtext('name') == 'b-gold-1'
    assert [(p.get('vcpu'), p.get('cpuset')) for p in root.findall('cputune/vcpupin')] == [
        ('0', '2-3,6-7'), ('1', '2-3,6-7')]
    assert root.find('cputune/emulatorpin').get('cpuset') == '1,5'
    assert root.find('cputune/shares') is None and root.find('resource') is None
    assert root.findtext('os/kernel') == '/var/lib/kvmlab/spinall.elf'
    assert root.findtext('devices/emulator') == '/usr/bin/qemu-system-x86_64'
    assert root.find('uuid') is None
    mark = root.find('metadata/{%s}contention' % cg.METADATA_NS)
    assert mark.get('run') == 'run-1' and mark.get('tier') == 'gold'


def test_moved_xml_has_the_tier_partition_and_shares():
    root = _xml('moved', uuid='0b3c7a3e-1111-2222-3333-444455556666', domain_type='kvm')
    assert root.get('type') == 'kvm'
    assert root.findtext('cputune/shares') == '512'
    assert root.findtext('resource/partition') == '/machine/gold'
    assert root.findtext('uuid') == '0b3c7a3e-1111-2222-3333-444455556666'
    assert root.find('devices/emulator') is None
    with pytest.raises(ContentionError, match='phase'):
        _xml('later')


def test_leftovers_need_prefix_and_mark():
    plan = cg.guest_plan([{'name': 'b-gold-1', 'tier': 'gold'}], TIERS, POOLS, 1)
    text = cg.domain_xml(plan[0], '/k', 'in_place', 'run-7')
    assert cg.contention_run_id(text) == 'run-7'
    assert cg.is_leftover('b-gold-1', text, 'b') is True
    assert cg.is_leftover('b-gold-1', text, 'c') is False
    assert cg.is_leftover('b-gold-1', '<domain><name>b-gold-1</name></domain>', 'b') is False


def test_scope_weights_split_each_tier_over_its_guests_in_machine_slice():
    plan = cg.guest_plan(cg.load_guests('b', {'gold': 3, 'silver': 4, 'bronze': 6}), TIERS, POOLS, 2)
    running = dict((e['name'], {'cgroup': '/machine.slice/machine-qemu\\x2d%d\\x2d%s.scope' % (i, e['name'])})
                   for i, e in enumerate(plan))
    weights = cg.scope_weights(plan, running)
    per_tier = {}
    for entry in plan:
        per_tier.setdefault(entry['tier'], []).append(weights[entry['name']])
    per_tier = dict((t, sorted(v, reverse=True)) for t, v in per_tier.items())
    assert per_tier == {'gold': [171, 171, 170], 'silver': [84, 83, 83, 83], 'bronze': [28, 28, 28, 28, 28, 27]}
    assert dict((t, sum(v)) for t, v in per_tier.items()) == {'gold': 512, 'silver': 333, 'bronze': 167}


def test_scope_weights_moved_guests_keep_the_tier_s_own():
    plan = cg.guest_plan(cg.load_guests('b', {'gold': 2, 'silver': 1, 'bronze': 1}), TIERS, POOLS, 1)
    running = {
        'b-gold-1': {'cgroup': '/machine.slice/machine-gold.slice/machine-qemu\\x2d9\\x2db\\x2dgold\\x2d1.scope'},
        'b-gold-2': {'cgroup': '/machine.slice/machine-qemu\\x2d3\\x2db\\x2dgold\\x2d2.scope'},
        'b-silver-1': {'cgroup': '/machine.slice/machine-silver.slice/machine-qemu\\x2d4\\x2db\\x2dsilver\\x2d1.scope'},
    }
    # half of gold moved: its slice and the other scope carry 256 each; bronze does not run
    assert cg.scope_weights(plan, running) == {'b-gold-2': 256}


def test_scope_weights_without_systemd_use_partitions_and_shares():
    tiers = dict((k, dict(v, shares=v['cpu_weight'] * 2)) for k, v in TIERS.items())
    plan = cg.guest_plan(cg.load_guests('b', {'gold': 2, 'silver': 1, 'bronze': 1}), tiers, POOLS, 1)
    running = {'b-gold-1': {'cgroup': '/machine/qemu-1-b-gold-1.libvirt-qemu'},
               'b-gold-2': {'cgroup': '/machine/qemu-2-b-gold-2.libvirt-qemu'},
               'b-silver-1': {'cgroup': '/machine/silver.partition/qemu-3-b-silver-1.libvirt-qemu'},
               'b-bronze-1': {'cgroup': '/machine/qemu-4-b-bronze-1.libvirt-qemu'}}
    assert cg.scope_weights(plan, running, systemd=False) == {'b-gold-1': 512, 'b-gold-2': 512, 'b-bronze-1': 334}


def test_scenario_states_pause_the_idle_tiers():
    plan = cg.guest_plan(cg.load_guests('b', {'gold': 1, 'silver': 1, 'bronze': 1}), TIERS, POOLS, 1)
    assert cg.scenario_states(plan, ['silver', 'bronze']) == {'b-gold-1': 'paused', 'b-silver-1': 'running',
                                                              'b-bronze-1': 'running'}
