# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters drawing the CPU pool layout; thin faces of plugin_utils._layout_svg."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import PoolError, cpu_pools
from ansible_collections.kvmlab.host_resources.plugins.plugin_utils._layout_svg import (
    LayoutError,
    layout_svg,
    layout_text,
)


def _pools(topology, pools, name):
    if pools:
        return pools
    try:
        return cpu_pools(topology)
    except PoolError as exc:
        raise AnsibleFilterError('%s: cannot derive the pools: %s' % (name, exc))


def pool_layout_svg(topology, pools=None, title=None):
    """An SVG of every socket's cores coloured by pool (SMT siblings in one box, NUMA nodes framed)."""
    try:
        return layout_svg(topology, _pools(topology, pools, 'pool_layout_svg'), title)
    except LayoutError as exc:
        raise AnsibleFilterError('pool_layout_svg: %s' % exc)


def pool_layout_text(topology, pools=None, per_line=12):
    """A compact text map of the CPUs by pool, one list item per line."""
    try:
        return layout_text(topology, _pools(topology, pools, 'pool_layout_text'), per_line)
    except LayoutError as exc:
        raise AnsibleFilterError('pool_layout_text: %s' % exc)


class FilterModule(object):
    """kvmlab.host_resources layout filters."""

    def filters(self):
        return {
            'pool_layout_svg': pool_layout_svg,
            'pool_layout_text': pool_layout_text,
        }
