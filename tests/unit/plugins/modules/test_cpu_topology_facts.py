import os

from ansible_collections.kvmlab.host_resources.plugins.modules import cpu_topology_facts
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
from ansible_collections.kvmlab.host_resources.tests.unit.topologies import build


def test_facts_from_fixture_tree(tmp_path):
    sysfs, proc = build(tmp_path, 'm5_metal')
    result = run_module(cpu_topology_facts.main, {'sysfs_root': sysfs, 'proc_root': proc})
    assert result.get('failed') is not True
    assert result['changed'] is False
    topo = result['ansible_facts']['cpu_topology']
    assert topo['online_count'] == 96
    assert topo['packages'][1]['cores'][0]['cpulist'] == '24,72'
    assert set(result) >= {'ansible_facts', 'changed'}


def test_check_mode_is_the_same(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm')
    normal = run_module(cpu_topology_facts.main, {'sysfs_root': sysfs, 'proc_root': proc})
    checked = run_module(cpu_topology_facts.main, {'sysfs_root': sysfs, 'proc_root': proc}, check_mode=True)
    assert checked['ansible_facts'] == normal['ansible_facts']


def test_missing_file_fails_cleanly(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm',
                        extra_absent=['sys/devices/system/cpu/cpu6/topology/physical_package_id'])
    result = run_module(cpu_topology_facts.main, {'sysfs_root': sysfs, 'proc_root': proc})
    assert result['failed'] is True
    assert os.path.join(sysfs, 'devices/system/cpu/cpu6/topology/physical_package_id') in result['msg']
    assert 'Traceback' not in result['msg'] and 'exception' not in result


def test_wrong_root_fails_cleanly(tmp_path):
    result = run_module(cpu_topology_facts.main, {'sysfs_root': str(tmp_path / 'nowhere'), 'proc_root': '/proc'})
    assert result['failed'] is True
    assert 'nowhere/devices/system/cpu/online' in result['msg']


def test_kunpeng_nul_terminated_tree_gives_the_same_facts(tmp_path):
    plain = build(tmp_path / 'plain', 'm5_metal')
    nul = build(tmp_path / 'nul', 'm5_metal', list_file_end='\n\0')
    want = run_module(cpu_topology_facts.main, {'sysfs_root': plain[0], 'proc_root': plain[1]})
    got = run_module(cpu_topology_facts.main, {'sysfs_root': nul[0], 'proc_root': nul[1]})
    assert got.get('failed') is not True, got.get('msg')
    assert got['ansible_facts'] == want['ansible_facts']


def test_corrupt_list_file_fails_naming_it(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm', list_file_end='\n\0')
    path = os.path.join(sysfs, 'devices/system/cpu/cpu1/topology/thread_siblings_list')
    with open(path, 'w') as handle:
        handle.write('0-1\0\xff\n\0')
    result = run_module(cpu_topology_facts.main, {'sysfs_root': sysfs, 'proc_root': proc})
    assert result['failed'] is True
    assert result['msg'].startswith('cannot gather CPU topology: corrupt %s: cannot parse' % path), result['msg']
    assert 'Traceback' not in result['msg'] and 'exception' not in result
