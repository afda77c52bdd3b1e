#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cpu_topology_facts
short_description: Gather the host's CPU topology from sysfs and procfs
version_added: 0.1.0
description:
  - Reads the CPU topology of a Linux host from sysfs and procfs and returns it as
    the C(cpu_topology) fact, the input of the P(kvmlab.host_resources.cpu_pools#filter) filter.
  - A core is the set of its B(online) SMT sibling threads as the kernel's
    C(thread_siblings_list) reports them, so siblings numbered apart (C(0) and C(48)),
    adjacent (C(0) and C(1)), sockets that interleave, holes in C(core_id), SMT4/SMT8,
    no SMT and offline CPUs are all handled alike.
  - Every file is read as kernels write it - the trailing newline, a trailing NUL byte or NUL
    padding (Linux 5.15 on Kunpeng 920 ends every C(*_list) file with C(\n\0)) and trailing
    whitespace are ignored.
  - A missing or corrupt sysfs or procfs file (anything else that does not parse, such as garbage
    or a NUL in the middle of a value) fails the module with a message that names the file.
author:
  - kvmlab maintainers (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
  - kvmlab.host_resources.attributes.FACTS
  - kvmlab.host_resources.attributes.INFO_MODULE
attributes:
  platform:
    platforms: posix
options:
  sysfs_root:
    description:
      - Where sysfs is mounted. Point it at a copy of a host's sysfs tree to read that host's topology.
    type: path
    default: /sys
  proc_root:
    description:
      - Where procfs is mounted; C(cmdline), C(meminfo) and C(1/status) are read from it.
    type: path
    default: /proc
notes:
  - Reads only; never changes the host.
seealso:
  - plugin: kvmlab.host_resources.cpu_pools
    plugin_type: filter
'''

EXAMPLES = r'''
- name: Gather CPU topology
  kvmlab.host_resources.cpu_topology_facts:

- name: Derive the shared execution pool masks from it
  ansible.builtin.debug:
    msg: "{{ ansible_facts.cpu_topology | kvmlab.host_resources.cpu_pools }}"

- name: Read a saved sysfs tree of another host
  kvmlab.host_resources.cpu_topology_facts:
    sysfs_root: /srv/captures/m5-metal/sys
    proc_root: /srv/captures/m5-metal/proc
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    cpu_topology:
      description: The host's CPU topology.
      returned: always
      type: dict
      contains:
        cpus:
          description: CPU sets from C(/sys/devices/system/cpu), each a canonical cpulist.
          type: dict
          returned: always
          sample: {"possible": "0-95", "present": "0-95", "online": "0-95", "offline": "", "isolated": ""}
        online_count:
          description: Number of online logical CPUs.
          type: int
          returned: always
          sample: 96
        socket_count:
          description: Number of packages (sockets) with online CPUs.
          type: int
          returned: always
          sample: 2
        core_count:
          description: Number of physical cores with at least one online thread.
          type: int
          returned: always
          sample: 48
        threads_per_core:
          description: Largest number of online threads of any core.
          type: int
          returned: always
          sample: 2
        threads_per_core_min:
          description: Smallest number of online threads of any core (differs on hybrid CPUs or partly offline cores).
          type: int
          returned: always
          sample: 2
        smt:
          description: SMT state; C(control) from C(smt/control) (null where the kernel lacks it), C(active) from C(smt/active) or derived.
          type: dict
          returned: always
          sample: {"control": "on", "active": true}
        hybrid:
          description: Whether the kernel reports more than one core type.
          type: bool
          returned: always
          sample: false
        core_types:
          description: Core types the kernel reports under C(/sys/devices/cpu_<type>/cpus), type to cpulist.
          type: dict
          returned: always
          sample: {"core": "0-15", "atom": "16-23"}
        packages:
          description: Packages (sockets) ordered by id; each with its cores ordered by their lowest CPU.
          type: list
          elements: dict
          returned: always
          contains:
            id:
              description: C(physical_package_id).
              type: int
            cpus:
              description: The package's online CPUs as a cpulist.
              type: str
            core_count:
              description: Number of cores.
              type: int
            cpu_count:
              description: Number of online CPUs.
              type: int
            dies:
              description: Die ids seen in the package.
              type: list
              elements: int
            numa_nodes:
              description: NUMA nodes holding CPUs of the package.
              type: list
              elements: int
            cores:
              description: Whole cores; C(cpus) lists the core's online sibling threads.
              type: list
              elements: dict
              sample: [{"core_id": 0, "die_id": 0, "cpus": [0, 48], "cpulist": "0,48", "threads": 2, "type": null}]
        numa_nodes:
          description: NUMA nodes with their online CPUs and memory (C(memory_total_bytes) null where unknown).
          type: list
          elements: dict
          returned: always
          sample: [{"id": 0, "cpus": "0-23,48-71", "memory_total_bytes": 206158430208}]
        kernel_args:
          description: Isolation-related kernel arguments (isolcpus, nohz_full, rcu_nocbs, systemd.cpu_affinity, irqaffinity), raw values, null when absent.
          type: dict
          returned: always
          sample: {"isolcpus": null, "nohz_full": null, "rcu_nocbs": null, "systemd.cpu_affinity": null, "irqaffinity": null}
        cmdline:
          description: The kernel command line.
          type: str
          returned: always
        pid1_cpus_allowed:
          description: PID 1's current CPU affinity (C(Cpus_allowed_list) of C(/proc/1/status)).
          type: str
          returned: always
          sample: "0-95"
        memory_total_bytes:
          description: MemTotal of C(/proc/meminfo) in bytes.
          type: int
          returned: always
          sample: 412316860416
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import (
    TopologyError,
    read_topology,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysfs_root=dict(type='path', default='/sys'),
            proc_root=dict(type='path', default='/proc'),
        ),
        supports_check_mode=True,
    )
    try:
        topology = read_topology(module.params['sysfs_root'], module.params['proc_root'])
    except TopologyError as exc:
        module.fail_json(msg='cannot gather CPU topology: %s' % exc)
    module.exit_json(changed=False, ansible_facts={'cpu_topology': topology})


if __name__ == '__main__':
    main()
