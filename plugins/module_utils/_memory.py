# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Memory sizes and host memory oversubscription logic (zram, KSM, THP)."""

from __future__ import annotations

import re

_UNITS = {
    'b': 1,
    'k': 1024, 'kb': 1024, 'kib': 1024,
    'm': 1024 ** 2, 'mb': 1024 ** 2, 'mib': 1024 ** 2,
    'g': 1024 ** 3, 'gb': 1024 ** 3, 'gib': 1024 ** 3,
    't': 1024 ** 4, 'tb': 1024 ** 4, 'tib': 1024 ** 4,
}


class SizeError(ValueError):
    """A size that does not parse; the message names the value."""


def parse_size(value, what='size', default_unit='B'):
    """Bytes from ``16G``, ``16GiB``, ``512 MiB`` or a bare number of ``default_unit``.

    Binary units throughout, as zramctl, libvirt and the seeds use them.
    """
    if isinstance(value, bool):
        raise SizeError('%s: %r is not a size' % (what, value))
    if isinstance(value, (int, float)):
        if value < 0:
            raise SizeError('%s: %r is negative' % (what, value))
        return int(value * _UNITS[default_unit.lower()])
    if not isinstance(value, str):
        raise SizeError('%s: %r is not a size' % (what, value))
    match = re.match(r'^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$', value)
    if not match or match.group(2).lower() not in _UNITS and match.group(2):
        raise SizeError('%s: cannot parse "%s" (expected a number with an optional unit K, M, G, T '
                        'or KiB, MiB, GiB, TiB)' % (what, value))
    unit = match.group(2).lower() or default_unit.lower()
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(num_bytes):
    """Human form with a binary unit: 16GiB, 512MiB, 1536B."""
    for unit in ('TiB', 'GiB', 'MiB', 'KiB'):
        scale = _UNITS[unit.lower()]
        if num_bytes >= scale and num_bytes % scale == 0:
            return '%d%s' % (num_bytes // scale, unit)
    for unit in ('TiB', 'GiB', 'MiB', 'KiB'):
        scale = _UNITS[unit.lower()]
        if num_bytes >= scale:
            return '%.1f%s' % (float(num_bytes) / scale, unit)
    return '%dB' % num_bytes
