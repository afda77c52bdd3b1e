# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The placement filters: guest_placement and virt_install_args (module_utils._libvirt)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.filter.virt_install import FilterModule
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import parse_domain_xml
from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import parse_cpulist

FILTERS = FilterModule().filters()
placement = FILTERS['guest_placement']
virt_install_args = FILTERS['virt_install_args']

TIERS = {
    'gold': {'slice': 'machine-gold.slice', 'partition': '/machine/gold', 'cpu_weight': 512, 'shares': 512},
    'silver': {'slice': 'machine-silver.slice', 'partition': '/machine/silver', 'cpu_weight': 333, 'shares': 333},
    'bronze': {'slice': 'machine-bronze.slice', 'partition': '/machine/bronze', 'cpu_weight': 167, 'shares': 167},
}
# seed 001's m5.metal pools and the lab host's
M5 = {'host_reserved': '0-5,24-29,48-53,72-77', 'host_housekeeping': '0-1,24-25,48-49,72-73',
      'host_emulator': '2-5,26-29,50-53,74-77', 'guest_domain': '6-23,30-47,54-71,78-95'}
LAB = {'host_reserved': '0-1,4-5', 'host_housekeeping': '0-1,4-5', 'host_emulator': '0-1,4-5',
       'guest_domain': '2-3,6-7'}
LAB_GUESTS = [
    {'name': 'kvm-worker-01', 'tier': 'gold', 'vcpus': 2, 'iothreads': 1},
    {'name': 'kvm-worker-02', 'tier': 'silver', 'vcpus': 2},
    {'name': 'kvm-worker-03', 'tier': 'bronze', 'vcpus': 2},
]


def by_name(result):
    return dict((guest['name'], guest) for guest in result['guests'])


def test_filters_are_registered():
    assert set(FILTERS) == {'guest_placement', 'virt_install_args'}


def test_share_is_the_default_thread_placement_model():
    result = placement(LAB_GUESTS, TIERS, LAB)
    guests = by_name(result)
    assert guests['kvm-worker-01'] == {
        'name': 'kvm-worker-01', 'tier': 'gold', 'slice': 'machine-gold.slice', 'partition': '/machine/gold',
        'cpu_shares': 512, 'cpu_weight': 512, 'emulator_policy': 'share', 'vcpus': 2, 'iothreads': 1,
        'vcpu_cpuset': '2-3,6-7', 'emulator_cpuset': '0-1,4-5', 'iothread_cpuset': '0-1,4-5'}
    assert [g['cpu_weight'] for g in result['guests']] == [512, 333, 167]
    assert guests['kvm-worker-03']['iothreads'] is None
    assert result['scope_allowed_cpus'] == '0-7'
    assert result['shared_emulator_cpus'] == '0-1,4-5'
    assert result['isolated'] == {}


def test_seed_001_pools_on_m5_metal():
    result = placement([{'name': 'ocp-infra-01', 'tier': 'Silver', 'vcpus': 16, 'iothreads': 1}], TIERS, M5)
    guest = result['guests'][0]
    assert guest['tier'] == 'silver'  # matched without case
    assert guest['vcpu_cpuset'] == '6-23,30-47,54-71,78-95'
    assert guest['emulator_cpuset'] == guest['iothread_cpuset'] == '2-5,26-29,50-53,74-77'
    assert result['scope_allowed_cpus'] == '0-95'


def test_isolate_hands_out_one_emulator_cpu_per_guest_in_order():
    guests = [dict(g, emulator_policy='isolate') for g in LAB_GUESTS[:2]] + [LAB_GUESTS[2]]
    result = placement(guests, TIERS, LAB)
    placed = by_name(result)
    assert result['isolated'] == {'kvm-worker-01': '0', 'kvm-worker-02': '1'}
    assert placed['kvm-worker-01']['emulator_cpuset'] == placed['kvm-worker-01']['iothread_cpuset'] == '0'
    assert placed['kvm-worker-02']['emulator_cpuset'] == '1'
    # the sharing guest keeps what the isolated ones left
    assert placed['kvm-worker-03']['emulator_cpuset'] == '4-5'
    assert result['shared_emulator_cpus'] == '4-5'
    # vCPUs are not affected by the emulator policy
    assert set(g['vcpu_cpuset'] for g in result['guests']) == {'2-3,6-7'}


def test_isolate_as_the_default_policy():
    result = placement(LAB_GUESTS, TIERS, LAB, 'isolate')
    assert result['isolated'] == {'kvm-worker-01': '0', 'kvm-worker-02': '1', 'kvm-worker-03': '4'}
    assert result['shared_emulator_cpus'] == '5'


def test_isolate_fails_clearly_when_host_emulator_runs_out():
    guests = [{'name': 'g%d' % n, 'tier': 'bronze', 'emulator_policy': 'isolate'} for n in range(5)]
    with pytest.raises(AnsibleFilterError, match=r'isolate needs one host_emulator CPU per guest: 5 guests '
                                                 r'\(g0, g1, g2, g3, g4\) but host_emulator 0-1,4-5 has 4 CPU'):
        placement(guests, TIERS, LAB)


def test_isolate_may_not_starve_the_sharing_guests():
    guests = [{'name': 'g%d' % n, 'tier': 'gold', 'emulator_policy': 'isolate'} for n in range(4)]
    assert len(placement(guests, TIERS, LAB)['isolated']) == 4  # all isolated: fine
    with pytest.raises(AnsibleFilterError, match='leaves none for the guests that share it: kvm-worker-02'):
        placement(guests + [LAB_GUESTS[1]], TIERS, LAB)


def test_float_runs_emulator_and_iothreads_with_the_vcpus():
    result = placement([dict(LAB_GUESTS[0], emulator_policy='float'), LAB_GUESTS[1]], TIERS, LAB)
    placed = by_name(result)
    assert placed['kvm-worker-01']['emulator_cpuset'] == placed['kvm-worker-01']['iothread_cpuset'] == '2-3,6-7'
    assert placed['kvm-worker-02']['emulator_cpuset'] == '0-1,4-5'


def test_tier_defaults_partition_slice_and_numbers():
    tiers = {'gold': {'cpu_weight': 512}, 'lab': {'shares': 2000, 'cpu_weight': 2000, 'partition': '/machine/lab/x'}}
    result = by_name(placement([{'name': 'a', 'tier': 'gold'}, {'name': 'b', 'tier': 'lab'}], tiers, LAB))
    assert result['a']['partition'] == '/machine/gold' and result['a']['slice'] == 'machine-gold.slice'
    assert result['a']['cpu_shares'] == 512
    assert result['b']['slice'] == 'machine-lab-x.slice'


@pytest.mark.parametrize('guests, tiers, pools, policy, message', [
    ([{'name': 'a', 'tier': 'platinum'}], TIERS, LAB, 'share', 'guest a: unknown tier "platinum"'),
    ([{'name': 'a'}], TIERS, LAB, 'share', 'guest a: tier must be a tier name'),
    ([{'tier': 'gold'}], TIERS, LAB, 'share', r'guests\[0\] must be a dict with a name'),
    ([{'name': 'a', 'tier': 'gold'}, {'name': 'a', 'tier': 'gold'}], TIERS, LAB, 'share', 'listed more than once'),
    ([{'name': 'a', 'tier': 'gold', 'emulator_policy': 'pin'}], TIERS, LAB, 'share',
     'guest a: emulator_policy must be one of share, isolate, float'),
    ([], TIERS, LAB, 'nope', 'emulator_policy must be one of'),
    ([], TIERS, {'host_reserved': '0'}, 'share', 'it lacks guest_domain'),
    ([], TIERS, dict(LAB, guest_domain='x'), 'share', 'pools.guest_domain'),
    ([{'name': 'a', 'tier': 'gold'}], {'gold': {'cpu_weight': 20000}}, LAB, 'share',
     'tiers.gold.cpu_weight 20000 is outside 1-10000'),
    ([{'name': 'a', 'tier': 'gold'}], {'gold': {'cpu_weight': 5, 'shares': 1}}, LAB, 'share',
     'tiers.gold.shares 1 is outside 2-262144'),
    ([{'name': 'a', 'tier': 'gold'}], {'gold': {'cpu_weight': 5, 'partition': 'machine/gold'}}, LAB, 'share',
     'must be an absolute path'),
    ([{'name': 'a', 'tier': 'gold', 'vcpus': 0}], TIERS, LAB, 'share', 'guest a: vcpus 0 is outside'),
    ('kvm-worker-01', TIERS, LAB, 'share', 'guests must be a list'),
])
def test_placement_errors_name_the_problem(guests, tiers, pools, policy, message):
    with pytest.raises(AnsibleFilterError, match='guest_placement: .*' + message):
        placement(guests, tiers, pools, policy)


# -- virt-install arguments ----------------------------------------------------

def test_virt_install_args_for_a_gold_guest_with_an_iothread():
    args = virt_install_args(LAB_GUESTS[0], TIERS, LAB, guests=LAB_GUESTS)
    assert args == [
        '--xml', './metadata/guest/tier=gold', '--xml', './metadata/guest/@xmlns=https://kvmlab.invalid/host_resources/1',
        '--resource', 'partition=/machine/gold',
        '--iothreads', 'iothreads=1',
        '--cputune', 'shares=512,'
                     'vcpupin0.vcpu=0,vcpupin0.cpuset=2-3,6-7,vcpupin1.vcpu=1,vcpupin1.cpuset=2-3,6-7,'
                     'emulatorpin.cpuset=0-1,4-5,'
                     'iothreadpin0.iothread=1,iothreadpin0.cpuset=0-1,4-5',
    ]


def test_virt_install_args_without_iothreads():
    args = virt_install_args({'name': 'idm-01', 'tier': 'silver', 'vcpus': 2}, TIERS, M5)
    assert args == ['--xml', './metadata/guest/tier=silver',
                    '--xml', './metadata/guest/@xmlns=https://kvmlab.invalid/host_resources/1',
                    '--resource', 'partition=/machine/silver', '--cputune',
                    'shares=333,vcpupin0.vcpu=0,vcpupin0.cpuset=6-23,30-47,54-71,78-95,'
                    'vcpupin1.vcpu=1,vcpupin1.cpuset=6-23,30-47,54-71,78-95,'
                    'emulatorpin.cpuset=2-5,26-29,50-53,74-77']


def test_virt_install_args_isolate_uses_the_whole_guest_list():
    guests = [dict(g, emulator_policy='isolate') for g in LAB_GUESTS]
    args = virt_install_args(guests[2], TIERS, LAB, guests=guests)
    assert 'emulatorpin.cpuset=4' in args[-1].split(',')
    # a new guest not yet in the list is placed after the others
    new = {'name': 'kvm-worker-04', 'tier': 'bronze', 'vcpus': 1, 'emulator_policy': 'isolate'}
    args = virt_install_args(new, TIERS, LAB, guests=guests)
    assert args[-1].endswith('emulatorpin.cpuset=5')


def test_virt_install_args_same_placement_as_the_role():
    """The role gets its cpusets from guest_placement; virt-install renders the same ones."""
    for policy in ('share', 'isolate', 'float'):
        placed = by_name(placement(LAB_GUESTS, TIERS, LAB, policy))
        for guest in LAB_GUESTS:
            tune = virt_install_args(guest, TIERS, LAB, guests=LAB_GUESTS, emulator_policy=policy)[-1]
            assert 'emulatorpin.cpuset=%s' % placed[guest['name']]['emulator_cpuset'] in tune
            assert 'shares=%d' % placed[guest['name']]['cpu_shares'] in tune


def test_virt_install_args_needs_vcpus():
    with pytest.raises(AnsibleFilterError, match='virt_install_args: guest x: vcpus is needed'):
        virt_install_args({'name': 'x', 'tier': 'gold'}, TIERS, LAB)
    with pytest.raises(AnsibleFilterError, match='virt_install_args: the guest must be a dict'):
        virt_install_args('x', TIERS, LAB)


@pytest.mark.skipif(shutil.which('virt-install') is None, reason='virt-install (Debian: virtinst) not installed')
def test_virt_install_renders_the_intended_xml(tmp_path):
    """virt-install itself turns the arguments into the XML libvirt_pin would write."""
    kernel = tmp_path / 'kernel'
    kernel.write_bytes(b'\0' * 16)
    guest = LAB_GUESTS[0]
    args = virt_install_args(guest, TIERS, LAB, guests=LAB_GUESTS)
    command = ['virt-install', '--connect', 'test:///default', '--name', guest['name'], '--memory', '64',
               '--vcpus', str(guest['vcpus']), '--boot', 'kernel=%s' % kernel, '--osinfo', 'detect=on,require=off',
               '--disk', 'none', '--network', 'none', '--graphics', 'none', '--print-xml', '--dry-run'] + args
    out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         env=dict(os.environ, HOME=str(tmp_path)), timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    xml = parse_domain_xml(out.stdout)
    cpus = parse_cpulist
    assert xml['partition'] == '/machine/gold'
    assert xml['cpu_shares'] == 512
    assert xml['vcpu_pins'] == {0: cpus('2-3,6-7'), 1: cpus('2-3,6-7')}
    assert xml['emulator_cpuset'] == cpus('0-1,4-5')
    assert xml['iothread_pins'] == {1: cpus('0-1,4-5')}
    assert xml['iothread_ids'] == [1]
