#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: systemd_slice_weight
short_description: Weighted systemd slices and live CPU properties of units, in one call
version_added: 0.1.0
description:
  - Makes a set of systemd units carry the wanted C(CPUAccounting=yes),
    C(CPUWeight), C(CPUQuota) and C(AllowedCPUs), both in their persistent
    definition and live, and reads the result back from systemd
    (C(systemctl show)) and from the unit's cgroup v2 files (C(cpu.weight),
    C(cpu.max), C(cpuset.cpus)).
  - B(Persistent) units are slices such as C(machine-gold.slice). When no unit
    file for the slice exists, the module writes one to
    O(unit_dir)/C(<name>), marked as its own by a comment line. When the slice
    is already defined by someone else (a vendor unit such as
    C(machine.slice), a generator, or a file in O(unit_dir) without the
    module's marker), the module leaves that file alone and writes a drop-in
    O(unit_dir)/C(<name>.d/)O(dropin_name) instead (see O(foreign_units)).
    Files are written through a temporary file and an atomic rename, and only
    when their content differs. One C(systemctl daemon-reload) then applies all
    of them to the live units, and inactive slices are started (see
    O(start)) so that their cgroup exists.
  - B(Live-only) units (transient units such as libvirt's
    C(machine-qemu\x2d1\x2dvm.scope)) only get
    C(systemctl set-property --runtime), which keeps its drop-ins under
    C(/run) where they vanish with the unit. C(set-property) without
    C(--runtime) is never used, so nothing is left behind under
    C(/etc/systemd/system.control/).
  - O(state=absent) removes what the module made. For a persistent slice it
    stops the slice when its cgroup has no processes, removes its unit file
    or drop-in, and reloads systemd. For a live-only unit it resets the
    properties to systemd's defaults (C(Name=) with an empty value); a
    live-only unit that no longer exists is fine.
  - B(Snapshot.) With O(snapshot_path), O(state=present) first records, once, every unit's unit
    file and drop-in paths (whether they exist, mode, owner, content), their drop-in directories,
    and the live state of every unit (active, the managed properties, the cgroup's own
    C(cpuset.cpus)), in the collection's snapshot format (root only; never overwritten).
    O(state=restored) brings that back exactly and removes the snapshot. Files are written back or
    removed, with one C(daemon-reload), slices that were inactive stopped when empty and those that were
    active started, live-only units given their recorded properties again, a C(cpuset.cpus) that the
    kernel kept after systemd reset C(AllowedCPUs) written back, and drop-in directories the apply
    made removed when empty. What still differs afterwards is returned in RV(not_restored) and warned
    about. Without a snapshot at O(snapshot_path), O(state=restored) changes nothing.
  - O(state=absent) also clears a persistent unit's C(cpuset.cpus) that the kernel kept after systemd
    reset its C(AllowedCPUs) (systemd leaves it while the cpuset controller stays enabled for other
    cgroups, so the slice would stay confined).
  - All units are read with one C(systemctl show) and all files are applied
    with one C(daemon-reload); every argument is checked (weight range, quota
    and cpulist syntax, CPUs online, unit names, units that must exist) before
    anything is changed.
author:
  - kvmlab.host_resources contributors (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details: Predicts the changes and the diff; runs only C(systemctl show) and reads files.
  diff_mode:
    support: full
    details: >-
      A before/after of the live properties of every unit that changes, and of
      every unit file or drop-in written or removed.
  platform:
    platforms: posix
    details: Linux hosts with systemd as PID 1; cgroup values are read from cgroup v2.
options:
  units:
    description:
      - The units to manage, all handled in one call. Required unless O(state=restored), which takes
        the units from the snapshot and ignores this list.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Full unit name, for example V(machine-gold.slice) or
            V(machine-qemu\\x2d1\\x2dvm.scope).
          - Persistent units must be slices. Live-only units may be slices,
            scopes or services.
        type: str
        required: true
      cpu_weight:
        description:
          - C(CPUWeight=), from V(1) to V(10000) (cgroup v2 C(cpu.weight); 100 is the kernel's default).
          - Omitted, a persistent unit file leaves it at systemd's default and a live-only unit keeps its value.
        type: int
      cpu_quota:
        description:
          - C(CPUQuota=) as a percentage of one CPU, for example V(150%) or V(33.33%)
            (a bare number is taken as a percentage).
          - The empty string means no quota. Omitted, a persistent unit file has
            no quota and a live-only unit keeps its value.
        type: str
      allowed_cpus:
        description:
          - C(AllowedCPUs=) as a cpulist, for example V(2-11) or V(0-1,4). Every CPU must be online.
          - The empty string means no restriction. Omitted, a persistent unit
            file has none and a live-only unit keeps its value.
        type: str
      persistent:
        description:
          - V(true) makes the settings persistent (unit file or drop-in) and live.
          - V(false) sets them live only, with C(systemctl set-property --runtime);
            the unit must exist when O(state=present).
          - Unset, C(.scope) units and units systemd reports as C(Transient=yes) are
            live-only, and every other slice is persistent.
        type: bool
      description:
        description:
          - C(Description=) of a unit file the module writes. Not used for drop-ins and live-only units.
        type: str
      state:
        description:
          - Overrides the top-level O(state) for this unit.
        type: str
        choices: [present, absent]
  state:
    description:
      - V(present) defines and applies the settings (after the snapshot, with O(snapshot_path));
        V(absent) removes what the module made; V(restored) restores the snapshot at O(snapshot_path)
        and removes it (see the description above).
    type: str
    choices: [present, absent, restored]
    default: present
  snapshot_path:
    description:
      - The snapshot file. O(state=present) writes it when it does not exist yet (directory 0700, file
        0600); O(state=restored) restores and removes it (required there).
    type: path
  unit_dir:
    description:
      - Directory for the unit files and drop-ins the module writes.
    type: path
    default: /etc/systemd/system
  runtime_unit_dir:
    description:
      - Where M(kvmlab.host_resources.execution_pool) writes a tier slice's weight budget drop-in
        (C(<slice>.d/40-kvmlab-weight-budget.conf)) while some of the tier's running guests still wait in
        C(machine.slice). A present unit's live C(CPUWeight) is then expected to be the budget's value,
        not O(units[].cpu_weight); the unit file still carries O(units[].cpu_weight).
    type: path
    default: /run/systemd/system
  dropin_name:
    description:
      - File name of the drop-in written for slices defined by someone else.
      - Drop-ins are applied in file-name order across all directories, so a later name wins over an earlier one.
    type: str
    default: 50-kvmlab.conf
  foreign_units:
    description:
      - What to do with a persistent slice that exists and was not written by this module.
      - V(dropin) writes the settings to O(unit_dir)/C(<name>.d/)O(dropin_name) and never touches the unit's own file.
      - V(fail) refuses to manage such units.
    type: str
    choices: [dropin, fail]
    default: dropin
  header:
    description:
      - Comment written at the top of every file, one C(#) line per line of text,
        in the manner of C(ansible_managed) in templates. C(ansible_managed) itself is
        defined only inside templates, so pass the text (for example from a variable).
      - The module recognizes its files by a separate marker line, not by this header.
    type: str
    default: 'Ansible managed (kvmlab.host_resources.systemd_slice_weight): local edits are overwritten'
  start:
    description:
      - Start persistent slices that are not active, so their cgroup exists and the
        live values can be read back from it. Slices stay active while empty.
    type: bool
    default: true
  cgroup_root:
    description:
      - Mount point of the cgroup v2 hierarchy. Unset, V(/sys/fs/cgroup) when it is
        cgroup v2, else V(/sys/fs/cgroup/unified) (hybrid hosts, where the
        CPU files are usually missing and reported as V(null)).
    type: path
notes:
  - A persistent slice whose live values still differ from its definition after
    C(daemon-reload) makes the module fail and name the unit's drop-ins; usually a
    C(systemctl set-property) without C(--runtime) left a higher-priority drop-in
    under C(/etc/systemd/system.control/) or C(/run/systemd/system.control/).
  - C(changed) is true only when a file was written or removed, or a
    C(systemctl) command other than C(show) was (or in check mode would be) run.
  - systemd enables the cgroup C(cpu) controller below a slice only while some unit
    there sets a CPU weight or quota; without it the unit's C(cpu.weight) file does
    not exist (the kernel's default weight 100 applies) and RV(units[].cgroup.cpu_weight)
    is V(null).
  - In containers (C(systemd-nspawn)) the values systemd reports are real but
    the controllers are not delegated; cgroup values are then V(null).
seealso:
  - name: systemd.resource-control(5)
    description: CPUWeight, CPUQuota, AllowedCPUs and CPUAccounting.
    link: https://www.freedesktop.org/software/systemd/man/systemd.resource-control.html
  - name: systemd.slice(5)
    description: Slice units.
    link: https://www.freedesktop.org/software/systemd/man/systemd.slice.html
'''

EXAMPLES = r'''
- name: Gold, Silver and Bronze performance domains under machine.slice
  kvmlab.host_resources.systemd_slice_weight:
    header: "Ansible managed: change the inventory, not this file"
    units:
      - name: machine-gold.slice
        cpu_weight: 512
      - name: machine-silver.slice
        cpu_weight: 333
      - name: machine-bronze.slice
        cpu_weight: 167
  register: tiers

- name: Widen the live scope of a running guest (live only, nothing persistent)
  kvmlab.host_resources.systemd_slice_weight:
    units:
      - name: "{{ guest_scope }}"        # e.g. machine-qemu\x2d3\x2dkvm\x2dworker\x2d01.scope
        allowed_cpus: 0-11
        cpu_weight: 512

- name: A quota and a cpuset on vendor machine.slice (written as a drop-in)
  kvmlab.host_resources.systemd_slice_weight:
    units:
      - name: machine.slice
        cpu_weight: 1000
        cpu_quota: 800%
        allowed_cpus: 2-11

- name: Roll the tiers back
  kvmlab.host_resources.systemd_slice_weight:
    state: absent
    units:
      - name: machine-gold.slice
      - name: machine-silver.slice
      - name: machine-bronze.slice

- name: Tier slices with a snapshot of what was there before
  kvmlab.host_resources.systemd_slice_weight:
    snapshot_path: /var/lib/kvmlab/snapshots/host-resource-management-slices.json
    units:
      - name: machine-gold.slice
        cpu_weight: 512
      - name: system.slice
        allowed_cpus: 0-1,4-5

- name: Put back exactly what was there before
  kvmlab.host_resources.systemd_slice_weight:
    state: restored
    snapshot_path: /var/lib/kvmlab/snapshots/host-resource-management-slices.json

- name: Show the cgroup weight systemd applied
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.cgroup.cpu_weight }}"
  loop: "{{ tiers.units }}"
  loop_control:
    label: "{{ item.name }}"
'''

RETURN = r'''
units:
  description: One entry per unit, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The unit name.
      returned: always
      type: str
      sample: machine-gold.slice
    state:
      description: The state applied to this unit (V(restored) with O(state=restored)).
      returned: always
      type: str
      sample: present
    recorded:
      description: With O(state=restored), the unit's record in the snapshot (mode, active, properties, cgroup_cpuset_cpus).
      returned: when O(state=restored)
      type: dict
      sample: {mode: persistent, active: true, properties: {CPUWeight: '', AllowedCPUs: ''}, cgroup_cpuset_cpus: ''}
    mode:
      description: V(persistent) (unit file or drop-in, then daemon-reload) or V(runtime) (C(set-property --runtime) only).
      returned: always
      type: str
      sample: persistent
    definition:
      description: >-
        What defines the unit's settings: V(unit_file) (written by this module),
        V(dropin) (a drop-in for a unit defined elsewhere), or V(null) for live-only
        units and for absent units with nothing to remove.
      returned: always
      type: str
      sample: unit_file
    path:
      description: The unit file or drop-in written or removed (or that would be); V(null) when none.
      returned: always
      type: str
      sample: /etc/systemd/system/machine-gold.slice
    changed:
      description: Whether this unit changed (or would change in check mode).
      returned: always
      type: bool
      sample: true
    changes:
      description: >-
        Live properties that changed, each with C(before) and C(after) in systemd's
        assignment spelling (V('') is systemd's default). In check mode the
        prediction; otherwise what C(systemctl show) reported before and after.
      returned: always
      type: dict
      sample: {CPUWeight: {before: '', after: '512'}}
    actions:
      description: What was done (or would be done) for this unit, in order.
      returned: always
      type: list
      elements: str
      sample: [write /etc/systemd/system/machine-gold.slice, daemon-reload, start]
    in_sync:
      description: >-
        Whether systemd's live values equal what the unit should have (after the run;
        in check mode, whether they already do).
      returned: always
      type: bool
      sample: true
    warnings:
      description: Conditions worth a look, such as a slice left running because it still has processes.
      returned: always
      type: list
      elements: str
      sample: []
    properties:
      description: >-
        The managed properties as systemd reports them after the run (in check mode, now),
        in assignment spelling.
      returned: always
      type: dict
      contains:
        CPUAccounting:
          description: V(yes) or V(no).
          type: str
          returned: always
          sample: 'yes'
        CPUWeight:
          description: The weight, V('') when not set.
          type: str
          returned: always
          sample: '512'
        CPUQuota:
          description: The quota as a percentage, V('') when there is none.
          type: str
          returned: always
          sample: '150%'
        AllowedCPUs:
          description: Canonical cpulist, V('') when unrestricted.
          type: str
          returned: always
          sample: 2-11
    systemd:
      description: The raw C(systemctl show) values for the unit after the run (in check mode, now).
      returned: always
      type: dict
      sample:
        Id: machine-gold.slice
        LoadState: loaded
        ActiveState: active
        Transient: 'no'
        FragmentPath: /etc/systemd/system/machine-gold.slice
        DropInPaths: ''
        ControlGroup: /machine.slice/machine-gold.slice
        CPUAccounting: 'yes'
        CPUWeight: '512'
        CPUQuotaPerSecUSec: infinity
        AllowedCPUs: ''
    cgroup:
      description: >-
        What the kernel reports in the unit's cgroup v2 directory (from
        C(ControlGroup)); each value is V(null) when its file cannot be read.
      returned: always
      type: dict
      contains:
        path:
          description: The cgroup directory, V(null) when the unit has no cgroup (inactive).
          type: str
          returned: always
          sample: /sys/fs/cgroup/machine.slice/machine-gold.slice
        cpu_weight:
          description: Content of C(cpu.weight).
          type: int
          returned: always
          sample: 512
        cpu_max:
          description: Content of C(cpu.max).
          type: str
          returned: always
          sample: max 100000
        cpu_quota:
          description: C(cpu.max) as a percentage, V('') for C(max).
          type: str
          returned: always
          sample: ''
        cpuset_cpus:
          description: Content of C(cpuset.cpus), canonical cpulist.
          type: str
          returned: always
          sample: ''
        cpuset_cpus_effective:
          description: Content of C(cpuset.cpus.effective), canonical cpulist.
          type: str
          returned: always
          sample: 0-1
        populated:
          description: Whether the cgroup or a descendant has processes (C(cgroup.events)).
          type: bool
          returned: always
          sample: false
commands:
  description: >-
    The state-changing C(systemctl) commands run, in order (in check mode, those
    that would run). The C(systemctl show) reads are not listed.
  returned: always
  type: list
  elements: list
  sample: [[systemctl, daemon-reload], [systemctl, start, --, machine-gold.slice]]
cgroup_root:
  description: The cgroup v2 mount the values were read from.
  returned: always
  type: str
  sample: /sys/fs/cgroup
snapshot:
  description: The snapshot at O(snapshot_path); V(null) without O(snapshot_path) (and with O(state=restored) when there is none).
  returned: always
  type: dict
  contains:
    path:
      description: O(snapshot_path).
      type: str
      returned: always
    exists:
      description: Whether it exists after the run.
      type: bool
      returned: always
    written:
      description: Whether this run wrote it (in check mode, would write it).
      type: bool
      returned: always
    removed:
      description: Whether this run removed it (O(state=restored)).
      type: bool
      returned: always
    created:
      description: When it was taken.
      type: str
      returned: always
    units:
      description: The units it records.
      type: list
      elements: str
      returned: always
  sample: {path: /var/lib/kvmlab/snapshots/host-resource-management-slices.json, exists: true, written: true,
           removed: false, created: '2026-12-02T10:00:00Z', units: [machine-gold.slice, system.slice]}
not_restored:
  description: >-
    With O(state=restored), what still differs from the snapshot per unit after the restore:
    property (or C(cpuset.cpus)) to C(recorded) and C(live). Empty when everything came back.
  returned: when O(state=restored)
  type: dict
  sample: {system.slice: {cpuset.cpus: {recorded: '', live: 0-1}}}
files:
  description: With O(state=restored), every recorded file and what was done (V(write), V(remove), V(keep)).
  returned: when O(state=restored) and a snapshot exists
  type: list
  elements: dict
  sample: [{path: /etc/systemd/system/machine-gold.slice, action: remove}]
dirs_removed:
  description: With O(state=restored), the directories removed (empty ones the apply had made).
  returned: when O(state=restored) and a snapshot exists
  type: list
  elements: str
  sample: [/etc/systemd/system/system.slice.d]
msg:
  description: With O(state=restored) and no snapshot, says so.
  returned: when O(state=restored) and there is no snapshot
  type: str
  sample: 'no snapshot at /var/lib/kvmlab/snapshots/x.json: nothing to restore'
'''

import errno
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap
from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    parse_kernel_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import (
    DEFAULT_DROPIN,
    DEFAULT_HEADER,
    RESETTABLE_PROPERTIES,
    SNAPSHOT_LAYER,
    SystemdConfigError,
    assignments,
    cgroup_cpuset_fix,
    cgroup_mismatches,
    cgroup_populated,
    detect_cgroup_root,
    live_properties,
    mismatches,
    parse_show,
    plan_unit,
    property_changes,
    read_cgroup_values,
    restore_mismatches,
    restore_unit_plan,
    show_command,
    unit_paths,
    unit_record,
    validate_name,
    wanted_properties,
)

ONLINE_CPUS_PATH = '/sys/devices/system/cpu/online'
_PROP_OPTIONS = (('cpu_weight', 'CPUWeight'), ('cpu_quota', 'CPUQuota'), ('allowed_cpus', 'AllowedCPUs'))


class SliceWeight(object):
    """Runs the plan built by module_utils._systemd for every unit."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.systemctl = module.get_bin_path('systemctl', required=True)
        self.commands = []
        self.unit_dir = self.params['unit_dir']
        self.cgroup_root = self.params['cgroup_root'] or detect_cgroup_root()

    # -- reading ---------------------------------------------------------

    def run(self, args, check_rc=True):
        rc, out, err = self.module.run_command(args, environ_update={'LC_ALL': 'C', 'SYSTEMD_PAGER': ''})
        if rc != 0 and check_rc:
            self.fail('%s failed (rc=%d): %s' % (' '.join(args[1:]), rc, (err or out).strip()),
                      cmd=args, rc=rc, stdout=out, stderr=err)
        return out

    def fail(self, msg, **extra):
        extra.setdefault('commands', self.commands)
        self.module.fail_json(msg=msg, **extra)

    def show(self, names):
        if not names:
            return {}
        out = self.run(show_command(self.systemctl, names))
        try:
            return parse_show(out, names)
        except SystemdConfigError as exc:
            self.fail(to_native(exc), stdout=out)

    def online_cpus(self):
        try:
            with open(ONLINE_CPUS_PATH) as handle:
                return parse_kernel_cpulist(handle.read(), ONLINE_CPUS_PATH)
        except (IOError, OSError, CpuListError) as exc:
            self.fail('cannot read the online CPUs from %s: %s' % (ONLINE_CPUS_PATH, to_native(exc)))

    def read_text(self, path):
        try:
            with open(path) as handle:
                return handle.read()
        except (IOError, OSError) as exc:
            if os.path.exists(path):
                self.fail('cannot read %s: %s' % (path, to_native(exc)))
            return None

    # -- validation ------------------------------------------------------

    def items(self):
        """Validate every unit before reading anything from systemd."""
        default_state = self.params['state']
        dropin_name = self.params['dropin_name']
        if not dropin_name.endswith('.conf') or '/' in dropin_name:
            self.fail('dropin_name "%s" must be a file name ending in .conf' % dropin_name)
        online = None
        if any(unit.get('allowed_cpus') not in (None, '') for unit in self.params['units']):
            online = self.online_cpus()
        items = []
        seen = set()
        errors = []
        for unit in self.params['units']:
            name = unit['name']
            state = unit['state'] or default_state
            try:
                validate_name(name, unit['persistent'])
                if name in seen:
                    raise SystemdConfigError('%s is listed more than once' % name)
                seen.add(name)
                if state == 'present':
                    wanted = wanted_properties(unit['cpu_weight'], unit['cpu_quota'],
                                               unit['allowed_cpus'], online, name)
                    reset = None
                else:
                    wanted = {}
                    reset = [prop for option, prop in _PROP_OPTIONS if unit[option] is not None]
                    reset = reset or list(RESETTABLE_PROPERTIES)
            except SystemdConfigError as exc:
                errors.append(to_native(exc))
                continue
            items.append({'name': name, 'state': state, 'persistent': unit['persistent'],
                          'wanted': wanted, 'reset': reset, 'description': unit['description']})
        if errors:
            self.fail('invalid units: ' + '; '.join(errors), errors=errors)
        return items

    # -- planning --------------------------------------------------------

    def plan(self, items, shows):
        plans = []
        errors = []
        for item in items:
            name = item['name']
            show = shows[name]
            unit_path = os.path.join(self.unit_dir, name)
            dropin_path = os.path.join(self.unit_dir, name + '.d', self.params['dropin_name'])
            populated = None
            if item['state'] == 'absent':
                populated = cgroup_populated(show.get('ControlGroup'), self.cgroup_root)
                if populated is None and show.get('TasksCurrent', '').isdigit():
                    populated = int(show['TasksCurrent']) > 0
            runtime_values = None
            if item['state'] == 'present' and 'CPUWeight' in item.get('wanted', {}):
                # the shared execution pool's weight budget: a lower live CPUWeight while guests wait for their move
                budget = ep.parse_budget_dropin(self.read_text(ep.budget_dropin_path(
                    name, self.params['runtime_unit_dir'])))
                if budget is not None:
                    runtime_values = {'CPUWeight': str(budget)}
            try:
                plans.append(plan_unit(item, show, unit_path, self.read_text(unit_path),
                                       dropin_path, self.read_text(dropin_path),
                                       header=self.params['header'],
                                       foreign=self.params['foreign_units'],
                                       start=self.params['start'], populated=populated,
                                       runtime_values=runtime_values))
            except SystemdConfigError as exc:
                errors.append(to_native(exc))
        if errors:
            self.fail('cannot manage units: ' + '; '.join(errors), errors=errors)
        return plans

    def command_list(self, plans):
        """The state-changing systemctl calls, fewest possible, in execution order."""
        commands = []
        stop = [p.name for p in plans if p.stop]
        if stop:
            commands.append([self.systemctl, 'stop', '--'] + stop)
        if any(p.reload for p in plans):
            commands.append([self.systemctl, 'daemon-reload'])
        start = [p.name for p in plans if p.start]
        if start:
            commands.append([self.systemctl, 'start', '--'] + start)
        for p in plans:
            if p.runtime_set:
                commands.append([self.systemctl, 'set-property', '--runtime', '--', p.name]
                                + assignments(p.runtime_set))
        return commands

    # -- doing -----------------------------------------------------------

    def write_file(self, path, content):
        """Write a unit file or drop-in atomically, mode 0644 (through _snapshot's one atomic writer)."""
        try:
            snap.write_atomic(path, content.encode('utf-8'), 0o644)
        except snap.SnapshotError as exc:
            self.fail(to_native(exc))

    def remove_file(self, path):
        try:
            os.remove(path)
        except OSError as exc:
            self.fail('cannot remove %s: %s' % (path, to_native(exc)))
        directory = os.path.dirname(path)
        if directory.endswith('.d') and os.path.normpath(directory) != os.path.normpath(self.unit_dir):
            try:
                os.rmdir(directory)  # only when empty
            except OSError:
                pass

    def execute(self, plans, commands):
        # stop comes first: it is listed first, before the files go away
        rest = list(commands)
        if rest and rest[0][1] == 'stop':
            self.commands.append(rest[0])
            self.run(rest.pop(0))
        for plan in plans:
            if plan.file_action == 'write':
                self.write_file(plan.path, plan.content)
            elif plan.file_action == 'remove':
                self.remove_file(plan.path)
        for args in rest:
            self.commands.append(args)
            self.run(args)

    # -- reporting -------------------------------------------------------

    def unit_result(self, plan, before_show, after_show, check_mode):
        before = live_properties(before_show)
        after = live_properties(after_show)
        if check_mode:
            changes = plan.changes
            current = before
        else:
            changes = property_changes(after, before)
            current = after
        cgroup = read_cgroup_values(after_show.get('ControlGroup'), self.cgroup_root)
        warnings = []
        if plan.stop_skipped:
            warnings.append('%s left active: %s; its properties are back to the defaults'
                            % (plan.name, plan.stop_skipped))
        if not check_mode and plan.state == 'present':
            for key, (want, seen) in sorted(cgroup_mismatches(plan.expected, cgroup).items()):
                warnings.append('%s: systemd has %s=%s but the cgroup shows %s'
                                % (plan.name, key, want, seen))
        return {
            'name': plan.name,
            'state': plan.state,
            'mode': plan.mode,
            'definition': plan.definition,
            'path': plan.path,
            'changed': plan.changed,
            'changes': changes,
            'actions': plan.actions(),
            'in_sync': not mismatches(plan.expected, current),
            'warnings': warnings,
            'properties': current,
            'systemd': after_show,
            'cgroup': cgroup,
        }

    def diff(self, plans, results):
        before = {}
        after = {}
        for plan, result in zip(plans, results):
            if result['changes']:
                before[plan.name] = dict((k, v['before']) for k, v in result['changes'].items())
                after[plan.name] = dict((k, v['after']) for k, v in result['changes'].items())
        diffs = []
        if before or after:
            diffs.append({'before_header': 'live properties', 'after_header': 'live properties',
                          'before': before, 'after': after})
        for plan in plans:
            if plan.file_action:
                diffs.append({'before_header': plan.path, 'after_header': plan.path,
                              'before': plan.before_text or '', 'after': plan.content or ''})
        return diffs

    # -- snapshot and exact restore ---------------------------------------

    def write_cgroup_cpuset(self, control_group, text):
        """Write a cgroup's cpuset.cpus; False when the kernel refuses to empty a populated one.

        The kernel (cpuset validate_change) refuses with ENOSPC to change a
        cgroup that has tasks from a CPU list to the empty list ("inherit"), on
        cgroup v2 as well: that value cannot come back at runtime. The cgroup
        then gets its parent's effective CPUs, which is what "inherit" gives
        now, so its tasks may use every CPU again; the raw "" comes back when
        the cgroup is next created (a reboot, a restart of the unit). The caller
        reports the difference under not_restored.
        """
        directory = os.path.join(self.cgroup_root, (control_group or '').lstrip('/'))
        path = os.path.join(directory, 'cpuset.cpus')
        try:
            with open(path, 'w') as handle:
                handle.write((text or '') + '\n')
        except (IOError, OSError) as exc:
            if exc.errno != errno.ENOSPC or text:
                self.fail('cannot write %s: %s' % (path, to_native(exc)))
            parent = os.path.join(os.path.dirname(directory), 'cpuset.cpus.effective')
            try:
                with open(parent) as handle:
                    inherited = handle.read().strip()
                with open(path, 'w') as handle:
                    handle.write(inherited + '\n')
            except (IOError, OSError) as exc2:
                self.fail('cannot write %s: the kernel refuses "" while the cgroup has tasks, and writing the '
                          "parent's CPUs failed too: %s" % (path, to_native(exc2)))
            self.module.warn('%s: the kernel refuses an empty cpuset.cpus (inherit) while the cgroup has tasks '
                             '(ENOSPC); it now holds the CPUs it would inherit (%s), and becomes "" again when the '
                             'cgroup is next created, at the next boot or restart of the unit' % (path, inherited))
            return False
        return True

    def take_snapshot(self, plans, shows):
        """Record the units' files and live state once, before anything changes."""
        path = self.params['snapshot_path']
        if not path:
            return None
        info = {'path': path, 'exists': True, 'written': False, 'removed': False}
        if os.path.lexists(path):
            try:
                data = snap.load(path, SNAPSHOT_LAYER)
            except snap.SnapshotError as exc:
                self.fail('cannot use the snapshot: %s' % to_native(exc))
            info.update(created=data.get('created'), units=sorted((data['values'].get('units') or {})))
            return info
        files = []
        dirs = []
        values = {}
        for plan in plans:
            show = shows[plan.name]
            values[plan.name] = unit_record(plan.mode, show,
                                            read_cgroup_values(show.get('ControlGroup'), self.cgroup_root))
            if plan.mode == 'persistent':
                unit_path, dropin_path = unit_paths(plan.name, self.unit_dir, self.params['dropin_name'])
                files.extend([unit_path, dropin_path])
                dirs.append(os.path.dirname(dropin_path))
        directory = os.path.dirname(path)
        while directory and directory != '/' and not os.path.isdir(directory):
            if directory not in dirs:
                dirs.append(directory)  # save() creates it
            directory = os.path.dirname(directory)
        try:
            data = snap.capture(SNAPSHOT_LAYER, files=files, dirs=dirs, values={'units': values})
        except snap.SnapshotError as exc:
            self.fail('cannot take the snapshot: %s' % to_native(exc))
        info.update(written=True, created=data['created'], units=sorted(values))
        if not self.module.check_mode:
            try:
                info['written'] = snap.save(path, data)
            except snap.SnapshotError as exc:
                self.fail('cannot write the snapshot: %s' % to_native(exc))
        return info

    def fix_stale_cpusets(self, plans, before_shows, after_shows):
        """After state=absent: clear cpuset.cpus the kernel kept although systemd reset AllowedCPUs."""
        fixed = {}
        for plan in plans:
            if plan.state != 'absent' or plan.mode != 'persistent' or 'AllowedCPUs' not in plan.changes:
                continue
            before = read_cgroup_values(before_shows[plan.name].get('ControlGroup'), self.cgroup_root)
            show = after_shows[plan.name]
            record = {'properties': {'AllowedCPUs': ''}, 'cgroup_cpuset_cpus': ''}
            after = read_cgroup_values(show.get('ControlGroup'), self.cgroup_root)
            if after.get('cpuset_cpus') and after.get('cpuset_cpus') == before.get('cpuset_cpus') \
                    and cgroup_cpuset_fix(record, show, after) is not None \
                    and self.write_cgroup_cpuset(show.get('ControlGroup'), ''):
                fixed[plan.name] = after['cpuset_cpus']
        return fixed

    def restored(self):
        """state=restored: bring the snapshot back exactly, then remove it."""
        path = self.params['snapshot_path']
        if not path:
            self.fail('state=restored needs snapshot_path')
        check_mode = self.module.check_mode
        result = {'changed': False, 'units': [], 'commands': [], 'cgroup_root': self.cgroup_root,
                  'snapshot': None, 'not_restored': {}}
        if not os.path.lexists(path):
            result['msg'] = 'no snapshot at %s: nothing to restore' % path
            self.module.exit_json(**result)
        try:
            data = snap.load(path, SNAPSHOT_LAYER)
            current_files, current_dirs = snap.read_current(data)
        except snap.SnapshotError as exc:
            self.fail('cannot use the snapshot: %s' % to_native(exc))
        records = data['values'].get('units') or {}
        if not isinstance(records, dict):
            self.fail('%s: values.units must map unit names to records' % path)
        names = sorted(records)
        shows = self.show(names)
        file_plan = snap.file_restore_plan(data, current_files)
        dir_plan = snap.dir_restore_plan(data, current_dirs)
        touched = [a for a in file_plan if a['action'] != 'keep']
        unit_plans = {}
        for name in names:
            show = shows[name]
            populated = cgroup_populated(show.get('ControlGroup'), self.cgroup_root)
            unit_plans[name] = restore_unit_plan(name, records[name], show, populated)
        commands = []
        stop = [n for n in names if unit_plans[n]['stop']]
        if stop:
            commands.append([self.systemctl, 'stop', '--'] + stop)
        if touched:
            commands.append([self.systemctl, 'daemon-reload'])
        start = [n for n in names if unit_plans[n]['start']]
        if start:
            commands.append([self.systemctl, 'start', '--'] + start)
        for name in names:
            if unit_plans[name]['runtime_set']:
                commands.append([self.systemctl, 'set-property', '--runtime', '--', name]
                                + assignments(unit_plans[name]['runtime_set']))
        after_shows = shows
        fixed = {}
        if not check_mode:
            rest = list(commands)
            if rest and rest[0][1] == 'stop':
                self.commands.append(rest[0])
                self.run(rest.pop(0))
            try:
                snap.apply_file_plan(file_plan)
            except snap.SnapshotError as exc:
                self.fail(to_native(exc))
            for args in rest:
                self.commands.append(args)
                self.run(args)
            after_shows = self.show(names) if names else {}
            for name in names:
                show = after_shows[name]
                cgroup = read_cgroup_values(show.get('ControlGroup'), self.cgroup_root)
                want = cgroup_cpuset_fix(records[name], show, cgroup)
                if want is not None and self.write_cgroup_cpuset(show.get('ControlGroup'), want):
                    fixed[name] = {'before': cgroup['cpuset_cpus'], 'after': want}
        else:
            self.commands = commands
        units = []
        not_restored = {}
        for name in names:
            show = after_shows[name]
            cgroup = read_cgroup_values(show.get('ControlGroup'), self.cgroup_root)
            actions = [' '.join(c[1:]) for c in commands if name in c]
            if name in fixed:
                actions.append('write cgroup cpuset.cpus "%s"' % fixed[name]['after'])
            bad = {} if check_mode else restore_mismatches(records[name], show, cgroup)
            if bad:
                not_restored[name] = dict((k, {'recorded': v[0], 'live': v[1]}) for k, v in bad.items())
            units.append({'name': name, 'state': 'restored', 'mode': records[name].get('mode'),
                          'definition': None, 'path': None, 'changes': {}, 'in_sync': not bad,
                          'warnings': [], 'actions': actions, 'changed': bool(actions),
                          'properties': live_properties(show), 'systemd': show, 'cgroup': cgroup,
                          'recorded': records[name]})
        try:
            removed_dirs = snap.retire(path, dir_plan, check=check_mode,
                                       gone=[a['path'] for a in file_plan if a['action'] == 'remove'])
        except snap.SnapshotError as exc:
            self.fail(to_native(exc))
        result.update(changed=True, units=units, commands=self.commands, not_restored=not_restored,
                      files=[{'path': a['path'], 'action': a['action']} for a in file_plan],
                      dirs_removed=removed_dirs,
                      snapshot={'path': path, 'exists': False, 'written': False, 'removed': True,
                                'created': data.get('created'), 'units': names})
        if self.module._diff:
            diffs = []
            for action in touched:
                before = snap.file_content(current_files.get(action['path'])) or b''
                after = b'' if action['action'] == 'remove' else \
                    snap.file_content({'exists': True, 'content_b64': action['content_b64']})
                diffs.append({'before_header': action['path'], 'after_header': action['path'],
                              'before': before.decode('utf-8', 'replace'),
                              'after': after.decode('utf-8', 'replace')})
            result['diff'] = diffs
        for name, bad in sorted(not_restored.items()):
            self.module.warn('%s could not be restored exactly: %s' % (name, ', '.join(
                '%s is "%s", recorded "%s"' % (k, v['live'], v['recorded']) for k, v in sorted(bad.items()))))
        self.module.exit_json(**result)

    def main(self):
        if self.params['state'] == 'restored':
            self.restored()
            return
        if not self.params['units']:
            self.fail('units is required with state=%s' % self.params['state'])
        items = self.items()
        names = [item['name'] for item in items]
        shows = self.show(names)
        plans = self.plan(items, shows)
        commands = self.command_list(plans)
        changed = any(plan.changed for plan in plans)
        check_mode = self.module.check_mode
        snapshot = self.take_snapshot(plans, shows) if self.params['state'] == 'present' else None
        after_shows = shows
        fixed = {}
        if changed and not check_mode:
            self.execute(plans, commands)
            after_shows = self.show(names)
            fixed = self.fix_stale_cpusets(plans, shows, after_shows)
        results = [self.unit_result(plan, shows[plan.name], after_shows[plan.name], check_mode)
                   for plan in plans]
        for unit in results:
            if unit['name'] in fixed:
                unit['actions'].append('write cgroup cpuset.cpus "" (was "%s")' % fixed[unit['name']])
                unit['cgroup'] = read_cgroup_values(unit['systemd'].get('ControlGroup'), self.cgroup_root)
        if check_mode:
            self.commands = commands
        changed = changed or bool(snapshot and snapshot['written'])
        result = {'changed': changed, 'units': results, 'commands': self.commands,
                  'cgroup_root': self.cgroup_root, 'snapshot': snapshot}
        if self.module._diff:
            result['diff'] = self.diff(plans, results)
        for unit in results:
            for warning in unit['warnings']:
                self.module.warn(warning)
        if not check_mode:
            # Removal undoes only what the module made: an override somebody else
            # left (a runtime set-property drop-in, say) is reported, not fought.
            for plan, unit in zip(plans, results):
                if plan.state == 'absent' and not unit['in_sync']:
                    self.module.warn('%s keeps settings the module did not make (drop-ins: %s)'
                                     % (plan.name, unit['systemd'].get('DropInPaths') or 'none'))
            stale = [(plan, unit) for plan, unit in zip(plans, results)
                     if plan.state == 'present' and not unit['in_sync']]
            if stale:
                details = []
                for plan, unit in stale:
                    bad = mismatches(plan.expected, unit['properties'])
                    details.append('%s: %s (drop-ins: %s)' % (
                        plan.name,
                        ', '.join('%s is "%s", expected "%s"' % (key, seen, want)
                                  for key, (want, seen) in sorted(bad.items())),
                        unit['systemd'].get('DropInPaths') or 'none'))
                result['msg'] = ('live values differ from the definition after applying it: '
                                 + '; '.join(details))
                self.module.fail_json(**result)
        self.module.exit_json(**result)


def main():
    unit_options = dict(
        name=dict(type='str', required=True),
        cpu_weight=dict(type='int'),
        cpu_quota=dict(type='str'),
        allowed_cpus=dict(type='str'),
        persistent=dict(type='bool'),
        description=dict(type='str'),
        state=dict(type='str', choices=['present', 'absent']),
    )
    module = AnsibleModule(
        argument_spec=dict(
            units=dict(type='list', elements='dict', default=[], options=unit_options),
            state=dict(type='str', default='present', choices=['present', 'absent', 'restored']),
            snapshot_path=dict(type='path'),
            unit_dir=dict(type='path', default='/etc/systemd/system'),
            runtime_unit_dir=dict(type='path', default='/run/systemd/system'),
            dropin_name=dict(type='str', default=DEFAULT_DROPIN),
            foreign_units=dict(type='str', default='dropin', choices=['dropin', 'fail']),
            header=dict(type='str', default=DEFAULT_HEADER),
            start=dict(type='bool', default=True),
            cgroup_root=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    SliceWeight(module).main()


if __name__ == '__main__':
    main()
