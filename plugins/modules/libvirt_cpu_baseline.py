#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: libvirt_cpu_baseline
short_description: Host CPU, common migratable CPU model of a pool, and CPU compatibility checks
version_added: 0.1.0
description:
  - The read side of CPU pools (groups of hypervisors between which live
    migration always works because their guests use one common CPU model).
    Changes nothing on the host.
  - Always returns, in RV(host_cpu), this host's CPU as its hypervisor
    offers it to guests (the host-model CPU of the domain capabilities,
    C(getDomainCapabilities)), with the complete list of features it
    provides.
  - With O(cpus) (the RV(host_cpu) results of every pool member) computes the
    pool's CPU model with C(baselineHypervisorCPU) and the
    C(VIR_CONNECT_BASELINE_CPU_MIGRATABLE) flag, on this host's hypervisor,
    and reports which features each member gives up for it. CPUs of more
    than one vendor are refused before libvirt is asked.
  - With O(compare) checks CPU definitions (the pool model, guests' CPUs)
    against this host's hypervisor with C(compareHypervisorCPU), that is
    whether a guest with that CPU can start on, or migrate to, this host.
  - Works through the libvirt API (libvirt-python).
author:
  - kvmlab maintainers (@kvmlab)
requirements:
  - libvirt-python on the managed host
  - a libvirt daemon with the QEMU driver (libvirt 4.4 or newer)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode returns the same results.
  diff_mode:
    support: none
    details: The module changes nothing.
  platform:
    platforms: posix
options:
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  virttype:
    description:
      - Virtualization type whose CPU is used, as in the domain XML's
        C(<domain type>).
      - V(kvm) on hypervisors; V(qemu) for QEMU's TCG emulation (test hosts
        without KVM).
    type: str
    default: kvm
  arch:
    description: Guest architecture.
    type: str
    default: x86_64
  emulator:
    description:
      - Path of the QEMU binary to ask. Default, libvirt's default
        emulator for O(arch) and O(virttype).
    type: str
  machine:
    description:
      - Machine type to ask about. Default, the emulator's default machine
        type.
    type: str
  pool:
    description: Name of the pool, used in messages and results.
    type: str
  cpus:
    description:
      - The host CPUs of every pool member; the pool model is computed from
        them on this host's hypervisor.
      - Pass each member's RV(host_cpu) with a O(cpus[].name).
    type: list
    elements: dict
    suboptions:
      name:
        description: Member (host) name.
        type: str
        required: true
      xml:
        description: The member's host CPU as a C(<cpu>) element (RV(host_cpu.xml)).
        type: str
        required: true
      features:
        description:
          - Every feature the member's CPU provides (RV(host_cpu.features)).
            When missing, they are expanded from O(cpus[].xml) on this host.
        type: list
        elements: str
      model:
        description: The member's host CPU model, for the report.
        type: str
      vendor:
        description: The member's CPU vendor. When missing, read from O(cpus[].xml).
        type: str
      arch:
        description: Accepted (and ignored) so that RV(host_cpu) can be passed as it is.
        type: str
      virttype:
        description: Accepted (and ignored) so that RV(host_cpu) can be passed as it is.
        type: str
      emulator:
        description: Accepted (and ignored) so that RV(host_cpu) can be passed as it is.
        type: str
      machine:
        description: Accepted (and ignored) so that RV(host_cpu) can be passed as it is.
        type: str
  migratable:
    description:
      - Leave out features that prevent migration (for example V(invtsc))
        from the pool model. Pools exist for migration; V(false) only for
        comparisons.
    type: bool
    default: true
  compare:
    description:
      - CPU definitions (C(<cpu>) elements, guest or host form) to compare
        with this host's hypervisor CPU.
    type: list
    elements: dict
    suboptions:
      name:
        description: A label for the result, such as the guest's name.
        type: str
        required: true
      xml:
        description: The C(<cpu>) element.
        type: str
        required: true
notes:
  - The pool model is computed by one hypervisor; run it on a pool member
    (the role delegates to the pool's first member). The result never
    needs a feature that a member lacks; RV(baseline.members[].lacks) is
    computed independently to show it.
  - C(compareHypervisorCPU) of libvirt compares with what the hypervisor on
    this host can give a guest, which is what a guest start checks with
    C(check='partial').
seealso:
  - module: kvmlab.host_resources.libvirt_cpu_model
  - name: libvirt, virConnectBaselineHypervisorCPU
    description: Computing the most feature-rich CPU that all given host CPUs can run.
    link: https://libvirt.org/html/libvirt-libvirt-host.html#virConnectBaselineHypervisorCPU
  - name: libvirt domain XML, CPU model and topology
    description: The C(<cpu>) element of guests.
    link: https://libvirt.org/formatdomain.html#cpu-model-and-topology
'''

EXAMPLES = r'''
- name: Read this hypervisor's CPU
  kvmlab.host_resources.libvirt_cpu_baseline:
  register: cpu

- name: Name every member's CPU
  ansible.builtin.set_fact:
    alpha_cpus: "{{ alpha_cpus | default([]) + [hostvars[item].cpu.host_cpu | combine({'name': item})] }}"
  loop: "{{ groups['cpu_pool_alpha'] }}"
  run_once: true

- name: Compute the pool model on the first member from every member's CPU
  kvmlab.host_resources.libvirt_cpu_baseline:
    pool: alpha
    cpus: "{{ alpha_cpus }}"
  delegate_to: "{{ groups['cpu_pool_alpha'] | first }}"
  run_once: true
  register: alpha

- name: Can the pool model and this guest CPU start here?
  kvmlab.host_resources.libvirt_cpu_baseline:
    compare:
      - name: model
        xml: "{{ alpha.baseline.xml }}"
      - name: db-01
        xml: "<cpu mode='custom' match='exact'><model>Haswell-noTSX-IBRS</model><vendor>Intel</vendor></cpu>"
  register: fits
'''

RETURN = r'''
host_cpu:
  description: This host's CPU as the hypervisor offers it to guests (the host-model CPU).
  returned: always
  type: dict
  contains:
    xml:
      description: The host-model CPU as a C(<cpu mode='custom' match='exact'>) element.
      type: str
    model:
      description: CPU model libvirt names for the host.
      type: str
      sample: Skylake-Server-IBRS
    vendor:
      description: CPU vendor.
      type: str
      sample: Intel
    features:
      description: Every feature the CPU provides (model expanded), sorted.
      type: list
      elements: str
    arch:
      description: Architecture.
      type: str
      sample: x86_64
    virttype:
      description: Virtualization type asked.
      type: str
      sample: kvm
    emulator:
      description: QEMU binary the domain capabilities describe.
      type: str
      sample: /usr/bin/qemu-system-x86_64
    machine:
      description: Machine type the domain capabilities describe.
      type: str
      sample: pc-i440fx-7.2
baseline:
  description: The pool model computed from O(cpus).
  returned: when O(cpus) is given
  type: dict
  contains:
    pool:
      description: O(pool).
      type: str
    xml:
      description: The model as a C(<cpu mode='custom' match='exact'>) element, as libvirt returned it.
      type: str
    model:
      description: Base CPU model of the pool model.
      type: str
      sample: Haswell-noTSX-IBRS
    vendor:
      description: CPU vendor of every member.
      type: str
    features:
      description: Every feature of the model (expanded), sorted.
      type: list
      elements: str
    digest:
      description: Identifier of the model; guests carrying it record it in their metadata.
      type: str
    computed_by:
      description: libvirt call that computed it.
      type: str
      sample: baselineHypervisorCPU
    members:
      description: One entry per O(cpus) entry.
      type: list
      elements: dict
      contains:
        name:
          description: Member name.
          type: str
        model:
          description: The member's own CPU model.
          type: str
        vendor:
          description: The member's vendor.
          type: str
        features:
          description: Number of features the member provides.
          type: int
        gives_up:
          description: Features the member has that the pool model does not use.
          type: list
          elements: str
        lacks:
          description: Features of the model the member does not have (always empty for a sound model).
          type: list
          elements: str
comparisons:
  description: One result per O(compare) entry.
  returned: when O(compare) is given
  type: list
  elements: dict
  contains:
    name:
      description: O(compare[].name).
      type: str
    result:
      description: V(identical), V(superset) (the host offers more), V(incompatible) or V(error).
      type: str
    compatible:
      description: Whether a guest with that CPU can start on this host (V(identical) or V(superset)).
      type: bool
    message:
      description: libvirt's explanation of an incompatible or failed comparison.
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpumodel as cm
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as lc
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt_conn import libvirt


def argument_spec():
    return dict(
        uri=dict(type='str', default='qemu:///system'),
        virttype=dict(type='str', default='kvm'),
        arch=dict(type='str', default='x86_64'),
        emulator=dict(type='str'),
        machine=dict(type='str'),
        pool=dict(type='str'),
        cpus=dict(type='list', elements='dict', options=dict(
            name=dict(type='str', required=True),
            xml=dict(type='str', required=True),
            features=dict(type='list', elements='str'),
            model=dict(type='str'),
            vendor=dict(type='str'),
            arch=dict(type='str'),
            virttype=dict(type='str'),
            emulator=dict(type='str'),
            machine=dict(type='str'),
        )),
        migratable=dict(type='bool', default=True),
        compare=dict(type='list', elements='dict', options=dict(
            name=dict(type='str', required=True),
            xml=dict(type='str', required=True),
        )),
    )


class BaselineError(Exception):
    """Fails the module with a message."""


def _features(xml_text):
    return sorted(cm.provided(cm.parse_cpu(xml_text)))


class Hypervisor(object):
    """The libvirt calls of this module, on one connection."""

    def __init__(self, lib, conn, params):
        self.lib = lib
        self.conn = conn
        self.emulator = params['emulator']
        self.arch = params['arch']
        self.machine = params['machine']
        self.virttype = params['virttype']

    def domcaps(self):
        return self.conn.getDomainCapabilities(self.emulator, self.arch, self.machine, self.virttype, 0)

    def baseline(self, xmls, flags):
        return self.conn.baselineHypervisorCPU(self.emulator, self.arch, self.machine, self.virttype, xmls, flags)

    def compare(self, xml_text):
        return self.conn.compareHypervisorCPU(self.emulator, self.arch, self.machine, self.virttype, xml_text,
                                              cm.COMPARE_FAIL_INCOMPATIBLE)


def read_host_cpu(hyp, lib):
    try:
        caps = cm.host_model(hyp.domcaps())
    except lib.libvirtError as exc:
        raise BaselineError('cannot read the domain capabilities (arch %s, virttype %s): %s'
                            % (hyp.arch, hyp.virttype, lc.describe(exc, lib)))
    except cm.CpuModelError as exc:
        raise BaselineError(str(exc))
    try:
        expanded = hyp.baseline([caps['xml']], cm.BASELINE_EXPAND_FEATURES)
    except lib.libvirtError as exc:
        raise BaselineError('cannot expand the host CPU model %s: %s' % (caps['cpu']['model'], lc.describe(exc, lib)))
    return {
        'xml': caps['xml'],
        'model': caps['cpu']['model'],
        'vendor': caps['cpu']['vendor'],
        'features': _features(expanded),
        'arch': caps['arch'],
        'virttype': caps['virttype'],
        'emulator': caps['emulator'],
        'machine': caps['machine'],
    }


def compute_baseline(hyp, lib, cpus, pool, migratable):
    members = []
    for entry in cpus:
        try:
            cpu = cm.parse_cpu(entry['xml'], 'cpus entry "%s"' % entry['name'])
        except cm.CpuModelError as exc:
            raise BaselineError(str(exc))
        members.append({'name': entry['name'], 'xml': entry['xml'], 'model': entry.get('model') or cpu['model'],
                        'vendor': entry.get('vendor') or cpu['vendor'], 'features': entry.get('features')})
    names = [member['name'] for member in members]
    twice = sorted(set(name for name in names if names.count(name) > 1))
    if twice:
        raise BaselineError('cpus lists %s more than once' % ', '.join(twice))
    try:
        vendor = cm.check_vendors([(m['name'], m['vendor']) for m in members], pool)
    except cm.CpuModelError as exc:
        raise BaselineError(str(exc))

    flags = cm.BASELINE_MIGRATABLE if migratable else 0
    xmls = [member['xml'] for member in members]
    try:
        model_xml = hyp.baseline(xmls, flags)
        expanded = hyp.baseline(xmls, flags | cm.BASELINE_EXPAND_FEATURES)
    except lib.libvirtError as exc:
        raise BaselineError('libvirt cannot compute a common CPU model for %s (%s): %s'
                            % ('pool "%s"' % pool if pool else 'these CPUs', ', '.join(names), lc.describe(exc, lib)))
    for member in members:
        if member['features'] is None:
            try:
                member['features'] = _features(hyp.baseline([member['xml']], cm.BASELINE_EXPAND_FEATURES))
            except lib.libvirtError as exc:
                raise BaselineError('cannot expand the CPU of member "%s": %s' % (member['name'], lc.describe(exc, lib)))
    model = cm.parse_cpu(model_xml, 'baseline')
    features = _features(expanded)
    return {
        'pool': pool,
        'xml': model_xml,
        'model': model['model'],
        'vendor': model['vendor'] or vendor,
        'features': features,
        'digest': cm.digest(model),
        'computed_by': 'baselineHypervisorCPU',
        'members': cm.pool_members_report(members, features),
    }


def compare_all(hyp, lib, entries):
    results = []
    seen = {}
    for entry in entries:
        key = entry['xml']
        if key not in seen:
            try:
                cm.parse_cpu(entry['xml'], 'compare entry "%s"' % entry['name'])
                seen[key] = (cm.compare_result(hyp.compare(entry['xml'])), '')
            except cm.CpuModelError as exc:
                raise BaselineError(str(exc))
            except lib.libvirtError as exc:
                code = exc.get_error_code() if hasattr(exc, 'get_error_code') else None
                # with COMPARE_FAIL_INCOMPATIBLE libvirt explains what the host lacks
                seen[key] = ('incompatible' if code == cm.ERR_CPU_INCOMPATIBLE else 'error', lc.describe(exc, lib))
        result, message = seen[key]
        results.append({'name': entry['name'], 'result': result, 'compatible': result in cm.COMPATIBLE,
                        'message': message})
    return results


def run(module, lib):
    params = module.params
    with lc.connection(lib, params['uri'], BaselineError) as conn:
        hyp = Hypervisor(lib, conn, params)
        output = {'host_cpu': read_host_cpu(hyp, lib)}
        if params['cpus'] is not None:
            if not params['cpus']:
                raise BaselineError('cpus is empty: a pool needs at least one member')
            output['baseline'] = compute_baseline(hyp, lib, params['cpus'], params['pool'], params['migratable'])
        if params['compare'] is not None:
            output['comparisons'] = compare_all(hyp, lib, params['compare'])
        return output


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    lc.require(module, libvirt)
    try:
        output = run(module, libvirt)
    except BaselineError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **output)


if __name__ == '__main__':
    main()
