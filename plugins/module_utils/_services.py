# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running systemd services and the CPU affinity of their main process.

A new systemd manager ``CPUAffinity=`` applies only to services started
after it: services already running keep their old affinity until they are
restarted (unless their slice's cpuset moves them). This file says which
ones they are, and decides which of them the host foundation restarts:

* ``parse_listing`` and ``service_affinities``: pure functions over what
  ``systemctl list-units`` and ``systemctl show -p Id,MainPID`` print and a
  reader of a process's ``Cpus_allowed_list``;
* ``restart_plan``, ``after_restart`` and ``report_lines``: the decision of
  ``host_cpu_reserve``'s ``restart_services`` (what to restart, what stays
  stale) and its report;
* ``proc_reader`` and ``read_services``: the thin readers (procfs, and a
  ``run`` callable that runs systemctl and returns its output).

Used by the ``service_affinity_info`` and ``host_cpu_reserve`` modules.
Python 3.8 compatible, no Ansible imports.
"""

from __future__ import annotations

import os

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import (
    parse_show,
    show_command,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import (
    TopologyError,
    read_cpus_allowed,
)

#: ``systemctl list-units`` arguments that list the running services, one per line.
LIST_ARGS = ('list-units', '--type=service', '--state=running', '--no-legend', '--plain', '--no-pager')

#: What ``systemctl show`` reads of each running service.
SHOW_PROPERTIES = ('Id', 'MainPID')

#: Unit suffixes systemd knows; a name without one means ``<name>.service`` (as systemctl takes it).
UNIT_SUFFIXES = ('service', 'socket', 'device', 'mount', 'automount', 'swap', 'target', 'path',
                 'timer', 'slice', 'scope')


class ServicesError(ValueError):
    """A service name the decision cannot work with; the message says which."""


def list_command(systemctl):
    """Argument list of the ``systemctl list-units`` that lists the running services."""
    return [systemctl] + list(LIST_ARGS)


def parse_listing(text):
    """The unit names in ``systemctl list-units --plain --no-legend`` output, in order."""
    return [line.split()[0] for line in (text or '').splitlines() if line.strip()]


def service_affinities(units, shown, read_allowed, expected):
    """One entry per running service with a main process, in the order of ``units``.

    ``shown``: ``parse_show`` of ``systemctl show -p Id,MainPID`` for
    ``units``. ``read_allowed(pid)``: the process's affinity as a set of
    CPUs, or None when it is gone (it ended between listing and reading).
    ``expected``: the set of CPUs the services should run on.

    Each entry: ``unit``, ``main_pid``, ``cpus_allowed`` (canonical cpulist)
    and ``matches`` (whether it equals ``expected``). A service without a
    main process (``MainPID=0``, or unreadable) is left out.
    """
    expected = frozenset(expected)
    services = []
    for unit in units:
        try:
            pid = int((shown.get(unit) or {}).get('MainPID') or 0)
        except ValueError:
            pid = 0
        if pid <= 0:
            continue
        allowed = read_allowed(pid)
        if allowed is None:
            continue
        services.append({'unit': unit, 'main_pid': pid, 'cpus_allowed': format_cpulist(allowed),
                         'matches': frozenset(allowed) == expected})
    return services


def stale_units(services):
    """The units of ``services`` whose affinity differs from the expected one."""
    return [item['unit'] for item in services if not item['matches']]


def unit_name(name):
    """``name`` as systemd names the unit: ``ssh`` is ``ssh.service``; refuses an empty name."""
    text = (name or '').strip()
    if not text or text != name or any(char.isspace() for char in text):
        raise ServicesError('restart_services: %r is not a unit name (give names such as "ssh.service")' % (name,))
    if text.rpartition('.')[2] not in UNIT_SUFFIXES or '.' not in text:
        text += '.service'
    return text


def restart_plan(services, named):
    """Which services to restart so that they get the new affinity, and which stay stale.

    ``services``: ``service_affinities`` against ``host_reserved``, read
    after the reserve is in place (in check mode, before: the services get
    ``host_reserved`` once it is, so the same comparison is the prediction).
    ``named``: the operator's ``restart_services`` (``ssh`` means
    ``ssh.service``).

    * stale and named: restart;
    * stale and not named: reported (``stale``), left running;
    * matching, named or not: nothing;
    * named but not running (or without a main process): nothing, reported
      in ``not_running``; not an error.

    Returns ``{'restart', 'stale', 'not_running'}``, lists of unit names in
    the order of ``services`` (``not_running`` in the order of ``named``).
    """
    wanted = []
    for name in named or []:
        unit = unit_name(name)
        if unit not in wanted:
            wanted.append(unit)
    running = set(item['unit'] for item in services)
    stale = stale_units(services)
    return {'restart': [unit for unit in stale if unit in wanted],
            'stale': [unit for unit in stale if unit not in wanted],
            'not_running': [unit for unit in wanted if unit not in running]}


def after_restart(plan, services_after):
    """What is stale after the restart, read again (``services_after``).

    Returns ``{'stale', 'still_stale'}``: every running service whose
    affinity differs now, and those of them that were restarted (their new
    main process did not get ``host_reserved``: their slice's cpuset decides,
    for example).
    """
    stale = stale_units(services_after)
    return {'stale': stale, 'still_stale': [unit for unit in plan['restart'] if unit in stale]}


def report_lines(stale, restarted, not_running, check=False):
    """The report lines of the services part of ``host_cpu_reserve`` state=present."""
    lines = ['running services that keep their old affinity until restarted: %s' % (', '.join(stale) or 'none')]
    if restarted:
        lines.append('%s: %s' % ('would restart' if check else 'restarted', ', '.join(restarted)))
    if not_running:
        lines.append('named in restart_services but not running: %s' % ', '.join(not_running))
    return lines


def proc_reader(proc_root='/proc'):
    """``read_allowed`` for ``service_affinities``: a process's affinity from procfs, None when it is gone."""
    def read_allowed(pid):
        if not os.path.exists(os.path.join(proc_root, str(pid))):
            return None
        try:
            return read_cpus_allowed(pid, proc_root)
        except TopologyError:
            return None  # the process ended between listing and reading
    return read_allowed


def read_services(run, systemctl, expected, proc_root='/proc'):
    """The running services and their affinity against ``expected``, read from the host.

    ``run(args)``: runs a command and returns its standard output (raising
    on failure). Two systemctl calls: ``list-units`` and one ``show`` for
    every running service. Raises ``SystemdConfigError`` when the show
    output does not match the listing.
    """
    units = parse_listing(run(list_command(systemctl)))
    if not units:
        return []
    shown = parse_show(run(show_command(systemctl, units, SHOW_PROPERTIES)), units)
    return service_affinities(units, shown, proc_reader(proc_root), expected)
