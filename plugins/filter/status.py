# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status_verdict filter; a thin face of module_utils._status."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import (
    StatusError,
    status_line as _status_line,
    verdict,
)


def status_verdict(items, applied_label='applied', stock_label='stock', drifted_label='drifted'):
    """One verdict from a list of {name, state} items."""
    try:
        return verdict(items, applied_label, stock_label, drifted_label)
    except StatusError as exc:
        raise AnsibleFilterError('status_verdict: %s' % exc)


def status_line(item, width=28):
    """A readable line for one status item."""
    try:
        return _status_line(item, width)
    except StatusError as exc:
        raise AnsibleFilterError('status_line: %s' % exc)


class FilterModule(object):
    """kvmlab.host_resources status filters."""

    def filters(self):
        return {'status_verdict': status_verdict, 'status_line': status_line}
