# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark (not a test): libvirt_pin in one call vs a virsh loop.

Seed 001's guest shape on the private libvirtd of tools/fastvirt: 13 guests,
122 vCPUs (3x8, 3x16, 3x12, 1x2, 1x4, 1x4, 1x4), idle halt kernel, 16 MiB
each. Times:

- one ``libvirt_pin`` run (a fresh Python process running the module file
  with a JSON args file, as Ansible would) pinning every vCPU and emulator
  of all 13 guests, live and persistent;
- the same through ``virsh``: one ``vcpupin --live --config`` per vCPU and
  one ``emulatorpin --live --config`` per guest.

The masks alternate between "0" and "0-1" (this host has 2 CPUs) so every
measured run really changes every thread. The guests and the daemon are
removed at the end, also when the run fails. Rerun with
``python tests/bench/bench_libvirt_pin.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'tools', 'fastvirt'))

import fastvirt  # noqa: E402  pylint: disable=wrong-import-position

# (name, vCPUs, IOThreads), as in seed 001's capacity table
SHAPE = (
    [('ocp-master-%02d' % n, 8, 0) for n in (1, 2, 3)]
    + [('ocp-infra-%02d' % n, 16, 1) for n in (1, 2, 3)]
    + [('ocp-worker-%02d' % n, 12, 0) for n in (1, 2, 3)]
    + [('idm-01', 2, 0), ('mirror-registry', 4, 1), ('bastion-01', 4, 0), ('ad-01', 4, 0)]
)
MASKS = ('0', '0-1')


def collection_root():
    """A directory holding ansible_collections/kvmlab/host_resources -> this checkout."""
    linked = os.path.join(REPO, '.build', 'collections')
    if os.path.realpath(os.path.join(linked, 'ansible_collections', 'kvmlab', 'host_resources')) == REPO:
        return linked, None
    root = tempfile.mkdtemp(prefix='kvmlab-coll-')
    os.makedirs(os.path.join(root, 'ansible_collections', 'kvmlab'))
    os.symlink(REPO, os.path.join(root, 'ansible_collections', 'kvmlab', 'host_resources'))
    return root, root


def run_module_process(uri, mask, names, coll_root, workdir):
    """One libvirt_pin run in a fresh interpreter; returns (seconds, result)."""
    args = {'ANSIBLE_MODULE_ARGS': {'uri': uri, 'vcpu_cpuset': mask, 'emulator_cpuset': mask,
                                    'domains': [{'name': name} for name in names]}}
    path = os.path.join(workdir, 'args.json')
    with open(path, 'w') as handle:
        json.dump(args, handle)
    env = dict(os.environ, PYTHONPATH=coll_root)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'plugins', 'modules', 'libvirt_pin.py'), path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False,
                          universal_newlines=True)
    elapsed = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit('libvirt_pin printed no JSON (rc %d): %s %s' % (proc.returncode, proc.stdout, proc.stderr))
    if result.get('failed'):
        raise SystemExit('libvirt_pin failed: %s' % result.get('msg'))
    return elapsed, result


def run_virsh_loop(uri, mask, guests):
    """One virsh process per vCPU and per emulator; returns seconds."""
    virsh = shutil.which('virsh')
    commands = []
    for name, vcpus, _iothreads in guests:
        commands += [[virsh, '-q', '-c', uri, 'vcpupin', name, str(n), mask, '--live', '--config']
                     for n in range(vcpus)]
        commands.append([virsh, '-q', '-c', uri, 'emulatorpin', name, mask, '--live', '--config'])
    start = time.perf_counter()
    for cmd in commands:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
                              universal_newlines=True)
        if proc.returncode:
            raise SystemExit('%s failed: %s' % (' '.join(cmd), proc.stdout))
    return time.perf_counter() - start, len(commands)


def check_live(virt, guests, mask):
    """Every vCPU and emulator thread of every guest has the mask (read from /proc)."""
    for name, vcpus, _iothreads in guests:
        threads = fastvirt.read_threads(virt.guest_pid(name))
        if threads['vcpus'] != dict((n, mask) for n in range(vcpus)) or threads['emulator'] != {mask}:
            raise SystemExit('%s: live affinity is %s, expected %s everywhere' % (name, threads, mask))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rounds', type=int, default=3, help='measured runs per method (default 3)')
    args = parser.parse_args(argv)
    missing = fastvirt.missing_tools() + ([] if shutil.which('virsh') else ['virsh'])
    if missing:
        print('bench_libvirt_pin: skipped, missing %s' % ', '.join(missing))
        return 0
    with open('/sys/devices/system/cpu/online') as handle:
        online = handle.read().strip()
    if not online.startswith('0-'):
        print('bench_libvirt_pin: skipped, needs CPUs 0 and 1 online (have %s)' % online)
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
    guests = [('%s-%s' % (token, name), vcpus, iothreads) for name, vcpus, iothreads in SHAPE]
    names = [guest[0] for guest in guests]
    try:
        start = time.perf_counter()
        virt.up()
        for name, vcpus, iothreads in guests:
            virt.define_guest(name, vcpus=vcpus, iothreads=iothreads, memory=16)
        setup = time.perf_counter() - start
        total_vcpus = sum(guest[1] for guest in guests)
        print('setup: libvirtd + %d guests, %d vCPUs started in %.1f s' % (len(guests), total_vcpus, setup))

        module_times, virsh_times = [], []
        calls = 0
        for round_no in range(args.rounds):
            # the module moves everything to "0", virsh back to "0-1": both really change every thread
            elapsed, result = run_module_process(virt.uri, MASKS[0], names, coll_root, state_dir)
            changes = sum(len(d['changes']) for d in result['domains'])
            if not result['changed'] or changes != 2 * (total_vcpus + len(guests)):
                raise SystemExit('round %d: libvirt_pin reported %d changes, expected %d'
                                 % (round_no, changes, 2 * (total_vcpus + len(guests))))
            check_live(virt, guests, MASKS[0])
            module_times.append(elapsed)
            elapsed, calls = run_virsh_loop(virt.uri, MASKS[1], guests)
            check_live(virt, guests, MASKS[1])
            virsh_times.append(elapsed)
        # idempotent run for reference: reads all 13 guests, changes nothing
        run_module_process(virt.uri, MASKS[1], names, coll_root, state_dir)
        idle, result = run_module_process(virt.uri, MASKS[1], names, coll_root, state_dir)
        if result['changed']:
            raise SystemExit('an unchanged run reported changed')

        module_median, virsh_median = statistics.median(module_times), statistics.median(virsh_times)
        print('guests: %d, vCPUs: %d, threads pinned per run: %d (live + config)'
              % (len(guests), total_vcpus, total_vcpus + len(guests)))
        print('libvirt_pin, one module process: median %.2f s (runs: %s)'
              % (module_median, ', '.join('%.2f' % t for t in module_times)))
        print('virsh loop, %d processes:       median %.2f s (runs: %s)'
              % (calls, virsh_median, ', '.join('%.2f' % t for t in virsh_times)))
        print('ratio virsh / libvirt_pin: %.1fx' % (virsh_median / module_median))
        print('libvirt_pin with nothing to change (read all, compare): %.2f s' % idle)
    finally:
        virt.down()
        shutil.rmtree(state_dir, ignore_errors=True)
        if coll_tmp:
            shutil.rmtree(coll_tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
