#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_cpu_reserve
short_description: Keep PID 1 and host services on the host CPU reserve, from boot on, with snapshot and exact restore
version_added: 0.2.0
description:
  - The host foundation of the shared execution pool. O(state=present) writes the systemd manager
    drop-in O(manager_dropin) (C(DefaultCPUAccounting=yes), C(CPUAffinity=)O(host_reserved)), makes
    it live with C(systemctl daemon-reload) (which applies C(CPUAffinity=) on systemd 252;
    C(daemon-reexec) does not) and reads PID 1's C(Cpus_allowed_list) back, failing when PID 1 is not
    on O(host_reserved) afterwards.
  - B(From boot on.) With cgroup v2, enabling the cpuset controller resets the affinity of the
    processes in the cgroups concerned to all CPUs, PID 1 included (systemd issue 23748), so after a
    reboot PID 1 runs on every CPU although the drop-in is there. With O(boot_unit=true) the module
    also installs a oneshot C(kvmlab-host-cpu-reserve.service) in O(boot_unit_dir), ordered after
    C(basic.target), C(systemd-machined.service) and libvirt's daemons, that gives PID 1
    O(host_reserved) again with C(taskset) (util-linux), and a drop-in of O(boot_target) that pulls it
    in (no enablement symlink). The unit also starts the tier slices given in O(slices), so their
    cgroups and weights exist from boot on and a rerun after a reboot changes nothing.
  - B(Opt-in.) O(kernel_args=true) writes the GRUB defaults drop-in O(grub_dropin) with
    C(systemd.cpu_affinity=)O(host_reserved) C(irqaffinity=)O(host_housekeeping) and runs
    C(update-grub) when it changes (Debian family; the arguments take effect at the next boot).
    O(irqbalance_ban=true) sets C(IRQBALANCE_BANNED_CPULIST=)O(guest_domain) in O(irqbalance_config)
    and restarts irqbalance when it runs (C(systemctl try-restart)).
  - B(Snapshot.) With O(snapshot_path), O(state=present) first records the pre-apply state, once
    (every file the module may manage with whether it exists, mode, owner and content, the directories
    it may create, PID 1's affinity and the online CPUs) in the collection's snapshot format (root only,
    directory 0700, file 0600; never overwritten; a snapshot of release 1 is read and migrated).
  - O(state=restored) brings that snapshot back exactly, then removes it. Files are written back or
    removed, with C(daemon-reload) (the boot unit stopped first when it ran this boot), C(update-grub) and an irqbalance restart where their files changed,
    directories the apply made removed when empty, and PID 1's affinity set from the snapshot
    (removing the drop-in does not give it back). A missing snapshot fails with
    C(nothing to roll back); a corrupt, truncated or foreign one fails naming the file and the
    problem, and nothing is changed.
  - O(state=query) changes nothing and returns one status item per managed thing (manager drop-in,
    PID 1 affinity, boot unit, every slice in O(slices), kernel arguments, irqbalance) judged on what
    is effective (PID 1's C(Cpus_allowed_list), the slices' C(cpu.weight) and
    C(cpuset.cpus.effective)), and the verdict C(applied), C(stock) or C(drifted).
  - The slices themselves are made by M(kvmlab.host_resources.systemd_slice_weight); this module only
    reads them for the status and starts the tier slices at boot.
author:
  - kvmlab.host_resources contributors (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details: >-
      Predicts the files, commands, PID 1 change, service restarts and snapshot; only reads files and runs
      C(systemctl show) and C(systemctl list-units).
  diff_mode:
    support: full
    details: Before/after of every file written or restored, of PID 1's affinity and of the restarted services' affinity.
  platform:
    platforms: posix
    details: Linux with systemd as PID 1; the slices are read from cgroup v2.
options:
  state:
    description:
      - V(present) snapshots (once, with O(snapshot_path)) and applies; V(restored) restores the
        snapshot and removes it; V(query) reports the status and changes nothing.
    type: str
    choices: [present, restored, query]
    default: present
  host_reserved:
    description:
      - The host CPU reserve as a cpulist (the pools' C(host_reserved)); every CPU must be online.
      - Required with O(state=present) and O(state=query).
    type: str
  host_housekeeping:
    description: The housekeeping CPUs (C(irqaffinity=)); required with O(kernel_args=true).
    type: str
  guest_domain:
    description: The guest pool (C(IRQBALANCE_BANNED_CPULIST)); required with O(irqbalance_ban=true).
    type: str
  snapshot_path:
    description:
      - The pre-apply snapshot. Written by O(state=present) when absent, restored and removed by
        O(state=restored) (required there), reported by O(state=query).
    type: path
  manager_dropin:
    description: The systemd manager drop-in carrying C(DefaultCPUAccounting) and C(CPUAffinity).
    type: path
    default: /etc/systemd/system.conf.d/90-kvmlab-host-resource-management.conf
  default_cpu_accounting:
    description: Write C(DefaultCPUAccounting=yes) into the manager drop-in.
    type: bool
    default: true
  boot_unit:
    description:
      - Install the boot unit that gives PID 1 O(host_reserved) again after the cgroup setup at boot,
        and starts the tier slices. V(false) leaves it out (and removes nothing).
    type: bool
    default: true
  boot_unit_dir:
    description: Directory of the boot unit and of the O(boot_target) drop-in.
    type: path
    default: /etc/systemd/system
  boot_target:
    description: The target whose drop-in pulls the boot unit in.
    type: str
    default: multi-user.target
  slices:
    description:
      - The foundation's slices as given to M(kvmlab.host_resources.systemd_slice_weight) (the
        C(foundation_slice_units) filter makes this list). Entries with O(slices[].cpu_weight) are
        tier slices (started by the boot unit, judged on C(cpu.weight)); entries with
        O(slices[].allowed_cpus) are host slices (judged on C(cpuset.cpus.effective)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The slice unit.
        type: str
        required: true
      cpu_weight:
        description: The tier's C(CPUWeight).
        type: int
      allowed_cpus:
        description: The host slice's C(AllowedCPUs).
        type: str
      description:
        description: C(Description=) of the unit file, as given to systemd_slice_weight.
        type: str
  slice_unit_dir:
    description: O(kvmlab.host_resources.systemd_slice_weight#module:unit_dir) of the slices.
    type: path
    default: /etc/systemd/system
  slice_dropin_name:
    description: O(kvmlab.host_resources.systemd_slice_weight#module:dropin_name) of the slices.
    type: str
    default: 50-kvmlab.conf
  kernel_args:
    description: Manage the kernel arguments through O(grub_dropin) (next boot). Off by default.
    type: bool
    default: false
  grub_dropin:
    description: The GRUB defaults drop-in for the kernel arguments.
    type: path
    default: /etc/default/grub.d/90-kvmlab-host-resource-management.cfg
  irqbalance_ban:
    description: Ban O(guest_domain) from irqbalance. Off by default.
    type: bool
    default: false
  irqbalance_config:
    description: The irqbalance environment file.
    type: path
    default: /etc/default/irqbalance
  restart_services:
    description:
      - With O(state=present), the services to restart when they run with an affinity other than
        O(host_reserved). After the reserve is in place the module lists the running services whose
        main process's C(Cpus_allowed_list) differs from O(host_reserved) (services started before the
        new manager affinity keep theirs) and restarts, with one C(systemctl restart), those of them
        named here; the others are returned in RV(stale_services).
      - A name without a unit suffix means C(<name>.service). A named service that is not running, or
        already runs on O(host_reserved), is left alone (not an error).
      - In check mode nothing is restarted; a named service is predicted to be restarted when its
        affinity differs from O(host_reserved).
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  header:
    description: Comment written at the top of every file the module writes, one C(#) line per line.
    type: str
    default: 'Ansible managed (kvmlab.host_resources.host_cpu_reserve): local edits are overwritten'
notes:
  - Services that were running before the new affinity keep theirs unless their slice confines them
    (C(AllowedCPUs) on C(system.slice) and C(user.slice)); O(state=present) returns them in
    RV(stale_services) and restarts those named in O(restart_services).
    M(kvmlab.host_resources.service_affinity_info) lists them too, with their affinity.
  - C(changed) is true only when a file was (or would be) written or removed, a command other than a
    read was (or would be) run (a service restart included), PID 1's affinity was (or would be) set, or
    the snapshot was written or removed.
seealso:
  - module: kvmlab.host_resources.systemd_slice_weight
  - module: kvmlab.host_resources.service_affinity_info
  - name: systemd issue 23748
    description: CPUAffinity of PID 1 reset when the cpuset controller is enabled.
    link: https://github.com/systemd/systemd/issues/23748
'''

EXAMPLES = r'''
- name: PID 1 and host services on the host reserve, with a snapshot for rollback
  kvmlab.host_resources.host_cpu_reserve:
    host_reserved: "{{ pools.host_reserved }}"
    slices: "{{ slice_units }}"
    snapshot_path: /var/lib/kvmlab/snapshots/host-resource-management.json
    restart_services: [ssh.service]
  register: reserve

- name: Services still on their old affinity
  ansible.builtin.debug:
    msg: "Restart to apply the new affinity: {{ reserve.stale_services | join(', ') }}"
  when: reserve.stale_services | length > 0

- name: Status of the host foundation
  kvmlab.host_resources.host_cpu_reserve:
    state: query
    host_reserved: "{{ pools.host_reserved }}"
    slices: "{{ slice_units }}"
    snapshot_path: /var/lib/kvmlab/snapshots/host-resource-management.json
  register: foundation

- name: Roll back to the snapshot
  kvmlab.host_resources.host_cpu_reserve:
    state: restored
    snapshot_path: /var/lib/kvmlab/snapshots/host-resource-management.json
'''

RETURN = r'''
state:
  description: The state run.
  returned: always
  type: str
  sample: present
host_reserved:
  description: O(host_reserved) as a canonical cpulist (V(null) with O(state=restored)).
  returned: always
  type: str
  sample: 0-1,4-5
online_cpus:
  description: The online CPUs.
  returned: always
  type: str
  sample: 0-7
files:
  description: Every file considered, with what was (in check mode, would be) done.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
      returned: always
    action:
      description: V(write), V(remove) or V(keep).
      type: str
      returned: always
  sample: [{path: /etc/systemd/system.conf.d/90-kvmlab-host-resource-management.conf, action: write}]
dirs_removed:
  description: Directories O(state=restored) removed (empty ones the apply had made).
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system.conf.d]
commands:
  description: The state-changing commands run (in check mode, that would run).
  returned: always
  type: list
  elements: list
  sample: [[/usr/bin/systemctl, daemon-reload]]
pid1:
  description: PID 1's C(Cpus_allowed_list) before and after, and what it should be.
  returned: always
  type: dict
  contains:
    before:
      description: Before the run.
      type: str
      returned: always
    after:
      description: After the run (in check mode, the prediction).
      type: str
      returned: always
    wanted:
      description: O(host_reserved), or the snapshot's value with O(state=restored).
      type: str
      returned: always
  sample: {before: 0-7, after: '0-1,4-5', wanted: '0-1,4-5'}
snapshot:
  description: The snapshot at O(snapshot_path) (V(null) without one).
  returned: always
  type: dict
  contains:
    path:
      description: O(snapshot_path).
      type: str
      returned: always
    exists:
      description: Whether it exists after the run (in check mode, would exist).
      type: bool
      returned: always
    written:
      description: Whether this run wrote it (would write it, in check mode).
      type: bool
      returned: always
    removed:
      description: Whether this run removed it (O(state=restored)).
      type: bool
      returned: always
    created:
      description: When it was taken (V(null) when there is none).
      type: str
      returned: always
    migrated_from:
      description: The older format it was read from, or V(null).
      type: str
      returned: always
    values:
      description: The live values it records (C(pid1_cpus_allowed), C(online_cpus)).
      type: dict
      returned: always
  sample: {path: /var/lib/kvmlab/snapshots/host-resource-management.json, exists: true, written: true,
           removed: false, created: '2026-12-02T10:00:00Z', migrated_from: null,
           values: {pid1_cpus_allowed: 0-7, online_cpus: 0-7}}
legacy_slices:
  description: >-
    With O(state=restored) of a release 1 snapshot, the slices that release's role made, as units
    (C(name)) to give to systemd_slice_weight; remove them
    with M(kvmlab.host_resources.systemd_slice_weight) O(kvmlab.host_resources.systemd_slice_weight#module:state=absent).
    Empty otherwise.
  returned: always
  type: list
  elements: dict
  sample: [{name: machine-gold.slice}, {name: machine-silver.slice}]
status:
  description: With O(state=query), the status of the layer.
  returned: when O(state=query)
  type: dict
  contains:
    verdict:
      description: V(applied), V(stock) or V(drifted).
      type: str
      returned: always
    summary:
      description: One sentence naming what is not as intended.
      type: str
      returned: always
    items:
      description: One item per managed thing, with C(name), C(intended), C(live) and C(state) (applied, stock, drifted, info).
      type: list
      elements: dict
      returned: always
    pools:
      description: O(host_reserved), O(host_housekeeping) and O(guest_domain) as given.
      type: dict
      returned: always
    snapshot:
      description: O(snapshot_path) when that file exists, else V(null).
      type: str
      returned: always
  sample:
    verdict: applied
    summary: 'applied: all 7 items match the policy'
    items: [{name: PID 1 affinity, intended: '0-1,4-5', live: '0-1,4-5', state: applied}]
    pools: {host_reserved: '0-1,4-5'}
    snapshot: /var/lib/kvmlab/snapshots/host-resource-management.json
stale_services:
  description:
    - With O(state=present), the running services whose main process's affinity differs from
      O(host_reserved) after the run (they keep their old affinity until restarted), the restarted ones
      excluded unless their new main process still differs (a warning says so).
    - In check mode, the prediction (the stale services not named in O(restart_services)).
  returned: when O(state=present)
  type: list
  elements: str
  sample: [cron.service]
  version_added: 0.2.0
restarted_services:
  description:
    - With O(state=present), the services restarted (in check mode, that would be restarted) because
      they were stale and named in O(restart_services).
  returned: when O(state=present)
  type: list
  elements: str
  sample: [ssh.service]
  version_added: 0.2.0
report:
  description: Readable lines saying what was done or found.
  returned: always
  type: list
  elements: str
  sample: ['PID 1: 0-7 -> 0-1,4-5', 'wrote /etc/systemd/system.conf.d/90-kvmlab-host-resource-management.conf',
           'running services that keep their old affinity until restarted: cron.service', 'restarted: ssh.service']
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _services as svc
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _foundation as fd
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap
from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
    parse_kernel_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import status_line
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import (
    SystemdConfigError,
    detect_cgroup_root,
    drop_in_paths,
    has_marker,
    is_active,
    live_properties,
    parse_show,
    plan_unit,
    read_cgroup_values,
    show_command,
    wanted_properties,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import (
    TopologyError,
    read_cpus_allowed,
)

# Seams for the unit tests.
PROC_ROOT = '/proc'
ONLINE_CPUS_PATH = '/sys/devices/system/cpu/online'
CGROUP_ROOT = None
# where the shared execution pool writes its tier slices' weight budget drop-ins (execution_pool runtime_unit_dir)
RUNTIME_UNIT_DIR = ep.BUDGET_UNIT_DIR


def set_affinity(pid, cpus):
    os.sched_setaffinity(pid, cpus)


class Failure(Exception):
    def __init__(self, msg, **extra):
        Exception.__init__(self, msg)
        self.msg = msg
        self.extra = extra


class CpuReserve(object):
    """Runs the plans of module_utils._foundation."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.check = module.check_mode
        self.commands = []
        self.report = []
        self._systemctl = None

    # -- host reads ------------------------------------------------------

    @property
    def systemctl(self):
        if self._systemctl is None:
            self._systemctl = self.module.get_bin_path('systemctl', required=True)
        return self._systemctl

    def run(self, args):
        self.commands.append(args)
        if self.check:
            return ''
        rc, out, err = self.module.run_command(args, environ_update={'LC_ALL': 'C', 'SYSTEMD_PAGER': ''})
        if rc != 0:
            raise Failure('%s failed (rc=%d): %s' % (' '.join(args), rc, (err or out).strip()),
                          cmd=args, rc=rc, stdout=out, stderr=err)
        return out

    def read(self, args):
        rc, out, err = self.module.run_command(args, environ_update={'LC_ALL': 'C', 'SYSTEMD_PAGER': ''})
        if rc != 0:
            raise Failure('%s failed (rc=%d): %s' % (' '.join(args), rc, (err or out).strip()),
                          cmd=args, rc=rc, stdout=out, stderr=err)
        return out

    @staticmethod
    def read_text(path):
        try:
            with open(path) as handle:
                return handle.read()
        except (IOError, OSError) as exc:
            if os.path.exists(path):
                raise Failure('cannot read %s: %s' % (path, to_native(exc)))
            return None

    def online(self):
        try:
            with open(ONLINE_CPUS_PATH) as handle:
                return parse_kernel_cpulist(handle.read(), ONLINE_CPUS_PATH)
        except (IOError, OSError, CpuListError) as exc:
            raise Failure('cannot read the online CPUs from %s: %s' % (ONLINE_CPUS_PATH, to_native(exc)))

    def pid1(self):
        try:
            return format_cpulist(read_cpus_allowed(1, PROC_ROOT))
        except TopologyError as exc:
            raise Failure(to_native(exc))

    def set_pid1(self, cpus):
        """PID 1's affinity, on all of its threads."""
        wanted = set(parse_cpulist(cpus))
        task_dir = os.path.join(PROC_ROOT, '1', 'task')
        try:
            tids = sorted(int(tid) for tid in os.listdir(task_dir) if tid.isdigit())
        except OSError:
            tids = [1]
        for tid in tids or [1]:
            try:
                set_affinity(tid, wanted)
            except OSError as exc:
                if tid == 1:
                    raise Failure('cannot set the affinity of PID 1 to %s: %s' % (cpus, to_native(exc)))

    # -- helpers -----------------------------------------------------------

    def pools(self, online):
        try:
            reserved = fd.cpus_of(self.p['host_reserved'], 'host_reserved', online)
            housekeeping = fd.cpus_of(self.p['host_housekeeping'], 'host_housekeeping', online,
                                      required=self.p['kernel_args'])
            guest = fd.cpus_of(self.p['guest_domain'], 'guest_domain', online,
                               required=self.p['irqbalance_ban'])
        except fd.FoundationError as exc:
            raise Failure(to_native(exc))
        return reserved, housekeeping, guest

    def boot_paths(self):
        return fd.boot_paths(self.p['boot_unit_dir'], self.p['boot_target'])

    def all_paths(self):
        """Every file the module may manage (the snapshot records them all)."""
        unit, wants = self.boot_paths()
        return [self.p['manager_dropin'], unit, wants, self.p['grub_dropin'], self.p['irqbalance_config']]

    def systemd_paths(self):
        unit, wants = self.boot_paths()
        return [self.p['manager_dropin'], unit, wants]

    def tier_names(self):
        return [s['name'] for s in self.p['slices'] if s.get('cpu_weight') is not None]

    def taskset(self):
        path = self.module.get_bin_path('taskset')
        if not path:
            raise Failure('taskset (util-linux) is not installed: the boot unit needs it '
                          '(install util-linux, or set boot_unit: false)')
        return path

    def wanted_files(self, reserved, housekeeping, guest, current):
        header = self.p['header']
        wanted = {self.p['manager_dropin']: fd.manager_dropin_text(reserved, self.p['default_cpu_accounting'],
                                                                   header)}
        if self.p['boot_unit']:
            unit, wants = self.boot_paths()
            wanted[unit] = fd.boot_unit_text(reserved, self.taskset(), self.tier_names(), header)
            wanted[wants] = fd.boot_wants_text(fd.BOOT_UNIT_NAME, header)
        if self.p['kernel_args']:
            wanted[self.p['grub_dropin']] = fd.grub_dropin_text(reserved, housekeeping, header)
        if self.p['irqbalance_ban']:
            path = self.p['irqbalance_config']
            wanted[path] = fd.set_env_line(current.get(path), guest)
        return wanted

    def snapshot_info(self, data=None, exists=False, written=False, removed=False):
        path = self.p['snapshot_path']
        if not path:
            return None
        data = data or {}
        return {'path': path, 'exists': exists, 'written': written, 'removed': removed,
                'created': data.get('created'), 'migrated_from': data.get('migrated_from'),
                'values': data.get('values') or {}}

    def load_snapshot(self):
        path = self.p['snapshot_path']
        try:
            return snap.load(path, fd.LAYER)
        except snap.SnapshotError as exc:
            raise Failure('cannot use the snapshot: %s' % to_native(exc))

    def write_file(self, path, text):
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, 0o755)
            except OSError as exc:
                raise Failure('cannot create %s: %s' % (directory, to_native(exc)))
        mode = 0o644
        owner = group = None
        if os.path.exists(path):
            st = os.stat(path)
            mode = st.st_mode & 0o7777
            owner, group = st.st_uid, st.st_gid
        try:
            snap.write_atomic(path, text.encode('utf-8'), mode)
            if owner is not None:
                os.chown(path, owner, group)
        except (snap.SnapshotError, OSError) as exc:
            raise Failure(to_native(exc))

    def run_actions(self, actions):
        for action in actions:
            if action == 'daemon-reload':
                self.run([self.systemctl, 'daemon-reload'])
            elif action == 'update-grub':
                tool = self.module.get_bin_path('update-grub')
                if not tool:
                    self.module.warn('update-grub is not installed: run your distribution\'s GRUB update '
                                     'so that the kernel arguments take effect at the next boot')
                    continue
                self.run([tool])
            elif action == 'restart-irqbalance':
                self.run([self.systemctl, 'try-restart', 'irqbalance.service'])

    # -- present -----------------------------------------------------------

    def present(self):
        online = self.online()
        reserved, housekeeping, guest = self.pools(online)
        try:
            for name in self.p['restart_services']:
                svc.unit_name(name)
        except svc.ServicesError as exc:
            raise Failure(to_native(exc))
        paths = self.all_paths()
        current = dict((path, self.read_text(path)) for path in paths)
        wanted = self.wanted_files(reserved, housekeeping, guest, current)
        plan = fd.file_plan(wanted, current)
        pid1_before = self.pid1()
        actions = fd.apply_actions(plan, pid1_before, reserved, self.systemd_paths(),
                                   self.p['grub_dropin'] if self.p['kernel_args'] else None,
                                   self.p['irqbalance_config'] if self.p['irqbalance_ban'] else None)

        snapshot = None
        written = False
        path = self.p['snapshot_path']
        if path:
            if os.path.lexists(path):
                snapshot = self.load_snapshot()
            else:
                try:
                    dirs = fd.snapshot_dirs(paths, path)
                    for target in paths + [path]:
                        dirs.extend(d for d in snap.missing_ancestors(target) if d not in dirs)
                    snapshot = snap.capture(fd.LAYER, files=paths, dirs=dirs,
                                            values={'pid1_cpus_allowed': pid1_before,
                                                    'online_cpus': format_cpulist(online)})
                except snap.SnapshotError as exc:
                    raise Failure('cannot take the snapshot: %s' % to_native(exc))
                written = True
                if not self.check:
                    try:
                        written = snap.save(path, snapshot)
                    except snap.SnapshotError as exc:
                        raise Failure('cannot write the snapshot: %s' % to_native(exc))
                    if not written:
                        snapshot = self.load_snapshot()  # another run wrote it meanwhile
                self.report.append('%s snapshot %s' % ('would write' if self.check else 'wrote', path))

        for item in plan:
            if item['action'] == 'write':
                if not self.check:
                    self.write_file(item['path'], item['after'])
                self.report.append('%s %s' % ('would write' if self.check else 'wrote', item['path']))
        self.run_actions(actions)

        pid1_after = reserved if self.check else self.pid1()
        if pid1_before != reserved:
            self.report.append('PID 1: %s -> %s' % (pid1_before, pid1_after))
        if not self.check and pid1_after != reserved:
            raise Failure('PID 1 runs on %s after daemon-reload, not host_reserved %s (drop-ins of the '
                          'manager: %s)' % (pid1_after, reserved, os.path.dirname(self.p['manager_dropin'])))

        services = self.services(reserved)

        changed = (written or bool(actions) or any(i['action'] != 'keep' for i in plan)
                   or bool(services['restarted']))
        result = self.result('present', changed, reserved, online,
                             files=[{'path': i['path'], 'action': i['action']} for i in plan],
                             pid1={'before': pid1_before, 'after': pid1_after, 'wanted': reserved},
                             snapshot=self.snapshot_info(snapshot, exists=bool(snapshot), written=written),
                             stale_services=services['stale'], restarted_services=services['restarted'])
        if self.module._diff:
            diffs = [{'before_header': i['path'], 'after_header': i['path'],
                      'before': i['before'] or '', 'after': i['after']} for i in plan if i['action'] != 'keep']
            if pid1_before != reserved:
                diffs.append({'before_header': 'PID 1 Cpus_allowed_list', 'after_header': 'PID 1 Cpus_allowed_list',
                              'before': pid1_before + '\n', 'after': reserved + '\n'})
            if services['restarted']:
                diffs.append({'before_header': 'restarted services Cpus_allowed_list',
                              'after_header': 'restarted services Cpus_allowed_list',
                              'before': services['diff_before'], 'after': services['diff_after']})
            result['diff'] = diffs
        return result

    def services(self, reserved):
        """Stale services after the reserve is in place; restarts the stale ones named in restart_services.

        In check mode the reserve is not in place yet: the comparison with
        host_reserved (what services get once it is) is the prediction.
        """
        expected = parse_cpulist(reserved)
        try:
            before = svc.read_services(self.read, self.systemctl, expected, PROC_ROOT)
            plan = svc.restart_plan(before, self.p['restart_services'])
        except (SystemdConfigError, svc.ServicesError) as exc:
            raise Failure(to_native(exc))
        restart = plan['restart']
        stale = plan['stale']
        affinity = dict((item['unit'], item['cpus_allowed']) for item in before)
        after = dict((unit, reserved) for unit in restart)
        if restart:
            self.run([self.systemctl, 'restart', '--'] + restart)
        if restart and not self.check:
            try:
                services_after = svc.read_services(self.read, self.systemctl, expected, PROC_ROOT)
            except SystemdConfigError as exc:
                raise Failure(to_native(exc))
            outcome = svc.after_restart(plan, services_after)
            stale = outcome['stale']
            found = dict((item['unit'], item['cpus_allowed']) for item in services_after)
            after = dict((unit, found.get(unit, 'not running')) for unit in restart)
            for unit in outcome['still_stale']:
                self.module.warn('%s was restarted but its main process runs on %s, not host_reserved %s '
                                 '(its slice\'s cpuset decides: confine the slice with AllowedCPUs)'
                                 % (unit, after[unit], reserved))
        self.report.extend(svc.report_lines(stale, restart, plan['not_running'], self.check))
        return {'stale': stale, 'restarted': restart,
                'diff_before': ''.join('%s %s\n' % (unit, affinity[unit]) for unit in restart),
                'diff_after': ''.join('%s %s\n' % (unit, after[unit]) for unit in restart)}

    # -- restored ----------------------------------------------------------

    def restored(self):
        path = self.p['snapshot_path']
        if not path:
            raise Failure('state=restored needs snapshot_path')
        online = self.online()
        if not os.path.lexists(path):
            raise Failure('nothing to roll back: no snapshot at %s (apply never ran on this host, or '
                          'rollback already restored it)' % path)
        data = self.load_snapshot()
        try:
            pid1_wanted = fd.pid1_restore_target(data['values'], online)
        except fd.FoundationError as exc:
            raise Failure('%s: %s' % (path, to_native(exc)))
        try:
            current_files, current_dirs = snap.read_current(data)
        except snap.SnapshotError as exc:
            raise Failure(to_native(exc))
        file_actions, dir_actions = fd.restore_plan(data, current_files, current_dirs,
                                                    self.p['irqbalance_config'])
        recorded = list(data.get('files') or {})
        systemd_paths = [p for p in recorded
                         if p in self.systemd_paths() or p.startswith('/etc/systemd/')]
        grub = [p for p in recorded if p == self.p['grub_dropin'] or p.startswith('/etc/default/grub')]
        irq = self.p['irqbalance_config'] if self.p['irqbalance_config'] in recorded else None
        touched = [a for a in file_actions if a['action'] != 'keep']
        actions = fd.restore_actions(file_actions, systemd_paths, grub[0] if grub else None, irq)
        if any(a['path'] in grub for a in touched) and 'update-grub' not in actions:
            actions.append('update-grub')
        pid1_before = self.pid1()
        boot_unit = self.boot_paths()[0]
        if any(a['path'] == boot_unit and a['action'] == 'remove' for a in touched) and self.boot_unit_active():
            # it ran at boot (RemainAfterExit): stop it so nothing of it stays loaded
            actions.insert(0, 'stop-boot-unit')

        diffs = []
        for action in touched:
            before = snap.file_content(current_files.get(action['path'])) or b''
            after = snap.file_content({'exists': True, 'content_b64': action['content_b64']}) \
                if action['action'] == 'write' else b''
            diffs.append({'before_header': action['path'], 'after_header': action['path'],
                          'before': before.decode('utf-8', 'replace'), 'after': after.decode('utf-8', 'replace')})
            verb = 'restore' if action['action'] == 'write' else 'remove'
            self.report.append('%s %s' % ('would ' + verb if self.check else verb + 'd', action['path']))

        if actions and actions[0] == 'stop-boot-unit':
            self.run([self.systemctl, 'stop', '--', fd.BOOT_UNIT_NAME])
            actions.pop(0)
        if not self.check:
            try:
                snap.apply_file_plan(file_actions)
            except snap.SnapshotError as exc:
                raise Failure(to_native(exc))
        self.run_actions(actions)
        if pid1_before != pid1_wanted:
            if not self.check:
                self.set_pid1(pid1_wanted)
            self.report.append('PID 1: %s -> %s (from the snapshot)' % (pid1_before, pid1_wanted))
            diffs.append({'before_header': 'PID 1 Cpus_allowed_list', 'after_header': 'PID 1 Cpus_allowed_list',
                          'before': pid1_before + '\n', 'after': pid1_wanted + '\n'})
        pid1_after = pid1_wanted if self.check else self.pid1()
        if pid1_after != pid1_wanted:
            raise Failure('PID 1 runs on %s, not on the snapshot\'s %s; the snapshot %s is kept'
                          % (pid1_after, pid1_wanted, path))
        try:
            removed_dirs = snap.retire(path, dir_actions, check=self.check,
                                       gone=[a['path'] for a in file_actions if a['action'] == 'remove'])
        except snap.SnapshotError as exc:
            raise Failure(to_native(exc))
        self.report.append('%s snapshot %s' % ('would remove' if self.check else 'removed', path))
        result = self.result('restored', True, None, online,
                             files=[{'path': a['path'], 'action': a['action']} for a in file_actions],
                             pid1={'before': pid1_before, 'after': pid1_after, 'wanted': pid1_wanted},
                             snapshot=self.snapshot_info(data, exists=False, removed=True))
        result['dirs_removed'] = removed_dirs
        result['legacy_slices'] = [{'name': name} for name in fd.legacy_slices(data)]
        if self.module._diff:
            result['diff'] = diffs
        return result

    def boot_unit_active(self):
        name = fd.BOOT_UNIT_NAME
        try:
            show = parse_show(self.read(show_command(self.systemctl, [name], ('Id', 'ActiveState'))), [name])
        except SystemdConfigError as exc:
            raise Failure(to_native(exc))
        return is_active(show[name])

    # -- query -------------------------------------------------------------

    def slice_readings(self):
        slices = self.p['slices']
        if not slices:
            return {}
        names = [s['name'] for s in slices]
        try:
            shows = parse_show(self.read(show_command(self.systemctl, names)), names)
        except SystemdConfigError as exc:
            raise Failure(to_native(exc))
        root = CGROUP_ROOT or detect_cgroup_root()
        unit_dir = self.p['slice_unit_dir']
        readings = {}
        for spec in slices:
            name = spec['name']
            show = shows[name]
            unit_path = os.path.join(unit_dir, name)
            dropin_path = os.path.join(unit_dir, name + '.d', self.p['slice_dropin_name'])
            reading = {'properties': live_properties(show), 'active': is_active(show),
                       'cgroup': read_cgroup_values(show.get('ControlGroup'), root),
                       'defined': False, 'current': False, 'dropins': drop_in_paths(show), 'budget': None}
            if spec.get('cpu_weight') is not None:
                # the shared execution pool's weight budget: a lower live weight while guests wait for their move
                budget_path = ep.budget_dropin_path(name, RUNTIME_UNIT_DIR)
                budget_text = self.read_text(budget_path)
                if budget_text is not None:
                    reading['budget'] = {'path': budget_path, 'weight': ep.parse_budget_dropin(budget_text)}
            try:
                wanted = wanted_properties(spec.get('cpu_weight'), None, spec.get('allowed_cpus'), None, name)
                item = {'name': name, 'state': 'present', 'persistent': True, 'wanted': wanted,
                        'description': spec.get('description')}
                plan = plan_unit(item, show, unit_path, self.read_text(unit_path), dropin_path,
                                 self.read_text(dropin_path))
                reading['defined'] = plan.before_text is not None and has_marker(plan.before_text)
                reading['current'] = reading['defined'] and plan.file_action is None
            except SystemdConfigError as exc:
                reading['error'] = to_native(exc)
            readings[name] = reading
        return readings

    def query(self):
        online = self.online()
        reserved, housekeeping, guest = self.pools(online)
        online_text = format_cpulist(online)
        current = dict((path, self.read_text(path)) for path in self.all_paths())
        unit, wants = self.boot_paths()
        header = self.p['header']
        items = [fd.manager_dropin_item(self.p['manager_dropin'], current[self.p['manager_dropin']],
                                        fd.manager_dropin_text(reserved, self.p['default_cpu_accounting'], header),
                                        reserved),
                 fd.pid1_item(self.pid1(), reserved, online_text)]
        if self.p['boot_unit']:
            unit_wanted = fd.boot_unit_text(reserved, self.taskset(), self.tier_names(), header)
        else:
            unit_wanted = None
        items.append(fd.boot_unit_item(self.p['boot_unit'], unit, current[unit], unit_wanted,
                                       wants, current[wants], fd.boot_wants_text(fd.BOOT_UNIT_NAME, header)))
        readings = self.slice_readings()
        for spec in self.p['slices']:
            reading = readings[spec['name']]
            if spec.get('cpu_weight') is not None:
                item = fd.tier_slice_item(spec['name'], spec['cpu_weight'], reading)
            else:
                cpus = fd.cpus_of(spec.get('allowed_cpus'), '%s: allowed_cpus' % spec['name'], None)
                item = fd.host_slice_item(spec['name'], cpus, reading, online_text)
            if reading.get('error'):
                item['state'] = 'drifted'
                item['live'] += '; ' + reading['error']
            items.append(item)
        cmdline = self.read_text(os.path.join(PROC_ROOT, 'cmdline')) or ''
        cmdline = cmdline.replace('\0', ' ')
        items.append(fd.kernel_args_item(self.p['kernel_args'], cmdline, reserved,
                                         housekeeping or '(none)',
                                         current[self.p['grub_dropin']] is not None))
        items.append(fd.irqbalance_item(self.p['irqbalance_ban'], current[self.p['irqbalance_config']],
                                        guest, self.p['irqbalance_config']))
        path = self.p['snapshot_path']
        exists = bool(path) and os.path.lexists(path)
        data = None
        if exists:
            try:
                data = self.load_snapshot()
            except Failure as exc:
                self.module.warn(exc.msg)
        pools = {'host_reserved': reserved}
        if housekeeping:
            pools['host_housekeeping'] = housekeeping
        if guest:
            pools['guest_domain'] = guest
        status = fd.status(items, pools, path if exists else None)
        self.report = ['host foundation: ' + status['summary']] + [status_line(i) for i in items] + \
            ['rollback snapshot: %s' % (path if exists else 'none')]
        result = self.result('query', False, reserved, online,
                             files=[{'path': p, 'action': 'keep'} for p in self.all_paths()],
                             pid1={'before': items[1]['live'], 'after': items[1]['live'], 'wanted': reserved},
                             snapshot=self.snapshot_info(data, exists=exists))
        result['status'] = status
        return result

    # -- result ------------------------------------------------------------

    def result(self, state, changed, reserved, online, **extra):
        result = {'changed': changed, 'state': state, 'host_reserved': reserved,
                  'online_cpus': format_cpulist(online), 'commands': self.commands,
                  'report': self.report, 'dirs_removed': [], 'legacy_slices': []}
        result.update(extra)
        return result

    def main(self):
        try:
            if self.p['state'] == 'present':
                result = self.present()
            elif self.p['state'] == 'restored':
                result = self.restored()
            else:
                result = self.query()
        except fd.FoundationError as exc:
            self.module.fail_json(msg=to_native(exc), commands=self.commands)
        except Failure as exc:
            extra = dict(exc.extra)
            extra.setdefault('commands', self.commands)
            self.module.fail_json(msg=exc.msg, **extra)
        self.module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='present', choices=['present', 'restored', 'query']),
            host_reserved=dict(type='str'),
            host_housekeeping=dict(type='str'),
            guest_domain=dict(type='str'),
            snapshot_path=dict(type='path'),
            manager_dropin=dict(type='path', default=fd.MANAGER_DROPIN),
            default_cpu_accounting=dict(type='bool', default=True),
            boot_unit=dict(type='bool', default=True),
            boot_unit_dir=dict(type='path', default=fd.BOOT_UNIT_DIR),
            boot_target=dict(type='str', default=fd.BOOT_TARGET),
            slices=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                cpu_weight=dict(type='int'),
                allowed_cpus=dict(type='str'),
                description=dict(type='str'),
            )),
            slice_unit_dir=dict(type='path', default='/etc/systemd/system'),
            slice_dropin_name=dict(type='str', default='50-kvmlab.conf'),
            kernel_args=dict(type='bool', default=False),
            grub_dropin=dict(type='path', default=fd.GRUB_DROPIN),
            irqbalance_ban=dict(type='bool', default=False),
            irqbalance_config=dict(type='path', default=fd.IRQBALANCE_CONFIG),
            restart_services=dict(type='list', elements='str', default=[]),
            header=dict(type='str', default=fd.DEFAULT_HEADER),
        ),
        required_if=[
            ('state', 'present', ('host_reserved',)),
            ('state', 'query', ('host_reserved',)),
            ('state', 'restored', ('snapshot_path',)),
            ('kernel_args', True, ('host_housekeeping',)),
            ('irqbalance_ban', True, ('guest_domain',)),
        ],
        supports_check_mode=True,
    )
    CpuReserve(module).main()


if __name__ == '__main__':
    main()
