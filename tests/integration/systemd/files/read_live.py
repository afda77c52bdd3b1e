#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read units' live CPU settings independently of the module under test.

Usage: read_live.py UNIT...  ->  JSON on stdout:
{"cgroup_root": ..., "cpu_controller": bool, "units": {UNIT: {...}}}
with systemctl's own values and the raw cgroup v2 files (null when missing).
Only the Python standard library, so it runs on any test host.
"""
import json
import os
import subprocess
import sys

PROPS = ['ActiveState', 'LoadState', 'FragmentPath', 'DropInPaths', 'ControlGroup',
         'CPUAccounting', 'CPUWeight', 'CPUQuotaPerSecUSec', 'AllowedCPUs']


def show(unit):
    env = dict(os.environ, LC_ALL='C')
    out = subprocess.check_output(['systemctl', 'show', '-p', ','.join(PROPS), '--', unit],
                                  env=env, universal_newlines=True)
    values = {}
    for line in out.splitlines():
        key, _sep, value = line.partition('=')
        values[key] = value
    return values


def read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def main(units):
    root = '/sys/fs/cgroup'
    if not os.path.exists(os.path.join(root, 'cgroup.controllers')):
        root = '/sys/fs/cgroup/unified'
    controllers = (read(os.path.join(root, 'cgroup.controllers')) or '').split()
    result = {'cgroup_root': root, 'cpu_controller': 'cpu' in controllers, 'units': {}}
    for unit in units:
        values = show(unit)
        group = values.get('ControlGroup', '')
        path = os.path.join(root, group.lstrip('/')) if group else None
        values['cgroup_path'] = path if path and os.path.isdir(path) else None
        for key, name in (('cgroup_cpu_weight', 'cpu.weight'), ('cgroup_cpu_max', 'cpu.max'),
                          ('cgroup_cpuset_cpus', 'cpuset.cpus')):
            values[key] = read(os.path.join(path, name)) if values['cgroup_path'] else None
        control = []
        for base in ('/etc/systemd/system.control', '/run/systemd/system.control'):
            directory = os.path.join(base, unit + '.d')
            if os.path.isdir(directory):
                control.extend(os.path.join(directory, name) for name in sorted(os.listdir(directory)))
        values['control_dropins'] = control
        result['units'][unit] = values
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main(sys.argv[1:])
