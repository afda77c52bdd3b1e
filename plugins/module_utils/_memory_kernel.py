# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsers of the kernel's and the configuration tools' text for the memory layer.

/proc/meminfo, /proc/swaps, zram mm_stat, the bracketed sysfs choices, ini files
(zram-generator.conf, tuned.conf). Pure functions."""

from __future__ import annotations

import configparser
import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import DEVICE_RE, OversubError

MM_STAT_FIELDS = ('orig_data_size', 'compr_data_size', 'mem_used_total', 'mem_limit',
                  'mem_used_max', 'same_pages', 'pages_compacted', 'huge_pages',
                  'huge_pages_since')


# ---------------------------------------------------------------------------
# Parsers

def parse_bracketed(text):
    """``(selected, choices)`` from ``always [madvise] never``.

    A value without brackets (a plain ``madvise`` as in test trees, or a knob
    with a single value) is its own selection.
    """
    words = (text or '').split()
    selected = None
    choices = []
    for word in words:
        if word.startswith('[') and word.endswith(']'):
            word = word[1:-1]
            selected = word
        choices.append(word)
    if selected is None and len(words) == 1:
        selected = words[0]
    return selected, choices


def parse_meminfo(text):
    """``/proc/meminfo`` as a dict; ``kB`` values in bytes, others as integers."""
    info = {}
    for line in (text or '').splitlines():
        key, sep, rest = line.partition(':')
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        if len(parts) > 1 and parts[1].lower() == 'kb':
            value *= 1024
        info[key.strip()] = value
    return info


def parse_proc_swaps(text):
    """Swap areas from ``/proc/swaps`` (sizes in bytes), in the kernel's order.

    ``/proc/swaps`` escapes blanks in file names as ``\\040``; they are
    unescaped.
    """
    swaps = []
    for line in (text or '').splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5:
            continue
        try:
            size_kib, used_kib, priority = int(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            raise OversubError('/proc/swaps: cannot parse line "%s"' % line)
        swaps.append({
            'device': parts[0].replace('\\040', ' '),
            'type': parts[1],
            'size_bytes': size_kib * 1024,
            'used_bytes': used_kib * 1024,
            'priority': priority,
        })
    return swaps


def parse_mm_stat(text):
    """A zram device's ``mm_stat`` as a dict (bytes and page counts, as the kernel gives them)."""
    values = (text or '').split()
    stat = {}
    for name, value in zip(MM_STAT_FIELDS, values):
        try:
            stat[name] = int(value)
        except ValueError:
            raise OversubError('mm_stat: cannot parse "%s"' % (text or '').strip())
    return stat


def parse_ini(text, what='file'):
    """Sections of an ini-style file (zram-generator.conf, tuned.conf) as dicts.

    Keys keep their spelling (tuned uses sysfs paths as keys); a key without
    ``=`` maps to ''. Raises ``OversubError`` naming ``what`` when the text
    does not parse.
    """
    parser = configparser.RawConfigParser(strict=False, allow_no_value=True,
                                          delimiters=('=',), comment_prefixes=('#', ';'),
                                          inline_comment_prefixes=None, interpolation=None)
    parser.optionxform = str
    try:
        parser.read_string(text or '', source=what)
    except configparser.Error as exc:
        raise OversubError('%s: %s' % (what, str(exc).splitlines()[0]))
    return dict((name, dict((k, (v or '').strip()) for k, v in parser.items(name)))
                for name in parser.sections())


def zram_generator_devices(text, what='zram-generator.conf'):
    """Device sections (``zramN``) of a zram-generator config and their keys."""
    return dict((name, keys) for name, keys in parse_ini(text, what).items()
                if DEVICE_RE.match(name))


def tuned_findings(text, what='tuned.conf'):
    """What a tuned profile does to THP and KSM, and the profiles it includes.

    Returns ``{'includes': [...], 'thp': 'never'|..|None, 'ksm_off': bool}``:
    ``thp`` from ``[vm] transparent_hugepages=`` (or ``transparent_hugepage``),
    a ``[sysfs]`` write to ``transparent_hugepage/enabled`` or a
    ``transparent_hugepage=`` kernel argument in ``[bootloader] cmdline``;
    ``ksm_off`` when the profile writes 0 to ``/sys/kernel/mm/ksm/run`` or
    stops the ksm/ksmtuned services.
    """
    sections = parse_ini(text, what)
    found = {'includes': [], 'thp': None, 'ksm_off': False}
    include = sections.get('main', {}).get('include', '')
    found['includes'] = [p.strip() for p in re.split(r'[,;\s]+', include) if p.strip()]
    for name, keys in sections.items():
        for key, value in keys.items():
            low = key.lower()
            val = value.strip().lower()
            if low in ('transparent_hugepages', 'transparent_hugepage') and val:
                found['thp'] = val
            elif low.endswith('/transparent_hugepage/enabled') and val:
                found['thp'] = val
            elif low.endswith('/sys/kernel/mm/ksm/run') and val == '0':
                found['ksm_off'] = True
            elif low in ('service.ksm', 'service.ksmtuned') and 'stop' in val:
                found['ksm_off'] = True
            elif name == 'bootloader' and low.startswith('cmdline'):
                match = re.search(r'transparent_hugepage=(\w+)', value)
                if match:
                    found['thp'] = match.group(1).lower()
    return found
