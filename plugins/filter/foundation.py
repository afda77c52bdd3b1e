# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The foundation_slice_units filter; a thin face of module_utils._foundation."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.module_utils._foundation import (
    FoundationError,
    slice_units,
)


def foundation_slice_units(tiers, host_slices=None, host_reserved=None, variable=None):
    """The tier slices and host slices of the host foundation, for systemd_slice_weight."""
    try:
        return slice_units(tiers, host_slices or [], host_reserved)
    except FoundationError as exc:
        raise AnsibleFilterError('foundation_slice_units%s: %s' % (' (%s)' % variable if variable else '', exc))


class FilterModule(object):
    """kvmlab.host_resources host foundation filters."""

    def filters(self):
        return {'foundation_slice_units': foundation_slice_units}
