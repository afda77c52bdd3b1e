# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host foundation: the host CPU reserve of the systemd manager, and its status.

Pure functions from data to data, used by the ``host_cpu_reserve`` module
and the ``foundation_slice_units`` filter:

* the text of every file the foundation owns (the manager drop-in with
  ``CPUAffinity=host_reserved``, the boot unit that re-applies PID 1's
  affinity after the cgroup setup, the target drop-in that pulls that unit
  in, the GRUB defaults drop-in and the irqbalance line);
* the plan of what to write, remove and run for ``state=present`` and
  ``state=restored`` (built on ``_snapshot``'s restore plans);
* one status item per thing the foundation manages, judged on what is
  effective (PID 1's ``Cpus_allowed_list``, the slices' cgroup files) and
  not on runtime-only properties; ``_status.verdict`` makes the verdict.

Python 3.8 compatible, no Ansible imports.
"""

from __future__ import annotations

import base64
import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._snapshot import (
    dir_restore_plan,
    file_content,
    file_restore_plan,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import verdict

LAYER = 'host_resource_management'

MANAGER_DROPIN = '/etc/systemd/system.conf.d/90-kvmlab-host-resource-management.conf'
BOOT_UNIT_NAME = 'kvmlab-host-cpu-reserve.service'
BOOT_UNIT_DIR = '/etc/systemd/system'
BOOT_TARGET = 'multi-user.target'
BOOT_WANTS_NAME = '90-kvmlab-host-cpu-reserve.conf'
GRUB_DROPIN = '/etc/default/grub.d/90-kvmlab-host-resource-management.cfg'
IRQBALANCE_CONFIG = '/etc/default/irqbalance'
IRQBALANCE_KEY = 'IRQBALANCE_BANNED_CPULIST'
DEFAULT_HEADER = ('Ansible managed (kvmlab.host_resources.host_cpu_reserve): '
                  'local edits are overwritten')

#: What a tier slice's CPUWeight reads as when nobody set it: systemd's
#: default (empty) or the kernel's default weight.
STOCK_WEIGHTS = ('', '100')

#: Units the boot unit is ordered after when they are part of the boot: the
#: ones that set up cgroups with the cpuset controller (systemd-machined,
#: libvirt's daemons), so that their setup cannot reset PID 1 afterwards.
BOOT_AFTER = ('basic.target', 'systemd-machined.service', 'libvirtd.service', 'virtqemud.service')

_ENV_LINE_RE = r'^\s*#?\s*%s='


class FoundationError(ValueError):
    """Parameters or host data the foundation cannot work with; the message says which."""


# ---------------------------------------------------------------------------
# arguments

def cpus_of(text, what, online=None, required=True):
    """A canonical cpulist for ``text``; checks it names CPUs and only online ones."""
    if text is None or str(text).strip() == '':
        if required:
            raise FoundationError('%s is required: give a cpulist such as "0-1,4-5"' % what)
        return None
    try:
        cpus = parse_cpulist(text, what)
    except CpuListError as exc:
        raise FoundationError(str(exc))
    if not cpus:
        raise FoundationError('%s "%s" names no CPU' % (what, text))
    if online is not None and cpus - set(online):
        raise FoundationError('%s "%s" names CPUs that are not online: %s (online: %s)'
                              % (what, text, format_cpulist(cpus - set(online)), format_cpulist(online)))
    return format_cpulist(cpus)


def slice_units(tiers, host_slices=(), host_reserved=None):
    """The units ``systemd_slice_weight`` gets for the foundation: the tiers' weighted
    slices, then the host slices confined to ``host_reserved``.

    ``tiers`` maps a tier name to a dict with ``slice`` and ``cpu_weight``
    (and optionally ``intended_class``), as ``kvmlab_tiers`` does.
    """
    if not isinstance(tiers, dict) or not tiers:
        raise FoundationError('tiers must map each tier name to a dict with slice and cpu_weight, got %r'
                              % (tiers,))
    units = []
    seen = set()
    for name, tier in tiers.items():
        if not isinstance(tier, dict) or not tier.get('slice') or tier.get('cpu_weight') is None:
            raise FoundationError('tier %s must be a dict with slice and cpu_weight, got %r' % (name, tier))
        try:
            weight = int(tier['cpu_weight'])
        except (TypeError, ValueError):
            raise FoundationError('tier %s: cpu_weight %r is not an integer' % (name, tier['cpu_weight']))
        if tier['slice'] in seen:
            raise FoundationError('tier %s: slice %s is used by another tier' % (name, tier['slice']))
        seen.add(tier['slice'])
        units.append({'name': tier['slice'], 'cpu_weight': weight,
                      'description': 'kvmlab %s performance domain (%s)'
                                     % (name, tier.get('intended_class') or name)})
    if host_slices:
        if not host_reserved:
            raise FoundationError('host slices need host_reserved')
        for name in host_slices:
            if name in seen:
                raise FoundationError('%s is both a tier slice and a host slice' % name)
            seen.add(name)
            units.append({'name': name, 'allowed_cpus': host_reserved})
    return units


# ---------------------------------------------------------------------------
# file texts

def _comment(header):
    return ['# ' + line if line.strip() else '#' for line in (header or '').splitlines()]


def manager_dropin_text(host_reserved, default_cpu_accounting=True, header=DEFAULT_HEADER):
    """The systemd manager drop-in: host services and PID 1 on ``host_reserved``."""
    lines = _comment(header)
    lines.append('# Host foundation of the shared execution pool: PID 1 and new services run on host_reserved.')
    lines.append('[Manager]')
    if default_cpu_accounting:
        lines.append('DefaultCPUAccounting=yes')
    lines.append('CPUAffinity=%s' % host_reserved)
    return '\n'.join(lines) + '\n'


def boot_unit_text(host_reserved, taskset, want_units=(), header=DEFAULT_HEADER):
    """A oneshot unit that gives PID 1 ``host_reserved`` again once the cgroups are set up.

    With cgroup v2, enabling the cpuset controller resets the affinity of
    the processes in the cgroups concerned to all CPUs (systemd issue 23748),
    PID 1 included, so the manager's ``CPUAffinity=`` from boot is lost.
    ``want_units`` (the tier slices) are started with it, so their cgroups
    and weights exist from boot on.
    """
    lines = _comment(header)
    lines.append('# Re-applies the manager CPUAffinity to PID 1 after the cpuset controller reset it')
    lines.append('# (https://github.com/systemd/systemd/issues/23748).')
    lines.append('[Unit]')
    lines.append('Description=Host CPU reserve for PID 1 (kvmlab.host_resources)')
    lines.append('After=%s' % ' '.join(BOOT_AFTER))
    if want_units:
        lines.append('Wants=%s' % ' '.join(want_units))
        lines.append('After=%s' % ' '.join(want_units))
    lines.append('')
    lines.append('[Service]')
    lines.append('Type=oneshot')
    lines.append('RemainAfterExit=yes')
    lines.append('ExecStart=%s --all-tasks --cpu-list --pid %s 1' % (taskset, host_reserved))
    return '\n'.join(lines) + '\n'


def boot_wants_text(unit_name=BOOT_UNIT_NAME, header=DEFAULT_HEADER):
    """A target drop-in that pulls the boot unit in (no enablement symlinks to track)."""
    lines = _comment(header)
    lines.append('[Unit]')
    lines.append('Wants=%s' % unit_name)
    return '\n'.join(lines) + '\n'


def grub_dropin_text(host_reserved, host_housekeeping, header=DEFAULT_HEADER):
    """GRUB defaults drop-in adding systemd.cpu_affinity= and irqaffinity= (next boot)."""
    lines = _comment(header)
    lines.append('# Early-boot host isolation for the shared execution pool (opt-in).')
    lines.append('GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} systemd.cpu_affinity=%s irqaffinity=%s"'
                 % (host_reserved, host_housekeeping))
    return '\n'.join(lines) + '\n'


def kernel_args_wanted(host_reserved, host_housekeeping):
    return ['systemd.cpu_affinity=%s' % host_reserved, 'irqaffinity=%s' % host_housekeeping]


def env_value(text, key=IRQBALANCE_KEY):
    """The value of the last uncommented ``KEY=value`` line (quotes removed), or None."""
    found = None
    for line in (text or '').splitlines():
        stripped = line.strip()
        if stripped.startswith(key + '='):
            found = stripped[len(key) + 1:].strip().strip('"\'')
    return found


def set_env_line(text, value, key=IRQBALANCE_KEY):
    """``text`` with the last (possibly commented) ``KEY=`` line replaced by ``KEY=value``,
    or the line appended; as ansible.builtin.lineinfile with ``regexp`` does."""
    lines = (text or '').splitlines()
    pattern = re.compile(_ENV_LINE_RE % re.escape(key))
    wanted = '%s=%s' % (key, value)
    for index in range(len(lines) - 1, -1, -1):
        if pattern.match(lines[index]):
            lines[index] = wanted
            break
    else:
        lines.append(wanted)
    return '\n'.join(lines) + '\n'


def drop_env_line(text, key=IRQBALANCE_KEY):
    """``text`` without its uncommented ``KEY=`` lines."""
    kept = [line for line in (text or '').splitlines() if not line.strip().startswith(key + '=')]
    return '\n'.join(kept) + '\n' if kept else ''


# ---------------------------------------------------------------------------
# paths and plans

def boot_paths(unit_dir=BOOT_UNIT_DIR, target=BOOT_TARGET, unit_name=BOOT_UNIT_NAME):
    """``(unit file, target drop-in)`` of the boot unit."""
    unit_dir = unit_dir.rstrip('/') or '/'
    return ('%s/%s' % (unit_dir, unit_name), '%s/%s.d/%s' % (unit_dir, target, BOOT_WANTS_NAME))


def _dirname(path):
    return path.rsplit('/', 1)[0] or '/'


def snapshot_dirs(paths, snapshot_path=None):
    """The directories apply may create: each file's directory, and the snapshot's
    directory and its parent (``save`` creates both)."""
    dirs = []
    for path in paths:
        directory = _dirname(path)
        if directory not in dirs:
            dirs.append(directory)
    if snapshot_path:
        directory = _dirname(snapshot_path)
        for candidate in (directory, _dirname(directory)):
            if candidate not in dirs and candidate != '/':
                dirs.append(candidate)
    return dirs


def file_plan(wanted, current):
    """What to do with each managed file: ``wanted`` maps path to text, ``current``
    maps path to text or None (missing). Returns a list of
    ``{path, action: write|keep, before, after}`` in the order of ``wanted``."""
    plan = []
    for path, text in wanted.items():
        before = current.get(path)
        plan.append({'path': path, 'action': 'keep' if before == text else 'write',
                     'before': before, 'after': text})
    return plan


def apply_actions(plan, pid1_now, host_reserved, systemd_paths, grub_path=None, irqbalance_path=None):
    """The commands ``state=present`` runs after writing files.

    ``daemon-reload`` when a systemd file changes or PID 1 is not on
    ``host_reserved`` (the reload applies ``CPUAffinity=``); the GRUB update
    when the GRUB drop-in changes; an irqbalance restart when its file changes.
    """
    written = set(item['path'] for item in plan if item['action'] != 'keep')
    actions = []
    if written & set(systemd_paths) or pid1_now != host_reserved:
        actions.append('daemon-reload')
    if grub_path and grub_path in written:
        actions.append('update-grub')
    if irqbalance_path and irqbalance_path in written:
        actions.append('restart-irqbalance')
    return actions


def restore_plan(snapshot, current_files, current_dirs, irqbalance_path=None):
    """The file and directory actions that bring the snapshot back.

    ``_snapshot.file_restore_plan`` does the work, with one exception kept
    from release 1: an irqbalance file that did not exist at the snapshot
    but exists now was installed by its package meanwhile, so only our line
    leaves it instead of the whole file.
    """
    files = file_restore_plan(snapshot, current_files)
    if irqbalance_path:
        record = (snapshot.get('files') or {}).get(irqbalance_path)
        for index, action in enumerate(files):
            if action['path'] != irqbalance_path or action['action'] != 'remove' or not record:
                continue
            now = file_content((current_files or {}).get(irqbalance_path)) or b''
            text = now.decode('utf-8', 'replace')
            kept = drop_env_line(text)
            if kept.strip():
                have = current_files[irqbalance_path]
                files[index] = ({'action': 'keep', 'path': irqbalance_path} if kept == text else
                                {'action': 'write', 'path': irqbalance_path,
                                 'content_b64': base64.b64encode(kept.encode('utf-8')).decode('ascii'),
                                 'mode': have.get('mode'), 'owner': have.get('owner'),
                                 'group': have.get('group'), 'changed': ['content']})
    dirs = dir_restore_plan(snapshot, current_dirs)
    return files, dirs


def restore_actions(file_actions, systemd_paths, grub_path=None, irqbalance_path=None):
    """Commands after restoring files: daemon-reload, update-grub, irqbalance restart."""
    touched = set(a['path'] for a in file_actions if a['action'] != 'keep')
    actions = []
    if touched & set(systemd_paths):
        actions.append('daemon-reload')
    if grub_path and grub_path in touched:
        actions.append('update-grub')
    if irqbalance_path and irqbalance_path in touched:
        actions.append('restart-irqbalance')
    return actions


def pid1_restore_target(values, online):
    """PID 1's affinity from the snapshot, limited to CPUs online now.

    Raises ``FoundationError`` when the snapshot has none or none of its CPUs is online.
    """
    recorded = (values or {}).get('pid1_cpus_allowed')
    if not recorded:
        raise FoundationError('the snapshot records no pid1_cpus_allowed')
    try:
        cpus = parse_cpulist(recorded, 'snapshot pid1_cpus_allowed')
    except CpuListError as exc:
        raise FoundationError(str(exc))
    usable = cpus & set(online)
    if not usable:
        raise FoundationError('none of the snapshot\'s PID 1 CPUs %s is online now (online: %s)'
                              % (recorded, format_cpulist(online)))
    return format_cpulist(usable)


def legacy_slices(snapshot):
    """Slices a release 1 snapshot lists (the role made them): they are removed by name."""
    if not snapshot.get('migrated_from'):
        return []
    names = (snapshot.get('values') or {}).get('slices') or []
    return [name for name in names if isinstance(name, str)]


# ---------------------------------------------------------------------------
# status items

def _item(name, intended, live, state):
    return {'name': name, 'intended': intended, 'live': live, 'state': state}


def manager_dropin_item(path, current, wanted, host_reserved):
    """applied: the drop-in is as apply writes it; stock: absent; drifted: it differs."""
    intended = '%s with CPUAffinity=%s' % (path, host_reserved)
    if current is None:
        return _item('manager drop-in', intended, 'absent', 'stock')
    if current == wanted:
        return _item('manager drop-in', intended, 'present', 'applied')
    return _item('manager drop-in', intended, 'present, differs', 'drifted')


def pid1_item(pid1, host_reserved, online):
    """PID 1's live ``Cpus_allowed_list``: applied on host_reserved, stock on every online CPU."""
    if pid1 == host_reserved:
        state = 'applied'
    elif pid1 == online:
        state = 'stock'
    else:
        state = 'drifted'
    return _item('PID 1 affinity', host_reserved, pid1, state)


def boot_unit_item(managed, unit_path, unit_text, unit_wanted, wants_path, wants_text, wants_wanted,
                   active=None):
    """The boot unit that keeps PID 1 on host_reserved across reboots."""
    name = 'boot re-apply unit'
    present = [p for p, t in ((unit_path, unit_text), (wants_path, wants_text)) if t is not None]
    live = ('absent' if not present else
            'present' if len(present) == 2 else 'only %s' % ', '.join(present))
    if active is not None and present:
        live += ' (%s)' % ('ran this boot' if active else 'not run this boot')
    if not managed:
        return _item(name, 'not managed (boot_unit off)', live, 'info')
    intended = '%s pulled in by %s' % (unit_path, wants_path)
    if not present:
        return _item(name, intended, live, 'stock')
    if unit_text == unit_wanted and wants_text == wants_wanted:
        return _item(name, intended, live, 'applied')
    if len(present) == 2:
        live += ', differs'
    return _item(name, intended, live, 'drifted')


def kernel_args_item(managed, cmdline, host_reserved, host_housekeeping, dropin_present=None):
    """The kernel arguments on the running kernel's command line (they need a reboot)."""
    want = kernel_args_wanted(host_reserved, host_housekeeping)
    have = (cmdline or '').split()
    found = dict((token.split('=', 1)[0], token.split('=', 1)[1])
                 for token in have if '=' in token)
    live = 'systemd.cpu_affinity=%s irqaffinity=%s' % (found.get('systemd.cpu_affinity') or '(none)',
                                                       found.get('irqaffinity') or '(none)')
    if dropin_present and not all(arg in have for arg in want):
        live += ' (GRUB drop-in written: reboot pending)'
    if not managed:
        return _item('kernel arguments', 'not managed (opt-in off)', live, 'info')
    if all(arg in have for arg in want):
        state = 'applied'
    elif 'systemd.cpu_affinity' not in found and 'irqaffinity' not in found:
        state = 'stock'
    else:
        state = 'drifted'
    return _item('kernel arguments', ' '.join(want), live, state)


def irqbalance_item(managed, text, guest_domain, path=IRQBALANCE_CONFIG):
    """IRQBALANCE_BANNED_CPULIST in the irqbalance file."""
    value = env_value(text)
    live = '(file absent)' if text is None else ('%s=%s' % (IRQBALANCE_KEY, value) if value is not None
                                                 else 'no %s' % IRQBALANCE_KEY)
    if not managed:
        return _item('irqbalance', 'not managed (opt-in off)', live, 'info')
    intended = '%s=%s in %s' % (IRQBALANCE_KEY, guest_domain, path)
    if value is None:
        return _item('irqbalance', intended, live, 'stock')
    try:
        same = format_cpulist(parse_cpulist(value)) == guest_domain
    except CpuListError:
        same = False
    return _item('irqbalance', intended, live, 'applied' if same else 'drifted')


def runtime_overrides(dropins, ours=None):
    """The drop-ins of a unit that override it at runtime, except ``ours`` (the weight budget drop-in).

    ``dropins``: systemd's ``DropInPaths``. A runtime override is a drop-in
    of ``systemctl set-property`` (a ``system.control`` directory, with or
    without ``--runtime``) or any other drop-in under ``/run``.
    """
    return [path for path in dropins or []
            if path != ours and ('/system.control/' in path or path.startswith('/run/'))]


def tier_slice_item(name, cpu_weight, reading):
    """A tier slice, judged on its definition and on the kernel's cpu.weight.

    ``reading``: ``defined`` (the module's unit file or drop-in exists),
    ``current`` (it holds what apply writes), ``properties`` (systemd's live
    values), ``active``, ``cgroup`` (``read_cgroup_values``) and optionally
    ``dropins`` (systemd's ``DropInPaths``) and ``budget`` (None, or
    ``{'path', 'weight'}`` when the shared execution pool's weight budget
    drop-in exists; ``weight`` None when that file is not ours or unusable).

    * stock: no definition of ours and the weight is systemd's or the
      kernel's default (``STOCK_WEIGHTS``);
    * applied: our definition as apply writes it, systemd reports the weight,
      and the cgroup's cpu.weight carries it (an inactive slice has no cgroup
      and is judged on its definition and systemd's value); the weight is the
      weight budget's share instead of the tier weight while the budget
      drop-in of the shared execution pool is there (some of the tier's
      running guests still wait in machine.slice for their move);
    * drifted: anything else, a runtime override for example (any other
      drop-in under ``/run`` or of ``systemctl set-property``).
    """
    props = reading.get('properties') or {}
    cgroup = reading.get('cgroup') or {}
    weight = props.get('CPUWeight', '')
    kernel = cgroup.get('cpu_weight')
    active = bool(reading.get('active'))
    budget = reading.get('budget') or {}
    share = budget.get('weight')
    overrides = runtime_overrides(reading.get('dropins'), budget.get('path') if share is not None else None)
    if not reading.get('defined'):
        live = 'no unit file of ours, systemd %s' % (weight or 'default')
        stock = weight in STOCK_WEIGHTS and kernel in (None, 100)
        return _item(name, 'CPUWeight %d' % cpu_weight, live, 'stock' if stock else 'drifted')
    if active:
        live = 'systemd %s, cgroup cpu.weight %s' % (weight or 'default', kernel if kernel is not None else 'none')
    else:
        live = 'systemd %s, slice inactive (no cgroup)' % (weight or 'default')
    if not reading.get('current'):
        live += ', unit file differs'
    if overrides:
        live += ', runtime override %s' % ', '.join(overrides)
    wanted = cpu_weight if share is None else share
    ok = (reading.get('current') and not overrides and weight == str(wanted)
          and (not active or kernel == wanted))
    if share is not None:
        note = 'weight budget %d of %d while guests wait for their move' % (share, cpu_weight)
        live += ', applied (%s)' % note if ok else ', %s (%s)' % (note, budget.get('path'))
    elif budget:
        live += ', %s is not a weight budget drop-in of ours' % budget.get('path')
        ok = False
    return _item(name, 'CPUWeight %d' % cpu_weight, live, 'applied' if ok else 'drifted')


def host_slice_item(name, host_reserved, reading, online=None):
    """A host slice, judged on its definition and the effective cpuset of its cgroup.

    * stock: no drop-in of ours, systemd's AllowedCPUs empty and the cgroup's
      own cpuset.cpus empty (inherited) or not there; or, with ``online``
      given, cpuset.cpus and its effective set both every online CPU: a
      kernel that refuses to empty cpuset.cpus of a populated cgroup (ENOSPC,
      Linux 6.1) keeps the value rollback could only widen, which confines
      nothing, until the cgroup is made again at the next boot;
    * applied: our drop-in as apply writes it, systemd reports host_reserved,
      and cpuset.cpus.effective is host_reserved;
    * drifted: anything else, a cpuset.cpus left behind for example.
    """
    props = reading.get('properties') or {}
    cgroup = reading.get('cgroup') or {}
    allowed = props.get('AllowedCPUs', '')
    own = cgroup.get('cpuset_cpus')
    effective = cgroup.get('cpuset_cpus_effective')
    live = 'systemd %s, cgroup cpuset.cpus %s, effective %s' % (
        allowed or 'unrestricted', own if own else ('unrestricted' if own == '' else 'none'),
        effective if effective is not None else 'none')
    intended = 'AllowedCPUs %s' % host_reserved
    if not reading.get('defined'):
        stock = allowed == '' and own in ('', None)
        if allowed == '' and own and online is not None and own == effective == online:
            stock = True
            live += ' (every online CPU: confines nothing; empty again from the next boot)'
        return _item(name, intended, live, 'stock' if stock else 'drifted')
    if not reading.get('current'):
        live += ', drop-in differs'
    ok = reading.get('current') and allowed == host_reserved and effective == host_reserved
    return _item(name, intended, live, 'applied' if ok else 'drifted')


def status(items, pools=None, snapshot_path=None):
    """The layer's status: verdict, summary, items (and the pools and snapshot, for the report)."""
    result = verdict(items)
    return {
        'verdict': result['verdict'],
        'summary': result['summary'],
        'items': items,
        'pools': dict(pools or {}),
        'snapshot': snapshot_path,
    }
