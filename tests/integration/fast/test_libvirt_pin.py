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


# -- query ignores settings; refusals mid-apply are rolled back ------------------

def config_from_libvirt(virt, name):
    """The persistent XML as libvirt hands it out (XMLDesc INACTIVE on a connection of the test's own)."""
    return _config_of(ET.fromstring(virt.connect().lookupByName(name).XMLDesc(2)))


def _config_of(root):
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


def everything(virt, name):
    """Live threads, live cpu.shares, persistent XML file and libvirt's inactive XML of one guest."""
    return {'live': live(virt, name), 'shares': live_shares(virt, name), 'file': config(virt, name),
            'libvirt': config_from_libvirt(virt, name)}


def test_query_ignores_the_settings_of_its_entries(fastvirt, guests, pin):
    name = guests('qbad', vcpus=2, iothreads=1)
    before = everything(fastvirt, name)
    xml_before = read_bytes(config_file(fastvirt, name))
    plain = assert_ok(pin(state='query', domains=[{'name': name}]))
    bad = [
        dict(domains=[{'name': name, 'vcpu_cpuset': '7'}]),  # the example
        dict(domains=[{'name': name, 'vcpu_cpuset': OUTSIDE, 'emulator_cpuset': 'zero', 'iothread_cpuset': '0,,1'}]),
        dict(domains=[{'name': name, 'vcpu_pins': {9: '0'}, 'iothread_pins': {4: '1-0'}, 'cpu_shares': 1,
                       'partition': 'gold', 'scope': 'live'}]),
        dict(vcpu_cpuset=OUTSIDE, scope='live', domains=[{'name': name}, {'name': name, 'vcpu_cpuset': '1'}]),
    ]
    for args in bad:
        result = assert_ok(pin(state='query', **args))
        assert result['changed'] is False
        assert result['snapshot'] == plain['snapshot']
        assert [d['changes'] for d in result['domains']] == [[]] * len(args['domains'])
    assert everything(fastvirt, name) == before
    assert read_bytes(config_file(fastvirt, name)) == xml_before


def test_lookup_of_a_missing_domain_is_not_found_and_names_only_it(fastvirt, guests, pin):
    name = guests('look', vcpus=1)
    msg = assert_failed(pin(state='query', domains=[{'name': name}, {'name': 'no-such-guest-y', 'vcpu_cpuset': '7'}]))
    assert msg == 'domain(s) not found at uri "%s": no-such-guest-y' % fastvirt.uri


def test_lookup_error_other_than_no_domain_is_reported_as_itself(fastvirt, guests, pin, monkeypatch):
    import libvirt
    name = guests('lookerr', vcpus=1)
    before = everything(fastvirt, name)
    real = libvirt.virConnect.lookupByName

    def lookup(conn, wanted):
        if wanted == name:
            # what libvirt-python raises when the daemon goes away mid-call: a real libvirtError
            conn.close()
        return real(conn, wanted)
    monkeypatch.setattr(libvirt.virConnect, 'lookupByName', lookup)
    msg = assert_failed(pin(domains=[{'name': name, 'vcpu_cpuset': '0'}]))
    print('FAULT lookup-connection-closed: %s' % msg)
    assert msg.startswith('domain "%s": lookup at uri "%s" failed: ' % (name, fastvirt.uri)), msg
    assert '(libvirt error ' in msg and 'not found' not in msg, msg
    monkeypatch.undo()
    assert everything(fastvirt, name) == before


APPLY = dict(vcpu_cpuset='0', emulator_cpuset='1', iothread_cpuset='1')


def _three(fastvirt, guests, pin, tag):
    names = [guests('%s%d' % (tag, n), vcpus=2, iothreads=1) for n in (1, 2, 3)]
    # a state of their own to come back to: the first guest has a persistent and live pin, shares 300
    assert_ok(pin(scope='both', domains=[{'name': names[0], 'vcpu_pins': {1: '1'}, 'cpu_shares': 300}]))
    return names


def test_injected_refusal_on_the_second_domain_is_rolled_back(fastvirt, guests, pin, monkeypatch):
    import libvirt
    names = _three(fastvirt, guests, pin, 'inj')
    before = dict((name, everything(fastvirt, name)) for name in names)
    assert before[names[0]]['live']['vcpus'] == {0: ALL, 1: '1'} and before[names[0]]['shares'] == 300
    real = libvirt.virDomain.pinVcpuFlags
    seen, refused = [], []

    def pin_vcpu(dom, vcpu, cpumap, flags):
        if dom.name() not in seen:
            seen.append(dom.name())
        # once: the second domain changed, after its vCPU 0 went through
        if not refused and len(seen) == 2 and dom.name() == seen[1] and vcpu == 1:
            refused.append(dom.name())
            raise libvirt.libvirtError('injected refusal of vcpu 1 of %s' % dom.name())
        return real(dom, vcpu, cpumap, flags)
    monkeypatch.setattr(libvirt.virDomain, 'pinVcpuFlags', pin_vcpu)
    domains = [{'name': name, 'cpu_shares': 512, 'partition': '/machine/gold'} for name in names]
    result = pin(diff=True, domains=domains, **APPLY)
    monkeypatch.undo()
    msg = assert_failed(result)
    print('FAULT injected-vcpu1-second-domain: %s' % msg)
    assert msg.startswith(
        'domain "%s": libvirt refused vcpu_pins.1 (live+config) to "0": injected refusal of vcpu 1 of %s; its own '
        'changes made before the refusal: cpu_shares (live) to 512, cpu_shares (config) to 512, emulator_cpuset '
        '(live+config) to "1", iothread_pins.1 (live+config) to "1", vcpu_pins.0 (live+config) to "0". Restored to '
        'the state read before this run: %s (' % (names[1], names[1], names[1])), msg
    assert ', %s (' % names[0] in msg and names[2] not in msg
    assert msg.endswith('Nothing is left changed.'), msg
    assert [(r['name'], r['restored']) for r in result['rollback']] == [(names[1], True), (names[0], True)]
    # read back independently: threads from /proc, shares from the cgroup, the XML file and libvirt's XML
    for name in names:
        assert everything(fastvirt, name) == before[name], name
    # the next run goes through and changes all three
    applied = assert_ok(pin(domains=domains, **APPLY))
    assert [d['changed'] for d in applied['domains']] == [True, True, True]
    assert live(fastvirt, names[2])['vcpus'] == {0: '0', 1: '0'}


def test_restore_that_libvirt_refuses_too_is_reported(fastvirt, guests, pin, monkeypatch):
    import libvirt
    names = _three(fastvirt, guests, pin, 'nor')
    before = dict((name, everything(fastvirt, name)) for name in names)
    real = libvirt.virDomain.pinVcpuFlags
    refused = []

    def pin_vcpu(dom, vcpu, cpumap, flags):
        if dom.name() == names[1] and vcpu == 1 and not refused:
            refused.append(dom.name())
            raise libvirt.libvirtError('injected refusal of vcpu 1 of %s' % dom.name())
        if dom.name() == names[0] and vcpu == 1 and refused:  # and the restore of the first guest's vCPU 1
            raise libvirt.libvirtError('injected refusal to restore vcpu 1 of %s' % dom.name())
        return real(dom, vcpu, cpumap, flags)
    monkeypatch.setattr(libvirt.virDomain, 'pinVcpuFlags', pin_vcpu)
    result = pin(domains=[{'name': name, 'cpu_shares': 512} for name in names], **APPLY)
    monkeypatch.undo()
    msg = assert_failed(result)
    print('FAULT restore-refused-too: %s' % msg)
    assert ('Could not restore: %s (restoring vcpu_pins.1 (live+config) to "1": injected refusal to restore '
            'vcpu 1 of %s; still differs: config vcpu_pins.1, live vcpu_pins.1).' % (names[0], names[0])) in msg
    assert 'Nothing is left changed' not in msg
    report = dict((r['name'], r) for r in result['rollback'])
    assert report[names[1]]['restored'] is True and report[names[0]]['restored'] is False
    # independently: the second guest is back; the first is back except its vCPU 1, as reported
    assert everything(fastvirt, names[1]) == before[names[1]]
    assert everything(fastvirt, names[2]) == before[names[2]]
    first, was = everything(fastvirt, names[0]), before[names[0]]
    assert first['live']['vcpus'] == {0: was['live']['vcpus'][0], 1: '0'}
    assert first['live']['emulator'] == was['live']['emulator'] and first['shares'] == was['shares']
    for source in ('file', 'libvirt'):
        assert was[source]['vcpupin'] == {1: '1'}
        assert first[source]['vcpupin'] == {1: '0'}  # the refused restore; vCPU 0's pin was removed again
        assert dict(first[source], vcpupin=None) == dict(was[source], vcpupin=None)
    # what the message says is left is all that is left: setting it back completes the restore
    assert_ok(pin(scope='both', domains=[{'name': names[0], 'vcpu_pins': {1: '1'}}]))
    assert everything(fastvirt, names[0]) == before[names[0]]


def _domain_cpuset_dir(virt, name):
    pid = virt.guest_pid(name)
    with open('/proc/%d/cgroup' % pid) as handle:
        for line in handle:
            controllers, path = line.rstrip('\n').split(':', 2)[1:]
            if 'cpuset' in controllers.split(','):
                path = os.path.dirname(path) if path.endswith('/emulator') else path
                return '/sys/fs/cgroup/cpuset' + path
    pytest.skip('no cpuset cgroup (v1) for the guest on this host')


def test_real_refusal_by_the_kernel_is_rolled_back(fastvirt, guests, pin):
    # The second guest's cgroup is narrowed to CPU 0 behind libvirt's back: a pin to
    # CPU 1 passes validation (CPU 1 is online) but the kernel refuses the cpuset write.
    names = _three(fastvirt, guests, pin, 'krn')
    narrowed = names[1]
    assert_ok(pin(scope='live', domains=[{'name': narrowed, 'vcpu_cpuset': '0', 'emulator_cpuset': '0',
                                          'iothread_cpuset': '0'}]))
    cgroup = _domain_cpuset_dir(fastvirt, narrowed)
    with open(os.path.join(cgroup, 'cpuset.cpus'), 'w') as handle:
        handle.write('0')
    before = dict((name, everything(fastvirt, name)) for name in names)
    domains = [{'name': name, 'cpu_shares': 700} for name in names]
    result = pin(domains=domains, **APPLY)
    msg = assert_failed(result)
    print('FAULT kernel-cpuset-refusal: %s' % msg)
    assert msg.startswith('domain "%s": libvirt refused emulator_cpuset (live+config) to "1": ' % narrowed), msg
    assert 'cpuset.cpus' in msg and '(libvirt error ' in msg, msg
    assert ('its own changes made before the refusal: cpu_shares (live) to 700, cpu_shares (config) to 700. '
            'Restored to the state read before this run: %s (config cpu_shares, live cpu_shares), %s ('
            % (narrowed, names[0])) in msg, msg
    assert msg.endswith('Nothing is left changed.'), msg
    for name in names:
        assert everything(fastvirt, name) == before[name], name
