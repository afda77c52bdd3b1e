# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contention measurement on the host: start the load, read the counters, always clean up.

The I/O half of ``cpu_contention_measure`` (the module is its face). The
arithmetic, the checks and the parsers are in ``_contention``; the busy
guests' plan and XML in ``_contention_guests``. :func:`execute` takes the
``AnsibleModule`` (for ``run_command``, ``get_bin_path``, ``check_mode`` and
``log``) and returns ``(ok, result)`` for ``exit_json`` / ``fail_json``.

Loads (``load``):

* ``burners``: one transient unit per loaded tier in its tier slice, one busy
  loop per guest CPU, floating over the pool (``placement=pool``), bound one
  per CPU (``cpu``) or both in turn (``both``); CPU time from the tier slices.
* ``guests``: real busy guests defined through libvirt, per tier
  ``guests_per_tier`` of ``busy_vcpus`` vCPUs booting ``guest_kernel``,
  placed as the shared execution pool places guests. Phase ``in_place``: they
  start where guests started before apply (``machine.slice``), pinned; then
  get apply's persistent XML (partition, shares) and their scopes the tier's
  weight budget live. Phase ``moved``: destroy and start puts each into its
  tier slice. Each tier's CPU time is the sum over its guests' vCPU cgroups
  (``libvirt/vcpuN`` below the cgroup of ``/proc/<qemu pid>/cgroup``; the
  emulator threads run on the reserve). Idle tiers' guests are paused.
* ``existing``: nothing is started; the tier slices are measured as they are.
* ``auto``: ``guests`` when ``guest_kernel`` exists on the host, else ``burners``.

Everything started is stopped in a ``finally``, also on SIGTERM, SIGINT,
SIGHUP or when the controller goes away: burner units by name (each also has
``RuntimeMaxSec``), guests by name (destroy, undefine) with their QEMU pid as
the fallback. Leftovers of an earlier run are removed first: units by prefix,
guests by prefix and the contention mark in their metadata.
"""

from __future__ import annotations

import datetime
import os
import platform
import select
import signal
import time

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _contention_guests as cg
from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention import (
    ContentionError,
    attribute_samples,
    burner_command,
    burner_plan,
    busy_pct,
    compute_run,
    guest_cgroup,
    merge_placement,
    normalize_scenarios,
    normalize_tiers,
    parse_cpu_stat,
    parse_cpuacct_usage,
    parse_proc_stat,
    parse_schedstat,
    parse_task_stat,
    parse_unit_list,
    partition_cgroup,
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
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import PlacementError, tier_settings
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import (
    SystemdConfigError,
    detect_cgroup_root,
    parse_show,
    parse_weight,
    show_command,
)

ONLINE_CPUS = '/sys/devices/system/cpu/online'
V1_ROOT = '/sys/fs/cgroup'
DEFAULT_KERNEL = '/var/lib/kvmlab/spinall.elf'
_SIGNALS = tuple(getattr(signal, name) for name in ('SIGTERM', 'SIGINT', 'SIGHUP') if hasattr(signal, name))
_ENV = {'LC_ALL': 'C', 'SYSTEMD_PAGER': '', 'SYSTEMD_COLORS': '0'}
# libvirt constants (kept here so that the fake in the unit tests needs none)
START_PAUSED = 1
AFFECT_LIVE = 1
STATE_RUNNING = 1
STATE_PAUSED = 3

#: The options a report records.
REPORT_OPTIONS = ('window', 'warmup', 'repeats', 'sample_interval', 'tolerance', 'ratio_tolerance', 'min_pool_share',
                  'load', 'placement', 'burners_per_cpu', 'runtime_margin', 'unit_prefix', 'phases',
                  'guests_per_tier', 'busy_vcpus', 'guest_kernel', 'guest_memory', 'guest_prefix', 'systemd')


class Interrupted(Exception):
    """A signal arrived, or the controller went away, while the load ran."""


class CommandFailure(Exception):
    """A command failed; ``extra`` carries cmd, rc, stdout and stderr for fail_json."""

    def __init__(self, msg, extra):
        Exception.__init__(self, msg)
        self.extra = extra


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def online_cpus(path=ONLINE_CPUS):
    text = _read(path)
    if text is None:
        raise ContentionError('cannot read the online CPUs from %s' % path)
    return parse_cpulist(text, path)


class Cgroups(object):
    """CPU time and weight of a cgroup: cgroup v2, or v1 controllers without systemd.

    CPU time is ``usage_usec`` of ``cpu.stat`` in the v2 hierarchy at
    ``root`` (on a hybrid v1 host the unified hierarchy accounts every cgroup's
    CPU time too), else v1 ``cpuacct.usage``. The weight is v2 ``cpu.weight``,
    or v1 ``cpu.shares`` below ``v1_root/cpu``.
    """

    def __init__(self, version, root, v1_root=V1_ROOT):
        self.version = version
        self.root = root
        self.v1_root = v1_root

    def _v1(self, controller):
        for name in (controller, 'cpu,cpuacct', 'cpuacct,cpu'):
            path = os.path.join(self.v1_root, name)
            if os.path.isdir(path):
                return path
        return os.path.join(self.v1_root, controller)

    def guest_path(self, proc_cgroup_text):
        """The guest's own cgroup from its QEMU process's /proc/<pid>/cgroup (unified line first)."""
        path = guest_cgroup(proc_cgroup_text, '')
        if path is None and self.version == 1:
            path = guest_cgroup(proc_cgroup_text, 'cpuacct') or guest_cgroup(proc_cgroup_text, 'cpu')
        return path

    def usage_usec(self, cgroup):
        text = _read(os.path.join(self.root, cgroup.lstrip('/'), 'cpu.stat'))
        if text is not None:
            usage = parse_cpu_stat(text).get('usage_usec')
            if usage is not None or self.version == 2:
                return usage
        if self.version == 2:
            return None
        return parse_cpuacct_usage(_read(os.path.join(self._v1('cpuacct'), cgroup.lstrip('/'), 'cpuacct.usage')))

    def vcpu_cgroups(self, cgroup):
        """The guest's vCPU cgroups (libvirt's ``vcpuN`` below ``libvirt/`` or the guest cgroup itself).

        Their CPU time is the time the guest's vCPU threads ran: the part the
        pool's weights share out. The rest of the guest cgroup (``emulator``,
        IOThreads) runs on the reserve and is not what the tiers compete for.
        """
        base = self.root if self.version == 2 else self._v1('cpuacct')
        found = []
        for sub in ('libvirt', ''):
            directory = os.path.join(base, cgroup.lstrip('/'), sub)
            try:
                entries = sorted(os.listdir(directory))
            except OSError:
                continue
            found.extend((cgroup.rstrip('/') + '/' + (sub + '/' if sub else '') + e) for e in entries
                         if e.startswith('vcpu') and e[4:].isdigit() and os.path.isdir(os.path.join(directory, e)))
            if found:
                break
        return found

    def vcpu_usage_usec(self, cgroup):
        """CPU time of the guest's vCPU cgroups added up, or None when it has none (or one is unreadable)."""
        cgroups = self.vcpu_cgroups(cgroup)
        if not cgroups:
            return None
        total = 0
        for path in cgroups:
            usage = self.usage_usec(path)
            if usage is None:
                return None
            total += usage
        return total

    def weight(self, cgroup):
        if self.version == 2:
            return parse_weight((_read(os.path.join(self.root, cgroup.lstrip('/'), 'cpu.weight')) or '').strip())
        return parse_weight((_read(os.path.join(self._v1('cpu'), cgroup.lstrip('/'), 'cpu.shares')) or '').strip())

    def exists(self, cgroup):
        base = self.root if self.version == 2 else self._v1('cpu')
        return os.path.isdir(os.path.join(base, cgroup.lstrip('/')))


class Runner(object):
    """Starts, measures and always stops the load of every scenario."""

    def __init__(self, module, pool, reserved, online, lib=None):
        self.module = module
        self.params = module.params
        self.pool = pool
        self.reserved = reserved
        self.online = online
        self.proc = self.params['proc_root']
        self.cgroup_root = self.params['cgroup_root'] or detect_cgroup_root()
        self.prefix = self.params['unit_prefix']
        self.started = []            # burner units
        self.created = {}            # guest name -> last known QEMU pid (None when not running)
        self.lib = lib
        self.conn = None
        self.run_id = '%d-%s' % (os.getpid(), os.urandom(4).hex())
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
        self.emulator = None
        version = 2 if self.params['systemd'] or not os.path.isdir(os.path.join(V1_ROOT, 'cpu')) else 1
        if self.params['cgroup_version'] != 'auto':
            version = int(self.params['cgroup_version'])
        self.cgroups = Cgroups(version, self.cgroup_root)

    # -- plumbing ----------------------------------------------------------

    def run(self, args, check_rc=True):
        rc, out, err = self.module.run_command(args, environ_update=_ENV)
        if rc != 0 and check_rc:
            raise CommandFailure('%s failed (rc=%d): %s' % (' '.join(args[1:3]), rc, (err or out).strip()),
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

    # -- burner units ------------------------------------------------------

    def list_units(self):
        if self.systemctl is None:
            return []
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

    def cleanup_units(self):
        """Stop every burner this call started and every unit matching the prefix; return what is left."""
        started, self.started = self.started, []
        if self.systemctl is None:
            return []
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
            return ['(cleanup failed: %s) %s' % (exc, ' '.join(started))]

    def loops(self, burner):
        """The busy loops of a burner unit: the processes of its cgroup but its main shell."""
        text = _read(os.path.join(self.cgroup_root, burner['cgroup'].lstrip('/'), 'cgroup.procs')) or ''
        return sorted(int(p) for p in text.split() if p.isdigit() and int(p) != burner['pid'])

    def start_burners(self, scenario, slices, placement):
        params = self.params
        burners = []
        runtime_max = params['warmup'] + params['window'] + params['runtime_margin']
        for burner in burner_plan(self.prefix, scenario['loaded'], self.pool, params['burners_per_cpu']):
            self.started.append(burner['unit'])
            self.run(burner_command(self.systemd_run, burner, slices[burner['tier']], format_cpulist(self.pool),
                                    placement, runtime_max, taskset=self.taskset))
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
        return burners

    def stop_burners(self, burners):
        if not burners:
            return
        alive = self.show([b['unit'] for b in burners], ('Id', 'MainPID', 'ActiveState'))
        gone = [b['unit'] for b in burners
                if alive[b['unit']].get('ActiveState') != 'active'
                or int(alive[b['unit']].get('MainPID') or 0) != b['pid']
                or self.loops(b) != b['loops']]
        self.stop_units([b['unit'] for b in burners])
        names = set(b['unit'] for b in burners)
        self.started = [u for u in self.started if u not in names]
        if gone:
            raise ContentionError('burners ended during the window: %s (RuntimeMaxSec too short? raise '
                                  'runtime_margin)' % ', '.join(gone))

    # -- reading the host --------------------------------------------------

    def proc_stat(self):
        text = _read(os.path.join(self.proc, 'stat'))
        if text is None:
            raise ContentionError('cannot read %s/stat' % self.proc)
        return parse_proc_stat(text, self.pool)

    def allowed(self, pid, tid):
        text = _read(os.path.join(self.proc, str(pid), 'task', str(tid), 'status')) or ''
        for line in text.splitlines():
            if line.startswith('Cpus_allowed_list:'):
                try:
                    return parse_cpulist(line.split(':', 1)[1])
                except CpuListError:
                    return None
        return None

    def qemu_process(self, pid):
        """``{'name', 'pid', 'cgroup', 'vcpu_threads'}`` of a QEMU process, None when it is none."""
        raw = _read(os.path.join(self.proc, str(pid), 'cmdline'))
        if not raw:
            return None
        argv = raw.split('\0')
        if not os.path.basename(argv[0]).startswith('qemu-system'):
            return None
        cgroup = self.cgroups.guest_path(_read(os.path.join(self.proc, str(pid), 'cgroup')))
        threads = []
        try:
            tids = os.listdir(os.path.join(self.proc, str(pid), 'task'))
        except OSError:
            return None
        for tid in tids:
            comm = (_read(os.path.join(self.proc, str(pid), 'task', tid, 'comm')) or '').strip()
            index = vcpu_index(comm)
            if index is None:
                continue
            allowed = self.allowed(pid, tid)
            threads.append({'pid': int(pid), 'tid': int(tid), 'vcpu': index, 'comm': comm,
                            'allowed': sorted(allowed) if allowed is not None else []})
        threads.sort(key=lambda t: t['vcpu'])
        return {'name': qemu_guest_name(argv) or 'pid %s' % pid, 'pid': int(pid), 'cgroup': cgroup,
                'vcpu_threads': threads}

    def qemu_guests(self):
        """Every QEMU process and its vCPU threads, found in /proc (not guessed from scope names)."""
        out = []
        for entry in os.listdir(self.proc):
            if entry.isdigit():
                found = self.qemu_process(entry)
                if found is not None:
                    out.append(found)
        out.sort(key=lambda g: g['name'])
        return out

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

    # -- guests ------------------------------------------------------------

    def connect(self):
        if self.conn is None:
            try:
                self.lib.registerErrorHandler(lambda *args: None, None)
            except Exception:  # pylint: disable=broad-except
                pass
            try:
                self.conn = self.lib.open(self.params['uri'])
            except self.lib.libvirtError as exc:
                raise ContentionError('cannot connect to libvirt at uri "%s": %s' % (self.params['uri'], exc))
        return self.conn

    def lookup(self, name):
        try:
            return self.connect().lookupByName(name)
        except self.lib.libvirtError:
            return None

    def pid_of(self, name):
        """The QEMU pid of a running guest from libvirt's pid file, checked against its command line."""
        text = (_read(os.path.join(self.params['pid_dir'], '%s.pid' % name)) or '').strip()
        if not text.isdigit():
            return None
        raw = _read(os.path.join(self.proc, text, 'cmdline'))
        if not raw or qemu_guest_name(raw.split('\0')) != name:
            return None
        return int(text)

    def leftover_guests(self):
        """Names of domains an earlier measurement left (prefix and contention mark)."""
        if self.lib is None:
            return []
        prefix = self.params['guest_prefix']
        out = []
        for dom in self.connect().listAllDomains():
            name = dom.name()
            if name.startswith(prefix + '-') and name not in self.created:
                try:
                    xml_text = dom.XMLDesc(0)
                except self.lib.libvirtError:
                    continue
                if cg.is_leftover(name, xml_text, prefix):
                    out.append(name)
        return sorted(out)

    def remove_guest(self, name, pid=None):
        """Destroy and undefine one guest; kill its QEMU by pid when libvirt cannot. True when it is gone."""
        dom = self.lookup(name)
        pid = pid or self.pid_of(name)
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
            except self.lib.libvirtError:
                pass
            try:
                dom.undefine()
            except self.lib.libvirtError:
                pass
        if pid and self.pid_alive_as(pid, name):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 5
            while self.pid_alive_as(pid, name) and time.monotonic() < deadline:
                time.sleep(0.05)
            dom = self.lookup(name)
            if dom is not None:
                try:
                    dom.undefine()
                except self.lib.libvirtError:
                    pass
        return self.lookup(name) is None and not (pid and self.pid_alive_as(pid, name))

    def pid_alive_as(self, pid, name):
        raw = _read(os.path.join(self.proc, str(pid), 'cmdline'))
        stat = _read(os.path.join(self.proc, str(pid), 'stat')) or ''
        if not raw or stat.rsplit(')', 1)[-1].split()[:1] == ['Z']:
            return False
        return qemu_guest_name(raw.split('\0')) == name

    def cleanup_guests(self):
        """Remove every guest this call created; return the names still there."""
        created, self.created = self.created, {}
        if self.lib is None or not created:
            return []
        left = []
        for name in sorted(created):
            try:
                if not self.remove_guest(name, created[name]):
                    left.append(name)
            except Exception as exc:  # pylint: disable=broad-except
                left.append('%s (cleanup failed: %s)' % (name, exc))
        return left

    def define(self, entry, phase):
        dom = self.lookup(entry['name']) if entry['name'] in self.created else None
        xml_text = cg.domain_xml(entry, self.params['guest_kernel'], phase, self.run_id,
                                 memory_mib=self.params['guest_memory'], domain_type=self.params['domain_type'],
                                 emulator=self.emulator, uuid=dom.UUIDString() if dom is not None else None)
        try:
            return self.connect().defineXML(xml_text)
        except self.lib.libvirtError as exc:
            raise ContentionError('cannot define guest %s: %s' % (entry['name'], exc))

    def start_guest(self, entry):
        """Start a defined guest paused; return ``{'pid', 'cgroup'}`` read from /proc."""
        dom = self.lookup(entry['name'])
        try:
            dom.createWithFlags(START_PAUSED)
        except self.lib.libvirtError as exc:
            raise ContentionError('cannot start guest %s (tier %s, partition %s): %s'
                                  % (entry['name'], entry['tier'], entry['partition'], exc))
        pid = self.pid_of(entry['name'])
        self.created[entry['name']] = pid
        if pid is None:
            raise ContentionError('guest %s runs but has no QEMU process in %s'
                                  % (entry['name'], self.params['pid_dir']))
        found = self.qemu_process(pid)
        if found is None or not found['cgroup']:
            raise ContentionError('guest %s: no cgroup in %s/%d/cgroup' % (entry['name'], self.proc, pid))
        return {'pid': pid, 'cgroup': found['cgroup'], 'id': dom.ID()}

    def set_live_weight(self, name, weight, cgroup):
        dom = self.lookup(name)
        try:
            dom.setSchedulerParametersFlags({'cpu_shares': weight}, AFFECT_LIVE)
        except self.lib.libvirtError as exc:
            raise ContentionError('guest %s: cannot set its live cpu_shares to %d: %s' % (name, weight, exc))
        if self.params['systemd']:
            scope = cgroup.rstrip('/').rsplit('/', 1)[-1]
            self.run([self.systemctl, 'set-property', '--runtime', '--', scope, 'CPUWeight=%d' % weight])

    def set_states(self, plan, loaded):
        for name, want in sorted(cg.scenario_states(plan, loaded).items()):
            dom = self.lookup(name)
            state = dom.state()[0]
            try:
                if want == 'running' and state == STATE_PAUSED:
                    dom.resume()
                elif want == 'paused' and state == STATE_RUNNING:
                    dom.suspend()
            except self.lib.libvirtError as exc:
                raise ContentionError('guest %s: cannot make it %s: %s' % (name, want, exc))
            self.check_parent()

    def prepare_phase(self, phase, plan, running):
        """Put the guests where ``phase`` wants them; returns ``{name: {'pid', 'cgroup', 'id'}}`` and weights."""
        if phase == 'in_place' or not running:
            for entry in plan:
                if entry['name'] in running:
                    continue
                self.created.setdefault(entry['name'], None)
                self.define(entry, 'in_place' if phase == 'in_place' else 'moved')
            for entry in plan:
                if entry['name'] not in running:
                    running[entry['name']] = self.start_guest(entry)
                    self.check_parent()
            if phase == 'in_place':
                # what apply does to guests that already run: the persistent XML gets the tier's
                # partition and shares (applied at the next start), the scopes the weight budget live
                for entry in plan:
                    self.define(entry, 'moved')
        else:
            # the move: destroy and start, one guest after the other
            for entry in plan:
                dom = self.lookup(entry['name'])
                try:
                    dom.destroy()
                except self.lib.libvirtError as exc:
                    raise ContentionError('cannot stop guest %s to move it: %s' % (entry['name'], exc))
                self.created[entry['name']] = None
                running[entry['name']] = self.start_guest(entry)
                self.check_parent()
        weights = cg.scope_weights(plan, running, systemd=self.params['systemd'])
        for entry in plan:
            if entry['name'] in weights:
                self.set_live_weight(entry['name'], weights[entry['name']], running[entry['name']]['cgroup'])
        return running, weights

    # -- the run -----------------------------------------------------------

    def preflight(self, tiers):
        """Per tier its cgroup (slice, or partition directory without systemd), configured and live weight."""
        info = {}
        problems = []
        if self.params['systemd']:
            slices = [s for _n, s, _w in tiers]
            try:
                shown = self.show(slices, ('Id', 'LoadState', 'ActiveState', 'CPUWeight', 'ControlGroup'))
            except SystemdConfigError as exc:
                raise ContentionError(str(exc))
            for name, slice_name, weight in tiers:
                show = shown[slice_name]
                unit_weight = parse_weight(show.get('CPUWeight', ''))
                cgroup = slice_cgroup(slice_name, show.get('ControlGroup'))
                info[name] = {'slice': slice_name, 'cpu_weight': weight, 'unit_weight': unit_weight,
                              'live_weight': self.cgroups.weight(cgroup), 'cgroup': cgroup}
                if show.get('LoadState') != 'loaded':
                    problems.append('%s is %s' % (slice_name, show.get('LoadState') or 'unknown'))
                elif unit_weight != weight:
                    problems.append('%s has CPUWeight=%s, not %d' % (slice_name, unit_weight, weight))
        else:
            for name, slice_name, weight in tiers:
                settings = tier_settings(self.params['tiers'], name)
                cgroup = partition_cgroup(settings['partition'])
                live = self.cgroups.weight(cgroup)
                info[name] = {'slice': slice_name, 'partition': settings['partition'], 'cpu_weight': weight,
                              'unit_weight': None, 'live_weight': live, 'cgroup': cgroup}
                if not self.cgroups.exists(cgroup):
                    problems.append('partition %s has no cgroup %s' % (settings['partition'], cgroup))
                elif live != settings['cpu_shares']:
                    problems.append('%s has cpu.shares %s, not %d' % (cgroup, live, settings['cpu_shares']))
        if problems and self.params['require_policy']:
            raise ContentionError('the tier policy is not applied (%s); apply the host foundation first '
                                  '(playbooks/site.yml), or set require_policy=false' % '; '.join(problems))
        return info

    def check_live_weights(self, loaded, tier_info, weights):
        for name in loaded:
            live = self.cgroups.weight(tier_info[name]['cgroup'])
            tier_info[name]['live_weight'] = live
            want = (weights[name] if self.cgroups.version == 2
                    else tier_settings(self.params['tiers'], name)['cpu_shares'])
            if self.params['require_policy'] and live is not None and live != want:
                what = 'cpu.weight' if self.cgroups.version == 2 else 'cpu.shares'
                raise ContentionError('%s has %s %s live, not %d' % (tier_info[name]['slice'], what, live, want))

    def window(self, scenario, weights, usage_of, threads, check):
        """Measure one window: CPU time per tier (``usage_of()``), /proc/stat, thread samples."""
        params = self.params
        samples = dict((t['name'], []) for t in threads)
        before = usage_of()
        before_stat = self.proc_stat()
        start = time.monotonic()
        self.sample(threads, samples)
        while True:
            self.check_parent()
            left = params['window'] - (time.monotonic() - start)
            if left <= 0:
                break
            time.sleep(min(left, params['sample_interval']))
            self.sample(threads, samples)
        after = usage_of()
        after_stat = self.proc_stat()
        elapsed_usec = int((time.monotonic() - start) * 1000000)
        check()
        usage = {}
        for name in weights:
            first, last = before['tiers'].get(name), after['tiers'].get(name)
            if first is None or last is None:
                if name in scenario['loaded']:
                    raise ContentionError('cannot read the CPU time of tier %s during the window (%s)'
                                          % (name, before.get('where', {}).get(name)))
                usage[name] = 0
            else:
                usage[name] = max(0, last - first)
        run = compute_run(weights, scenario['loaded'], usage, elapsed_usec, len(self.pool),
                          pool_busy_pct=busy_pct(before_stat, after_stat),
                          tolerance=params['tolerance'], ratio_tolerance=params['ratio_tolerance'],
                          min_pool_share=params['min_pool_share'], checks=scenario['checks'])
        if 'guests' in before:
            run['guest_usage_usec'] = dict((g, max(0, after['guests'][g] - before['guests'][g]))
                                           for g in sorted(before['guests']))
        placement = {}
        for kind in ('vcpus', 'burners'):
            judged = [{'name': t['name'], 'allowed': t['allowed'],
                       'sampled': attribute_samples(samples[t['name']], self.reserved)}
                      for t in threads if t['kind'] == kind]
            placement[kind] = placement_verdict(judged, self.pool, self.reserved)
        run['placement'] = placement
        return run

    @staticmethod
    def vcpu_threads(guests):
        return [{'kind': 'vcpus', 'name': '%s %s' % (g['name'], v['comm']), 'pid': v['pid'], 'tid': v['tid'],
                 'allowed': set(v['allowed'])} for g in guests for v in g['vcpu_threads']]

    def slice_phase(self, phase, scenarios, tiers, tier_info):
        """Burners (or the existing load) in the tier slices: the CPU time of each tier slice."""
        params = self.params
        weights = dict((n, w) for n, _s, w in tiers)
        slices = dict((n, s) for n, s, _w in tiers)

        def usage_of():
            return {'tiers': dict((n, self.cgroups.usage_usec(tier_info[n]['cgroup'])) for n in weights),
                    'where': dict((n, tier_info[n]['cgroup'] + '/cpu.stat') for n in weights)}

        results, guests = [], []
        for scenario in scenarios:
            t0 = time.monotonic()
            runs = []
            for _repeat in range(params['repeats']):
                burners = self.start_burners(scenario, slices, phase) if phase in ('pool', 'cpu') else []
                self.sleep(params['warmup'])
                self.check_live_weights(scenario['loaded'], tier_info, weights)
                guests = self.qemu_guests()
                threads = self.vcpu_threads(guests)
                for burner in burners:
                    burner['loops'] = self.loops(burner)
                    if len(burner['loops']) != len(burner['cpus']):
                        raise ContentionError('burner %s runs %d loops, not %d'
                                              % (burner['unit'], len(burner['loops']), len(burner['cpus'])))
                    for pid in burner['loops']:
                        allowed = self.allowed(pid, pid)
                        threads.append({'kind': 'burners', 'name': '%s pid %d' % (burner['unit'], pid), 'pid': pid,
                                        'tid': pid, 'allowed': set(allowed) if allowed is not None else set()})
                runs.append(self.window(scenario, weights, usage_of, threads, lambda b=burners: self.stop_burners(b)))
            summary = summarize_scenario(dict(scenario, phase=phase), runs)
            summary['duration_sec'] = round(time.monotonic() - t0, 1)
            results.append(summary)
        return results, guests

    def guest_phase(self, phase, scenarios, tiers, tier_info, plan, running, record):
        """Busy guests: each tier's CPU time is the sum over its guests' own cgroups."""
        params = self.params
        weights = dict((n, w) for n, _s, w in tiers)
        running, live_weights = self.prepare_phase(phase, plan, running)
        record.append({'phase': phase, 'guests': [dict(name=e['name'], tier=e['tier'],
                                                       **running[e['name']]) for e in plan],
                       'scope_weights': live_weights})
        tier_of = dict((e['name'], e['tier']) for e in plan)

        def still_there():
            for name, info in sorted(running.items()):
                found = self.qemu_process(info['pid'])
                if found is None or found['name'] != name or found['cgroup'] != info['cgroup']:
                    raise ContentionError('guest %s (pid %d) ended or left its cgroup %s during the window'
                                          % (name, info['pid'], info['cgroup']))

        def usage_of():
            # the vCPU cgroups' time where libvirt made them (what the pool's weights share out),
            # else the whole guest cgroup
            per_guest = {}
            for name, info in running.items():
                per_guest[name] = self.cgroups.vcpu_usage_usec(info['cgroup'])
                if per_guest[name] is None:
                    per_guest[name] = self.cgroups.usage_usec(info['cgroup'])
                if per_guest[name] is None:
                    still_there()   # says which guest ended, when one did
                    raise ContentionError('cannot read the CPU time of guest %s in its cgroup %s'
                                          % (name, info['cgroup']))
            tiers_usage = dict((n, sum(u for g, u in per_guest.items() if tier_of[g] == n)) for n in weights)
            return {'tiers': tiers_usage, 'guests': per_guest}

        results, guests = [], []
        for scenario in scenarios:
            t0 = time.monotonic()
            runs = []
            self.set_states(plan, scenario['loaded'])
            for _repeat in range(params['repeats']):
                self.sleep(params['warmup'])
                if phase == 'moved':
                    self.check_live_weights(scenario['loaded'], tier_info, weights)
                guests = [self.qemu_process(running[e['name']]['pid']) for e in plan]
                guests = [g for g in guests if g is not None]
                runs.append(self.window(scenario, weights, usage_of, self.vcpu_threads(guests), still_there))
            summary = summarize_scenario(dict(scenario, phase=phase), runs)
            summary['duration_sec'] = round(time.monotonic() - t0, 1)
            results.append(summary)
        return results, guests

    def measure(self, tiers, scenarios, phases, plan):
        params = self.params
        started_at = time.monotonic()
        tier_info = self.preflight(tiers)
        stale = self.list_units()
        if stale:
            self.stop_units(stale)
        stale_guests = self.leftover_guests() if params['load'] == 'guests' else []
        for name in stale_guests:
            self.remove_guest(name)
        results, guests, record = [], [], []
        running = {}
        for phase in phases:
            if params['load'] == 'guests':
                found, guests = self.guest_phase(phase, scenarios, tiers, tier_info, plan, running, record)
            else:
                found, guests = self.slice_phase(phase, scenarios, tiers, tier_info)
            results.extend(found)
        placement = {'vcpus': [], 'burners': []}
        for summary in results:
            for run in summary['runs']:
                placement['vcpus'].append(run['placement']['vcpus'])
                placement['burners'].append(run['placement']['burners'])
        options = dict((k, params.get(k)) for k in REPORT_OPTIONS)
        options['phases'] = list(phases)
        report = {
            'passed': all(s['passed'] for s in results),
            'host': platform.node(),
            'kernel': platform.release(),
            'generated': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
            'duration_sec': round(time.monotonic() - started_at, 1),
            'options': options,
            'load': params['load'],
            'phases': list(phases),
            'pool': {'guest_domain': format_cpulist(self.pool), 'host_reserved': format_cpulist(self.reserved),
                     'cpus': len(self.pool)},
            'tiers': dict((n, dict((k, tier_info[n].get(k))
                                   for k in ('slice', 'cpu_weight', 'unit_weight', 'live_weight')))
                          for n, _s, _w in tiers),
            'scenarios': results,
            'placement': dict((kind, merge_placement(items)) for kind, items in placement.items()),
            'guests': guests,
            'stale_units_stopped': stale,
            'stale_guests_removed': stale_guests,
        }
        if params['load'] == 'guests':
            counts = {}
            for entry in plan:
                counts[entry['tier']] = counts.get(entry['tier'], 0) + 1
            report['guest_load'] = {'per_tier': counts, 'vcpus': params['busy_vcpus'],
                                    'kernel': params['guest_kernel'], 'phases': record,
                                    'vcpu_cpuset': plan[0]['vcpu_cpuset'] if plan else None,
                                    'emulator_cpuset': plan[0]['emulator_cpuset'] if plan else None}
        return report


def _validate(params):
    validate_prefix(params['unit_prefix'])
    cg.validate_guest_prefix(params['guest_prefix'])
    tiers = normalize_tiers(params['tiers'])
    scenarios = normalize_scenarios(params['scenarios'], [n for n, _s, _w in tiers])
    for name in ('window', 'sample_interval', 'tolerance', 'ratio_tolerance', 'min_pool_share'):
        if params[name] <= 0:
            raise ContentionError('%s must be positive, got %s' % (name, params[name]))
    for name in ('repeats', 'burners_per_cpu'):
        if params[name] < 1:
            raise ContentionError('%s must be at least 1, got %s' % (name, params[name]))
    if params['warmup'] < 0 or params['runtime_margin'] < 10:
        raise ContentionError('warmup must be >= 0 and runtime_margin >= 10 seconds')
    if params['guest_memory'] < 4:
        raise ContentionError('guest_memory must be at least 4 MiB, got %d' % params['guest_memory'])
    return tiers, scenarios


def resolve_load(params, exists=os.path.exists):
    """The load ``auto`` stands for: guests when the guest kernel is on the host, else burners."""
    if params['load'] != 'auto':
        return params['load']
    return 'guests' if exists(params['guest_kernel']) else 'burners'


def phases_of(params):
    """The phases a load runs: guests ``phases``, burners their placements, existing one."""
    if params['load'] == 'guests':
        phases = list(params['phases'] or cg.PHASES)
        return [p for p in cg.PHASES if p in phases]
    if params['load'] == 'burners':
        return ['pool', 'cpu'] if params['placement'] == 'both' else [params['placement']]
    return ['existing']


def execute(module, lib=None, online=None):
    """The whole module run; returns ``(ok, result)`` for exit_json or fail_json."""
    params = module.params
    try:
        tiers, scenarios = _validate(params)
        pool = parse_cpulist(params['guest_cpus'], 'guest_cpus')
        online = online if online is not None else online_cpus()
        if not pool or not pool <= online:
            raise ContentionError('guest_cpus %s must be online CPUs (online: %s)'
                                  % (params['guest_cpus'], format_cpulist(online)))
        reserved = (parse_cpulist(params['reserved_cpus'], 'reserved_cpus')
                    if params['reserved_cpus'] else online - pool)
        if reserved & pool:
            raise ContentionError('reserved_cpus %s overlaps guest_cpus %s'
                                  % (format_cpulist(reserved), format_cpulist(pool)))
        emulator_cpus = (parse_cpulist(params['emulator_cpus'], 'emulator_cpus')
                         if params['emulator_cpus'] else reserved)
        if emulator_cpus & pool:
            raise ContentionError('emulator_cpus %s overlaps guest_cpus %s'
                                  % (format_cpulist(emulator_cpus), format_cpulist(pool)))
    except (ContentionError, CpuListError) as exc:
        return False, {'msg': str(exc)}
    params['load'] = resolve_load(params)
    cleanup = params['mode'] == 'cleanup'
    if params['load'] == 'burners' and not params['systemd'] and not cleanup:
        return False, {'msg': 'load=burners needs systemd (transient units in the tier slices); '
                              'use load=guests on a host without systemd'}
    phases = phases_of(params)
    plan = []
    if params['load'] == 'guests' and not cleanup:
        if not os.path.exists(params['guest_kernel']):
            return False, {'msg': 'guest_kernel %s does not exist on the host (the lab installs '
                                  '/var/lib/kvmlab/spinall.elf); give a multiboot kernel that keeps every '
                                  'vCPU busy' % params['guest_kernel']}
        if lib is None:
            return False, {'msg': 'load=guests needs libvirt-python (python3-libvirt) on the host'}
        try:
            counts = cg.guest_counts([n for n, _s, _w in tiers], params['guests_per_tier'])
            pools = {'guest_domain': format_cpulist(pool), 'host_emulator': format_cpulist(emulator_cpus),
                     'host_reserved': format_cpulist(reserved)}
            plan = cg.guest_plan(cg.load_guests(params['guest_prefix'], counts), params['tiers'], pools,
                                 params['busy_vcpus'])
        except (ContentionError, PlacementError) as exc:
            return False, {'msg': str(exc)}

    job = Runner(module, pool, reserved, online, lib=lib if params['load'] == 'guests' or
                 params['mode'] == 'cleanup' else None)
    if params['systemd']:
        job.systemctl = module.get_bin_path('systemctl', required=True)

    if params['mode'] == 'cleanup':
        try:
            left = job.list_units()
            guests = []
            if lib is not None:
                try:
                    guests = job.leftover_guests()
                except ContentionError:
                    guests = []
            if not module.check_mode:
                units_after = job.cleanup_units() if left else []
                guests_after = [g for g in guests if not job.remove_guest(g)]
            else:
                units_after, guests_after = left, guests
        except CommandFailure as exc:
            return False, dict(msg=str(exc), **exc.extra)
        changed = bool(left or guests)
        return True, {'changed': changed, 'stopped': left, 'removed_guests': guests,
                      'leftover_units': units_after, 'leftover_guests': guests_after,
                      'diff': {'before': {'units': left, 'guests': guests},
                               'after': {'units': units_after, 'guests': guests_after}} if changed else {}}

    if module.check_mode:
        out = []
        weights = dict((n, w) for n, _s, w in tiers)
        for phase in phases:
            for scenario in scenarios:
                promised = promised_shares(weights, scenario['loaded'])
                units = ([b['unit'] for b in burner_plan(params['unit_prefix'], scenario['loaded'], pool,
                                                         params['burners_per_cpu'])]
                         if params['load'] == 'burners' else [])
                busy = [e['name'] for e in plan if e['tier'] in scenario['loaded']]
                out.append(dict(scenario, phase=phase, units=units, busy_guests=busy,
                                promised_pct=dict((k, round(v, 2)) for k, v in promised.items())))
        try:
            stale = job.list_units()
            stale_guests = job.leftover_guests() if params['load'] == 'guests' else []
        except (CommandFailure, ContentionError) as exc:
            return False, {'msg': str(exc)}
        return True, {'changed': bool(stale or stale_guests), 'plan': out, 'stopped': stale,
                      'removed_guests': stale_guests, 'guests': [e['name'] for e in plan], 'load': params['load'],
                      'leftover_units': stale, 'leftover_guests': stale_guests}

    if params['load'] == 'burners':
        job.systemd_run = module.get_bin_path('systemd-run', required=True)
        if 'cpu' in phases:
            job.taskset = module.get_bin_path('taskset', required=True)
    if params['load'] == 'guests':
        job.emulator = module.get_bin_path('qemu-system-x86_64') or None

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
        report = job.measure(tiers, scenarios, phases, plan)
    except (Interrupted, ContentionError, SystemdConfigError, CpuListError, PlacementError) as exc:
        error = str(exc)
    except CommandFailure as exc:
        error, extra = str(exc), exc.extra
    finally:
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        left_guests = job.cleanup_guests()
        left = job.cleanup_units()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if job.conn is not None:
            try:
                job.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass

    what = 'load stopped, left running: %s' % (', '.join(left + left_guests) or 'nothing')
    if error is not None:
        # the controller may be gone: leave the outcome in the journal too
        module.log('cpu_contention_measure: %s; %s' % (error, what))
        return False, dict({'msg': '%s; %s' % (error, what), 'leftover_units': left,
                            'leftover_guests': left_guests, 'stopped': []}, **(extra or {}))
    report['leftover_units'] = left
    report['leftover_guests'] = left_guests
    stale = report['stale_units_stopped']
    if left or left_guests:
        report['passed'] = False
        return False, {'msg': 'still there after cleanup: %s' % ', '.join(left + left_guests), 'report': report,
                       'leftover_units': left, 'leftover_guests': left_guests, 'stopped': stale}
    changed = bool(stale or report['stale_guests_removed'])
    return True, {'changed': changed, 'report': report, 'stopped': stale,
                  'removed_guests': report['stale_guests_removed'], 'leftover_units': left, 'leftover_guests': [],
                  'diff': {'before': {'units': stale, 'guests': report['stale_guests_removed']},
                           'after': {'units': [], 'guests': []}} if changed else {}}
