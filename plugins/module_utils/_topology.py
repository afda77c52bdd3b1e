# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a host's CPU topology from sysfs and procfs into plain data.

The one home for topology: ``read_topology()`` returns the dict that the
``cpu_topology_facts`` module publishes as ``ansible_facts.cpu_topology`` and
that ``_pools`` consumes. A core is the set of its *online* SMT siblings, as
the kernel's ``thread_siblings_list`` reports them; ``core_id`` is kept for
information only, because it has holes and repeats across dies and sockets.
"""

from __future__ import annotations

import glob
import os
import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    KERNEL_FILE_END,
    CpuListError,
    format_cpulist,
    parse_kernel_cpulist,
    show_text,
)

KERNEL_ARGS = ('isolcpus', 'nohz_full', 'rcu_nocbs', 'systemd.cpu_affinity', 'irqaffinity')


class TopologyError(Exception):
    """Topology cannot be read; the message names the file and the problem."""


def clean_kernel_text(text):
    """A kernel file's value without the noise kernels leave around it.

    Drops trailing whitespace and NUL bytes (the newline, a NUL terminator,
    NUL padding; Linux 5.15 on Kunpeng 920 ends every ``*_list`` file with
    ``"\\n\\0"``) and leading whitespace. NULs or newlines inside the value
    stay, so the parser that follows refuses them.
    """
    return text.rstrip(KERNEL_FILE_END).lstrip(' \t\n\r\v\f')


def _read(path, required=True, lenient_text=False):
    """The cleaned content of a sysfs/procfs file (None if absent and not required).

    The content must be UTF-8 (ASCII in practice); ``lenient_text`` replaces
    undecodable bytes instead (the kernel command line may hold any bytes).
    """
    try:
        with open(path, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError) as exc:
        if not required and getattr(exc, 'errno', None) == 2:
            return None
        raise TopologyError('cannot read %s: %s' % (path, exc.strerror or exc))
    try:
        text = raw.decode('utf-8', 'replace' if lenient_text else 'strict')
    except UnicodeDecodeError as exc:
        raise TopologyError('corrupt %s: byte 0x%02x at offset %d is not text'
                            % (path, bytearray(raw)[exc.start], exc.start))
    return clean_kernel_text(text)


def _read_cpulist(path, required=True):
    text = _read(path, required)
    if text is None:
        return None
    try:
        return parse_kernel_cpulist(text, path)
    except CpuListError as exc:
        raise TopologyError('corrupt %s' % exc)


def _read_int(path, required=True):
    text = _read(path, required)
    if text is None:
        return None
    if not re.match(r'^-?[0-9]+$', text):
        raise TopologyError('corrupt %s: expected an integer, found "%s"' % (path, show_text(text[:40])))
    return int(text)


def _cpu_topology_of(cpu_dir, cpu):
    topo = os.path.join(cpu_dir, 'cpu%d' % cpu, 'topology')
    siblings_path = os.path.join(topo, 'thread_siblings_list')
    if not os.path.exists(siblings_path):
        alt = os.path.join(topo, 'core_cpus_list')
        if os.path.exists(alt):
            siblings_path = alt
    return {
        'package': _read_int(os.path.join(topo, 'physical_package_id')),
        'core_id': _read_int(os.path.join(topo, 'core_id')),
        'die_id': _read_int(os.path.join(topo, 'die_id'), required=False),
        'siblings': _read_cpulist(siblings_path),
        'siblings_path': siblings_path,
    }


def _core_types(sysfs_root):
    """Hybrid CPUs: /sys/devices/cpu_core/cpus, /sys/devices/cpu_atom/cpus."""
    types = {}
    for path in sorted(glob.glob(os.path.join(sysfs_root, 'devices', 'cpu_*', 'cpus'))):
        name = os.path.basename(os.path.dirname(path))[len('cpu_'):]
        types[name] = _read_cpulist(path)
    return types


def _numa_nodes(sysfs_root, online):
    node_dir = os.path.join(sysfs_root, 'devices', 'system', 'node')
    if not os.path.isdir(node_dir):
        return [{'id': 0, 'cpus': format_cpulist(online), 'memory_total_bytes': None}]
    nodes = []
    for entry in os.listdir(node_dir):
        match = re.match(r'^node(\d+)$', entry)
        if not match:
            continue
        node = int(match.group(1))
        cpus = _read_cpulist(os.path.join(node_dir, entry, 'cpulist')) & online
        memory = None
        meminfo = _read(os.path.join(node_dir, entry, 'meminfo'), required=False)
        if meminfo is not None:
            found = re.search(r'MemTotal:\s+(\d+)\s*kB', meminfo)
            if not found:
                raise TopologyError('corrupt %s: no MemTotal line'
                                    % os.path.join(node_dir, entry, 'meminfo'))
            memory = int(found.group(1)) * 1024
        nodes.append({'id': node, 'cpus': format_cpulist(cpus), 'memory_total_bytes': memory,
                      '_cpus': cpus})
    if not nodes:
        return [{'id': 0, 'cpus': format_cpulist(online), 'memory_total_bytes': None}]
    nodes.sort(key=lambda item: item['id'])
    return nodes


def parse_cmdline(cmdline):
    """Isolation-related kernel arguments from a command line, raw values."""
    found = {}
    for token in cmdline.split():
        name, sep, value = token.partition('=')
        if sep and name in KERNEL_ARGS:
            found[name] = value
    return dict((name, found.get(name)) for name in KERNEL_ARGS)


def _status_field(path, field):
    text = _read(path)
    for line in text.split('\n'):
        if line.startswith(field + ':'):
            return clean_kernel_text(line.split(':', 1)[1])
    raise TopologyError('corrupt %s: no %s line' % (path, field))


def read_cpus_allowed(pid, proc_root='/proc'):
    """A process's CPU affinity (``Cpus_allowed_list``) as a frozenset."""
    path = os.path.join(proc_root, str(pid), 'status')
    text = _status_field(path, 'Cpus_allowed_list')
    try:
        return parse_kernel_cpulist(text, '%s: Cpus_allowed_list' % path)
    except CpuListError as exc:
        raise TopologyError('corrupt %s' % exc)


def read_topology(sysfs_root='/sys', proc_root='/proc'):
    """Read the whole topology; raises TopologyError naming the bad file."""
    cpu_dir = os.path.join(sysfs_root, 'devices', 'system', 'cpu')
    online = _read_cpulist(os.path.join(cpu_dir, 'online'))
    present = _read_cpulist(os.path.join(cpu_dir, 'present'))
    possible = _read_cpulist(os.path.join(cpu_dir, 'possible'), required=False)
    isolated = _read_cpulist(os.path.join(cpu_dir, 'isolated'), required=False) or frozenset()
    if not online:
        raise TopologyError('corrupt %s: no CPU is online' % os.path.join(cpu_dir, 'online'))
    if possible is None:
        possible = present
    offline = present - online

    per_cpu = {}
    for cpu in sorted(online):
        per_cpu[cpu] = _cpu_topology_of(cpu_dir, cpu)

    cores = {}
    for cpu, info in per_cpu.items():
        siblings = frozenset(info['siblings'] & online)
        if cpu not in siblings:
            raise TopologyError('corrupt %s: CPU %d is not among its own siblings "%s"'
                                % (info['siblings_path'], cpu, format_cpulist(info['siblings'])))
        if siblings in cores:
            continue
        for other in siblings:
            peer = per_cpu[other]
            if frozenset(peer['siblings'] & online) != siblings:
                raise TopologyError('inconsistent %s: CPU %d lists siblings "%s" but CPU %d lists "%s"'
                                    % (peer['siblings_path'], cpu, format_cpulist(siblings),
                                       other, format_cpulist(peer['siblings'] & online)))
            if peer['package'] != info['package']:
                raise TopologyError('inconsistent topology: sibling CPUs %d and %d report packages %d and %d'
                                    % (cpu, other, info['package'], peer['package']))
        cores[siblings] = info

    core_types = _core_types(sysfs_root)
    nodes = _numa_nodes(sysfs_root, online)

    packages = {}
    for siblings, info in cores.items():
        ordered = sorted(siblings)
        core = {
            'core_id': info['core_id'],
            'die_id': info['die_id'],
            'cpus': ordered,
            'cpulist': format_cpulist(ordered),
            'threads': len(ordered),
            'type': None,
        }
        for name, members in core_types.items():
            if ordered[0] in members:
                core['type'] = name
        packages.setdefault(info['package'], []).append(core)

    package_list = []
    for package_id in sorted(packages):
        pkg_cores = sorted(packages[package_id], key=lambda item: item['cpus'][0])
        pkg_cpus = frozenset(c for core in pkg_cores for c in core['cpus'])
        package_list.append({
            'id': package_id,
            'cpus': format_cpulist(pkg_cpus),
            'core_count': len(pkg_cores),
            'cpu_count': len(pkg_cpus),
            'dies': sorted(set(core['die_id'] for core in pkg_cores if core['die_id'] is not None)),
            'numa_nodes': [node['id'] for node in nodes if node.get('_cpus', online) & pkg_cpus],
            'cores': pkg_cores,
        })
    for node in nodes:
        node.pop('_cpus', None)

    threads = [core['threads'] for pkg in package_list for core in pkg['cores']]
    smt_control = _read(os.path.join(cpu_dir, 'smt', 'control'), required=False)
    smt_active = _read_int(os.path.join(cpu_dir, 'smt', 'active'), required=False)
    if smt_active is None:
        smt_active = int(max(threads) > 1)

    cmdline = _read(os.path.join(proc_root, 'cmdline'), lenient_text=True)
    meminfo_path = os.path.join(proc_root, 'meminfo')
    found = re.search(r'^MemTotal:\s+(\d+)\s*kB', _read(meminfo_path), re.M)
    if not found:
        raise TopologyError('corrupt %s: no MemTotal line' % meminfo_path)
    pid1 = read_cpus_allowed(1, proc_root)

    return {
        'cpus': {
            'possible': format_cpulist(possible),
            'present': format_cpulist(present),
            'online': format_cpulist(online),
            'offline': format_cpulist(offline),
            'isolated': format_cpulist(isolated),
        },
        'online_count': len(online),
        'socket_count': len(package_list),
        'core_count': len(cores),
        'threads_per_core': max(threads),
        'threads_per_core_min': min(threads),
        'smt': {'control': smt_control, 'active': bool(smt_active)},
        'hybrid': len([name for name, members in core_types.items() if members & online]) > 1,
        'core_types': dict((name, format_cpulist(members)) for name, members in core_types.items()),
        'packages': package_list,
        'numa_nodes': nodes,
        'kernel_args': parse_cmdline(cmdline),
        'cmdline': cmdline,
        'pid1_cpus_allowed': format_cpulist(pid1),
        'memory_total_bytes': int(found.group(1)) * 1024,
    }
