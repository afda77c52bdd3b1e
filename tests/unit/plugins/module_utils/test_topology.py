import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import parse_cpulist
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import (
    TopologyError, parse_cmdline, read_topology,
)
from ansible_collections.kvmlab.host_resources.tests.unit.topologies import CATALOGUE, build, topology


def _cores(topo):
    return [tuple(core['cpus']) for pkg in topo['packages'] for core in pkg['cores']]


@pytest.mark.parametrize('name', sorted(CATALOGUE))
def test_every_online_cpu_in_exactly_one_core(tmp_path, name):
    topo = topology(tmp_path, name)
    cores = _cores(topo)
    flat = [cpu for core in cores for cpu in core]
    assert len(flat) == len(set(flat))
    assert set(flat) == parse_cpulist(topo['cpus']['online'])
    assert topo['online_count'] == len(flat)
    for pkg in topo['packages']:
        firsts = [core['cpus'][0] for core in pkg['cores']]
        assert firsts == sorted(firsts)


def test_m5_metal(tmp_path):
    topo = topology(tmp_path, 'm5_metal')
    assert topo['socket_count'] == 2
    assert topo['core_count'] == 48
    assert topo['threads_per_core'] == 2
    assert topo['packages'][0]['cpus'] == '0-23,48-71'
    assert topo['packages'][1]['cpus'] == '24-47,72-95'
    assert topo['packages'][0]['cores'][0]['cpus'] == [0, 48]
    assert topo['packages'][1]['cores'][-1]['cpus'] == [47, 95]
    assert topo['smt'] == {'control': 'on', 'active': True}
    assert topo['memory_total_bytes'] == 384 * 1024 ** 3
    assert [n['cpus'] for n in topo['numa_nodes']] == ['0-23,48-71', '24-47,72-95']
    assert topo['packages'][0]['numa_nodes'] == [0]
    assert topo['pid1_cpus_allowed'] == '0-95'
    assert topo['hybrid'] is False


def test_adjacent_siblings(tmp_path):
    topo = topology(tmp_path, 'adjacent_smt')
    assert topo['packages'][0]['cores'][0]['cpus'] == [0, 1]
    assert topo['packages'][1]['cpus'] == '16-31'


def test_interleaved_sockets(tmp_path):
    topo = topology(tmp_path, 'interleaved_sockets')
    pkg0 = parse_cpulist(topo['packages'][0]['cpus'])
    assert all(cpu % 2 == 0 for cpu in pkg0)
    assert topo['packages'][0]['cores'][0]['cpus'] == [0, 24]
    assert topo['packages'][1]['cores'][0]['cpus'] == [1, 25]


def test_core_id_holes(tmp_path):
    topo = topology(tmp_path, 'core_id_holes')
    ids = [core['core_id'] for core in topo['packages'][0]['cores']]
    assert ids == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]
    assert topo['core_count'] == 20


@pytest.mark.parametrize('name, threads', [('smt4', 4), ('smt8', 8), ('no_smt', 1)])
def test_threads_per_core(tmp_path, name, threads):
    topo = topology(tmp_path, name)
    assert topo['threads_per_core'] == threads
    assert all(len(core) == threads for core in _cores(topo))
    assert topo['smt']['active'] is (threads > 1)


def test_offline_cpus(tmp_path):
    topo = topology(tmp_path, 'offline_cpus')
    assert topo['cpus']['offline'] == '3,19,24'
    assert topo['cpus']['present'] == '0-31'
    cores = _cores(topo)
    assert (3, 19) not in cores and all(3 not in c and 19 not in c for c in cores)
    assert (8,) in cores  # sibling 24 offline: core 8 keeps one thread
    assert topo['threads_per_core_min'] == 1
    assert topo['core_count'] == 15


def test_several_numa_nodes_per_socket(tmp_path):
    topo = topology(tmp_path, 'numa_per_socket')
    assert len(topo['numa_nodes']) == 4
    assert topo['packages'][0]['numa_nodes'] == [0, 1]
    assert topo['packages'][1]['numa_nodes'] == [2, 3]


def test_1024_cpus(tmp_path):
    topo = topology(tmp_path, 'cpus_1024')
    assert topo['online_count'] == 1024
    assert topo['core_count'] == 512
    assert topo['packages'][3]['cores'][-1]['cpus'] == [511, 1023]


def test_hybrid(tmp_path):
    topo = topology(tmp_path, 'hybrid')
    assert topo['hybrid'] is True
    assert topo['core_types'] == {'atom': '4-7', 'core': '0-3'}
    assert topo['packages'][0]['cores'][0]['type'] == 'core'
    assert topo['packages'][0]['cores'][5]['type'] == 'atom'


def test_kernel_args_and_pid1(tmp_path):
    topo = topology(tmp_path, 'lab_vm', pid1='0-1,4-5',
                    cmdline='root=/dev/vda isolcpus=managed_irq,domain,2-3 nohz_full=2-3 '
                            'systemd.cpu_affinity=0-1,4-5 irqaffinity=0-1 quiet')
    assert topo['pid1_cpus_allowed'] == '0-1,4-5'
    assert topo['kernel_args'] == {
        'isolcpus': 'managed_irq,domain,2-3', 'nohz_full': '2-3', 'rcu_nocbs': None,
        'systemd.cpu_affinity': '0-1,4-5', 'irqaffinity': '0-1',
    }


def test_parse_cmdline_ignores_lookalikes():
    args = parse_cmdline('isolcpus_x=1 xisolcpus=2 isolcpus rcu_nocbs=1-3')
    assert args['isolcpus'] is None and args['rcu_nocbs'] == '1-3'


@pytest.mark.parametrize('relative', [
    'sys/devices/system/cpu/online',
    'sys/devices/system/cpu/present',
    'sys/devices/system/cpu/cpu5/topology/physical_package_id',
    'sys/devices/system/cpu/cpu5/topology/core_id',
    'proc/meminfo',
    'proc/cmdline',
    'proc/1/status',
])
def test_missing_file_is_named(tmp_path, relative):
    sysfs, proc = build(tmp_path, 'lab_vm', extra_absent=[relative])
    with pytest.raises(TopologyError) as info:
        read_topology(sysfs, proc)
    assert os.path.join(str(tmp_path), relative) in str(info.value)


def test_missing_siblings_file_is_named(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm', extra_absent=[
        'sys/devices/system/cpu/cpu2/topology/thread_siblings_list',
        'sys/devices/system/cpu/cpu2/topology/core_cpus_list'])
    with pytest.raises(TopologyError, match='cpu2/topology/thread_siblings_list'):
        read_topology(sysfs, proc)


@pytest.mark.parametrize('relative, content, message', [
    ('sys/devices/system/cpu/online', 'zero-seven', 'corrupt .*cpu/online'),
    ('sys/devices/system/cpu/online', '', 'no CPU is online'),
    ('sys/devices/system/cpu/cpu3/topology/physical_package_id', 'x', 'corrupt .*cpu3/topology/physical_package_id'),
    ('sys/devices/system/cpu/cpu3/topology/thread_siblings_list', '0-1', 'cpu3/topology/thread_siblings_list'),
    ('sys/devices/system/cpu/cpu2/topology/thread_siblings_list', '2', 'inconsistent .*cpu2/topology.*CPU 3 lists siblings "2-3"'),
    ('sys/devices/system/node/node1/cpulist', '4-x', 'corrupt .*node1/cpulist'),
    ('sys/devices/system/node/node0/meminfo', 'garbage', 'corrupt .*node0/meminfo'),
    ('proc/meminfo', 'nothing', 'corrupt .*proc/meminfo'),
    ('proc/1/status', 'Name: systemd', 'corrupt .*proc/1/status'),
])
def test_corrupt_file_is_named(tmp_path, relative, content, message):
    sysfs, proc = build(tmp_path, 'lab_vm')
    with open(os.path.join(str(tmp_path), relative), 'w') as handle:
        handle.write(content + '\n')
    with pytest.raises(TopologyError, match=message):
        read_topology(sysfs, proc)


def test_no_numa_directory(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm')
    import shutil
    shutil.rmtree(os.path.join(sysfs, 'devices', 'system', 'node'))
    topo = read_topology(sysfs, proc)
    assert topo['numa_nodes'] == [{'id': 0, 'cpus': '0-7', 'memory_total_bytes': None}]


# -- sysfs and procfs as real kernels write them ---------------------------------

def _files(root):
    for folder, _dirs, names in os.walk(str(root)):
        for name in names:
            yield os.path.join(folder, name)


def _read_raw(path):
    with open(path, 'rb') as handle:
        return handle.read()


@pytest.mark.parametrize('name', ['lab_vm', 'm5_metal', 'offline_cpus', 'numa_per_socket', 'hybrid', 'no_smt'])
def test_kunpeng_nul_terminated_list_files(tmp_path, name):
    # Linux 5.15 on Kunpeng 920 ends every *_list file with "\n\0"
    plain = topology(tmp_path / 'plain', name)
    sysfs, proc = build(tmp_path / 'nul', name, list_file_end='\n\0')
    lists = [path for path in _files(tmp_path / 'nul') if path.endswith('_list')]
    assert lists and all(_read_raw(path).endswith(b'\n\x00') for path in lists)
    assert _read_raw(os.path.join(sysfs, 'devices/system/cpu/cpu0/topology/thread_siblings_list'))[-2:] == b'\n\0'
    nul = read_topology(sysfs, proc)
    assert nul == plain


@pytest.mark.parametrize('file_end', ['\n\0', '\0', '\0\0\0\0\0\0\0\0', '\n\n', ' \n', '\t\n\0\0', '\n\0\n'])
def test_every_file_with_harmless_trailing_noise(tmp_path, file_end):
    plain = topology(tmp_path / 'plain', 'lab_vm', pid1='0-1,4-5', isolated='2-3')
    sysfs, proc = build(tmp_path / 'noisy', 'lab_vm', pid1='0-1,4-5', isolated='2-3', file_end=file_end)
    assert _read_raw(os.path.join(proc, 'cmdline')).endswith(file_end.encode())
    noisy = read_topology(sysfs, proc)
    assert noisy == plain
    assert noisy['cmdline'] == 'BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet'
    assert noisy['pid1_cpus_allowed'] == '0-1,4-5'
    assert noisy['cpus']['isolated'] == '2-3'
    assert noisy['smt'] == {'control': 'on', 'active': True}


def test_empty_list_files_with_a_nul(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm', file_end='\n\0')
    # cpu/isolated and cpu/offline are "\n" (here "\n\0") when nothing is isolated or offline
    assert _read_raw(os.path.join(sysfs, 'devices/system/cpu/isolated')) == b'\n\0'
    topo = read_topology(sysfs, proc)
    assert topo['cpus']['isolated'] == '' and topo['cpus']['offline'] == ''


@pytest.mark.parametrize('relative, content, message', [
    # garbage in the middle is corruption, however the file ends
    ('sys/devices/system/cpu/online', '0-3\0garbage\n\0',
     r'^corrupt .*/sys/devices/system/cpu/online: cannot parse "0-3\\0garbage" at character 1'),
    ('sys/devices/system/cpu/online', '0-3\n4-7\n\0',
     r'^corrupt .*/sys/devices/system/cpu/online: whitespace \("\\n"\) at character 4 of "0-3\\n4-7"'),
    ('sys/devices/system/cpu/cpu2/topology/thread_siblings_list', '2,,3\n\0',
     r'^corrupt .*cpu2/topology/thread_siblings_list: empty item at character 3 of "2,,3"'),
    ('sys/devices/system/cpu/cpu2/topology/thread_siblings_list', '\0' + '2-3\n',
     r'^corrupt .*cpu2/topology/thread_siblings_list: cannot parse "\\02-3"'),
    ('sys/devices/system/cpu/cpu3/topology/core_id', '1\0' + '7\n',
     r'^corrupt .*cpu3/topology/core_id: expected an integer, found "1\\07"'),
    ('sys/devices/system/cpu/cpu3/topology/physical_package_id', '\u0661\n',
     r'^corrupt .*cpu3/topology/physical_package_id: expected an integer'),
    ('sys/devices/system/node/node1/cpulist', '4-7\0\0x\0',
     r'^corrupt .*node1/cpulist: cannot parse "4-7\\0\\0x"'),
    ('proc/1/status', 'Name:\tsystemd\nCpus_allowed_list:\t0-3 5\n',
     r'^corrupt .*proc/1/status: Cpus_allowed_list: whitespace \(" "\) at character 4 of "0-3 5"'),
])
def test_real_corruption_still_fails_naming_the_file(tmp_path, relative, content, message):
    sysfs, proc = build(tmp_path, 'lab_vm', file_end='\n\0')
    with open(os.path.join(str(tmp_path), relative), 'w') as handle:
        handle.write(content)
    with pytest.raises(TopologyError, match=message):
        read_topology(sysfs, proc)


def test_binary_garbage_is_named_not_a_traceback(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm')
    with open(os.path.join(sysfs, 'devices/system/cpu/present'), 'wb') as handle:
        handle.write(b'0-7\xff\n')
    with pytest.raises(TopologyError, match=r'corrupt .*cpu/present: byte 0xff at offset 3 is not text'):
        read_topology(sysfs, proc)


def test_cmdline_with_undecodable_bytes_is_read(tmp_path):
    sysfs, proc = build(tmp_path, 'lab_vm')
    with open(os.path.join(proc, 'cmdline'), 'wb') as handle:
        handle.write(b'root=/dev/vda label=\xe9 isolcpus=2-3\n\0')
    topo = read_topology(sysfs, proc)
    assert topo['kernel_args']['isolcpus'] == '2-3'
