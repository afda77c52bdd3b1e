# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_pin against real guests on the private libvirtd.

The module runs through its main(); the effect is read back independently:
live affinity from /proc/<qemu pid>/task/*/status, cpu.shares from the
guest's cgroup, the persistent config from libvirt's XML file in the
daemon's state directory.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from fastvirt import read_threads


def host_cpus():
    with open('/sys/devices/system/cpu/online') as handle:
        return handle.read().strip()


def _online():
    cpus = set()
    for part in host_cpus().split(','):
        first, _sep, last = part.partition('-')
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


ALL = host_cpus()  # what an unpinned thread gets: "0-1" on the CI machine
OUTSIDE = str(64 if 64 not in _online() else max(_online()) + 1)  # a CPU this host does not have


@pytest.fixture(autouse=True)
def _cpus_0_and_1(fastvirt):  # pylint: disable=unused-argument
    if not {0, 1} <= _online():
        pytest.skip('these tests pin to CPUs 0 and 1; this host has %s' % host_cpus())


# -- independent readers ------------------------------------------------------

def live(virt, name):
    pid = virt.guest_pid(name)
    assert pid, 'guest %s has no QEMU process' % name
    return read_threads(pid)


def live_shares(virt, name):
    pid = virt.guest_pid(name)
    with open('/proc/%d/cgroup' % pid) as handle:
        for line in handle:
            controllers, path = line.rstrip('\n').split(':', 2)[1:]
            if 'cpu' in controllers.split(','):
                domain_dir = os.path.dirname(path) if path.endswith('/emulator') else path
                with open('/sys/fs/cgroup/cpu%s/cpu.shares' % domain_dir) as shares:
                    return int(shares.read())
    raise AssertionError('no cpu cgroup for %s' % name)


def config_file(virt, name):
    return virt.path('etc', 'libvirt', 'qemu', '%s.xml' % name)


def config(virt, name):
    """What the persistent XML file says, parsed here, not by the module."""
    root = ET.parse(config_file(virt, name)).getroot()
    tune = root.find('cputune')
    result = {'vcpupin': {}, 'emulatorpin': None, 'iothreadpin': {}, 'shares': None, 'partition': None}
    if tune is not None:
        for node in tune.findall('vcpupin'):
            result['vcpupin'][int(node.get('vcpu'))] = node.get('cpuset')
        for node in tune.findall('iothreadpin'):
            result['iothreadpin'][int(node.get('iothread'))] = node.get('cpuset')
        if tune.find('emulatorpin') is not None:
            result['emulatorpin'] = tune.find('emulatorpin').get('cpuset')
        if tune.find('shares') is not None:
            result['shares'] = int(tune.find('shares').text)
    part = root.find('resource/partition')
    if part is not None:
        result['partition'] = part.text
    return result


def read_bytes(path):
    with open(path, 'rb') as handle:
        return handle.read()


def assert_ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def assert_failed(result, *words):
    assert result.get('failed') is True, result
    assert 'Traceback' not in result['msg'] and 'exception' not in result, result
    for word in words:
        assert word in result['msg'], result['msg']
    return result['msg']


# -- the contract -------------------------------------------------------------

def test_apply_check_idempotence_and_restore(fastvirt, guests, pin):
    name = guests('contract', vcpus=2, iothreads=1)
    pristine_live = live(fastvirt, name)
    pristine_config = config(fastvirt, name)
    assert pristine_live['vcpus'] == {0: ALL, 1: ALL}
    assert pristine_config == {'vcpupin': {}, 'emulatorpin': None, 'iothreadpin': {}, 'shares': None,
                               'partition': None}
    pristine_shares = live_shares(fastvirt, name)

    snapshot = assert_ok(pin(state='query', domains=[{'name': name}]))
    assert snapshot['changed'] is False
    assert [(e['name'], e['scope']) for e in snapshot['snapshot']] == [(name, 'config'), (name, 'live')]

    wanted = dict(domains=[{'name': name, 'vcpu_cpuset': '0', 'emulator_cpuset': '1', 'iothread_cpuset': '1',
                            'cpu_shares': 512, 'partition': '/machine/gold'}])

    # check mode: reports the change, changes nothing
    xml_before = read_bytes(config_file(fastvirt, name))
    checked = assert_ok(pin(check_mode=True, diff=True, **wanted))
    assert checked['changed'] is True
    assert checked['domains'][0]['after']['live']['vcpu_pins'] == {'0': '0', '1': '0'}
    assert checked['domains'][0]['after']['config']['partition'] == '/machine/gold'
    assert checked['diff'][0]['before_header'] == name
    assert live(fastvirt, name) == pristine_live
    assert read_bytes(config_file(fastvirt, name)) == xml_before
    assert live_shares(fastvirt, name) == pristine_shares

    # real run
    applied = assert_ok(pin(diff=True, **wanted))
    assert applied['changed'] is True
    dom = applied['domains'][0]
    assert dom['scopes'] == ['live', 'config']
    assert dom['pending'] == ['partition']  # moves at the next start
    assert {(c['scope'], c['item']) for c in dom['changes']} >= {
        ('live', 'vcpu_pins.0'), ('live', 'vcpu_pins.1'), ('live', 'emulator_cpuset'), ('live', 'iothread_pins.1'),
        ('live', 'cpu_shares'), ('config', 'partition'), ('config', 'cpu_shares')}
    assert dom['after'] == checked['domains'][0]['after']  # check mode predicted it
    threads = live(fastvirt, name)
    assert threads['vcpus'] == {0: '0', 1: '0'}
    assert threads['iothreads'] == {1: '1'}
    assert threads['emulator'] == {'1'}
    assert live_shares(fastvirt, name) == 512
    assert config(fastvirt, name) == {'vcpupin': {0: '0', 1: '0'}, 'emulatorpin': '1', 'iothreadpin': {1: '1'},
                                      'shares': 512, 'partition': '/machine/gold'}

    # second run: nothing to do
    again = assert_ok(pin(**wanted))
    assert again['changed'] is False
    assert again['domains'][0]['changes'] == []
    assert again['domains'][0]['pending'] == ['partition']  # still not live until a restart

    # restore from the snapshot: the exact state before, unpinned included
    restored = assert_ok(pin(domains=snapshot['snapshot']))
    assert restored['changed'] is True
    assert live(fastvirt, name) == pristine_live
    assert live_shares(fastvirt, name) == pristine_shares
    assert config(fastvirt, name) == pristine_config
    requery = assert_ok(pin(state='query', domains=[{'name': name}]))
    assert requery['snapshot'] == snapshot['snapshot']
    assert assert_ok(pin(domains=snapshot['snapshot']))['changed'] is False


def test_per_vcpu_and_per_iothread_pins(fastvirt, guests, pin):
    name = guests('each', vcpus=4, iothreads=2)
    args = dict(domains=[{'name': name, 'vcpu_cpuset': '1', 'vcpu_pins': {0: '0', '3': ALL},
                          'iothread_pins': {2: '0'}}])
    result = assert_ok(pin(**args))
    assert result['changed'] is True
    threads = live(fastvirt, name)
    assert threads['vcpus'] == {0: '0', 1: '1', 2: '1', 3: ALL}
    assert threads['iothreads'] == {1: ALL, 2: '0'}
    cfg = config(fastvirt, name)
    # vCPU 3 wants what it already gets unpinned: no element is written for it
    assert cfg['vcpupin'] == {0: '0', 1: '1', 2: '1'}
    assert cfg['iothreadpin'] == {2: '0'}
    assert assert_ok(pin(**args))['changed'] is False


def test_unpinned_removes_config_pins_and_pins_live_to_all(fastvirt, guests, pin):
    name = guests('unpin', vcpus=2)
    assert_ok(pin(domains=[{'name': name, 'vcpu_cpuset': '0', 'emulator_cpuset': '0'}]))
    assert config(fastvirt, name)['vcpupin'] == {0: '0', 1: '0'}
    result = assert_ok(pin(domains=[{'name': name, 'vcpu_cpuset': 'unpinned', 'emulator_cpuset': 'unpinned'}]))
    assert result['changed'] is True
    assert config(fastvirt, name) == {'vcpupin': {}, 'emulatorpin': None, 'iothreadpin': {}, 'shares': None,
                                      'partition': None}
    threads = live(fastvirt, name)
    assert threads['vcpus'] == {0: ALL, 1: ALL} and threads['emulator'] == {ALL}
    assert assert_ok(pin(domains=[{'name': name, 'vcpu_cpuset': 'unpinned'}]))['changed'] is False


def test_scopes_live_only_and_config_only(fastvirt, guests, pin):
    name = guests('scopes', vcpus=2)
    live_only = assert_ok(pin(scope='live', domains=[{'name': name, 'vcpu_cpuset': '1'}]))
    assert live_only['domains'][0]['scopes'] == ['live']
    assert live(fastvirt, name)['vcpus'] == {0: '1', 1: '1'}
    assert config(fastvirt, name)['vcpupin'] == {}

    config_only = assert_ok(pin(domains=[{'name': name, 'scope': 'config', 'vcpu_cpuset': '0'}]))
    assert config_only['domains'][0]['pending'] == ['vcpu_pins.0', 'vcpu_pins.1']
    assert live(fastvirt, name)['vcpus'] == {0: '1', 1: '1'}
    assert config(fastvirt, name)['vcpupin'] == {0: '0', 1: '0'}

    # cpu_shares is set once per scope (libvirt refuses both flags together)
    both = assert_ok(pin(scope='both', domains=[{'name': name, 'cpu_shares': 2048}]))
    assert {c['scope'] for c in both['domains'][0]['changes']} == {'live', 'config'}
    assert live_shares(fastvirt, name) == 2048
    assert config(fastvirt, name)['shares'] == 2048


def test_stopped_domain_config_only_and_partition(fastvirt, guests, pin):
    name = guests('stopped', vcpus=2, iothreads=1, start=False)
    xml_before = read_bytes(config_file(fastvirt, name))
    wanted = dict(domains=[{'name': name, 'vcpu_cpuset': '1', 'emulator_cpuset': '0', 'cpu_shares': 300,
                            'partition': '/machine/bronze'}])
    checked = assert_ok(pin(check_mode=True, **wanted))
    assert checked['changed'] is True
    assert read_bytes(config_file(fastvirt, name)) == xml_before

    result = assert_ok(pin(**wanted))
    dom = result['domains'][0]
    assert dom['active'] is False and dom['scopes'] == ['config']
    assert dom['before']['live'] is None and dom['after']['live'] is None
    assert dom['pending'] == ['cpu_shares', 'emulator_cpuset', 'partition', 'vcpu_pins.0', 'vcpu_pins.1']
    assert config(fastvirt, name) == {'vcpupin': {0: '1', 1: '1'}, 'emulatorpin': '0', 'iothreadpin': {},
                                      'shares': 300, 'partition': '/machine/bronze'}
    assert [e['scope'] for e in result['snapshot']] == ['config']
    assert assert_ok(pin(**wanted))['changed'] is False

    # absent partition and shares come back exactly
    restored = assert_ok(pin(domains=result['snapshot']))
    assert restored['changed'] is True
    assert config(fastvirt, name)['partition'] is None and config(fastvirt, name)['shares'] is None
    assert config(fastvirt, name)['vcpupin'] == {}


def test_stopped_domain_live_request(fastvirt, guests, pin):
    running = guests('run', vcpus=2)
    stopped = guests('stop', vcpus=2, start=False)
    xml_before = read_bytes(config_file(fastvirt, stopped))
    for scope in ('live', 'both'):
        both = [{'name': running, 'vcpu_cpuset': '0'}, {'name': stopped, 'vcpu_cpuset': '0'}]
        msg = assert_failed(pin(scope=scope, domains=both), stopped, 'not running')
        assert scope in msg
    # nothing changed anywhere: validation comes before any change
    assert live(fastvirt, running)['vcpus'] == {0: ALL, 1: ALL}
    assert read_bytes(config_file(fastvirt, stopped)) == xml_before

    # live_on_stopped=skip applies the persistent part only (restoring old snapshots)
    skipped = assert_ok(pin(scope='both', live_on_stopped='skip', domains=[{'name': stopped, 'vcpu_cpuset': '0'}]))
    assert skipped['domains'][0]['scopes'] == ['config']
    assert config(fastvirt, stopped)['vcpupin'] == {0: '0', 1: '0'}


def test_query_all_domains(fastvirt, guests, pin):
    one = guests('q1', vcpus=2)
    two = guests('q2', vcpus=1, start=False)
    result = assert_ok(pin(state='query'))
    names = [d['name'] for d in result['domains']]
    assert one in names and two in names
    assert result['host_cpus'] == ALL
    assert result['changed'] is False


# -- errors: clear messages, nothing changed -------------------------------------

def test_missing_domain(fastvirt, guests, pin):
    name = guests('present', vcpus=1)
    msg = assert_failed(pin(domains=[{'name': name, 'vcpu_cpuset': '0'}, {'name': 'no-such-guest-x'}]),
                        'no-such-guest-x', 'not found')
    assert name not in msg
    assert live(fastvirt, name)['vcpus'] == {0: ALL}


def test_mask_outside_online_cpus(fastvirt, guests, pin):
    name = guests('cpu64', vcpus=2)
    assert_failed(pin(domains=[{'name': name, 'vcpu_cpuset': '0', 'emulator_cpuset': OUTSIDE}]),
                  name, 'emulator_cpuset', OUTSIDE, 'not online', ALL)
    assert_failed(pin(domains=[{'name': name, 'vcpu_pins': {1: '1,' + OUTSIDE}}]), name, 'vcpu_pins[1]', OUTSIDE)
    assert live(fastvirt, name)['vcpus'] == {0: ALL, 1: ALL}
    assert config(fastvirt, name)['vcpupin'] == {}


def test_empty_and_bad_masks(fastvirt, guests, pin):
    name = guests('empty', vcpus=2)
    assert_failed(pin(domains=[{'name': name, 'vcpu_cpuset': ''}]), name, 'vcpu_cpuset', 'empty')
    assert_failed(pin(domains=[{'name': name, 'iothread_cpuset': ' , '}]), name, 'iothread_cpuset', 'empty')
    assert_failed(pin(domains=[{'name': name, 'vcpu_cpuset': '1-0'}]), name, 'backwards')
    assert_failed(pin(domains=[{'name': name, 'vcpu_cpuset': 'zero'}]), name, 'cannot parse')
    assert_failed(pin(domains=[{'name': name, 'vcpu_pins': {7: '0'}}]), name, 'no vCPU 7')
    assert_failed(pin(domains=[{'name': name, 'iothread_pins': {1: '0'}}]), name, 'no IOThread 1')
    assert_failed(pin(domains=[{'name': name, 'cpu_shares': 1}]), name, 'cpu_shares', '262144')
    assert_failed(pin(domains=[{'name': name, 'cpu_shares': 0}]), name, 'cpu_shares 0')
    assert_failed(pin(domains=[{'name': name, 'partition': 'gold'}]), name, 'partition', 'absolute')
    assert_failed(pin(scope='live', domains=[{'name': name, 'partition': '/machine/gold'}]), name,
                  'persistent only')
    twice = [{'name': name, 'vcpu_cpuset': '0'}, {'name': name, 'scope': 'live', 'vcpu_cpuset': '1'}]
    assert_failed(pin(domains=twice), name, 'more than once')
    assert live(fastvirt, name)['vcpus'] == {0: ALL, 1: ALL}


def test_bad_uri(pin, tmp_path):
    uri = 'qemu:///system?socket=%s/nothing-here' % tmp_path
    assert_failed(pin(uri=uri, domains=[{'name': 'x', 'vcpu_cpuset': '0'}]), 'cannot connect', uri)
    assert_failed(pin(uri='nosuchdriver:///x', state='query'), 'cannot connect', 'nosuchdriver')
