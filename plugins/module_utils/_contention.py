# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Measured contention between weighted tiers: the arithmetic and the kernel text.

Pure functions from data to data, used by the ``cpu_contention_measure``
module (through ``_contention_run``, which starts the load and reads the
counters on the host); the controller-only rendering lives in
``plugin_utils/_contention_report``:

* scenarios: which tiers are loaded and which checks judge the run;
* the share arithmetic: promised share = weight / sum of the loaded tiers'
  weights; achieved share = a tier's CPU time / the loaded tiers' CPU time;
  pool share = a tier's CPU time / (window x guest CPUs);
* pairwise ratios, pass or fail against a tolerance;
* parsers for ``cpu.stat``, ``/proc/stat``, ``/proc/<pid>/task/<tid>/stat``,
  ``schedstat``, ``/proc/<pid>/cgroup`` and cgroup v1 ``cpuacct.usage``
  text (the generic ones have their one home in ``_metrics``, the collector
  that must run alone on the host, and are wrapped here), and the
  attribution of sampled thread CPU time to the CPUs it ran on;
* the names and ``systemd-run`` argument lists of the burner units.

Nothing here runs a command or reads a file; the runner passes file contents.
"""

from __future__ import annotations

import math
import re

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _metrics

#: Check names a scenario can ask for.
CHECKS = ('shares', 'ratios', 'pool')

_TIER_RE = re.compile(r'^[a-z0-9][a-z0-9_]*$')
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
_PREFIX_RE = re.compile(r'^[a-z0-9][a-z0-9-]*$')


class ContentionError(ValueError):
    """An argument or a reading that does not allow a measurement; the message says why."""


# ---------------------------------------------------------------------------
# tiers and scenarios

def normalize_tiers(tiers):
    """``[(name, slice, weight), ...]`` in the given order from ``kvmlab_tiers``-shaped data."""
    if not isinstance(tiers, dict) or not tiers:
        raise ContentionError('tiers must map tier names to {slice, cpu_weight}, got %r' % (tiers,))
    out = []
    for name, tier in tiers.items():
        if not isinstance(name, str) or not _TIER_RE.match(name):
            raise ContentionError('tier name "%s" must be lower case letters, digits and _' % (name,))
        if not isinstance(tier, dict) or 'slice' not in tier or 'cpu_weight' not in tier:
            raise ContentionError('tier %s needs slice and cpu_weight, got %r' % (name, tier))
        slice_name = tier['slice']
        if not isinstance(slice_name, str) or not slice_name.endswith('.slice'):
            raise ContentionError('tier %s: slice "%s" is not a .slice unit' % (name, slice_name))
        try:
            weight = int(tier['cpu_weight'])
        except (TypeError, ValueError):
            raise ContentionError('tier %s: cpu_weight "%s" is not a number' % (name, tier['cpu_weight']))
        if weight < 1 or weight > 10000:
            raise ContentionError('tier %s: cpu_weight %d is outside 1-10000' % (name, weight))
        out.append((name, slice_name, weight))
    return out


def default_checks(loaded, tier_names):
    """The checks a scenario gets when it names none.

    One loaded tier: ``pool`` (idle borrowing: it takes the whole pool).
    Every tier loaded: ``shares`` (each tier near its promised share).
    Some tiers idle: ``ratios`` (the loaded tiers keep their weight ratios).
    """
    if len(loaded) == 1:
        return ['pool']
    if set(loaded) == set(tier_names):
        return ['shares']
    return ['ratios']


def _shorthand(text, tier_names):
    if text in ('all', 'all_loaded'):
        return {'name': 'all_loaded', 'loaded': list(tier_names)}
    for suffix, alone in (('_idle', False), ('_alone', True)):
        if text.endswith(suffix) and text[:-len(suffix)] in tier_names:
            tier = text[:-len(suffix)]
            loaded = [tier] if alone else [t for t in tier_names if t != tier]
            return {'name': text, 'loaded': loaded}
    raise ContentionError('scenario "%s" is not all_loaded, <tier>_idle or <tier>_alone for tiers %s'
                          % (text, ', '.join(tier_names)))


def default_scenarios(tier_names):
    """All tiers loaded, the heaviest tier idle, then each tier alone."""
    names = ['all_loaded']
    if len(tier_names) > 2:
        names.append('%s_idle' % tier_names[0])
    names.extend('%s_alone' % t for t in tier_names)
    return names


def normalize_scenarios(items, tier_names):
    """Scenario dicts ``{name, loaded, checks}`` from shorthands and dicts.

    Shorthands: ``all_loaded`` (or ``all``), ``<tier>_idle``, ``<tier>_alone``.
    A dict names ``loaded`` tiers and optionally ``name`` and ``checks``.
    ``loaded`` keeps the tiers' order. Names must be unique.
    """
    tier_names = list(tier_names)
    if items is None or items == []:
        items = default_scenarios(tier_names)
    if not isinstance(items, (list, tuple)):
        raise ContentionError('scenarios must be a list, got %r' % (items,))
    out = []
    for item in items:
        if isinstance(item, str):
            item = _shorthand(item, tier_names)
        if not isinstance(item, dict):
            raise ContentionError('scenario %r is neither a name nor a dict' % (item,))
        loaded = item.get('loaded')
        if isinstance(loaded, str):
            loaded = [t for t in re.split(r'[\s,]+', loaded) if t]
        if not loaded or not isinstance(loaded, (list, tuple)):
            raise ContentionError('scenario %r needs a list of loaded tiers' % (item,))
        unknown = [t for t in loaded if t not in tier_names]
        if unknown:
            raise ContentionError('scenario %r loads unknown tiers %s (tiers: %s)'
                                  % (item.get('name'), ', '.join(map(str, unknown)), ', '.join(tier_names)))
        loaded = [t for t in tier_names if t in loaded]
        name = item.get('name') or '_'.join(loaded) + ('_loaded' if len(loaded) > 1 else '_alone')
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ContentionError('scenario name "%s" must be letters, digits, _ . -' % (name,))
        checks = item.get('checks')
        if checks is None:
            checks = default_checks(loaded, tier_names)
        if isinstance(checks, str):
            checks = [checks]
        bad = [c for c in checks if c not in CHECKS]
        if bad:
            raise ContentionError('scenario %s: unknown checks %s (known: %s)'
                                  % (name, ', '.join(map(str, bad)), ', '.join(CHECKS)))
        if len(loaded) == 1 and ('shares' in checks or 'ratios' in checks):
            raise ContentionError('scenario %s loads one tier: only the pool check applies' % name)
        out.append({'name': name, 'loaded': loaded, 'checks': list(checks)})
    names = [s['name'] for s in out]
    dupes = sorted(set(n for n in names if names.count(n) > 1))
    if dupes:
        raise ContentionError('scenario names must be unique: %s' % ', '.join(dupes))
    return out


# ---------------------------------------------------------------------------
# share arithmetic

def promised_shares(weights, loaded):
    """Percent of the contended CPU each loaded tier is promised: weight / sum of loaded weights."""
    total = sum(weights[t] for t in loaded)
    if total <= 0:
        raise ContentionError('loaded tiers %s have no weight' % ', '.join(loaded))
    return dict((t, 100.0 * weights[t] / total) for t in loaded)


def ratio_pairs(order):
    """Every pair (a, b) of tiers with a before b."""
    order = list(order)
    return [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]


def _ratio(num, den):
    if not den:
        return None
    return float(num) / float(den)


def compute_run(weights, loaded, usage_usec, window_usec, pool_cpus, pool_busy_pct=None,
                tolerance=2.0, ratio_tolerance=10.0, min_pool_share=90.0, checks=None):
    """Judge one measured window.

    ``weights``: tier -> weight (every tier); ``loaded``: the contending
    tiers in order; ``usage_usec``: tier -> CPU time its slice used during
    the window (missing tiers count 0); ``window_usec``: the window's wall
    time; ``pool_cpus``: number of guest CPUs; ``pool_busy_pct``: how busy
    the pool's CPUs were (from /proc/stat), reported as given.

    Returns a dict with per-tier ``usage_usec``, ``promised_pct``,
    ``share_pct`` (of the loaded tiers' CPU time), ``delta_points``,
    ``pool_pct`` (of the pool's capacity) and ``within``; ``ratios`` for each
    pair of loaded tiers; ``checks`` (name -> bool) and ``passed``.
    """
    if window_usec <= 0 or pool_cpus <= 0:
        raise ContentionError('window (%s us) and pool CPUs (%s) must be positive' % (window_usec, pool_cpus))
    checks = list(checks if checks is not None else default_checks(loaded, list(weights)))
    promised = promised_shares(weights, loaded)
    capacity = float(window_usec) * pool_cpus
    loaded_total = sum(max(0, int(usage_usec.get(t, 0) or 0)) for t in loaded)
    tiers = {}
    for tier in weights:
        used = max(0, int(usage_usec.get(tier, 0) or 0))
        entry = {
            'loaded': tier in loaded,
            'weight': weights[tier],
            'usage_usec': used,
            'pool_pct': round(100.0 * used / capacity, 2),
            'promised_pct': None,
            'share_pct': None,
            'delta_points': None,
            'within': None,
        }
        if tier in loaded:
            share = 100.0 * used / loaded_total if loaded_total else 0.0
            entry['promised_pct'] = round(promised[tier], 2)
            entry['share_pct'] = round(share, 2)
            entry['delta_points'] = round(share - promised[tier], 2)
            entry['within'] = abs(share - promised[tier]) <= tolerance + 1e-9
        tiers[tier] = entry
    ratios = []
    for first, second in ratio_pairs(loaded):
        want = _ratio(weights[first], weights[second])
        got = _ratio(usage_usec.get(first, 0), usage_usec.get(second, 0))
        error = None if got is None else 100.0 * (got - want) / want
        ratios.append({
            'pair': '%s:%s' % (first, second),
            'promised': round(want, 3),
            'achieved': None if got is None else round(got, 3),
            'error_pct': None if error is None else round(error, 2),
            'within': error is not None and abs(error) <= ratio_tolerance + 1e-9,
        })
    loaded_pool_pct = 100.0 * loaded_total / capacity
    results = {}
    if 'shares' in checks:
        results['shares'] = all(tiers[t]['within'] for t in loaded)
    if 'ratios' in checks:
        results['ratios'] = all(r['within'] for r in ratios)
    if 'pool' in checks:
        results['pool'] = loaded_pool_pct >= min_pool_share - 1e-9
    return {
        'window_usec': int(window_usec),
        'pool_cpus': pool_cpus,
        'pool_busy_pct': None if pool_busy_pct is None else round(pool_busy_pct, 2),
        'loaded_pool_pct': round(loaded_pool_pct, 2),
        'tiers': tiers,
        'ratios': ratios,
        'checks': results,
        'passed': all(results.values()) if results else True,
    }


def _spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {'mean': round(mean, 2), 'min': round(min(values), 2), 'max': round(max(values), 2),
            'stdev': round(math.sqrt(var), 2), 'n': len(values)}


def summarize_scenario(scenario, runs):
    """Mean, min, max and standard deviation of each tier's numbers over a scenario's runs.

    ``passed`` is true only when every run passed: the spread is part of the claim.
    """
    tiers = {}
    if runs:
        for tier in runs[0]['tiers']:
            tiers[tier] = {
                'share_pct': _spread([r['tiers'][tier]['share_pct'] for r in runs]),
                'pool_pct': _spread([r['tiers'][tier]['pool_pct'] for r in runs]),
                'delta_points': _spread([r['tiers'][tier]['delta_points'] for r in runs]),
                'promised_pct': runs[0]['tiers'][tier]['promised_pct'],
                'loaded': runs[0]['tiers'][tier]['loaded'],
                'weight': runs[0]['tiers'][tier]['weight'],
            }
    ratios = []
    if runs:
        for index, ratio in enumerate(runs[0]['ratios']):
            ratios.append({
                'pair': ratio['pair'],
                'promised': ratio['promised'],
                'achieved': _spread([r['ratios'][index]['achieved'] for r in runs]),
                'error_pct': _spread([r['ratios'][index]['error_pct'] for r in runs]),
            })
    return {
        'name': scenario['name'],
        'phase': scenario.get('phase'),
        'loaded': scenario['loaded'],
        'checks': scenario['checks'],
        'runs': runs,
        'tiers': tiers,
        'ratios': ratios,
        'pool_busy_pct': _spread([r.get('pool_busy_pct') for r in runs]),
        'loaded_pool_pct': _spread([r['loaded_pool_pct'] for r in runs]),
        'passed': bool(runs) and all(r['passed'] for r in runs),
    }


def compare_phases(scenarios):
    """Per scenario and loaded tier, the mean share in every phase and the spread between phases.

    ``scenarios``: summaries (``summarize_scenario``) carrying ``phase``.
    Returns ``[{'scenario', 'tier', 'promised_pct', 'shares': {phase: mean},
    'spread_points'}]`` in the order met, only for scenarios measured in
    more than one phase; ``spread_points`` is max - min of the phase means
    (the "running guests get what moved guests get" figure). A lone tier's
    figure is its share of the pool.
    """
    order = []
    by_key = {}
    for scen in scenarios:
        for tier in scen.get('loaded', []):
            key = (scen['name'], tier)
            data = scen['tiers'][tier]
            spread = data['pool_pct'] if len(scen['loaded']) == 1 else data['share_pct']
            if key not in by_key:
                order.append(key)
                by_key[key] = {'scenario': scen['name'], 'tier': tier,
                               'promised_pct': 100.0 if len(scen['loaded']) == 1 else data['promised_pct'],
                               'shares': {}}
            by_key[key]['shares'][scen.get('phase')] = None if spread is None else spread['mean']
    out = []
    for key in order:
        entry = by_key[key]
        values = [v for v in entry['shares'].values() if v is not None]
        if len(entry['shares']) < 2:
            continue
        entry['spread_points'] = round(max(values) - min(values), 2) if len(values) > 1 else None
        out.append(entry)
    return out


# ---------------------------------------------------------------------------
# parsers of kernel text

def parse_cpu_stat(text):
    """``cpu.stat`` of a cgroup v2 directory as a dict of ints (``usage_usec``, ...)."""
    return _metrics.parse_cpu_stat(text)


def parse_proc_stat(text, cpus):
    """``(busy, total)`` ticks of the given CPUs from ``/proc/stat``, summed.

    Busy is every field but idle and iowait of the first eight (see
    ``_metrics.parse_proc_stat``, which reads the lines). Raises
    ``ContentionError`` when a wanted CPU has no line.
    """
    per_cpu = _metrics.parse_proc_stat(text)
    wanted = set(cpus)
    missing = wanted - set(per_cpu)
    if missing:
        raise ContentionError('/proc/stat has no line for CPUs %s' % ','.join(map(str, sorted(missing))))
    return (sum(per_cpu[cpu][0] for cpu in wanted), sum(per_cpu[cpu][1] for cpu in wanted))


def parse_cpuacct_usage(text):
    """Microseconds from a cgroup v1 ``cpuacct.usage`` (nanoseconds), None when it is no number."""
    text = (text or '').strip()
    return int(text) // 1000 if text.isdigit() else None


def busy_pct(before, after):
    """Percent busy between two ``(busy, total)`` readings, None when no tick passed."""
    dbusy = after[0] - before[0]
    dtotal = after[1] - before[1]
    if dtotal <= 0:
        return None
    return 100.0 * dbusy / dtotal


def parse_task_stat(text):
    """``{'comm', 'state', 'processor', 'utime', 'stime'}`` from ``/proc/<pid>/task/<tid>/stat``.

    The command name sits in parentheses and may itself hold spaces and
    parentheses, so the fields are counted from the last ``)``: field 3 is the
    state, 14/15 utime/stime (ticks), 39 the CPU the thread last ran on.
    """
    text = (text or '').strip()
    open_at = text.find('(')
    close_at = text.rfind(')')
    if open_at < 0 or close_at < open_at:
        raise ContentionError('cannot parse task stat "%s"' % text[:80])
    comm = text[open_at + 1:close_at]
    rest = text[close_at + 1:].split()
    # rest[0] is field 3
    if len(rest) < 37:
        raise ContentionError('task stat of "%s" has %d fields, need 39' % (comm, len(rest) + 2))
    return {
        'comm': comm,
        'state': rest[0],
        'utime': int(rest[11]),
        'stime': int(rest[12]),
        'processor': int(rest[36]),
    }


def parse_schedstat(text):
    """Nanoseconds a thread ran, the first field of ``/proc/<pid>/task/<tid>/schedstat``."""
    try:
        return _metrics.parse_schedstat(text)[0]
    except ValueError as exc:
        raise ContentionError(str(exc))


def vcpu_index(comm):
    """The vCPU number of a QEMU vCPU thread name (``CPU 1/TCG``, ``CPU 0/KVM``), else None."""
    return _metrics.vcpu_index(comm)


def guest_cgroup(proc_cgroup_text, controller=''):
    """A guest's own cgroup from its QEMU process's ``/proc/<pid>/cgroup`` text, or None.

    ``controller`` ``''`` reads the unified (v2) line, ``cpuacct`` or ``cpu``
    the v1 line of that controller. The process sits in ``.../libvirt/emulator``
    (v2: ``machine.slice/machine-qemu...scope``; v1 without systemd:
    ``machine/qemu-N-NAME.libvirt-qemu``); its guest's cgroup is the scope or
    ``.libvirt-qemu`` directory above, which holds every thread of the guest.
    Domain ids change at every start: the path is read, never guessed.
    """
    for line in (proc_cgroup_text or '').splitlines():
        parts = line.strip().split(':', 2)
        if len(parts) != 3:
            continue
        if (controller == '' and parts[1] == '') or (controller and controller in parts[1].split(',')):
            path = parts[2].strip()
            if not path or path == '/':
                return None
            return _metrics.guest_cgroup(path)
    return None


def partition_cgroup(partition):
    """The cgroup directory libvirt uses for a resource partition on a host without systemd.

    ``/machine`` stays ``/machine``; every deeper element gets ``.partition``:
    ``/machine/gold`` is ``/machine/gold.partition``.
    """
    parts = [p for p in (partition or '').strip('/').split('/') if p]
    if not parts:
        raise ContentionError('partition "%s" is not an absolute path such as /machine/gold' % (partition,))
    return '/' + '/'.join([parts[0]] + ['%s.partition' % p for p in parts[1:]])


def qemu_guest_name(argv):
    """The guest name from a QEMU argument list (``-name guest=NAME,debug-threads=on``)."""
    argv = list(argv)
    for index, arg in enumerate(argv[:-1]):
        if arg == '-name':
            value = argv[index + 1]
            for part in value.split(','):
                if part.startswith('guest='):
                    return part[len('guest='):]
            return value.split(',')[0]
    return None


def attribute_samples(samples, reserved):
    """CPU time of one thread that ran on reserved CPUs, from periodic samples.

    ``samples``: ``[(runtime_ns, processor), ...]`` in time order. The time a
    thread ran between two samples is counted on the CPU the later sample saw
    (exact unless it migrated in between). An interval in which the thread
    did not run does not count: the ``processor`` field of a sleeping thread
    is only where it last ran, possibly before its affinity changed. Returns
    ``{'samples', 'samples_on_reserved', 'runtime_ns', 'runtime_on_reserved_ns',
    'cpus'}``; ``samples_on_reserved`` counts the intervals it ran on a
    reserved CPU and ``cpus`` the CPUs it ran on.
    """
    reserved = set(reserved)
    on_reserved = 0
    ran = 0
    ran_reserved = 0
    cpus = set()
    previous = None
    for runtime, cpu in samples:
        if previous is not None:
            delta = max(0, runtime - previous)
            if delta:
                ran += delta
                cpus.add(cpu)
                if cpu in reserved:
                    ran_reserved += delta
                    on_reserved += 1
        previous = runtime
    return {
        'samples': len(samples),
        'samples_on_reserved': on_reserved,
        'runtime_ns': ran,
        'runtime_on_reserved_ns': ran_reserved,
        'cpus': sorted(cpus),
    }


def placement_verdict(threads, pool, reserved):
    """Whether any sampled thread's CPU time ran on reserved CPUs, and the evidence.

    ``threads``: dicts with ``allowed`` (a set of CPUs) and the output of
    ``attribute_samples`` under ``sampled``. When every thread's affinity is
    inside the pool, the kernel cannot have run it elsewhere: the evidence is
    ``affinity`` (the samples, which should then find no time on reserved
    CPUs, would reveal an affinity changed during the window). Otherwise the
    sampled ``processor`` field is the evidence (``samples``), an estimate
    that misses migrations between samples.
    """
    pool = set(pool)
    reserved = set(reserved)
    confined = [t for t in threads if set(t['allowed']) <= pool]
    loose = [t for t in threads if not set(t['allowed']) <= pool]
    on_reserved_ns = sum(t['sampled']['runtime_on_reserved_ns'] for t in threads)
    samples_reserved = sum(t['sampled']['samples_on_reserved'] for t in threads)
    if not threads:
        evidence = 'none'
        ran_on_reserved = None
    else:
        evidence = 'samples' if loose else 'affinity'
        ran_on_reserved = on_reserved_ns > 0
    return {
        'threads': len(threads),
        'confined_to_pool': len(confined),
        'may_leave_pool': sorted(t['name'] for t in loose),
        'evidence': evidence,
        'ran_on_reserved': ran_on_reserved,
        'samples_on_reserved': samples_reserved,
        'runtime_on_reserved_usec': on_reserved_ns // 1000,
        'runtime_usec': sum(t['sampled']['runtime_ns'] for t in threads) // 1000,
    }


def merge_placement(items):
    """One placement verdict over several windows (runs of every scenario).

    ``threads`` is the most threads seen in one window; ``may_leave_pool``
    the union of the names whose affinity reached outside the pool;
    ``confined_to_pool`` the rest; ``ran_on_reserved`` true when any window
    saw it, None when no window had threads.
    """
    items = [i for i in items if i and i.get('threads')]
    if not items:
        return {'threads': 0, 'confined_to_pool': 0, 'may_leave_pool': [], 'evidence': 'none',
                'ran_on_reserved': None, 'samples_on_reserved': 0, 'runtime_on_reserved_usec': 0,
                'runtime_usec': 0}
    loose = sorted(set(n for i in items for n in i['may_leave_pool']))
    threads = max(i['threads'] for i in items)
    ran = [i['ran_on_reserved'] for i in items if i['ran_on_reserved'] is not None]
    return {
        'threads': threads,
        'confined_to_pool': max(0, threads - len(loose)),
        'may_leave_pool': loose,
        'evidence': 'samples' if loose else 'affinity',
        'ran_on_reserved': any(ran) if ran else None,
        'samples_on_reserved': sum(i['samples_on_reserved'] for i in items),
        'runtime_on_reserved_usec': sum(i['runtime_on_reserved_usec'] for i in items),
        'runtime_usec': sum(i['runtime_usec'] for i in items),
    }


# ---------------------------------------------------------------------------
# burner units

def validate_prefix(prefix):
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ContentionError('unit_prefix "%s" must be lower case letters, digits and -' % (prefix,))
    return prefix


def burner_plan(prefix, loaded, pool_cpus, burners_per_cpu=1):
    """The burner units of one scenario: ``[{unit, tier, cpus}]``, one unit per loaded tier.

    Each unit runs one burner per guest CPU (``burners_per_cpu`` times), so
    every tier alone can saturate the whole pool and every CPU of the pool
    sees every loaded tier. ``cpus`` lists the CPU of each burner. One
    transient unit per tier rather than per burner: starting a unit costs
    seconds on a slow host.
    """
    validate_prefix(prefix)
    pool_cpus = sorted(pool_cpus)
    out = []
    for tier in loaded:
        out.append({'unit': '%s-%s.service' % (prefix, tier.replace('_', '-')), 'tier': tier,
                    'cpus': pool_cpus * burners_per_cpu})
    return out


LOOP = 'while :; do :; done'


def burner_script(cpus, placement, taskset='taskset', shell='/bin/sh'):
    """The shell text a burner unit runs: one busy loop per entry of ``cpus``, then ``wait``.

    With placement ``cpu`` each loop is bound to its CPU with ``taskset``.
    The text holds no ``$`` and no ``%``: systemd 252 expands both in the
    command lines of transient units.
    """
    parts = []
    for cpu in cpus:
        if placement == 'cpu':
            parts.append("%s -c %d %s -c '%s' &" % (taskset, cpu, shell, LOOP))
        else:
            parts.append("%s -c '%s' &" % (shell, LOOP))
    parts.append('wait')
    text = ' '.join(parts)
    if '$' in text or '%' in text:
        raise ContentionError('burner command "%s" would be expanded by systemd' % text)
    return text


def burner_command(systemd_run, burner, slice_name, pool_cpulist, placement, runtime_max_sec,
                   taskset='taskset', shell='/bin/sh'):
    """``systemd-run`` arguments for one tier's burner unit: a transient service in the tier's slice.

    ``AllowedCPUs`` and ``CPUAffinity`` confine it to the guest pool (cpuset
    and affinity; with placement ``cpu`` each loop is then bound to one CPU
    of it). ``RuntimeMaxSec`` bounds it when nothing else stops it;
    ``KillMode=control-group`` stops every loop with the unit; ``--collect``
    unloads it once it ends, failed or not.
    """
    return [
        systemd_run,
        '--unit=%s' % burner['unit'],
        '--slice=%s' % slice_name,
        '--collect',
        '--quiet',
        '--description=kvmlab contention burner (%s, %d loops)' % (burner['tier'], len(burner['cpus'])),
        '-p', 'AllowedCPUs=%s' % pool_cpulist,
        '-p', 'CPUAffinity=%s' % pool_cpulist,
        '-p', 'RuntimeMaxSec=%d' % int(math.ceil(runtime_max_sec)),
        '-p', 'KillMode=control-group',
        '-p', 'CPUAccounting=yes',
        '--',
        shell, '-c', burner_script(burner['cpus'], placement, taskset, shell),
    ]


def slice_cgroup(slice_name, control_group=None):
    """The cgroup path of a slice: systemd's ``ControlGroup`` when set, else derived from the name.

    ``machine-gold.slice`` lives in ``/machine.slice/machine-gold.slice``: every
    dash-separated prefix is a parent slice. An inactive slice has no
    ``ControlGroup`` in ``systemctl show``; its path is still this one.
    """
    if control_group:
        return control_group
    try:
        return _metrics.slice_cgroup(slice_name)
    except _metrics.MetricsError as exc:
        raise ContentionError(str(exc))


def parse_unit_list(text, prefix):
    """Unit names from ``systemctl list-units --all --plain --no-legend PREFIX-*``."""
    out = []
    for line in (text or '').splitlines():
        parts = line.split()
        if parts and parts[0].startswith(prefix + '-'):
            out.append(parts[0])
    return sorted(set(out))
