# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Memory sizes and host memory oversubscription logic (zram, KSM, THP)."""

from __future__ import annotations

import configparser
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


# ---------------------------------------------------------------------------
# Host memory oversubscription: zram swap, KSM, THP and vm sysctls.
#
# Pure functions from data to data: parsers of the kernel's text files
# (``/proc/meminfo``, ``/proc/swaps``, zram ``mm_stat``, the bracketed THP
# choices), the zram target size, the text of the persistent files, the
# wanted-against-live comparison, the effect figures (KSM pages and bytes
# saved, zram compression), the swapoff safety check, the verdict and the
# status report. Nothing here reads the host or runs a command; the
# ``memory_oversub`` module is the face.


PAGE_SIZE = 4096
MIB = 1024 ** 2

#: Share-derived zram sizes are rounded down to this, so that the few KiB by
#: which MemTotal moves across kernel updates do not rebuild the device.
SHARE_GRANULE = 64 * MIB

THP_ENABLED_CHOICES = ('always', 'madvise', 'never')
THP_DEFRAG_CHOICES = ('always', 'defer', 'defer+madvise', 'madvise', 'never')

#: KSM knobs in the order they are written (merge_across_nodes only changes
#: while nothing is merged, so it goes before ``run``).
KSM_KNOBS = ('merge_across_nodes', 'pages_to_scan', 'sleep_millisecs', 'run')
KSM_STATS = ('pages_shared', 'pages_sharing', 'pages_unshared', 'pages_volatile',
             'full_scans', 'general_profit', 'stable_node_chains', 'stable_node_dups')
THP_KNOBS = ('enabled', 'defrag')

#: vm sysctls the snapshot always records.
SYSCTL_RECORDED = ('vm.swappiness', 'vm.page-cluster')

MM_STAT_FIELDS = ('orig_data_size', 'compr_data_size', 'mem_used_total', 'mem_limit',
                  'mem_used_max', 'same_pages', 'pages_compacted', 'huge_pages',
                  'huge_pages_since')

#: Header of every file the module writes; also the marker by which it
#: recognises its own files when no snapshot says otherwise.
MANAGED_MARKER = '# Ansible managed (kvmlab.host_resources.memory_oversub)'
MANAGED_HEADER = MANAGED_MARKER + ': local edits are overwritten.'

SNAPSHOT_FORMAT = 1

_SIZE_SHARE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*%\s*$')
_SYSCTL_RE = re.compile(r'^vm\.[a-z0-9_-]+$')
_DEVICE_RE = re.compile(r'^zram\d+$')


class OversubError(ValueError):
    """Wanted settings or host data that cannot be used; the message says why."""


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
                if _DEVICE_RE.match(name))


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


# ---------------------------------------------------------------------------
# Sizes

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
        raise OversubError('cannot size zram: MemTotal is unknown')
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
            raise OversubError('zram.max_ram_share: %s must be above 0 and at most 400 (percent)'
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
        raise OversubError('%s: %s gives a zram device below 1MiB on a host with %s RAM'
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


# ---------------------------------------------------------------------------
# Wanted settings

def normalize_wanted(zram=None, thp=None, ksm=None, sysctl=None, mem_total=None):
    """Validated wanted settings, with the zram size resolved against ``mem_total``.

    Each argument is the module's option dict or None (not managed). Returns
    ``{'zram': {...}|None, 'thp': {...}, 'ksm': {...}, 'sysctl': {...}}``
    where only managed knobs appear; ``zram`` carries ``device``,
    ``size_bytes``, ``algorithm``, ``priority`` and the ``sizing`` record of
    ``zram_target``, or is None when zram is not managed or disabled.
    """
    wanted = {'zram': None, 'thp': {}, 'ksm': {}, 'sysctl': {}}
    if zram and zram.get('enabled', True):
        device = zram.get('device') or 'zram0'
        if not _DEVICE_RE.match(device):
            raise OversubError('zram.device: "%s" is not a zram device name (zram0, zram1, ...)' % device)
        priority = zram.get('priority', 100)
        if priority is None:
            priority = 100
        if not -1 <= int(priority) <= 32767:
            raise OversubError('zram.priority: %s is outside -1..32767' % priority)
        algorithm = zram.get('algorithm')
        if algorithm is not None and not re.match(r'^[a-z0-9-]+$', str(algorithm)):
            raise OversubError('zram.algorithm: "%s" is not an algorithm name' % algorithm)
        try:
            sizing = zram_target(zram.get('size') or '50%', mem_total, zram.get('max_ram_share'))
        except SizeError as exc:
            raise OversubError(str(exc))
        wanted['zram'] = {
            'device': device,
            'size_bytes': sizing['bytes'],
            'algorithm': algorithm,
            'priority': int(priority),
            'sizing': sizing,
        }
    for knob in THP_KNOBS:
        value = (thp or {}).get(knob)
        if value is None:
            continue
        choices = THP_ENABLED_CHOICES if knob == 'enabled' else THP_DEFRAG_CHOICES
        if value not in choices:
            raise OversubError('thp.%s: "%s" is not one of %s' % (knob, value, ', '.join(choices)))
        wanted['thp'][knob] = value
    for knob in KSM_KNOBS:
        value = (ksm or {}).get(knob)
        if value is None:
            continue
        value = int(value)
        if knob in ('run', 'merge_across_nodes') and value not in (0, 1):
            raise OversubError('ksm.%s: %s must be 0 or 1' % (knob, value))
        if knob == 'pages_to_scan' and not 1 <= value <= 1000000:
            raise OversubError('ksm.pages_to_scan: %s is outside 1..1000000' % value)
        if knob == 'sleep_millisecs' and not 0 <= value <= 3600000:
            raise OversubError('ksm.sleep_millisecs: %s is outside 0..3600000' % value)
        wanted['ksm'][knob] = value
    for key, value in sorted((sysctl or {}).items()):
        if not _SYSCTL_RE.match(str(key)):
            raise OversubError('sysctl: "%s" is not a vm.* setting (for example vm.swappiness)' % key)
        try:
            wanted['sysctl'][key] = int(value)
        except (TypeError, ValueError):
            raise OversubError('sysctl: %s = "%s" is not an integer' % (key, value))
    if 'vm.swappiness' in wanted['sysctl'] and not 0 <= wanted['sysctl']['vm.swappiness'] <= 200:
        raise OversubError('sysctl: vm.swappiness %s is outside 0..200' % wanted['sysctl']['vm.swappiness'])
    if 'vm.page-cluster' in wanted['sysctl'] and not 0 <= wanted['sysctl']['vm.page-cluster'] <= 10:
        raise OversubError('sysctl: vm.page-cluster %s is outside 0..10' % wanted['sysctl']['vm.page-cluster'])
    return wanted


def sysctl_path(key):
    """``vm.page-cluster`` -> ``sys/vm/page-cluster`` (relative to the procfs root)."""
    return 'sys/' + key.replace('.', '/')


# ---------------------------------------------------------------------------
# Live state helpers

def swap_of(swaps, device):
    """The ``/proc/swaps`` entry of ``/dev/<device>``, or None."""
    for entry in swaps or []:
        if entry['device'] == '/dev/' + device:
            return entry
    return None


def zram_live(live, device):
    """Flat live values of one zram device: swap, size, algorithm, priority."""
    dev = ((live.get('zram') or {}).get('devices') or {}).get(device)
    swap = swap_of(live.get('swaps'), device)
    return {
        'swap': swap is not None,
        'size': dev['disksize'] if dev else 0,
        'algorithm': dev['algorithm'] if dev else None,
        'priority': swap['priority'] if swap else None,
    }


def flat_wanted(wanted):
    """Wanted settings as ``[(item name, value)]`` in apply order."""
    items = []
    zram = wanted.get('zram')
    if zram:
        items.append(('zram.swap', True))
        items.append(('zram.size', zram['size_bytes']))
        if zram.get('algorithm'):
            items.append(('zram.algorithm', zram['algorithm']))
        items.append(('zram.priority', zram['priority']))
    for knob in THP_KNOBS:
        if knob in wanted.get('thp', {}):
            items.append(('thp.' + knob, wanted['thp'][knob]))
    for knob in KSM_KNOBS:
        if knob in wanted.get('ksm', {}):
            items.append(('ksm.' + knob, wanted['ksm'][knob]))
    for key in sorted(wanted.get('sysctl', {})):
        items.append(('sysctl.' + key, wanted['sysctl'][key]))
    return items


def flat_live(live, device='zram0'):
    """Live values by item name (the same names as ``flat_wanted``)."""
    flat = {}
    for key, value in zram_live(live, device).items():
        flat['zram.' + key] = value
    for knob, value in (live.get('thp') or {}).items():
        flat['thp.' + knob] = value
    for knob, value in (live.get('ksm') or {}).items():
        flat['ksm.' + knob] = value
    for key, value in (live.get('sysctl') or {}).items():
        flat['sysctl.' + key] = value
    return flat


def compare(wanted_items, live_flat):
    """``[{'name', 'wanted', 'live', 'ok'}]`` for every wanted item."""
    result = []
    for name, value in wanted_items:
        current = live_flat.get(name)
        result.append({'name': name, 'wanted': value, 'live': current, 'ok': current == value})
    return result


def zram_needs_rebuild(wanted_zram, live, device):
    """Whether the live device differs from the wanted one (size, algorithm, priority, swap on)."""
    if not wanted_zram:
        return False
    current = zram_live(live, device)
    if not current['swap'] or current['size'] != wanted_zram['size_bytes']:
        return True
    if wanted_zram.get('algorithm') and current['algorithm'] != wanted_zram['algorithm']:
        return True
    return current['priority'] != wanted_zram['priority']


def ksm_writes(wanted_ksm, live_ksm):
    """``(writes, held)``: knob writes in order, and knobs that cannot change safely.

    ``merge_across_nodes`` only changes while no page is merged (the kernel
    refuses otherwise, and unmerging everything on a busy host can run it out
    of memory); with pages merged it is held back with a reason. It is also
    held back on kernels without NUMA support (no such file).
    """
    writes = []
    held = []
    for knob in KSM_KNOBS:
        if knob not in wanted_ksm:
            continue
        value = wanted_ksm[knob]
        current = (live_ksm or {}).get(knob)
        if current == value:
            continue
        if knob == 'merge_across_nodes':
            if current is None:
                held.append({'name': 'ksm.merge_across_nodes',
                             'reason': 'this kernel has no /sys/kernel/mm/ksm/merge_across_nodes (no NUMA)'})
                continue
            shared = (live_ksm or {}).get('pages_shared') or 0
            if shared:
                held.append({'name': 'ksm.merge_across_nodes',
                             'reason': ('left at %s: %d pages are merged and the kernel only changes it '
                                        'when none are; set ksm run to 2 (unmerge all) at a quiet time '
                                        'and rerun' % (current, shared))})
                continue
        writes.append((knob, value))
    return writes, held


# ---------------------------------------------------------------------------
# Files

def render_zram_generator(wanted_zram):
    """Drop-in for ``/etc/systemd/zram-generator.conf.d/`` defining the device."""
    lines = [MANAGED_HEADER,
             '# zram swap for host memory oversubscription (%s requested%s).'
             % (wanted_zram['sizing']['requested'], ', capped by max_ram_share' if wanted_zram['sizing']['capped']
                else ''),
             '[%s]' % wanted_zram['device'],
             'host-memory-limit = none',
             'zram-size = %d' % (wanted_zram['size_bytes'] // MIB)]
    if wanted_zram.get('algorithm'):
        lines.append('compression-algorithm = %s' % wanted_zram['algorithm'])
    lines.append('swap-priority = %d' % wanted_zram['priority'])
    return '\n'.join(lines) + '\n'


def render_zram_unit(wanted_zram, bins):
    """A oneshot service of ours that sets the device up as swap (no zram-generator)."""
    dev = '/dev/' + wanted_zram['device']
    setup = [bins['zramctl'], '--size', str(wanted_zram['size_bytes'])]
    if wanted_zram.get('algorithm'):
        setup += ['--algorithm', wanted_zram['algorithm']]
    setup.append(dev)
    return '\n'.join([
        MANAGED_HEADER,
        '[Unit]',
        'Description=Compressed swap on %s (kvmlab.host_resources)' % dev,
        'DefaultDependencies=no',
        'After=systemd-modules-load.service',
        'Before=swap.target shutdown.target',
        'Conflicts=shutdown.target',
        '',
        '[Service]',
        'Type=oneshot',
        'RemainAfterExit=yes',
        'ExecStartPre=%s zram' % bins['modprobe'],
        'ExecStartPre=%s settle' % bins['udevadm'],
        'ExecStart=%s' % ' '.join(setup),
        'ExecStart=%s -L %s %s' % (bins['mkswap'], wanted_zram['device'], dev),
        'ExecStart=%s --priority %d --discard %s' % (bins['swapon'], wanted_zram['priority'], dev),
        'ExecStop=%s %s' % (bins['swapoff'], dev),
        'ExecStop=%s --reset %s' % (bins['zramctl'], dev),
        '',
    ])


def render_unit_wants(unit_name):
    """Drop-in for ``swap.target`` that pulls our zram service in at boot."""
    return '%s\n[Unit]\nWants=%s\n' % (MANAGED_HEADER, unit_name)


def render_tmpfiles(wanted):
    """tmpfiles.d lines that write the THP and KSM values at boot, or None."""
    lines = []
    for knob in THP_KNOBS:
        if knob in wanted.get('thp', {}):
            lines.append('w /sys/kernel/mm/transparent_hugepage/%s - - - - %s' % (knob, wanted['thp'][knob]))
    for knob in KSM_KNOBS:
        if knob in wanted.get('ksm', {}):
            lines.append('w /sys/kernel/mm/ksm/%s - - - - %s' % (knob, wanted['ksm'][knob]))
    if not lines:
        return None
    return '\n'.join([MANAGED_HEADER, '# THP and KSM for host memory oversubscription, applied at boot.']
                     + lines) + '\n'


def render_sysctl(wanted):
    """sysctl.d lines for the vm settings, or None."""
    settings = wanted.get('sysctl') or {}
    if not settings:
        return None
    return '\n'.join([MANAGED_HEADER] + ['%s = %s' % (k, settings[k]) for k in sorted(settings)]) + '\n'


def is_managed(text):
    """Whether a file's text carries this module's header."""
    return text is not None and MANAGED_MARKER in text


# ---------------------------------------------------------------------------
# Effect figures

def ksm_effect(ksm_live, page_size=PAGE_SIZE):
    """KSM pages shared/sharing and the memory saved (pages_sharing pages)."""
    ksm_live = ksm_live or {}
    sharing = ksm_live.get('pages_sharing') or 0
    effect = {
        'run': ksm_live.get('run'),
        'pages_shared': ksm_live.get('pages_shared') or 0,
        'pages_sharing': sharing,
        'pages_unshared': ksm_live.get('pages_unshared') or 0,
        'pages_volatile': ksm_live.get('pages_volatile') or 0,
        'full_scans': ksm_live.get('full_scans') or 0,
        'saved_bytes': sharing * page_size,
        'saved': human_size(sharing * page_size),
    }
    if ksm_live.get('general_profit') is not None:
        effect['general_profit_bytes'] = ksm_live['general_profit']
    return effect


def zram_effect(device, stat):
    """Original and compressed size, memory used and the ratio of one zram device."""
    stat = stat or {}
    orig = stat.get('orig_data_size') or 0
    compr = stat.get('compr_data_size') or 0
    used = stat.get('mem_used_total') or 0
    return {
        'device': device,
        'orig_data_bytes': orig,
        'compr_data_bytes': compr,
        'mem_used_bytes': used,
        'same_pages': stat.get('same_pages') or 0,
        'ratio': round(float(orig) / compr, 2) if compr else None,
        'orig_data': human_size(orig),
        'compr_data': human_size(compr),
        'mem_used': human_size(used),
    }


def swap_effect(swaps):
    """Swap areas and the total in use."""
    total = sum(s['size_bytes'] for s in swaps or [])
    used = sum(s['used_bytes'] for s in swaps or [])
    return {
        'devices': [dict(s) for s in swaps or []],
        'total_bytes': total,
        'used_bytes': used,
        'total': human_size(total),
        'used': human_size(used),
    }


def effect(live, device='zram0', page_size=PAGE_SIZE):
    """The effect figures of the live state: KSM, every zram device, swap."""
    devices = (live.get('zram') or {}).get('devices') or {}
    return {
        'ksm': ksm_effect(live.get('ksm'), page_size),
        'zram': [zram_effect(name, devices[name].get('mm_stat')) for name in sorted(devices)
                 if devices[name].get('disksize')],
        'swap': swap_effect(live.get('swaps')),
    }


# ---------------------------------------------------------------------------
# Safety

def swapoff_fits(used_bytes, meminfo, margin=None):
    """``None`` when ``used_bytes`` swapped out to a device fit back into memory, else why not.

    Uses MemAvailable (MemFree when the kernel lacks it) minus a margin of
    5% of MemTotal, at least 64 MiB.
    """
    if not used_bytes:
        return None
    available = meminfo.get('MemAvailable', meminfo.get('MemFree', 0))
    if margin is None:
        margin = max(64 * MIB, int(meminfo.get('MemTotal', 0) * 0.05))
    room = available - margin
    if used_bytes <= room:
        return None
    return ('%s is swapped out to it and would not fit back into memory: %s available, less a '
            '%s margin, leaves %s' % (human_size(used_bytes), human_size(available),
                                      human_size(margin), human_size(max(room, 0))))


# ---------------------------------------------------------------------------
# Conflicts

def find_conflicts(device, wanted_priority, swaps, zram_devices, services, tuned, generator_configs):
    """What would fight the wanted settings, as ``[{'kind', 'blocking', 'message'}]``.

    ``services`` maps unit names to their ActiveState; ``tuned`` is None or
    ``{'profile': name, 'thp': value|None, 'ksm_off': bool}``;
    ``zram_devices`` maps device names to their live record;
    ``generator_configs`` maps config file paths (other than ours) to the
    zram devices they define. ``blocking`` items fight the settings; the
    others are worth knowing.
    """
    found = []
    if services.get('ksmtuned.service') == 'active':
        found.append({'kind': 'ksmtuned', 'blocking': True,
                      'message': 'ksmtuned.service is running: it rewrites /sys/kernel/mm/ksm/run, '
                                 'pages_to_scan and sleep_millisecs by its own rules; stop and disable it'})
    if services.get('zramswap.service') == 'active':
        found.append({'kind': 'zram', 'blocking': True,
                      'message': 'zramswap.service (zram-tools) is running and sets up its own zram swap'})
    if tuned and services.get('tuned.service') == 'active':
        if tuned.get('thp') == 'never':
            found.append({'kind': 'tuned', 'blocking': True,
                          'message': 'tuned profile "%s" sets transparent hugepages to never' % tuned['profile']})
        if tuned.get('ksm_off'):
            found.append({'kind': 'tuned', 'blocking': True,
                          'message': 'tuned profile "%s" turns KSM off' % tuned['profile']})
    for name in sorted(zram_devices or {}):
        if name != device and (zram_devices[name].get('disksize') or swap_of(swaps, name)):
            found.append({'kind': 'zram', 'blocking': True,
                          'message': 'another zram device /dev/%s is set up (%s)'
                                     % (name, human_size(zram_devices[name].get('disksize') or 0))})
    for path in sorted(generator_configs or {}):
        others = [d for d in generator_configs[path] if d != device]
        if others:
            found.append({'kind': 'zram', 'blocking': True,
                          'message': '%s defines zram devices %s besides /dev/%s'
                                     % (path, ', '.join(sorted(others)), device)})
    for entry in swaps or []:
        if entry['device'] == '/dev/' + str(device):
            continue
        blocking = wanted_priority is not None and entry['priority'] >= wanted_priority
        found.append({'kind': 'swap', 'blocking': blocking,
                      'message': 'another swap area %s (%s, priority %d)%s'
                                 % (entry['device'], human_size(entry['size_bytes']), entry['priority'],
                                    ' is used before or alongside zram' if blocking
                                    else ' is used only after zram is full')})
    return found


# ---------------------------------------------------------------------------
# Snapshot and restore

def snapshot_live(live):
    """The part of the live state a snapshot keeps (no effect counters)."""
    ksm = dict((k, v) for k, v in (live.get('ksm') or {}).items() if k in KSM_KNOBS)
    devices = {}
    for name, dev in ((live.get('zram') or {}).get('devices') or {}).items():
        devices[name] = {'disksize': dev.get('disksize') or 0, 'algorithm': dev.get('algorithm')}
    return {
        'thp': dict(live.get('thp') or {}),
        'ksm': ksm,
        'sysctl': dict(live.get('sysctl') or {}),
        'zram': {'loaded': bool((live.get('zram') or {}).get('loaded')), 'devices': devices},
        'swaps': [dict(s) for s in live.get('swaps') or []],
    }


def validate_snapshot(data, what='snapshot'):
    """Raise ``OversubError`` unless ``data`` is a snapshot this module wrote."""
    if not isinstance(data, dict) or data.get('format') != SNAPSHOT_FORMAT:
        raise OversubError('%s: not a memory_oversub snapshot (format %s expected)' % (what, SNAPSHOT_FORMAT))
    for key in ('live', 'files'):
        if not isinstance(data.get(key), dict):
            raise OversubError('%s: "%s" is missing' % (what, key))
    return data


def restore_writes(snap_live, live):
    """Live value writes that bring THP, KSM and sysctls back to a snapshot.

    Returns ``(writes, held)`` with writes as ``[(item name, value)]`` in
    apply order.
    """
    writes = []
    for knob in THP_KNOBS:
        value = (snap_live.get('thp') or {}).get(knob)
        if value is not None and (live.get('thp') or {}).get(knob) != value:
            writes.append(('thp.' + knob, value))
    ksm, held = ksm_writes(dict((k, v) for k, v in (snap_live.get('ksm') or {}).items() if v is not None),
                           live.get('ksm') or {})
    writes += [('ksm.' + k, v) for k, v in ksm]
    for key in sorted(snap_live.get('sysctl') or {}):
        value = snap_live['sysctl'][key]
        if value is not None and (live.get('sysctl') or {}).get(key) != value:
            writes.append(('sysctl.' + key, value))
    return writes, held


def restore_items(snap_live, live, device):
    """Per-item comparison of the live state against a snapshot (after a restore)."""
    wanted = []
    for knob in THP_KNOBS:
        if (snap_live.get('thp') or {}).get(knob) is not None:
            wanted.append(('thp.' + knob, snap_live['thp'][knob]))
    for knob in KSM_KNOBS:
        if (snap_live.get('ksm') or {}).get(knob) is not None:
            wanted.append(('ksm.' + knob, snap_live['ksm'][knob]))
    for key in sorted(snap_live.get('sysctl') or {}):
        if snap_live['sysctl'][key] is not None:
            wanted.append(('sysctl.' + key, snap_live['sysctl'][key]))
    was = zram_live(snap_live, device)
    wanted.append(('zram.swap', was['swap']))
    if was['swap']:
        wanted += [('zram.size', was['size']), ('zram.algorithm', was['algorithm']),
                   ('zram.priority', was['priority'])]
    return compare(wanted, flat_live(live, device))


# ---------------------------------------------------------------------------
# Verdict and report

def verdict(items, files_present, snapshot_present=False):
    """``(verdict, drifted item names)``: applied, stock or drifted."""
    bad = [i['name'] for i in items if not i['ok']]
    if items and not bad:
        return 'applied', []
    if not files_present and not snapshot_present:
        return 'stock', bad
    return 'drifted', bad


def _show(name, value):
    if value is None:
        return '-'
    if name == 'zram.size':
        return format_size(value) if value else '0'
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return str(value)


def format_report(host, verdict_name, drifted, items, eff, conflicts=(), messages=()):
    """Readable status lines: the verdict, intended against live, the effect figures."""
    lines = ['%s: memory oversubscription %s%s'
             % (host, verdict_name, (' (' + ', '.join(drifted) + ')') if drifted else '')]
    if items:
        width = max(len(i['name']) for i in items)
        lines.append('  %-*s  %-12s %-12s' % (width, 'item', 'intended', 'live'))
        for item in items:
            lines.append('  %-*s  %-12s %-12s %s'
                         % (width, item['name'], _show(item['name'], item['wanted']),
                            _show(item['name'], item['live']), 'ok' if item['ok'] else 'DRIFT'))
    ksm = eff['ksm']
    lines.append('  KSM: run %s, %d pages shared, %d sharing, %s saved, %d full scans'
                 % (ksm['run'], ksm['pages_shared'], ksm['pages_sharing'], ksm['saved'], ksm['full_scans']))
    for dev in eff['zram']:
        lines.append('  zram /dev/%s: %s stored in %s compressed (%s used), ratio %s'
                     % (dev['device'], dev['orig_data'], dev['compr_data'], dev['mem_used'],
                        dev['ratio'] if dev['ratio'] is not None else '-'))
    swap = eff['swap']
    areas = ''.join('; %s %s/%s prio %d' % (s['device'], human_size(s['used_bytes']),
                                            human_size(s['size_bytes']), s['priority'])
                    for s in swap['devices'])
    lines.append('  swap: %s of %s in use%s' % (swap['used'], swap['total'], areas))
    for conflict in conflicts:
        lines.append('  %s: %s' % ('conflict' if conflict['blocking'] else 'note', conflict['message']))
    for message in messages:
        lines.append('  note: %s' % message)
    return lines
