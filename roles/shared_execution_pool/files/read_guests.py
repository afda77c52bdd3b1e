# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live view of the guests for the shared_execution_pool role (reads only).

Run on the managed host as ``python3 -c <this file> PID_DIR SLICES GUEST...``
(SLICES is a comma-separated list of tier slices to look up, or "-" for none
on hosts without systemd). Prints one JSON document:

  guests: name -> {running, pid, cgroup, scope,
                   threads: {vcpu|emulator|iothread: {tid: Cpus_allowed_list}},
                   cpus: {vcpu|emulator|iothread: [distinct cpulists]}}
  slices: name -> {defined, LoadState, FragmentPath, DropInPaths, CPUWeight}

The QEMU pid comes from libvirt's pid file; the scope is the last element of
the process's cgroup path that ends in ".scope" (domain ids change at every
start, so the name is never guessed). Thread classes by name: "CPU n/TCG"
(or /KVM) are vCPUs, "IO iothreadN" IOThreads, every other thread belongs
to the emulator (main loop, RCU, workers, "IO mon_iothread").
"""

import json
import os
import re
import subprocess
import sys

VCPU = re.compile(r'^CPU \d+/(TCG|KVM)$')
IOTHREAD = re.compile(r'^IO iothread\d+$')


def read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def cgroup_of(pid):
    text = read('/proc/%d/cgroup' % pid) or ''
    unified = None
    for line in text.splitlines():
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        if parts[0] == '0' and parts[1] == '':
            unified = parts[2]
        elif unified is None and 'cpuset' in parts[1].split(','):
            unified = parts[2]
    return unified


def scope_of(path):
    scope = None
    for element in (path or '').split('/'):
        if element.endswith('.scope'):
            scope = element
    return scope


def threads_of(pid):
    classes = {'vcpu': {}, 'emulator': {}, 'iothread': {}}
    try:
        tids = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return classes
    for tid in tids:
        comm = (read('/proc/%d/task/%s/comm' % (pid, tid)) or '').strip()
        status = read('/proc/%d/task/%s/status' % (pid, tid)) or ''
        match = re.search(r'^Cpus_allowed_list:\s*(\S+)', status, re.M)
        if not match:
            continue
        kind = 'vcpu' if VCPU.match(comm) else 'iothread' if IOTHREAD.match(comm) else 'emulator'
        classes[kind]['%s %s' % (tid, comm)] = match.group(1)
    return classes


def guest(pid_dir, name):
    result = {'running': False, 'pid': None, 'cgroup': None, 'scope': None,
              'threads': {'vcpu': {}, 'emulator': {}, 'iothread': {}},
              'cpus': {'vcpu': [], 'emulator': [], 'iothread': []}}
    text = (read(os.path.join(pid_dir, name + '.pid')) or '').strip()
    if not text.isdigit() or not os.path.isdir('/proc/%s/task' % text):
        return result
    pid = int(text)
    result.update({'running': True, 'pid': pid, 'cgroup': cgroup_of(pid)})
    result['scope'] = scope_of(result['cgroup'])
    result['threads'] = threads_of(pid)
    result['cpus'] = dict((kind, sorted(set(values.values())))
                          for kind, values in result['threads'].items())
    return result


def slices(names):
    found = {}
    if not names:
        return found
    keys = ('Id', 'LoadState', 'FragmentPath', 'DropInPaths', 'CPUWeight')
    try:
        out = subprocess.run(['systemctl', 'show', '--no-pager', '-p', ','.join(keys), '--'] + names,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
                             universal_newlines=True, env=dict(os.environ, LC_ALL='C')).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return dict((name, {'defined': None, 'error': str(exc)}) for name in names)
    blocks = [block for block in out.split('\n\n') if block.strip()]
    for name, block in zip(names, blocks):
        values = dict(line.split('=', 1) for line in block.splitlines() if '=' in line)
        values['defined'] = bool(values.get('FragmentPath') or values.get('DropInPaths'))
        found[name] = values
    return found


def main(argv):
    pid_dir, slice_arg = argv[0], argv[1]
    names = [] if slice_arg in ('', '-') else slice_arg.split(',')
    print(json.dumps({'guests': dict((name, guest(pid_dir, name)) for name in argv[2:]),
                      'slices': slices(names)}, sort_keys=True))


if __name__ == '__main__':
    main(sys.argv[1:])
