#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_prerequisites
short_description: Check that a host can be managed by this collection, changing nothing
version_added: 0.2.0
description:
  - 'Checks, read-only, what the collection''s roles and modules need on a managed host, and
    fails with one message that names everything missing, for example
    C(this host cannot be managed: PID 1 is not systemd (it is ''bash''); cgroup v2 controller
    cpuset is not available (have: cpu io memory pids); Python module libvirt missing for
    /usr/bin/python3 (install python3-libvirt)).'
  - systemd as PID 1 - C(/proc/1/comm) is C(systemd), or C(/run/systemd/system) exists (the
    test of C(sd_booted())).
  - 'cgroup v2 - the unified hierarchy is mounted at C(/sys/fs/cgroup) (the mount table says
    C(cgroup2) there; a hybrid layout with cgroup2 at C(/sys/fs/cgroup/unified) fails), and
    every controller of O(cgroup_controllers) is available: listed in the root cgroup''s
    C(cgroup.controllers). C(cgroup.subtree_control) is reported as RV(found.cgroup.enabled)
    but not required: systemd enables a controller there itself when a unit needs it. For a
    missing controller C(/proc/cgroups) tells whether it is bound to a cgroup v1 hierarchy
    or disabled at boot.'
  - Running as root (effective uid 0).
  - Python modules importable by the interpreter that runs the modules (O(python_modules)),
    and executables found in O(search_path) (O(executables)). Messages name the Debian or
    Ubuntu package that provides them (O(packages) adds or overrides names).
  - Installs nothing; the roles install packages before calling it.
author:
  - kvmlab maintainers (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
  - kvmlab.host_resources.attributes.INFO_MODULE
attributes:
  platform:
    platforms: posix
    details:
      - Linux.
options:
  systemd:
    description: Require systemd as PID 1.
    type: bool
    default: true
  cgroup2:
    description: Require the cgroup v2 unified hierarchy at C(/sys/fs/cgroup) with O(cgroup_controllers).
    type: bool
    default: true
  cgroup_controllers:
    description: Controllers that must be available in the root cgroup (with O(cgroup2)).
    type: list
    elements: str
    default: [cpu, cpuset]
  root_user:
    description: Require an effective uid of 0 (use C(become)).
    type: bool
    default: true
  python_modules:
    description:
      - Python modules that must import in the interpreter running this module, for
        example C(libvirt) (libvirt-python).
    type: list
    elements: str
    default: []
  executables:
    description:
      - Commands that must be found in O(search_path), for example C(systemctl), C(zramctl),
        C(virsh). An absolute path is checked as it is.
    type: list
    elements: str
    default: []
  search_path:
    description:
      - Directories searched for O(executables), in order. Default the directories of the
        C(PATH) the module runs with, then C(/usr/local/sbin), C(/usr/local/bin),
        C(/usr/sbin), C(/usr/bin), C(/sbin), C(/bin).
    type: list
    elements: path
  packages:
    description:
      - Package names for the messages, by Python module or executable name, in addition
        to the built-in Debian/Ubuntu names (C(libvirt) python3-libvirt, C(zramctl)
        util-linux, C(virsh) libvirt-clients, C(systemctl) systemd, ...).
    type: dict
    default: {}
  root:
    description:
      - The host's file system root; C(/proc), C(/sys) and C(/run) are read below it, and
        O(executables) are looked for below it. Tests point it at a fixture tree.
      - The Python module and uid checks always concern the process itself.
    type: path
    default: /
notes:
  - Call it at the start of every entry point that changes the host, after installing
    packages and before changing anything.
seealso:
  - module: kvmlab.host_resources.host_lock
'''

EXAMPLES = r'''
- name: This host can be managed
  kvmlab.host_resources.host_prerequisites:
    python_modules: [libvirt]
    executables: [systemctl, virsh]

- name: Memory layer needs zramctl, not libvirt
  kvmlab.host_resources.host_prerequisites:
    cgroup_controllers: [cpu, cpuset, memory]
    executables: [systemctl, zramctl, swapon, swapoff]
  register: prerequisites
'''

RETURN = r'''
found:
  description: What was found, by check (also returned when the module fails).
  returned: always
  type: dict
  contains:
    systemd:
      description: PID 1 (C(pid1) its comm, C(run_systemd_system), C(ok)). Absent with O(systemd=false).
      type: dict
      sample: {pid1: systemd, run_systemd_system: true, ok: true}
    cgroup:
      description: The cgroup hierarchy at C(/sys/fs/cgroup). Absent with O(cgroup2=false).
      type: dict
      sample: {mount: cgroup2, unified: true, available: [cpuset, cpu, io, memory, pids],
               enabled: [cpu, memory, pids], missing: []}
      contains:
        mount:
          description: The file system type mounted at C(/sys/fs/cgroup); null when the mount table cannot be read.
          type: str
          sample: cgroup2
        unified:
          description: Whether C(/sys/fs/cgroup) is the cgroup v2 unified hierarchy.
          type: bool
          sample: true
        available:
          description: The controllers listed in the root cgroup's C(cgroup.controllers).
          type: list
          elements: str
          sample: [cpuset, cpu, io, memory, pids]
        enabled:
          description: The controllers listed in the root cgroup's C(cgroup.subtree_control) (informative, not required).
          type: list
          elements: str
          sample: [cpu, memory, pids]
        missing:
          description: The controllers of O(cgroup_controllers) that are not available.
          type: list
          elements: str
          sample: []
    root:
      description: C(euid) and C(ok). Absent with O(root_user=false).
      type: dict
      sample: {euid: 0, ok: true}
    executables:
      description: Path found for each of O(executables), null when not found.
      type: dict
      sample: {systemctl: /usr/bin/systemctl, virsh: null}
    python_modules:
      description: For each of O(python_modules), C(ok) and the import C(error) (null when it imports).
      type: dict
      sample: {libvirt: {ok: false, error: "No module named 'libvirt'"}}
    search_path:
      description: The directories searched for O(executables), in order.
      type: list
      elements: str
      sample: [/usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin]
    interpreter:
      description: The Python interpreter that ran the checks.
      type: str
      sample: /usr/bin/python3
missing:
  description: One line per problem; empty when the host can be managed.
  returned: always
  type: list
  elements: str
  sample: ["PID 1 is not systemd (it is 'bash')"]
'''

import os
import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._prereq import (
    ARGUMENT_SPEC,
    check_params,
    failure_message,
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    found, problems = check_params(module.params, os.geteuid(), sys.executable, os.environ.get('PATH'))
    if problems:
        module.fail_json(msg=failure_message(problems), found=found, missing=problems)
    module.exit_json(changed=False, found=found, missing=[])


if __name__ == '__main__':
    main()
