"""Build sysfs/procfs fixture trees for any CPU topology.

``layout()`` computes the CPU numbering of common real-world shapes;
``write_tree()`` writes the files the kernel would expose, so tests run the
real reading code against real files rather than mocks.
"""
import os

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist


def layout(sockets, cores, threads, numbering='apart', core_ids=None):
    """[(cpu, socket, core index, core_id)] for a regular topology.

    numbering:
      ``apart``       siblings n and n + sockets*cores (Intel, m5.metal)
      ``adjacent``    siblings next to each other (0,1), (2,3) ...
      ``interleaved`` sockets alternate (even CPUs socket 0, odd socket 1),
                      siblings apart by sockets*cores
    """
    cpus = []
    for s in range(sockets):
        for c in range(cores):
            core_id = core_ids[c] if core_ids else c
            for t in range(threads):
                if numbering == 'apart':
                    cpu = t * sockets * cores + s * cores + c
                elif numbering == 'adjacent':
                    cpu = (s * cores + c) * threads + t
                elif numbering == 'interleaved':
                    cpu = (t * cores + c) * sockets + s
                else:
                    raise ValueError(numbering)
                cpus.append((cpu, s, c, core_id))
    return cpus


def _write_file(path, text, end='\n'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(text + end)


_write = _write_file  # the old name, for callers outside this file


def _is_list_file(path):
    name = os.path.basename(path)
    return name.endswith('_list') or name == 'cpulist'


def write_tree(root, cpus, offline=(), numa_per_socket=1, smt_control='on', core_types=None,
               cmdline='BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet', isolated='',
               pid1=None, mem_kb=16 * 1024 * 1024, extra_absent=(), file_end='\n', list_file_end=None):
    """Write sys/ and proc/ under root; returns (sysfs_root, proc_root).

    cpus: output of layout(); offline: CPU numbers to mark offline (their
    topology directories are absent, as on a real kernel).
    file_end: what follows every file's value (the kernel's newline by
    default; for example ``'\\n\\0'`` or NUL padding); list_file_end: the
    same for the ``*_list`` and ``node*/cpulist`` files only (Linux 5.15 on
    Kunpeng 920 writes ``'0\\n\\0'`` there), default file_end.
    """
    def _write(path, text):  # pylint: disable=redefined-outer-name
        end = list_file_end if list_file_end is not None and _is_list_file(path) else file_end
        _write_file(path, text, end)

    sysfs = os.path.join(root, 'sys')
    proc = os.path.join(root, 'proc')
    cpu_dir = os.path.join(sysfs, 'devices', 'system', 'cpu')
    all_cpus = sorted(c[0] for c in cpus)
    offline = set(offline)
    online = [c for c in all_cpus if c not in offline]
    _write(os.path.join(cpu_dir, 'present'), format_cpulist(all_cpus))
    _write(os.path.join(cpu_dir, 'possible'), format_cpulist(all_cpus))
    _write(os.path.join(cpu_dir, 'online'), format_cpulist(online))
    _write(os.path.join(cpu_dir, 'offline'), format_cpulist(offline))
    _write(os.path.join(cpu_dir, 'isolated'), isolated)
    if smt_control is not None:
        _write(os.path.join(cpu_dir, 'smt', 'control'), smt_control)
        threads = max(len([x for x in cpus if (x[1], x[2]) == key]) for key in set((x[1], x[2]) for x in cpus))
        _write(os.path.join(cpu_dir, 'smt', 'active'), '1' if threads > 1 and smt_control == 'on' else '0')
    siblings = {}
    for cpu, socket, core, _core_id in cpus:
        siblings.setdefault((socket, core), []).append(cpu)
    cores_per_socket = max(x[2] for x in cpus) + 1
    nodes = {}
    for cpu, socket, core, core_id in cpus:
        node = socket * numa_per_socket + core * numa_per_socket // cores_per_socket
        nodes.setdefault(node, [])
        if cpu in offline:
            _write(os.path.join(cpu_dir, 'cpu%d' % cpu, 'online'), '0')
            continue
        nodes[node].append(cpu)
        if cpu != 0:
            _write(os.path.join(cpu_dir, 'cpu%d' % cpu, 'online'), '1')
        sib = [c for c in siblings[(socket, core)] if c not in offline]
        topo = os.path.join(cpu_dir, 'cpu%d' % cpu, 'topology')
        _write(os.path.join(topo, 'physical_package_id'), str(socket))
        _write(os.path.join(topo, 'core_id'), str(core_id))
        _write(os.path.join(topo, 'die_id'), '0')
        _write(os.path.join(topo, 'thread_siblings_list'), format_cpulist(sib))
        _write(os.path.join(topo, 'core_cpus_list'), format_cpulist(sib))
    node_dir = os.path.join(sysfs, 'devices', 'system', 'node')
    per_node_kb = mem_kb // max(len(nodes), 1)
    for node, members in nodes.items():
        _write(os.path.join(node_dir, 'node%d' % node, 'cpulist'), format_cpulist(members))
        _write(os.path.join(node_dir, 'node%d' % node, 'meminfo'),
               'Node %d MemTotal:       %d kB\nNode %d MemFree:        1024 kB' % (node, per_node_kb, node))
    _write(os.path.join(node_dir, 'online'), format_cpulist(nodes))
    for name, members in (core_types or {}).items():
        _write(os.path.join(sysfs, 'devices', 'cpu_%s' % name, 'cpus'), format_cpulist(members))
    _write(os.path.join(proc, 'cmdline'), cmdline)
    _write(os.path.join(proc, 'meminfo'), 'MemTotal:       %d kB\nMemFree:        1000 kB' % mem_kb)
    _write(os.path.join(proc, '1', 'status'),
           'Name:\tsystemd\nCpus_allowed:\tff\nCpus_allowed_list:\t%s\nMems_allowed_list:\t0'
           % (pid1 if pid1 is not None else format_cpulist(online)))
    for rel in extra_absent:
        os.remove(os.path.join(root, rel))
    return sysfs, proc
