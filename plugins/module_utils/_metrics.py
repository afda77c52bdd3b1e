# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The metrics collector: is the shared execution pool's promise holding right now?

One file, two uses:

* imported as ``module_utils._metrics`` (by the ``metrics_collector`` module
  and the unit tests): pure parsers and computations, data in, data out;
* run on the host (``main``: ``--config C --output O --state S``), copied
  there verbatim by ``metrics_collector`` and imported by the service's
  ``python3 -c`` line (``service_unit``), so its bytecode is cached between
  runs (``-X pycache_prefix`` under the state directory): it reads
  cgroups, ``/proc`` and ``/sys`` once, compares the reading with the previous
  one kept in a small state file, and writes node_exporter's textfile format
  atomically (temporary file in the same directory, then a rename).

Standard library only, Python 3.8+, no other file of the collection: the
script must run alone on the host.

Definitions (the HELP text of every metric says the same):

* A tier's CPU seconds are its slice's ``cpu.stat`` ``usage_usec`` plus the
  CPU time of guests of that tier (by the configured guest map) whose scope
  still sits outside the tier slice (libvirt's partition applies only at the
  next start). The counter resets when such a guest moves into the slice.
* A tier is *busy* when it used more than ``busy_threshold_cpus`` CPUs on
  average over the last interval. Entitled share = the tier's weight over the
  busy tiers' weights; achieved share = the tier's CPU time over the busy
  tiers' CPU time in the interval. Both exist only for busy tiers and only
  from the second run on (they need the previous sample).
* vCPU run delay is field 2 of ``/proc/<pid>/task/<tid>/schedstat`` (time a
  runnable vCPU thread waited for a CPU: "CPU ready"), summed over the
  guest's vCPU threads (``CPU n/KVM``, ``CPU n/TCG``).
* Host services outside the reserve: processes in ``system.slice``,
  ``user.slice`` and ``init.scope`` whose allowed CPUs (``Cpus_allowed_list``)
  are not within ``host_reserved``. Linux does not account a process's time
  per CPU, so the counter adds the CPU time (utime + stime) such processes
  used while they were allowed outside the reserve: an upper bound of the
  host work done on guest CPUs, zero when the reserve confines every host
  service. A cgroup whose ``cpuset.cpus.effective`` lies within the reserve
  is skipped whole (the kernel confines it).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

CONFIG_SCHEMA = 'kvmlab.host_resources/metrics-config'
CONFIG_VERSION = 1
STATE_VERSION = 1
DEFAULT_BUSY_THRESHOLD = 0.1
DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup'
DEFAULT_PID_DIR = '/run/libvirt/qemu'
POOLS = ('host_reserved', 'host_housekeeping', 'host_emulator', 'guest_domain')
HOST_SERVICE_CGROUPS = ('system.slice', 'user.slice', 'init.scope')
VERDICTS = ('applied', 'stock', 'mixed', 'drift', 'drifted', 'unknown')

_VCPU_RE = re.compile(r'^CPU (\d+)/(KVM|TCG)$')
_RANGE_RE = re.compile(r'^(\d+)(?:-(\d+))?$')
_NAME_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
_LABEL_RE = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*$')
_ESCAPE_RE = re.compile(r'\\x([0-9a-fA-F]{2})')


class MetricsError(ValueError):
    """A configuration the collector cannot work with; the message names the problem."""


# ---------------------------------------------------------------------------
# Parsers of kernel text (pure)

def parse_cpulist(text):
    """CPUs of a kernel cpulist (``0-3,8``) as a frozenset; empty text is the empty set.

    Only the forms the kernel writes and the installer passes (canonical
    lists); the collection's full parser lives in ``_cpulist`` but this file
    must run alone.
    """
    cpus = set()
    for item in re.split(r'[\s,]+', (text or '').strip()):
        if not item:
            continue
        match = _RANGE_RE.match(item)
        if not match:
            raise ValueError('cannot parse "%s" in cpulist "%s"' % (item, text.strip()))
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError('range "%s" runs backwards' % item)
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def parse_cpu_stat(text):
    """``cpu.stat`` of a cgroup v2 directory: ``{'usage_usec': int, ...}``."""
    out = {}
    for line in (text or '').splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_schedstat(text):
    """``(run_ns, delay_ns, timeslices)`` of ``/proc/<pid>/task/<tid>/schedstat``."""
    parts = (text or '').split()
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValueError('cannot parse schedstat "%s"' % (text or '')[:80])
    slices = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    return int(parts[0]), int(parts[1]), slices


def parse_proc_stat(text):
    """Per-CPU ``{cpu: (busy_ticks, total_ticks)}`` from ``/proc/stat``.

    Busy is user + nice + system + irq + softirq + steal (every field of the
    first eight but idle and iowait); guest time is already inside user/nice.
    """
    out = {}
    for line in (text or '').splitlines():
        if not line.startswith('cpu') or line.startswith('cpu '):
            continue
        parts = line.split()
        try:
            cpu = int(parts[0][3:])
            fields = [int(x) for x in parts[1:9]]
        except ValueError:
            continue
        fields += [0] * (8 - len(fields))
        total = sum(fields)
        out[cpu] = (total - fields[3] - fields[4], total)
    return out


def parse_pressure(text):
    """``/proc/pressure/<resource>``: ``{'some': {'avg10': float, ..., 'total': int usec}, 'full': ...}``."""
    out = {}
    for line in (text or '').splitlines():
        parts = line.split()
        if not parts or parts[0] not in ('some', 'full'):
            continue
        values = {}
        for part in parts[1:]:
            key, sep, value = part.partition('=')
            if not sep:
                continue
            try:
                values[key] = int(value) if key == 'total' else float(value)
            except ValueError:
                continue
        if 'total' in values:
            out[parts[0]] = values
    return out


def parse_meminfo(text):
    """``/proc/meminfo`` as ``{'SwapTotal': bytes, ...}`` (kB lines turned into bytes)."""
    out = {}
    for line in (text or '').splitlines():
        key, sep, rest = line.partition(':')
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        value = int(parts[0])
        if len(parts) > 1 and parts[1] == 'kB':
            value *= 1024
        out[key.strip()] = value
    return out


def parse_swaps(text):
    """``/proc/swaps``: ``[{'name', 'type', 'size_bytes', 'used_bytes', 'priority'}]``."""
    out = []
    for line in (text or '').splitlines()[1:]:
        parts = line.split()
        if len(parts) < 5 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        out.append({'name': parts[0], 'type': parts[1], 'size_bytes': int(parts[2]) * 1024,
                    'used_bytes': int(parts[3]) * 1024, 'priority': int(parts[4]) if parts[4].lstrip('-').isdigit() else 0})
    return out


def swap_used_bytes(swaps_text, meminfo_text):
    """Swap in use: the sum of ``/proc/swaps``' Used column, else SwapTotal - SwapFree; None when neither reads."""
    if swaps_text is not None:
        return sum(item['used_bytes'] for item in parse_swaps(swaps_text))
    if meminfo_text is not None:
        info = parse_meminfo(meminfo_text)
        if 'SwapTotal' in info and 'SwapFree' in info:
            return info['SwapTotal'] - info['SwapFree']
    return None


def parse_zram_mm_stat(text):
    """zram ``mm_stat``: ``{'orig_data_size', 'compr_data_size', 'mem_used_total'}`` in bytes."""
    parts = (text or '').split()
    if len(parts) < 3 or not all(p.isdigit() for p in parts[:3]):
        raise ValueError('cannot parse zram mm_stat "%s"' % (text or '')[:80])
    return {'orig_data_size': int(parts[0]), 'compr_data_size': int(parts[1]), 'mem_used_total': int(parts[2])}


def ksm_figures(pages_sharing, pages_shared, page_size):
    """KSM ``{'pages_sharing', 'pages_shared', 'saved_bytes'}``; saved = pages_sharing x page size."""
    return {'pages_sharing': pages_sharing, 'pages_shared': pages_shared,
            'saved_bytes': pages_sharing * page_size}


def status_field(text, field):
    """A field of ``/proc/<pid>/status`` (``Cpus_allowed_list``, ``Name``), None when absent."""
    for line in (text or '').splitlines():
        key, sep, value = line.partition(':')
        if sep and key == field:
            return value.strip()
    return None


def parse_pid_stat(text):
    """``{'comm', 'utime', 'stime', 'starttime'}`` (ticks) of ``/proc/<pid>/stat``.

    Fields are counted from the last ``)`` since the command may hold spaces
    and parentheses: utime and stime are fields 14 and 15, starttime 22.
    """
    text = (text or '').strip()
    open_at = text.find('(')
    close_at = text.rfind(')')
    rest = text[close_at + 1:].split()
    if open_at < 0 or close_at < open_at or len(rest) < 20:
        raise ValueError('cannot parse stat "%s"' % text[:80])
    return {'comm': text[open_at + 1:close_at], 'utime': int(rest[11]), 'stime': int(rest[12]),
            'starttime': int(rest[19])}


def parse_proc_cgroup(text):
    """The cgroup v2 path (``0::/path``) of ``/proc/<pid>/cgroup``, None on a v1-only host."""
    for line in (text or '').splitlines():
        if line.startswith('0::'):
            return line[3:].strip() or '/'
    return None


def vcpu_index(comm):
    """The vCPU number of a QEMU vCPU thread name (``CPU 1/TCG``, ``CPU 0/KVM``), else None."""
    match = _VCPU_RE.match((comm or '').strip())
    return int(match.group(1)) if match else None


def unescape_unit(name):
    """systemd's ``\\x2d`` escapes in a unit name undone."""
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), name)


def guest_name_of_cgroup(component):
    """The guest name in a machine scope or libvirt cgroup name, else None.

    ``machine-qemu\\x2d3\\x2dkvm\\x2dworker\\x2d01.scope`` and
    ``qemu-3-kvm-worker-01.libvirt-qemu`` give ``kvm-worker-01``.
    """
    for suffix in ('.scope', '.libvirt-qemu'):
        if component.endswith(suffix):
            stem = unescape_unit(component[:-len(suffix)])
            match = re.match(r'^(?:machine-)?qemu-\d+-(.+)$', stem)
            return match.group(1) if match else None
    return None


def guest_cgroup(path):
    """The guest's own cgroup from its QEMU process's cgroup (``.../machine-qemu...scope/libvirt/emulator``)."""
    parts = [p for p in (path or '').split('/') if p]
    for index in range(len(parts) - 1, -1, -1):
        if parts[index].endswith('.scope') or parts[index].endswith('.libvirt-qemu'):
            return '/' + '/'.join(parts[:index + 1])
    while parts and parts[-1] in ('emulator', 'libvirt'):
        parts.pop()
    return '/' + '/'.join(parts)


def is_guest_process_cgroup(path):
    """Whether a process's cgroup path lies in a guest's cgroup (a machine scope or libvirt's ``.libvirt-qemu``)."""
    return any(guest_name_of_cgroup(part) for part in (path or '').split('/') if part)


def slice_cgroup(slice_name):
    """The cgroup path of a slice: ``machine-gold.slice`` -> ``/machine.slice/machine-gold.slice``."""
    if not slice_name or not slice_name.endswith('.slice'):
        raise MetricsError('"%s" is not a slice name' % slice_name)
    stem = slice_name[:-len('.slice')]
    if stem in ('', '-'):
        return '/'
    parts = stem.split('-')
    return '/' + '/'.join('-'.join(parts[:i + 1]) + '.slice' for i in range(len(parts)))


# ---------------------------------------------------------------------------
# Configuration (pure)

def normalize_config(data):
    """The collector's configuration, checked: tiers, pools (CPU sets), guests map, threshold, paths.

    ``tiers`` maps a name to ``{slice, weight}`` (``cpu_weight`` is accepted,
    as in ``kvmlab_tiers``). Raises MetricsError naming the bad key.
    """
    if not isinstance(data, dict):
        raise MetricsError('the configuration must be a JSON object')
    tiers = {}
    raw_tiers = data.get('tiers') or {}
    if not isinstance(raw_tiers, dict):
        raise MetricsError('tiers must map tier names to {slice, weight}')
    for name in sorted(raw_tiers):
        tier = raw_tiers[name]
        if not isinstance(tier, dict):
            raise MetricsError('tiers.%s must be {slice, weight}' % name)
        weight = tier.get('weight', tier.get('cpu_weight'))
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise MetricsError('tiers.%s.weight must be a positive number, got %r' % (name, weight))
        slice_name = tier.get('slice') or 'machine-%s.slice' % name
        cgroup = tier.get('cgroup') or slice_cgroup(slice_name)
        tiers[name] = {'slice': slice_name, 'weight': weight, 'cgroup': cgroup}
    pools = {}
    for name, value in (data.get('pools') or {}).items():
        if name not in POOLS or value in (None, ''):
            continue
        try:
            pools[name] = parse_cpulist(value if isinstance(value, str) else ','.join(str(v) for v in value))
        except (ValueError, TypeError) as exc:
            raise MetricsError('pools.%s: %s' % (name, exc))
    guests = data.get('guests') or {}
    if not isinstance(guests, dict) or any(not isinstance(v, str) for v in guests.values()):
        raise MetricsError('guests must map guest names to tier names')
    threshold = data.get('busy_threshold_cpus', DEFAULT_BUSY_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise MetricsError('busy_threshold_cpus must be a number >= 0, got %r' % (threshold,))
    return {
        'tiers': tiers,
        'pools': pools,
        'guests': dict(guests),
        'busy_threshold_cpus': float(threshold),
        'cgroup_root': data.get('cgroup_root') or DEFAULT_CGROUP_ROOT,
        'libvirt_pid_dir': data.get('libvirt_pid_dir') or DEFAULT_PID_DIR,
        'policy_status_file': data.get('policy_status_file') or None,
    }


# ---------------------------------------------------------------------------
# Computations (pure)

def tier_of(cgroup_path, tiers, guest_name=None, guest_map=None):
    """``(tier, in_slice)``: the tier whose slice holds the cgroup, else the configured one, else None."""
    parts = set(p for p in (cgroup_path or '').split('/') if p)
    for name, tier in tiers.items():
        if tier['slice'] in parts:
            return name, True
    configured = (guest_map or {}).get(guest_name)
    if configured in tiers:
        return configured, False
    return None, False


def tier_shares(weights, deltas, interval, threshold):
    """Per tier ``{'busy', 'cpus', 'entitled', 'achieved'}`` over one interval.

    ``weights``/``deltas`` map tier -> weight / CPU seconds used in the
    interval. Busy = more than ``threshold`` CPUs on average; entitled = weight
    over the busy tiers' weights; achieved = CPU time over the busy tiers' CPU
    time. Idle tiers get None for both shares; so does every tier when the
    interval is not positive.
    """
    out = {}
    if not interval or interval <= 0:
        for name in weights:
            out[name] = {'busy': None, 'cpus': None, 'entitled': None, 'achieved': None}
        return out
    busy = [name for name in weights if max(deltas.get(name, 0.0), 0.0) / interval > threshold]
    weight_sum = float(sum(weights[name] for name in busy))
    used_sum = float(sum(max(deltas.get(name, 0.0), 0.0) for name in busy))
    for name in weights:
        used = max(deltas.get(name, 0.0), 0.0)
        entry = {'busy': name in busy, 'cpus': used / interval, 'entitled': None, 'achieved': None}
        if name in busy:
            entry['entitled'] = weights[name] / weight_sum if weight_sum else 0.0
            entry['achieved'] = used / used_sum if used_sum else 0.0
        out[name] = entry
    return out


def busy_seconds(per_cpu, cpus, clock_ticks):
    """Busy seconds (counter) of the given CPUs from ``parse_proc_stat`` output; CPUs without a line count 0."""
    return sum(per_cpu[cpu][0] for cpu in cpus if cpu in per_cpu) / float(clock_ticks)


def accumulate_outside(previous, processes, clock_ticks):
    """The outside-the-reserve counter moved on by one sample.

    ``previous``: ``{'total': seconds, 'procs': {"pid:starttime": ticks}}`` or
    None; ``processes``: ``{"pid:starttime": ticks}`` of the host-service
    processes allowed outside the reserve now. A process seen before adds its
    growth; a new one adds all its time (it ran while allowed outside; a
    process whose affinity was narrowed since its start is counted whole once,
    an upper bound). Returns the new ``{'total', 'procs'}``.
    """
    previous = previous or {}
    known = previous.get('procs') or {}
    total = float(previous.get('total') or 0.0)
    for key, ticks in processes.items():
        before = known.get(key)
        grown = ticks - before if before is not None and ticks >= before else ticks
        total += grown / float(clock_ticks)
    return {'total': total, 'procs': dict(processes)}


def policy_verdicts(data):
    """``{layer: verdict}`` from the roles' status file (``{"layers": {layer: {"verdict": v}}}`` or ``{layer: v}``)."""
    if not isinstance(data, dict):
        return {}
    layers = data.get('layers', data)
    out = {}
    if not isinstance(layers, dict):
        return out
    for layer, value in layers.items():
        verdict = value.get('verdict') if isinstance(value, dict) else value
        if isinstance(layer, str) and isinstance(verdict, str) and verdict:
            out[layer] = verdict
    return out


# ---------------------------------------------------------------------------
# The text format (pure)

def escape_label(value):
    """A label value escaped for the text format (backslash, double quote, newline)."""
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def escape_help(text):
    return str(text).replace('\\', '\\\\').replace('\n', '\\n')


def format_value(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return 'NaN'
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families):
    """node_exporter textfile text of ``[(name, type, help, [(labels, value)])]``.

    Families without samples are left out (absent series); every family that
    is written has HELP and TYPE; samples are sorted by their labels.
    """
    lines = []
    seen = set()
    for name, kind, text, samples in families:
        if not _NAME_RE.match(name) or name in seen:
            raise MetricsError('bad or repeated metric name "%s"' % name)
        seen.add(name)
        if kind not in ('counter', 'gauge'):
            raise MetricsError('%s: unknown type %s' % (name, kind))
        if not samples:
            continue
        lines.append('# HELP %s %s' % (name, escape_help(text)))
        lines.append('# TYPE %s %s' % (name, kind))
        rows = []
        for labels, value in samples:
            if value is None:
                continue
            for key in labels:
                if not _LABEL_RE.match(key):
                    raise MetricsError('%s: bad label name "%s"' % (name, key))
            label_text = ','.join('%s="%s"' % (key, escape_label(labels[key])) for key in sorted(labels))
            rows.append('%s%s %s' % (name, '{%s}' % label_text if label_text else '', format_value(value)))
        lines.extend(sorted(rows))
    return '\n'.join(lines) + '\n' if lines else ''


# ---------------------------------------------------------------------------
# Reading the host (I/O, every read tolerant: a missing file is None)

class Host(object):
    """File access below ``root`` (``/`` on a real host, a fixture tree in tests)."""

    def __init__(self, root='/'):
        self.root = root or '/'
        self.errors = []

    def path(self, path):
        if self.root in ('', '/'):
            return path
        return os.path.join(self.root, path.lstrip('/'))

    def read(self, path):
        try:
            with open(self.path(path), 'r') as handle:
                return handle.read()
        except (IOError, OSError, UnicodeDecodeError):
            return None

    def read_int(self, path):
        text = self.read(path)
        try:
            return int(text.strip()) if text is not None else None
        except ValueError:
            self.errors.append('%s: not an integer' % path)
            return None

    def listdir(self, path):
        try:
            return os.listdir(self.path(path))
        except (IOError, OSError):
            return []

    def isdir(self, path):
        return os.path.isdir(self.path(path))


def _cgroup_usage_usec(host, cgroup_root, cgroup):
    text = host.read(os.path.join(cgroup_root, cgroup.lstrip('/'), 'cpu.stat'))
    if text is None:
        return None
    return parse_cpu_stat(text).get('usage_usec')


def _scopes_below(host, cgroup_root, start):
    """Guest cgroups (``*.scope`` with a guest name, ``*.libvirt-qemu``) below ``start``, not descending into them."""
    found = []
    stack = [start]
    while stack:
        current = stack.pop()
        for entry in host.listdir(os.path.join(cgroup_root, current.lstrip('/'))):
            child = current.rstrip('/') + '/' + entry
            if guest_name_of_cgroup(entry):
                found.append(child)
            elif entry.endswith('.slice') or entry.endswith('.partition'):
                stack.append(child)
    return found


def _first_pid(host, cgroup_root, cgroup):
    stack = [cgroup]
    while stack:
        current = stack.pop(0)
        base = os.path.join(cgroup_root, current.lstrip('/'))
        text = host.read(os.path.join(base, 'cgroup.procs'))
        for line in (text or '').split():
            if line.isdigit():
                return int(line)
        for entry in sorted(host.listdir(base)):
            if host.isdir(os.path.join(base, entry)):
                stack.append(current.rstrip('/') + '/' + entry)
    return None


def find_guests(host, config):
    """Running guests: ``[{'name', 'pid', 'cgroup'}]`` from libvirt's pid files and the machine scopes."""
    cgroup_root = config['cgroup_root']
    guests = {}
    pid_dir = config['libvirt_pid_dir']
    for entry in sorted(host.listdir(pid_dir)):
        if not entry.endswith('.pid'):
            continue
        pid = host.read_int(os.path.join(pid_dir, entry))
        if pid is None:
            continue
        cgroup_text = host.read('/proc/%d/cgroup' % pid)
        if cgroup_text is None:
            continue  # a stale pid file
        path = parse_proc_cgroup(cgroup_text)
        if not is_guest_process_cgroup(path):
            # not a guest: libvirt's own driver.pid (the QEMU driver's daemon),
            # or a stale pid file whose number another process has now
            continue
        guests[entry[:-len('.pid')]] = {'name': entry[:-len('.pid')], 'pid': pid, 'cgroup': guest_cgroup(path)}
    known = set(g['cgroup'] for g in guests.values())
    for start in ('/machine.slice', '/machine'):
        for cgroup in _scopes_below(host, cgroup_root, start):
            if cgroup in known:
                continue
            name = guest_name_of_cgroup(cgroup.rsplit('/', 1)[-1])
            if name in guests:
                continue
            pid = _first_pid(host, cgroup_root, cgroup)
            if pid is None:
                continue
            guests[name] = {'name': name, 'pid': pid, 'cgroup': cgroup}
    return [guests[name] for name in sorted(guests)]


def read_vcpus(host, pid):
    """``[{'index', 'run_ns', 'delay_ns', 'allowed'}]`` of a QEMU process's vCPU threads."""
    out = []
    task_dir = '/proc/%d/task' % pid
    for tid in host.listdir(task_dir):
        base = '%s/%s' % (task_dir, tid)
        index = vcpu_index(host.read(base + '/comm'))
        if index is None:
            continue
        sched = host.read(base + '/schedstat')
        status = host.read(base + '/status')
        if sched is None or status is None:
            continue  # the thread ended between the reads
        try:
            run_ns, delay_ns, _slices = parse_schedstat(sched)
            allowed = parse_cpulist(status_field(status, 'Cpus_allowed_list') or '')
        except ValueError as exc:
            host.errors.append('%s: %s' % (base, exc))
            continue
        out.append({'index': index, 'run_ns': run_ns, 'delay_ns': delay_ns, 'allowed': allowed})
    return sorted(out, key=lambda item: item['index'])


def read_outside_processes(host, config, reserved):
    """``{"pid:starttime": ticks}`` of host-service processes whose allowed CPUs reach outside ``reserved``."""
    out = {}
    if not reserved:
        return out
    cgroup_root = config['cgroup_root']
    stack = list(HOST_SERVICE_CGROUPS)
    while stack:
        current = stack.pop()
        base = os.path.join(cgroup_root, current)
        if not host.isdir(base):
            continue
        effective = host.read(os.path.join(base, 'cpuset.cpus.effective'))
        if effective is not None and effective.strip():
            try:
                if parse_cpulist(effective) <= reserved:
                    continue  # the kernel confines the whole subtree
            except ValueError:
                pass
        for line in (host.read(os.path.join(base, 'cgroup.procs')) or '').split():
            if not line.isdigit():
                continue
            status = host.read('/proc/%s/status' % line)
            stat = host.read('/proc/%s/stat' % line)
            if status is None or stat is None:
                continue
            try:
                allowed = parse_cpulist(status_field(status, 'Cpus_allowed_list') or '')
                fields = parse_pid_stat(stat)
            except ValueError as exc:
                host.errors.append('/proc/%s: %s' % (line, exc))
                continue
            if allowed and not allowed <= reserved:
                out['%s:%d' % (line, fields['starttime'])] = fields['utime'] + fields['stime']
        for entry in host.listdir(base):
            if host.isdir(os.path.join(base, entry)):
                stack.append(current + '/' + entry)
    return out


def read_zram(host):
    out = {}
    for entry in sorted(host.listdir('/sys/block')):
        if not entry.startswith('zram'):
            continue
        text = host.read('/sys/block/%s/mm_stat' % entry)
        if text is None:
            continue
        try:
            out[entry] = parse_zram_mm_stat(text)
        except ValueError as exc:
            host.errors.append('/sys/block/%s/mm_stat: %s' % (entry, exc))
    return out


def _uptime(host):
    text = host.read('/proc/uptime')
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def collect(config, host, previous=None, clock_ticks=None, page_size=None):
    """Read the host once: ``(families, state)``. ``previous`` is the last run's state (or None)."""
    clock_ticks = clock_ticks or os.sysconf('SC_CLK_TCK')
    page_size = page_size or os.sysconf('SC_PAGE_SIZE')
    tiers = config['tiers']
    pools = config['pools']
    cgroup_root = config['cgroup_root']
    boot_id = (host.read('/proc/sys/kernel/random/boot_id') or '').strip() or None
    uptime = _uptime(host)
    if uptime is None:
        uptime = time.monotonic()
    if previous and (previous.get('version') != STATE_VERSION or previous.get('boot_id') != boot_id):
        previous = None
    interval = round(uptime - previous['uptime'], 3) if previous and previous.get('uptime') is not None else None
    if interval is not None and interval <= 0:
        interval, previous = None, None

    # guests
    guests = []
    guest_domain = pools.get('guest_domain')
    for guest in find_guests(host, config):
        tier, in_slice = tier_of(guest['cgroup'], tiers, guest['name'], config['guests'])
        usage = _cgroup_usage_usec(host, cgroup_root, guest['cgroup']) if guest['cgroup'] else None
        if usage is not None:
            cpu_seconds = usage / 1e6
        else:
            stat = host.read('/proc/%d/stat' % guest['pid'])
            try:
                fields = parse_pid_stat(stat)
                cpu_seconds = (fields['utime'] + fields['stime']) / float(clock_ticks)
            except ValueError:
                cpu_seconds = None
        vcpus = read_vcpus(host, guest['pid'])
        confined = None
        if guest_domain is not None and vcpus:
            confined = all(v['allowed'] and v['allowed'] <= guest_domain for v in vcpus)
        guests.append(dict(guest, tier=tier, in_slice=in_slice, cpu_seconds=cpu_seconds, vcpus=vcpus,
                           run_delay_seconds=sum(v['delay_ns'] for v in vcpus) / 1e9, confined=confined))

    # tiers
    tier_seconds = {}
    present = {}
    running = {}
    for name, tier in tiers.items():
        usage = _cgroup_usage_usec(host, cgroup_root, tier['cgroup'])
        present[name] = usage is not None
        seconds = (usage or 0) / 1e6
        for guest in guests:
            if guest['tier'] == name and not guest['in_slice'] and guest['cpu_seconds'] is not None:
                seconds += guest['cpu_seconds']
        tier_seconds[name] = seconds
        running[name] = len([g for g in guests if g['tier'] == name])
    prev_tiers = (previous or {}).get('tiers') or {}
    deltas = {}
    for name, seconds in tier_seconds.items():
        if name in prev_tiers:
            deltas[name] = seconds - prev_tiers[name]
    shares = tier_shares(dict((n, t['weight']) for n, t in tiers.items()), deltas,
                         interval if deltas else None, config['busy_threshold_cpus'])

    # host CPUs
    per_cpu = parse_proc_stat(host.read('/proc/stat'))
    reserved = pools.get('host_reserved')
    outside = None
    if reserved:
        outside = accumulate_outside((previous or {}).get('outside'),
                                     read_outside_processes(host, config, reserved), clock_ticks)

    # pressure, memory, policy
    pressure = {}
    for resource in ('cpu', 'memory', 'io'):
        text = host.read('/proc/pressure/%s' % resource)
        if text is not None:
            pressure[resource] = parse_pressure(text)
    ksm = None
    sharing = host.read_int('/sys/kernel/mm/ksm/pages_sharing')
    shared = host.read_int('/sys/kernel/mm/ksm/pages_shared')
    if sharing is not None and shared is not None:
        ksm = ksm_figures(sharing, shared, page_size)
    zram = read_zram(host)
    swap = swap_used_bytes(host.read('/proc/swaps'), host.read('/proc/meminfo'))
    verdicts = {}
    if config.get('policy_status_file'):
        text = host.read(config['policy_status_file'])
        if text is not None:
            try:
                verdicts = policy_verdicts(json.loads(text))
            except ValueError:
                host.errors.append('%s: not JSON' % config['policy_status_file'])

    families = build_families(tiers, tier_seconds, present, running, shares, guests, pools, per_cpu,
                              clock_ticks, outside, pressure, ksm, zram, swap, verdicts, interval)
    state = {'version': STATE_VERSION, 'boot_id': boot_id, 'uptime': uptime, 'tiers': tier_seconds,
             'outside': outside}
    return families, state


def build_families(tiers, tier_seconds, present, running, shares, guests, pools, per_cpu, clock_ticks,
                   outside, pressure, ksm, zram, swap, verdicts, interval):
    """The metric families (pure): ``[(name, type, help, [(labels, value)])]``."""
    def per_tier(key):
        return [({'tier': n}, shares[n][key]) for n in sorted(tiers) if shares[n][key] is not None]

    def per_guest(key):
        return [({'guest': g['name'], 'tier': g['tier'] or 'none'}, g[key]) for g in guests if g[key] is not None]

    fam = [
        ('kvmlab_tier_cpu_seconds_total', 'counter',
         "CPU seconds used by the tier: its slice's cpu.stat usage plus its guests still outside the slice.",
         [({'tier': n}, tier_seconds[n]) for n in sorted(tiers)]),
        ('kvmlab_tier_weight', 'gauge', 'The tier\'s configured CPUWeight.',
         [({'tier': n}, tiers[n]['weight']) for n in sorted(tiers)]),
        ('kvmlab_tier_slice_present', 'gauge', '1 when the tier slice\'s cgroup exists on the host.',
         [({'tier': n}, 1 if present[n] else 0) for n in sorted(tiers)]),
        ('kvmlab_tier_running_guests', 'gauge', 'Running guests in the tier.',
         [({'tier': n}, running[n]) for n in sorted(tiers)]),
        ('kvmlab_tier_busy', 'gauge', '1 when the tier used more than the busy threshold (CPUs) over the last interval.',
         [({'tier': n}, 1 if shares[n]['busy'] else 0) for n in sorted(tiers) if shares[n]['busy'] is not None]),
        ('kvmlab_tier_cpus_used', 'gauge', 'CPUs the tier used on average over the last interval.',
         per_tier('cpus')),
        ('kvmlab_tier_entitled_share', 'gauge',
         "Busy tier's weight over the busy tiers' weights (0-1), for the last interval.", per_tier('entitled')),
        ('kvmlab_tier_achieved_share', 'gauge',
         "Busy tier's CPU time over the busy tiers' CPU time (0-1), for the last interval.", per_tier('achieved')),
        ('kvmlab_guest_cpu_seconds_total', 'counter', 'CPU seconds used by the guest (its cgroup\'s cpu.stat usage).',
         per_guest('cpu_seconds')),
        ('kvmlab_guest_vcpu_run_delay_seconds_total', 'counter',
         'Seconds the guest\'s vCPU threads waited runnable for a CPU (schedstat field 2, "CPU ready").',
         per_guest('run_delay_seconds')),
        ('kvmlab_guest_vcpus', 'gauge', 'vCPU threads of the guest.',
         [({'guest': g['name'], 'tier': g['tier'] or 'none'}, len(g['vcpus'])) for g in guests]),
        ('kvmlab_guest_vcpus_confined', 'gauge', '1 when every vCPU thread of the guest may run only on guest_domain CPUs.',
         [({'guest': g['name'], 'tier': g['tier'] or 'none'}, 1 if g['confined'] else 0)
          for g in guests if g['confined'] is not None]),
        ('kvmlab_guest_tier_info', 'gauge', 'The tier of the guest (from its cgroup or the configured map); always 1.',
         [({'guest': g['name'], 'tier': g['tier'] or 'none'}, 1) for g in guests]),
        ('kvmlab_pool_busy_seconds_total', 'counter',
         'Busy seconds of the pool\'s CPUs from /proc/stat (all but idle and iowait).',
         [({'pool': p}, busy_seconds(per_cpu, pools[p], clock_ticks)) for p in POOLS if p in pools and per_cpu]),
        ('kvmlab_pool_cpus', 'gauge', 'CPUs in the pool.', [({'pool': p}, len(pools[p])) for p in POOLS if p in pools]),
        ('kvmlab_host_services_outside_reserve_cpu_seconds_total', 'counter',
         'CPU seconds of system.slice, user.slice and init.scope processes while their allowed CPUs reached '
         'outside host_reserved (an upper bound of host work on guest CPUs).',
         [({}, outside['total'])] if outside is not None else []),
        ('kvmlab_host_services_outside_reserve_processes', 'gauge',
         'Host service processes whose allowed CPUs reach outside host_reserved now.',
         [({}, len(outside['procs']))] if outside is not None else []),
        ('kvmlab_pressure_stall_seconds_total', 'counter', 'Pressure stall time from /proc/pressure (some/full).',
         [({'resource': r, 'kind': k}, pressure[r][k]['total'] / 1e6)
          for r in sorted(pressure) for k in ('some', 'full') if k in pressure[r]]),
        ('kvmlab_ksm_pages_sharing', 'gauge', 'KSM pages_sharing: pages deduplicated into shared ones.',
         [({}, ksm['pages_sharing'])] if ksm else []),
        ('kvmlab_ksm_pages_shared', 'gauge', 'KSM pages_shared: shared pages in use.',
         [({}, ksm['pages_shared'])] if ksm else []),
        ('kvmlab_ksm_saved_bytes', 'gauge', 'Memory KSM saves: pages_sharing times the page size.',
         [({}, ksm['saved_bytes'])] if ksm else []),
        ('kvmlab_zram_original_bytes', 'gauge', 'zram orig_data_size: uncompressed data stored.',
         [({'device': d}, zram[d]['orig_data_size']) for d in sorted(zram)]),
        ('kvmlab_zram_compressed_bytes', 'gauge', 'zram compr_data_size: the data compressed.',
         [({'device': d}, zram[d]['compr_data_size']) for d in sorted(zram)]),
        ('kvmlab_zram_used_bytes', 'gauge', 'zram mem_used_total: memory the device uses, overhead included.',
         [({'device': d}, zram[d]['mem_used_total']) for d in sorted(zram)]),
        ('kvmlab_swap_used_bytes', 'gauge', 'Swap in use (all swap areas).', [({}, swap)] if swap is not None else []),
        ('kvmlab_policy_status', 'gauge', 'Status verdict of a layer as its role last wrote it; always 1.',
         [({'layer': layer, 'verdict': verdicts[layer]}, 1) for layer in sorted(verdicts)]),
        ('kvmlab_collector_interval_seconds', 'gauge', 'Seconds since the previous sample.',
         [({}, interval)] if interval is not None else []),
    ]
    return fam


# ---------------------------------------------------------------------------
# Installation (pure; used by the metrics_collector module)

UNIT_HEADER = '# Managed by kvmlab.host_resources.metrics_collector; its state=absent removes this file.'
COLLECTOR_NAME = 'kvmlab_metrics.py'
#: The collector's bytecode cache, in the state directory (``service_unit``).
PYCACHE_NAME = 'pycache'


def config_document(tiers, pools=None, guests=None, busy_threshold_cpus=DEFAULT_BUSY_THRESHOLD,
                    policy_status_file=None, cgroup_root=DEFAULT_CGROUP_ROOT, libvirt_pid_dir=DEFAULT_PID_DIR):
    """The collector's configuration as a dict (checked by ``normalize_config``).

    ``tiers`` is ``kvmlab_tiers``-shaped (``slice``, ``cpu_weight``; other
    keys ignored); ``pools`` the ``cpu_pools`` result (only the four pool
    cpulists are kept); ``guests`` a ``kvmlab_guests``-shaped list of
    ``{name, tier}`` or a name -> tier dict.
    """
    doc_tiers = {}
    for name, tier in sorted((tiers or {}).items()):
        if not isinstance(tier, dict):
            raise MetricsError('tiers.%s must be a dict with slice and cpu_weight' % name)
        doc_tiers[name] = {'slice': tier.get('slice') or 'machine-%s.slice' % name,
                           'weight': tier.get('weight', tier.get('cpu_weight'))}
    doc_pools = {}
    for name in POOLS:
        value = (pools or {}).get(name)
        if value not in (None, ''):
            doc_pools[name] = value
    if isinstance(guests, list):
        mapping = {}
        for index, guest in enumerate(guests):
            if not isinstance(guest, dict) or not guest.get('name'):
                raise MetricsError('guests[%d] must be a dict with name and tier' % index)
            if guest.get('tier'):
                mapping[guest['name']] = guest['tier']
        guests = mapping
    doc = {'schema': CONFIG_SCHEMA, 'version': CONFIG_VERSION, 'tiers': doc_tiers, 'pools': doc_pools,
           'guests': dict(guests or {}), 'busy_threshold_cpus': busy_threshold_cpus,
           'policy_status_file': policy_status_file, 'cgroup_root': cgroup_root,
           'libvirt_pid_dir': libvirt_pid_dir}
    normalize_config(doc)
    return doc


def _unit_path_ok(path):
    return bool(path) and path.startswith('/') and not re.search(r'[\s"\'\\%$;]', path)


def service_unit(python, collector, config_path, output, state_path, writable_dirs, pycache_dir):
    """The oneshot service that runs the collector once.

    It imports the collector (``-c``) rather than running it as a script: a
    script is compiled again at every start, an imported module's bytecode is
    cached, in ``pycache_dir`` (``-X pycache_prefix``; the unit's file system
    is read-only but for ``writable_dirs``, which must hold it).
    """
    for path in [python, collector, config_path, output, state_path, pycache_dir] + list(writable_dirs):
        if not _unit_path_ok(path):
            raise MetricsError('path "%s" must be absolute, without spaces, quotes, %%, $ or ;' % path)
    if not any(pycache_dir.startswith(d.rstrip('/') + '/') for d in writable_dirs):
        raise MetricsError('the bytecode cache %s must lie in a writable directory (%s)'
                           % (pycache_dir, ', '.join(writable_dirs)))
    name = os.path.basename(collector)
    if not name.endswith('.py') or not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', name[:-3]):
        raise MetricsError('the collector %s must be a Python module file (NAME.py)' % collector)
    launcher = "import sys; sys.path.insert(0, '%s'); import %s; sys.exit(%s.main())" % (
        os.path.dirname(collector), name[:-3], name[:-3])
    return '\n'.join([
        UNIT_HEADER,
        '[Unit]',
        'Description=kvmlab.host_resources metrics collector (node_exporter textfile)',
        '',
        '[Service]',
        'Type=oneshot',
        'ExecStart=%s -I -S -X pycache_prefix=%s -c "%s" --config %s --output %s --state %s' % (
            python, pycache_dir, launcher, config_path, output, state_path),
        'Nice=10',
        'IOSchedulingClass=idle',
        'ProtectSystem=strict',
        'ReadWritePaths=%s' % ' '.join(sorted(set(writable_dirs))),
        'ProtectHome=read-only',
        'PrivateTmp=yes',
        'PrivateNetwork=yes',
        'NoNewPrivileges=yes',
        '',
    ])


def timer_unit(service_name, interval):
    """The timer that starts the service every ``interval`` seconds (1 s accuracy)."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise MetricsError('interval must be a whole number of seconds >= 1, got %r' % (interval,))
    return '\n'.join([
        UNIT_HEADER,
        '[Unit]',
        'Description=Run the kvmlab.host_resources metrics collector every %d s' % interval,
        '',
        '[Timer]',
        'OnBootSec=%ds' % interval,
        'OnUnitActiveSec=%ds' % interval,
        'AccuracySec=1s',
        'Unit=%s' % service_name,
        '',
        '[Install]',
        'WantedBy=timers.target',
        '',
    ])


# ---------------------------------------------------------------------------
# Files (I/O)

def write_atomic(path, text, mode=0o644):
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename.

    A reader (node_exporter) sees the old file or the new one, never a part.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, '.%s.%d.tmp' % (os.path.basename(path), os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0), mode)
    except OSError:
        os.unlink(tmp)  # a leftover of a killed run with the same pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_CLOEXEC', 0), mode)
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_state(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else None
    except (IOError, OSError, ValueError):
        return None


def run(config_path, output, state_path, root='/'):
    """One collection: read, render, write the state and then the output; returns the exit code."""
    started = time.time()
    host = Host(root)
    try:
        with open(config_path) as handle:
            config = normalize_config(json.load(handle))
    except (IOError, OSError, ValueError) as exc:
        text = render(_self_families(0, started, 1))
        write_atomic(output, text)
        sys.stderr.write('kvmlab metrics: %s: %s\n' % (config_path, exc))
        return 1
    previous = load_state(state_path) if state_path else None
    families, state = collect(config, host, previous)
    for error in host.errors:
        sys.stderr.write('kvmlab metrics: %s\n' % error)
    if state_path:
        write_atomic(state_path, json.dumps(state, sort_keys=True) + '\n', 0o600)
    families.extend(_self_families(1, started, len(host.errors)))
    write_atomic(output, render(families))
    return 0


def _self_families(success, started, errors):
    return [
        ('kvmlab_collector_success', 'gauge', '1 when the collector read its configuration and the host.',
         [({}, success)]),
        ('kvmlab_collector_read_errors', 'gauge', 'Host files the collector could not parse in this run.',
         [({}, errors)]),
        ('kvmlab_collector_cpu_seconds', 'gauge', 'CPU seconds the collector process used in this run.',
         [({}, round(time.process_time(), 6))]),
        ('kvmlab_collector_duration_seconds', 'gauge', 'Wall seconds this run took.',
         [({}, round(time.time() - started, 6))]),
        ('kvmlab_collector_last_run_timestamp_seconds', 'gauge', 'When this run ended (Unix time).',
         [({}, round(time.time(), 3))]),
    ]


USAGE = 'usage: kvmlab_metrics --config FILE --output FILE.prom [--state FILE] [--root DIR]'
#: The options of ``main``: name -> required.
OPTIONS = {'config': True, 'output': True, 'state': False, 'root': False}


def parse_args(argv):
    """``{config, output, state, root}`` from ``--name value`` / ``--name=value`` words (pure).

    Raises ``MetricsError`` naming the problem. (No argparse: its import is a
    tenth of the collector's whole CPU cost per run.)
    """
    args = {'state': None, 'root': '/'}
    words = list(argv)
    while words:
        word = words.pop(0)
        name, sep, value = word.partition('=')
        if not name.startswith('--') or name[2:] not in OPTIONS:
            raise MetricsError('unknown argument %r' % word)
        if not sep:
            if not words:
                raise MetricsError('%s needs a value' % name)
            value = words.pop(0)
        args[name[2:]] = value
    missing = ['--' + n for n, required in sorted(OPTIONS.items()) if required and not args.get(n)]
    if missing:
        raise MetricsError('missing %s' % ', '.join(missing))
    return args


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except MetricsError as exc:
        sys.stderr.write('kvmlab_metrics: %s\n%s\n' % (exc, USAGE))
        return 2
    return run(args['config'], args['output'], args['state'], args['root'])


if __name__ == '__main__':
    raise SystemExit(main())
