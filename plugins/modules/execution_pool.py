#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: execution_pool
short_description: Place every guest of a libvirt host in the shared execution pool, weight it by tier, report and roll back
version_added: 0.2.0
description:
  - One call does the whole shared execution pool layer for every guest of the libvirt connection,
    running or only defined, except the ones named in O(exclude).
  - "A guest's tier comes from O(guests) (the operator's list), else from the guest's own libvirt
    C(<metadata>) (element C(<kvmlab:guest><kvmlab:tier>gold</kvmlab:tier></kvmlab:guest>) in the
    namespace C(https://kvmlab.invalid/host_resources/1)), else O(default_tier)."
  - B(O(kind=placement)) (the role's apply) places vCPU threads on C(guest_domain), emulator threads and IOThreads
    by the emulator thread policy, live (running guests) and in the persistent XML, which also gets the
    tier's C(<shares>), its resource partition and, for a tier taken from O(guests), the kvmlab tier
    metadata (so that the tier travels with the guest). A running guest's machine scope gets the tier's
    C(CPUWeight) (its budget share while it waits in C(machine.slice), see below) and C(AllowedCPUs)
    host_reserved plus guest_domain with C(systemctl set-property --runtime) (nothing persistent is left behind for transient scopes).
  - B(O(kind=weights)) (the contention entry points) manages only C(<shares>), the partition, libvirt's live
    C(cpu_shares) and the scopes' C(CPUWeight).
  - "B(Weight budget) (both kinds, O(systemd=true)): a tier's weight is a budget over its cgroup nodes under
    C(machine.slice), its tier slice (when it holds some of the tier's running guests) and the scopes of its
    running guests still in C(machine.slice) (waiting for their move at their next start). Each node gets
    the tier weight times the share of the tier's running guests it holds (largest remainder, so the nodes
    add up to exactly the tier weight, at least 1 each). A waiting guest's scope gets its share as libvirt's live
    C(cpu_shares) (libvirt writes the scope's C(CPUWeight) through systemd) and as the scope's runtime
    C(CPUWeight), so the two always agree; a moved guest's scope keeps the tier weight inside its slice. A tier
    slice that holds some but not all of its tier's running guests gets its share from a runtime drop-in of
    this module, C(<runtime_unit_dir>/<slice>.d/40-kvmlab-weight-budget.conf) (then C(systemctl daemon-reload));
    the drop-in is removed once all of the tier's running guests are in the slice or none runs. The persistent
    C(<shares>) stays the tier weight."
  - B(O(state=present)) takes a snapshot to O(snapshot_path) first when the file is absent (never
    overwritten), then applies. B(O(state=query)) changes nothing and returns status items, one verdict and
    every guest's tier with where it came from; each tier's live total (the kernel's C(cpu.weight) of its
    budget nodes added up) is an item, drifted when it is not the tier weight. B(O(state=restored)) puts back
    exactly what the snapshot recorded (pins, shares, live C(cpu_shares), partition, scope properties, tier
    metadata, the budget drop-ins as they were, normally absent; a scope that was unrestricted gets
    C(AllowedCPUs) reset, not a list of every CPU), then removes the snapshot.
  - The pools are resolved (derived or validated) on the host from its own topology before anything else; a bad
    pool fails the call before the lock is taken or anything is read from libvirt.
  - The guest's QEMU threads are read from C(/proc/<pid>/task/*/status) (pid from libvirt's pid file), its
    scope from C(/proc/<pid>/cgroup); the scopes and tier slices with one C(systemctl show).
author:
  - kvmlab maintainers (@kvmlab)
requirements:
  - libvirt-python (python3-libvirt)
  - systemd as PID 1 with cgroup v2 when O(systemd=true)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details: Reads everything and predicts the changes, the pending items and whether a snapshot would be written;
      writes nothing.
  diff_mode:
    support: full
    details: Per changed guest, before and after of its libvirt state, scope properties and tier metadata; one
      entry for the tier slices' budget drop-ins.
  platform:
    platforms: posix
    details: Linux libvirt/QEMU hosts.
options:
  state:
    description:
      - V(present) applies, V(query) reports, V(restored) rolls back from O(snapshot_path).
    type: str
    choices: [present, query, restored]
    default: present
  kind:
    description:
      - V(placement) manages pins, weights, partition, tier metadata and the scopes' C(AllowedCPUs);
        V(weights) only the weights and the partition.
    type: str
    choices: [placement, weights]
    default: placement
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  tiers:
    description:
      - Tier name to a dict with C(cpu_weight) and/or C(shares), C(partition) and C(slice) (C(kvmlab_tiers)).
      - Required with O(state=present) and O(state=query).
    type: dict
  pools:
    description:
      - The operator's CPU pools (C(host_reserved), C(host_housekeeping), C(host_emulator) and C(guest_domain)
        cpulists), validated against the host's topology, which the module reads itself (as
        M(kvmlab.host_resources.cpu_topology_facts) does); empty or omitted, they are derived from the topology
        with O(reserved_cores_per_socket) and O(housekeeping_cores_per_socket), as the
        P(kvmlab.host_resources.cpu_pools#filter) filter does. Not used with O(state=restored).
      - A dict; none, an empty dict or an empty string mean derive (an unset inventory variable passes through).
    type: raw
  reserved_cores_per_socket:
    description:
      - Whole cores per socket kept for the host when the pools are derived (mutually exclusive with O(pools)).
      - A positive integer; none or an empty string mean the collection's default.
    type: raw
  housekeeping_cores_per_socket:
    description: Of the reserved cores, those for host services when the pools are derived (as O(reserved_cores_per_socket)).
    type: raw
  guard:
    description:
      - The host guard for this call, with the options of M(kvmlab.host_resources.host_guard) (C(owner), C(packages),
        C(python_modules), C(systemd), C(install_packages), C(lock), C(lock_path), C(lock_timeout), C(lock_max_hold));
        what they leave out comes from the C(kvmlab_*) inventory variables, as for the guard.
      - The module's action checks the prerequisites, installs the missing packages (when allowed, not in check
        mode) and holds the host lock (re-entrant for the run, see M(kvmlab.host_resources.host_lock)) for the
        duration of this one call, so a role entry point needs no guard task before it nor a release after it.
      - In check mode no lock is taken and nothing is installed; a lock another run holds is named in a warning.
      - Omitted, the module takes no lock and checks nothing beyond its own inputs.
    type: dict
  guests:
    description:
      - The operator's guests, each a dict with C(name) and optionally C(tier), C(emulator_policy), C(vcpus)
        and C(iothreads). A guest listed here must be defined in libvirt (or excluded).
      - Guests of the connection that are not listed are placed too, with the tier of their metadata or
        O(default_tier).
    type: list
    elements: dict
    default: []
  exclude:
    description: Names of guests the module leaves alone (not placed, not weighted, not restored).
    type: list
    elements: str
    default: []
  default_tier:
    description: Tier of a guest that neither O(guests) nor its metadata gives one.
    type: str
    default: bronze
  emulator_policy:
    description:
      - Where emulator threads and IOThreads of guests that name no C(emulator_policy) run.
      - V(share) on C(host_emulator) (less the CPUs isolated guests took); V(isolate) on one C(host_emulator)
        CPU per guest, failing when they run out; V(float) on the guest's vCPU CPUs.
    type: str
    choices: [share, isolate, float]
    default: share
  pid_dir:
    description: Directory of libvirt's QEMU pid files (C(<name>.pid)).
    type: path
    default: /run/libvirt/qemu
  systemd:
    description:
      - The host runs systemd; the running guests' scopes get their live properties with
        C(systemctl set-property --runtime) and the tier slices are checked.
      - V(false) on hosts without systemd, where the live weight is libvirt's C(cpu_shares) alone.
    type: bool
    default: true
  cgroup_root:
    description: Mount point of the cgroup v2 hierarchy (scopes' C(cpu.weight) and C(cpuset.cpus) are read there).
    type: path
    default: /sys/fs/cgroup
  runtime_unit_dir:
    description:
      - Runtime systemd unit directory where the tier slices' weight budget drop-ins are written
        (C(<slice>.d/40-kvmlab-weight-budget.conf)). It must be volatile (C(/run)), since after a reboot every guest
        starts in its tier slice and no budget drop-in is needed.
    type: path
    default: /run/systemd/system
  sysfs_root:
    description: Where the topology is read (C(devices/system/cpu)), to resolve the pools.
    type: path
    default: /sys
  proc_root:
    description: Where C(meminfo) is read with the topology.
    type: path
    default: /proc
  snapshot_path:
    description:
      - The layer's snapshot file. O(state=present) writes it when it is absent (root only, never
        overwritten); O(state=restored) restores it and removes it. Required with O(state=restored).
      - Omitted with O(state=present), no snapshot is taken.
    type: path
notes:
  - A guest's resource partition is config-only in libvirt; a running guest moves into its tier slice at its
    next start, and the result lists C(partition) as pending until then.
  - The tier metadata is written for tiers that O(guests) gives; a tier from the metadata is already there, and
    the default tier is not written, so such a guest follows O(default_tier).
  - The weight budget is exact for the guests that run when apply runs. When a guest starts or stops between
    applies, its tier's nodes no longer add up to the tier weight (a guest that starts lands in its tier slice,
    one that stops leaves its share unused), and a stopped guest's next start puts it in its slice while the slice
    may still carry a budget share. O(state=query) flags such a tier as drifted (its live total differs
    from its weight); rerunning O(state=present) sets the budget again. No libvirt hook does it automatically.
  - The budget drop-ins live in C(/run) and vanish at a reboot, which is right, since after a reboot every guest
    starts in its tier slice, each slice carries its full configured weight, and no budget is needed.
  - Without systemd (O(systemd=false)) or for a running guest whose scope is not found, there is no budget;
    the live weight is the tier's C(cpu_shares), as before.
seealso:
  - module: kvmlab.host_resources.libvirt_pin
  - module: kvmlab.host_resources.systemd_slice_weight
'''

EXAMPLES = r'''
- name: Place every guest of the host in the shared execution pool (pools derived, one reserved core per socket)
  kvmlab.host_resources.execution_pool:
    tiers: "{{ kvmlab_tiers }}"
    reserved_cores_per_socket: 1
    guard:
      owner: my bootstrap
      packages: [python3-libvirt, systemd-container]
      python_modules: [libvirt]
    guests:
      - {name: ocp-master-01, tier: gold}
      - {name: ocp-infra-01, tier: silver, iothreads: 1}
    exclude: [scratch-vm]
    snapshot_path: /var/lib/kvmlab/snapshots/shared-execution-pool.json

- name: Status, with every guest's tier and where it came from
  kvmlab.host_resources.execution_pool:
    state: query
    tiers: "{{ kvmlab_tiers }}"
    pools: {host_reserved: 0-1, host_housekeeping: "0", host_emulator: "1", guest_domain: 2-15}
  register: pool_status

- name: Roll back to the snapshot
  kvmlab.host_resources.execution_pool:
    state: restored
    snapshot_path: /var/lib/kvmlab/snapshots/shared-execution-pool.json
'''

RETURN = r'''
guard:
  description:
    - What the guard found and did (with O(guard)) - C(found) and C(missing) prerequisites, the packages dpkg has
      (C(packages)) and lacks (C(not_installed)), the host lock (C(lock), as M(kvmlab.host_resources.host_lock)
      returns it) and its release (C(released)); the action adds C(installed), the apt result, when it installed
      packages first.
  returned: with O(guard)
  type: dict
kind:
  description: The kind of the call, as given.
  returned: always
  type: str
  sample: placement
host_cpus:
  description: The host's online CPUs as libvirt reports them.
  returned: always
  type: str
  sample: "0-7"
guests:
  description:
    - One entry per guest handled (placed, queried or restored), in placement order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    tier:
      description: The guest's tier (a key of O(tiers)); null on O(state=restored).
      type: str
    tier_source:
      description: Where the tier came from, V(inventory), V(metadata) or V(default); null on O(state=restored).
      type: str
    running:
      description: Whether the guest runs (its QEMU process was found).
      type: bool
    scope:
      description: The guest's systemd scope, from its QEMU process's cgroup; null when not running or not known.
      type: str
    changed:
      description: Whether anything of this guest changed (or would change in check mode).
      type: bool
    changes:
      description: What changed, each C({scope, item, before, after}); scope V(live), V(config), V(systemd)
        or V(metadata).
      type: list
      elements: dict
    pending:
      description: Items the guest gets only at its next start (C(partition), or everything live for a stopped
        guest).
      type: list
      elements: str
excluded:
  description: Defined guests left alone because O(exclude) names them.
  returned: always
  type: list
  elements: str
snapshot:
  description: The snapshot file and what happened to it.
  returned: when O(snapshot_path) is given
  type: dict
  contains:
    path:
      description: O(snapshot_path).
      type: str
    written:
      description: V(true) when this call wrote it (or would, in check mode).
      type: bool
    existed:
      description: Whether it existed before the call (then it is kept as it was).
      type: bool
    removed:
      description: O(state=restored) removed it (or would, in check mode).
      type: bool
budget:
  description:
    - The weight budget (O(systemd=true) with O(state=present) or O(state=query); null otherwise).
  returned: when O(state) is V(present) or V(query)
  type: dict
  contains:
    tiers:
      description: Per tier C({weight, total, slice, nodes}); C(nodes) maps each budget node (the tier slice,
        the scopes still in C(machine.slice)) to the C(CPUWeight) it gets; a tier without running guests has none.
      type: dict
    slices:
      description: Per tier slice its budget drop-in, C({slice, tier, path, action, before, after}); C(action)
        V(write), V(remove) or null; C(before) and C(after) the drop-in's C(CPUWeight), null for no drop-in.
      type: list
      elements: dict
budget_dropins:
  description: Budget drop-ins written back or removed as the snapshot recorded them (or would be, in check mode).
  returned: when O(state=restored)
  type: list
  elements: str
missing_slices:
  description: Tier slices without a unit file (guests of those tiers would start with the default weight).
  returned: always
  type: list
  elements: str
scope_allowed_cpus:
  description: C(AllowedCPUs) the running guests' scopes get (host_reserved plus guest_domain).
  returned: when O(state) is V(present) or V(query)
  type: str
  sample: "0-1,4-7"
pools:
  description: The pools used (C(host_reserved), C(host_housekeeping), C(host_emulator), C(guest_domain)).
  returned: when O(state) is V(present) or V(query)
  type: dict
verdict:
  description: The layer's verdict, V(shared execution pool) / V(weighted), V(stock) or V(mixed).
  returned: when O(state=query)
  type: str
  sample: shared execution pool
summary:
  description: One line naming the verdict and what is not as intended.
  returned: when O(state=query)
  type: str
mixed:
  description: Names of the items that are not applied, when the verdict is V(mixed).
  returned: when O(state=query)
  type: list
  elements: str
items:
  description:
    - Status items, each C({name, class, guest, tier, tier_source, intended, live, state}); state V(applied),
      V(stock), V(drifted) or V(info) (shown, not counted). O(kind=weights) returns the weight items only.
    - "On systemd hosts one weight item per tier, C(<tier> weight budget), also carries C(total) (the live
      C(cpu.weight) of its nodes added up) and C(nodes) (unit to C({budget, live, guests}))."
  returned: when O(state=query)
  type: list
  elements: dict
restarted:
  description: Guests that started since the snapshot (their new scope got the recorded or default properties).
  returned: when O(state=restored)
  type: list
  elements: str
gone:
  description: Guests of the snapshot that libvirt no longer knows (nothing to restore for them).
  returned: when O(state=restored)
  type: list
  elements: str
fixups:
  description: Scopes whose C(cpuset.cpus) still listed CPUs after systemd's reset and was set back to empty
    (inherit) as recorded.
  returned: when O(state=restored)
  type: list
  elements: str
not_restored:
  description: Scope values that cannot come back at runtime, by scope unit, with the reason (the kernel
    refuses an empty C(cpuset.cpus) on a cgroup with tasks; the guest's next start restores it).
  returned: when O(state=restored)
  type: dict
report:
  description: Readable lines of what was done or found, for a debug task.
  returned: always
  type: list
  elements: str
diff:
  description: Per changed guest, before and after.
  returned: when diff mode is on and something changed
  type: list
  elements: dict
  contains:
    before_header:
      description: Guest name.
      type: str
    after_header:
      description: Guest name.
      type: str
    before:
      description: libvirt state, scope properties and tier metadata before.
      type: dict
    after:
      description: The same after.
      type: dict
'''

import errno
import glob
import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _guarded as guarded
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as lc
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt_conn import libvirt
from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import PoolError, cpu_pools
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _qemu
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _systemd
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import TopologyError, read_topology

METADATA_ELEMENT_TYPE = 2  # VIR_DOMAIN_METADATA_ELEMENT
LAYERS = {'placement': 'shared_execution_pool', 'weights': 'contention'}


def argument_spec():
    return dict(
        state=dict(type='str', default='present', choices=['present', 'query', 'restored']),
        kind=dict(type='str', default='placement', choices=list(ep.KINDS)),
        uri=dict(type='str', default='qemu:///system'),
        tiers=dict(type='dict'),
        pools=dict(type='raw'),
        reserved_cores_per_socket=dict(type='raw'),
        housekeeping_cores_per_socket=dict(type='raw'),
        guard=dict(type='dict'),
        guests=dict(type='list', elements='dict', default=[]),
        exclude=dict(type='list', elements='str', default=[]),
        default_tier=dict(type='str', default='bronze'),
        emulator_policy=dict(type='str', default='share', choices=list(lv.EMULATOR_POLICIES)),
        pid_dir=dict(type='path', default='/run/libvirt/qemu'),
        systemd=dict(type='bool', default=True),
        cgroup_root=dict(type='path', default='/sys/fs/cgroup'),
        runtime_unit_dir=dict(type='path', default=ep.BUDGET_UNIT_DIR),
        sysfs_root=dict(type='path', default='/sys'),
        proc_root=dict(type='path', default='/proc'),
        snapshot_path=dict(type='path'),
    )


class Failure(Exception):
    """Fails the module with this message."""


class Pool(object):
    """One module run: read everything, decide with _execution_pool, then change (unless check mode)."""

    def __init__(self, module, virt):
        self.not_restored = {}
        self.module = module
        self.virt = virt
        self.params = module.params
        self.kind = self.params['kind']
        self.conn = None
        self.host_count = 0
        self.online = frozenset()
        self.systemctl = None
        self.cgroup_root = None
        self.snap = None

    # -- I/O helpers ---------------------------------------------------------
    def connected(self, conn):
        """Take the connection (opened by _libvirt_conn.connection) and read the host's CPUs."""
        uri = self.params['uri']
        self.conn = conn
        try:
            self.host_count, self.online = lv.host_cpus(self.conn)
        except self.virt.libvirtError as exc:
            raise Failure('cannot read the host CPU map from "%s": %s' % (uri, lc.describe(exc, self.virt)))
        if self.params['systemd']:
            self.systemctl = self.module.get_bin_path('systemctl', required=False)
            if not self.systemctl:
                raise Failure('systemd: true but systemctl is not on this host; set systemd: false on hosts '
                              'without systemd')
            self.cgroup_root = _systemd.detect_cgroup_root(self.params['cgroup_root'])

    def run(self, args):
        rc, out, err = self.module.run_command(args, environ_update={'LC_ALL': 'C', 'SYSTEMD_PAGER': ''})
        if rc != 0:
            raise Failure('%s failed (rc %d): %s' % (' '.join(args), rc, (err or out).strip()))
        return out

    def show(self, units):
        if not units:
            return {}
        out = self.run(_systemd.show_command(self.systemctl, units))
        try:
            return _systemd.parse_show(out, units)
        except _systemd.SystemdConfigError as exc:
            raise Failure(str(exc))

    def domains(self):
        try:
            return dict((dom.name(), dom) for dom in self.conn.listAllDomains())
        except self.virt.libvirtError as exc:
            raise Failure('cannot list the domains at uri "%s": %s' % (self.params['uri'], lc.describe(exc, self.virt)))

    def read_guest(self, name, dom):
        """libvirt's view (read_domain), the inactive XML's metadata and the QEMU process."""
        try:
            current = lv.read_domain(dom)
            xml = dom.XMLDesc(lv.XML_INACTIVE | lv.XML_SECURE)
        except self.virt.libvirtError as exc:
            raise Failure('domain "%s": cannot read its state: %s' % (name, lc.describe(exc, self.virt)))
        proc = _qemu.read_guest(self.params['pid_dir'], name) if current['active'] else None
        return {'current': current, 'metadata': ep.parse_metadata(xml), 'shape': ep.xml_shape(xml), 'xml': xml,
                'proc': proc,
                'scope_unit': (proc or {}).get('scope') if (proc or {}).get('running') else None}

    def read_scopes(self, records, slices=()):
        """``systemctl show`` of the running guests' scopes and the tier slices, in one call."""
        if not self.params['systemd']:
            return {}, {}
        units = sorted(set(r['scope_unit'] for r in records.values() if r['scope_unit']))
        shows = self.show(units + [s for s in slices if s not in units])
        scopes = {}
        for unit in units:
            show = shows[unit]
            scopes[unit] = {'unit': unit, 'show': show, 'properties': _systemd.live_properties(show),
                            'cgroup': _systemd.read_cgroup_values(show.get('ControlGroup'), self.cgroup_root)}
        return scopes, dict((name, shows[name]) for name in slices)

    def set_scope(self, unit, props):
        self.run([self.systemctl, 'set-property', '--runtime', '--', unit]
                 + ['%s=%s' % (key, props[key]) for key in _systemd.MANAGED_PROPERTIES if key in props])

    def set_metadata(self, name, dom, element, prefix=ep.METADATA_PREFIX):
        try:
            dom.setMetadata(METADATA_ELEMENT_TYPE, element, prefix if element is not None else None,
                            ep.METADATA_NS, lv.AFFECT_CONFIG)
        except self.virt.libvirtError as exc:
            raise Failure('domain "%s": cannot write its kvmlab metadata: %s' % (name, lc.describe(exc, self.virt)))

    def read_file(self, path):
        try:
            with open(path) as handle:
                return handle.read()
        except (IOError, OSError) as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise Failure('cannot read %s: %s' % (path, exc.strerror or exc))

    def write_dropin(self, plan):
        """Write or remove one budget drop-in (its directory goes too when it is left empty)."""
        directory = os.path.dirname(plan['path'])
        try:
            if plan['action'] == 'write':
                _snapshot.write_atomic(plan['path'], plan['content'].encode('utf-8'), 0o644)
            else:
                try:
                    os.unlink(plan['path'])
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise Failure('cannot remove %s: %s' % (plan['path'], exc.strerror or exc))
                try:
                    os.rmdir(directory)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                        raise Failure('cannot remove %s: %s' % (directory, exc.strerror or exc))
        except _snapshot.SnapshotError as exc:
            raise Failure(str(exc))

    # -- shared steps ----------------------------------------------------------
    def place(self):
        """Every guest with its tier and placement, plus everything read about it."""
        tiers, pools = self.params['tiers'], self.params['pools']
        doms = self.domains()
        records = dict((name, self.read_guest(name, dom)) for name, dom in sorted(doms.items())
                       if name not in set(self.params['exclude']))
        try:
            resolved = ep.resolve_guests(sorted(doms), self.params['guests'], self.params['exclude'],
                                         dict((n, r['metadata']['tier']) for n, r in records.items()),
                                         self.params['default_tier'], tiers)
            placement = lv.guest_placement(resolved['guests'], tiers, pools, self.params['emulator_policy'])
            every_slice = set(lv.tier_settings(tiers, key)['slice'] for key in tiers)
        except (ep.PoolError, lv.PlacementError) as exc:
            raise Failure(str(exc))
        sources = dict((g['name'], g['tier_source']) for g in resolved['guests'])
        for entry in placement['guests']:
            entry['tier_source'] = sources[entry['name']]
        slices = sorted(every_slice)
        scopes, slice_shows = self.read_scopes(records, slices)
        missing = sorted(name for name, show in slice_shows.items()
                         if not (show.get('FragmentPath') or show.get('DropInPaths')))
        return {'doms': doms, 'records': records, 'placement': placement, 'excluded': resolved['excluded'],
                'scopes': scopes, 'slices': slice_shows, 'missing_slices': missing}

    def context(self, placed):
        return {'online': format_cpulist(self.online), 'reserved': self.params['pools'].get('host_reserved'),
                'scope_allowed_cpus': placed['placement']['scope_allowed_cpus'],
                'systemd': self.params['systemd']}

    def budget(self, placed):
        """The weight budget of the running guests (systemd hosts only; None elsewhere).

        ``{'plan'`` (``_execution_pool.plan_budget``), ``'dropins'`` (one
        ``budget_dropin_plan`` per tier slice) and ``'live'`` (unit -> the
        kernel's cpu.weight of each budget node)``}``.
        """
        if not self.params['systemd']:
            return None
        tiers = self.params['tiers']
        try:
            settings = ep.budget_tiers(dict((key, lv.tier_settings(tiers, key)) for key in tiers))
        except lv.PlacementError as exc:
            raise Failure(str(exc))
        running = []
        for entry in placed['placement']['guests']:
            record = placed['records'][entry['name']]
            unit = record['scope_unit']
            scope = placed['scopes'].get(unit)
            if not unit or scope is None:
                continue  # no scope found: the guest keeps its tier weight, outside the budget
            where = (record['proc'] or {}).get('slice') or _qemu.slice_of(scope['show'].get('ControlGroup') or '')
            running.append({'name': entry['name'], 'tier': entry['tier'], 'scope': unit, 'slice': where})
        try:
            plan = ep.plan_budget(settings, running)
            dropins = []
            for key in sorted(settings):
                name = settings[key]['slice']
                path = ep.budget_dropin_path(name, self.params['runtime_unit_dir'])
                dropins.append(ep.budget_dropin_plan(name, key, plan['slices'][name], settings[key]['cpu_weight'],
                                                     self.read_file(path), path))
        except ep.PoolError as exc:
            raise Failure(str(exc))
        live = {}
        for unit in plan['nodes']:
            if unit in placed['scopes']:
                live[unit] = (placed['scopes'][unit].get('cgroup') or {}).get('cpu_weight')
            else:
                show = placed['slices'].get(unit) or {}
                live[unit] = _systemd.read_cgroup_cpu_weight(show.get('ControlGroup'), self.cgroup_root)
        return {'plan': plan, 'dropins': dropins, 'live': live}

    def guest_view(self, entry, record, scopes):
        current = record['current']
        return {'entry': entry, 'active': current['active'], 'proc': record['proc'],
                'libvirt': {'live': lv.format_state(current['live']), 'config': lv.format_state(current['config'])},
                'scope': scopes.get(record['scope_unit']), 'metadata': record['metadata']}

    def pool_keys(self):
        pools = self.params['pools']
        return dict((key, pools[key]) for key in ('host_reserved', 'host_housekeeping', 'host_emulator',
                                                  'guest_domain') if key in pools)

    # -- query -----------------------------------------------------------------
    def query(self):
        placed = self.place()
        context = self.context(placed)
        budget = self.budget(placed)
        if budget is not None:
            context['weights'] = budget['plan']['scopes']
        items = []
        for entry in placed['placement']['guests']:
            record = placed['records'][entry['name']]
            items.extend(ep.guest_items(self.guest_view(entry, record, placed['scopes']), context, self.kind))
        if budget is not None:
            items.extend(ep.budget_items(budget['plan'], budget['live'],
                                         dict((d['slice'], d['before']) for d in budget['dropins'])))
        if self.kind == 'placement':
            items.extend(ep.slice_items(placed['slices'], self.params['tiers']))
            items.extend(ep.excluded_items(placed['excluded']))
        state = ep.status(items, self.kind)
        guests = [self.guest_result(entry, placed['records'][entry['name']]) for entry in placed['placement']['guests']]
        result = dict(state, guests=guests, excluded=placed['excluded'], missing_slices=placed['missing_slices'],
                      scope_allowed_cpus=context['scope_allowed_cpus'], pools=self.pool_keys(), changed=False,
                      budget=self.budget_result(budget))
        result['report'] = ep.status_report(result, self.kind)
        return result

    @staticmethod
    def budget_result(budget, dropins=None):
        """The ``budget`` key of the result: per tier its weight, nodes and shares, and the slices' drop-ins."""
        if budget is None:
            return None
        plan = budget['plan']
        tiers = dict((key, {'weight': info['weight'], 'total': info['total'], 'slice': info['slice'],
                            'nodes': dict((unit, plan['nodes'][unit]) for unit in info['nodes'])})
                     for key, info in plan['tiers'].items())
        slices = [dict((k, v) for k, v in item.items() if k != 'content') for item in (dropins or budget['dropins'])]
        return {'tiers': tiers, 'slices': slices}

    def guest_result(self, entry, record, changes=None, pending=None):
        proc = record['proc'] or {}
        return {'name': entry['name'], 'tier': entry['tier'], 'tier_source': entry.get('tier_source'),
                'running': bool(record['current']['active'] and proc.get('running')),
                'scope': record['scope_unit'], 'changed': bool(changes), 'changes': changes or [],
                'pending': pending or []}

    # -- present ---------------------------------------------------------------
    def snapshot(self, placed, budget=None):
        path = self.params['snapshot_path']
        if not path:
            return None
        info = {'path': path, 'existed': os.path.lexists(path), 'written': False, 'removed': False}
        if info['existed']:
            try:
                _snapshot.load(path)
            except _snapshot.SnapshotError as exc:
                raise Failure('the snapshot rollback would restore is unusable, so nothing was changed: %s' % exc)
            return info
        names = [entry['name'] for entry in placed['placement']['guests']]
        entries = []
        for name in names:
            entries.extend(lv.snapshot_entries(name, placed['records'][name]['current']))
        scopes = dict((name, placed['scopes'][placed['records'][name]['scope_unit']]) for name in names
                      if placed['records'][name]['scope_unit'] in placed['scopes'])
        metadata = dict((name, placed['records'][name]['metadata']) for name in names)
        shapes = dict((name, placed['records'][name]['shape']) for name in names)
        values = ep.snapshot_values(self.kind, self.params['uri'], names, entries, scopes, metadata, shapes)
        snap = _snapshot.new_snapshot(LAYERS[self.kind], host=socket.gethostname())
        snap['values'] = values
        try:
            # the tier slices' budget drop-ins as they are before the first apply (normally absent):
            # rollback writes back what existed and removes what did not
            for item in (budget or {}).get('dropins', []):
                snap['files'][item['path']] = _snapshot.read_file_record(item['path'])
                directory = os.path.dirname(item['path'])
                snap['dirs'][directory] = _snapshot.read_dir_record(directory)
        except _snapshot.SnapshotError as exc:
            raise Failure(str(exc))
        info['written'] = True
        if not self.module.check_mode:
            try:
                if not _snapshot.save(path, snap):
                    info['written'] = False  # another run wrote it meanwhile: that one stands
            except _snapshot.SnapshotError as exc:
                raise Failure(str(exc))
        return info

    def plan_libvirt(self, entry, current, live_shares):
        """libvirt changes of one guest: the request, and live ``cpu_shares`` ``live_shares`` when given.

        On systemd hosts the live cpu_shares is the scope's CPUWeight (libvirt
        writes it through systemd), the budget share of a guest still in
        machine.slice; the persistent ``<shares>`` stays the tier's.
        """
        try:
            request = lv.parse_request(ep.pin_request(entry, self.kind), online=self.online)
            live, config = lv.resolve_scopes(request, current['active'], 'skip')
            if live and live_shares is not None and live_shares != request['cpu_shares']:
                changes = (lv.plan_domain(dict(request, cpu_shares=live_shares), current, self.online, True, False)
                           + lv.plan_domain(request, current, self.online, False, config))
            else:
                changes = lv.plan_domain(request, current, self.online, live, config)
        except lv.RequestError as exc:
            raise Failure(str(exc))
        return request, changes

    def present(self):
        placed = self.place()
        context = self.context(placed)
        budget = self.budget(placed)
        budget_scopes = budget['plan']['scopes'] if budget is not None else {}
        plans = []
        for entry in placed['placement']['guests']:
            name = entry['name']
            record = placed['records'][name]
            current = record['current']
            scope = placed['scopes'].get(record['scope_unit'])
            weight = budget_scopes.get(record['scope_unit']) if scope is not None else None
            live_shares = None
            if scope is not None:
                live_shares = entry['cpu_weight'] if weight is None else weight
            request, changes = self.plan_libvirt(entry, current, live_shares)
            want_meta = ep.wants_metadata(entry, self.kind)
            meta = None
            if want_meta is not None and (record['metadata']['tier'] or '').lower() != want_meta.lower():
                meta = {'before': record['metadata']['tier'], 'after': want_meta,
                        'element': ep.metadata_fragment(want_meta)}
            scope_set = {}
            if scope is not None:
                wanted = ep.scope_wanted(entry, self.kind, context['scope_allowed_cpus'], weight=weight,
                                         allowed=scope['properties'].get('AllowedCPUs', ''),
                                         effective=(scope.get('cgroup') or {}).get('cpuset_cpus_effective'))
                try:
                    _systemd.wanted_properties(
                        cpu_weight=int(wanted['CPUWeight']), allowed_cpus=wanted.get('AllowedCPUs'),
                        online_cpus=self.online, name=scope['unit'])
                    plan = _systemd.plan_unit({'name': scope['unit'], 'state': 'present', 'persistent': False,
                                               'wanted': wanted}, scope['show'], None, None, None, None)
                except _systemd.SystemdConfigError as exc:
                    raise Failure('guest %s: %s' % (name, exc))
                scope_set = plan.changes
            plans.append({'entry': entry, 'record': record, 'request': request, 'changes': changes,
                          'meta': meta, 'scope': scope, 'scope_set': scope_set,
                          'budget_shares': live_shares is not None and live_shares != request['cpu_shares']})
        dropins = [item for item in (budget['dropins'] if budget is not None else []) if item['action']]
        snapshot = self.snapshot(placed, budget)

        results, diffs = [], []
        done = []
        for plan in plans:
            name = plan['entry']['name']
            record, changes = plan['record'], plan['changes']
            current = record['current']
            after = None
            if not self.module.check_mode:
                try:
                    if plan['scope_set']:
                        self.set_scope(plan['scope']['unit'],
                                       dict((key, c['after']) for key, c in plan['scope_set'].items()))
                    if changes:
                        lv.apply_changes(self.conn, placed['doms'][name], changes, self.host_count)
                        after = lv.read_domain(placed['doms'][name])
                    if plan['meta']:
                        self.set_metadata(name, placed['doms'][name], plan['meta']['element'])
                except self.virt.libvirtError as exc:
                    raise Failure('domain "%s": libvirt refused a change: %s (guests changed before this one: %s)'
                                  % (name, lc.describe(exc, self.virt), ', '.join(done) or 'none'))
                except Failure as exc:
                    raise Failure('%s (guests changed before this one: %s)' % (exc, ', '.join(done) or 'none'))
            if after is None:
                predicted = lv.predict_after(current, changes)
                after = dict(current, live=predicted['live'], config=predicted['config'])
            pending = lv.pending_items(plan['request'], after, current['active'], changes)
            if plan['budget_shares']:
                # the live weight is the budget share (or the CPUWeight) by design, not a pending <shares>
                pending = [item for item in pending if item != 'cpu_shares']
            if not current['active']:
                pending = ['live placement and weight (not running)'] + pending
            listed = lv.format_changes(changes)
            listed += [{'scope': 'systemd', 'item': '%s %s' % (plan['scope']['unit'], key),
                        'before': c['before'], 'after': c['after']} for key, c in sorted(plan['scope_set'].items())]
            if plan['meta']:
                listed.append({'scope': 'metadata', 'item': 'tier', 'before': plan['meta']['before'],
                               'after': plan['meta']['after']})
            result = self.guest_result(plan['entry'], record, listed, pending)
            results.append(result)
            if listed:
                done.append(name)
                diffs.append(self.diff_entry(name, current, after, plan))
        if dropins and not self.module.check_mode:
            for item in dropins:
                try:
                    self.write_dropin(item)
                except Failure as exc:
                    raise Failure('%s (guests changed before: %s)' % (exc, ', '.join(done) or 'none'))
            self.run([self.systemctl, 'daemon-reload'])
        if dropins:
            diffs.append({'before_header': 'weight budget (tier slices)', 'after_header': 'weight budget (tier slices)',
                          'before': dict((item['slice'], ep.budget_dropin_value(item['before'])) for item in dropins),
                          'after': dict((item['slice'], ep.budget_dropin_value(item['after'])) for item in dropins)})
        output = {'changed': bool(done) or bool(dropins), 'guests': results, 'excluded': placed['excluded'],
                  'missing_slices': placed['missing_slices'], 'scope_allowed_cpus': context['scope_allowed_cpus'],
                  'pools': self.pool_keys(), 'budget': self.budget_result(budget)}
        if snapshot is not None:
            output['snapshot'] = snapshot
            output['changed'] = output['changed'] or snapshot['written']
        output['report'] = ep.apply_report(output, placed['placement']['guests'], self.kind)
        return output, diffs

    def diff_entry(self, name, current, after, plan):
        before = {'live': lv.format_state(current['live']), 'config': lv.format_state(current['config'])}
        later = {'live': lv.format_state(after['live']), 'config': lv.format_state(after['config'])}
        if plan.get('scope_set'):
            before['scope'] = dict((k, c['before']) for k, c in plan['scope_set'].items())
            later['scope'] = dict((k, c['after']) for k, c in plan['scope_set'].items())
        if plan.get('meta'):
            before['tier_metadata'] = plan['meta']['before']
            later['tier_metadata'] = plan['meta']['after']
        return {'before_header': name, 'after_header': name, 'before': before, 'after': later}

    # -- restored --------------------------------------------------------------
    def load_snapshot(self):
        """The snapshot's values (the whole snapshot is kept in ``self.snap``)."""
        path = self.params['snapshot_path']
        if not os.path.lexists(path):
            raise Failure('nothing to roll back: no snapshot at %s (%s never ran on this host, or its rollback '
                          'already restored it)' % (path, 'contention_apply' if self.kind == 'weights' else 'apply'))
        try:
            snap = _snapshot.load(path)
        except _snapshot.SnapshotError as exc:
            raise Failure('%s; nothing was changed' % exc)
        layer = snap.get('layer')
        legacy = layer == 'shared_execution_pool' and snap.get('migrated_from')
        if layer != LAYERS[self.kind] and not legacy:
            raise Failure('%s: a snapshot of the %s layer, not of %s; nothing was changed'
                          % (path, layer, LAYERS[self.kind]))
        try:
            ep.check_values(snap['values'], self.kind, path)
        except ep.PoolError as exc:
            raise Failure('%s; nothing was changed' % exc)
        self.snap = snap
        return snap['values']

    def budget_restore(self):
        """Plans that put the budget drop-ins back as the snapshot recorded them.

        ``(file plan, dir plan)``: the recorded drop-ins and directories come
        back (written or removed); a budget drop-in of ours that the snapshot
        does not record (a snapshot of an older release) is removed, since
        no budget existed before the first apply.
        """
        if not self.params['systemd']:
            return [], []
        snap = self.snap
        try:
            current_files, current_dirs = _snapshot.read_current(snap)
        except _snapshot.SnapshotError as exc:
            raise Failure('%s; nothing was changed' % exc)
        files = _snapshot.file_restore_plan(snap, current_files)
        dirs = _snapshot.dir_restore_plan(snap, current_dirs)
        pattern = os.path.join(self.params['runtime_unit_dir'], '*.slice.d', ep.BUDGET_DROPIN)
        for path in sorted(glob.glob(pattern)):
            if path in (snap.get('files') or {}):
                continue
            if ep.BUDGET_MARKER in (self.read_file(path) or '').splitlines():
                files.append({'action': 'remove', 'path': path})
                dirs.append({'action': 'rmdir_if_empty', 'path': os.path.dirname(path)})
        return files, dirs

    def restored(self):
        values = self.load_snapshot()
        doms = self.domains()
        names = [name for name in values.get('guests', []) if name not in set(self.params['exclude'])]
        records = {}
        for name in names:
            if name in doms:
                records[name] = self.read_guest(name, doms[name])
        now = dict((name, {'defined': name in records,
                           'running': bool(records.get(name) and records[name]['current']['active']),
                           'scope': (records.get(name) or {}).get('scope_unit')}) for name in names)
        values = dict(values, guests=names)
        plan = ep.restore_plan(values, self.kind, now)
        scopes, _slices = self.read_scopes(records)

        by_domain = {}
        for entry in plan['domains']:
            name = entry['name']
            if name not in records:
                continue
            current = records[name]['current']
            try:
                request = lv.parse_request(entry, online=self.online)
                live, config = lv.resolve_scopes(request, current['active'], 'skip')
                changes = lv.plan_domain(request, current, self.online, live, config)
            except lv.RequestError as exc:
                raise Failure('snapshot %s: %s; nothing was changed' % (self.params['snapshot_path'], exc))
            slot = by_domain.setdefault(name, {'changes': [], 'requests': []})
            slot['changes'].extend(changes)
            slot['requests'].append(request)
        meta_actions = {}
        for name, record in plan['metadata'].items():
            action, element = ep.metadata_restore(record, records[name]['metadata'])
            if action != 'keep':
                meta_actions[name] = (action, element, record.get('prefix') or ep.METADATA_PREFIX)
        scope_sets = {}
        for item in plan['scopes']:
            scope = scopes.get(item['unit'])
            if scope is None:
                continue
            wanted = ep.scope_restore(item['properties'], scope['properties'])
            scope_sets[item['guest']] = (item, wanted)

        results, diffs, fixups, done = [], [], [], []
        for name in names:
            if name not in records:
                continue
            record = records[name]
            current = record['current']
            slot = by_domain.get(name, {'changes': [], 'requests': []})
            changes = slot['changes']
            meta = meta_actions.get(name)
            item, wanted = scope_sets.get(name, (None, {}))
            after = None
            # predicted from the XML as it is now (the real run looks again after its other changes)
            tidy = name in plan['shapes'] and ep.tidy_xml(record['xml'], plan['shapes'][name]) is not None
            if not self.module.check_mode:
                tidy = False
                try:
                    if changes:
                        lv.apply_changes(self.conn, doms[name], changes, self.host_count)
                        after = lv.read_domain(doms[name])
                    if meta:
                        self.restore_metadata(name, doms[name], meta)
                    if name in plan['shapes']:
                        tidied = ep.tidy_xml(doms[name].XMLDesc(lv.XML_INACTIVE | lv.XML_SECURE), plan['shapes'][name])
                        if tidied:
                            self.conn.defineXML(tidied)
                            tidy = True
                    if wanted:
                        self.set_scope(item['unit'], wanted)
                    if item is not None and self.params['systemd']:
                        fix = self.fix_cpuset(item, scopes[item['unit']])
                        if fix:
                            fixups.append(fix)
                except self.virt.libvirtError as exc:
                    raise Failure('domain "%s": libvirt refused a restore: %s (guests restored before this one: '
                                  '%s; the snapshot is kept)' % (name, lc.describe(exc, self.virt), ', '.join(done) or 'none'))
            if after is None:
                predicted = lv.predict_after(current, changes)
                after = dict(current, live=predicted['live'], config=predicted['config'])
            pending = sorted(set(p for request in slot['requests']
                                 for p in lv.pending_items(request, after, current['active'], changes)))
            listed = lv.format_changes(changes)
            listed += [{'scope': 'systemd', 'item': '%s %s' % (item['unit'], key),
                        'before': scopes[item['unit']]['properties'].get(key, ''), 'after': value}
                       for key, value in sorted(wanted.items())]
            if meta:
                listed.append({'scope': 'metadata', 'item': 'kvmlab element', 'before': record['metadata']['element'],
                               'after': meta[1] if meta[0] == 'set' else None})
            if tidy:
                listed.append({'scope': 'config', 'item': 'xml shape', 'before': record['shape'],
                               'after': plan['shapes'][name]})
            results.append({'name': name, 'tier': None, 'tier_source': None, 'running': current['active'],
                            'scope': record['scope_unit'], 'changed': bool(listed), 'changes': listed,
                            'pending': pending})
            if listed:
                done.append(name)
                diffs.append(self.diff_entry(name, current, after, {}))
        file_plan, dir_plan = self.budget_restore()
        budget_dropins = [action['path'] for action in file_plan if action['action'] in ('write', 'remove')]
        dropins_before = dict((p, 'present' if os.path.lexists(p) else 'absent') for p in budget_dropins)
        if budget_dropins and not self.module.check_mode:
            try:
                _snapshot.apply_file_plan(file_plan)
                _snapshot.apply_dir_plan(dir_plan)
            except _snapshot.SnapshotError as exc:
                raise Failure('%s (guests restored before: %s; the snapshot is kept)' % (exc, ', '.join(done) or 'none'))
            self.run([self.systemctl, 'daemon-reload'])
        if budget_dropins:
            diffs.append({'before_header': 'weight budget drop-ins', 'after_header': 'weight budget drop-ins',
                          'before': dropins_before,
                          'after': dict((a['path'], 'present (as recorded)' if a['action'] == 'write' else 'absent')
                                        for a in file_plan if a['path'] in budget_dropins)})
        path = self.params['snapshot_path']
        removed = True
        if not self.module.check_mode:
            try:
                removed = _snapshot.discard(path)
            except _snapshot.SnapshotError as exc:
                raise Failure('restored, but %s' % exc)
        output = {'changed': bool(done) or removed or bool(budget_dropins), 'budget_dropins': budget_dropins,
                  'guests': results, 'excluded': sorted(set(self.params['exclude']) & set(doms)),
                  'missing_slices': [], 'restarted': [item['guest'] for item in plan['scopes'] if item['restarted']],
                  'gone': plan['gone'], 'fixups': fixups, 'not_restored': dict(self.not_restored),
                  'snapshot': {'path': path, 'existed': True, 'written': False, 'removed': removed}}
        output['report'] = ep.restore_report(output)
        return output, diffs

    def restore_metadata(self, name, dom, action):
        kind, element, prefix = action
        if kind == 'set':
            self.set_metadata(name, dom, element, prefix)
        elif kind == 'remove':
            self.set_metadata(name, dom, None)

    def fix_cpuset(self, item, scope):
        """Set an unrestricted scope's cpuset.cpus back to empty when systemd's reset left CPUs in it."""
        cgroup_dir = _systemd.cgroup_dir(scope['show'].get('ControlGroup'), self.cgroup_root)
        if cgroup_dir is None:
            return None
        after = _systemd.read_cgroup_values(scope['show'].get('ControlGroup'), self.cgroup_root)
        text = ep.cpuset_fixup(item, after)
        if text is None:
            return None
        try:
            with open(os.path.join(cgroup_dir, 'cpuset.cpus'), 'w') as handle:
                handle.write(text + '\n' if text else '\n')
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOSPC and not text:
                # the kernel refuses to empty the cpuset of a cgroup with tasks (cgroup v2 too):
                # "" (inherit) comes back with the guest's next scope, at its next start
                self.not_restored[item['unit']] = (
                    'cpuset.cpus is "%s" where the snapshot recorded "" (inherit): the kernel refuses an empty '
                    'cpuset while the scope has tasks (ENOSPC); the same CPUs are effective, and the guest\'s next '
                    'start gives it a new scope with "" again' % after.get('cpuset_cpus'))
                return None
            raise Failure('%s: cpuset.cpus is "%s" where the snapshot recorded "" (inherit), and writing it back '
                          'failed: %s' % (item['unit'], after.get('cpuset_cpus'), exc))
        return item['unit']


def resolve_pools(params):
    """The pools from the operator's spec and the host's topology (read here); Failure naming the problem."""
    try:
        topology = read_topology(params['sysfs_root'], params['proc_root'])
    except TopologyError as exc:
        raise Failure('cannot gather CPU topology: %s' % exc)
    try:
        return cpu_pools(topology, params['reserved_cores_per_socket'], params['housekeeping_cores_per_socket'],
                         params['pools'] or None)
    except PoolError as exc:
        raise Failure('pools: %s' % exc)


def run(module, pool):
    """The call itself, under the guard; (output, diffs)."""
    lc.require(module, libvirt)
    if module.params['state'] == 'restored':
        pool.load_snapshot()  # a missing or broken snapshot fails before anything else
    with lc.connection(libvirt, module.params['uri'], Failure) as conn:
        pool.connected(conn)
        if module.params['state'] == 'query':
            return pool.query(), []
        if module.params['state'] == 'present':
            return pool.present()
        return pool.restored()


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[('state', 'present', ('tiers',)), ('state', 'query', ('tiers',)),
                     ('state', 'restored', ('snapshot_path',))],
        supports_check_mode=True,
    )
    params = module.params
    guard = params['guard']
    problem = guarded.check_guard(guard) if guard is not None else None
    if problem:
        module.fail_json(msg=problem)
    try:
        if params['state'] != 'restored':
            params['pools'] = resolve_pools(params)
    except Failure as exc:
        module.fail_json(msg=str(exc))
    entered = None
    if guard is not None:
        try:
            entered = guarded.enter(guard, module.check_mode, module.warn)
        except guarded.GuardFailed as exc:
            module.fail_json(msg=str(exc), guard=exc.result)
        if entered.get('not_installed'):
            # the action installs them and calls again; nothing was read from libvirt, nothing changed
            module.exit_json(changed=False, guard=entered, kind=params['kind'])
    pool = Pool(module, libvirt)
    failure = None
    try:
        output, diffs = run(module, pool)
    except Failure as exc:
        failure = str(exc)
    finally:
        if entered is not None:
            entered['released'] = guarded.leave(guard, entered, module.warn)
    if failure is not None:
        module.fail_json(msg=failure, guard=entered)
    output['kind'] = params['kind']
    output['host_cpus'] = format_cpulist(pool.online)
    if entered is not None:
        output['guard'] = entered
    if module._diff and diffs:
        output['diff'] = diffs
    module.exit_json(**output)


if __name__ == '__main__':
    main()
