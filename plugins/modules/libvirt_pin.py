#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: libvirt_pin
short_description: Pin libvirt guest threads, set CPU shares and resource partitions
version_added: 0.1.0
description:
  - Sets, for a list of libvirt domains in one call, the CPU pinning of vCPU
    threads, the emulator thread and IOThreads, the C(cpu_shares) scheduler
    parameter and the persistent C(<resource><partition>).
  - Works through the libvirt API (libvirt-python), never through C(virsh).
  - Reads every domain first and changes only what differs. All requests are
    validated before anything is changed (masks parse and lie within the
    host's online CPUs, domains exist, scopes fit the domain state), so a bad
    entry leaves every domain untouched.
  - When libvirt refuses a change part-way through (after validation), the
    module restores every domain it changed in this call, the refusing
    domain's own partial changes included, to the state it read before, then
    fails with a message naming the refused write, what that domain had
    already written, and which domains it restored or could not restore (and
    why); RV(rollback) has the details.
  - Only libvirt's "no such domain" (C(VIR_ERR_NO_DOMAIN)) counts as a
    missing domain; any other lookup error (connection dropped, access
    denied) fails with libvirt's text and error code.
  - Always returns RV(snapshot), the state found before any change, as
    O(domains) entries that restore it exactly when passed back to this
    module (including unpinned threads, absent C(<shares>) and absent
    partition). With O(state=query) nothing is changed.
  - The live scope changes the running guest's threads (sched_setaffinity
    and cgroups through libvirt); the config scope changes the persistent
    XML, which the guest uses from its next start.
author:
  - kvmlab.host_resources contributors (@kvmlab)
requirements:
  - libvirt-python on the managed host
  - a libvirt daemon with the QEMU driver
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the domains and reports the changes it would make, without making them.
  diff_mode:
    support: full
    details: One before/after entry per changed domain, both scopes.
  platform:
    platforms: posix
options:
  uri:
    description:
      - libvirt connection URI.
    type: str
    default: qemu:///system
  state:
    description:
      - V(present) applies the requested settings.
      - V(query) changes nothing and returns the current state of the listed
        domains (of every domain of the connection when O(domains) is
        omitted) in RV(domains) and RV(snapshot); settings in O(domains)
        entries are then ignored, so a role can query with the same list it
        applies.
    type: str
    choices: [present, query]
    default: present
  scope:
    description:
      - Default scope for entries of O(domains) that set none.
      - V(auto) changes the live guest and the persistent config of a running
        domain, and only the persistent config of a stopped one.
      - V(both) changes live and persistent config; the domain must be running.
      - V(live) changes only the running guest; the domain must be running.
      - V(config) changes only the persistent XML (next start).
      - A live request for a stopped domain fails, unless O(live_on_stopped=skip).
    type: str
    choices: [auto, live, config, both]
    default: auto
  live_on_stopped:
    description:
      - What to do with the live part of a request for a domain that is not running.
      - V(fail) fails before anything is changed.
      - V(skip) applies only the persistent part; useful to restore a
        RV(snapshot) whose live entries belong to guests stopped since.
    type: str
    choices: [fail, skip]
    default: fail
  vcpu_cpuset:
    description:
      - Default for O(domains[].vcpu_cpuset) of every entry.
    type: str
  emulator_cpuset:
    description:
      - Default for O(domains[].emulator_cpuset) of every entry.
    type: str
  iothread_cpuset:
    description:
      - Default for O(domains[].iothread_cpuset) of every entry.
    type: str
  domains:
    description:
      - The domains and what to set on each. Options left out are not managed.
      - A cpuset is a Linux cpulist such as V(2-11,14), items separated by
        single commas without spaces (V(0-5,,24-29), V(0,), V(0--3) or
        V(0-3, 8) fail naming the position); every CPU must be online on the
        host and the list must not be empty.
      - The word V(unpinned) instead of a cpuset removes the pin from the
        persistent XML (the thread then follows the domain's
        C(<vcpu cpuset>), else all host CPUs); in the live scope it pins the
        thread to that same default.
      - A wanted cpuset equal to what an unpinned thread already gets is no
        change.
      - A domain may be listed twice only for different scopes (as in
        RV(snapshot)).
      - Required when O(state=present).
    type: list
    elements: dict
    suboptions:
      name:
        description: Domain name.
        type: str
        required: true
      scope:
        description: Scope for this entry; defaults to O(scope).
        type: str
        choices: [auto, live, config, both]
      vcpu_cpuset:
        description: Cpuset for every vCPU thread that O(domains[].vcpu_pins) does not name.
        type: str
      vcpu_pins:
        description:
          - 'Cpuset per vCPU number, for example V({0: "2", 1: "3"}).'
          - Overrides O(domains[].vcpu_cpuset) for the vCPUs it names.
        type: dict
      emulator_cpuset:
        description: Cpuset for the emulator threads.
        type: str
      iothread_cpuset:
        description: Cpuset for every IOThread that O(domains[].iothread_pins) does not name.
        type: str
      iothread_pins:
        description:
          - 'Cpuset per IOThread id, for example V({1: "0-1"}).'
          - Overrides O(domains[].iothread_cpuset) for the ids it names.
        type: dict
      cpu_shares:
        description:
          - The C(cpu_shares) scheduler parameter (cgroup v1 C(cpu.shares),
            cgroup v2 C(cpu.weight)), V(2) to V(262144).
          - V(0) removes C(<shares>) from the persistent XML (config scope only).
          - Set once per scope; libvirt refuses live and config in one call.
        type: int
      partition:
        description:
          - Persistent C(<resource><partition>), for example V(/machine/gold).
          - The empty string removes it.
          - Written into the inactive XML with defineXML; a running guest moves
            only at its next start, so a change on a running domain is listed
            in RV(domains[].pending).
          - Not allowed with scope V(live). The partition (cgroup folder or
            systemd slice) must exist when the guest starts.
        type: str
notes:
  - libvirt silently drops pin bits beyond the host's CPUs; this module
    refuses such masks instead.
  - A live pin is applied with one libvirt call per thread; when live and
    config want the same cpuset, one call with both flags does both.
  - vCPU numbers and IOThread ids must exist in the scope being changed.
seealso:
  - name: libvirt domain XML, CPU tuning
    description: cputune, vcpupin, emulatorpin, iothreadpin, shares.
    link: https://libvirt.org/formatdomain.html#cpu-tuning
  - name: libvirt domain XML, resource partitioning
    description: The resource partition element.
    link: https://libvirt.org/formatdomain.html#resource-partitioning
'''

EXAMPLES = r'''
- name: Snapshot the current pinning of three guests (changes nothing)
  kvmlab.host_resources.libvirt_pin:
    state: query
    domains:
      - name: ocp-master-01
      - name: ocp-infra-01
      - name: bastion-01
  register: pin_snapshot

- name: Shared execution pool, Gold/Silver/Bronze shares and partitions
  kvmlab.host_resources.libvirt_pin:
    vcpu_cpuset: "6-23,30-47,54-71,78-95"
    emulator_cpuset: "2-5,26-29,50-53,74-77"
    domains:
      - name: ocp-master-01
        cpu_shares: 512
        partition: /machine/gold
      - name: ocp-infra-01
        iothread_cpuset: "2-5,26-29,50-53,74-77"
        cpu_shares: 333
        partition: /machine/silver
      - name: bastion-01
        cpu_shares: 167
        partition: /machine/bronze
  register: pin_result

- name: Pin single vCPUs of one guest, persistent config only
  kvmlab.host_resources.libvirt_pin:
    scope: config
    domains:
      - name: idm-01
        vcpu_pins:
          0: "6"
          1: "54"

- name: Roll back exactly to the snapshot taken above
  kvmlab.host_resources.libvirt_pin:
    live_on_stopped: skip
    domains: "{{ pin_snapshot.snapshot }}"

- name: Remove pins and partition from the persistent XML
  kvmlab.host_resources.libvirt_pin:
    scope: config
    domains:
      - name: idm-01
        vcpu_cpuset: unpinned
        emulator_cpuset: unpinned
        cpu_shares: 0
        partition: ""
'''

RETURN = r'''
domains:
  description: One result per domain, in the order of O(domains).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
      sample: ocp-master-01
    active:
      description: Whether the domain was running.
      type: bool
      sample: true
    scopes:
      description: Scopes this entry touched (empty for O(state=query)).
      type: list
      elements: str
      sample: [live, config]
    changed:
      description: Whether anything changed (or would change in check mode) for this entry.
      type: bool
      sample: true
    changes:
      description: Each changed item with its value before and after.
      type: list
      elements: dict
      contains:
        scope:
          description: V(live) or V(config).
          type: str
          sample: live
        item:
          description: >-
            What changed: V(vcpu_pins.N), V(emulator_cpuset),
            V(iothread_pins.N), V(cpu_shares) or V(partition).
          type: str
          sample: vcpu_pins.0
        before:
          description: Value before (cpulist, V(unpinned), integer or path).
          type: raw
          sample: "0-95"
        after:
          description: Value after.
          type: raw
          sample: "6-23,30-47,54-71,78-95"
    pending:
      description:
        - Items that the guest uses only from its next start.
        - For a stopped domain, the persistent items changed now; for a
          running domain, requested persistent items that differ from the
          live value (always a changed partition).
      type: list
      elements: str
      sample: [partition]
    before:
      description: State before any change, per scope.
      type: dict
      contains:
        live:
          description:
            - Live state; null for a stopped domain.
            - Keys V(vcpu_pins) and V(iothread_pins) (number to cpulist),
              V(emulator_cpuset), V(cpu_shares) and V(partition) (the running
              guest's partition).
          type: dict
          sample: {"vcpu_pins": {"0": "0-95"}, "emulator_cpuset": "0-95", "iothread_pins": {},
                   "cpu_shares": 1024, "partition": "/machine"}
        config:
          description:
            - Persistent state with the same keys. A pin is V(unpinned)
              when the XML has no element for it, C(cpu_shares) is V(0)
              when C(<shares>) is absent and V(partition) is empty when
              absent.
          type: dict
          sample: {"vcpu_pins": {"0": "unpinned"}, "emulator_cpuset": "unpinned", "iothread_pins": {},
                   "cpu_shares": 0, "partition": ""}
    after:
      description: State after the changes (predicted in check mode), same form as RV(domains[].before).
      type: dict
      contains:
        live:
          description: Live state after; null for a stopped domain.
          type: dict
        config:
          description: Persistent state after.
          type: dict
snapshot:
  description:
    - The state found before any change, as O(domains) entries (one V(config)
      entry per domain and one V(live) entry per running domain). Passing
      it back as O(domains) restores that state exactly.
  returned: always
  type: list
  elements: dict
  sample:
    - name: ocp-master-01
      scope: config
      vcpu_pins: {"0": "unpinned", "1": "unpinned"}
      emulator_cpuset: unpinned
      iothread_pins: {}
      cpu_shares: 0
      partition: ""
    - name: ocp-master-01
      scope: live
      vcpu_pins: {"0": "0-95", "1": "0-95"}
      emulator_cpuset: "0-95"
      iothread_pins: {}
      cpu_shares: 1024
rollback:
  description:
    - Only when libvirt refused a change during the apply (the module then
      fails); one entry per domain changed in this call, newest first.
  returned: on a libvirt refusal during the apply
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    restored:
      description: Whether the domain is back to the state read before this call (verified by reading it again).
      type: bool
    undone:
      description: The changes written back, in the form of RV(domains[].changes).
      type: list
      elements: dict
    left:
      description: Items that still differ from the state before (null when the domain could not be read).
      type: list
      elements: dict
    error:
      description: What went wrong while restoring, or null.
      type: str
failed_domain:
  description: The domain whose change libvirt refused.
  returned: on a libvirt refusal during the apply
  type: str
  sample: ocp-infra-01
host_cpus:
  description: The host's online CPUs as libvirt reports them.
  returned: always
  type: str
  sample: "0-95"
diff:
  description: Per changed domain, before and after (both scopes), in diff mode.
  returned: when diff mode is on and something changed
  type: list
  elements: dict
  contains:
    before_header:
      description: Domain name.
      type: str
    after_header:
      description: Domain name.
      type: str
    before:
      description: State before, as in RV(domains[].before).
      type: dict
    after:
      description: State after, as in RV(domains[].after).
      type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as lc
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt_conn import libvirt

DOMAIN_OPTIONS = dict(
    name=dict(type='str', required=True),
    scope=dict(type='str', choices=list(lv.SCOPES)),
    vcpu_cpuset=dict(type='str'),
    vcpu_pins=dict(type='dict'),
    emulator_cpuset=dict(type='str'),
    iothread_cpuset=dict(type='str'),
    iothread_pins=dict(type='dict'),
    cpu_shares=dict(type='int'),
    partition=dict(type='str'),
)


def argument_spec():
    return dict(
        uri=dict(type='str', default='qemu:///system'),
        state=dict(type='str', default='present', choices=['present', 'query']),
        scope=dict(type='str', default='auto', choices=list(lv.SCOPES)),
        live_on_stopped=dict(type='str', default='fail', choices=['fail', 'skip']),
        vcpu_cpuset=dict(type='str'),
        emulator_cpuset=dict(type='str'),
        iothread_cpuset=dict(type='str'),
        domains=dict(type='list', elements='dict', options=DOMAIN_OPTIONS),
    )


class PinError(Exception):
    """Fails the module with a message (and extra result keys)."""

    def __init__(self, msg, **extra):
        Exception.__init__(self, msg)
        self.extra = extra


def _parse_requests(entries, defaults, query, online=None):
    """Requests from the entries; a query keeps only the names (its settings are ignored)."""
    try:
        if query:
            return [lv.parse_request({'name': entry.get('name')}) for entry in entries or []]
        return [lv.parse_request(entry, defaults, online) for entry in entries or []]
    except lv.RequestError as exc:
        raise PinError(str(exc))


def run(module, libvirt_mod):
    """The module's work; raises PinError with a message naming the problem."""
    params = module.params
    query = params['state'] == 'query'
    defaults = dict((key, params[key]) for key in ('scope',) + lv.PIN_OPTIONS)
    entries = params['domains']
    if entries is None and not query:
        raise PinError('domains is required with state=present')

    # 1. syntax of every request, before connecting
    requests = _parse_requests(entries, defaults, query)

    # 2. connection and host CPUs
    with lc.connection(libvirt_mod, params['uri'], PinError) as conn:
        return _run_connected(module, libvirt_mod, conn, entries, requests, defaults, query)


def _run_connected(module, libvirt_mod, conn, entries, requests, defaults, query):
    params = module.params
    uri = params['uri']
    try:
        host_count, online = lv.host_cpus(conn)
    except libvirt_mod.libvirtError as exc:
        raise PinError('cannot read the host CPU map from "%s": %s' % (uri, lc.describe(exc, libvirt_mod)))

    # 3. masks against the host's online CPUs (parse again, now with the host)
    requests = _parse_requests(entries, defaults, query, online) if entries is not None else requests
    if query and entries is None:
        try:
            names = sorted(dom.name() for dom in conn.listAllDomains())
        except libvirt_mod.libvirtError as exc:
            raise PinError('cannot list domains at uri "%s": %s' % (uri, lc.describe(exc, libvirt_mod)))
        requests = [lv.parse_request({'name': name}) for name in names]

    # 4. domains exist (only VIR_ERR_NO_DOMAIN is "not found")
    doms, missing = {}, []
    for request in requests:
        name = request['name']
        if name in doms or name in missing:
            continue
        dom = lc.lookup_domain(libvirt_mod, conn, name, uri, PinError)
        if dom is None:
            missing.append(name)
        else:
            doms[name] = dom
    if missing:
        raise PinError('domain(s) not found at uri "%s": %s' % (uri, ', '.join(missing)))

    # 5. read everything, decide scopes, plan; still nothing changed
    current = {}
    plans = []
    for request in requests:
        name = request['name']
        dom = doms[name]
        if name not in current:
            try:
                current[name] = lv.read_domain(dom)
            except libvirt_mod.libvirtError as exc:
                raise PinError('domain "%s": cannot read its state: %s' % (name, lc.describe(exc, libvirt_mod)))
        state = current[name]
        if query:
            plans.append((request, False, False, []))
            continue
        try:
            live, config = lv.resolve_scopes(request, state['active'], params['live_on_stopped'])
            changes = lv.plan_domain(request, state, online, live, config)
        except lv.RequestError as exc:
            raise PinError(str(exc))
        plans.append((request, live, config, changes))
    try:
        lv.check_overlaps([(plan[0]['name'], plan[1], plan[2]) for plan in plans])
    except lv.RequestError as exc:
        raise PinError(str(exc))

    snapshot = []
    for name in _unique(plan[0]['name'] for plan in plans):
        snapshot.extend(lv.snapshot_entries(name, current[name]))

    # 6. apply (or predict), domain by domain; a refusal restores what this run changed
    results = []
    after_states = {}
    touched = []
    for request, live, config, changes in plans:
        name = request['name']
        dom = doms[name]
        before = after_states.get(name, current[name])
        if changes and not module.check_mode:
            if name not in touched:
                touched.append(name)
            try:
                lv.apply_changes(conn, dom, changes, host_count)
            except lv.ApplyError as exc:
                raise _rolled_back(libvirt_mod, conn, doms, current, touched, online, host_count,
                                   'domain "%s": libvirt refused %s: %s' % (
                                       name, exc.step, lc.describe(exc.error, libvirt_mod)),
                                   name, exc.done)
            try:
                after = lv.read_domain(dom)
            except libvirt_mod.libvirtError as exc:
                raise _rolled_back(libvirt_mod, conn, doms, current, touched, online, host_count,
                                   'domain "%s": cannot read its state after the change: %s'
                                   % (name, lc.describe(exc, libvirt_mod)), name, None)
        else:
            predicted = lv.predict_after(before, changes)
            after = dict(before, live=predicted['live'], config=predicted['config'])
        after_states[name] = after
        scopes = [scope for scope, used in (('live', live), ('config', config)) if used]
        results.append({
            'name': name,
            'active': before['active'],
            'scopes': scopes,
            'changed': bool(changes),
            'changes': lv.format_changes(changes),
            'pending': [] if query else lv.pending_items(request, after, before['active'], changes),
            'before': {'live': lv.format_state(before['live']), 'config': lv.format_state(before['config'])},
            'after': {'live': lv.format_state(after['live']), 'config': lv.format_state(after['config'])},
        })
    return results, snapshot, format_cpulist(online)


def _rolled_back(libvirt_mod, conn, doms, current, touched, online, host_count, failure, failed, done):
    """Restore every domain this run wrote to (newest first) and build the failure to raise."""
    reports = [lv.restore_domain(conn, doms[name], name, current[name], online, host_count, libvirt_mod)
               for name in reversed(touched)]
    partial = ('; its own changes made before the refusal: %s' % ', '.join(done)) if done else (
        '; it had no change made before the refusal' if done is not None else '')
    restored = ['%s (%s)' % (r['name'], ', '.join('%s %s' % (c['scope'], c['item']) for c in r['undone'])
                             or 'nothing to undo') for r in reports if r['restored']]
    unrestored = ['%s (%s%s)' % (r['name'], r['error'] or 'still differs',
                                 '; still differs: %s' % ', '.join('%s %s' % (c['scope'], c['item'])
                                                                   for c in r['left'])
                                 if r['left'] else '')
                  for r in reports if not r['restored']]
    msg = '%s%s. Restored to the state read before this run: %s.' % (
        failure, partial, ', '.join(restored) or 'none')
    if unrestored:
        msg += ' Could not restore: %s.' % ', '.join(unrestored)
    else:
        msg += ' Nothing is left changed.'
    return PinError(msg, rollback=reports, failed_domain=failed)


def _unique(names):
    seen = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[('state', 'present', ('domains',))],
        supports_check_mode=True,
    )
    lc.require(module, libvirt)
    try:
        results, snapshot, online = run(module, libvirt)
    except PinError as exc:
        module.fail_json(msg=str(exc), **exc.extra)
    changed = any(result['changed'] for result in results)
    output = dict(changed=changed, domains=results, snapshot=snapshot, host_cpus=online)
    if module._diff and changed:
        output['diff'] = [dict(before_header=r['name'], after_header=r['name'], before=r['before'],
                               after=r['after']) for r in results if r['changed']]
    module.exit_json(**output)


if __name__ == '__main__':
    main()
