# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Linux cpulist handling: the one home for parsing and formatting CPU sets.

Pure functions from data to data, shared by modules, filters and tests.
A *cpulist* is the kernel's text form (``0-5,24-29``); a *cpuset* here is a
Python ``set``/``frozenset`` of non-negative ints; a *cpumap* is libvirt's
tuple of booleans indexed by CPU number.
"""

from __future__ import annotations

import re

MAX_CPU = 1 << 16  # far above any real host; guards against absurd ranges

_ITEM_RE = re.compile(r'^(\d+)(?:-(\d+)(?::(\d+)/(\d+))?)?$')


class CpuListError(ValueError):
    """A cpulist that does not parse; the message names the offending text."""


def parse_cpulist(text, what='cpulist'):
    """Parse a kernel cpulist (``0-3,8,10-11``) into a frozenset of ints.

    Accepts commas and/or whitespace as separators and the kernel's stride
    form ``0-15:2/4``. An empty or whitespace-only string is the empty set.
    ``what`` names the value in error messages.
    """
    if isinstance(text, (set, frozenset, list, tuple)):
        return _from_iterable(text, what)
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise CpuListError('%s must be a cpulist string such as "0-3,8", got %s'
                           % (what, type(text).__name__))
    if isinstance(text, int):
        return _from_iterable([text], what)
    cpus = set()
    for item in re.split(r'[\s,]+', text.strip()):
        if not item:
            continue
        match = _ITEM_RE.match(item)
        if not match:
            raise CpuListError('%s: cannot parse "%s" in "%s" (expected N or N-M)'
                               % (what, item, text.strip()))
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise CpuListError('%s: range "%s" in "%s" runs backwards' % (what, item, text.strip()))
        if last >= MAX_CPU:
            raise CpuListError('%s: CPU %d in "%s" is beyond %d' % (what, last, text.strip(), MAX_CPU - 1))
        if match.group(3) is not None:
            used, group = int(match.group(3)), int(match.group(4))
            if group == 0 or used == 0 or used > group:
                raise CpuListError('%s: bad stride "%s" in "%s"' % (what, item, text.strip()))
            for base in range(first, last + 1, group):
                cpus.update(c for c in range(base, min(base + used, last + 1)))
        else:
            cpus.update(range(first, last + 1))
    return frozenset(cpus)


def _from_iterable(values, what):
    cpus = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= MAX_CPU:
            raise CpuListError('%s: "%s" is not a CPU number' % (what, value))
        cpus.add(value)
    return frozenset(cpus)


def format_cpulist(cpus):
    """Format CPUs as a canonical cpulist: sorted, merged ranges, no spaces."""
    ordered = sorted(set(cpus))
    parts = []
    start = prev = None
    for cpu in ordered:
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(_range_text(start, prev))
            start = prev = cpu
    if start is not None:
        parts.append(_range_text(start, prev))
    return ','.join(parts)


def _range_text(first, last):
    return str(first) if first == last else '%d-%d' % (first, last)


def canonical(text, what='cpulist'):
    """Parse then format: the canonical spelling of any accepted cpulist."""
    return format_cpulist(parse_cpulist(text, what))


def to_cpumap(cpus, host_cpus):
    """libvirt cpumap: a tuple of ``host_cpus`` booleans, True where pinned."""
    cpus = set(cpus)
    return tuple(index in cpus for index in range(host_cpus))


def from_cpumap(cpumap):
    """The CPUs set in a libvirt cpumap (tuple of booleans)."""
    return frozenset(index for index, flag in enumerate(cpumap) if flag)


def parse_hexmask(text, what='cpumask'):
    """Parse a kernel hex mask (``ff,ffffffff``) as in /proc/irq/*/smp_affinity."""
    if not isinstance(text, str):
        raise CpuListError('%s must be a hex mask string' % what)
    digits = text.strip().replace(',', '')
    if not digits or not re.match(r'^[0-9a-fA-F]+$', digits):
        raise CpuListError('%s: cannot parse hex mask "%s"' % (what, text.strip()))
    value = int(digits, 16)
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


def format_hexmask(cpus):
    """Kernel hex mask form, 32-bit groups separated by commas."""
    value = 0
    for cpu in cpus:
        value |= 1 << cpu
    digits = '%x' % value
    pad = (-len(digits)) % 8
    digits = '0' * pad + digits
    groups = [digits[i:i + 8] for i in range(0, len(digits), 8)]
    groups[0] = groups[0].lstrip('0') or '0'
    return ','.join(groups)
