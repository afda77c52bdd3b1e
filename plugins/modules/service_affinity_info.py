#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: service_affinity_info
short_description: Running services whose CPU affinity differs from the manager's
version_added: 0.1.0
description:
  - Lists the running systemd services with their main process's CPU affinity
    (C(Cpus_allowed_list) of C(/proc/<pid>/status)) and names those that differ
    from O(expected).
  - A new systemd manager C(CPUAffinity=) applies only to services started after it;
    services already running keep their old affinity until restarted. This module tells
    which ones they are.
notes:
  - M(kvmlab.host_resources.host_cpu_reserve) applies the same comparison after the reserve is in place,
    returns the stale services and restarts those given in
    O(kvmlab.host_resources.host_cpu_reserve#module:restart_services).
seealso:
  - module: kvmlab.host_resources.host_cpu_reserve
author:
  - kvmlab maintainers (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
  - kvmlab.host_resources.attributes.INFO_MODULE
attributes:
  platform:
    platforms: posix
options:
  expected:
    description: The affinity services should have, as a cpulist (usually the pools' C(host_reserved)).
    type: str
    required: true
  proc_root:
    description: Where procfs is mounted.
    type: path
    default: /proc
'''

EXAMPLES = r'''
- name: Which services still run outside the host reserve
  kvmlab.host_resources.service_affinity_info:
    expected: "{{ pools.host_reserved }}"
  register: services

- name: Tell the operator
  ansible.builtin.debug:
    msg: "Restart to apply the new affinity: {{ services.stale | join(', ') }}"
  when: services.stale | length > 0
'''

RETURN = r'''
expected:
  description: O(expected) in canonical cpulist form.
  returned: always
  type: str
  sample: "0-1,4-5"
services:
  description: Every running service with a main process.
  returned: always
  type: list
  elements: dict
  contains:
    unit:
      description: Unit name.
      type: str
    main_pid:
      description: Main process id.
      type: int
    cpus_allowed:
      description: The main process's affinity as a cpulist.
      type: str
    matches:
      description: Whether it equals O(expected).
      type: bool
  sample: [{"unit": "ssh.service", "main_pid": 412, "cpus_allowed": "0-7", "matches": false}]
stale:
  description: Units whose main process's affinity differs from O(expected).
  returned: always
  type: list
  elements: str
  sample: ["ssh.service", "cron.service"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._services import (
    read_services,
    stale_units,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._systemd import SystemdConfigError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            expected=dict(type='str', required=True),
            proc_root=dict(type='path', default='/proc'),
        ),
        supports_check_mode=True,
    )
    try:
        expected = parse_cpulist(module.params['expected'], 'expected')
    except CpuListError as exc:
        module.fail_json(msg=str(exc))
    if not expected:
        module.fail_json(msg='expected is empty: give the cpulist services should run on')
    systemctl = module.get_bin_path('systemctl', required=True)

    def run(args):
        rc, out, err = module.run_command(args, environ_update={'LC_ALL': 'C'})
        if rc != 0:
            module.fail_json(msg='%s failed' % ' '.join(args[:3]), rc=rc, stdout=out, stderr=err)
        return out

    try:
        services = read_services(run, systemctl, expected, module.params['proc_root'])
    except SystemdConfigError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, expected=format_cpulist(expected), services=services,
                     stale=stale_units(services))


if __name__ == '__main__':
    main()
