#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: memory_oversub
short_description: zram swap, KSM, THP and vm sysctls for host memory oversubscription, live and persistent
version_added: 0.1.0
description:
  - Gives a virtualization host headroom when its guests commit nearly all of
    its RAM with a zram compressed swap device, Kernel Same-page Merging (KSM),
    Transparent Huge Pages (THP) and, optionally, vm sysctls such as
    C(vm.swappiness) and C(vm.page-cluster).
  - Every value is applied B(live) (written to sysfs and procfs, the zram
    device set up) and B(persistently) (a zram-generator drop-in or a service
    of ours for zram, a tmpfiles.d file for THP and KSM, a sysctl.d file),
    in one call. Files are written through a temporary file and an atomic
    rename, only when their content differs.
  - B(zram.) Where the distribution ships C(systemd-zram-generator) (Debian
    12 package C(systemd-zram-generator); this module does not install it),
    the device is defined in
    C(/etc/systemd/zram-generator.conf.d/90-kvmlab-memory.conf), which
    overrides the keys it sets of any other zram-generator configuration, and
    set up by C(systemd-zram-setup@zramN.service) and C(dev-zramN.swap).
    Without the generator a oneshot C(kvmlab-zram-swap.service) of ours sets
    it up, pulled in at boot by a C(swap.target) drop-in. When the live
    device differs from the wanted one (size, algorithm, priority, or it is
    not swap at all) it is really rebuilt, not just started again; its units
    are stopped, the swap turned off, the device reset and set up again from
    the new configuration. A rebuild is refused with a message when the data
    swapped out to the device would not fit back into available memory.
  - B(KSM.) C(merge_across_nodes) changes only while no page is merged
    (the kernel refuses otherwise, and unmerging everything on a busy host
    can run it out of memory); with pages merged it is left as it is with a
    warning.
  - O(state=snapshot) records the live values (THP, KSM, sysctls, zram
    devices and swap areas, under C(values)), the files this module manages
    (whether they exist, content, mode, owner) and the directories it may
    create to O(snapshot_path), root-only, unless that file already exists.
    The file is the collection's snapshot format (schema
    C(kvmlab.host_resources/snapshot) version 2, layer C(memory)); a
    snapshot written by release 0.1 (C(format) 1) is read and migrated.
    O(state=absent) with O(snapshot_path) brings everything back to that
    snapshot exactly (directories the apply made removed when empty) and
    removes it; without a snapshot it removes the module's own files and
    zram device and leaves live THP, KSM and sysctl values as they are. A
    corrupt, truncated or foreign snapshot fails naming the file and the
    problem, before anything changes.
  - O(state=query) changes nothing and compares the given settings with the
    live ones. Every state returns the live values, the effect figures (KSM
    pages shared and sharing and the memory saved, zram original and
    compressed size and ratio, swap in use) and what on the host would fight
    the settings (ksmtuned, a tuned profile that disables KSM or sets THP to
    never, other zram devices or swap areas).
author:
  - kvmlab.host_resources contributors (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details: Predicts every change and the diff; only reads files and runs C(systemctl is-active).
  diff_mode:
    support: full
    details: Before and after of the live values and of every file written or removed.
  platform:
    platforms: posix
    details: Linux hosts with systemd as PID 1 (a real host or VM; containers cannot write these sysfs files).
options:
  state:
    description:
      - V(present) applies the settings live and persistently.
      - V(absent) restores the snapshot in O(snapshot_path) when it exists (files back or removed,
        live values written back, the zram device rebuilt as it was or removed, the zram kernel module
        unloaded when it was not loaded), then removes the snapshot. Without a snapshot it removes
        only the files carrying this module's header and tears down the zram device they defined.
      - V(snapshot) writes the snapshot to O(snapshot_path) unless it exists; it changes nothing else.
      - V(query) changes nothing.
    type: str
    choices: [present, absent, snapshot, query]
    default: present
  zram:
    description:
      - The zram swap device. Omitted, zram is not managed at all.
    type: dict
    suboptions:
      enabled:
        description:
          - V(false) removes this module's zram configuration and tears down the device it defined.
        type: bool
        default: true
      device:
        description: The zram device.
        type: str
        default: zram0
      size:
        description:
          - Absolute (V(16G), V(512MiB); rounded down to whole MiB) or a share of RAM (V(25%);
            rounded down to 64 MiB so that small changes of MemTotal do not rebuild the device).
        type: str
        default: 50%
      max_ram_share:
        description:
          - Caps the device at this percentage of MemTotal (rounded down to 64 MiB); a larger
            O(zram.size) is sized down, with a message in RV(messages).
        type: float
      algorithm:
        description: Compression algorithm (V(zstd), V(lz4), V(lzo-rle)); omitted, the kernel's default.
        type: str
      priority:
        description: Swap priority, V(-1) to V(32767).
        type: int
        default: 100
      backend:
        description:
          - How the device is made persistent. V(auto) uses zram-generator when it is installed,
            else V(unit), a oneshot service of ours.
          - V(zram-generator) fails when it is not installed, except in check mode, which then
            predicts the changes as if it were (for a caller that installs it in the same run).
        type: str
        choices: [auto, zram-generator, unit]
        default: auto
  thp:
    description: Transparent Huge Pages. Omitted knobs are not managed.
    type: dict
    suboptions:
      enabled:
        description: C(/sys/kernel/mm/transparent_hugepage/enabled).
        type: str
        choices: [always, madvise, never]
      defrag:
        description: C(/sys/kernel/mm/transparent_hugepage/defrag).
        type: str
        choices: [always, defer, defer+madvise, madvise, never]
  ksm:
    description: Kernel Same-page Merging. Omitted knobs are not managed.
    type: dict
    suboptions:
      run:
        description: V(1) runs ksmd, V(0) stops it (merged pages stay merged).
        type: int
        choices: [0, 1]
      pages_to_scan:
        description: Pages ksmd scans per wake-up.
        type: int
      sleep_millisecs:
        description: Milliseconds ksmd sleeps between scans.
        type: int
      merge_across_nodes:
        description:
          - V(0) merges only pages of the same NUMA node. Changed only while no page is merged.
        type: int
        choices: [0, 1]
  sysctl:
    description:
      - C(vm.*) sysctls as name to integer, for example V(vm.swappiness) V(100) and V(vm.page-cluster) V(0),
        written live to C(/proc/sys) and to C(/etc/sysctl.d/90-kvmlab-memory.conf).
    type: dict
  snapshot_path:
    description:
      - The snapshot file, written by O(state=snapshot) (mode 0600; a missing parent directory is
        created with mode 0700) and used and removed by O(state=absent).
      - With O(state=query), whether it exists decides between the verdicts C(stock) and C(drifted).
    type: path
  on_conflict:
    description:
      - What to do about things on the host that fight the settings (ksmtuned running, a tuned profile
        that disables KSM or sets THP to never, another zram device, a swap area of the same or a higher
        priority than the zram device), with O(state=present) and O(state=snapshot).
      - V(warn) warns and goes on; V(fail) fails before changing anything.
    type: str
    choices: [warn, fail]
    default: warn
  sysfs_root:
    description: Where sysfs is mounted (a copy of a tree for tests).
    type: path
    default: /sys
  proc_root:
    description: Where procfs is mounted; C(meminfo), C(swaps) and C(sys/vm) are read from it.
    type: path
    default: /proc
  files_root:
    description: The root under which configuration files are read and written (a copy of a tree for tests).
    type: path
    default: /
notes:
  - Installing C(systemd-zram-generator) is the caller's job (the
    P(kvmlab.host_resources.lab_host_memory_oversubscription#role) role does it).
  - Running THP and KSM values are written to sysfs directly; at boot
    C(systemd-tmpfiles) writes them again from C(/etc/tmpfiles.d/90-kvmlab-memory.conf).
seealso:
  - name: zram-generator.conf(5)
    description: The zram-generator configuration format.
    link: https://github.com/systemd/zram-generator/blob/main/man/zram-generator.conf.md
  - name: Kernel Samepage Merging
    description: The kernel's KSM documentation.
    link: https://docs.kernel.org/admin-guide/mm/ksm.html
'''

EXAMPLES = r'''
- name: Seed 001 memory policy
  kvmlab.host_resources.memory_oversub:
    zram:
      size: 16G
      max_ram_share: 50
      algorithm: zstd
      priority: 100
    thp:
      enabled: madvise
      defrag: madvise
    ksm:
      run: 1
      pages_to_scan: 1000
      sleep_millisecs: 20

- name: Record the state before the first apply
  kvmlab.host_resources.memory_oversub:
    state: snapshot
    snapshot_path: /var/lib/kvmlab/snapshots/memory.json

- name: Compare intended against live, with the effect figures
  kvmlab.host_resources.memory_oversub:
    state: query
    snapshot_path: /var/lib/kvmlab/snapshots/memory.json
    zram: {size: 16G, max_ram_share: 50, algorithm: zstd, priority: 100}
  register: memory

- name: Roll back to the snapshot
  kvmlab.host_resources.memory_oversub:
    state: absent
    snapshot_path: /var/lib/kvmlab/snapshots/memory.json
'''

RETURN = r'''
comparison:
  description:
    - Intended against live per managed item (C(zram.swap), C(zram.size) in bytes, C(zram.algorithm),
      C(zram.priority), C(thp.enabled), C(thp.defrag), C(ksm.*), C(sysctl.vm.*)), after the change
      (before it in check mode). With O(state=absent), the snapshot's values against live.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "thp.enabled", "wanted": "madvise", "live": "madvise", "ok": true}]
verdict:
  description:
    - C(applied) (every item as intended), C(stock) (nothing of this module on the host) or C(drifted).
    - With O(state=absent), C(restored) when the snapshot came back exactly, C(drifted) naming the items
      that did not, or C(stock) when there was no snapshot and the module's files are gone.
  returned: always
  type: str
  sample: applied
drifted:
  description: Names of the items that are not as intended.
  returned: always
  type: list
  elements: str
  sample: ["ksm.pages_to_scan"]
changes:
  description: What was changed (or would be in check mode), item names and file paths.
  returned: always
  type: list
  elements: str
  sample: ["thp.enabled", "zram.rebuild", "/etc/tmpfiles.d/90-kvmlab-memory.conf"]
held:
  description: Items that could not be changed safely, each with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "ksm.merge_across_nodes", "reason": "left at 1: 120 pages are merged ..."}]
rebuilt:
  description: Whether the zram device was (or would be) torn down and set up again.
  returned: always
  type: bool
before:
  description: Live values before any change.
  returned: always
  type: dict
  contains:
    thp:
      description: THP C(enabled) and C(defrag) (the bracketed choice).
      type: dict
      sample: {"enabled": "always", "defrag": "madvise"}
    ksm:
      description: KSM knobs and counters from C(/sys/kernel/mm/ksm) (null where the kernel lacks one).
      type: dict
      sample: {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "merge_across_nodes": 1, "pages_shared": 0}
    sysctl:
      description: Recorded and managed vm sysctls.
      type: dict
      sample: {"vm.swappiness": 60, "vm.page-cluster": 3}
    zram:
      description: Whether the zram module is loaded, and every zram device with C(disksize), C(algorithm), C(mm_stat).
      type: dict
      sample: {"loaded": true, "devices": {"zram0": {"disksize": 1543503872, "algorithm": "zstd"}}}
    swaps:
      description: Swap areas of C(/proc/swaps) (sizes in bytes).
      type: list
      elements: dict
      sample: [{"device": "/dev/zram0", "type": "partition", "size_bytes": 1543499776, "used_bytes": 0, "priority": 100}]
    meminfo:
      description: MemTotal, MemAvailable, MemFree, SwapTotal and SwapFree in bytes.
      type: dict
after:
  description: Live values after the change (equal to RV(before) in check mode), in the form of RV(before).
  returned: always
  type: dict
effect:
  description: What the settings achieve, from the live counters after the change.
  returned: always
  type: dict
  contains:
    ksm:
      description:
        - C(run), C(pages_shared), C(pages_sharing), C(pages_unshared), C(pages_volatile), C(full_scans),
          C(saved_bytes) (pages_sharing times the page size) and C(saved).
      type: dict
      sample: {"run": 1, "pages_shared": 1200, "pages_sharing": 9000, "saved_bytes": 36864000, "saved": "35.2MiB"}
    zram:
      description: Per set-up zram device, C(orig_data_bytes), C(compr_data_bytes), C(mem_used_bytes), C(ratio) (orig/compr, null when empty).
      type: list
      elements: dict
    swap:
      description: C(devices) (as in RV(before.swaps)), C(total_bytes), C(used_bytes), C(total), C(used).
      type: dict
zram:
  description: The zram device's wanted size and how it was derived, and the persistence backend; null when zram is not managed.
  returned: always
  type: dict
  sample:
    {"device": "zram0", "backend": "zram-generator", "size_bytes": 1543503872, "size": "1472MiB",
     "requested": "16G", "capped": true, "share_of_ram": 49.7}
conflicts:
  description: What on the host fights the settings (C(blocking) true) or is worth knowing.
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "ksmtuned", "blocking": true, "message": "ksmtuned.service is running: ..."}]
messages:
  description: Notes for the operator (zram sized down on a small host, conflicts, held items).
  returned: always
  type: list
  elements: str
report:
  description: Readable status lines (verdict, intended against live, effect figures).
  returned: always
  type: list
  elements: str
files:
  description: Managed files and what happened to each (C(written), C(removed), C(unchanged), C(absent)).
  returned: always
  type: dict
  sample: {"/etc/tmpfiles.d/90-kvmlab-memory.conf": "written"}
snapshot_path:
  description: The snapshot file.
  returned: when O(snapshot_path) is set
  type: str
snapshot_written:
  description: Whether O(state=snapshot) wrote the snapshot (false when it already existed).
  returned: when O(state=snapshot)
  type: bool
zram_generator_installed:
  description: Whether zram-generator is installed on the host now.
  returned: always
  type: bool
commands:
  description: The commands the module ran, for the record.
  returned: always
  type: list
  elements: str
  sample: ["systemctl is-active -- ksmtuned.service tuned.service zramswap.service", "systemctl daemon-reload"]
snapshot:
  description:
    - The snapshot that O(state=absent) restored, or that O(state=snapshot) found or wrote (null when there is none),
      in the current format (a release 0.1 snapshot migrated); the live values are under C(values).
  returned: when O(state=absent) or O(state=snapshot)
  type: dict
  sample: {"schema": "kvmlab.host_resources/snapshot", "version": 2, "layer": "memory",
           "values": {"thp": {"enabled": "always", "defrag": "madvise"}, "zram_generator_installed": false}}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_run import Failure, run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='present', choices=['present', 'absent', 'snapshot', 'query']),
            zram=dict(type='dict', options=dict(
                enabled=dict(type='bool', default=True),
                device=dict(type='str', default='zram0'),
                size=dict(type='str', default='50%'),
                max_ram_share=dict(type='float'),
                algorithm=dict(type='str'),
                priority=dict(type='int', default=100),
                backend=dict(type='str', default='auto', choices=['auto', 'zram-generator', 'unit']),
            )),
            thp=dict(type='dict', options=dict(
                enabled=dict(type='str', choices=['always', 'madvise', 'never']),
                defrag=dict(type='str', choices=['always', 'defer', 'defer+madvise', 'madvise', 'never']),
            )),
            ksm=dict(type='dict', options=dict(
                run=dict(type='int', choices=[0, 1]),
                pages_to_scan=dict(type='int'),
                sleep_millisecs=dict(type='int'),
                merge_across_nodes=dict(type='int', choices=[0, 1]),
            )),
            sysctl=dict(type='dict'),
            snapshot_path=dict(type='path'),
            on_conflict=dict(type='str', default='warn', choices=['warn', 'fail']),
            sysfs_root=dict(type='path', default='/sys'),
            proc_root=dict(type='path', default='/proc'),
            files_root=dict(type='path', default='/'),
        ),
        required_if=[('state', 'snapshot', ('snapshot_path',))],
        supports_check_mode=True,
    )
    try:
        result, diff = run(module)
    except Failure as exc:
        module.fail_json(msg=exc.msg, **exc.extra)
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
