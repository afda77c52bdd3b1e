import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import parse_cpulist
from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import (
    POOL_NAMES, PoolError, cpu_pools, default_reservation, derive_pools, pool_capacity, validate_pools,
)
from ansible_collections.kvmlab.host_resources.tests.unit.topologies import CATALOGUE, topology

M5 = {
    'host_reserved': '0-5,24-29,48-53,72-77',
    'host_housekeeping': '0-1,24-25,48-49,72-73',
    'host_emulator': '2-5,26-29,50-53,74-77',
    'guest_domain': '6-23,30-47,54-71,78-95',
}

SEED001_GUESTS = [
    {'name': 'masters', 'count': 3, 'vcpus': 8, 'memory': '24GiB'},
    {'name': 'infra', 'count': 3, 'vcpus': 16, 'memory': '64GiB'},
    {'name': 'workers', 'count': 3, 'vcpus': 12, 'memory': '16GiB'},
    {'name': 'idm-01', 'vcpus': 2, 'memory': '8GiB'},
    {'name': 'mirror-registry', 'vcpus': 4, 'memory': '16GiB'},
    {'name': 'bastion-01', 'vcpus': 4, 'memory': '16GiB'},
    {'name': 'ad-01', 'vcpus': 4, 'memory': '8GiB'},
]


def test_m5_metal_reproduces_seed_001_masks(tmp_path):
    pools = cpu_pools(topology(tmp_path, 'm5_metal'))
    assert dict((name, pools[name]) for name in POOL_NAMES) == M5
    assert pools['counts'] == {
        'host_reserved': {'cores': 12, 'cpus': 24},
        'host_housekeeping': {'cores': 4, 'cpus': 8},
        'host_emulator': {'cores': 8, 'cpus': 16},
        'guest_domain': {'cores': 36, 'cpus': 72},
    }
    assert (pools['reserved_cores_per_socket'], pools['housekeeping_cores_per_socket']) == (6, 2)
    assert pools['sockets'][0]['host_reserved'] == '0-5,48-53'
    assert pools['sockets'][1]['guest_domain'] == '30-47,78-95'
    assert pools['sockets'][0]['cores']['host_housekeeping'] == ['0,48', '1,49']
    assert pools['source'] == 'derived'


def test_seed_000_small_host(tmp_path):
    pools = cpu_pools(topology(tmp_path, 'seed000_small'), 1, 1)
    assert pools['host_reserved'] == '0-1'
    assert pools['host_emulator'] == '0-1'
    assert pools['host_housekeeping'] == '0-1'
    assert pools['guest_domain'] == '2-11'
    assert pools['emulator_shares_housekeeping'] is True


def test_lab_vm_defaults(tmp_path):
    pools = cpu_pools(topology(tmp_path, 'lab_vm'))
    assert pools['host_reserved'] == '0-1,4-5'
    assert pools['host_emulator'] == pools['host_housekeeping'] == '0-1,4-5'
    assert pools['guest_domain'] == '2-3,6-7'


@pytest.mark.parametrize('cores, expected', [(1, (1, 1)), (4, (1, 1)), (5, (4, 2)), (16, (4, 2)),
                                             (17, (6, 2)), (24, (6, 2)), (128, (6, 2))])
def test_default_reservation_table(cores, expected):
    assert default_reservation(cores) == expected


def _check_rules(topo, pools, reserved, housekeeping):
    online = parse_cpulist(topo['cpus']['online'])
    parsed = dict((name, parse_cpulist(pools[name])) for name in POOL_NAMES)
    assert parsed['host_reserved'] | parsed['guest_domain'] == online
    assert not parsed['host_reserved'] & parsed['guest_domain']
    assert parsed['host_housekeeping'] <= parsed['host_reserved']
    assert parsed['host_emulator'] <= parsed['host_reserved']
    if reserved == housekeeping:
        assert parsed['host_emulator'] == parsed['host_housekeeping']
    else:
        assert parsed['host_emulator'] | parsed['host_housekeeping'] == parsed['host_reserved']
        assert not parsed['host_emulator'] & parsed['host_housekeeping']
    offline = parse_cpulist(topo['cpus']['offline'])
    for name in POOL_NAMES:
        assert not parsed[name] & offline
    for pkg, socket in zip(topo['packages'], pools['sockets']):
        cores = [set(core['cpus']) for core in pkg['cores']]
        for name in POOL_NAMES:
            for core in cores:  # whole cores only
                assert core <= parsed[name] or not core & parsed[name]
        # the R cores with the smallest lowest CPU are reserved, the first H housekeeping
        assert [set(parse_cpulist(c)) for c in socket['cores']['host_reserved']] == cores[:reserved]
        assert [set(parse_cpulist(c)) for c in socket['cores']['host_housekeeping']] == cores[:housekeeping]
        assert socket['counts']['host_reserved']['cores'] == reserved
        assert socket['counts']['guest_domain']['cores'] == len(cores) - reserved


@pytest.mark.parametrize('name', sorted(CATALOGUE))
def test_defaults_follow_the_rules_on_every_topology(tmp_path, name):
    topo = topology(tmp_path, name)
    pools = cpu_pools(topo)
    smallest = min(pkg['core_count'] for pkg in topo['packages'])
    reserved, housekeeping = default_reservation(smallest)
    _check_rules(topo, pools, reserved, housekeeping)
    # the derived pools validate as given pools, to the same result
    again = cpu_pools(topo, pools=dict((n, pools[n]) for n in POOL_NAMES))
    assert dict((n, again[n]) for n in POOL_NAMES) == dict((n, pools[n]) for n in POOL_NAMES)
    assert again['counts'] == pools['counts']
    assert again['source'] == 'given'


@pytest.mark.parametrize('name, reserved, housekeeping', [
    ('m5_metal', 4, 2), ('m5_metal', 8, 2), ('m5_metal', 2, 2), ('smt4', 3, 1),
    ('interleaved_sockets', 5, 3), ('offline_cpus', 3, 1), ('cpus_1024', 8, 2), ('no_smt', 6, 6),
])
def test_explicit_counts_follow_the_rules(tmp_path, name, reserved, housekeeping):
    topo = topology(tmp_path, name)
    _check_rules(topo, cpu_pools(topo, reserved, housekeeping), reserved, housekeeping)


def test_interleaved_reserves_lowest_numbered_cores(tmp_path):
    pools = cpu_pools(topology(tmp_path, 'interleaved_sockets'), 2, 1)
    assert pools['sockets'][0]['host_reserved'] == '0,2,24,26'
    assert pools['sockets'][1]['host_reserved'] == '1,3,25,27'
    assert pools['host_reserved'] == '0-3,24-27'


def test_offline_cpus_are_in_no_pool(tmp_path):
    topo = topology(tmp_path, 'offline_cpus')
    pools = cpu_pools(topo, 4, 2)
    assert pools['offline'] == '3,19,24'
    # core (3,19) is offline, so socket 0 reserves cores 0,1,2,4 (with their siblings)
    assert pools['sockets'][0]['host_reserved'] == '0-2,4,16-18,20'
    assert pools['sockets'][1]['host_reserved'] == '8-11,25-27'


@pytest.mark.parametrize('kwargs, message', [
    (dict(reserved_cores_per_socket=0), 'reserved_cores_per_socket must be a positive integer'),
    (dict(reserved_cores_per_socket=-2), 'reserved_cores_per_socket must be a positive integer'),
    (dict(reserved_cores_per_socket='many'), 'reserved_cores_per_socket must be a positive integer'),
    (dict(reserved_cores_per_socket=True), 'reserved_cores_per_socket must be a positive integer'),
    (dict(reserved_cores_per_socket=2.5), 'reserved_cores_per_socket must be a positive integer'),
    (dict(housekeeping_cores_per_socket=0), 'housekeeping_cores_per_socket must be a positive integer'),
    (dict(reserved_cores_per_socket=2, housekeeping_cores_per_socket=3),
     r'housekeeping_cores_per_socket \(3\) must not exceed reserved_cores_per_socket \(2\)'),
    (dict(reserved_cores_per_socket=8), r'reserved_cores_per_socket \(8\) leaves no guest core .* the limit is 7'),
    (dict(reserved_cores_per_socket=30), 'leaves no guest core'),
    (dict(reserved_cores_per_socket=2, pools={}), 'mutually exclusive'),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(PoolError, match=message):
        cpu_pools(topology(tmp_path, 'adjacent_smt'), **kwargs)


def test_string_counts_are_accepted(tmp_path):
    pools = cpu_pools(topology(tmp_path, 'm5_metal'), '6', '2')
    assert pools['host_reserved'] == M5['host_reserved']


@pytest.mark.parametrize('value', [None, [], 'text', {}, {'packages': []}, {'packages': [{'id': 0}]},
                                   {'packages': [{'id': 0, 'cores': [{'cpus': 'x'}]}]},
                                   {'packages': [{'id': 0, 'cores': [{'cpus': [0, 1]}, {'cpus': [1]}]}]}])
def test_input_that_is_not_a_topology(value):
    with pytest.raises(PoolError, match='input is not a cpu_topology'):
        derive_pools(value)


def _with(**changes):
    pools = dict(M5)
    pools.update(changes)
    return pools


@pytest.mark.parametrize('pools, message', [
    ('0-5', 'pools must be a dict'),
    (dict((k, v) for k, v in M5.items() if k != 'host_emulator'), 'pools lacks host_emulator'),
    (_with(guest_pool='1'), 'unknown key.*guest_pool'),
    (_with(guest_domain='6-23,30-47,54-71,78-9x'), r'pools.guest_domain: cannot parse "78-9x"'),
    (_with(guest_domain='6-23,30-47,54-71,78-99'), r'pools.guest_domain names CPU\(s\) 96-99 that are not online'),
    (_with(host_emulator=''), 'pools.host_emulator is empty'),
    (_with(guest_domain=''), 'pools.guest_domain is empty: guests would have no CPU'),
    (_with(host_reserved='0-5,24-29,48-52,72-77', guest_domain='6-23,30-47,53-71,78-95'),
     'pools.host_reserved splits the SMT siblings of core 5,53'),
    (_with(guest_domain='5-23,30-47,53-71,78-95'), 'pools.guest_domain splits the SMT siblings of core 6,54|overlap'),
    (_with(guest_domain='4-23,30-47,52-71,78-95'), r'pools.host_reserved and pools.guest_domain overlap on CPU\(s\) 4-5,52-53'),
    (_with(guest_domain='6-23,30-46,54-71,78-94'), r'online CPU\(s\) 47,95 are in no pool'),
    (_with(host_emulator='2-6,26-29,50-54,74-77'), 'pools.host_emulator has CPU\\(s\\) 6,54 outside pools.host_reserved'),
    (_with(host_housekeeping='0-2,24-25,48-50,72-73'), 'must be equal .* or disjoint'),
    (_with(host_reserved='0-5,24-27,48-53,72-75', host_emulator='2-5,26-27,50-53,74-75',
           guest_domain='6-23,28-47,54-71,76-95'), 'different number of cores per socket .*socket 0: 6, socket 1: 4'),
])
def test_given_pools_that_fail(tmp_path, pools, message):
    with pytest.raises(PoolError, match=message):
        validate_pools(topology(tmp_path, 'm5_metal'), pools)


def test_given_pools_with_whitespace_inside_a_mask_fail(tmp_path):
    with pytest.raises(PoolError, match='whitespace'):
        validate_pools(topology(tmp_path, 'm5_metal'), {
            'host_reserved': '0-5, 24-29,48-53,72-77',
            'host_housekeeping': '0,1,24,25,48,49,72,73',
            'host_emulator': '2-5,26-29,50-53,74-77',
            'guest_domain': '6-23,30-47,54-71,78-95',
        })


def test_given_pools_are_normalized(tmp_path):
    pools = validate_pools(topology(tmp_path, 'm5_metal'), {
        'host_reserved': '72-77,0-5,24-29,48-53',
        'host_housekeeping': '0,1,24,25,48,49,72,73',
        'host_emulator': '2-5,26-29,50-53,74-77',
        'guest_domain': '6-23,30-47,54-71,78-95',
    })
    assert dict((n, pools[n]) for n in POOL_NAMES) == M5
    assert pools['housekeeping_cores_per_socket'] == 2


def test_capacity_seed_001(tmp_path):
    topo = topology(tmp_path, 'm5_metal')
    capacity = pool_capacity(cpu_pools(topo), SEED001_GUESTS, topo['memory_total_bytes'])
    assert capacity['guest_count'] == 13
    assert capacity['total_vcpus'] == 122
    assert capacity['guest_pool_cpus'] == 72
    assert capacity['vcpu_ratio_text'] == '1.69:1'
    assert capacity['vcpu_ratio'] == 1.69
    assert capacity['total_guest_memory_bytes'] == 360 * 1024 ** 3
    assert capacity['memory_commit_ratio_text'] == '0.94:1'


def test_capacity_without_host_memory_and_mib_numbers():
    capacity = pool_capacity({'guest_domain': '2-3'}, [{'vcpus': 3, 'memory': 512}])
    assert capacity['vcpu_ratio_text'] == '1.50:1'
    assert capacity['total_guest_memory_bytes'] == 512 * 1024 ** 2
    assert capacity['memory_commit_ratio'] is None


@pytest.mark.parametrize('pools, guests, host_memory, message', [
    ({}, [], None, 'expects the output of cpu_pools'),
    ({'guest_domain': ''}, [], None, 'guest_domain is empty'),
    ({'guest_domain': '0-3'}, 'x', None, 'guests must be a list'),
    ({'guest_domain': '0-3'}, [{'memory': '1G'}], None, r'guests\[#0\] lacks vcpus'),
    ({'guest_domain': '0-3'}, [{'name': 'a', 'vcpus': 2}], None, r'guests\[a\] lacks memory'),
    ({'guest_domain': '0-3'}, [{'name': 'a', 'vcpus': 0, 'memory': 1}], None, r'guests\[a\].vcpus must be'),
    ({'guest_domain': '0-3'}, [{'name': 'a', 'vcpus': 1, 'memory': 'lots'}], None, r'guests\[a\].memory'),
    ({'guest_domain': '0-3'}, [{'vcpus': 1, 'memory': 1}], 'big', 'host_memory: cannot parse'),
])
def test_capacity_errors(pools, guests, host_memory, message):
    with pytest.raises(PoolError, match=message):
        pool_capacity(pools, guests, host_memory)
