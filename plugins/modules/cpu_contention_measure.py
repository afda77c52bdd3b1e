#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cpu_contention_measure
short_description: Measure what each weighted tier receives when the guest CPU pool is contended
version_added: 0.1.0
description:
  - Proves that the weighted performance domains (Gold, Silver, Bronze slices with C(CPUWeight)
    512/333/167) share the guest CPU pool as their weights promise, and that an idle tier's CPU is
    borrowed. One call runs every scenario, because every task is expensive on a slow host.
  - For each scenario it loads the chosen tiers with CPU burners, per loaded tier one transient
    service C(<unit_prefix>-<tier>.service), started with C(systemd-run) in the tier's slice and
    confined to the guest pool by C(AllowedCPUs) and C(CPUAffinity), that runs one busy loop per guest
    CPU (O(burners_per_cpu) times), each bound to its CPU with C(taskset) (or floating over the pool,
    O(placement)). Every tier alone can so saturate the pool. Guests are not touched.
  - After O(warmup) seconds it reads C(usage_usec) of every tier slice's C(cpu.stat) and the pool
    CPUs' lines of C(/proc/stat), samples the burners' and the QEMU vCPU threads' C(processor) field
    and C(schedstat) run time every O(sample_interval) seconds for O(window) seconds, reads the counters
    again and stops the burners.
  - Reports per tier the promised share (weight / sum of the loaded tiers' weights), the achieved
    share (CPU time / the loaded tiers' CPU time), the share of the pool's capacity, the pairwise
    ratios, how busy the pool's CPUs were, and whether guest vCPU threads or burners ran on reserved
    CPUs (with the evidence used). Judges each run against O(tolerance), O(ratio_tolerance) and
    O(min_pool_share).
  - Leaves nothing running. Burners are stopped by unit name in a C(finally) clause, also when the
    module gets C(SIGTERM), C(SIGINT) or C(SIGHUP) or its controller goes away; each burner carries
    C(RuntimeMaxSec) as a last bound should the module itself be killed; burner units left by an
    earlier run are stopped first. O(mode=cleanup) only stops leftovers.
  - With O(load=guests) no burners run; the tier slices' CPU time is measured as the guests use it
    (load the guests yourself), which is the guests' own CPU time.
author:
  - kvmlab maintainers (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: partial
    details:
      - With O(mode=measure), check mode starts nothing and measures nothing; it returns the plan
        (scenarios, promised shares, burner units).
      - With O(mode=cleanup), check mode reports the leftover units it would stop.
  diff_mode:
    support: partial
    details: Leftover burner units stopped (before) and none (after); a measurement itself leaves the host as it was.
  platform:
    platforms: posix
    details: Linux with systemd as PID 1 and cgroup v2 (C(cpu) and C(cpuset) controllers).
options:
  tiers:
    description:
      - The tiers, as in the collection's C(kvmlab_tiers) (C(vars/tiers.yml)), in order of
        decreasing importance. Each maps a name to a dict with at least C(slice) and C(cpu_weight);
        other keys are ignored.
    type: dict
    required: true
  guest_cpus:
    description: The guest pool (C(guest_domain)) as a cpulist; burners run only here.
    type: str
    required: true
  reserved_cpus:
    description:
      - The host reserve (C(host_reserved)) as a cpulist; the measuring process binds itself there so
        that it does not compete in the pool. Defaults to the online CPUs outside O(guest_cpus).
    type: str
  scenarios:
    description:
      - Scenarios to run, in order. A string is C(all_loaded), C(<tier>_idle) or C(<tier>_alone); a
        dict has C(loaded) (list of tiers) and optionally C(name) and C(checks) (any of C(shares),
        C(ratios), C(pool)).
      - Default checks are C(shares) when every tier is loaded, C(ratios) when some are idle, C(pool) for one tier.
      - The default scenarios are C(all_loaded), C(<first tier>_idle), then C(<tier>_alone) for each tier.
    type: list
    elements: raw
  mode:
    description: C(measure) runs the scenarios; C(cleanup) only stops burner units left by an earlier run.
    type: str
    choices: [measure, cleanup]
    default: measure
  load:
    description:
      - C(burners) starts the burner units. C(guests) starts nothing and measures the tier slices as the
        guests load them.
    type: str
    choices: [burners, guests]
    default: burners
  placement:
    description:
      - C(cpu) binds each burner to one CPU of the pool (every pool CPU sees every loaded tier, no
        load balancing noise); C(pool) lets burners float over the pool.
    type: str
    choices: [cpu, pool]
    default: cpu
  burners_per_cpu:
    description: Burners per guest CPU per loaded tier.
    type: int
    default: 1
  window:
    description: Seconds over which CPU time is measured, per run.
    type: float
    default: 30
  warmup:
    description: Seconds between starting the burners and the start of the window.
    type: float
    default: 5
  repeats:
    description: Runs of every scenario; a scenario passes only when every run passes.
    type: int
    default: 1
  sample_interval:
    description: Seconds between samples of the threads' C(processor) field during the window.
    type: float
    default: 1.0
  tolerance:
    description: Allowed distance in percentage points between achieved and promised share (check C(shares)).
    type: float
    default: 2.0
  ratio_tolerance:
    description: Allowed relative error in percent of a pairwise ratio (check C(ratios)).
    type: float
    default: 10.0
  min_pool_share:
    description: Percent of the pool's capacity a lone loaded tier must use (check C(pool)).
    type: float
    default: 90.0
  runtime_margin:
    description:
      - Seconds added to O(warmup) + O(window) for each burner unit's C(RuntimeMaxSec), the last-resort
        bound should the module be killed. Starting the units must fit in it.
    type: int
    default: 120
  require_policy:
    description:
      - Fail when a tier slice is not loaded or its C(CPUWeight) (unit or live C(cpu.weight)) differs
        from O(tiers). Off, the live weights are only reported.
    type: bool
    default: true
  unit_prefix:
    description: Name prefix of the burner units; C(mode=cleanup) stops every unit matching C(<prefix>-*).
    type: str
    default: kvmlab-burn
  cgroup_root:
    description: The cgroup v2 mount; detected (C(/sys/fs/cgroup) or C(/sys/fs/cgroup/unified)) when unset.
    type: path
  proc_root:
    description: Where procfs is mounted.
    type: path
    default: /proc
notes:
  - A run takes about (O(warmup) + O(window) + start and stop) x O(repeats) per scenario.
  - The burners compete with everything else in the pool; run it when the guests are quiet, or the
    guests' load is part of the measurement.
seealso:
  - module: kvmlab.host_resources.systemd_slice_weight
  - plugin: kvmlab.host_resources.contention_report
    plugin_type: filter
'''

EXAMPLES = r'''
- name: Measure the weighted domains in the guest pool
  kvmlab.host_resources.cpu_contention_measure:
    tiers: "{{ kvmlab_tiers }}"
    guest_cpus: "{{ pools.guest_domain }}"
    reserved_cpus: "{{ pools.host_reserved }}"
    window: 30
  register: contention

- name: Only the all-loaded and Gold-idle scenarios, three runs each, tighter ratios
  kvmlab.host_resources.cpu_contention_measure:
    tiers: "{{ kvmlab_tiers }}"
    guest_cpus: 2-11
    scenarios: [all_loaded, gold_idle, {name: gold_bronze, loaded: [gold, bronze], checks: [ratios]}]
    repeats: 3
    ratio_tolerance: 5

- name: Stop burner units an interrupted run may have left
  kvmlab.host_resources.cpu_contention_measure:
    tiers: "{{ kvmlab_tiers }}"
    guest_cpus: 2-11
    mode: cleanup
'''

RETURN = r'''
report:
  description: The measurement; render it with the P(kvmlab.host_resources.contention_report#filter) filter.
  returned: O(mode=measure), not in check mode
  type: dict
  contains:
    passed:
      description: Every scenario passed.
      type: bool
    host:
      description: Host name.
      type: str
    kernel:
      description: Kernel release.
      type: str
    generated:
      description: UTC time the measurement ended, ISO 8601.
      type: str
    duration_sec:
      description: Wall time of the whole call.
      type: float
    options:
      description: The options the measurement ran with (window, warmup, repeats, tolerances, load, placement, ...).
      type: dict
    pool:
      description: C(guest_domain), C(host_reserved) and C(cpus) (guest CPU count).
      type: dict
    tiers:
      description: Per tier C(slice), C(cpu_weight) (configured), C(unit_weight) and C(live_weight) (cgroup C(cpu.weight)).
      type: dict
    scenarios:
      description:
        - Per scenario C(name), C(loaded), C(checks), C(passed), C(duration_sec), C(runs) (each the
          output of one window), and over the runs per tier C(share_pct), C(pool_pct) and
          C(delta_points) as C(mean), C(min), C(max), C(stdev), C(n); C(ratios) likewise.
        - A run holds per tier C(usage_usec), C(promised_pct), C(share_pct), C(delta_points), C(pool_pct),
          C(within); C(ratios) (C(pair), C(promised), C(achieved), C(error_pct), C(within));
          C(pool_busy_pct) (pool CPUs busy per C(/proc/stat)), C(loaded_pool_pct), C(window_usec),
          C(checks) and C(passed).
      type: list
      elements: dict
    placement:
      description:
        - C(vcpus) (QEMU vCPU threads) and C(burners), each with C(threads), C(confined_to_pool),
          C(may_leave_pool), C(evidence) (C(affinity) when every thread's affinity lies in the pool,
          C(samples) when the sampled C(processor) field is all there is, C(none) without threads),
          C(ran_on_reserved), C(samples_on_reserved), C(runtime_on_reserved_usec), C(runtime_usec).
      type: dict
    guests:
      description: The QEMU guests seen, with their cgroup and vCPU threads' affinity.
      type: list
      elements: dict
    leftover_units:
      description: Burner units still loaded after cleanup (empty when nothing was left running).
      type: list
      elements: str
plan:
  description: The scenarios, promised shares and burner units a measurement would run.
  returned: O(mode=measure) in check mode
  type: list
  elements: dict
  sample: [{"name": "all_loaded", "loaded": ["gold", "silver", "bronze"], "checks": ["shares"],
            "promised_pct": {"gold": 50.59, "silver": 32.91, "bronze": 16.5},
            "units": ["kvmlab-burn-gold-0.service"]}]
stopped:
  description: Leftover burner units of an earlier run that were stopped (or would be, in check mode).
  returned: always
  type: list
  elements: str
leftover_units:
  description: Burner units still loaded when the module ended (empty when nothing was left running).
  returned: always
  type: list
  elements: str
'''

import datetime
import os
import platform
import select
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention import (
    ContentionError,
    attribute_samples,
    merge_placement,
    burner_command,
    burner_plan,
    busy_pct,
    compute_run,
    normalize_scenarios,
    normalize_tiers,
    parse_cpu_stat,
    parse_proc_stat,
    parse_schedstat,
    parse_task_stat,
    parse_unit_list,
    placement_verdict,
    promised_shares,
    qemu_guest_name,
    slice_cgroup,
    summarize_scenario,
    validate_prefix,
    vcpu_index,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import (
    SystemdConfigError,
    detect_cgroup_root,
    parse_show,
    parse_weight,
    show_command,
)

ONLINE_CPUS = 'devices/system/cpu/online'
_SIGNALS = tuple(getattr(signal, name) for name in ('SIGTERM', 'SIGINT', 'SIGHUP') if hasattr(signal, name))
_ENV = {'LC_ALL': 'C', 'SYSTEMD_PAGER': '', 'SYSTEMD_COLORS': '0'}


class Interrupted(Exception):
    """A signal arrived, or the controller went away, while burners ran."""


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


class Contention(object):
    """Starts, measures and always stops the burners of every scenario."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.proc = module.params['proc_root']
        self.cgroup_root = module.params['cgroup_root'] or detect_cgroup_root()
        self.prefix = module.params['unit_prefix']
        self.started = []
        self.commands = 0
        self.parent = os.getppid()
        self.poller = None
        try:
            # POLLERR on the write end of stdout: the reader (ssh, the controller) closed it
            self.poller = select.poll()
            self.poller.register(1, select.POLLOUT)
        except (AttributeError, OSError, ValueError):
            self.poller = None
        self.systemctl = None
        self.systemd_run = None
        self.taskset = 'taskset'

    # -- plumbing ----------------------------------------------------------

    def run(self, args, check_rc=True):
        self.commands += 1
        rc, out, err = self.module.run_command(args, environ_update=_ENV)
        if rc != 0 and check_rc:
            raise _Failure('%s failed (rc=%d): %s' % (' '.join(args[1:3]), rc, (err or out).strip()),
                           {'cmd': args, 'rc': rc, 'stdout': out, 'stderr': err})
        return rc, out, err

    def show(self, units, properties):
        if not units:
            return {}
        _rc, out, _err = self.run(show_command(self.systemctl, units, properties))
        return parse_show(out, units)

    def check_parent(self):
        """Raise Interrupted when the controller is gone: our parent ended, or nobody reads our stdout."""
        if os.getppid() != self.parent:
            raise Interrupted('the controller went away (parent process %d ended)' % self.parent)
        if self.poller is not None:
            try:
                events = self.poller.poll(0)
            except (OSError, ValueError):
                events = []
            if any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in events):
                raise Interrupted('the controller went away (nobody reads the result any more)')

    def sleep(self, seconds):
        end = time.monotonic() + seconds
        while True:
            self.check_parent()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.5))

    # -- units -------------------------------------------------------------

    def list_units(self):
        _rc, out, _err = self.run([self.systemctl, 'list-units', '--all', '--plain', '--no-legend',
                                   '--no-pager', '%s-*' % self.prefix])
        return parse_unit_list(out, self.prefix)

    def stop_units(self, units):
        units = sorted(set(units))
        if not units:
            return
        self.run([self.systemctl, 'stop', '--'] + units, check_rc=False)
        # a unit that failed (RuntimeMaxSec hit) stays listed until reset
        self.run([self.systemctl, 'reset-failed', '--'] + units, check_rc=False)

    def cleanup(self):
        """Stop every burner this call started and every unit matching the prefix; return what is left."""
        started, self.started = self.started, []
        try:
            self.stop_units(started)
        except Exception:  # pylint: disable=broad-except
            pass  # listed and retried below
        try:
            left = self.list_units()
            if left:
                time.sleep(1)
                self.stop_units(left)
                left = self.list_units()
            return left
        except Exception as exc:  # pylint: disable=broad-except
            return ['(cleanup failed: %s) %s' % (to_native(exc), ' '.join(started))]

    # -- reading the host --------------------------------------------------

    def cpu_usage(self, cgroup):
        text = _read(os.path.join(self.cgroup_root, cgroup.lstrip('/'), 'cpu.stat'))
        if text is None:
            return None
        return parse_cpu_stat(text).get('usage_usec')

    def cgroup_weight(self, cgroup):
        return parse_weight((_read(os.path.join(self.cgroup_root, cgroup.lstrip('/'), 'cpu.weight')) or '').strip())

    def proc_stat(self, cpus):
        text = _read(os.path.join(self.proc, 'stat'))
        if text is None:
            raise ContentionError('cannot read %s/stat' % self.proc)
        return parse_proc_stat(text, cpus)

    def allowed(self, pid, tid):
        text = _read(os.path.join(self.proc, str(pid), 'task', str(tid), 'status')) or ''
        for line in text.splitlines():
            if line.startswith('Cpus_allowed_list:'):
                try:
                    return parse_cpulist(line.split(':', 1)[1])
                except CpuListError:
                    return None
        return None

    def guests(self):
        """QEMU processes and their vCPU threads, found in /proc (not guessed from scope names)."""
        out = []
        for entry in os.listdir(self.proc):
            if not entry.isdigit():
                continue
            raw = _read(os.path.join(self.proc, entry, 'cmdline'))
            if not raw:
                continue
            argv = raw.split('\0')
            if not os.path.basename(argv[0]).startswith('qemu-system'):
                continue
            cgroup = ''
            for line in (_read(os.path.join(self.proc, entry, 'cgroup')) or '').splitlines():
                if line.startswith('0::'):
                    cgroup = line[3:]
            threads = []
            try:
                tids = os.listdir(os.path.join(self.proc, entry, 'task'))
            except OSError:
                continue
            for tid in tids:
                comm = (_read(os.path.join(self.proc, entry, 'task', tid, 'comm')) or '').strip()
                index = vcpu_index(comm)
                if index is None:
                    continue
                allowed = self.allowed(entry, tid)
                threads.append({'pid': int(entry), 'tid': int(tid), 'vcpu': index, 'comm': comm,
                                'allowed': sorted(allowed) if allowed is not None else []})
            name = qemu_guest_name(argv) or 'pid %s' % entry
            threads.sort(key=lambda t: t['vcpu'])
            out.append({'name': name, 'pid': int(entry), 'cgroup': cgroup, 'vcpu_threads': threads})
        out.sort(key=lambda g: g['name'])
        return out

    def loops(self, burner):
        """The busy loops of a burner unit: the processes of its cgroup but its main shell."""
        text = _read(os.path.join(self.cgroup_root, burner['cgroup'].lstrip('/'), 'cgroup.procs')) or ''
        return sorted(int(p) for p in text.split() if p.isdigit() and int(p) != burner['pid'])

    def sample(self, threads, samples):
        for thread in threads:
            base = os.path.join(self.proc, str(thread['pid']), 'task', str(thread['tid']))
            stat = _read(os.path.join(base, 'stat'))
            sched = _read(os.path.join(base, 'schedstat'))
            if stat is None or sched is None:
                continue
            try:
                samples[thread['name']].append((parse_schedstat(sched), parse_task_stat(stat)['processor']))
            except ContentionError:
                continue

    # -- the run -----------------------------------------------------------

    def preflight(self, tiers):
        slices = [s for _n, s, _w in tiers]
        try:
            shown = self.show(slices, ('Id', 'LoadState', 'ActiveState', 'CPUWeight', 'ControlGroup'))
        except SystemdConfigError as exc:
            raise ContentionError(to_native(exc))
        info = {}
        problems = []
        for name, slice_name, weight in tiers:
            show = shown[slice_name]
            unit_weight = parse_weight(show.get('CPUWeight', ''))
            cgroup = slice_cgroup(slice_name, show.get('ControlGroup'))
            info[name] = {'slice': slice_name, 'cpu_weight': weight, 'unit_weight': unit_weight,
                          'live_weight': self.cgroup_weight(cgroup), 'cgroup': cgroup,
                          'load_state': show.get('LoadState')}
            if show.get('LoadState') != 'loaded':
                problems.append('%s is %s' % (slice_name, show.get('LoadState') or 'unknown'))
            elif unit_weight != weight:
                problems.append('%s has CPUWeight=%s, not %d' % (slice_name, unit_weight, weight))
        if problems and self.params['require_policy']:
            raise ContentionError('the tier policy is not applied (%s); apply the host foundation first '
                                  '(playbooks/site.yml), or set require_policy=false' % '; '.join(problems))
        return info

    def run_scenario(self, scenario, tiers, tier_info, pool, reserved):
        params = self.params
        weights = dict((n, w) for n, _s, w in tiers)
        slices = dict((n, s) for n, s, _w in tiers)
        pool_list = format_cpulist(pool)
        burners = []
        if params['load'] == 'burners':
            runtime_max = params['warmup'] + params['window'] + params['runtime_margin']
            for burner in burner_plan(self.prefix, scenario['loaded'], pool, params['burners_per_cpu']):
                self.started.append(burner['unit'])
                self.run(burner_command(self.systemd_run, burner, slices[burner['tier']], pool_list,
                                        params['placement'], runtime_max, taskset=self.taskset))
                burners.append(burner)
                self.check_parent()
            shown = self.show([b['unit'] for b in burners], ('Id', 'MainPID', 'ActiveState', 'ControlGroup'))
            for burner in burners:
                show = shown[burner['unit']]
                burner['pid'] = int(show.get('MainPID') or 0)
                burner['cgroup'] = show.get('ControlGroup', '')
                if not burner['pid'] or show.get('ActiveState') != 'active':
                    raise ContentionError('burner %s did not start (%s)' % (burner['unit'], show.get('ActiveState')))
                expected = slice_cgroup(slices[burner['tier']]) + '/'
                if not burner['cgroup'].startswith(expected):
                    raise ContentionError('burner %s runs in %s, not under %s'
                                          % (burner['unit'], burner['cgroup'], expected))
        self.sleep(params['warmup'])

        # live weights, now that the loaded slices are active
        for name in scenario['loaded']:
            live = self.cgroup_weight(tier_info[name]['cgroup'])
            tier_info[name]['live_weight'] = live
            if params['require_policy'] and live is not None and live != weights[name]:
                raise ContentionError('%s has cpu.weight %s live, not %d' % (slices[name], live, weights[name]))

        guests = self.guests()
        threads = []
        for guest in guests:
            for vcpu in guest['vcpu_threads']:
                threads.append({'kind': 'vcpus', 'name': '%s %s' % (guest['name'], vcpu['comm']),
                                'pid': vcpu['pid'], 'tid': vcpu['tid'], 'allowed': set(vcpu['allowed'])})
        for burner in burners:
            burner['loops'] = self.loops(burner)
            if len(burner['loops']) != len(burner['cpus']):
                raise ContentionError('burner %s runs %d loops, not %d'
                                      % (burner['unit'], len(burner['loops']), len(burner['cpus'])))
            for pid in burner['loops']:
                allowed = self.allowed(pid, pid)
                threads.append({'kind': 'burners', 'name': '%s pid %d' % (burner['unit'], pid), 'pid': pid,
                                'tid': pid, 'allowed': set(allowed) if allowed is not None else set()})
        samples = dict((t['name'], []) for t in threads)

        before_usage = dict((n, self.cpu_usage(tier_info[n]['cgroup'])) for n in weights)
        before_stat = self.proc_stat(pool)
        start = time.monotonic()
        self.sample(threads, samples)
        while True:
            self.check_parent()
            left = params['window'] - (time.monotonic() - start)
            if left <= 0:
                break
            time.sleep(min(left, params['sample_interval']))
            self.sample(threads, samples)
        after_usage = dict((n, self.cpu_usage(tier_info[n]['cgroup'])) for n in weights)
        after_stat = self.proc_stat(pool)
        elapsed_usec = int((time.monotonic() - start) * 1000000)

        if burners:
            alive = self.show([b['unit'] for b in burners], ('Id', 'MainPID', 'ActiveState'))
            gone = [b['unit'] for b in burners
                    if alive[b['unit']].get('ActiveState') != 'active'
                    or int(alive[b['unit']].get('MainPID') or 0) != b['pid']
                    or self.loops(b) != b['loops']]
            self.stop_units([b['unit'] for b in burners])
            self.started = [u for u in self.started if u not in set(b['unit'] for b in burners)]
            if gone:
                raise ContentionError('burners ended during the window: %s (RuntimeMaxSec too short? raise '
                                      'runtime_margin)' % ', '.join(gone))

        usage = {}
        for name in weights:
            first, last = before_usage[name], after_usage[name]
            if first is None or last is None:
                if name in scenario['loaded']:
                    raise ContentionError('cannot read %s/cpu.stat of %s during the window'
                                          % (tier_info[name]['cgroup'], slices[name]))
                usage[name] = 0
            else:
                usage[name] = max(0, last - first)
        run = compute_run(weights, scenario['loaded'], usage, elapsed_usec, len(pool),
                          pool_busy_pct=busy_pct(before_stat, after_stat),
                          tolerance=params['tolerance'], ratio_tolerance=params['ratio_tolerance'],
                          min_pool_share=params['min_pool_share'], checks=scenario['checks'])
        placement = {}
        for kind in ('vcpus', 'burners'):
            judged = []
            for thread in threads:
                if thread['kind'] != kind:
                    continue
                judged.append({'name': thread['name'], 'allowed': thread['allowed'],
                               'sampled': attribute_samples(samples[thread['name']], reserved)})
            placement[kind] = placement_verdict(judged, pool, reserved)
        run['placement'] = placement
        return run, guests

    def measure(self, tiers, scenarios, pool, reserved):
        params = self.params
        started_at = time.monotonic()
        tier_info = self.preflight(tiers)
        stale = self.list_units()
        if stale:
            self.stop_units(stale)
        results = []
        guests = []
        placement = {'vcpus': [], 'burners': []}
        for scenario in scenarios:
            t0 = time.monotonic()
            runs = []
            for _repeat in range(params['repeats']):
                run, guests = self.run_scenario(scenario, tiers, tier_info, pool, reserved)
                runs.append(run)
                placement['vcpus'].append(run['placement']['vcpus'])
                placement['burners'].append(run['placement']['burners'])
            summary = summarize_scenario(scenario, runs)
            summary['duration_sec'] = round(time.monotonic() - t0, 1)
            results.append(summary)
        return {
            'passed': all(s['passed'] for s in results),
            'host': platform.node(),
            'kernel': platform.release(),
            'generated': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'duration_sec': round(time.monotonic() - started_at, 1),
            'options': dict((k, params[k]) for k in ('window', 'warmup', 'repeats', 'sample_interval', 'tolerance',
                                                     'ratio_tolerance', 'min_pool_share', 'load', 'placement',
                                                     'burners_per_cpu', 'runtime_margin', 'unit_prefix')),
            'pool': {'guest_domain': format_cpulist(pool), 'host_reserved': format_cpulist(reserved),
                     'cpus': len(pool)},
            'tiers': dict((n, {'slice': tier_info[n]['slice'], 'cpu_weight': tier_info[n]['cpu_weight'],
                               'unit_weight': tier_info[n]['unit_weight'],
                               'live_weight': tier_info[n]['live_weight']}) for n, _s, _w in tiers),
            'scenarios': results,
            'placement': dict((kind, merge_placement(items)) for kind, items in placement.items()),
            'guests': guests,
            'stale_units_stopped': stale,
        }


class _Failure(Exception):
    def __init__(self, msg, extra):
        Exception.__init__(self, msg)
        self.extra = extra


def _online_cpus(module):
    path = os.path.join('/sys', ONLINE_CPUS)
    text = _read(path)
    if text is None:
        module.fail_json(msg='cannot read the online CPUs from %s' % path)
    return parse_cpulist(text, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tiers=dict(type='dict', required=True),
            guest_cpus=dict(type='str', required=True),
            reserved_cpus=dict(type='str'),
            scenarios=dict(type='list', elements='raw'),
            mode=dict(type='str', choices=['measure', 'cleanup'], default='measure'),
            load=dict(type='str', choices=['burners', 'guests'], default='burners'),
            placement=dict(type='str', choices=['cpu', 'pool'], default='cpu'),
            burners_per_cpu=dict(type='int', default=1),
            window=dict(type='float', default=30.0),
            warmup=dict(type='float', default=5.0),
            repeats=dict(type='int', default=1),
            sample_interval=dict(type='float', default=1.0),
            tolerance=dict(type='float', default=2.0),
            ratio_tolerance=dict(type='float', default=10.0),
            min_pool_share=dict(type='float', default=90.0),
            runtime_margin=dict(type='int', default=120),
            require_policy=dict(type='bool', default=True),
            unit_prefix=dict(type='str', default='kvmlab-burn'),
            cgroup_root=dict(type='path'),
            proc_root=dict(type='path', default='/proc'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        validate_prefix(params['unit_prefix'])
        tiers = normalize_tiers(params['tiers'])
        scenarios = normalize_scenarios(params['scenarios'], [n for n, _s, _w in tiers])
        pool = parse_cpulist(params['guest_cpus'], 'guest_cpus')
        for name in ('window', 'sample_interval', 'tolerance', 'ratio_tolerance', 'min_pool_share'):
            if params[name] <= 0:
                raise ContentionError('%s must be positive, got %s' % (name, params[name]))
        for name in ('repeats', 'burners_per_cpu'):
            if params[name] < 1:
                raise ContentionError('%s must be at least 1, got %s' % (name, params[name]))
        if params['warmup'] < 0 or params['runtime_margin'] < 10:
            raise ContentionError('warmup must be >= 0 and runtime_margin >= 10 seconds')
    except (ContentionError, CpuListError) as exc:
        module.fail_json(msg=to_native(exc))

    online = _online_cpus(module)
    if not pool or not pool <= online:
        module.fail_json(msg='guest_cpus %s must be online CPUs (online: %s)'
                         % (params['guest_cpus'], format_cpulist(online)))
    try:
        reserved = (parse_cpulist(params['reserved_cpus'], 'reserved_cpus')
                    if params['reserved_cpus'] else online - pool)
    except CpuListError as exc:
        module.fail_json(msg=to_native(exc))
    if reserved & pool:
        module.fail_json(msg='reserved_cpus %s overlaps guest_cpus %s'
                         % (format_cpulist(reserved), format_cpulist(pool)))

    job = Contention(module)
    job.systemctl = module.get_bin_path('systemctl', required=True)

    if params['mode'] == 'cleanup':
        try:
            left = job.list_units()
            if left and not module.check_mode:
                left_after = job.cleanup()
            else:
                left_after = left
        except _Failure as exc:
            module.fail_json(msg=to_native(exc), **exc.extra)
        module.exit_json(changed=bool(left), stopped=left, leftover_units=[] if not module.check_mode else left,
                         diff={'before': {'units': left}, 'after': {'units': left_after if module.check_mode else []}}
                         if left else {})
        return

    if module.check_mode:
        plan = []
        weights = dict((n, w) for n, _s, w in tiers)
        for scenario in scenarios:
            promised = promised_shares(weights, scenario['loaded'])
            units = ([b['unit'] for b in burner_plan(params['unit_prefix'], scenario['loaded'], pool,
                                                     params['burners_per_cpu'])]
                     if params['load'] == 'burners' else [])
            plan.append(dict(scenario, promised_pct=dict((k, round(v, 2)) for k, v in promised.items()),
                             units=units))
        stale = job.list_units()
        module.exit_json(changed=bool(stale), plan=plan, stopped=stale, leftover_units=stale)
        return

    if params['load'] == 'burners':
        job.systemd_run = module.get_bin_path('systemd-run', required=True)
        if params['placement'] == 'cpu':
            job.taskset = module.get_bin_path('taskset', required=True)

    # measure from the host reserve, so that the measurement does not compete in the pool
    try:
        os.sched_setaffinity(0, reserved or online)
    except (AttributeError, OSError, ValueError):
        pass

    previous = {}

    def _on_signal(signum, _frame):
        raise Interrupted('interrupted by signal %d' % signum)

    for sig in _SIGNALS:
        previous[sig] = signal.signal(sig, _on_signal)

    report = error = extra = None
    try:
        report = job.measure(tiers, scenarios, pool, reserved)
    except Interrupted as exc:
        error = to_native(exc)
    except (ContentionError, SystemdConfigError, CpuListError) as exc:
        error = to_native(exc)
    except _Failure as exc:
        error, extra = to_native(exc), exc.extra
    finally:
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        left = job.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if error is not None:
        # the controller may be gone: leave the outcome in the journal too
        module.log('cpu_contention_measure: %s; burners stopped, left running: %s'
                   % (error, ', '.join(left) or 'nothing'))
        module.fail_json(msg='%s; burners stopped, left running: %s' % (error, ', '.join(left) or 'nothing'),
                         leftover_units=left, stopped=[], **(extra or {}))
    report['leftover_units'] = left
    if left:
        report['passed'] = False
        module.fail_json(msg='burner units still loaded after cleanup: %s' % ', '.join(left),
                         report=report, leftover_units=left, stopped=report['stale_units_stopped'])
    stale = report['stale_units_stopped']
    module.exit_json(changed=bool(stale), report=report, stopped=stale, leftover_units=left,
                     diff={'before': {'units': stale}, 'after': {'units': []}} if stale else {})


if __name__ == '__main__':
    main()
