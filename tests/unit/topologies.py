"""Catalogue of fixture topologies named in the foundation issue."""
from ansible_collections.kvmlab.host_resources.tests.unit.sysfs_builder import layout, write_tree
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import read_topology

GIB_KB = 1024 * 1024

# name: (layout kwargs, write_tree kwargs)
CATALOGUE = {
    'm5_metal': (dict(sockets=2, cores=24, threads=2, numbering='apart'), dict(mem_kb=384 * GIB_KB)),
    'adjacent_smt': (dict(sockets=2, cores=8, threads=2, numbering='adjacent'), {}),
    'interleaved_sockets': (dict(sockets=2, cores=12, threads=2, numbering='interleaved'), {}),
    'core_id_holes': (dict(sockets=2, cores=10, threads=2, numbering='apart',
                           core_ids=[0, 1, 2, 3, 4, 8, 9, 10, 11, 12]), {}),
    'smt4': (dict(sockets=2, cores=8, threads=4, numbering='apart'), {}),
    'smt8': (dict(sockets=1, cores=6, threads=8, numbering='adjacent'), {}),
    'no_smt': (dict(sockets=2, cores=20, threads=1, numbering='apart'), dict(smt_control='notsupported')),
    'offline_cpus': (dict(sockets=2, cores=8, threads=2, numbering='apart'),
                     # a whole core (3, 19) and one lone sibling (24 of core 8) offline
                     dict(offline=(3, 19, 24))),
    'numa_per_socket': (dict(sockets=2, cores=16, threads=2, numbering='apart'), dict(numa_per_socket=2)),
    'cpus_1024': (dict(sockets=4, cores=128, threads=2, numbering='apart'), {}),
    'lab_vm': (dict(sockets=2, cores=2, threads=2, numbering='adjacent'), {}),
    'seed000_small': (dict(sockets=1, cores=6, threads=2, numbering='adjacent'), {}),
    'hybrid': (dict(sockets=1, cores=8, threads=1, numbering='adjacent'),
               dict(core_types={'core': [0, 1, 2, 3], 'atom': [4, 5, 6, 7]})),
}


def build(tmp_path, name, **overrides):
    """Write the named fixture under tmp_path; returns (sysfs_root, proc_root)."""
    lay, tree = CATALOGUE[name]
    tree = dict(tree)
    tree.update(overrides)
    return write_tree(str(tmp_path), layout(**lay), **tree)


def topology(tmp_path, name, **overrides):
    return read_topology(*build(tmp_path, name, **overrides))
