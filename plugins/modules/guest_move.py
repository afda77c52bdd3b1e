#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: guest_move
short_description: Restart running guests one at a time so that they run in their tier slices
version_added: 0.2.0
description:
  - libvirt's resource partition is config-only. After the shared execution pool's apply
    (M(kvmlab.host_resources.execution_pool)) gave a guest its tier partition (C(/machine/gold)), a guest that
    already ran stays in C(machine.slice) until its next start. This module is the operator's choice to move
    such guests now, by restarting them.
  - A guest is restarted when it runs and its QEMU process's cgroup (C(/proc/<pid>/cgroup), pid from libvirt's
    pid file) is not inside the cgroup of the partition its persistent XML names (the slice
    C(machine-gold.slice) under systemd, the folder C(/machine/gold.partition) without systemd).
  - Guests are restarted one at a time, in the order of O(guests) (else by name). B(O(method=shutdown)) sends
    an ACPI shutdown, waits up to O(shutdown_timeout) seconds for the guest to power off, destroys it only when
    O(destroy_after_timeout) allows it (else fails for that guest, naming it, and leaves it running), then
    starts it. B(O(method=managedsave)) saves the guest's memory to disk, sets the tier partition in the saved
    image (the image keeps the partition it ran with, which would bring the guest back where it was) and starts
    it, which restores it. Each guest must run again within O(start_timeout) seconds, in a new QEMU process
    inside its tier partition, before the next one is touched.
  - Guests named in O(never_restart) or O(exclude), guests that do not run, guests already in their tier slice
    and guests whose persistent XML names no tier partition are never restarted; the result says why for each.
  - The module restarts only. Live pins and weights come from the persistent XML at the start; apply the
    shared execution pool afterwards for the live scope properties (the role's C(move) entry point does).
author:
  - kvmlab maintainers (@kvmlab)
requirements:
  - libvirt-python (python3-libvirt)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details: Reads every guest and lists what it would restart (RV(planned)) and how; restarts nothing.
  diff_mode:
    support: full
    details: Per restarted guest, its QEMU pid and cgroup before and after.
  platform:
    platforms: posix
    details: Linux libvirt/QEMU hosts.
options:
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  guests:
    description:
      - Names of the guests to consider, in the order they are restarted. Each must be defined in libvirt.
      - Empty (the default) considers every guest of the connection, by name.
    type: list
    elements: str
    default: []
  never_restart:
    description:
      - Names of guests this module never restarts, whatever else says so. They stay where they run until their
        next start and are listed in RV(waiting). A name that is not a guest of the connection is warned about.
    type: list
    elements: str
    default: []
  exclude:
    description: Names of guests the shared execution pool leaves alone (C(shared_execution_pool_exclude)); never
      restarted.
    type: list
    elements: str
    default: []
  method:
    description:
      - V(shutdown) stops the guest with an ACPI shutdown and starts it again (the guest boots anew).
      - V(managedsave) saves its memory to disk and restores it (the guest keeps running where it was, after
        a pause as long as saving and restoring its memory takes).
    type: str
    choices: [shutdown, managedsave]
    default: shutdown
  shutdown_timeout:
    description: Seconds to wait for a guest to power off after the ACPI shutdown (O(method=shutdown)).
    type: int
    default: 120
  destroy_after_timeout:
    description:
      - Destroy (power off by force) a guest that did not shut down within O(shutdown_timeout), then start it.
      - V(false) (the default) fails for that guest instead, naming it, and leaves it running; the guests after
        it are not touched.
    type: bool
    default: false
  start_timeout:
    description: Seconds a restarted guest has to run again in a new QEMU process before the module fails.
    type: int
    default: 60
  pid_dir:
    description: Directory of libvirt's QEMU pid files (C(<name>.pid)).
    type: path
    default: /run/libvirt/qemu
  proc_root:
    description: Where C(/proc) is mounted (each QEMU process's C(cgroup) file is read there).
    type: path
    default: /proc
notes:
  - A failure leaves the guests restarted before it in their slices and names them in the message
    (RV(moved) is returned with the failure); rerunning continues with the guests still pending.
  - A guest that answers no ACPI shutdown (no ACPI in its kernel, a hung guest) needs O(destroy_after_timeout)
    or O(method=managedsave).
seealso:
  - module: kvmlab.host_resources.execution_pool
'''

EXAMPLES = r'''
- name: Show which guests would restart into their tier slices
  kvmlab.host_resources.guest_move:
    never_restart: [db-01]
  check_mode: true

- name: Move every pending guest with a managed save, one at a time
  kvmlab.host_resources.guest_move:
    method: managedsave
    never_restart: [db-01]
  register: moved

- name: Move two guests by shutdown, forcing them off after 60 s
  kvmlab.host_resources.guest_move:
    guests: [app-01, ci-01]
    shutdown_timeout: 60
    destroy_after_timeout: true
'''

RETURN = r'''
method:
  description: O(method), as given.
  returned: always
  type: str
  sample: shutdown
planned:
  description: The guests restarted (or, in check mode, that would be), in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    tier:
      description: The tier of the guest's kvmlab metadata; null when it has none.
      type: str
    state:
      description: The guest's state before (V(running) or V(idle)).
      type: str
    partition:
      description: The partition of its persistent XML.
      type: str
      sample: /machine/gold
    slice:
      description: The systemd slice libvirt maps the partition to.
      type: str
      sample: machine-gold.slice
    cgroup:
      description: Its QEMU process's cgroup before the restart.
      type: str
    steps:
      description: What its restart does, in words.
      type: list
      elements: str
moved:
  description: The guests restarted into their tier partition by this call (empty in check mode).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    pid_before:
      description: Its QEMU pid before.
      type: int
    pid_after:
      description: Its new QEMU pid.
      type: int
    cgroup_before:
      description: Its cgroup before.
      type: str
    cgroup_after:
      description: Its cgroup after, inside its tier partition.
      type: str
    destroyed:
      description: V(true) when it was destroyed after O(shutdown_timeout).
      type: bool
    seconds:
      description: How long its restart took.
      type: float
left_alone:
  description:
    - Every other guest of the connection, with why it was not restarted.
    - Not called C(skipped) - Ansible takes a module result's non-empty C(skipped) for a skipped task.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Domain name.
      type: str
    tier:
      description: The tier of its kvmlab metadata, or null.
      type: str
    state:
      description: Its libvirt state.
      type: str
    partition:
      description: The partition of its persistent XML (empty when it has none).
      type: str
    cgroup:
      description: Its QEMU process's cgroup (null when it does not run).
      type: str
    reason:
      description: V(excluded), V(not_running), V(in_slice) or V(never_restart).
      type: str
    detail:
      description: The reason in a sentence.
      type: str
waiting:
  description: Running guests still outside their tier slice after this call (never restarted, or in check mode
    the ones it would restart).
  returned: always
  type: list
  elements: str
report:
  description: Readable lines of what was done or would be, for a debug task.
  returned: always
  type: list
  elements: str
diff:
  description: Per restarted guest, its QEMU pid and cgroup before and after.
  returned: when diff mode is on and a guest was restarted (or would be)
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
      description: C(pid) and C(cgroup) before.
      type: dict
    after:
      description: C(pid) and C(cgroup) after (in check mode the partition it would run in).
      type: dict
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _execution_pool as ep
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _guest_move as gm
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as lc
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt_conn import libvirt
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _qemu

SHUTDOWN_ACPI = 1  # VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
SAVE_IMAGE_XML_SECURE = 1  # VIR_DOMAIN_SAVE_IMAGE_XML_SECURE
# the module's clock and sleep (unit tests hand in a fake clock)
CLOCK = time.monotonic
SLEEP = time.sleep


def argument_spec():
    return dict(
        uri=dict(type='str', default='qemu:///system'),
        guests=dict(type='list', elements='str', default=[]),
        never_restart=dict(type='list', elements='str', default=[]),
        exclude=dict(type='list', elements='str', default=[]),
        method=dict(type='str', default='shutdown', choices=list(gm.METHODS)),
        shutdown_timeout=dict(type='int', default=120),
        destroy_after_timeout=dict(type='bool', default=False),
        start_timeout=dict(type='int', default=60),
        pid_dir=dict(type='path', default='/run/libvirt/qemu'),
        proc_root=dict(type='path', default='/proc'),
    )


class Failure(Exception):
    """Fails the module with this message."""


class Mover(object):
    """One module run: read every guest, plan with _guest_move, restart one at a time (unless check mode)."""

    def __init__(self, module, virt, conn):
        self.module = module
        self.virt = virt
        self.conn = conn
        self.params = module.params
        self.moved = []
        self.planned = {'restart': [], 'left_alone': [], 'unknown': []}

    def describe(self, exc):
        return lc.describe(exc, self.virt)

    def proc(self, name):
        return _qemu.read_guest(self.params['pid_dir'], name, self.params['proc_root'])

    def state(self, name, dom):
        try:
            return gm.state_name(dom.state()[0])
        except self.virt.libvirtError as exc:
            raise Failure('guest %s: cannot read its state: %s' % (name, self.describe(exc)))

    def read(self):
        """Every guest of the connection as _guest_move.plan takes it, and the domains by name."""
        try:
            doms = dict((dom.name(), dom) for dom in self.conn.listAllDomains())
        except self.virt.libvirtError as exc:
            raise Failure('cannot list the guests at uri "%s": %s' % (self.params['uri'], self.describe(exc)))
        guests = []
        for name in sorted(doms):
            dom = doms[name]
            state = self.state(name, dom)
            try:
                xml = dom.XMLDesc(lv.XML_INACTIVE | lv.XML_SECURE)
            except self.virt.libvirtError as exc:
                raise Failure('guest %s: cannot read its persistent XML: %s' % (name, self.describe(exc)))
            partition = lv.parse_domain_xml(xml)['partition']
            proc = self.proc(name) if state in gm.RUNNING_STATES else {}
            problem = None
            try:
                pending = gm.partition_pending(state, partition, proc.get('cgroup'))
            except gm.MoveError as exc:
                # judged only if the guest is to be moved (an excluded guest may run anywhere)
                pending = True
                problem = ('guest %s is %s but %s: looked for %s/%s.pid and %s/<pid>/cgroup'
                           % (name, state, exc, self.params['pid_dir'], name, self.params['proc_root']))
            guests.append({'name': name, 'state': state, 'tier': ep.parse_metadata(xml)['tier'],
                           'partition': partition, 'cgroup': proc.get('cgroup'), 'pid': proc.get('pid'),
                           'pending': pending, 'problem': problem})
        return doms, guests

    # -- one restart -------------------------------------------------------------
    def stop_by_shutdown(self, entry, dom):
        """ACPI shutdown, wait; destroy only when allowed. Returns whether it was destroyed."""
        name = entry['name']
        timeout = self.params['shutdown_timeout']
        try:
            dom.shutdownFlags(SHUTDOWN_ACPI)
        except self.virt.libvirtError as exc:
            raise Failure('guest %s: libvirt refused the ACPI shutdown: %s; it is left running' % (name, self.describe(exc)))
        if gm.wait_for(lambda: not dom.isActive(), timeout, CLOCK, SLEEP):
            return False
        if not self.params['destroy_after_timeout']:
            raise Failure('guest %s did not shut down within %d s of the ACPI shutdown request; it is left running '
                          'in %s (the guest may still act on the request later). Allow destroy_after_timeout, or use '
                          'method managedsave, to move it' % (name, timeout, entry['cgroup']))
        try:
            dom.destroy()
        except self.virt.libvirtError as exc:
            if dom.isActive():
                raise Failure('guest %s did not shut down within %d s and libvirt refused to destroy it: %s; it is '
                              'left running' % (name, timeout, self.describe(exc)))
        return True

    def stop_by_managedsave(self, entry, dom):
        """Save the guest's memory, then put its tier partition into the saved image."""
        name = entry['name']
        try:
            dom.managedSave(0)
        except self.virt.libvirtError as exc:
            raise Failure('guest %s: libvirt refused the managed save: %s; it is left running' % (name, self.describe(exc)))
        try:
            saved = dom.managedSaveGetXMLDesc(SAVE_IMAGE_XML_SECURE)
            dom.managedSaveDefineXML(lv.edit_domain_xml(saved, partition=entry['partition']), 0)
        except self.virt.libvirtError as exc:
            self.start(entry, dom, 'restored from its managed save image where it ran before')
            raise Failure('guest %s: cannot set partition %s in its managed save image: %s; it was restored where it '
                          'ran before' % (name, entry['partition'], self.describe(exc)))

    def start(self, entry, dom, what='stopped to move it'):
        try:
            dom.create()
        except self.virt.libvirtError as exc:
            name = entry['name']
            raise Failure('guest %s was %s, and libvirt refused to start it: %s; it is NOT running now (start it '
                          'with virsh start %s once the cause is fixed)' % (name, what, self.describe(exc), name))

    def restart(self, entry, dom, pid_before):
        name = entry['name']
        began = CLOCK()
        destroyed = False
        if self.params['method'] == 'managedsave':
            self.stop_by_managedsave(entry, dom)
        else:
            destroyed = self.stop_by_shutdown(entry, dom)
        self.start(entry, dom)
        seen = {}

        def back():
            seen['proc'] = self.proc(name)
            return (self.state(name, dom) in gm.RUNNING_STATES and seen['proc']['running']
                    and seen['proc']['pid'] != pid_before)

        if not gm.wait_for(back, self.params['start_timeout'], CLOCK, SLEEP):
            raise Failure('guest %s did not come back within %d s of its start: libvirt says %s, %s'
                          % (name, self.params['start_timeout'], self.state(name, dom),
                             gm.check_restarted(entry, pid_before, seen['proc'])))
        problem = gm.check_restarted(entry, pid_before, seen['proc'])
        if problem:
            raise Failure('guest %s restarted, but %s' % (name, problem))
        return {'name': name, 'pid_before': pid_before, 'pid_after': seen['proc']['pid'],
                'cgroup_before': entry['cgroup'], 'cgroup_after': seen['proc']['cgroup'], 'destroyed': destroyed,
                'seconds': round(CLOCK() - began, 1)}

    # -- the run -------------------------------------------------------------------
    def run(self):
        params = self.params
        for key, low in (('shutdown_timeout', 0), ('start_timeout', 1)):
            if params[key] < low:
                raise Failure('%s must be at least %d seconds, got %d' % (key, low, params[key]))
        doms, guests = self.read()
        try:
            planned = gm.plan(guests, params['guests'], params['never_restart'], params['exclude'], params['method'],
                              params['shutdown_timeout'], params['destroy_after_timeout'])
        except gm.MoveError as exc:
            raise Failure('%s at uri "%s"' % (exc, params['uri']))
        for name in planned['unknown']:
            self.module.warn('never_restart or exclude names %s, which is not a guest at uri "%s"' % (name, params['uri']))
        problems = dict((g['name'], g['problem']) for g in guests if g['problem'])
        for entry in planned['restart']:
            if entry['name'] in problems:
                raise Failure(problems[entry['name']])
        pids = dict((g['name'], g['pid']) for g in guests)
        self.planned = planned
        if not self.module.check_mode:
            for entry in planned['restart']:
                try:
                    self.moved.append(self.restart(entry, doms[entry['name']], pids[entry['name']]))
                except self.virt.libvirtError as exc:
                    raise Failure('guest %s: %s' % (entry['name'], self.describe(exc)))
        return self.result()

    def result(self):
        planned = self.planned
        moved_names = [m['name'] for m in self.moved]
        output = {'changed': bool(self.moved) if not self.module.check_mode else bool(planned['restart']),
                  'method': self.params['method'], 'planned': planned['restart'], 'moved': self.moved,
                  'left_alone': planned['left_alone'], 'waiting': gm.waiting(planned, moved_names)}
        output['report'] = gm.report(output, self.module.check_mode)
        return output

    def diffs(self):
        pids = dict((m['name'], m) for m in self.moved)
        out = []
        for entry in self.planned['restart']:
            moved = pids.get(entry['name'])
            if moved is None and not self.module.check_mode:
                continue
            before = {'cgroup': entry['cgroup']}
            if moved is not None:
                before['pid'] = moved['pid_before']
                after = {'pid': moved['pid_after'], 'cgroup': moved['cgroup_after']}
            else:
                after = {'cgroup': 'in %s (%s)' % (entry['slice'], entry['partition'])}
            out.append({'before_header': entry['name'], 'after_header': entry['name'], 'before': before,
                        'after': after})
        return out


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    lc.require(module, libvirt)
    mover = None
    try:
        with lc.connection(libvirt, module.params['uri'], Failure) as conn:
            mover = Mover(module, libvirt, conn)
            output = mover.run()
    except Failure as exc:
        partial = mover.result() if mover is not None else {}
        moved = ', '.join(m['name'] for m in partial.get('moved', [])) or 'none'
        module.fail_json(msg='%s (guests moved before: %s)' % (exc, moved), **partial)
    if module._diff and mover.planned['restart']:
        diffs = mover.diffs()
        if diffs:
            output['diff'] = diffs
    module.exit_json(**output)


if __name__ == '__main__':
    main()
