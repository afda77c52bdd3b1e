# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What would fight the memory settings on a host, and whether swapped-out data fits back into memory."""

from __future__ import annotations

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import swap_of
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import MIB, human_size

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
