# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the memory settings achieve: KSM, zram and swap figures, and the readable report."""

from __future__ import annotations

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import PAGE_SIZE
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import format_size, human_size

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
