#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: cpu_contention_measure
short_description: Measure what each weighted tier receives when the guest CPU pool is contended
version_added: 0.1.0
description:
  - Proves that the weighted performance domains (Gold, Silver, Bronze with weights 512/333/167) share
    the guest CPU pool as their weights promise, and that an idle tier's CPU is borrowed. One call runs
    every scenario, because every task is expensive on a slow host.
  - "B(O(load=guests)) loads real busy guests, defined through libvirt: per tier O(guests_per_tier)
    guests (seed 001's 3 Gold, 4 Silver, 6 Bronze by default) of O(busy_vcpus) vCPUs booting
    O(guest_kernel), a multiboot kernel that keeps every vCPU busy. They are placed as the shared
    execution pool places guests: every vCPU thread floats over the whole guest pool (O(guest_cpus)),
    the emulator thread runs on O(emulator_cpus). Phase C(in_place) starts them where guests that ran
    before apply are (C(machine.slice), or C(/machine) without systemd), then does what apply does: the
    persistent XML gets the tier's partition and C(<shares>), each guest's scope its tier's weight split
    over the tier's running guests (live C(cpu_shares) and, with systemd, C(CPUWeight) with
    C(systemctl set-property --runtime)). Phase C(moved) destroys and starts each guest, which puts it into
    its tier slice. A tier's CPU time is the sum over its guests' vCPU cgroups (libvirt's C(vcpuN) below each
    guest's own cgroup, found from C(/proc/<qemu pid>/cgroup); the whole guest cgroup where there are none):
    the emulator threads run on the reserve, outside what the tiers share. In a scenario the idle tiers' guests are paused."
  - B(O(load=burners)) starts, per loaded tier, one transient service C(<unit_prefix>-<tier>.service) in the
    tier's slice with C(systemd-run), confined to the guest pool by C(AllowedCPUs) and C(CPUAffinity), that
    runs one busy loop per guest CPU (O(burners_per_cpu) times), floating over the pool
    (O(placement=pool)), each bound to its CPU with C(taskset) (O(placement=cpu), the optimistic case) or
    both in turn (O(placement=both)). A tier's CPU time is its slice's C(cpu.stat). Guests are not touched.
  - B(O(load=existing)) starts nothing and measures the tier slices as the load already on the host uses them.
  - B(O(load=auto)) (the default) is C(guests) when O(guest_kernel) exists on the host (the lab host installs
    it), else C(burners).
  - After O(warmup) seconds it reads the tiers' CPU time and the pool CPUs' lines of C(/proc/stat), samples
    the vCPU threads' and burners' C(processor) field and C(schedstat) run time every O(sample_interval)
    seconds for O(window) seconds, then reads the counters again.
  - Reports per phase, scenario and tier the promised share (weight / sum of the loaded tiers' weights), the
    achieved share (CPU time / the loaded tiers' CPU time), the share of the pool's capacity, the pairwise
    ratios, how busy the pool's CPUs were, and whether vCPU threads or burners ran on reserved CPUs (with
    the evidence used). Judges each run against O(tolerance), O(ratio_tolerance) and O(min_pool_share).
  - Leaves nothing behind. In a C(finally) clause, also on C(SIGTERM), C(SIGINT), C(SIGHUP) or when its
    controller goes away, it stops its burner units by name (each also carries C(RuntimeMaxSec)) and destroys
    and undefines every guest it created by name, killing its QEMU process by pid when libvirt cannot.
    Burner units and guests left by an earlier run (found by O(unit_prefix), and by O(guest_prefix) plus the
    contention mark in the guest's metadata) are removed first. O(mode=cleanup) only removes leftovers.
  - The logic lives in the collection's C(_contention), C(_contention_guests) and C(_contention_run) module
    utilities; this module is their face.
author:
  - kvmlab maintainers (@kvmlab)
requirements:
  - libvirt-python (python3-libvirt) for O(load=guests)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: partial
    details:
      - With O(mode=measure), check mode starts nothing and measures nothing; it returns the plan
        (phases, scenarios, promised shares, burner units, busy guests).
      - With O(mode=cleanup), check mode reports the leftover units and guests it would remove.
  diff_mode:
    support: partial
    details: Leftover burner units and guests removed (before) and none (after); a measurement itself leaves the
      host as it was.
  platform:
    platforms: posix
    details: Linux. With O(systemd=true), systemd as PID 1 and cgroup v2; without, libvirt guests on cgroup v1
      (C(cpu.shares), C(cpuacct.usage)) or v2.
options:
  tiers:
    description:
      - The tiers, as in the collection's C(kvmlab_tiers) (C(vars/tiers.yml)), in order of
        decreasing importance. Each maps a name to a dict with at least C(slice) and C(cpu_weight);
        C(partition) and C(shares) are used by O(load=guests); other keys are ignored.
    type: dict
    required: true
  guest_cpus:
    description: The guest pool (C(guest_domain)) as a cpulist; the load runs only here.
    type: str
    required: true
  reserved_cpus:
    description:
      - The host reserve (C(host_reserved)) as a cpulist; the measuring process binds itself there so
        that it does not compete in the pool. Defaults to the online CPUs outside O(guest_cpus).
    type: str
  emulator_cpus:
    description:
      - The busy guests' emulator threads' CPUs (C(host_emulator)) as a cpulist, for O(load=guests).
        Defaults to O(reserved_cpus).
    type: str
  scenarios:
    description:
      - Scenarios to run in every phase, in order. A string is C(all_loaded), C(<tier>_idle) or
        C(<tier>_alone); a dict has C(loaded) (list of tiers) and optionally C(name) and C(checks) (any of
        C(shares), C(ratios), C(pool)).
      - Default checks are C(shares) when every tier is loaded, C(ratios) when some are idle, C(pool) for one tier.
      - The default scenarios are C(all_loaded), C(<first tier>_idle), then C(<tier>_alone) for each tier.
    type: list
    elements: raw
  mode:
    description: C(measure) runs the scenarios; C(cleanup) only removes burner units and guests left by an earlier run.
    type: str
    choices: [measure, cleanup]
    default: measure
  load:
    description:
      - What loads the tiers; see the description. C(auto) is C(guests) when O(guest_kernel) exists, else C(burners).
    type: str
    choices: [auto, guests, burners, existing]
    default: auto
  placement:
    description:
      - Burners only. C(pool) lets each burner float over the pool (as vCPU threads do); C(cpu) binds each
        to one CPU of the pool (every pool CPU sees every loaded tier, the optimistic case); C(both) runs every
        scenario floating, then bound, and reports both.
    type: str
    choices: [pool, cpu, both]
    default: pool
  phases:
    description:
      - Guests only. C(in_place) measures the guests where they started, with apply's live weights;
        C(moved) after a destroy and start has put each into its tier slice. Run in this order.
    type: list
    elements: str
    choices: [in_place, moved]
    default: [in_place, moved]
  guests_per_tier:
    description:
      - "Guests only. Busy guests per tier, a dict of tier name to count (0 for none). Default seed 001's
        C({gold: 3, silver: 4, bronze: 6}); with other tier names give every tier a count."
    type: dict
  busy_vcpus:
    description: Guests only. vCPUs per busy guest; O(guest_kernel) keeps every one busy.
    type: int
    default: 2
  guest_kernel:
    description:
      - Guests only. The multiboot kernel the busy guests boot, on the host; it must keep every vCPU busy
        (the lab's C(spinall.elf); with a kernel that spins on the boot vCPU only, set O(busy_vcpus=1)).
    type: path
    default: /var/lib/kvmlab/spinall.elf
  guest_memory:
    description: Guests only. Memory per busy guest in MiB.
    type: int
    default: 16
  guest_prefix:
    description: Guests only. Name prefix of the busy guests, C(<prefix>-<tier>-<n>).
    type: str
    default: kvmlab-busy
  domain_type:
    description: Guests only. libvirt domain type; C(qemu) is TCG (the lab host), C(kvm) needs C(/dev/kvm).
    type: str
    choices: [qemu, kvm]
    default: qemu
  uri:
    description: Guests only. libvirt connection URI.
    type: str
    default: qemu:///system
  pid_dir:
    description: Guests only. Directory of libvirt's QEMU pid files (C(<name>.pid)).
    type: path
    default: /run/libvirt/qemu
  systemd:
    description:
      - The host runs systemd; tier slices are checked with C(systemctl show) and the busy guests' scopes get
        their live C(CPUWeight). V(false) on a libvirt host without systemd (O(load=guests) only), where the
        tier cgroups are the partitions' directories (C(/machine/gold.partition)).
    type: bool
    default: true
  cgroup_version:
    description: C(auto) is v2 with O(systemd=true), else v1 when C(/sys/fs/cgroup/cpu) is mounted.
    type: str
    choices: [auto, '1', '2']
    default: auto
  burners_per_cpu:
    description: Burners per guest CPU per loaded tier.
    type: int
    default: 1
  window:
    description: Seconds over which CPU time is measured, per run.
    type: float
    default: 30
  warmup:
    description: Seconds between starting the load and the start of the window.
    type: float
    default: 5
  repeats:
    description: Runs of every scenario; a scenario passes only when every run passes.
    type: int
    default: 1
  sample_interval:
    description: Seconds between samples of the threads' C(processor) field during the window.
    type: float
    default: 1.0
  tolerance:
    description: Allowed distance in percentage points between achieved and promised share (check C(shares)).
    type: float
    default: 2.0
  ratio_tolerance:
    description: Allowed relative error in percent of a pairwise ratio (check C(ratios)).
    type: float
    default: 10.0
  min_pool_share:
    description: Percent of the pool's capacity a lone loaded tier must use (check C(pool)).
    type: float
    default: 90.0
  runtime_margin:
    description:
      - Seconds added to O(warmup) + O(window) for each burner unit's C(RuntimeMaxSec), the last-resort
        bound should the module be killed. Starting the units must fit in it.
    type: int
    default: 120
  require_policy:
    description:
      - Fail when a tier slice (or partition) is not there or its weight (unit or live) differs from O(tiers).
        Off, the live weights are only reported.
    type: bool
    default: true
  unit_prefix:
    description: Name prefix of the burner units; C(mode=cleanup) stops every unit matching C(<prefix>-*).
    type: str
    default: kvmlab-burn
  cgroup_root:
    description: The cgroup v2 mount; detected (C(/sys/fs/cgroup) or C(/sys/fs/cgroup/unified)) when unset.
    type: path
  proc_root:
    description: Where procfs is mounted.
    type: path
    default: /proc
notes:
  - A run takes about (O(warmup) + O(window)) x O(repeats) per scenario and phase, plus starting the load; with
    guests on a TCG host each guest start costs seconds.
  - The load competes with everything else in the pool; run it when the host's own guests are quiet.
  - Should the module itself be killed with SIGKILL, burner units end at their C(RuntimeMaxSec) and the busy
    guests keep running until the next run or O(mode=cleanup) removes them.
seealso:
  - module: kvmlab.host_resources.systemd_slice_weight
  - module: kvmlab.host_resources.execution_pool
  - plugin: kvmlab.host_resources.contention_report
    plugin_type: filter
'''

EXAMPLES = r'''
- name: Measure the weighted domains on busy guests (seed 001's counts), before and after their move
  kvmlab.host_resources.cpu_contention_measure:
    tiers: "{{ kvmlab_tiers }}"
    guest_cpus: "{{ pools.guest_domain }}"
    reserved_cpus: "{{ pools.host_reserved }}"
    emulator_cpus: "{{ pools.host_emulator }}"
    load: guests
    window: 30
  register: contention

- name: Burners, floating then bound one per CPU, three runs each, tighter ratios
  kvmlab.host_resources.cpu_contention_measure:
    tiers: "{{ kvmlab_tiers }}"
    guest_cpus: 2-11
    load: burners
    placement: both
    scenarios: [all_loaded, gold_idle, {name: gold_bronze, loaded: [gold, bronze], checks: [ratios]}]
    repeats: 3
    ratio_tolerance: 5

- name: Remove burner units and busy guests an interrupted run may have left
  kvmlab.host_resources.cpu_contention_measure:
    tiers: "{{ kvmlab_tiers }}"
    guest_cpus: 2-11
    mode: cleanup
'''

RETURN = r'''
report:
  description: The measurement; render it with the P(kvmlab.host_resources.contention_report#filter) filter.
  returned: O(mode=measure), not in check mode
  type: dict
  contains:
    passed:
      description: Every scenario of every phase passed.
      type: bool
    host:
      description: Host name.
      type: str
    kernel:
      description: Kernel release.
      type: str
    generated:
      description: UTC time the measurement ended, ISO 8601.
      type: str
    duration_sec:
      description: Wall time of the whole call.
      type: float
    load:
      description: The load used (C(guests), C(burners) or C(existing); C(auto) resolved).
      type: str
    phases:
      description: The phases run, in order (guests C(in_place), C(moved); burners C(pool), C(cpu); C(existing)).
      type: list
      elements: str
    options:
      description: The options the measurement ran with (window, warmup, repeats, tolerances, load, placement,
        phases, guests_per_tier, busy_vcpus, guest_kernel, ...).
      type: dict
    pool:
      description: C(guest_domain), C(host_reserved) and C(cpus) (guest CPU count).
      type: dict
    tiers:
      description: Per tier C(slice), C(cpu_weight) (configured), C(unit_weight) and C(live_weight) (the tier
        cgroup's C(cpu.weight), or C(cpu.shares) on cgroup v1).
      type: dict
    scenarios:
      description:
        - Per phase and scenario C(name), C(phase), C(loaded), C(checks), C(passed), C(duration_sec), C(runs)
          (each the output of one window), and over the runs per tier C(share_pct), C(pool_pct) and
          C(delta_points) as C(mean), C(min), C(max), C(stdev), C(n); C(ratios) likewise.
        - A run holds per tier C(usage_usec), C(promised_pct), C(share_pct), C(delta_points), C(pool_pct),
          C(within); C(ratios) (C(pair), C(promised), C(achieved), C(error_pct), C(within));
          C(pool_busy_pct) (pool CPUs busy per C(/proc/stat)), C(loaded_pool_pct), C(window_usec),
          C(checks), C(passed), C(placement) and with guests C(guest_usage_usec) (per guest, from its cgroup).
      type: list
      elements: dict
    placement:
      description:
        - C(vcpus) (QEMU vCPU threads; with O(load=guests) the busy guests' only) and C(burners), each with
          C(threads), C(confined_to_pool), C(may_leave_pool), C(evidence) (C(affinity) when every thread's
          affinity lies in the pool, C(samples) when the sampled C(processor) field is all there is, C(none)
          without threads), C(ran_on_reserved), C(samples_on_reserved), C(runtime_on_reserved_usec),
          C(runtime_usec).
      type: dict
    guests:
      description: The QEMU guests seen in the last window, with their cgroup and vCPU threads' affinity.
      type: list
      elements: dict
    guest_load:
      description:
        - With O(load=guests) only. C(per_tier) (guest count), C(vcpus), C(kernel), C(vcpu_cpuset),
          C(emulator_cpuset) and C(phases), per phase the C(guests) (C(name), C(tier), C(pid), C(cgroup), C(id))
          and the C(scope_weights) set live.
      type: dict
    stale_units_stopped:
      description: Burner units of an earlier run stopped first.
      type: list
      elements: str
    stale_guests_removed:
      description: Busy guests of an earlier run removed first.
      type: list
      elements: str
    leftover_units:
      description: Burner units still loaded after cleanup (empty when nothing was left running).
      type: list
      elements: str
    leftover_guests:
      description: Busy guests still defined or running after cleanup (empty when nothing was left).
      type: list
      elements: str
plan:
  description: The phases, scenarios, promised shares, burner units and busy guests a measurement would run.
  returned: O(mode=measure) in check mode
  type: list
  elements: dict
  sample: [{"name": "all_loaded", "phase": "in_place", "loaded": ["gold", "silver", "bronze"], "checks": ["shares"],
            "promised_pct": {"gold": 50.59, "silver": 32.91, "bronze": 16.5}, "units": [],
            "busy_guests": ["kvmlab-busy-gold-1"]}]
guests:
  description: Names of the busy guests a measurement would create.
  returned: O(mode=measure) in check mode
  type: list
  elements: str
load:
  description: The load a measurement would use (O(load=auto) resolved).
  returned: O(mode=measure) in check mode
  type: str
stopped:
  description: Leftover burner units of an earlier run that were stopped (or would be, in check mode).
  returned: always
  type: list
  elements: str
removed_guests:
  description: Leftover busy guests of an earlier run that were removed (or would be, in check mode).
  returned: success
  type: list
  elements: str
leftover_units:
  description: Burner units still loaded when the module ended (empty when nothing was left running).
  returned: always
  type: list
  elements: str
leftover_guests:
  description: Busy guests still there when the module ended (empty when nothing was left).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn
from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention_run import execute


def argument_spec():
    return dict(
        tiers=dict(type='dict', required=True),
        guest_cpus=dict(type='str', required=True),
        reserved_cpus=dict(type='str'),
        emulator_cpus=dict(type='str'),
        scenarios=dict(type='list', elements='raw'),
        mode=dict(type='str', choices=['measure', 'cleanup'], default='measure'),
        load=dict(type='str', choices=['auto', 'guests', 'burners', 'existing'], default='auto'),
        placement=dict(type='str', choices=['pool', 'cpu', 'both'], default='pool'),
        phases=dict(type='list', elements='str', choices=['in_place', 'moved'], default=['in_place', 'moved']),
        guests_per_tier=dict(type='dict'),
        busy_vcpus=dict(type='int', default=2),
        guest_kernel=dict(type='path', default='/var/lib/kvmlab/spinall.elf'),
        guest_memory=dict(type='int', default=16),
        guest_prefix=dict(type='str', default='kvmlab-busy'),
        domain_type=dict(type='str', choices=['qemu', 'kvm'], default='qemu'),
        uri=dict(type='str', default='qemu:///system'),
        pid_dir=dict(type='path', default='/run/libvirt/qemu'),
        systemd=dict(type='bool', default=True),
        cgroup_version=dict(type='str', choices=['auto', '1', '2'], default='auto'),
        burners_per_cpu=dict(type='int', default=1),
        window=dict(type='float', default=30.0),
        warmup=dict(type='float', default=5.0),
        repeats=dict(type='int', default=1),
        sample_interval=dict(type='float', default=1.0),
        tolerance=dict(type='float', default=2.0),
        ratio_tolerance=dict(type='float', default=10.0),
        min_pool_share=dict(type='float', default=90.0),
        runtime_margin=dict(type='int', default=120),
        require_policy=dict(type='bool', default=True),
        unit_prefix=dict(type='str', default='kvmlab-burn'),
        cgroup_root=dict(type='path'),
        proc_root=dict(type='path', default='/proc'),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ok, result = execute(module, lib=_libvirt_conn.libvirt)
    if ok:
        module.exit_json(**result)
    module.fail_json(**result)


if __name__ == '__main__':
    main()
