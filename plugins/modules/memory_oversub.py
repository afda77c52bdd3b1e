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
    devices and swap areas) and the files this module manages (whether they
    exist, content, mode) to O(snapshot_path), root-only, unless that file
    already exists. O(state=absent) with O(snapshot_path) brings everything
    back to that snapshot exactly and removes it; without a snapshot it
    removes the module's own files and zram device and leaves live THP, KSM
    and sysctl values as they are.
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
  description: The snapshot that O(state=absent) restored, or that O(state=snapshot) found or wrote (null when there is none).
  returned: when O(state=absent) or O(state=snapshot)
  type: dict
'''

import datetime
import json
import os
import socket
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import (
    KSM_KNOBS,
    KSM_STATS,
    SNAPSHOT_FORMAT,
    SYSCTL_RECORDED,
    THP_KNOBS,
    OversubError,
    compare,
    effect,
    find_conflicts,
    flat_live,
    flat_wanted,
    format_report,
    format_size,
    is_managed,
    ksm_writes,
    normalize_wanted,
    parse_bracketed,
    parse_meminfo,
    parse_mm_stat,
    parse_proc_swaps,
    render_sysctl,
    render_tmpfiles,
    render_unit_wants,
    render_zram_generator,
    render_zram_unit,
    restore_items,
    restore_writes,
    snapshot_live,
    swap_of,
    swapoff_fits,
    sysctl_path,
    tuned_findings,
    validate_snapshot,
    verdict,
    zram_generator_devices,
    zram_live,
    zram_needs_rebuild,
)

GENERATOR_DROPIN = 'etc/systemd/zram-generator.conf.d/90-kvmlab-memory.conf'
UNIT_NAME = 'kvmlab-zram-swap.service'
UNIT_FILE = 'etc/systemd/system/' + UNIT_NAME
UNIT_WANTS = 'etc/systemd/system/swap.target.d/90-kvmlab-zram.conf'
TMPFILES_FILE = 'etc/tmpfiles.d/90-kvmlab-memory.conf'
SYSCTL_FILE = 'etc/sysctl.d/90-kvmlab-memory.conf'
ZRAM_FILES = (GENERATOR_DROPIN, UNIT_FILE, UNIT_WANTS)
MANAGED_FILES = ZRAM_FILES + (TMPFILES_FILE, SYSCTL_FILE)
#: Directories the module may create; the snapshot records whether they existed.
MANAGED_DIRS = ('etc/systemd/zram-generator.conf.d', 'etc/systemd/system/swap.target.d')

GENERATOR_BINARIES = ('usr/lib/systemd/system-generators/zram-generator',
                      'lib/systemd/system-generators/zram-generator')
GENERATOR_CONFIG_DIRS = ('usr/lib/systemd', 'usr/local/lib/systemd', 'etc/systemd', 'run/systemd')
TUNED_PROFILE_DIRS = ('etc/tuned', 'usr/lib/tuned', 'usr/lib/tuned/profiles')
WATCHED_SERVICES = ('ksmtuned.service', 'tuned.service', 'zramswap.service')
ACTIVE_STATES = ('active', 'activating', 'reloading', 'deactivating')


class Failure(Exception):
    """Ends the module with fail_json; carries extra result keys."""

    def __init__(self, msg, **extra):
        super(Failure, self).__init__(msg)
        self.msg = msg
        self.extra = extra


class Host(object):
    """Reads and writes the host (under the configured roots) and runs its commands."""

    def __init__(self, module):
        self.module = module
        self.sysfs = module.params['sysfs_root']
        self.proc = module.params['proc_root']
        self.root = module.params['files_root']
        self.commands = []

    # -- paths and files ------------------------------------------------------
    def path(self, rel):
        return os.path.join(self.root, rel)

    def sys(self, rel):
        return os.path.join(self.sysfs, rel)

    def procfs(self, rel):
        return os.path.join(self.proc, rel)

    @staticmethod
    def read(path, missing=None):
        try:
            with open(path, 'r') as handle:
                return handle.read()
        except (IOError, OSError) as exc:
            if not os.path.exists(path):
                return missing
            raise Failure('cannot read %s: %s' % (path, exc))

    def read_int(self, path):
        text = self.read(path)
        if text is None:
            return None
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            raise Failure('%s: "%s" is not an integer' % (path, text.strip()))

    def write_value(self, path, value):
        try:
            with open(path, 'w') as handle:
                handle.write('%s\n' % value)
        except (IOError, OSError) as exc:
            raise Failure('cannot write "%s" to %s: %s' % (value, path, exc))

    def file_state(self, path):
        if os.path.islink(path) or os.path.exists(path):
            try:
                mode = '%04o' % (os.stat(path).st_mode & 0o7777)
            except OSError:
                mode = None
            return {'exists': True, 'content': self.read(path), 'mode': mode}
        return {'exists': False, 'content': None, 'mode': None}

    def write_file(self, path, content, mode=0o644):
        directory = os.path.dirname(path)
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            fd, tmp = tempfile.mkstemp(prefix='.kvmlab-', dir=directory)
            with os.fdopen(fd, 'w') as handle:
                handle.write(content)
            os.chmod(tmp, mode)
        except (IOError, OSError) as exc:
            raise Failure('cannot write %s: %s' % (path, exc))
        self.module.atomic_move(tmp, path)
        os.chmod(path, mode)

    @staticmethod
    def remove_file(path):
        try:
            os.unlink(path)
        except OSError as exc:
            if os.path.exists(path):
                raise Failure('cannot remove %s: %s' % (path, exc))

    # -- commands -------------------------------------------------------------
    def run(self, args, check_rc=True):
        binary = self.module.get_bin_path(args[0], required=True, opt_dirs=['/usr/sbin', '/sbin'])
        cmd = [binary] + list(args[1:])
        self.commands.append(' '.join(args))
        rc, out, err = self.module.run_command(cmd, environ_update={'LC_ALL': 'C', 'SYSTEMD_PAGER': ''})
        if check_rc and rc != 0:
            raise Failure('%s failed (rc %d): %s' % (' '.join(cmd), rc, (err or out).strip()),
                          rc=rc, stdout=out, stderr=err, cmd=cmd)
        return rc, out, err

    def bin(self, name):
        return self.module.get_bin_path(name, opt_dirs=['/usr/sbin', '/sbin']) or '/usr/sbin/' + name

    def unit_states(self, units):
        """ActiveState of each unit (``unknown`` when systemctl is unavailable)."""
        if not self.module.get_bin_path('systemctl'):
            return dict((u, 'unknown') for u in units)
        dummy, out, dummy2 = self.run(['systemctl', 'is-active', '--'] + list(units), check_rc=False)
        states = [line.strip() for line in out.splitlines() if line.strip()]
        if len(states) != len(units):
            return dict((u, 'unknown') for u in units)
        return dict(zip(units, states))

    # -- live state -----------------------------------------------------------
    def read_live(self, extra_sysctls=()):
        live = {'thp': {}, 'ksm': {}, 'sysctl': {}, 'zram': {}, 'swaps': [], 'meminfo': {}}
        for knob in THP_KNOBS:
            text = self.read(self.sys('kernel/mm/transparent_hugepage/' + knob))
            live['thp'][knob] = parse_bracketed(text)[0] if text is not None else None
        for knob in KSM_KNOBS + KSM_STATS:
            value = self.read_int(self.sys('kernel/mm/ksm/' + knob))
            if value is not None or knob in KSM_KNOBS:
                live['ksm'][knob] = value
        for key in sorted(set(SYSCTL_RECORDED) | set(extra_sysctls)):
            live['sysctl'][key] = self.read_int(self.procfs(sysctl_path(key)))
        devices = {}
        block = self.sys('block')
        names = sorted(n for n in (os.listdir(block) if os.path.isdir(block) else []) if n.startswith('zram'))
        for name in names:
            base = os.path.join(block, name)
            algo_text = self.read(os.path.join(base, 'comp_algorithm'))
            selected, choices = parse_bracketed(algo_text) if algo_text is not None else (None, [])
            disksize = self.read_int(os.path.join(base, 'disksize')) or 0
            dev = {'disksize': disksize, 'algorithm': selected, 'algorithms': choices}
            if disksize:
                try:
                    dev['mm_stat'] = parse_mm_stat(self.read(os.path.join(base, 'mm_stat'), ''))
                except OversubError as exc:
                    raise Failure('%s: %s' % (os.path.join(base, 'mm_stat'), exc))
            devices[name] = dev
        live['zram'] = {
            'loaded': bool(devices) or os.path.isdir(self.sys('class/zram-control'))
            or os.path.isdir(self.sys('module/zram')),
            'devices': devices,
        }
        try:
            live['swaps'] = parse_proc_swaps(self.read(self.procfs('swaps'), ''))
        except OversubError as exc:
            raise Failure(str(exc))
        meminfo = parse_meminfo(self.read(self.procfs('meminfo'), ''))
        if not meminfo.get('MemTotal'):
            raise Failure('%s has no MemTotal' % self.procfs('meminfo'))
        live['meminfo'] = dict((k, meminfo[k]) for k in
                               ('MemTotal', 'MemAvailable', 'MemFree', 'SwapTotal', 'SwapFree') if k in meminfo)
        return live

    def generator_installed(self):
        return any(os.path.exists(self.path(p)) for p in GENERATOR_BINARIES)

    def generator_configs(self):
        """Other zram-generator config files and the devices each defines."""
        found = {}
        ours = self.path(GENERATOR_DROPIN)
        for base in GENERATOR_CONFIG_DIRS:
            candidates = [self.path(os.path.join(base, 'zram-generator.conf'))]
            conf_d = self.path(os.path.join(base, 'zram-generator.conf.d'))
            if os.path.isdir(conf_d):
                candidates += [os.path.join(conf_d, n) for n in sorted(os.listdir(conf_d)) if n.endswith('.conf')]
            for path in candidates:
                if path == ours or not os.path.isfile(path):
                    continue
                try:
                    found[path] = sorted(zram_generator_devices(self.read(path, ''), path))
                except OversubError as exc:
                    self.module.warn(str(exc))
        return found

    def tuned_profile(self):
        """The active tuned profile(s) and what they do to THP and KSM, following includes."""
        active = self.read(self.path('etc/tuned/active_profile'))
        if not active or not active.strip():
            return None
        result = {'profile': ' '.join(active.split()), 'thp': None, 'ksm_off': False}
        todo = list(active.split())
        seen = set()
        while todo and len(seen) < 16:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            for base in TUNED_PROFILE_DIRS:
                conf = self.path(os.path.join(base, name, 'tuned.conf'))
                if not os.path.isfile(conf):
                    continue
                try:
                    found = tuned_findings(self.read(conf, ''), conf)
                except OversubError as exc:
                    self.module.warn(str(exc))
                    break
                result['thp'] = result['thp'] or found['thp']
                result['ksm_off'] = result['ksm_off'] or found['ksm_off']
                todo += found['includes']
                break
        return result


class MemoryOversub(object):
    """One run of the module."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.host = Host(module)
        self.check = module.check_mode
        self.changes = []
        self.held = []
        self.messages = []
        self.files = {}
        self.diff = []
        self.rebuilt = False
        self.page_size = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096
        zram = self.params.get('zram') or {}
        self.device = zram.get('device') or 'zram0'
        self.zram_managed = self.params.get('zram') is not None

    # -- shared pieces --------------------------------------------------------
    def wanted(self, live):
        try:
            return normalize_wanted(self.params.get('zram'), self.params.get('thp'), self.params.get('ksm'),
                                    self.params.get('sysctl'), live['meminfo']['MemTotal'])
        except OversubError as exc:
            raise Failure(str(exc))

    def backend(self):
        choice = (self.params.get('zram') or {}).get('backend') or 'auto'
        if choice == 'auto':
            return 'zram-generator' if self.host.generator_installed() else 'unit'
        if choice == 'zram-generator' and not self.host.generator_installed():
            if self.check:
                self.module.warn('zram-generator is not installed; check mode assumes it will be by then')
                return choice
            raise Failure('zram.backend is zram-generator but %s is not installed '
                          '(Debian package systemd-zram-generator)' % ' or '.join(
                              '/' + p for p in GENERATOR_BINARIES))
        return choice

    def conflicts(self, live, wanted):
        services = self.host.unit_states(WATCHED_SERVICES)
        tuned = self.host.tuned_profile() if services.get('tuned.service') == 'active' else None
        priority = wanted['zram']['priority'] if wanted and wanted.get('zram') else None
        found = find_conflicts(self.device, priority, live['swaps'], live['zram']['devices'], services,
                               tuned, self.host.generator_configs())
        return found

    def handle_conflicts(self, found):
        blocking = [c for c in found if c['blocking']]
        for conflict in found:
            if conflict['blocking']:
                self.module.warn(conflict['message'])
            else:
                self.messages.append(conflict['message'])
        if blocking and self.params['on_conflict'] == 'fail':
            raise Failure('refusing to change anything: %s (on_conflict=fail)'
                          % '; '.join(c['message'] for c in blocking), conflicts=found)

    def managed_files_present(self):
        return any(is_managed(self.host.read(self.host.path(p))) for p in MANAGED_FILES)

    def snapshot_exists(self):
        path = self.params.get('snapshot_path')
        return bool(path) and os.path.exists(path)

    def extra_sysctls(self):
        return list(self.params.get('sysctl') or {})

    def live_writes(self, writes):
        """Write ``[(item name, value)]`` to sysfs/procfs."""
        for name, value in writes:
            group, dummy, knob = name.partition('.')
            if group == 'thp':
                path = self.host.sys('kernel/mm/transparent_hugepage/' + knob)
            elif group == 'ksm':
                path = self.host.sys('kernel/mm/ksm/' + knob)
            else:
                path = self.host.procfs(sysctl_path(knob))
            if not os.path.exists(path):
                raise Failure('%s does not exist: this kernel cannot set %s' % (path, name))
            self.host.write_value(path, value)

    def file_plan(self, wanted_contents):
        """``[(path, action, old, new)]`` for files that change; records self.files."""
        plan = []
        for rel, content in wanted_contents:
            path = self.host.path(rel)
            old = self.host.read(path)
            if content is None:
                if old is not None and is_managed(old):
                    plan.append((path, 'removed', old, None))
                    self.files[path] = 'removed'
                else:
                    self.files.setdefault(path, 'absent' if old is None else 'unchanged')
            elif old != content:
                plan.append((path, 'written', old, content))
                self.files[path] = 'written'
            else:
                self.files[path] = 'unchanged'
        return plan

    def apply_files(self, plan):
        for path, action, dummy, content in plan:
            if action == 'written':
                self.host.write_file(path, content)
            else:
                self.host.remove_file(path)

    def file_diffs(self, plan):
        for path, action, old, new in plan:
            self.diff.append({'before_header': path if old is not None else '%s (absent)' % path,
                              'after_header': path if new is not None else '%s (absent)' % path,
                              'before': old or '', 'after': new or ''})
            self.changes.append(path)

    def values_diff(self, before_flat, after_flat, names):
        if not names:
            return
        before = ''.join('%s: %s\n' % (n, _fmt(n, before_flat.get(n))) for n in names)
        after = ''.join('%s: %s\n' % (n, _fmt(n, after_flat.get(n))) for n in names)
        if before != after:
            self.diff.insert(0, {'before_header': 'live values', 'after_header': 'live values',
                                 'before': before, 'after': after})

    # -- zram -----------------------------------------------------------------
    def check_swapoff(self, live):
        swap = swap_of(live['swaps'], self.device)
        problem = swapoff_fits(swap['used_bytes'] if swap else 0, live['meminfo'])
        if problem:
            raise Failure('refusing to rebuild /dev/%s: %s; free memory (or lower the load) and run again'
                          % (self.device, problem))

    def teardown(self):
        """Stop the device's units, turn its swap off and reset it."""
        units = ['dev-%s.swap' % self.device, 'systemd-zram-setup@%s.service' % self.device, UNIT_NAME]
        states = self.host.unit_states(units)
        active = [u for u in units if states.get(u) in ACTIVE_STATES]
        if active:
            self.host.run(['systemctl', 'stop', '--'] + active)
        failed = [u for u in units if states.get(u) == 'failed']
        if failed:
            self.host.run(['systemctl', 'reset-failed', '--'] + failed, check_rc=False)
        live = self.host.read_live()
        if swap_of(live['swaps'], self.device):
            self.host.run(['swapoff', '/dev/' + self.device])
        reset = self.host.sys('block/%s/reset' % self.device)
        if self.host.read_int(self.host.sys('block/%s/disksize' % self.device)) and os.path.exists(reset):
            self.host.write_value(reset, 1)

    def setup(self, backend):
        unit = 'dev-%s.swap' % self.device if backend == 'zram-generator' else UNIT_NAME
        self.host.run(['systemctl', 'start', '--', unit])

    def setup_direct(self, size, algorithm, priority):
        """Set the device up as swap without systemd (restoring a snapshot)."""
        if not os.path.isdir(self.host.sys('block/' + self.device)):
            self.host.run(['modprobe', 'zram'])
            self.host.run(['udevadm', 'settle'], check_rc=False)
        args = ['zramctl', '--size', str(size)]
        if algorithm:
            args += ['--algorithm', algorithm]
        self.host.run(args + ['/dev/' + self.device])
        self.host.run(['mkswap', '/dev/' + self.device])
        self.host.run(['swapon', '--priority', str(priority), '/dev/' + self.device])

    def unit_status(self, backend):
        units = ['dev-%s.swap' % self.device, 'systemd-zram-setup@%s.service' % self.device] \
            if backend == 'zram-generator' else [UNIT_NAME]
        rc, out, err = self.host.run(['systemctl', 'status', '--no-pager', '--lines', '10', '--'] + units,
                                     check_rc=False)
        return out or err

    # -- states ---------------------------------------------------------------
    def present(self):
        live = self.host.read_live(self.extra_sysctls())
        wanted = self.wanted(live)
        zram_info = None
        backend = None
        contents = []
        zram_files_ours = dict((rel, is_managed(self.host.read(self.host.path(rel)))) for rel in ZRAM_FILES)
        teardown_only = False
        if wanted['zram']:
            backend = self.backend()
            zram = wanted['zram']
            sizing = zram['sizing']
            zram_info = {'device': self.device, 'backend': backend, 'size_bytes': zram['size_bytes'],
                         'size': format_size(zram['size_bytes']), 'requested': sizing['requested'],
                         'capped': sizing['capped'], 'share_of_ram': sizing['share_of_ram']}
            if sizing['message']:
                self.messages.append(sizing['message'])
            dev = live['zram']['devices'].get(self.device)
            if zram.get('algorithm') and dev and dev['algorithms'] and zram['algorithm'] not in dev['algorithms']:
                self.module.warn('zram.algorithm %s is not among the algorithms /dev/%s offers now (%s); '
                                 'the kernel may load it on demand'
                                 % (zram['algorithm'], self.device, ' '.join(dev['algorithms'])))
            if backend == 'zram-generator':
                contents += [(GENERATOR_DROPIN, render_zram_generator(zram)), (UNIT_FILE, None), (UNIT_WANTS, None)]
            else:
                bins = dict((b, self.host.bin(b)) for b in ('zramctl', 'mkswap', 'swapon', 'swapoff', 'modprobe'))
                bins['udevadm'] = self.host.module.get_bin_path('udevadm') or '/usr/bin/udevadm'
                contents += [(GENERATOR_DROPIN, None), (UNIT_FILE, render_zram_unit(zram, bins)),
                             (UNIT_WANTS, render_unit_wants(UNIT_NAME))]
        elif self.zram_managed:
            contents += [(rel, None) for rel in ZRAM_FILES]
            teardown_only = any(zram_files_ours.values()) and bool(
                zram_live(live, self.device)['swap'] or zram_live(live, self.device)['size'])
        contents += [(TMPFILES_FILE, render_tmpfiles(wanted)), (SYSCTL_FILE, render_sysctl(wanted))]

        found = self.conflicts(live, wanted)
        self.handle_conflicts(found)

        switched = False
        if wanted['zram']:
            other = UNIT_FILE if backend == 'zram-generator' else GENERATOR_DROPIN
            switched = zram_files_ours[other] and zram_live(live, self.device)['swap']
        rebuild = bool(wanted['zram']) and (zram_needs_rebuild(wanted['zram'], live, self.device) or switched)
        if rebuild or teardown_only:
            self.check_swapoff(live)

        thp_writes = [('thp.' + k, v) for k, v in wanted['thp'].items() if live['thp'].get(k) != v]
        for name, dummy in thp_writes:
            if live['thp'].get(name[4:]) is None:
                raise Failure('this kernel has no %s: it cannot set %s'
                              % (self.host.sys('kernel/mm/transparent_hugepage/' + name[4:]), name))
        ksm_w, held = ksm_writes(wanted['ksm'], live['ksm'])
        self.held += held
        for item in held:
            self.module.warn('%s: %s' % (item['name'], item['reason']))
        sysctl_writes = [('sysctl.' + k, v) for k, v in sorted(wanted['sysctl'].items())
                         if live['sysctl'].get(k) != v]
        writes = thp_writes + [('ksm.' + k, v) for k, v in ksm_w] + sysctl_writes
        plan = self.file_plan(contents)
        zram_files_changed = any(p[0] in [self.host.path(r) for r in ZRAM_FILES] for p in plan)

        self.changes += [n for n, dummy in writes]
        if rebuild:
            self.changes.append('zram.rebuild')
            self.rebuilt = True
        if teardown_only:
            self.changes.append('zram.teardown')
        self.file_diffs(plan)
        wanted_items = flat_wanted(wanted)
        before_flat = flat_live(live, self.device)
        after_flat = dict(before_flat)
        after_flat.update(dict(wanted_items))
        for item in held:
            after_flat[item['name']] = before_flat.get(item['name'])
        if teardown_only:
            after_flat.update({'zram.swap': False, 'zram.size': 0, 'zram.priority': None})
        names = [n for n, dummy in wanted_items] + (['zram.swap', 'zram.size'] if teardown_only else [])
        self.values_diff(before_flat, after_flat, names)

        after = live
        if not self.check and (writes or plan or rebuild or teardown_only):
            if rebuild or teardown_only:
                self.teardown()
            self.live_writes(writes)
            self.apply_files(plan)
            if zram_files_changed or rebuild:
                self.host.run(['systemctl', 'daemon-reload'])
            if rebuild:
                self.setup(backend)
            after = self.host.read_live(self.extra_sysctls())
            if wanted['zram'] and zram_needs_rebuild(wanted['zram'], after, self.device):
                raise Failure('/dev/%s is not as wanted after setting it up: %s (wanted %s, %s, priority %s)\n%s'
                              % (self.device, _zram_text(zram_live(after, self.device)),
                                 format_size(wanted['zram']['size_bytes']), wanted['zram']['algorithm'] or
                                 'default algorithm', wanted['zram']['priority'], self.unit_status(backend)))
        items = compare(wanted_items, flat_live(after, self.device))
        for item in held:
            self.messages.append('%s: %s' % (item['name'], item['reason']))
        return self.result(live, after, items, found, zram=zram_info)

    def query(self):
        live = self.host.read_live(self.extra_sysctls())
        wanted = self.wanted(live)
        zram_info = None
        if wanted['zram']:
            sizing = wanted['zram']['sizing']
            try:
                backend = self.backend()
            except Failure:
                backend = 'zram-generator (not installed)'
            zram_info = {'device': self.device, 'backend': backend,
                         'size_bytes': wanted['zram']['size_bytes'],
                         'size': format_size(wanted['zram']['size_bytes']), 'requested': sizing['requested'],
                         'capped': sizing['capped'], 'share_of_ram': sizing['share_of_ram']}
            if sizing['message']:
                self.messages.append(sizing['message'])
        found = self.conflicts(live, wanted)
        self.messages += [c['message'] for c in found]
        items = compare(flat_wanted(wanted), flat_live(live, self.device))
        return self.result(live, live, items, found, zram=zram_info)

    def snapshot(self):
        path = self.params.get('snapshot_path')
        if not path:
            raise Failure('state=snapshot needs snapshot_path')
        live = self.host.read_live(self.extra_sysctls())
        wanted = self.wanted(live)
        found = self.conflicts(live, wanted)
        self.handle_conflicts(found)
        if wanted['zram'] and wanted['zram']['sizing']['message']:
            self.messages.append(wanted['zram']['sizing']['message'])
        written = False
        if os.path.exists(path):
            data = self.load_snapshot(path)
        else:
            data = {
                'format': SNAPSHOT_FORMAT,
                'module': 'kvmlab.host_resources.memory_oversub',
                'taken_at': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
                'live': snapshot_live(live),
                'files': dict((self.host.path(rel), self.host.file_state(self.host.path(rel)))
                              for rel in MANAGED_FILES),
                'dirs': dict((self.host.path(rel), os.path.isdir(self.host.path(rel))) for rel in MANAGED_DIRS),
                'zram_generator_installed': self.host.generator_installed(),
            }
            written = True
            self.changes.append(path)
            self.diff.append({'before_header': '%s (absent)' % path, 'after_header': path,
                              'before': '', 'after': json.dumps(data, indent=2, sort_keys=True) + '\n'})
            if not self.check:
                self.write_snapshot(path, data)
        items = compare(flat_wanted(wanted), flat_live(live, self.device))
        result = self.result(live, live, items, found)
        result.update(snapshot_path=path, snapshot_written=written, snapshot=data)
        return result

    def absent(self):
        path = self.params.get('snapshot_path')
        snap = self.load_snapshot(path) if path and os.path.exists(path) else None
        snap_live = snap['live'] if snap else None
        extra = list((snap_live or {}).get('sysctl', {}).keys()) + self.extra_sysctls()
        live = self.host.read_live(extra)
        dev_live = zram_live(live, self.device)

        # files: back to the snapshot, or ours removed
        contents = []
        restore_modes = {}
        if snap:
            for abspath, state in sorted(snap['files'].items()):
                rel = os.path.relpath(abspath, self.host.root)
                if state.get('exists'):
                    contents.append((rel, state.get('content') or ''))
                    restore_modes[abspath] = int(state.get('mode') or '0644', 8)
                else:
                    contents.append((rel, None))
        else:
            contents = [(rel, None) for rel in MANAGED_FILES]
        plan = []
        for rel, content in contents:
            abspath = self.host.path(rel)
            old = self.host.read(abspath)
            if content is None:
                if old is not None and (snap or is_managed(old)):
                    plan.append((abspath, 'removed', old, None))
                    self.files[abspath] = 'removed'
                else:
                    self.files[abspath] = 'absent' if old is None else 'unchanged'
            elif old != content:
                plan.append((abspath, 'written', old, content))
                self.files[abspath] = 'written'
            else:
                self.files[abspath] = 'unchanged'
        ours_zram = any(is_managed(self.host.read(self.host.path(r))) for r in ZRAM_FILES)

        # zram device
        if snap:
            was = zram_live(snap_live, self.device)
            same = (was['swap'] == dev_live['swap'] and (not was['swap'] or (
                was['size'] == dev_live['size'] and was['priority'] == dev_live['priority']
                and (not was['algorithm'] or was['algorithm'] == dev_live['algorithm']))))
            down = not same and (dev_live['swap'] or dev_live['size'])
            up = not same and was['swap']
            unload = (not snap_live['zram']['loaded']) and live['zram']['loaded'] and not any(
                d.get('disksize') for n, d in live['zram']['devices'].items() if n != self.device)
        else:
            was = None
            down = ours_zram and bool(dev_live['swap'] or dev_live['size'])
            up = False
            unload = False
        if down:
            self.check_swapoff(live)

        writes, held = restore_writes(snap_live, live) if snap else ([], [])
        self.held += held
        for item in held:
            self.module.warn('%s: %s' % (item['name'], item['reason']))
            self.messages.append('%s: %s' % (item['name'], item['reason']))
        if not snap:
            self.messages.append('no snapshot%s: removed only the files of this module and its zram device; '
                                 'live THP, KSM and sysctl values are left as they are'
                                 % (' at %s' % path if path else ''))

        self.changes += [n for n, dummy in writes]
        if down:
            self.changes.append('zram.teardown')
        if up:
            self.changes.append('zram.restore')
        if unload:
            self.changes.append('zram.unload')
        self.file_diffs(plan)
        names = [n for n, dummy in writes]
        before_flat = flat_live(live, self.device)
        after_flat = dict(before_flat)
        after_flat.update(dict(writes))
        if up:
            names += ['zram.swap', 'zram.size', 'zram.algorithm', 'zram.priority']
            after_flat.update(dict(('zram.' + k, v) for k, v in was.items()))
        elif down:
            names += ['zram.swap', 'zram.size', 'zram.priority']
            after_flat.update({'zram.swap': False, 'zram.size': 0, 'zram.priority': None})
        self.values_diff(before_flat, after_flat, names)
        dirs_to_remove = []
        if snap:
            for abspath, existed in sorted((snap.get('dirs') or {}).items()):
                if not existed and os.path.isdir(abspath):
                    dirs_to_remove.append(abspath)

        after = live
        if not self.check:
            if down:
                self.teardown()
            self.live_writes(writes)
            self.apply_files(plan)
            for abspath, mode in restore_modes.items():
                if os.path.exists(abspath):
                    os.chmod(abspath, mode)
            for directory in dirs_to_remove:
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
            if any(p[0] in [self.host.path(r) for r in ZRAM_FILES] for p in plan):
                self.host.run(['systemctl', 'daemon-reload'])
            if up:
                self.setup_direct(was['size'], was['algorithm'], was['priority'])
            if unload:
                rc, out, err = self.host.run(['modprobe', '-r', 'zram'], check_rc=False)
                if rc != 0:
                    self.module.warn('could not unload the zram module: %s' % (err or out).strip())
            after = self.host.read_live(extra)
        items = restore_items(snap_live, after, self.device) if snap else []
        bad = [i['name'] for i in items if not i['ok']]
        if snap and not self.check:
            if bad:
                self.module.warn('not restored exactly: %s; the snapshot %s is kept' % (', '.join(bad), path))
            else:
                self.host.remove_file(path)
                created = snap.get('snapshot_dir_created')
                if created and os.path.dirname(path) == created:
                    try:
                        os.rmdir(created)
                    except OSError:
                        pass  # not empty: something else lives there now
        if snap:
            self.changes.append(path)
        if snap:
            outcome = ('restored', []) if not bad else ('drifted', bad)
        else:
            outcome = ('stock', []) if self.check or not self.managed_files_present() else ('drifted', [])
        result = self.result(live, after, items, self.conflicts(after, None), outcome=outcome)
        result.update(snapshot=snap)
        if path:
            result['snapshot_path'] = path
        return result

    # -- snapshot file --------------------------------------------------------
    def load_snapshot(self, path):
        try:
            with open(path, 'r') as handle:
                data = json.load(handle)
        except (IOError, OSError, ValueError) as exc:
            raise Failure('cannot read the snapshot %s: %s' % (path, exc))
        try:
            return validate_snapshot(data, path)
        except OversubError as exc:
            raise Failure(str(exc))

    def write_snapshot(self, path, data):
        directory = os.path.dirname(path) or '.'
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o700)
                os.chmod(directory, 0o700)
                data['snapshot_dir_created'] = directory
            elif os.stat(directory).st_mode & 0o077:
                self.module.warn('%s is accessible to other users than its owner; the snapshot itself is 0600'
                                 % directory)
            tmp = os.path.join(directory, '.%s.tmp' % os.path.basename(path))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.write('\n')
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        except (IOError, OSError) as exc:
            raise Failure('cannot write the snapshot %s: %s' % (path, exc))

    # -- result ---------------------------------------------------------------
    def result(self, before, after, items, found, zram=None, outcome=None):
        verdict_name, drifted = outcome or verdict(items, self.managed_files_present(), self.snapshot_exists())
        eff = effect(after, self.device, self.page_size)
        report = format_report(socket.gethostname(), verdict_name, drifted, items, eff,
                               [c for c in found if c['blocking']], self.messages)
        return {
            'changed': bool(self.changes),
            'changes': self.changes,
            'held': self.held,
            'rebuilt': self.rebuilt,
            'comparison': items,
            'verdict': verdict_name,
            'drifted': drifted,
            'before': before,
            'after': after,
            'effect': eff,
            'zram': zram,
            'conflicts': found,
            'messages': self.messages,
            'report': report,
            'files': self.files,
            'commands': self.host.commands,
            'zram_generator_installed': self.host.generator_installed(),
        }


def _fmt(name, value):
    if name == 'zram.size' and isinstance(value, int):
        return format_size(value) if value else '0'
    return '-' if value is None else value


def _zram_text(dev):
    if not dev['swap']:
        return 'no swap, %s' % format_size(dev['size'] or 0)
    return 'swap %s, %s, priority %s' % (format_size(dev['size']), dev['algorithm'], dev['priority'])


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
    run = MemoryOversub(module)
    state = module.params['state']
    try:
        result = getattr(run, state)()
    except Failure as exc:
        extra = dict(exc.extra)
        extra.setdefault('changes', run.changes)
        extra.setdefault('commands', run.host.commands)
        module.fail_json(msg=exc.msg, **extra)
    if module._diff:
        result['diff'] = run.diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
