import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.filter.pools import FilterModule
from ansible_collections.kvmlab.host_resources.tests.unit.topologies import topology

FILTERS = FilterModule().filters()


def test_filters_are_registered():
    assert set(FILTERS) >= {'cpu_pools', 'pool_capacity'}


def test_cpu_pools_filter_matches_seed(tmp_path):
    pools = FILTERS['cpu_pools'](topology(tmp_path, 'm5_metal'))
    assert pools['guest_domain'] == '6-23,30-47,54-71,78-95'
    given = FILTERS['cpu_pools'](topology(tmp_path, 'm5_metal'), pools={
        'host_reserved': '0-5,24-29,48-53,72-77', 'host_housekeeping': '0-1,24-25,48-49,72-73',
        'host_emulator': '2-5,26-29,50-53,74-77', 'guest_domain': '6-23,30-47,54-71,78-95'})
    assert given['source'] == 'given'


@pytest.mark.parametrize('args, kwargs, message', [
    ((), dict(reserved_cores_per_socket=0), 'cpu_pools: reserved_cores_per_socket must be a positive integer'),
    ((3, 4), {}, r'cpu_pools: housekeeping_cores_per_socket \(4\) must not exceed'),
    ((), dict(pools={'host_reserved': '0'}), 'cpu_pools: pools lacks'),
])
def test_cpu_pools_filter_errors(tmp_path, args, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        FILTERS['cpu_pools'](topology(tmp_path, 'm5_metal'), *args, **kwargs)


def test_cpu_pools_filter_rejects_non_topology():
    with pytest.raises(AnsibleFilterError, match='input is not a cpu_topology'):
        FILTERS['cpu_pools']('0-7')


def test_pool_capacity_filter(tmp_path):
    pools = FILTERS['cpu_pools'](topology(tmp_path, 'lab_vm'))
    result = FILTERS['pool_capacity'](pools, [{'name': 'w', 'count': 3, 'vcpus': 2, 'memory': '32MiB'}], '3GiB')
    assert result['total_vcpus'] == 6
    assert result['vcpu_ratio_text'] == '1.50:1'
    with pytest.raises(AnsibleFilterError, match='pool_capacity: guests must be a list'):
        FILTERS['pool_capacity'](pools, 'none')
