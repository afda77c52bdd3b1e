# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark (not a test): the shared_execution_pool role's apply vs a bare virsh loop.

Seed 001's shape (vars/guest_tiers_example.yml: 13 guests, 122 vCPUs, 4
IOThreads) on the private libvirtd of tools/fastvirt, idle halt kernel.
Side by side in one run, both as whole processes from a pristine state:

- the role's apply: one ``ansible-playbook`` process (topology, one
  execution_pool call, report) that snapshots and places every guest:
  vCPUs on guest_domain ("1"), emulator and IOThreads on host_emulator
  ("0"), the tier's shares live and persistent, partition and tier metadata
  in the persistent XML (``shared_execution_pool_systemd: false``: the
  private daemon has no systemd);
- the same through ``virsh``: one ``vcpupin --live --config`` per vCPU, one
  ``emulatorpin`` and ``iothreadpin`` per guest and IOThread, ``schedinfo
  cpu_shares`` live and config, ``metadata`` for the tier, and
  ``dumpxml --inactive`` + ``define`` for the partition.

Between runs every guest is put back (persistent XML and live pins) in this
process, untimed. Rerun with
``python tests/bench/bench_shared_execution_pool.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'tools', 'fastvirt'))
sys.path.insert(0, HERE)

import fastvirt  # noqa: E402  pylint: disable=wrong-import-position
from bench_libvirt_pin import collection_root  # noqa: E402  pylint: disable=wrong-import-position

POOLS = {'host_reserved': '0', 'host_housekeeping': '0', 'host_emulator': '0', 'guest_domain': '1'}
NS = 'https://kvmlab.invalid/host_resources/1'
SHARES = {'gold': 512, 'silver': 333, 'bronze': 167}

PLAYBOOK = '''- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: kvmlab.host_resources.shared_execution_pool
        tasks_from: apply
'''


def shape():
    with open(os.path.join(REPO, 'vars', 'guest_tiers_example.yml')) as handle:
        return yaml.safe_load(handle)['kvmlab_guests']


def run_role(workdir, coll_root, variables):
    path = os.path.join(workdir, 'vars.json')
    with open(path, 'w') as handle:
        json.dump(variables, handle)
    playbook = os.path.join(workdir, 'apply.yml')
    with open(playbook, 'w') as handle:
        handle.write(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=coll_root)
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
               '-e', '@%s' % path, playbook]
    start = time.perf_counter()
    out = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, check=False)
    elapsed = time.perf_counter() - start
    recap = re.search(r'^localhost\s+:.*changed=(\d+).*failed=(\d+)', out.stdout, re.M)
    if out.returncode or not recap or recap.group(2) != '0':
        raise SystemExit('the role failed:\n%s' % out.stdout[-4000:])
    return elapsed, int(recap.group(1))


def run_virsh_loop(uri, guests):
    """The same changes with one virsh process per call; returns (seconds, processes)."""
    virsh = shutil.which('virsh')
    base = [virsh, '-q', '-c', uri]
    processes = 0
    start = time.perf_counter()

    def call(*args, **kwargs):
        proc = subprocess.run(base + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, check=False, **kwargs)
        if proc.returncode:
            raise SystemExit('virsh %s failed: %s' % (' '.join(args), proc.stdout))
        return proc.stdout

    for guest in guests:
        name, tier = guest['name'], guest['tier']
        for vcpu in range(guest['vcpus']):
            call('vcpupin', name, str(vcpu), POOLS['guest_domain'], '--live', '--config')
            processes += 1
        call('emulatorpin', name, POOLS['host_emulator'], '--live', '--config')
        processes += 1
        for ident in range(1, guest.get('iothreads', 0) + 1):
            call('iothreadpin', name, str(ident), POOLS['host_emulator'], '--live', '--config')
            processes += 1
        for flag in ('--live', '--config'):
            call('schedinfo', name, '--set', 'cpu_shares=%d' % SHARES[tier], flag)
            processes += 1
        call('metadata', name, NS, '--key', 'kvmlab', '--set', '<guest><tier>%s</tier></guest>' % tier, '--config')
        xml = call('dumpxml', '--inactive', name)
        xml = xml.replace('</name>', '</name>\n  <resource><partition>/machine/%s</partition></resource>' % tier, 1)
        path = os.path.join(tempfile.gettempdir(), 'bench-sep-%d.xml' % os.getpid())
        with open(path, 'w') as handle:
            handle.write(xml)
        call('define', path)
        os.unlink(path)
        processes += 3
    return time.perf_counter() - start, processes


def reset(virt, originals):
    """Every guest back to its first XML and to all CPUs live (untimed)."""
    conn = virt.connect()
    count = conn.getCPUMap()[0]
    everything = tuple([True] * count)
    for name, xml in originals.items():
        dom = conn.lookupByName(name)
        conn.defineXML(xml)
        for vcpu in range(dom.vcpusFlags(1)):
            dom.pinVcpuFlags(vcpu, everything, 1)
        dom.pinEmulator(everything, 1)
        for ident, _cpumap in dom.ioThreadInfo(1):
            dom.pinIOThread(ident, everything, 1)
        dom.setSchedulerParametersFlags({'cpu_shares': 1024}, 1)


def check_applied(virt, guests):
    for guest in guests:
        threads = fastvirt.read_threads(virt.guest_pid(guest['name']))
        want = dict((n, POOLS['guest_domain']) for n in range(guest['vcpus']))
        if threads['vcpus'] != want or threads['emulator'] != {POOLS['host_emulator']}:
            raise SystemExit('%s: live affinity is %s after apply' % (guest['name'], threads))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=3, help='measured runs per method (default 3)')
    args = parser.parse_args(argv)
    missing = fastvirt.missing_tools() + ([] if shutil.which('virsh') else ['virsh'])
    if missing:
        print('bench_shared_execution_pool: skipped, missing %s' % ', '.join(missing))
        return 0
    with open('/sys/devices/system/cpu/online') as handle:
        online = handle.read().strip()
    if online != '0-1':
        print('bench_shared_execution_pool: skipped, needs exactly CPUs 0-1 online (have %s)' % online)
        return 0

    base = fastvirt.default_base()
    os.makedirs(base, exist_ok=True)
    fastvirt.reap_stale(base)
    state_dir = tempfile.mkdtemp(prefix='b', dir=base)
    with open(os.path.join(state_dir, 'owner.pid'), 'w') as handle:
        handle.write('%d\n' % os.getpid())
    coll_root, coll_tmp = collection_root()
    virt = fastvirt.FastVirt(state_dir, cache_dir=os.path.join(base, 'cache'))
    token = os.path.basename(state_dir)[1:7]
    guests = [dict(g, name='%s-%s' % (token, g['name'])) for g in shape()]
    try:
        start = time.perf_counter()
        virt.up()
        for guest in guests:
            virt.define_guest(guest['name'], vcpus=guest['vcpus'], iothreads=guest.get('iothreads', 0), memory=16)
        conn = virt.connect()
        originals = dict((g['name'], conn.lookupByName(g['name']).XMLDesc(2)) for g in guests)
        total = sum(g['vcpus'] for g in guests)
        print('setup: libvirtd + %d guests, %d vCPUs, %d IOThreads started in %.1f s'
              % (len(guests), total, sum(g.get('iothreads', 0) for g in guests), time.perf_counter() - start))
        variables = {'ansible_python_interpreter': sys.executable, 'shared_execution_pool_uri': virt.uri,
                     'shared_execution_pool_pid_dir': virt.path('run', 'qemu'),
                     'shared_execution_pool_systemd': False, 'shared_execution_pool_pools': POOLS,
                     'shared_execution_pool_guests': [dict((k, g[k]) for k in ('name', 'tier', 'vcpus', 'iothreads')
                                                           if k in g) for g in guests]}
        role_times, virsh_times = [], []
        processes = 0
        for round_no in range(args.rounds):
            snapshots = os.path.join(state_dir, 'snapshots-%d' % round_no)
            variables['shared_execution_pool_snapshot_dir'] = snapshots
            elapsed, changed = run_role(state_dir, coll_root, variables)
            if not changed:
                raise SystemExit('round %d: the role changed nothing' % round_no)
            check_applied(virt, guests)
            role_times.append(elapsed)
            reset(virt, originals)
            elapsed, processes = run_virsh_loop(virt.uri, guests)
            check_applied(virt, guests)
            virsh_times.append(elapsed)
            reset(virt, originals)
        # for reference: a second apply with nothing to change
        variables['shared_execution_pool_snapshot_dir'] = os.path.join(state_dir, 'snapshots-idle')
        run_role(state_dir, coll_root, variables)
        idle, changed = run_role(state_dir, coll_root, variables)
        if changed:
            raise SystemExit('a second apply reported changed=%d' % changed)

        role_median, virsh_median = statistics.median(role_times), statistics.median(virsh_times)
        print('guests: %d, vCPUs: %d' % (len(guests), total))
        print('role apply, one ansible-playbook process: median %.2f s (runs: %s)'
              % (role_median, ', '.join('%.2f' % t for t in role_times)))
        print('virsh loop, %d processes:               median %.2f s (runs: %s)'
              % (processes, virsh_median, ', '.join('%.2f' % t for t in virsh_times)))
        print('ratio virsh / role: %.1fx (issue 12 asks for at least 2x)' % (virsh_median / role_median))
        print('role apply with nothing to change: %.2f s' % idle)
    finally:
        virt.down()
        shutil.rmtree(state_dir, ignore_errors=True)
        if coll_tmp:
            shutil.rmtree(coll_tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
