#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: host_guard
short_description: Before a role entry point changes a host - its inputs, prerequisites, packages and the host lock, in one task
version_added: 0.2.0
description:
  - An action (it runs on the controller and calls modules on the host). With O(state=acquired), in this order,
    stopping at the first failure, before anything of the host's configuration is touched
  - O(inputs) is templated with the task's arguments, so a bad inventory value (pools, tiers, policy) fails here,
    naming the variable and the host.
  - 'One M(kvmlab.host_resources.host_lock) call (one Python start on the host: the guard runs at every entry point)
    checks the prerequisites as M(kvmlab.host_resources.host_prerequisites) does - systemd as PID 1, cgroup v2 with
    O(cgroup_controllers), root, and the O(python_modules) and O(executables) the caller needs, one message naming
    everything missing; what the install step brings is not required yet - then reads which of O(packages) dpkg has
    installed, then takes the host lock for the rest of the entry point (re-entrant per run; the token names the
    playbook run - the pid and start time of the main C(ansible-playbook) process - so every task and host of one
    run shares it). A failed check takes no lock.'
  - M(ansible.builtin.apt) installs those of O(packages) (Debian and Ubuntu names) that are not installed, when
    O(install_packages) is true; when all are installed, apt is not called. If the install fails, the lock is left.
  - With O(lock=false), M(kvmlab.host_resources.host_prerequisites) checks and apt gets every one of O(packages).
  - With O(state=released), the lock is left once (the holder exits when the run's last entry leaves).
  - The kvmlab_* inventory variables C(kvmlab_install_packages), C(kvmlab_host_lock), C(kvmlab_host_lock_path),
    C(kvmlab_host_lock_timeout) and C(kvmlab_host_lock_max_hold) set the guard for every role at once; an
    argument given to the task wins over them.
author:
  - kvmlab maintainers (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  action:
    description: Runs on the controller and calls modules on the host.
    support: full
  check_mode:
    support: full
    details:
      - Checks the prerequisites, installs nothing and takes no lock (M(kvmlab.host_resources.host_lock) in check
        mode reports who holds it).
  diff_mode:
    support: none
  platform:
    platforms: posix
    details:
      - Linux (C(/proc), C(flock)); packages through apt.
options:
  state:
    description: V(acquired) before the entry point's changes, V(released) after them (in an C(always) section).
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description: Who holds the lock (the entry point), shown to a run that has to wait.
    type: str
  inputs:
    description: The caller's resolved inputs (pools, tiers, policy); templating them is the check.
    type: dict
    default: {}
  packages:
    description: Packages the caller's modules need (Debian and Ubuntu names).
    type: list
    elements: str
    default: []
  python_modules:
    description: Python modules the caller's modules import on the host.
    type: list
    elements: str
    default: []
  executables:
    description: Executables the caller's modules run.
    type: list
    elements: str
    default: []
  systemd:
    description: Require systemd as PID 1 and cgroup v2 with O(cgroup_controllers).
    type: bool
    default: true
  cgroup_controllers:
    description: cgroup v2 controllers that must be available.
    type: list
    elements: str
    default: [cpu, cpuset]
  install_packages:
    description: Install O(packages). Default C(kvmlab_install_packages), else V(true).
    type: bool
  lock:
    description: Take (and release) the host lock. Default C(kvmlab_host_lock), else V(true).
    type: bool
  lock_path:
    description: The lock file. Default C(kvmlab_host_lock_path), else C(/run/lock/kvmlab-host-resources.lock).
    type: str
  lock_timeout:
    description: Seconds to wait for another run's lock. Default C(kvmlab_host_lock_timeout), else 300.
    type: int
  lock_max_hold:
    description: Seconds after which the lock frees itself whatever happens. Default C(kvmlab_host_lock_max_hold), else 3600.
    type: int
seealso:
  - module: kvmlab.host_resources.host_prerequisites
  - module: kvmlab.host_resources.host_lock
'''

EXAMPLES = r'''
- name: Check the host and take its lock
  kvmlab.host_resources.host_guard:
    owner: my_role apply
    inputs: {pools: "{{ my_pools }}"}
    packages: [python3-libvirt]
    python_modules: [libvirt]
    executables: [systemctl]

- name: Apply
  block:
    - name: The entry point's changes
      ansible.builtin.debug:
        msg: changes here
  always:
    - name: Release the host lock
      kvmlab.host_resources.host_guard:
        state: released
'''

RETURN = r'''
state:
  description: O(state).
  returned: always
  type: str
  sample: acquired
prerequisites:
  description:
    - What the prerequisites check found (C(found)) and what is missing (C(missing)); with O(lock=false) the result of
      M(kvmlab.host_resources.host_prerequisites).
  returned: with O(state=acquired)
  type: dict
not_installed:
  description: Those of O(packages) that dpkg did not have installed (null with O(lock=false)).
  returned: with O(state=acquired)
  type: list
  elements: str
packages:
  description: The result of M(ansible.builtin.apt) (C(changed) when it installed something).
  returned: when packages were installed (not in check mode)
  type: dict
lock:
  description: The result of M(kvmlab.host_resources.host_lock) (token, depth, waited, holder...).
  returned: when O(lock) is true
  type: dict
'''
