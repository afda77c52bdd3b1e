# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU processes of libvirt guests: pid files, threads, affinity and cgroup.

The one home for reading a running guest from ``/proc``. Pure parsers (text
in, data out) plus thin readers that take the ``/proc`` root and the pid
file directory as arguments, so that tests can give them a fake tree.

Thread classes follow the thread names QEMU gives (``/proc/<pid>/task/<tid>/comm``
or the ``Name:`` line of ``status``): ``CPU <n>/TCG`` or ``CPU <n>/KVM`` is
vCPU ``n``, ``IO iothread<n>`` is IOThread ``n``; every other thread
(main loop, RCU, workers, ``IO mon_iothread``) belongs to the emulator.

The guest's cgroup comes from ``/proc/<pid>/cgroup`` (the unified ``0::``
line, else the v1 ``cpuset`` or ``cpu`` one); its systemd scope and slice are
the last ``.scope`` and ``.slice`` elements of that path. Domain ids change
at every start, so a scope name is never guessed.
"""

from __future__ import annotations

import os
import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
)

VCPU_RE = re.compile(r'^CPU (\d+)/(?:TCG|KVM)$')
IOTHREAD_RE = re.compile(r'^IO iothread(\d+)$')
CLASSES = ('vcpu', 'emulator', 'iothread')


def clean(text):
    """Text as the kernel wrote it, without trailing NUL bytes and whitespace (None stays None)."""
    if text is None:
        return None
    return text.rstrip('\0 \t\r\n')


# ---------------------------------------------------------------------------
# Parsers (pure)

def classify_thread(name):
    """``('vcpu', n)``, ``('iothread', n)`` or ``('emulator', None)`` for a QEMU thread name."""
    name = clean(name or '')
    match = VCPU_RE.match(name)
    if match:
        return 'vcpu', int(match.group(1))
    match = IOTHREAD_RE.match(name)
    if match:
        return 'iothread', int(match.group(1))
    return 'emulator', None


def parse_status(text):
    """The ``Key: value`` fields of ``/proc/<pid>/task/<tid>/status`` as a dict of stripped strings."""
    fields = {}
    for line in clean(text or '').splitlines():
        key, sep, value = line.partition(':')
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def canonical_cpus(text, what='Cpus_allowed_list'):
    """A cpulist in canonical form (``0-3,8``); the text itself when it does not parse."""
    text = clean(text or '')
    try:
        return format_cpulist(parse_cpulist(text, what))
    except CpuListError:
        return text


def parse_pid(text):
    """The pid in a libvirt pid file, or None when the text is not a positive number."""
    text = clean(text or '').strip()
    if not text.isdigit() or int(text) <= 0:
        return None
    return int(text)


def parse_cgroup(text):
    """``/proc/<pid>/cgroup`` as ``{controller: path}``; the unified hierarchy's key is ``''``.

    v1 lines list several controllers (``4:cpu,cpuacct:/machine/...``): each
    gets the path. Named hierarchies (``name=systemd``) keep their name.
    """
    paths = {}
    for line in clean(text or '').splitlines():
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        _hid, controllers, path = parts
        if controllers == '':
            paths[''] = path
            continue
        for controller in controllers.split(','):
            if controller:
                paths.setdefault(controller, path)
    return paths


def cgroup_path(paths):
    """The guest's cgroup path: the unified one when it says more than ``/``, else cpuset's, else cpu's."""
    unified = paths.get('')
    if unified and unified != '/':
        return unified
    for controller in ('cpuset', 'cpu'):
        if paths.get(controller):
            return paths[controller]
    return unified


def _last(path, suffix):
    found = None
    for element in (path or '').split('/'):
        if element.endswith(suffix):
            found = element
    return found


def scope_of(path):
    """The systemd scope a cgroup path is in (its last ``.scope`` element), or None."""
    return _last(path, '.scope')


def slice_of(path):
    """The systemd slice directly holding the scope (last ``.slice`` element before it), or None."""
    scope = scope_of(path)
    head = path.split('/' + scope)[0] if scope else path
    return _last(head, '.slice')


def summarize_threads(threads):
    """Per class the distinct canonical cpulists, and per vCPU/IOThread number its cpulist.

    ``threads`` is a list of ``{'tid', 'name', 'cpus'}``. Returns
    ``{'cpus': {class: [cpulists]}, 'vcpus': {n: cpulist}, 'iothreads': {n: cpulist},
    'counts': {class: number of threads}}``.
    """
    cpus = dict((kind, set()) for kind in CLASSES)
    counts = dict((kind, 0) for kind in CLASSES)
    numbered = {'vcpu': {}, 'iothread': {}}
    for thread in threads:
        kind, number = classify_thread(thread.get('name'))
        value = canonical_cpus(thread.get('cpus'))
        cpus[kind].add(value)
        counts[kind] += 1
        if number is not None:
            numbered[kind][number] = value
    return {'cpus': dict((kind, sorted(values)) for kind, values in cpus.items()),
            'vcpus': numbered['vcpu'], 'iothreads': numbered['iothread'], 'counts': counts}


# ---------------------------------------------------------------------------
# Readers (I/O on a /proc root and a pid file directory)

def read_text(path):
    """The file's text without trailing NULs and whitespace, or None when it cannot be read."""
    try:
        with open(path) as handle:
            return clean(handle.read())
    except (IOError, OSError, UnicodeDecodeError):
        return None


def read_pid_file(pid_dir, name):
    """The QEMU pid of guest ``name`` from ``<pid_dir>/<name>.pid``, or None."""
    return parse_pid(read_text(os.path.join(pid_dir, '%s.pid' % name)))


def read_threads(pid, proc='/proc'):
    """Every thread of a process: list of ``{'tid', 'name', 'cpus'}`` (threads that end meanwhile are skipped)."""
    task_dir = os.path.join(proc, str(pid), 'task')
    try:
        tids = sorted(os.listdir(task_dir), key=lambda tid: int(tid) if tid.isdigit() else 0)
    except OSError:
        return []
    threads = []
    for tid in tids:
        fields = parse_status(read_text(os.path.join(task_dir, tid, 'status')))
        cpus = fields.get('Cpus_allowed_list')
        if cpus is None:
            continue
        name = fields.get('Name')
        if name is None:
            name = read_text(os.path.join(task_dir, tid, 'comm')) or ''
        threads.append({'tid': int(tid) if tid.isdigit() else tid, 'name': name, 'cpus': canonical_cpus(cpus)})
    return threads


def read_guest(pid_dir, name, proc='/proc'):
    """What ``/proc`` says about guest ``name``.

    Returns ``{'running', 'pid', 'cgroup', 'scope', 'slice', 'threads',
    'cpus', 'vcpus', 'iothreads', 'counts'}``; ``running`` is False (and the
    rest empty) when the pid file is missing or names no live process.
    """
    result = {'running': False, 'pid': None, 'cgroup': None, 'scope': None, 'slice': None, 'threads': [],
              'cpus': dict((kind, []) for kind in CLASSES), 'vcpus': {}, 'iothreads': {},
              'counts': dict((kind, 0) for kind in CLASSES)}
    pid = read_pid_file(pid_dir, name)
    if pid is None or not os.path.isdir(os.path.join(proc, str(pid), 'task')):
        return result
    path = cgroup_path(parse_cgroup(read_text(os.path.join(proc, str(pid), 'cgroup'))))
    threads = read_threads(pid, proc)
    result.update({'running': True, 'pid': pid, 'cgroup': path, 'scope': scope_of(path),
                   'slice': slice_of(path), 'threads': threads})
    result.update(summarize_threads(threads))
    return result
