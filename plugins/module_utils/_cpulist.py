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

_ITEM_RE = re.compile(r'^([0-9]+)(?:-([0-9]+)(?::([0-9]+)/([0-9]+))?)?$')
_WHITESPACE = ' \t\n\r\v\f'
#: What the kernel may leave after a file's value: its newline, and on some
#: kernels a NUL byte or NUL padding (Linux 5.15 on Kunpeng 920 writes
#: ``"0\n\0"`` in every ``*_list`` file).
KERNEL_FILE_END = _WHITESPACE + '\0'
_EXPECTED = 'expected N, N-M or N-M:U/G, items separated by single commas'


class CpuListError(ValueError):
    """A cpulist that does not parse; the message names the offending text."""


def show_text(text):
    """``text`` with control characters visible (``\\n``, ``\\0``, ``\\x1b``), for messages."""
    out = []
    for char in text:
        if char == '\n':
            out.append('\\n')
        elif char == '\t':
            out.append('\\t')
        elif char == '\0':
            out.append('\\0')
        elif ord(char) < 32 or ord(char) == 127:
            out.append('\\x%02x' % ord(char))
        else:
            out.append(char)
    return ''.join(out)


def parse_cpulist(text, what='cpulist'):
    """Parse a cpulist a user gives (``0-3,8,10-11``) into a frozenset of ints.

    Strict: items are ``N``, ``N-M`` or the kernel's stride form
    ``N-M:U/G`` separated by single commas. An empty item (``0-5,,24-29``),
    a leading or trailing comma (``,0``, ``0,``), a malformed range
    (``0--3``, ``0-3-5``) and whitespace inside the list (``0-3, 8``) are
    refused with a message naming ``what``, the offending text and its
    position (1-based character in the list). Whitespace around the whole
    list (a YAML block scalar's newline) is ignored; an empty or
    whitespace-only string is the empty set. Sets, lists and tuples of
    ints and a single int are accepted as they are.

    File content goes through :func:`parse_kernel_cpulist`, systemd's
    space-separated output through :func:`parse_systemd_cpulist`.
    """
    if isinstance(text, (set, frozenset, list, tuple)):
        return _from_iterable(text, what)
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise CpuListError('%s must be a cpulist string such as "0-3,8", got %s'
                           % (what, type(text).__name__))
    if isinstance(text, int):
        return _from_iterable([text], what)
    return _parse_items(text.strip(_WHITESPACE), what, ',')


def parse_kernel_cpulist(text, what='cpulist'):
    """Parse a cpulist as a kernel file holds it (sysfs, procfs, cgroupfs).

    Tolerates exactly what kernels append to the value: the trailing newline,
    trailing whitespace and trailing NUL bytes (a NUL terminator or NUL
    padding), in any mix. Anything else, a NUL or newline in the middle
    included, is refused as :func:`parse_cpulist` refuses it. ``what``
    should name the file. ``bytes`` are decoded as ASCII.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode('ascii')
        except UnicodeDecodeError as exc:
            raise CpuListError('%s: byte 0x%02x at character %d is not text'
                               % (what, bytearray(text)[exc.start], exc.start + 1))
    if not isinstance(text, str):
        raise CpuListError('%s must be file content (a string), got %s' % (what, type(text).__name__))
    return _parse_items(text.rstrip(KERNEL_FILE_END).strip(_WHITESPACE), what, ',')


def parse_systemd_cpulist(text, what='cpulist'):
    """Parse a CPU set as ``systemctl show`` prints it (``0-1 4-5``).

    systemd separates ranges with single spaces (``cpu_set_to_range_string``);
    commas are accepted too, so a value in either spelling parses. Empty
    items and malformed ranges are refused as in :func:`parse_cpulist`.
    """
    if not isinstance(text, str):
        return parse_cpulist(text, what)
    return _parse_items(text.strip(_WHITESPACE), what, ', ')


def _parse_items(body, what, separators):
    """The strict grammar over ``body`` (already stripped of what may surround it)."""
    cpus = set()
    if not body:
        return frozenset()
    shown = show_text(body)
    for index, char in enumerate(body):
        if char in _WHITESPACE and char not in separators:
            raise CpuListError('%s: whitespace ("%s") at character %d of "%s"; a cpulist has no spaces, '
                               'write it like "0-3,8"' % (what, show_text(char), index + 1, shown))
    items = []
    start = 0
    for index, char in enumerate(body):
        if char in separators:
            items.append((start, body[start:index]))
            start = index + 1
    items.append((start, body[start:]))
    last = len(items) - 1
    for number, (offset, item) in enumerate(items):
        if not item:
            if number == 0:
                where, why = 1, 'it starts with a separator'
            elif number == last:
                where, why = offset, 'it ends with a separator'
            else:
                where, why = offset + 1, 'two separators in a row'
            raise CpuListError('%s: empty item at character %d of "%s" (%s)' % (what, where, shown, why))
        position = 'at character %d of "%s"' % (offset + 1, shown)
        match = _ITEM_RE.match(item)
        if not match:
            raise CpuListError('%s: cannot parse "%s" %s (%s)' % (what, show_text(item), position, _EXPECTED))
        first = int(match.group(1))
        last_cpu = int(match.group(2)) if match.group(2) is not None else first
        if last_cpu < first:
            raise CpuListError('%s: range "%s" %s runs backwards' % (what, item, position))
        if last_cpu >= MAX_CPU:
            raise CpuListError('%s: CPU %d in "%s" %s is beyond %d' % (what, last_cpu, item, position, MAX_CPU - 1))
        if match.group(3) is not None:
            used, group = int(match.group(3)), int(match.group(4))
            if group == 0 or used == 0 or used > group:
                raise CpuListError('%s: bad stride "%s" %s (U/G needs 0 < U <= G)' % (what, item, position))
            for base in range(first, last_cpu + 1, group):
                cpus.update(range(base, min(base + used, last_cpu + 1)))
        else:
            cpus.update(range(first, last_cpu + 1))
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
    """Parse (strictly, as a user mask) then format: the canonical spelling."""
    return format_cpulist(parse_cpulist(text, what))


def to_cpumap(cpus, host_cpus):
    """libvirt cpumap: a tuple of ``host_cpus`` booleans, True where pinned."""
    cpus = set(cpus)
    return tuple(index in cpus for index in range(host_cpus))


def from_cpumap(cpumap):
    """The CPUs set in a libvirt cpumap (tuple of booleans)."""
    return frozenset(index for index, flag in enumerate(cpumap) if flag)


def parse_hexmask(text, what='cpumask'):
    """Parse a kernel hex mask (``ff,ffffffff``) as in /proc/irq/*/smp_affinity.

    File content: the trailing newline and NUL bytes are ignored; every
    comma-separated group must be non-empty hex digits.
    """
    if not isinstance(text, str):
        raise CpuListError('%s must be a hex mask string' % what)
    body = text.rstrip(KERNEL_FILE_END).strip(_WHITESPACE)
    groups = body.split(',')
    if not body or not all(re.match(r'^[0-9a-fA-F]+$', group) for group in groups):
        raise CpuListError('%s: cannot parse hex mask "%s"' % (what, show_text(body)))
    value = int(''.join(groups), 16)
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
