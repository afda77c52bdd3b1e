# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a memory_oversub run changes, as pure data.

``plan_present`` turns the wanted settings, the live values and the current
text of the managed files into the live writes, the file changes and the
zram decisions (rebuild, teardown) of an apply. ``plan_restore`` does the
same for a rollback to the ``values`` of a snapshot (the files of a snapshot
are planned by ``_snapshot.file_restore_plan``). ``snapshot_values`` is what
a snapshot records of the live state. Refusals raise ``OversubError`` with
the reason; nothing here reads the host.
"""

from __future__ import annotations

import os

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import (
    KSM_KNOBS,
    THP_KNOBS,
    OversubError,
    compare,
    flat_live,
    flat_wanted,
    ksm_writes,
    swap_of,
    zram_live,
    zram_needs_rebuild,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_conflicts import swapoff_fits
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_files import (
    GENERATOR_DROPIN,
    MANAGED_FILES,
    SYSCTL_FILE,
    TMPFILES_FILE,
    UNIT_FILE,
    UNIT_NAME,
    UNIT_WANTS,
    ZRAM_FILES,
    is_managed,
    render_sysctl,
    render_tmpfiles,
    render_unit_wants,
    render_zram_generator,
    render_zram_unit,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import format_size

ZRAM_DOWN = {'zram.swap': False, 'zram.size': 0, 'zram.priority': None}


# ---------------------------------------------------------------------------
# Snapshot values

def snapshot_values(live, generator_installed=None):
    """The part of the live state a snapshot keeps under ``values`` (no effect counters)."""
    ksm = dict((k, v) for k, v in (live.get('ksm') or {}).items() if k in KSM_KNOBS)
    devices = {}
    for name, dev in ((live.get('zram') or {}).get('devices') or {}).items():
        devices[name] = {'disksize': dev.get('disksize') or 0, 'algorithm': dev.get('algorithm')}
    values = {
        'thp': dict(live.get('thp') or {}),
        'ksm': ksm,
        'sysctl': dict(live.get('sysctl') or {}),
        'zram': {'loaded': bool((live.get('zram') or {}).get('loaded')), 'devices': devices},
        'swaps': [dict(s) for s in live.get('swaps') or []],
    }
    if generator_installed is not None:
        values['zram_generator_installed'] = bool(generator_installed)
    return values


def check_values(values, path):
    """Raise ``OversubError("<path>: ...")`` unless ``values`` holds what a memory restore needs."""
    for key in ('thp', 'ksm', 'sysctl', 'zram'):
        if not isinstance(values.get(key), dict):
            raise OversubError('%s: values.%s is missing from the memory snapshot' % (path, key))
    if not isinstance(values['zram'].get('devices', {}), dict):
        raise OversubError('%s: values.zram.devices must be a mapping' % path)
    if not isinstance(values.get('swaps', []), list):
        raise OversubError('%s: values.swaps must be a list' % path)
    return values


# ---------------------------------------------------------------------------
# Files

def plan_files(wanted_contents, current, root='/', remove_foreign=False):
    """``(plan, status)`` for ``[(rel, content or None)]`` against ``current`` (abs path -> text or None).

    ``plan`` is ``[(abs path, 'written'|'removed', old, new)]`` for files that
    change; ``status`` maps every path to written, removed, unchanged or
    absent. A file that should not exist is removed only when it carries the
    module's header, unless ``remove_foreign``.
    """
    plan = []
    status = {}
    for rel, content in wanted_contents:
        path = os.path.join(root, rel)
        old = current.get(path)
        if content is None:
            if old is not None and (remove_foreign or is_managed(old)):
                plan.append((path, 'removed', old, None))
                status[path] = 'removed'
            else:
                status.setdefault(path, 'absent' if old is None else 'unchanged')
        elif old != content:
            plan.append((path, 'written', old, content))
            status[path] = 'written'
        else:
            status[path] = 'unchanged'
    return plan, status


def file_diffs(plan):
    """Diff entries (before/after text) for ``plan_files`` actions."""
    return [{'before_header': path if old is not None else '%s (absent)' % path,
             'after_header': path if new is not None else '%s (absent)' % path,
             'before': old or '', 'after': new or ''} for path, dummy, old, new in plan]


def _show(name, value):
    if name == 'zram.size' and isinstance(value, int):
        return format_size(value) if value else '0'
    return '-' if value is None else value


def values_diff(before_flat, after_flat, names):
    """One diff entry of the live values ``names`` (None when nothing differs)."""
    if not names:
        return None
    before = ''.join('%s: %s\n' % (n, _show(n, before_flat.get(n))) for n in names)
    after = ''.join('%s: %s\n' % (n, _show(n, after_flat.get(n))) for n in names)
    if before == after:
        return None
    return {'before_header': 'live values', 'after_header': 'live values', 'before': before, 'after': after}


def swapoff_check(live, device):
    """Raise ``OversubError`` when turning the device's swap off would not fit into memory."""
    swap = swap_of(live.get('swaps'), device)
    problem = swapoff_fits(swap['used_bytes'] if swap else 0, live.get('meminfo') or {})
    if problem:
        raise OversubError('refusing to rebuild /dev/%s: %s; free memory (or lower the load) and run again'
                           % (device, problem))


# ---------------------------------------------------------------------------
# Apply

def plan_present(wanted, live, current, device='zram0', backend=None, bins=None, zram_managed=True, root='/'):
    """What ``state=present`` changes.

    ``wanted`` comes from ``normalize_wanted``; ``live`` from the host
    reader; ``current`` maps the absolute path of every managed file to its
    text (None when absent); ``backend`` is ``zram-generator`` or ``unit``
    (when zram is wanted); ``bins`` maps zramctl, mkswap, swapon, swapoff,
    modprobe and udevadm to their paths (unit backend). Returns a dict with
    ``writes`` ([(item, value)] in apply order), ``held``, ``file_plan``
    and ``files`` (as ``plan_files``), ``rebuild``, ``teardown``,
    ``reload`` (systemd must reload its units), ``changes``, ``diff``
    (live values entry or None), ``wanted_items`` and ``warnings``.
    """
    zram = wanted.get('zram')
    ours = dict((rel, is_managed(current.get(os.path.join(root, rel)))) for rel in ZRAM_FILES)
    dev_live = zram_live(live, device)
    contents = []
    warnings = []
    teardown = False
    if zram:
        dev = ((live.get('zram') or {}).get('devices') or {}).get(device)
        if zram.get('algorithm') and dev and dev.get('algorithms') and zram['algorithm'] not in dev['algorithms']:
            warnings.append('zram.algorithm %s is not among the algorithms /dev/%s offers now (%s); '
                            'the kernel may load it on demand' % (zram['algorithm'], device, ' '.join(dev['algorithms'])))
        if backend == 'zram-generator':
            contents += [(GENERATOR_DROPIN, render_zram_generator(zram)), (UNIT_FILE, None), (UNIT_WANTS, None)]
        else:
            contents += [(GENERATOR_DROPIN, None), (UNIT_FILE, render_zram_unit(zram, bins)),
                         (UNIT_WANTS, render_unit_wants(UNIT_NAME))]
    elif zram_managed:
        contents += [(rel, None) for rel in ZRAM_FILES]
        teardown = any(ours.values()) and bool(dev_live['swap'] or dev_live['size'])
    contents += [(TMPFILES_FILE, render_tmpfiles(wanted)), (SYSCTL_FILE, render_sysctl(wanted))]

    switched = False
    if zram:
        other = UNIT_FILE if backend == 'zram-generator' else GENERATOR_DROPIN
        switched = ours[other] and dev_live['swap']
    rebuild = bool(zram) and (zram_needs_rebuild(zram, live, device) or bool(switched))
    if rebuild or teardown:
        swapoff_check(live, device)

    thp_writes = [('thp.' + k, v) for k, v in wanted.get('thp', {}).items() if live['thp'].get(k) != v]
    for name, dummy in thp_writes:
        if live['thp'].get(name[4:]) is None:
            raise OversubError('this kernel has no /sys/kernel/mm/transparent_hugepage/%s: it cannot set %s'
                               % (name[4:], name))
    ksm_w, held = ksm_writes(wanted.get('ksm', {}), live.get('ksm') or {})
    sysctl_writes = [('sysctl.' + k, v) for k, v in sorted(wanted.get('sysctl', {}).items())
                     if (live.get('sysctl') or {}).get(k) != v]
    writes = thp_writes + [('ksm.' + k, v) for k, v in ksm_w] + sysctl_writes
    file_plan, files = plan_files(contents, current, root)
    zram_paths = [os.path.join(root, r) for r in ZRAM_FILES]
    zram_files_changed = any(p[0] in zram_paths for p in file_plan)

    changes = [n for n, dummy in writes]
    if rebuild:
        changes.append('zram.rebuild')
    if teardown:
        changes.append('zram.teardown')
    changes += [p[0] for p in file_plan]

    wanted_items = flat_wanted(wanted)
    before_flat = flat_live(live, device)
    after_flat = dict(before_flat)
    after_flat.update(dict(wanted_items))
    for item in held:
        after_flat[item['name']] = before_flat.get(item['name'])
    if teardown:
        after_flat.update(ZRAM_DOWN)
    names = [n for n, dummy in wanted_items] + (['zram.swap', 'zram.size'] if teardown else [])
    return {
        'writes': writes,
        'held': held,
        'file_plan': file_plan,
        'files': files,
        'rebuild': rebuild,
        'teardown': teardown,
        'reload': zram_files_changed or rebuild,
        'changes': changes,
        'diff': values_diff(before_flat, after_flat, names),
        'wanted_items': wanted_items,
        'warnings': warnings,
    }


# ---------------------------------------------------------------------------
# Restore

def restore_writes(values, live):
    """Live value writes that bring THP, KSM and sysctls back to a snapshot's ``values``.

    Returns ``(writes, held)`` with writes as ``[(item name, value)]`` in
    apply order.
    """
    writes = []
    for knob in THP_KNOBS:
        value = (values.get('thp') or {}).get(knob)
        if value is not None and (live.get('thp') or {}).get(knob) != value:
            writes.append(('thp.' + knob, value))
    ksm, held = ksm_writes(dict((k, v) for k, v in (values.get('ksm') or {}).items() if v is not None),
                           live.get('ksm') or {})
    writes += [('ksm.' + k, v) for k, v in ksm]
    for key in sorted(values.get('sysctl') or {}):
        value = values['sysctl'][key]
        if value is not None and (live.get('sysctl') or {}).get(key) != value:
            writes.append(('sysctl.' + key, value))
    return writes, held


def restore_items(values, live, device):
    """Per-item comparison of the live state against a snapshot's ``values``."""
    wanted = []
    for knob in THP_KNOBS:
        if (values.get('thp') or {}).get(knob) is not None:
            wanted.append(('thp.' + knob, values['thp'][knob]))
    for knob in KSM_KNOBS:
        if (values.get('ksm') or {}).get(knob) is not None:
            wanted.append(('ksm.' + knob, values['ksm'][knob]))
    for key in sorted(values.get('sysctl') or {}):
        if values['sysctl'][key] is not None:
            wanted.append(('sysctl.' + key, values['sysctl'][key]))
    was = zram_live(values, device)
    wanted.append(('zram.swap', was['swap']))
    if was['swap']:
        wanted += [('zram.size', was['size']), ('zram.algorithm', was['algorithm']),
                   ('zram.priority', was['priority'])]
    return compare(wanted, flat_live(live, device))


def plan_restore(values, live, device='zram0'):
    """What ``state=absent`` does to the live state to bring a snapshot's ``values`` back.

    Returns ``writes``, ``held``, ``down`` (tear the device down), ``up``
    (set it up again as it was: ``was`` gives size, algorithm, priority),
    ``unload`` (unload the zram kernel module, which was not loaded),
    ``changes`` and ``diff`` (live values entry or None).
    """
    dev_live = zram_live(live, device)
    was = zram_live(values, device)
    same = (was['swap'] == dev_live['swap'] and (not was['swap'] or (
        was['size'] == dev_live['size'] and was['priority'] == dev_live['priority']
        and (not was['algorithm'] or was['algorithm'] == dev_live['algorithm']))))
    down = not same and bool(dev_live['swap'] or dev_live['size'])
    up = not same and was['swap']
    others = [d for n, d in ((live.get('zram') or {}).get('devices') or {}).items() if n != device]
    unload = (not (values.get('zram') or {}).get('loaded')) and bool((live.get('zram') or {}).get('loaded')) \
        and not any(d.get('disksize') for d in others)
    if down:
        swapoff_check(live, device)
    writes, held = restore_writes(values, live)
    changes = [n for n, dummy in writes]
    if down:
        changes.append('zram.teardown')
    if up:
        changes.append('zram.restore')
    if unload:
        changes.append('zram.unload')
    names = [n for n, dummy in writes]
    before_flat = flat_live(live, device)
    after_flat = dict(before_flat)
    after_flat.update(dict(writes))
    if up:
        names += ['zram.swap', 'zram.size', 'zram.algorithm', 'zram.priority']
        after_flat.update(dict(('zram.' + k, v) for k, v in was.items()))
    elif down:
        names += ['zram.swap', 'zram.size', 'zram.priority']
        after_flat.update(ZRAM_DOWN)
    return {
        'writes': writes,
        'held': held,
        'down': down,
        'up': bool(up),
        'was': was,
        'unload': unload,
        'changes': changes,
        'diff': values_diff(before_flat, after_flat, names),
    }


def plan_remove_ours(live, current, device='zram0', root='/'):
    """Without a snapshot: remove the files carrying the module's header and tear down the device they defined."""
    file_plan, files = plan_files([(rel, None) for rel in MANAGED_FILES], current, root)
    ours_zram = any(is_managed(current.get(os.path.join(root, r))) for r in ZRAM_FILES)
    dev_live = zram_live(live, device)
    down = ours_zram and bool(dev_live['swap'] or dev_live['size'])
    if down:
        swapoff_check(live, device)
    before_flat = flat_live(live, device)
    after_flat = dict(before_flat)
    names = []
    if down:
        names = ['zram.swap', 'zram.size', 'zram.priority']
        after_flat.update(ZRAM_DOWN)
    return {
        'file_plan': file_plan,
        'files': files,
        'down': down,
        'changes': (['zram.teardown'] if down else []) + [p[0] for p in file_plan],
        'diff': values_diff(before_flat, after_flat, names),
    }
