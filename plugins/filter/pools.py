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


def cpu_pools(topology, reserved_cores_per_socket=None, housekeeping_cores_per_socket=None, pools=None):
    """Derive (or validate given) whole-core pools from a cpu_topology fact."""
    try:
        return _cpu_pools(topology, reserved_cores_per_socket, housekeeping_cores_per_socket, pools)
    except PoolError as exc:
        raise AnsibleFilterError('cpu_pools: %s' % exc)


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
