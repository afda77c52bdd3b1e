#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: libvirt_cpu_model
short_description: Give libvirt guests a pool's CPU model in their persistent definition
version_added: 0.1.0
description:
  - The write side of CPU pools. With O(state=present) writes the pool's CPU
    model (as computed by M(kvmlab.host_resources.libvirt_cpu_baseline))
    into the persistent XML of guests as C(<cpu mode='custom'
    match='exact'>), keeping each guest's own topology, NUMA cells and cache
    settings.
  - The guest gets the model at its next start. Running guests are not
    restarted and not changed live; RV(domains[].pending) reports each
    running guest that does not run with the CPU of its persistent
    definition yet.
  - The first time a guest gets a pool CPU, its previous C(<cpu>) element
    (or its absence) is saved in the guest's metadata; O(state=absent)
    restores it exactly. The metadata also records the pool and the model,
    so a running guest's live XML shows which model it was started with.
  - O(state=query) changes nothing and reports every guest's CPU and pool.
  - Works through the libvirt API (libvirt-python); the definition is
    written with C(defineXML).
author:
  - kvmlab maintainers (@kvmlab)
requirements:
  - libvirt-python on the managed host
  - a libvirt daemon with the QEMU driver
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads every guest and reports what it would write, without writing.
  diff_mode:
    support: full
    details: One before/after entry (pool and C(<cpu>) element) per changed guest.
  platform:
    platforms: posix
options:
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  state:
    description:
      - V(present) gives the guests the pool CPU of O(cpu) and records O(pool).
      - V(absent) restores the C(<cpu>) each guest had before its first pool
        CPU and removes the pool metadata. Guests without pool metadata are
        left alone.
      - V(query) changes nothing.
    type: str
    choices: [present, absent, query]
    default: present
  pool:
    description: Name of the pool the guests belong to. Required with O(state=present).
    type: str
  cpu:
    description:
      - The pool's CPU model, a C(<cpu>) element with a model and a vendor
        (RV(kvmlab.host_resources.libvirt_cpu_baseline#module:baseline.xml)).
      - Required with O(state=present).
    type: str
  domains:
    description:
      - Names of the guests to handle. Default, every persistent guest of
        the connection.
      - A name that does not exist fails the module before anything changes.
    type: list
    elements: str
  exclude:
    description: Guests to leave alone (for example guests that must keep C(host-passthrough)).
    type: list
    elements: str
    default: []
notes:
  - A running guest keeps the CPU it was started with until it is stopped
    and started again (a reboot from inside the guest is not enough). Live
    migration of a running guest that does not use the pool CPU yet is only
    guaranteed towards hosts its live CPU fits.
  - Transient guests (without a persistent definition) are not handled.
seealso:
  - module: kvmlab.host_resources.libvirt_cpu_baseline
  - name: libvirt domain XML, CPU model and topology
    description: The C(<cpu>) element of guests.
    link: https://libvirt.org/formatdomain.html#cpu-model-and-topology
  - name: libvirt domain XML, metadata
    description: Application metadata in a private namespace.
    link: https://libvirt.org/formatdomain.html#general-metadata
'''

EXAMPLES = r'''
- name: Give every guest of this hypervisor the pool model (next start)
  kvmlab.host_resources.libvirt_cpu_model:
    pool: alpha
    cpu: "{{ alpha.baseline.xml }}"
  register: guests

- name: Report running guests that still use their old CPU
  ansible.builtin.debug:
    msg: "Restart to use the pool CPU: {{ guests.pending | join(', ') }}"
  when: guests.pending | length > 0

- name: Leaving the pool, restore the guests' own CPU definitions
  kvmlab.host_resources.libvirt_cpu_model:
    state: absent

- name: Which guests carry which pool's CPU
  kvmlab.host_resources.libvirt_cpu_model:
    state: query
  register: cpu_state
'''

RETURN = r'''
domains:
  description: One entry per guest handled, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Guest name.
      type: str
    active:
      description: Whether the guest is running.
      type: bool
    changed:
      description: Whether its persistent definition changed (or would, in check mode).
      type: bool
    pool_before:
      description: Pool recorded in the persistent definition before; null when none.
      type: str
    pool_after:
      description: Pool recorded after (predicted in check mode).
      type: str
    digest_after:
      description:
        - Identifier of the pool CPU recorded after (RV(kvmlab.host_resources.libvirt_cpu_baseline#module:baseline.digest));
          null without a pool.
      type: str
    cpu_before:
      description: The persistent C(<cpu>) element before; null when the guest had none.
      type: str
    cpu_after:
      description:
        - The persistent C(<cpu>) element after, the CPU the guest gets at
          its next start (predicted in check mode); null when none.
        - Pass it to M(kvmlab.host_resources.libvirt_cpu_baseline) O(kvmlab.host_resources.libvirt_cpu_baseline#module:compare)
          on every pool member to learn where the guest can start.
      type: str
    live_cpu:
      description:
        - The running guest's C(<cpu>) element as a live migration carries it
          (the migratable live XML, as defined at its start and not as the
          hypervisor filled it in); null for a stopped guest.
      type: str
    live_pool:
      description: Pool whose CPU the running guest was started with; null when none or stopped.
      type: str
    pending:
      description:
        - True for a running guest that does not run with the CPU of its
          persistent definition (after this run); it gets it at its next
          start.
      type: bool
changed_domains:
  description: Names of the guests whose definition changed.
  returned: always
  type: list
  elements: str
pending:
  description: Names of running guests that get their persistent CPU only at their next start.
  returned: always
  type: list
  elements: str
diff:
  description: Per changed guest, pool and C(<cpu>) before and after, in diff mode.
  returned: when diff mode is on and something changed
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpumodel as cm
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as lc
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import XML_INACTIVE, XML_SECURE
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt_conn import libvirt

LIST_PERSISTENT = 4  # VIR_CONNECT_LIST_DOMAINS_PERSISTENT


def argument_spec():
    return dict(
        uri=dict(type='str', default='qemu:///system'),
        state=dict(type='str', default='present', choices=['present', 'absent', 'query']),
        pool=dict(type='str'),
        cpu=dict(type='str'),
        domains=dict(type='list', elements='str'),
        exclude=dict(type='list', elements='str', default=[]),
    )


class ModelError(Exception):
    """Fails the module with a message."""


def pool_cpu_from(params):
    """The pool CPU dict of O(cpu), validated."""
    try:
        cpu = cm.parse_cpu(params['cpu'], 'cpu')
    except cm.CpuModelError as exc:
        raise ModelError(str(exc))
    if cpu['mode'] not in (None, 'custom'):
        raise ModelError('cpu: a pool CPU is a custom model (mode custom), got mode %s' % cpu['mode'])
    if not cpu['model'] or not cpu['vendor']:
        raise ModelError('cpu: the pool CPU needs a <model> and a <vendor> (as baselineHypervisorCPU returns it)')
    return cpu


def select_domains(lib, conn, params):
    if params['domains'] is None:
        try:
            doms = conn.listAllDomains(LIST_PERSISTENT)
        except lib.libvirtError as exc:
            raise ModelError('cannot list domains: %s' % lc.describe(exc, lib))
    else:
        doms, missing, transient = [], [], []
        for name in dict.fromkeys(params['domains']):
            dom = lc.lookup_domain(lib, conn, name, params['uri'], ModelError)
            if dom is None:
                missing.append(name)
                continue
            if not dom.isPersistent():
                transient.append(name)
            doms.append(dom)
        if missing:
            raise ModelError('domain(s) not found at uri "%s": %s' % (params['uri'], ', '.join(missing)))
        if transient:
            raise ModelError('domain(s) without a persistent definition (transient): %s; only persistent '
                             'guests can carry a pool CPU' % ', '.join(transient))
    exclude = set(params['exclude'])
    return sorted((dom for dom in doms if dom.name() not in exclude), key=lambda dom: dom.name())


def plan(params, inactive_xml, name, pool_cpu):
    """``(new_xml, changed)`` for one guest."""
    what = 'domain "%s"' % name
    try:
        if params['state'] == 'present':
            return cm.set_pool_cpu(inactive_xml, pool_cpu, params['pool'], what)
        if params['state'] == 'absent':
            return cm.restore_cpu(inactive_xml, what)
    except cm.CpuModelError as exc:
        raise ModelError(str(exc))
    return inactive_xml, False


def run(module, lib):
    params = module.params
    pool_cpu = pool_cpu_from(params) if params['state'] == 'present' else None
    with lc.connection(lib, params['uri'], ModelError) as conn:
        return _run_connected(module, lib, conn, pool_cpu)


def _run_connected(module, lib, conn, pool_cpu):
    params = module.params
    doms = select_domains(lib, conn, params)

    # read and plan everything before the first write
    plans = []
    for dom in doms:
        name = dom.name()
        try:
            active = bool(dom.isActive())
            inactive = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
            live = dom.XMLDesc(cm.DOMAIN_XML_MIGRATABLE) if active else None
        except lib.libvirtError as exc:
            raise ModelError('domain "%s": cannot read its definition: %s' % (name, lc.describe(exc, lib)))
        new_xml, changed = plan(params, inactive, name, pool_cpu)
        plans.append((dom, name, active, inactive, live, new_xml, changed))

    results = []
    for dom, name, active, inactive, live, new_xml, changed in plans:
        after_xml = new_xml
        if changed and not module.check_mode:
            try:
                conn.defineXML(new_xml)
                after_xml = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
            except lib.libvirtError as exc:
                done = [r['name'] for r in results if r['changed']]
                raise ModelError('domain "%s": libvirt refused the new definition: %s (guests changed before '
                                 'this one: %s)' % (name, lc.describe(exc, lib), ', '.join(done) or 'none'))
        before = cm.guest_state(inactive, name)
        after = cm.guest_state(after_xml, name)
        running = cm.guest_state(live, name) if live else None
        pending = bool(active and (running['pool'], running['digest']) != (after['pool'], after['digest']))
        results.append({
            'name': name,
            'active': active,
            'changed': changed,
            'pool_before': before['pool'],
            'pool_after': after['pool'],
            'digest_after': after['digest'],
            'cpu_before': before['cpu_xml'],
            'cpu_after': after['cpu_xml'],
            'live_cpu': running['cpu_xml'] if running else None,
            'live_pool': running['pool'] if running else None,
            'pending': pending,
        })
    return results


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[('state', 'present', ('pool', 'cpu'))],
        supports_check_mode=True,
    )
    lc.require(module, libvirt)
    try:
        results = run(module, libvirt)
    except ModelError as exc:
        module.fail_json(msg=str(exc))
    changed = [r['name'] for r in results if r['changed']]
    output = dict(changed=bool(changed), domains=results, changed_domains=changed,
                  pending=[r['name'] for r in results if r['pending']])
    if module._diff and changed:
        output['diff'] = [dict(before_header=r['name'], after_header=r['name'],
                               before={'pool': r['pool_before'], 'cpu': r['cpu_before']},
                               after={'pool': r['pool_after'], 'cpu': r['cpu_after']})
                          for r in results if r['changed']]
    module.exit_json(**output)


if __name__ == '__main__':
    main()
