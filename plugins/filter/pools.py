# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over CPU pools; thin faces of module_utils._pools."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import (
    PoolError,
    cpu_pools as _cpu_pools,
    pool_capacity as _pool_capacity,
)


def cpu_pools(topology, reserved_cores_per_socket=None, housekeeping_cores_per_socket=None, pools=None,
              variable=None, host=None):
    """Derive (or validate given) whole-core pools from a cpu_topology fact.

    Empty ``pools`` (none, {} or '') means derive: inventories and role
    defaults pass the operator's variables through unchanged, so one call
    serves every role and playbook. ``variable`` and ``host`` only name the
    source in error messages.
    """
    try:
        return _cpu_pools(topology, reserved_cores_per_socket, housekeeping_cores_per_socket, pools or None)
    except PoolError as exc:
        where = ''
        if variable:
            where += ' %s' % variable
        if host:
            where += ' on host %s' % host
        raise AnsibleFilterError('cpu_pools%s: %s' % (where and ' (' + where.strip() + ')', exc))


def pool_capacity(pools, guests, host_memory=None):
    """vCPU oversubscription and memory commit ratios of guests against pools."""
    try:
        return _pool_capacity(pools, guests, host_memory)
    except PoolError as exc:
        raise AnsibleFilterError('pool_capacity: %s' % exc)


class FilterModule(object):
    """kvmlab.host_resources pool filters."""

    def filters(self):
        return {
            'cpu_pools': cpu_pools,
            'pool_capacity': pool_capacity,
        }
