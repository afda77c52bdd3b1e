# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Memory sizes: parsing and formatting byte sizes, and the zram device size for a host.

Pure functions; binary units throughout, as zramctl, libvirt and the seeds use them."""

from __future__ import annotations

import re

MIB = 1024 ** 2

#: Share-derived zram sizes are rounded down to this, so that the few KiB by
#: which MemTotal moves across kernel updates do not rebuild the device.
SHARE_GRANULE = 64 * MIB

_SIZE_SHARE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*%\s*$')

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


def parse_zram_size(value, what='zram.size'):
    """``('share', percent)`` for ``"50%"``, ``('bytes', n)`` for ``"16G"`` or a number of bytes."""
    if isinstance(value, str):
        match = _SIZE_SHARE_RE.match(value)
        if match:
            share = float(match.group(1))
            if share <= 0 or share > 400:
                raise SizeError('%s: share "%s" must be above 0%% and at most 400%% of RAM' % (what, value))
            return 'share', share
    return 'bytes', parse_size(value, what)


def zram_target(size, mem_total, max_ram_share=None, what='zram.size'):
    """The zram device size for a host with ``mem_total`` bytes of RAM.

    ``size`` is absolute (``16G``) or a share of RAM (``25%``);
    ``max_ram_share`` (percent) caps it, which sizes the device down on small
    hosts. Absolute sizes are rounded down to whole MiB; share-derived ones to
    64 MiB. Returns ``{'bytes', 'mib', 'requested', 'capped', 'share_of_ram',
    'message'}``; ``message`` is None unless the size was capped.
    """
    if not mem_total or mem_total <= 0:
        raise SizeError('cannot size zram: MemTotal is unknown')
    kind, amount = parse_zram_size(size, what)
    if kind == 'share':
        requested = int(mem_total * amount / 100.0)
        wanted = _round_down(requested, SHARE_GRANULE) or _round_down(requested, MIB)
    else:
        requested = amount
        wanted = _round_down(requested, MIB)
    capped = False
    message = None
    if max_ram_share is not None:
        if max_ram_share <= 0 or max_ram_share > 400:
            raise SizeError('zram.max_ram_share: %s must be above 0 and at most 400 (percent)'
                            % max_ram_share)
        cap_raw = int(mem_total * max_ram_share / 100.0)
        cap = _round_down(cap_raw, SHARE_GRANULE) or _round_down(cap_raw, MIB)
        if wanted > cap:
            capped = True
            message = ('zram sized down to %s (%s%% of %s RAM) from the requested %s'
                       % (format_size(cap), _num(max_ram_share), human_size(mem_total),
                          size if isinstance(size, str) else format_size(requested)))
            wanted = cap
    if wanted < MIB:
        raise SizeError('%s: %s gives a zram device below 1MiB on a host with %s RAM'
                        % (what, size, format_size(mem_total)))
    return {
        'bytes': wanted,
        'mib': wanted // MIB,
        'requested': size if isinstance(size, str) else format_size(requested),
        'capped': capped,
        'share_of_ram': round(100.0 * wanted / mem_total, 1),
        'message': message,
    }


def _round_down(value, granule):
    return (value // granule) * granule


def _num(value):
    return ('%g' % value) if isinstance(value, float) else str(value)


def human_size(num_bytes):
    """Readable size: exact when a unit gives a short whole number (1472MiB), else one decimal (2.9GiB)."""
    units = ('TiB', 'GiB', 'MiB', 'KiB')
    for unit in units:
        scale = _UNITS[unit.lower()]
        if num_bytes >= scale and num_bytes % scale == 0 and num_bytes // scale < 10000:
            return '%d%s' % (num_bytes // scale, unit)
    for unit in units:
        scale = _UNITS[unit.lower()]
        if round(float(num_bytes) / scale, 1) >= 1:
            return '%.1f%s' % (float(num_bytes) / scale, unit)
    return '%dB' % num_bytes
