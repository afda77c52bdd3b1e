"""pool_layout_svg and pool_layout_text on generated topologies."""
import xml.etree.ElementTree as ET

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.filter.layout import pool_layout_svg, pool_layout_text
from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import cpu_pools
from ansible_collections.kvmlab.host_resources.plugins.plugin_utils._layout_svg import COLOURS
from ansible_collections.kvmlab.host_resources.tests.unit.topologies import topology

NS = '{http://www.w3.org/2000/svg}'


def _cores(svg):
    root = ET.fromstring(svg.encode('utf-8'))
    assert root.tag == NS + 'svg'
    return root, [r for r in root.iter(NS + 'rect') if r.get('class') == 'core']


def test_m5_metal_one_rect_per_core_coloured_by_pool(tmp_path):
    topo = topology(tmp_path, 'm5_metal')
    pools = cpu_pools(topo)
    root, cores = _cores(pool_layout_svg(topo, pools))
    assert len(cores) == 48
    by_cpus = dict((r.get('data-cpus'), r) for r in cores)
    assert by_cpus['0,48'].get('data-pool') == 'host_housekeeping'
    assert by_cpus['0,48'].get('fill') == COLOURS['host_housekeeping']
    assert by_cpus['2,50'].get('fill') == COLOURS['host_emulator']
    assert by_cpus['29,77'].get('data-pool') == 'host_emulator'
    assert by_cpus['30,78'].get('fill') == COLOURS['guest_domain']
    kinds = [r.get('data-pool') for r in cores]
    assert kinds.count('host_housekeeping') == 4 and kinds.count('host_emulator') == 8
    assert kinds.count('guest_domain') == 36
    assert len([r for r in root.iter(NS + 'rect') if r.get('class') == 'socket']) == 2
    assert len([r for r in root.iter(NS + 'rect') if r.get('class') == 'numa']) == 2
    texts = [t.text for t in root.iter(NS + 'text')]
    assert 'NUMA node 1 (24 cores)' in texts
    assert any(t and t.startswith('guest_domain (shared vCPU pool): 36 cores, CPUs 6-23,30-47,54-71,78-95') for t in texts)


def test_lab_shares_housekeeping_and_numa_per_socket(tmp_path):
    topo = topology(tmp_path, 'lab_vm')
    _root, cores = _cores(pool_layout_svg(topo, cpu_pools(topo), title='lab <host> & "co"'))
    assert [(r.get('data-cpus'), r.get('data-pool')) for r in cores] == [
        ('0,1', 'host_shared'), ('2,3', 'guest_domain'), ('4,5', 'host_shared'), ('6,7', 'guest_domain')]
    assert pool_layout_text(topo, cpu_pools(topo)) == [
        'S host_housekeeping + host_emulator (shared): 2 cores, CPUs 0-1,4-5',
        'G guest_domain (shared vCPU pool): 2 cores, CPUs 2-3,6-7',
        'socket 0 node 0: S 0,1 | G 2,3',
        'socket 1 node 1: S 4,5 | G 6,7',
    ]


def test_two_nodes_per_socket_offline_cpus_and_derived_pools(tmp_path):
    topo = topology(tmp_path / 'a', 'numa_per_socket')
    root, cores = _cores(pool_layout_svg(topo))
    assert len(cores) == 32
    assert len([r for r in root.iter(NS + 'rect') if r.get('class') == 'numa']) == 4
    topo = topology(tmp_path / 'b', 'offline_cpus')
    root, cores = _cores(pool_layout_svg(topo))
    assert len(cores) == topo['core_count']
    assert 'offline 3,19,24' in root.find(NS + 'title').text


def test_text_wraps_long_nodes(tmp_path):
    topo = topology(tmp_path, 'm5_metal')
    lines = pool_layout_text(topo, cpu_pools(topo), per_line=12)
    assert lines[3].startswith('socket 0 node 0: H 0,48 | H 1,49 | E 2,50')
    assert lines[4].startswith('                 G 12,60 | ')
    assert len(lines) == 3 + 4


def test_errors_are_filter_errors(tmp_path):
    with pytest.raises(AnsibleFilterError, match='pool_layout_svg: topology must be'):
        pool_layout_svg({'x': 1}, {'guest_domain': '0'})
    topo = topology(tmp_path, 'lab_vm')
    with pytest.raises(AnsibleFilterError, match='pool_layout_text: .*pools.guest_domain'):
        pool_layout_text(topo, {'guest_domain': 'x-y'})
