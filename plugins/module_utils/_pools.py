# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whole-core CPU pools of the shared execution pool model.

The one home for pool logic: deriving pools from a topology (as returned by
``_topology.read_topology``), validating pools a user already has, and the
capacity arithmetic. Pure functions; errors are ``PoolError`` with a message
that names the argument or pool and the limit.
"""

from __future__ import annotations

from decimal import Decimal, ROUND_HALF_UP

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import (
    SizeError,
    parse_size,
)

POOL_NAMES = ('host_reserved', 'host_housekeeping', 'host_emulator', 'guest_domain')

# Seed 001, "Reasonable Starting Reservations", as the issue states it:
# (largest cores per socket, reserved, housekeeping)
DEFAULT_RESERVATIONS = ((4, 1, 1), (16, 4, 2), (None, 6, 2))


class PoolError(ValueError):
    """Bad pool input; the message names the argument or pool."""


def default_reservation(cores_per_socket):
    """(reserved, housekeeping) cores per socket for a socket of that size."""
    for limit, reserved, housekeeping in DEFAULT_RESERVATIONS:
        if limit is None or cores_per_socket <= limit:
            return reserved, housekeeping
    raise AssertionError('unreachable')  # pragma: no cover


def sockets_of(topology):
    """[(package id, [core cpu tuples ordered by lowest CPU])] from a topology.

    Raises PoolError when the input is not a topology dict as gathered by
    ``cpu_topology_facts``.
    """
    if not isinstance(topology, dict) or not isinstance(topology.get('packages'), list) \
            or not topology.get('packages'):
        raise PoolError('input is not a cpu_topology (expected the ansible_facts.cpu_topology '
                        'dict from kvmlab.host_resources.cpu_topology_facts, with a non-empty '
                        '"packages" list), got %s' % type(topology).__name__)
    sockets = []
    seen = set()
    for package in topology['packages']:
        cores = package.get('cores') if isinstance(package, dict) else None
        if not isinstance(cores, list) or not cores:
            raise PoolError('input is not a cpu_topology: package %r has no "cores" list'
                            % (package.get('id') if isinstance(package, dict) else package))
        ordered = []
        for core in cores:
            cpus = core.get('cpus') if isinstance(core, dict) else None
            if not isinstance(cpus, list) or not cpus \
                    or not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
                raise PoolError('input is not a cpu_topology: a core of package %r has no "cpus" list'
                                % package.get('id'))
            if seen.intersection(cpus):
                raise PoolError('input is not a cpu_topology: CPUs %s appear in two cores'
                                % format_cpulist(seen.intersection(cpus)))
            seen.update(cpus)
            ordered.append(tuple(sorted(cpus)))
        ordered.sort(key=lambda cpus: cpus[0])
        sockets.append((package.get('id'), ordered))
    return sockets


def _positive_int(value, name):
    if value is None:
        return None
    if isinstance(value, bool):
        raise PoolError('%s must be a positive integer, got %r' % (name, value))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise PoolError('%s must be a positive integer (1 or more), got %r' % (name, value))
    return value


def derive_pools(topology, reserved_cores_per_socket=None, housekeeping_cores_per_socket=None):
    """Derive the four pools from a topology by the whole-core rules."""
    sockets = sockets_of(topology)
    smallest = min(len(cores) for _pid, cores in sockets)
    reserved = _positive_int(reserved_cores_per_socket, 'reserved_cores_per_socket')
    housekeeping = _positive_int(housekeeping_cores_per_socket, 'housekeeping_cores_per_socket')
    default_r, default_h = default_reservation(smallest)
    if reserved is None:
        reserved = default_r
    if housekeeping is None:
        housekeeping = min(default_h, reserved)
    if housekeeping > reserved:
        raise PoolError('housekeeping_cores_per_socket (%d) must not exceed '
                        'reserved_cores_per_socket (%d)' % (housekeeping, reserved))
    if reserved >= smallest:
        narrow = [pid for pid, cores in sockets if len(cores) <= reserved]
        raise PoolError('reserved_cores_per_socket (%d) leaves no guest core in socket %s, '
                        'which has %d cores: the limit is %d'
                        % (reserved, ','.join(str(p) for p in narrow), smallest, smallest - 1))

    assignment = []
    for package_id, cores in sockets:
        housekeeping_cores = cores[:housekeeping]
        emulator_cores = cores[housekeeping:reserved] if reserved > housekeeping else housekeeping_cores
        assignment.append((package_id, {
            'host_reserved': cores[:reserved],
            'host_housekeeping': housekeeping_cores,
            'host_emulator': emulator_cores,
            'guest_domain': cores[reserved:],
        }))
    return _describe(topology, assignment, 'derived', reserved, housekeeping)


def _describe(topology, assignment, source, reserved, housekeeping):
    result = {
        'source': source,
        'reserved_cores_per_socket': reserved,
        'housekeeping_cores_per_socket': housekeeping,
        'emulator_shares_housekeeping': False,
        'counts': {},
        'sockets': [],
    }
    totals = dict((name, []) for name in POOL_NAMES)
    for package_id, pools in assignment:
        entry = {'id': package_id, 'counts': {}}
        for name in POOL_NAMES:
            cores = pools[name]
            cpus = [cpu for core in cores for cpu in core]
            entry[name] = format_cpulist(cpus)
            entry['counts'][name] = {'cores': len(cores), 'cpus': len(cpus)}
            totals[name].extend(cores)
        entry['cores'] = dict((name, [format_cpulist(core) for core in pools[name]]) for name in POOL_NAMES)
        result['sockets'].append(entry)
    for name in POOL_NAMES:
        cpus = [cpu for core in totals[name] for cpu in core]
        result[name] = format_cpulist(cpus)
        result['counts'][name] = {'cores': len(totals[name]), 'cpus': len(cpus)}
    result['emulator_shares_housekeeping'] = result['host_emulator'] == result['host_housekeeping']
    cpus = topology.get('cpus') if isinstance(topology.get('cpus'), dict) else {}
    result['offline'] = cpus.get('offline', '')
    return result


def validate_pools(topology, pools):
    """Validate and normalize pools a user already has against a topology."""
    sockets = sockets_of(topology)
    if not isinstance(pools, dict):
        raise PoolError('pools must be a dict with keys %s, got %s'
                        % (', '.join(POOL_NAMES), type(pools).__name__))
    unknown = sorted(set(pools) - set(POOL_NAMES))
    if unknown:
        raise PoolError('pools has unknown key(s) %s; expected %s' % (', '.join(unknown), ', '.join(POOL_NAMES)))
    missing = [name for name in POOL_NAMES if name not in pools]
    if missing:
        raise PoolError('pools lacks %s' % ', '.join(missing))

    online = frozenset(cpu for _pid, cores in sockets for core in cores for cpu in core)
    parsed = {}
    for name in POOL_NAMES:
        try:
            parsed[name] = parse_cpulist(pools[name], 'pools.%s' % name)
        except CpuListError as exc:
            raise PoolError(str(exc))
        if not parsed[name]:
            victim = 'guests' if name == 'guest_domain' else 'PID 1 and host services'
            raise PoolError('pools.%s is empty: %s would have no CPU' % (name, victim))
        stray = parsed[name] - online
        if stray:
            raise PoolError('pools.%s names CPU(s) %s that are not online (online: %s)'
                            % (name, format_cpulist(stray), format_cpulist(online)))

    core_of = {}
    for _pid, cores in sockets:
        for core in cores:
            for cpu in core:
                core_of[cpu] = core
    for name in POOL_NAMES:
        for cpu in sorted(parsed[name]):
            core = core_of[cpu]
            if not parsed[name].issuperset(core):
                raise PoolError('pools.%s splits the SMT siblings of core %s: it has %s but not %s'
                                % (name, format_cpulist(core), format_cpulist(parsed[name] & set(core)),
                                   format_cpulist(set(core) - parsed[name])))

    overlap = parsed['host_reserved'] & parsed['guest_domain']
    if overlap:
        raise PoolError('pools.host_reserved and pools.guest_domain overlap on CPU(s) %s'
                        % format_cpulist(overlap))
    for name in ('host_housekeeping', 'host_emulator'):
        outside = parsed[name] - parsed['host_reserved']
        if outside:
            raise PoolError('pools.%s has CPU(s) %s outside pools.host_reserved (%s)'
                            % (name, format_cpulist(outside), format_cpulist(parsed['host_reserved'])))
    both = parsed['host_housekeeping'] & parsed['host_emulator']
    if both and parsed['host_housekeeping'] != parsed['host_emulator']:
        raise PoolError('pools.host_housekeeping and pools.host_emulator must be equal (a small host) '
                        'or disjoint; they share only CPU(s) %s' % format_cpulist(both))
    unassigned = online - parsed['host_reserved'] - parsed['guest_domain']
    if unassigned:
        raise PoolError('online CPU(s) %s are in no pool: every online CPU belongs to '
                        'host_reserved or guest_domain' % format_cpulist(unassigned))

    assignment = []
    reserved_counts = []
    housekeeping_counts = []
    for package_id, cores in sockets:
        pools_of_socket = {}
        for name in POOL_NAMES:
            pools_of_socket[name] = [core for core in cores if core[0] in parsed[name]]
        reserved_counts.append((package_id, len(pools_of_socket['host_reserved'])))
        housekeeping_counts.append(len(pools_of_socket['host_housekeeping']))
        if not pools_of_socket['guest_domain']:
            raise PoolError('pools.guest_domain has no core in socket %s' % package_id)
        assignment.append((package_id, pools_of_socket))
    if len(set(count for _pid, count in reserved_counts)) > 1:
        raise PoolError('pools.host_reserved reserves a different number of cores per socket (%s); '
                        'keep the reserve symmetric across sockets'
                        % ', '.join('socket %s: %d' % item for item in reserved_counts))
    housekeeping = housekeeping_counts[0] if len(set(housekeeping_counts)) == 1 else None
    return _describe(topology, assignment, 'given', reserved_counts[0][1], housekeeping)


def cpu_pools(topology, reserved_cores_per_socket=None, housekeeping_cores_per_socket=None, pools=None):
    """Derive pools, or validate given ones; the filter's and roles' entry."""
    # an unset inventory variable templated to '' means "not given", as None does
    if reserved_cores_per_socket == '':
        reserved_cores_per_socket = None
    if housekeeping_cores_per_socket == '':
        housekeeping_cores_per_socket = None
    if pools is not None:
        if reserved_cores_per_socket is not None or housekeeping_cores_per_socket is not None:
            raise PoolError('pools (given masks) and reserved_cores_per_socket/housekeeping_cores_per_socket '
                            '(counts to derive them) are mutually exclusive: set one or the other')
        return validate_pools(topology, pools)
    return derive_pools(topology, reserved_cores_per_socket, housekeeping_cores_per_socket)


def _ratio(numerator, denominator):
    value = (Decimal(numerator) / Decimal(denominator)).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)
    return float(value), '%s:1' % value


def pool_capacity(pools, guests, host_memory=None):
    """vCPU oversubscription and memory commit of guests against pools.

    ``guests``: list of dicts with ``vcpus`` and ``memory`` (a size such as
    ``24GiB`` or a number of MiB), optional ``name`` and ``count``.
    """
    if not isinstance(pools, dict) or 'guest_domain' not in pools:
        raise PoolError('pool_capacity expects the output of cpu_pools (a dict with guest_domain)')
    try:
        guest_cpus = len(parse_cpulist(pools['guest_domain'], 'guest_domain'))
    except CpuListError as exc:
        raise PoolError(str(exc))
    if guest_cpus == 0:
        raise PoolError('guest_domain is empty')
    if not isinstance(guests, list):
        raise PoolError('guests must be a list of dicts with vcpus and memory')
    total_vcpus = 0
    total_memory = 0
    count = 0
    for index, guest in enumerate(guests):
        label = guest.get('name', '#%d' % index) if isinstance(guest, dict) else '#%d' % index
        if not isinstance(guest, dict):
            raise PoolError('guests[%d] must be a dict with vcpus and memory' % index)
        try:
            vcpus = _positive_int(guest.get('vcpus'), 'guests[%s].vcpus' % label)
            copies = _positive_int(guest.get('count', 1), 'guests[%s].count' % label)
        except PoolError:
            raise
        if vcpus is None:
            raise PoolError('guests[%s] lacks vcpus' % label)
        if guest.get('memory') is None:
            raise PoolError('guests[%s] lacks memory' % label)
        try:
            memory = parse_size(guest['memory'], 'guests[%s].memory' % label, default_unit='MiB')
        except SizeError as exc:
            raise PoolError(str(exc))
        count += copies
        total_vcpus += vcpus * copies
        total_memory += memory * copies
    ratio, ratio_text = _ratio(total_vcpus, guest_cpus)
    result = {
        'guest_count': count,
        'total_vcpus': total_vcpus,
        'guest_pool_cpus': guest_cpus,
        'vcpu_ratio': ratio,
        'vcpu_ratio_text': ratio_text,
        'total_guest_memory_bytes': total_memory,
        'host_memory_bytes': None,
        'memory_commit_ratio': None,
        'memory_commit_ratio_text': None,
    }
    if host_memory is not None:
        try:
            host_bytes = parse_size(host_memory, 'host_memory', default_unit='B')
        except SizeError as exc:
            raise PoolError(str(exc))
        if host_bytes <= 0:
            raise PoolError('host_memory must be positive')
        result['host_memory_bytes'] = host_bytes
        result['memory_commit_ratio'], result['memory_commit_ratio_text'] = _ratio(total_memory, host_bytes)
    return result
