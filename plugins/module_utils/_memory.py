# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host memory oversubscription settings: zram swap, KSM, THP and vm sysctls.

The wanted settings (validated, zram sized against MemTotal), the flat item
view of wanted and live values, the comparison, the zram rebuild decision,
the KSM write order and the verdict. Pure functions from data to data; the
other concepts live in _memory_sizes (sizes), _memory_kernel (parsers of the
kernel's text), _memory_files (persistent files), _memory_conflicts
(conflicts and swapoff safety), _memory_effect (effect figures and report),
_memory_plan (what a run changes) and _memory_host/_memory_run (the I/O)."""

from __future__ import annotations

import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import SizeError, zram_target

PAGE_SIZE = 4096

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


_SYSCTL_RE = re.compile(r'^vm\.[a-z0-9_-]+$')
DEVICE_RE = re.compile(r'^zram\d+$')


class OversubError(ValueError):
    """Wanted settings or host data that cannot be used; the message says why."""


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
        if not DEVICE_RE.match(device):
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
# Verdict and report


def verdict(items, files_present, snapshot_present=False):
    """``(verdict, drifted item names)``: applied, stock or drifted."""
    bad = [i['name'] for i in items if not i['ok']]
    if items and not bad:
        return 'applied', []
    if not files_present and not snapshot_present:
        return 'stock', bad
    return 'drifted', bad
