# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The memory layer's reader and writer of the host (I/O).

Reads sysfs, procfs and the configuration files under configurable roots
(copies of trees in tests), writes values and files, and runs commands
through the module object it is given (``run_command``, ``get_bin_path``,
``atomic_move``, ``warn``); it imports nothing of Ansible.
"""

from __future__ import annotations

import os

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory import (
    KSM_KNOBS,
    KSM_STATS,
    SYSCTL_RECORDED,
    THP_KNOBS,
    OversubError,
    sysctl_path,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_files import (
    GENERATOR_BINARIES,
    GENERATOR_CONFIG_DIRS,
    GENERATOR_DROPIN,
    TUNED_PROFILE_DIRS,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._memory_kernel import (
    parse_bracketed,
    parse_meminfo,
    parse_mm_stat,
    parse_proc_swaps,
    tuned_findings,
    zram_generator_devices,
)


class Failure(Exception):
    """Ends the module with fail_json; carries extra result keys."""

    def __init__(self, msg, **extra):
        super(Failure, self).__init__(msg)
        self.msg = msg
        self.extra = extra


class Host(object):
    """Reads and writes the host (under the configured roots) and runs its commands."""

    def __init__(self, module, sysfs_root='/sys', proc_root='/proc', files_root='/'):
        self.module = module
        self.sysfs = sysfs_root
        self.proc = proc_root
        self.root = files_root
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

    def texts(self, paths):
        """The text of each path (None when absent)."""
        return dict((path, self.read(path)) for path in paths)

    @staticmethod
    def write_file(path, content, mode=0o644):
        """Write a text file atomically (the collection's one atomic writer, in _snapshot)."""
        try:
            _snapshot.write_atomic(path, content.encode('utf-8') if not isinstance(content, bytes) else content, mode)
        except _snapshot.SnapshotError as exc:
            raise Failure(str(exc))

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
