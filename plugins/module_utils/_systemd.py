# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd units, CPU properties and cgroup v2 reads: the one home for them.

Pure functions from data to data (parsing ``systemctl show``, rendering unit
text, comparing wanted against live properties, planning what to do for one
unit) plus a few small readers of cgroup v2 files that take the cgroup root as
an argument. Nothing here runs a command; the ``systemd_slice_weight`` module
and the roles' status tasks are the faces.

Property values are compared in systemd's assignment spelling, the text that
follows ``Name=`` in a unit file or in ``systemctl set-property``:

* ``CPUAccounting``: ``yes`` or ``no``;
* ``CPUWeight``: ``1``-``10000``, or ``''`` when not set (systemd's default);
* ``CPUQuota``: a percentage such as ``150%`` or ``33.33%``, or ``''`` for no
  quota;
* ``AllowedCPUs``: a canonical cpulist (``2-11``), or ``''`` for no
  restriction.

The empty string therefore always means "systemd's default", which is also
what ``systemctl set-property --runtime UNIT Name=`` restores.
"""

from __future__ import annotations

import os
import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
    parse_kernel_cpulist,
    parse_systemd_cpulist,
)

WEIGHT_MIN = 1
WEIGHT_MAX = 10000
USEC_PER_SEC = 1000000
UINT64_MAX = (1 << 64) - 1

#: The properties this library manages, in the order they are written.
MANAGED_PROPERTIES = ('CPUAccounting', 'CPUWeight', 'CPUQuota', 'AllowedCPUs')
#: The ones ``state=absent`` resets on live-only units.
RESETTABLE_PROPERTIES = ('CPUWeight', 'CPUQuota', 'AllowedCPUs')

#: What the module asks ``systemctl show`` for (one call for all units).
SHOW_PROPERTIES = (
    'Id', 'LoadState', 'ActiveState', 'SubState', 'Transient', 'FragmentPath',
    'DropInPaths', 'NeedDaemonReload', 'ControlGroup', 'TasksCurrent',
    'CPUAccounting', 'CPUWeight', 'CPUQuotaPerSecUSec', 'AllowedCPUs',
)

#: A line that marks a unit file or drop-in as written by this collection.
MARKER = '# X-Kvmlab-Managed: kvmlab.host_resources.systemd_slice_weight'
DEFAULT_HEADER = ('Ansible managed (kvmlab.host_resources.systemd_slice_weight): '
                  'local edits are overwritten')
DEFAULT_DROPIN = '50-kvmlab.conf'

_ACTIVE_STATES = ('active', 'activating', 'reloading')
_UNIT_CHARS = r'[A-Za-z0-9:_.\\]'
_SLICE_RE = re.compile(r'^%s+(?:-%s+)*\.slice$' % (_UNIT_CHARS, _UNIT_CHARS))
_LIVE_RE = re.compile(r'^[A-Za-z0-9:_.\\@-]+\.(slice|scope|service)$')
_QUOTA_RE = re.compile(r'^(\d+)(?:\.(\d{1,2}))?\s*%?$')
_TIMESPAN_UNITS = {
    'us': 1, 'usec': 1, 'ms': 1000, 'msec': 1000,
    's': USEC_PER_SEC, 'sec': USEC_PER_SEC,
    'min': 60 * USEC_PER_SEC, 'm': 60 * USEC_PER_SEC,
    'h': 3600 * USEC_PER_SEC, 'hr': 3600 * USEC_PER_SEC,
    'd': 86400 * USEC_PER_SEC, 'w': 7 * 86400 * USEC_PER_SEC,
    'M': 2629800 * USEC_PER_SEC, 'y': 31557600 * USEC_PER_SEC,
}
_TIMESPAN_RE = re.compile(r'(\d+(?:\.\d+)?)\s*([A-Za-z]+)')


class SystemdConfigError(ValueError):
    """A wanted configuration that cannot be applied; the message says why."""


# ---------------------------------------------------------------------------
# systemctl show

def show_command(systemctl, units, properties=SHOW_PROPERTIES):
    """Argument list for one ``systemctl show`` covering every unit."""
    return [systemctl, 'show', '--no-pager', '-p', ','.join(properties), '--'] + list(units)


def parse_show(text, units):
    """Split ``systemctl show`` output for several units into one dict each.

    systemctl prints one block of ``Name=value`` lines per unit, in the order
    the units were given, separated by empty lines. Returns a dict keyed by
    the names in ``units``; raises ``SystemdConfigError`` when the number of
    blocks does not match or a block's ``Id`` names another unit.
    """
    units = list(units)
    blocks = []
    current = None
    for line in text.splitlines():
        if not line.strip():
            if current is not None:
                blocks.append(current)
                current = None
            continue
        if current is None:
            current = {}
        key, sep, value = line.partition('=')
        if not sep:
            continue
        current[key.strip()] = value
    if current is not None:
        blocks.append(current)
    if len(blocks) != len(units):
        raise SystemdConfigError('systemctl show returned %d blocks for %d units (%s)'
                                 % (len(blocks), len(units), ', '.join(units)))
    return dict(zip(units, blocks))


def parse_timespan(text):
    """Microseconds in a systemd timespan (``1.500000s``, ``333.300ms``, ``1min 30s``).

    Returns None for ``infinity``, ``[not set]`` and the empty string.
    """
    text = (text or '').strip()
    if text in ('', 'infinity', '[not set]') or text == str(UINT64_MAX):
        return None
    if text.isdigit():
        return int(text)
    total = 0
    pos = 0
    for match in _TIMESPAN_RE.finditer(text):
        if text[pos:match.start()].strip():
            raise SystemdConfigError('cannot parse timespan "%s"' % text)
        unit = match.group(2)
        if unit not in _TIMESPAN_UNITS:
            raise SystemdConfigError('cannot parse timespan "%s" (unit "%s")' % (text, unit))
        total += _scaled(match.group(1), _TIMESPAN_UNITS[unit])
        pos = match.end()
    if pos == 0 or text[pos:].strip():
        raise SystemdConfigError('cannot parse timespan "%s"' % text)
    return total


def _scaled(number, factor):
    whole, _sep, frac = number.partition('.')
    value = int(whole) * factor
    if frac:
        value += int(frac) * factor // (10 ** len(frac))
    return value


def parse_weight(text):
    """CPUWeight as shown by systemd or read from cpu.weight: an int, or None if unset."""
    text = (text or '').strip()
    if text in ('', '[not set]') or text == str(UINT64_MAX) or not text.isdigit():
        return None
    return int(text)


def quota_usec(text, what='cpu_quota'):
    """Per-second quota in microseconds for ``150%``/``150``/``33.33%``; None for ``''``.

    systemd keeps CPUQuota as microseconds per second, one percent being
    10000 us, with at most two decimals.
    """
    if text is None:
        return None
    text = str(text).strip()
    if text in ('', 'infinity'):
        return None
    match = _QUOTA_RE.match(text)
    if not match:
        raise SystemdConfigError('%s: "%s" is not a percentage such as "150%%" or "33.33%%"'
                                 % (what, text))
    hundredths = int(match.group(1)) * 100 + int((match.group(2) or '0').ljust(2, '0'))
    if hundredths == 0:
        raise SystemdConfigError('%s: "%s" must be above 0%% (use "" for no quota)' % (what, text))
    return hundredths * 100


def format_quota(usec):
    """``150%`` / ``33.33%`` for a per-second quota in microseconds; ``''`` for None."""
    if usec is None:
        return ''
    hundredths = int(round(usec / 100.0))
    whole, frac = divmod(hundredths, 100)
    if frac:
        return ('%d.%02d' % (whole, frac)).rstrip('0') + '%'
    return '%d%%' % whole


def live_properties(show):
    """The managed properties of one unit from its ``systemctl show`` block.

    Returns a dict in assignment spelling (see the module docstring).
    """
    cpus = show.get('AllowedCPUs', '').strip()
    try:
        cpus = format_cpulist(parse_systemd_cpulist(cpus, 'AllowedCPUs'))
    except CpuListError:
        pass
    weight = parse_weight(show.get('CPUWeight'))
    return {
        'CPUAccounting': 'yes' if show.get('CPUAccounting', '').strip() == 'yes' else 'no',
        'CPUWeight': '' if weight is None else str(weight),
        'CPUQuota': format_quota(parse_timespan(show.get('CPUQuotaPerSecUSec'))),
        'AllowedCPUs': cpus,
    }


def is_active(show):
    return show.get('ActiveState', '') in _ACTIVE_STATES


def drop_in_paths(show):
    return [path for path in show.get('DropInPaths', '').split() if path]


# ---------------------------------------------------------------------------
# wanted state

def validate_name(name, persistent):
    """Raise ``SystemdConfigError`` unless ``name`` suits the handling asked for.

    ``persistent`` is True, False or None (decide later from the unit).
    """
    if not isinstance(name, str) or not name:
        raise SystemdConfigError('unit name must be a non-empty string')
    if len(name) > 255:
        raise SystemdConfigError('unit name "%s" is longer than 255 characters' % name)
    if name == '-.slice':
        raise SystemdConfigError('"-.slice" is the root slice; its CPU properties cannot be set')
    if persistent:
        if name.endswith('.scope'):
            raise SystemdConfigError(
                '%s: a scope is transient by nature and has no unit file; set persistent: false '
                '(or leave persistent unset) to set its properties live only' % name)
        if not _SLICE_RE.match(name):
            raise SystemdConfigError(
                '%s: persistent units must be slices named like "machine-gold.slice" '
                '(letters, digits, ":_.\\", "-" only between parts, ending in .slice)' % name)
    elif persistent is None:
        if not (_SLICE_RE.match(name) or (name.endswith('.scope') and _LIVE_RE.match(name))):
            raise SystemdConfigError(
                '%s: expected a .slice or .scope unit name (other unit types need '
                'persistent: false)' % name)
    elif not _LIVE_RE.match(name):
        raise SystemdConfigError(
            '%s: live-only units must be .slice, .scope or .service units with a valid name' % name)


def wanted_properties(cpu_weight=None, cpu_quota=None, allowed_cpus=None, online_cpus=None,
                      name='unit'):
    """Validate one unit's wanted CPU settings and return them in assignment spelling.

    ``None`` means "not managed" and leaves the key out; ``''`` for
    ``cpu_quota``/``allowed_cpus`` means systemd's default (no quota, all
    CPUs). ``online_cpus`` (a set) rejects AllowedCPUs naming offline CPUs.
    CPUAccounting is always ``yes``.
    """
    props = {'CPUAccounting': 'yes'}
    if cpu_weight is not None:
        if isinstance(cpu_weight, bool) or not isinstance(cpu_weight, int):
            raise SystemdConfigError('%s: cpu_weight must be an integer' % name)
        if not WEIGHT_MIN <= cpu_weight <= WEIGHT_MAX:
            raise SystemdConfigError('%s: cpu_weight %d is outside %d-%d (cgroup v2 cpu.weight)'
                                     % (name, cpu_weight, WEIGHT_MIN, WEIGHT_MAX))
        props['CPUWeight'] = str(cpu_weight)
    if cpu_quota is not None:
        props['CPUQuota'] = format_quota(quota_usec(cpu_quota, '%s: cpu_quota' % name))
    if allowed_cpus is not None:
        text = str(allowed_cpus).strip()
        try:
            cpus = parse_cpulist(text, '%s: allowed_cpus' % name)
        except CpuListError as exc:
            raise SystemdConfigError(str(exc))
        if text and not cpus:
            raise SystemdConfigError('%s: allowed_cpus "%s" names no CPU' % (name, text))
        if online_cpus is not None and cpus - set(online_cpus):
            raise SystemdConfigError(
                '%s: allowed_cpus "%s" names CPUs that are not online: %s (online: %s)'
                % (name, text, format_cpulist(cpus - set(online_cpus)), format_cpulist(online_cpus)))
        props['AllowedCPUs'] = format_cpulist(cpus)
    return props


def mismatches(expected, current):
    """Properties whose live value differs from the expected one: ``{name: (expected, live)}``."""
    return dict((key, (value, current.get(key, ''))) for key, value in expected.items()
                if current.get(key, '') != value)


def property_changes(wanted, current):
    """``{name: {'before': current, 'after': wanted}}`` for each wanted value that differs."""
    changes = {}
    for key in MANAGED_PROPERTIES:
        if key in wanted and current.get(key, '') != wanted[key]:
            changes[key] = {'before': current.get(key, ''), 'after': wanted[key]}
    return changes


def reset_properties(current, names=RESETTABLE_PROPERTIES):
    """What ``state=absent`` sets on a live-only unit: the named properties back to default."""
    return dict((key, '') for key in names if current.get(key, '') != '')


def assignments(props):
    """``['CPUWeight=512', ...]`` for ``systemctl set-property``, in a stable order."""
    return ['%s=%s' % (key, props[key]) for key in MANAGED_PROPERTIES if key in props]


# ---------------------------------------------------------------------------
# unit text

def render_unit(name, props, header=DEFAULT_HEADER, description=None, dropin=False):
    """Text of a slice unit file (or, with ``dropin``, of a drop-in for one).

    Every line of ``header`` becomes a comment, followed by the ownership
    marker; properties not in ``props`` (or empty) are left out, which is
    systemd's default.
    """
    lines = ['# ' + line if line.strip() else '#' for line in (header or '').splitlines()]
    lines.append(MARKER)
    if dropin:
        lines.append('# Drop-in for %s; state=absent removes this file only.' % name)
    else:
        lines.append('# state=absent removes this unit file and stops the slice when it is empty.')
        lines.append('')
        lines.append('[Unit]')
        lines.append('Description=%s' % (description or '%s (kvmlab.host_resources)' % name))
    lines.append('')
    lines.append('[Slice]')
    for key in MANAGED_PROPERTIES:
        value = props.get(key, '')
        if value != '':
            lines.append('%s=%s' % (key, value))
    return '\n'.join(lines) + '\n'


def has_marker(text):
    """True when unit text carries this collection's ownership marker."""
    return text is not None and any(line.strip() == MARKER for line in text.splitlines())


# ---------------------------------------------------------------------------
# planning one unit

class UnitPlan(object):
    """What to do for one unit; built by ``plan_unit`` without touching anything.

    Attributes: ``name``, ``state``, ``mode`` (``persistent``/``runtime``),
    ``definition`` (``unit_file``/``dropin``/None), ``path`` (file written or
    removed, or None), ``content`` (new file text, None when removing or not
    writing), ``file_action`` (``write``/``remove``/None), ``before_text``,
    ``reload`` (needs ``daemon-reload``), ``start``, ``stop``,
    ``runtime_set`` (properties for ``set-property --runtime``),
    ``changes`` (predicted ``{property: {before, after}}``), ``wanted`` and
    ``expected`` (the live values systemd should report afterwards, for the
    properties that can be predicted).
    """

    def __init__(self, name, state, mode):
        self.name = name
        self.state = state
        self.mode = mode
        self.definition = None
        self.path = None
        self.content = None
        self.before_text = None
        self.file_action = None
        self.reload = False
        self.start = False
        self.stop = False
        self.stop_skipped = None
        self.runtime_set = {}
        self.changes = {}
        self.wanted = {}
        self.expected = {}

    @property
    def changed(self):
        return bool(self.file_action or self.reload or self.start or self.stop
                    or self.runtime_set or self.changes)

    def actions(self):
        """Human-readable list of what the plan does, in execution order."""
        done = []
        if self.stop:
            done.append('stop')
        if self.file_action == 'write':
            done.append('write %s' % self.path)
        elif self.file_action == 'remove':
            done.append('remove %s' % self.path)
        if self.reload:
            done.append('daemon-reload')
        if self.start:
            done.append('start')
        if self.runtime_set:
            done.append('set-property --runtime %s' % ' '.join(assignments(self.runtime_set)))
        return done


def decide_mode(name, persistent, show):
    """``persistent`` or ``runtime`` for one unit, given the user's choice and systemd's view."""
    if persistent is True:
        return 'persistent'
    if persistent is False:
        return 'runtime'
    if not name.endswith('.slice'):
        return 'runtime'
    if show.get('Transient', 'no') == 'yes':
        return 'runtime'
    return 'persistent'


def plan_unit(item, show, unit_path, unit_text, dropin_path, dropin_text,
              header=DEFAULT_HEADER, foreign='dropin', start=True, populated=None, runtime_values=None):
    """Plan one unit.

    ``item``: dict with ``name``, ``state``, ``persistent`` (True/False/None),
    ``wanted`` (from ``wanted_properties``), optional ``description`` and
    ``reset`` (property names to reset for live-only absent).
    ``show``: the unit's ``systemctl show`` block. ``unit_text``/``dropin_text``:
    current content of our unit file / drop-in path, None when missing.
    ``populated``: whether the unit's cgroup has processes (None: unknown).
    ``runtime_values``: live values a runtime drop-in of the collection's
    sets over the definition of a present persistent unit (the shared
    execution pool's weight budget on a tier slice): expected live instead
    of the wanted ones, and no change to make for them (the unit file still
    carries the wanted values).
    Raises ``SystemdConfigError`` for what cannot be done.
    """
    name = item['name']
    state = item.get('state', 'present')
    mode = decide_mode(name, item.get('persistent'), show)
    plan = UnitPlan(name, state, mode)
    plan.wanted = dict(item.get('wanted') or {})
    load_state = show.get('LoadState', '')
    current = live_properties(show)

    if load_state == 'masked':
        raise SystemdConfigError('%s is masked; unmask it before managing its CPU properties' % name)
    if load_state in ('bad-setting', 'error'):
        raise SystemdConfigError('%s has LoadState=%s; fix the unit (systemctl status %s)'
                                 % (name, load_state, name))

    if mode == 'runtime':
        exists = load_state == 'loaded' and (is_active(show) or show.get('FragmentPath')
                                             or show.get('Transient') == 'yes')
        if state == 'present':
            if not exists:
                raise SystemdConfigError(
                    '%s does not exist (LoadState=%s, ActiveState=%s): live-only properties '
                    'need a running unit' % (name, load_state or '?', show.get('ActiveState', '?')))
            plan.expected = dict(plan.wanted)
            plan.changes = property_changes(plan.wanted, current)
            plan.runtime_set = dict((key, change['after']) for key, change in plan.changes.items())
        elif exists:
            names = item.get('reset') or RESETTABLE_PROPERTIES
            plan.expected = dict((key, '') for key in names)
            plan.runtime_set = reset_properties(current, names)
            plan.changes = dict((key, {'before': current[key], 'after': ''})
                                for key in plan.runtime_set)
        return plan

    # persistent: our own unit file, or a drop-in for a unit someone else defined
    ours = has_marker(unit_text)
    fragment = show.get('FragmentPath', '')
    foreign_unit = (unit_text is not None and not ours) or (
        not ours and bool(fragment) and os.path.normpath(fragment) != os.path.normpath(unit_path))
    if foreign_unit:
        plan.definition = 'dropin'
        plan.path = dropin_path
        plan.before_text = dropin_text
        if dropin_text is not None and not has_marker(dropin_text):
            raise SystemdConfigError(
                '%s: %s exists and was not written by this module; rename ours with dropin_name'
                % (name, dropin_path))
    else:
        plan.definition = 'unit_file'
        plan.path = unit_path
        plan.before_text = unit_text

    if state == 'present':
        if foreign_unit and foreign == 'fail':
            raise SystemdConfigError(
                '%s is defined by %s, not by this module; set foreign_units: dropin to manage '
                'it through %s' % (name, unit_path if unit_text is not None else fragment, dropin_path))
        plan.content = render_unit(name, plan.wanted, header, item.get('description'),
                                   dropin=foreign_unit)
        if plan.content != plan.before_text:
            plan.file_action = 'write'
        compare = dict(plan.wanted)
        if not foreign_unit:
            # our unit file is the whole definition: what it leaves out is systemd's default
            for key in RESETTABLE_PROPERTIES:
                compare.setdefault(key, '')
        compare.update(runtime_values or {})
        plan.expected = compare
        plan.changes = property_changes(compare, current)
        plan.reload = bool(plan.file_action or plan.changes
                           or show.get('NeedDaemonReload') == 'yes')
        plan.start = bool(start) and not is_active(show)
    else:
        if plan.before_text is None:
            plan.definition = None
            plan.path = None
            return plan
        plan.file_action = 'remove'
        plan.reload = True
        defaults = {'CPUAccounting': current['CPUAccounting'], 'CPUWeight': '', 'CPUQuota': '',
                    'AllowedCPUs': ''}
        plan.changes = property_changes(defaults, current)
        if not foreign_unit:
            plan.expected = dict((key, '') for key in RESETTABLE_PROPERTIES)
        if not foreign_unit and is_active(show):
            if populated is False:
                plan.stop = True
            else:
                plan.stop_skipped = ('still has processes' if populated
                                     else 'cannot tell whether it has processes')
    return plan


# ---------------------------------------------------------------------------
# cgroup v2 readers

def detect_cgroup_root(base='/sys/fs/cgroup'):
    """The cgroup v2 mount: ``base`` on unified hosts, ``base/unified`` on hybrid ones."""
    for root in (base, os.path.join(base, 'unified')):
        if os.path.exists(os.path.join(root, 'cgroup.controllers')):
            return root
    return base


def cgroup_dir(control_group, root='/sys/fs/cgroup'):
    """Directory of a unit's cgroup (``ControlGroup`` from systemd), or None if unset."""
    control_group = (control_group or '').strip()
    if not control_group:
        return None
    return os.path.join(root, control_group.lstrip('/'))


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def read_cgroup_cpu_weight(control_group, root='/sys/fs/cgroup'):
    """``cpu.weight`` of the unit's cgroup as an int, or None when not readable."""
    path = cgroup_dir(control_group, root)
    if path is None:
        return None
    return parse_weight(_read(os.path.join(path, 'cpu.weight')))


def parse_cpu_max(text):
    """``(quota_usec or None, period_usec)`` from cgroup v2 ``cpu.max`` (``max 100000``)."""
    if text is None:
        return None
    parts = text.split()
    if len(parts) != 2 or not parts[1].isdigit():
        return None
    quota = None if parts[0] == 'max' else int(parts[0])
    return quota, int(parts[1])


def cpu_max_percent(text):
    """The quota in ``cpu.max`` as systemd's percentage spelling; ``''`` for ``max``."""
    parsed = parse_cpu_max(text)
    if parsed is None:
        return None
    quota, period = parsed
    if quota is None or not period:
        return ''
    return format_quota(quota * USEC_PER_SEC // period)


def cgroup_populated(control_group, root='/sys/fs/cgroup'):
    """True/False from ``cgroup.events`` (``populated``), None when not readable."""
    path = cgroup_dir(control_group, root)
    if path is None:
        return None
    text = _read(os.path.join(path, 'cgroup.events'))
    if text is None:
        return None
    for line in text.splitlines():
        key, _sep, value = line.partition(' ')
        if key == 'populated':
            return value.strip() == '1'
    return None


def read_cgroup_values(control_group, root='/sys/fs/cgroup'):
    """What the kernel says for a unit's cgroup; None for each file not readable.

    Returns ``path``, ``cpu_weight`` (int), ``cpu_max`` (raw text),
    ``cpu_quota`` (percentage spelling, ``''`` for no quota), ``cpuset_cpus``
    and ``cpuset_cpus_effective`` (canonical cpulists) and ``populated``.
    """
    path = cgroup_dir(control_group, root)
    values = {'path': path, 'cpu_weight': None, 'cpu_max': None, 'cpu_quota': None,
              'cpuset_cpus': None, 'cpuset_cpus_effective': None, 'populated': None}
    if path is None:
        return values
    values['cpu_weight'] = parse_weight(_read(os.path.join(path, 'cpu.weight')))
    values['cpu_max'] = _read(os.path.join(path, 'cpu.max'))
    values['cpu_quota'] = cpu_max_percent(values['cpu_max'])
    for key, fname in (('cpuset_cpus', 'cpuset.cpus'), ('cpuset_cpus_effective', 'cpuset.cpus.effective')):
        text = _read(os.path.join(path, fname))
        if text is not None:
            try:
                text = format_cpulist(parse_kernel_cpulist(text, fname))
            except CpuListError:
                pass
        values[key] = text
    values['populated'] = cgroup_populated(control_group, root)
    return values


def cgroup_mismatches(wanted, cgroup):
    """Wanted properties that the readable cgroup files contradict: ``{name: (wanted, seen)}``.

    Files that could not be read are not judged (containers without delegated
    controllers, inactive units).
    """
    bad = {}
    if 'CPUWeight' in wanted and cgroup.get('cpu_weight') is not None:
        want = int(wanted['CPUWeight']) if wanted['CPUWeight'] else 100
        if cgroup['cpu_weight'] != want:
            bad['CPUWeight'] = (wanted['CPUWeight'], cgroup['cpu_weight'])
    if 'CPUQuota' in wanted and cgroup.get('cpu_quota') is not None:
        if cgroup['cpu_quota'] != wanted['CPUQuota']:
            bad['CPUQuota'] = (wanted['CPUQuota'], cgroup['cpu_quota'])
    if 'AllowedCPUs' in wanted and cgroup.get('cpuset_cpus') is not None:
        if cgroup['cpuset_cpus'] != wanted['AllowedCPUs']:
            bad['AllowedCPUs'] = (wanted['AllowedCPUs'], cgroup['cpuset_cpus'])
    return bad


# ---------------------------------------------------------------------------
# snapshot and exact restore (the records are _snapshot's; these are the values)

#: The layer name of the snapshots ``systemd_slice_weight`` writes.
SNAPSHOT_LAYER = 'systemd_slice_weight'


def unit_paths(name, unit_dir, dropin_name=DEFAULT_DROPIN):
    """``(unit file, drop-in)`` the module may write for a persistent unit."""
    return os.path.join(unit_dir, name), os.path.join(unit_dir, name + '.d', dropin_name)


def unit_record(mode, show, cgroup):
    """What a snapshot keeps of one unit's live state: mode, active, properties, own cpuset."""
    return {
        'mode': mode,
        'active': is_active(show),
        'properties': live_properties(show),
        'cgroup_cpuset_cpus': (cgroup or {}).get('cpuset_cpus'),
    }


def restore_unit_plan(name, recorded, show, populated=None):
    """What brings one unit's live state back to its record, before and after the reload.

    Returns ``{'stop': bool, 'start': bool, 'runtime_set': {prop: value}}``:
    a persistent unit that was inactive and is active now is stopped when
    its cgroup is empty (``populated`` False); one that was active is
    started again; a live-only unit that still exists gets its recorded
    properties back with ``set-property --runtime``.
    """
    plan = {'stop': False, 'start': False, 'runtime_set': {}}
    current = live_properties(show)
    active = is_active(show)
    if recorded.get('mode') == 'runtime':
        exists = show.get('LoadState') == 'loaded' and (active or show.get('Transient') == 'yes')
        if exists:
            want = recorded.get('properties') or {}
            plan['runtime_set'] = dict((key, want[key]) for key in RESETTABLE_PROPERTIES
                                       if key in want and current.get(key, '') != want[key])
        return plan
    if not recorded.get('active') and active and populated is False:
        plan['stop'] = True
    elif recorded.get('active') and not active:
        plan['start'] = True
    return plan


def cgroup_cpuset_fix(recorded, show, cgroup):
    """The cpuset.cpus to write back when systemd reset AllowedCPUs but the kernel kept it.

    systemd leaves a cgroup's ``cpuset.cpus`` as it was when AllowedCPUs is
    reset while the cpuset controller stays enabled (other cgroups need it):
    the unit then stays confined although systemd reports no restriction.
    Returns the recorded text to write, or None when nothing is to fix.
    """
    want = recorded.get('cgroup_cpuset_cpus')
    have = (cgroup or {}).get('cpuset_cpus')
    if want is None or have is None or want == have:
        return None
    if live_properties(show).get('AllowedCPUs', '') != (recorded.get('properties') or {}).get('AllowedCPUs', ''):
        return None  # systemd itself does not hold the recorded value: not a stale kernel value
    return want


def restore_mismatches(recorded, show, cgroup):
    """What is still not as recorded after a restore: ``{what: (recorded, live)}``."""
    bad = {}
    want = recorded.get('properties') or {}
    have = live_properties(show)
    for key in RESETTABLE_PROPERTIES:
        if key in want and have.get(key, '') != want[key]:
            bad[key] = (want[key], have.get(key, ''))
    rec_cpus = recorded.get('cgroup_cpuset_cpus')
    now_cpus = (cgroup or {}).get('cpuset_cpus')
    if rec_cpus is not None and now_cpus is not None and rec_cpus != now_cpus:
        bad['cpuset.cpus'] = (rec_cpus, now_cpus)
    return bad
