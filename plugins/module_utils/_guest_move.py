# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving running guests into their tier slices: which guests, in what order, how.

libvirt's resource partition is config-only: after the shared execution pool's
apply a running guest's QEMU stays in ``machine.slice`` (or ``/machine``
without systemd) until its next start. The ``guest_move`` module restarts such
guests one at a time, as the operator chooses; this file holds its decisions,
as plain functions from data to data.

A guest is *pending* when it runs and its QEMU process's cgroup is not under
the cgroup libvirt makes for the guest's persistent partition: the slice
``machine-gold.slice`` under systemd (:func:`_libvirt.partition_slice`), the
folder ``/machine/gold.partition`` without systemd
(:func:`_contention.partition_cgroup`).

:func:`plan` orders the guests to restart and says why every other guest is
left alone, one reason each (:data:`REASONS`). The waiting itself is
:func:`wait_for` with the clock and the sleep handed in.
"""

from __future__ import annotations

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv
from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention import ContentionError, partition_cgroup
from ansible_collections.kvmlab.host_resources.plugins.module_utils._qemu import slice_of

METHODS = ('shutdown', 'managedsave')

#: Why a guest is not restarted, most decisive first (the first that holds is given).
REASONS = ('excluded', 'not_running', 'in_slice', 'never_restart')

#: ``virDomainState`` numbers as virsh names them.
STATE_NAMES = {0: 'no state', 1: 'running', 2: 'idle', 3: 'paused', 4: 'in shutdown', 5: 'shut off',
               6: 'crashed', 7: 'pmsuspended'}
#: States in which a guest runs its vCPUs (idle is libvirt's "blocked": running, waiting on I/O).
RUNNING_STATES = ('running', 'idle')

POLL_INTERVAL = 0.5


class MoveError(ValueError):
    """A request that cannot be planned; the message names the guest or the argument."""


def state_name(code):
    """virsh's name of a ``virDomainState`` number (``'state N'`` for one this table does not know)."""
    return STATE_NAMES.get(code, 'state %s' % code)


def tier_partition(partition):
    """True when the partition names a tier partition below ``/machine`` (not libvirt's default)."""
    partition = (partition or '').strip()
    return bool(partition) and partition.rstrip('/') != lv.DEFAULT_PARTITION


def partition_places(partition):
    """``{'slice', 'cgroup'}``: where libvirt starts a guest of ``partition``, with and without systemd."""
    try:
        return {'slice': lv.partition_slice(partition), 'cgroup': partition_cgroup(partition)}
    except ContentionError as exc:
        raise MoveError(str(exc))


def in_partition(cgroup, partition):
    """True when the cgroup path is inside the partition's slice (systemd) or folder (no systemd)."""
    if not cgroup:
        return False
    places = partition_places(partition)
    path = '/' + cgroup.strip('/')
    return slice_of(path) == places['slice'] or path.startswith(places['cgroup'] + '/')


def partition_pending(state, partition, cgroup):
    """True when a running guest's QEMU cgroup is not where its persistent tier partition puts it.

    A guest that does not run, or whose persistent XML names no tier
    partition, has nothing pending. A running guest whose cgroup is unknown
    cannot be judged: :class:`MoveError`.
    """
    if state not in RUNNING_STATES or not tier_partition(partition):
        return False
    if not cgroup:
        raise MoveError('its QEMU process\'s cgroup is unknown (no pid file or no /proc entry)')
    return not in_partition(cgroup, partition)


def steps(method, shutdown_timeout, destroy_after_timeout):
    """What a restart does, in words (for check mode and the report)."""
    if method == 'managedsave':
        return ['managedsave (memory to disk)', 'set the partition of the saved image',
                'start (restore from the saved image)', 'wait until it runs', 'check its cgroup']
    after = 'destroy' if destroy_after_timeout else 'fail and leave it running'
    return ['shutdown (ACPI)', 'wait up to %d s, then %s' % (shutdown_timeout, after), 'start',
            'wait until it runs', 'check its cgroup']


def _names(values, what):
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise MoveError('%s must be a list of guest names' % what)
    names = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise MoveError('%s: %r is not a guest name' % (what, value))
        if value.strip() not in names:
            names.append(value.strip())
    return names


def _alone(guest, reason, detail):
    return {'name': guest['name'], 'tier': guest.get('tier'), 'state': guest.get('state'),
            'partition': guest.get('partition') or '', 'cgroup': guest.get('cgroup'), 'reason': reason,
            'detail': detail}


def plan(guests, selected=None, never_restart=(), exclude=(), method='shutdown', shutdown_timeout=120,
         destroy_after_timeout=False):
    """Which guests to restart, in order, and why each other one is left alone.

    ``guests``: every guest of the connection, each ``{'name', 'state', 'tier',
    'partition', 'cgroup', 'pending'}`` (``state`` as :func:`state_name`
    gives it, ``partition`` the persistent one, ``pending`` from
    :func:`partition_pending`). ``selected``: the names to consider (None or
    empty: every guest); a name that is not a guest is an error.
    ``never_restart`` and ``exclude``: names never restarted (names that are
    not guests are returned under ``unknown`` for a warning).

    Returns ``{'restart': [...], 'left_alone': [...], 'unknown': [...]}``. The
    restarts come in the order of ``selected``, else by name, each
    ``{'name', 'tier', 'state', 'partition', 'slice', 'cgroup', 'steps'}``.
    Every other guest is in ``left_alone`` (by name) with the first reason of
    :data:`REASONS` that holds and a detail sentence.
    """
    if method not in METHODS:
        raise MoveError('method must be one of %s, got %r' % (', '.join(METHODS), method))
    if isinstance(shutdown_timeout, bool) or not isinstance(shutdown_timeout, int) or shutdown_timeout < 0:
        raise MoveError('shutdown_timeout must be a number of seconds >= 0, got %r' % (shutdown_timeout,))
    by_name = {}
    for guest in guests:
        if guest['name'] in by_name:
            raise MoveError('guest %s is listed twice' % guest['name'])
        by_name[guest['name']] = guest
    selected = _names(selected, 'guests')
    missing = [name for name in selected if name not in by_name]
    if missing:
        raise MoveError('guests %s: not defined' % ', '.join(missing))
    never = _names(never_restart, 'never_restart')
    excluded = _names(exclude, 'exclude')
    unknown = sorted(set(name for name in never + excluded if name not in by_name))
    order = selected or sorted(by_name)
    restart, left_alone = [], []
    for name in sorted(by_name):
        guest = by_name[name]
        if name in excluded:
            left_alone.append(_alone(guest, 'excluded', 'excluded from the shared execution pool'))
        elif selected and name not in selected:
            left_alone.append(_alone(guest, 'excluded', 'not among the guests to move'))
        elif not tier_partition(guest.get('partition')):
            left_alone.append(_alone(guest, 'excluded', 'its persistent XML names no tier partition (apply has not '
                                     'placed it)'))
        elif guest.get('state') not in RUNNING_STATES:
            left_alone.append(_alone(guest, 'not_running', '%s: starts in its tier slice at its next start'
                                     % (guest.get('state') or 'not running')))
        elif not guest.get('pending'):
            left_alone.append(_alone(guest, 'in_slice', 'already runs in its tier slice'))
        elif name in never:
            left_alone.append(_alone(guest, 'never_restart', 'listed as never to be restarted: stays in %s until its '
                                     'next start' % (guest.get('cgroup') or 'its current cgroup')))
    left_alone_names = set(entry['name'] for entry in left_alone)
    for name in order:
        if name in left_alone_names:
            continue
        guest = by_name[name]
        restart.append({'name': name, 'tier': guest.get('tier'), 'state': guest.get('state'),
                        'partition': guest['partition'], 'slice': partition_places(guest['partition'])['slice'],
                        'cgroup': guest.get('cgroup'),
                        'steps': steps(method, shutdown_timeout, destroy_after_timeout)})
    return {'restart': restart, 'left_alone': left_alone, 'unknown': unknown}


def waiting(planned, moved_names):
    """Names of the running guests still outside their tier slice: never restarted, or planned and not moved."""
    names = [entry['name'] for entry in planned['left_alone'] if entry['reason'] == 'never_restart']
    names += [entry['name'] for entry in planned['restart'] if entry['name'] not in set(moved_names)]
    return sorted(names)


def check_restarted(entry, pid_before, proc):
    """None when the guest runs again in a new QEMU inside its tier partition, else what is wrong.

    ``proc`` is :func:`_qemu.read_guest`'s view of it after the start.
    """
    if not proc.get('running'):
        return 'it has no running QEMU process'
    if pid_before is not None and proc.get('pid') == pid_before:
        return 'its QEMU process is still the old one (pid %s)' % pid_before
    if not in_partition(proc.get('cgroup'), entry['partition']):
        return 'it runs in cgroup %s, not in its tier partition %s (slice %s)' % (
            proc.get('cgroup'), entry['partition'], entry['slice'])
    return None


def wait_for(predicate, timeout, clock, sleep, interval=POLL_INTERVAL):
    """Poll ``predicate()`` until it is true or ``timeout`` seconds passed; True when it became true.

    It is always asked once more at the deadline, so a timeout of 0 asks once.
    """
    deadline = clock() + timeout
    while True:
        if predicate():
            return True
        left = deadline - clock()
        if left <= 0:
            return bool(predicate())
        sleep(min(interval, left))


def report(result, check_mode=False):
    """Readable lines: what was (or would be) restarted, what was left alone and why, what still waits."""
    lines = []
    verb = 'would restart' if check_mode else 'restarted'
    for entry in result.get('planned', []):
        done = [m for m in result.get('moved', []) if m['name'] == entry['name']]
        if check_mode:
            lines.append('%s: %s into %s (%s): %s'
                         % (entry['name'], verb, entry['slice'], entry['partition'], ', '.join(entry['steps'])))
        elif done:
            moved = done[0]
            lines.append('%s: %s into %s, pid %s -> %s%s (%.1f s)' % (
                entry['name'], verb, entry['slice'], moved['pid_before'], moved['pid_after'],
                ', destroyed after the shutdown timeout' if moved.get('destroyed') else '', moved['seconds']))
    for entry in result.get('left_alone', []):
        lines.append('%s: left alone (%s): %s' % (entry['name'], entry['reason'].replace('_', ' '), entry['detail']))
    if result.get('waiting'):
        lines.append('still outside their tier slice: %s' % ', '.join(result['waiting']))
    elif not result.get('planned'):
        lines.append('nothing to move: every running guest runs in its tier slice')
    return lines
