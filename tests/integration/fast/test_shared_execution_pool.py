# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared_execution_pool role against real guests on the private libvirtd.

The role's entry points run through ansible-playbook on localhost with
``shared_execution_pool_systemd: false`` (the private libvirtd has no
systemd: scope properties are tested on the lab host by Molecule). The role
manages every guest of the connection (the private daemon holds only this
test's guests). The effect is read back independently: live affinity from
/proc/<qemu pid>/task/*/status, cpu.shares from the guest's cgroup, the
persistent config (pins, shares, partition, kvmlab tier metadata) from
libvirt's XML file in the daemon's state directory.

Pools on a 2-CPU host: CPU 0 is host_reserved = host_emulator, CPU 1 the
guest pool; the tests skip where those pools do not validate.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from fastvirt import read_threads

from ansible_collections.kvmlab.host_resources.plugins.module_utils._pools import PoolError, cpu_pools
from ansible_collections.kvmlab.host_resources.plugins.module_utils._topology import read_topology

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NS = 'https://kvmlab.invalid/host_resources/1'
POOLS = {'host_reserved': '0', 'host_housekeeping': '0', 'host_emulator': '0', 'guest_domain': '1'}
ALL = '0-1'


@pytest.fixture(autouse=True)
def _two_cpu_pools(fastvirt):  # pylint: disable=unused-argument
    try:
        topology = read_topology()
        cpu_pools(topology, pools=POOLS)
    except (PoolError, Exception) as exc:  # pylint: disable=broad-except
        pytest.skip('pools %s do not fit this host: %s' % (POOLS, exc))
    if topology['cpus']['online'] != ALL:
        pytest.skip('these tests need exactly CPUs 0-1 online, this host has %s' % topology['cpus']['online'])


@pytest.fixture
def role(fastvirt, tmp_path):
    """Runs one entry point of the role; returns (recap changed count, facts the entry point set, output)."""
    playbook = tmp_path / 'play.yml'
    playbook.write_text(
        '- hosts: localhost\n'
        '  connection: local\n'
        '  gather_facts: false\n'
        '  tasks:\n'
        '    - ansible.builtin.include_role:\n'
        '        name: kvmlab.host_resources.shared_execution_pool\n'
        '        tasks_from: "{{ entry }}"\n'
        '    - ansible.builtin.copy:\n'
        '        dest: "{{ facts_out }}"\n'
        '        content: "{{ {\'status\': shared_execution_pool_status | default(none),\n'
        '                      \'contention\': shared_execution_pool_contention_status | default(none),\n'
        '                      \'result\': shared_execution_pool_result | default(none)} | to_json }}"\n'
        '        mode: "0600"\n'
        '      check_mode: false\n'
        '      changed_when: false\n')
    facts_out = tmp_path / 'facts.json'

    def run(entry, guests, check=False, fail=False, **extra):
        variables = dict(entry=entry, facts_out=str(facts_out), ansible_python_interpreter=sys.executable,
                         shared_execution_pool_uri=fastvirt.uri,
                         shared_execution_pool_pid_dir=fastvirt.path('run', 'qemu'),
                         shared_execution_pool_systemd=False,
                         shared_execution_pool_pools=POOLS,
                         shared_execution_pool_guests=guests,
                         shared_execution_pool_snapshot_dir=str(tmp_path / 'snapshots'),
                         # the CI host is not a managed host: install nothing, lock a private file
                         kvmlab_install_packages=False,
                         kvmlab_host_lock_path=str(tmp_path / 'host.lock'))
        variables.update(extra)
        (tmp_path / 'vars.json').write_text(json.dumps(variables))
        command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,',
                   '-e', '@%s' % (tmp_path / 'vars.json'), str(playbook)]
        if check:
            command.append('--check')
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
        out = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, timeout=600, check=False)
        if fail:
            assert out.returncode != 0, out.stdout
            return None, None, out.stdout
        assert out.returncode == 0, out.stdout[-6000:]
        recap = re.search(r'^localhost\s+:.*changed=(\d+)', out.stdout, re.M)
        return int(recap.group(1)), json.loads(facts_out.read_text()), out.stdout

    return run


def live(virt, name):
    return read_threads(virt.guest_pid(name))


def live_shares(virt, name):
    with open('/proc/%d/cgroup' % virt.guest_pid(name)) as handle:
        for line in handle:
            controllers, path = line.rstrip('\n').split(':', 2)[1:]
            if 'cpu' in controllers.split(','):
                domain_dir = os.path.dirname(path) if path.endswith('/emulator') else path
                with open('/sys/fs/cgroup/cpu%s/cpu.shares' % domain_dir) as shares:
                    return int(shares.read())
    raise AssertionError('no cpu cgroup for %s' % name)


def config_xml(virt, name):
    with open(virt.path('etc', 'libvirt', 'qemu', '%s.xml' % name), 'rb') as handle:
        return handle.read()


def tuning(virt, name):
    """vcpupin/emulatorpin/iothreadpin/shares/partition lines of the persistent XML file."""
    text = config_xml(virt, name).decode()
    return sorted(line.strip() for line in text.splitlines()
                  if re.search(r'<(vcpupin|emulatorpin|iothreadpin|shares|partition)', line))


def test_apply_check_idempotence_status_and_rollback(fastvirt, guests, role, tmp_path):
    gold = guests('gold', vcpus=2, iothreads=1)
    silver = guests('silver', vcpus=2)
    spec = [{'name': gold, 'tier': 'gold'}, {'name': silver, 'tier': 'silver'}]
    pristine = {name: (live(fastvirt, name), config_xml(fastvirt, name), live_shares(fastvirt, name))
                for name in (gold, silver)}
    assert pristine[gold][0]['vcpus'] == {0: ALL, 1: ALL}

    changed, facts, _ = role('status', spec)
    assert changed == 0
    assert facts['status']['verdict'] == 'stock', facts['status']['summary']

    # --check predicts changes and changes nothing
    changed, _, _ = role('apply', spec, check=True)
    assert changed > 0
    for name in (gold, silver):
        assert (live(fastvirt, name), config_xml(fastvirt, name), live_shares(fastvirt, name)) == pristine[name]
    assert not (tmp_path / 'snapshots').exists()

    # apply: vCPUs on guest_domain, emulator and IOThreads on host_emulator, tier shares live and persistent
    changed, facts, _ = role('apply', spec)
    assert changed > 0
    assert [g['pending'] for g in facts['result']['guests']] == [['partition'], ['partition']]
    threads = live(fastvirt, gold)
    assert threads == {'vcpus': {0: '1', 1: '1'}, 'iothreads': {1: '0'}, 'emulator': {'0'}}
    assert live(fastvirt, silver) == {'vcpus': {0: '1', 1: '1'}, 'iothreads': {}, 'emulator': {'0'}}
    assert live_shares(fastvirt, gold) == 512 and live_shares(fastvirt, silver) == 333
    assert tuning(fastvirt, gold) == sorted([
        "<vcpupin vcpu='0' cpuset='1'/>", "<vcpupin vcpu='1' cpuset='1'/>", "<emulatorpin cpuset='0'/>",
        "<iothreadpin iothread='1' cpuset='0'/>", '<shares>512</shares>', '<partition>/machine/gold</partition>'])
    assert '<partition>/machine/silver</partition>' in tuning(fastvirt, silver)
    # the tiers the inventory gave travel with the guests
    assert tier_metadata(fastvirt, gold) == 'gold' and tier_metadata(fastvirt, silver) == 'silver'
    snapshot = tmp_path / 'snapshots' / 'shared-execution-pool.json'
    assert oct(snapshot.stat().st_mode & 0o777) == '0o600'
    snapshot_text = snapshot.read_text()

    # a second apply changes nothing and keeps the first snapshot
    changed, _, _ = role('apply', spec)
    assert changed == 0
    assert snapshot.read_text() == snapshot_text

    changed, facts, _ = role('status', spec)
    assert facts['status']['verdict'] == 'shared execution pool', facts['status']['summary']
    changed, facts, _ = role('contention_status', spec)
    assert facts['contention']['verdict'] == 'weighted', facts['contention']['summary']

    # a hand-made mixed host: one vCPU of the silver guest back on every CPU
    conn = fastvirt.connect()
    try:
        conn.lookupByName(silver).pinVcpuFlags(1, (True, True), 1)
    finally:
        conn.close()
    changed, facts, _ = role('status', spec)
    assert facts['status']['verdict'] == 'mixed'
    assert facts['status']['mixed'] == ['%s vCPU threads' % silver]

    # rollback: back to the snapshot, byte for byte in the persistent XML, which is then removed
    changed, _, _ = role('rollback', spec)
    assert changed > 0
    for name in (gold, silver):
        assert live(fastvirt, name) == pristine[name][0]
        assert live_shares(fastvirt, name) == pristine[name][2]
        assert tuning(fastvirt, name) == []
        assert config_xml(fastvirt, name) == pristine[name][1]
    assert not snapshot.exists()
    changed, facts, _ = role('status', spec)
    assert facts['status']['verdict'] == 'stock', facts['status']['summary']
    _, _, out = role('rollback', spec, fail=True)
    assert 'nothing to roll back' in out


def tier_metadata(virt, name):
    """The tier in the kvmlab metadata element of the persistent XML file, or None."""
    node = ET.fromstring(config_xml(virt, name)).find('metadata/{%s}guest/{%s}tier' % (NS, NS))
    return None if node is None else node.text


def set_tier_metadata(virt, name, tier):
    conn = virt.connect()
    conn.lookupByName(name).setMetadata(2, '<guest><tier>%s</tier></guest>' % tier, 'kvmlab', NS, 2)


def test_every_guest_of_the_connection_inventory_metadata_default_exclude(fastvirt, guests, role):
    listed = guests('listed', vcpus=1)
    outside = guests('outside', vcpus=1)
    tagged = guests('tagged', vcpus=2, start=False)
    skipped = guests('skipped', vcpus=1)
    set_tier_metadata(fastvirt, tagged, 'silver')
    spec = [{'name': listed, 'tier': 'gold'}]
    extra = {'shared_execution_pool_exclude': [skipped]}
    names = (listed, outside, tagged, skipped)
    pristine = dict((name, config_xml(fastvirt, name)) for name in names)
    pristine_live = dict((name, (live(fastvirt, name), live_shares(fastvirt, name)))
                         for name in (listed, outside, skipped))

    _, facts, _ = role('status', spec, **extra)
    sources = dict((g['name'], (g['tier'], g['tier_source'])) for g in facts['status']['guests'])
    assert sources == {listed: ('gold', 'inventory'), outside: ('bronze', 'default'), tagged: ('silver', 'metadata')}
    assert facts['status']['excluded'] == [skipped]
    assert facts['status']['verdict'] == 'stock', facts['status']['summary']

    changed, _, _ = role('apply', spec, check=True, **extra)
    assert changed > 0
    assert dict((name, config_xml(fastvirt, name)) for name in names) == pristine

    changed, facts, _ = role('apply', spec, **extra)
    assert changed > 0
    assert sorted(g['name'] for g in facts['result']['guests']) == sorted([listed, outside, tagged])
    # outside the inventory: the default tier, live and persistent, no metadata written for it
    assert live(fastvirt, outside) == {'vcpus': {0: '1'}, 'iothreads': {}, 'emulator': {'0'}}
    assert live_shares(fastvirt, outside) == 167
    assert tuning(fastvirt, outside) == sorted([
        "<vcpupin vcpu='0' cpuset='1'/>", "<emulatorpin cpuset='0'/>", '<shares>167</shares>',
        '<partition>/machine/bronze</partition>'])
    assert tier_metadata(fastvirt, outside) is None
    # the tier in its own metadata (a stopped guest: persistent only), metadata kept
    assert tuning(fastvirt, tagged) == sorted([
        "<vcpupin vcpu='0' cpuset='1'/>", "<vcpupin vcpu='1' cpuset='1'/>", "<emulatorpin cpuset='0'/>",
        '<shares>333</shares>', '<partition>/machine/silver</partition>'])
    assert tier_metadata(fastvirt, tagged) == 'silver'
    assert tier_metadata(fastvirt, listed) == 'gold' and live_shares(fastvirt, listed) == 512
    # excluded: untouched
    assert config_xml(fastvirt, skipped) == pristine[skipped]
    assert (live(fastvirt, skipped), live_shares(fastvirt, skipped)) == pristine_live[skipped]

    changed, _, _ = role('apply', spec, **extra)
    assert changed == 0
    _, facts, _ = role('status', spec, **extra)
    assert facts['status']['verdict'] == 'shared execution pool', facts['status']['summary']
    items = dict((item['name'], item) for item in facts['status']['items'])
    assert items['%s tier' % outside]['live'] == 'bronze from default'
    assert items['%s tier' % tagged]['live'] == 'silver from metadata'
    assert not [item for item in facts['status']['items'] if item['guest'] == skipped and item['class'] != 'info']

    # a guest defined after apply, outside the inventory: its vCPUs run on the reserved CPU too, the layer is mixed
    late = guests('late', vcpus=1)
    _, facts, _ = role('status', spec, **extra)
    assert facts['status']['verdict'] == 'mixed'
    assert '%s vCPU threads' % late in facts['status']['mixed']
    assert 'can run on reserved CPUs 0' in dict((i['name'], i) for i in facts['status']['items'])[
        '%s vCPU threads' % late]['live']

    changed, facts, _ = role('rollback', spec, **extra)
    assert changed > 0
    for name in names:
        assert config_xml(fastvirt, name) == pristine[name], name
    for name in (listed, outside, skipped):
        assert (live(fastvirt, name), live_shares(fastvirt, name)) == pristine_live[name], name
    assert tier_metadata(fastvirt, listed) is None and tier_metadata(fastvirt, tagged) == 'silver'


def test_stopped_guest_gets_the_persistent_changes_live_ones_pending(fastvirt, guests, role):
    running = guests('on', vcpus=1)
    stopped = guests('off', vcpus=2, start=False)
    spec = [{'name': running, 'tier': 'bronze'}, {'name': stopped, 'tier': 'gold', 'emulator_policy': 'float'}]
    changed, facts, _ = role('apply', spec)
    assert changed > 0
    result = dict((g['name'], g) for g in facts['result']['guests'])
    assert result[stopped]['running'] is False
    assert result[stopped]['pending'][0] == 'live placement and weight (not running)'
    assert 'partition' in result[stopped]['pending']
    # float: the emulator runs with the guest's vCPUs
    assert tuning(fastvirt, stopped) == sorted([
        "<vcpupin vcpu='0' cpuset='1'/>", "<vcpupin vcpu='1' cpuset='1'/>", "<emulatorpin cpuset='1'/>",
        '<shares>512</shares>', '<partition>/machine/gold</partition>'])
    assert fastvirt.guest_pid(stopped) is None
    _, facts, _ = role('status', spec)
    items = dict((item['name'], item) for item in facts['status']['items'])
    assert items['%s vCPU threads' % stopped]['state'] == 'info'
    assert items['%s persistent XML' % stopped]['state'] == 'applied'
    assert facts['status']['verdict'] == 'shared execution pool', facts['status']['summary']
    role('rollback', spec)
    assert tuning(fastvirt, stopped) == [] and tuning(fastvirt, running) == []


def test_contention_apply_and_rollback_touch_the_weights_only(fastvirt, guests, role):
    name = guests('weights', vcpus=1)
    spec = [{'name': name, 'tier': 'silver'}]
    before = live(fastvirt, name)
    shares = live_shares(fastvirt, name)
    role('contention_apply', spec)
    assert live(fastvirt, name) == before  # no pinning
    assert live_shares(fastvirt, name) == 333
    assert tuning(fastvirt, name) == ['<partition>/machine/silver</partition>', '<shares>333</shares>']
    _, facts, _ = role('contention_status', spec)
    assert facts['contention']['verdict'] == 'weighted'
    role('contention_rollback', spec)
    assert tuning(fastvirt, name) == []
    assert live_shares(fastvirt, name) == shares


def test_isolate_fails_clearly_when_host_emulator_runs_out(fastvirt, guests, role):
    first = guests('iso1', vcpus=1)
    second = guests('iso2', vcpus=1)
    spec = [{'name': first, 'tier': 'gold'}, {'name': second, 'tier': 'gold'}]
    before = config_xml(fastvirt, first)
    _, _, out = role('apply', spec, fail=True, shared_execution_pool_emulator_policy='isolate')
    assert 'isolate needs one host_emulator CPU per guest: 2 guests' in out
    assert config_xml(fastvirt, first) == before
