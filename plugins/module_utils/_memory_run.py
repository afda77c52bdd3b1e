# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run of memory_oversub: read the host, plan (``_memory_plan``), carry the plan out, report.

``run(module)`` is the module's one call: it returns ``(result, diff)`` or
raises ``Failure`` (message plus extra result keys). The snapshot is a
``_snapshot`` file of layer ``memory``: the managed files and directories,
and the live values under ``values``; a release 1 snapshot (``format: 1``)
is migrated when it is read.
"""

from __future__ import annotations

import os
import socket

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import (
    OversubError,
    compare,
    flat_live,
    flat_wanted,
    normalize_wanted,
    sysctl_path,
    swap_of,
    verdict,
    zram_live,
    zram_needs_rebuild,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_conflicts import find_conflicts
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_effect import effect, format_report
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_files import (
    GENERATOR_BINARIES,
    MANAGED_DIRS,
    MANAGED_FILES,
    UNIT_NAME,
    ZRAM_FILES,
    is_managed,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_host import Failure, Host
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_plan import (
    check_values,
    file_diffs,
    plan_present,
    plan_remove_ours,
    plan_restore,
    restore_items,
    snapshot_values,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_sizes import format_size

LAYER = 'memory'
WATCHED_SERVICES = ('ksmtuned.service', 'tuned.service', 'zramswap.service')
ACTIVE_STATES = ('active', 'activating', 'reloading', 'deactivating')


class MemoryOversub(object):
    """One run of the module."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.host = Host(module, module.params['sysfs_root'], module.params['proc_root'],
                         module.params['files_root'])
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

    def zram_info(self, wanted, backend):
        zram = wanted['zram']
        sizing = zram['sizing']
        if sizing['message']:
            self.messages.append(sizing['message'])
        return {'device': self.device, 'backend': backend, 'size_bytes': zram['size_bytes'],
                'size': format_size(zram['size_bytes']), 'requested': sizing['requested'],
                'capped': sizing['capped'], 'share_of_ram': sizing['share_of_ram']}

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
        return find_conflicts(self.device, priority, live['swaps'], live['zram']['devices'], services,
                              tuned, self.host.generator_configs())

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

    def managed_paths(self):
        return [self.host.path(rel) for rel in MANAGED_FILES]

    def managed_files_present(self):
        return any(is_managed(self.host.read(p)) for p in self.managed_paths())

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

    def apply_files(self, plan):
        for path, action, dummy, content in plan:
            if action == 'written':
                self.host.write_file(path, content)
            else:
                self.host.remove_file(path)

    def add_diff(self, plan, values_entry):
        if values_entry:
            self.diff.append(values_entry)
        self.diff += file_diffs(plan)

    def warn_held(self, held, note=False):
        self.held += held
        for item in held:
            self.module.warn('%s: %s' % (item['name'], item['reason']))
            if note:
                self.messages.append('%s: %s' % (item['name'], item['reason']))

    # -- zram -----------------------------------------------------------------
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
        dummy, out, err = self.host.run(['systemctl', 'status', '--no-pager', '--lines', '10', '--'] + units,
                                        check_rc=False)
        return out or err

    def bins(self):
        bins = dict((b, self.host.bin(b)) for b in ('zramctl', 'mkswap', 'swapon', 'swapoff', 'modprobe'))
        bins['udevadm'] = self.module.get_bin_path('udevadm') or '/usr/bin/udevadm'
        return bins

    # -- states ---------------------------------------------------------------
    def present(self):
        live = self.host.read_live(self.extra_sysctls())
        wanted = self.wanted(live)
        backend = self.backend() if wanted['zram'] else None
        zram_info = self.zram_info(wanted, backend) if wanted['zram'] else None
        found = self.conflicts(live, wanted)
        self.handle_conflicts(found)
        try:
            plan = plan_present(wanted, live, self.host.texts(self.managed_paths()), self.device, backend,
                                self.bins() if backend == 'unit' else None, self.zram_managed, self.host.root)
        except OversubError as exc:
            raise Failure(str(exc))
        for warning in plan['warnings']:
            self.module.warn(warning)
        self.warn_held(plan['held'])
        self.files.update(plan['files'])
        self.changes += plan['changes']
        self.rebuilt = plan['rebuild']
        self.add_diff(plan['file_plan'], plan['diff'])

        after = live
        if not self.check and plan['changes']:
            if plan['rebuild'] or plan['teardown']:
                self.teardown()
            self.live_writes(plan['writes'])
            self.apply_files(plan['file_plan'])
            if plan['reload']:
                self.host.run(['systemctl', 'daemon-reload'])
            if plan['rebuild']:
                self.setup(backend)
            after = self.host.read_live(self.extra_sysctls())
            if wanted['zram'] and zram_needs_rebuild(wanted['zram'], after, self.device):
                raise Failure('/dev/%s is not as wanted after setting it up: %s (wanted %s, %s, priority %s)\n%s'
                              % (self.device, _zram_text(zram_live(after, self.device)),
                                 format_size(wanted['zram']['size_bytes']), wanted['zram']['algorithm'] or
                                 'default algorithm', wanted['zram']['priority'], self.unit_status(backend)))
        items = compare(plan['wanted_items'], flat_live(after, self.device))
        for item in plan['held']:
            self.messages.append('%s: %s' % (item['name'], item['reason']))
        return self.result(live, after, items, found, zram=zram_info)

    def query(self):
        live = self.host.read_live(self.extra_sysctls())
        wanted = self.wanted(live)
        zram_info = None
        if wanted['zram']:
            try:
                backend = self.backend()
            except Failure:
                backend = 'zram-generator (not installed)'
            zram_info = self.zram_info(wanted, backend)
        found = self.conflicts(live, wanted)
        self.messages += [c['message'] for c in found]
        items = compare(flat_wanted(wanted), flat_live(live, self.device))
        return self.result(live, live, items, found, zram=zram_info)

    def new_snapshot(self, path, live):
        """The memory layer's snapshot of the host now: managed files and dirs, live values."""
        snap = _snapshot.new_snapshot(LAYER, host=socket.gethostname())
        try:
            for abspath in self.managed_paths():
                snap['files'][abspath] = _snapshot.read_file_record(abspath)
            dirs = [self.host.path(rel) for rel in MANAGED_DIRS] + [os.path.dirname(os.path.abspath(path))]
            for directory in dirs:
                snap['dirs'][directory] = _snapshot.read_dir_record(directory)
        except _snapshot.SnapshotError as exc:
            raise Failure(str(exc))
        snap['values'] = snapshot_values(live, self.host.generator_installed())
        return snap

    def load_snapshot(self, path):
        try:
            snap = _snapshot.load(path, LAYER)
            check_values(snap['values'], path)
        except (_snapshot.SnapshotError, OversubError) as exc:
            raise Failure(str(exc))
        return snap

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
            data = self.new_snapshot(path, live)
            written = True
            self.changes.append(path)
            self.diff.append({'before_header': '%s (absent)' % path, 'after_header': path,
                              'before': '', 'after': _snapshot.dumps(data)})
            if not self.check:
                directory = os.path.dirname(os.path.abspath(path))
                if os.path.isdir(directory) and os.stat(directory).st_mode & 0o077:
                    self.module.warn('%s is accessible to other users than its owner; the snapshot itself is 0600'
                                     % directory)
                try:
                    written = _snapshot.save(path, data)
                except _snapshot.SnapshotError as exc:
                    raise Failure(str(exc))
                if not written:  # another run wrote it in between: that one counts
                    self.changes.remove(path)
                    self.diff.pop()
                    data = self.load_snapshot(path)
        items = compare(flat_wanted(wanted), flat_live(live, self.device))
        result = self.result(live, live, items, found)
        result.update(snapshot_path=path, snapshot_written=written, snapshot=data)
        return result

    def absent(self):
        path = self.params.get('snapshot_path')
        snap = self.load_snapshot(path) if path and os.path.exists(path) else None
        if snap:
            return self.restore(path, snap)
        return self.remove_ours(path)

    def remove_ours(self, path):
        live = self.host.read_live(self.extra_sysctls())
        try:
            plan = plan_remove_ours(live, self.host.texts(self.managed_paths()), self.device, self.host.root)
        except OversubError as exc:
            raise Failure(str(exc))
        self.messages.append('no snapshot%s: removed only the files of this module and its zram device; '
                             'live THP, KSM and sysctl values are left as they are'
                             % (' at %s' % path if path else ''))
        self.files.update(plan['files'])
        self.changes += plan['changes']
        self.add_diff(plan['file_plan'], plan['diff'])
        after = live
        if not self.check and plan['changes']:
            if plan['down']:
                self.teardown()
            self.apply_files(plan['file_plan'])
            zram_paths = [self.host.path(r) for r in ZRAM_FILES]
            if any(p[0] in zram_paths for p in plan['file_plan']):
                self.host.run(['systemctl', 'daemon-reload'])
            after = self.host.read_live(self.extra_sysctls())
        outcome = ('stock', []) if self.check or not self.managed_files_present() else ('drifted', [])
        result = self.result(live, after, [], self.conflicts(after, None), outcome=outcome)
        result.update(snapshot=None)
        if path:
            result['snapshot_path'] = path
        return result

    def restore(self, path, snap):
        values = snap['values']
        extra = list(values.get('sysctl', {}).keys()) + self.extra_sysctls()
        live = self.host.read_live(extra)
        try:
            plan = plan_restore(values, live, self.device)
            current_files, dummy = _snapshot.read_current(snap)
        except (OversubError, _snapshot.SnapshotError) as exc:
            raise Failure(str(exc))
        file_plan = _snapshot.file_restore_plan(snap, current_files)
        self.warn_held(plan['held'], note=True)
        self.changes += plan['changes']
        text_plan = []
        for action in file_plan:
            old = _text(_snapshot.file_content(current_files.get(action['path'])))
            if action['action'] == 'write':
                text_plan.append((action['path'], 'written', old, _text(_snapshot.file_content(action))
                                  if 'content' in action['changed'] or 'exists' in action['changed'] else old))
                self.files[action['path']] = 'written'
            elif action['action'] == 'remove':
                text_plan.append((action['path'], 'removed', old, None))
                self.files[action['path']] = 'removed'
            else:
                self.files[action['path']] = 'unchanged' if old is not None else 'absent'
        self.changes += [p[0] for p in text_plan]
        self.add_diff(text_plan, plan['diff'])

        after = live
        if not self.check:
            if plan['down']:
                self.teardown()
            self.live_writes(plan['writes'])
            try:
                _snapshot.apply_file_plan(file_plan)
            except _snapshot.SnapshotError as exc:
                raise Failure(str(exc))
            zram_paths = [self.host.path(r) for r in ZRAM_FILES]
            if any(p[0] in zram_paths for p in text_plan):
                self.host.run(['systemctl', 'daemon-reload'])
            if plan['up']:
                was = plan['was']
                self.setup_direct(was['size'], was['algorithm'], was['priority'])
            if plan['unload']:
                rc, out, err = self.host.run(['modprobe', '-r', 'zram'], check_rc=False)
                if rc != 0:
                    self.module.warn('could not unload the zram module: %s' % (err or out).strip())
            after = self.host.read_live(extra)
        items = restore_items(values, after, self.device)
        bad = [i['name'] for i in items if not i['ok']]
        if not self.check:
            try:
                dummy, current_dirs = _snapshot.read_current(snap)
                dir_plan = _snapshot.dir_restore_plan(snap, current_dirs)
            except _snapshot.SnapshotError as exc:
                self.module.warn(str(exc))
                dir_plan = []
            if bad:
                self.module.warn('not restored exactly: %s; the snapshot %s is kept' % (', '.join(bad), path))
                try:
                    _snapshot.apply_dir_plan(dir_plan)
                except _snapshot.SnapshotError as exc:
                    self.module.warn(str(exc))
            else:
                try:
                    _snapshot.retire(path, dir_plan)
                except _snapshot.SnapshotError as exc:
                    raise Failure(str(exc))
        self.changes.append(path)
        outcome = ('restored', []) if not bad else ('drifted', bad)
        result = self.result(live, after, items, self.conflicts(after, None), outcome=outcome)
        result.update(snapshot=snap, snapshot_path=path)
        return result

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


def _text(content):
    if content is None:
        return None
    return content.decode('utf-8', 'replace')


def _zram_text(dev):
    if not dev['swap']:
        return 'no swap, %s' % format_size(dev['size'] or 0)
    return 'swap %s, %s, priority %s' % (format_size(dev['size']), dev['algorithm'], dev['priority'])


def run(module):
    """Carry out ``module.params['state']``; returns ``(result, diff)`` or raises ``Failure``.

    ``Failure.extra`` already holds the changes made and the commands run so far.
    """
    runner = MemoryOversub(module)
    try:
        result = getattr(runner, module.params['state'])()
    except Failure as exc:
        exc.extra.setdefault('changes', runner.changes)
        exc.extra.setdefault('commands', runner.host.commands)
        raise
    return result, runner.diff
