# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement filters of the shared execution pool; thin faces of module_utils._libvirt.

``guest_placement`` tells where every guest's threads go and which weight it
gets; ``virt_install_args`` renders the same placement as virt-install
arguments for a guest that does not exist yet. The shared_execution_pool
role and bootstrap playbooks use the one function, so a guest created with
these arguments is already in the shape apply would give it.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import (
    PlacementError,
    guest_placement as _guest_placement,
    virt_install_args as _virt_install_args,
)


def guest_placement(guests, tiers, pools, emulator_policy='share'):
    """Per guest: tier, partition, shares, weight and the three cpusets."""
    try:
        return _guest_placement(guests, tiers, pools, emulator_policy)
    except PlacementError as exc:
        raise AnsibleFilterError('guest_placement: %s' % exc)


def virt_install_args(guest, tiers, pools, guests=None, emulator_policy='share', tier_metadata=True):
    """virt-install arguments (argv list) that create the guest already placed, its tier in its metadata."""
    try:
        return _virt_install_args(guest, tiers, pools, guests, emulator_policy, tier_metadata)
    except PlacementError as exc:
        raise AnsibleFilterError('virt_install_args: %s' % exc)


class FilterModule(object):
    """kvmlab.host_resources placement filters."""

    def filters(self):
        return {'guest_placement': guest_placement, 'virt_install_args': virt_install_args}
