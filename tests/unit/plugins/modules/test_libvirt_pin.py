# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_pin's main() against an in-memory fake of the libvirt API.

The fake keeps live and persistent state apart, refuses what libvirt refuses
(LIVE|CONFIG for scheduler parameters, live calls on stopped domains, empty
cpumaps) and records every write, so the tests can check that check mode and
failed validation write nothing. The real daemon is exercised by
tests/integration/fast.
"""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt as lv
from ansible_collections.kvmlab.host_resources.plugins.modules import libvirt_pin
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

LIVE, CONFIG = 1, 2


class FakeError(Exception):
    def get_error_message(self):
        return str(self)


class FakeDomain(object):
    def __init__(self, lib, name, vcpus=2, iothreads=(1,), active=True):
        self.lib = lib
        self._name = name
        self.active = active
        self.vcpus = vcpus
        self.iothreads = list(iothreads)
        # config: explicit values only (None/0/'' when absent)
        self.config = {'vcpu_pins': {}, 'emulator': None, 'iothread_pins': {}, 'shares': 0, 'partition': ''}
        all_cpus = frozenset(range(lib.ncpus))
        self.live = {'vcpu_pins': dict((n, all_cpus) for n in range(vcpus)), 'emulator': all_cpus,
                     'iothread_pins': dict((i, all_cpus) for i in iothreads), 'shares': 1024,
                     'partition': '/machine'}

    # reads
    def name(self):
        return self._name

    def isActive(self):  # noqa: N802  pylint: disable=invalid-name
        return 1 if self.active else 0

    def _scope(self, flags):
        if flags not in (LIVE, CONFIG):
            raise FakeError('one of LIVE or CONFIG, got %s' % flags)
        if flags == LIVE and not self.active:
            raise FakeError('domain is not running')
        return flags

    def _cpumap(self, cpus):
        return tuple(i in cpus for i in range(self.lib.ncpus))

    def _effective(self, value):
        return value if value is not None else frozenset(range(self.lib.ncpus))

    def vcpuPinInfo(self, flags):  # noqa: N802  pylint: disable=invalid-name
        if self._scope(flags) == LIVE:
            return [self._cpumap(self.live['vcpu_pins'][n]) for n in range(self.vcpus)]
        return [self._cpumap(self._effective(self.config['vcpu_pins'].get(n))) for n in range(self.vcpus)]

    def emulatorPinInfo(self, flags):  # noqa: N802  pylint: disable=invalid-name
        if self._scope(flags) == LIVE:
            return self._cpumap(self.live['emulator'])
        return self._cpumap(self._effective(self.config['emulator']))

    def ioThreadInfo(self, flags):  # noqa: N802  pylint: disable=invalid-name
        if self._scope(flags) == LIVE:
            return [(i, list(self._cpumap(self.live['iothread_pins'][i]))) for i in reversed(self.iothreads)]
        return [(i, list(self._cpumap(self._effective(self.config['iothread_pins'].get(i)))))
                for i in self.iothreads]

    def schedulerParametersFlags(self, flags):  # noqa: N802  pylint: disable=invalid-name
        if self._scope(flags) == LIVE:
            return {'cpu_shares': self.live['shares'], 'vcpu_period': 100000}
        return {'cpu_shares': self.config['shares'], 'vcpu_period': 0}

    def XMLDesc(self, flags):  # noqa: N802  pylint: disable=invalid-name
        live = not flags & 2 and self.active
        source = self.live if live else self.config
        tune = []
        if not live:
            if self.config['shares']:
                tune.append('<shares>%d</shares>' % self.config['shares'])
            for n, cpus in sorted(self.config['vcpu_pins'].items()):
                tune.append("<vcpupin vcpu='%d' cpuset='%s'/>" % (n, lv.format_cpulist(cpus)))
            if self.config['emulator'] is not None:
                tune.append("<emulatorpin cpuset='%s'/>" % lv.format_cpulist(self.config['emulator']))
            for i, cpus in sorted(self.config['iothread_pins'].items()):
                tune.append("<iothreadpin iothread='%d' cpuset='%s'/>" % (i, lv.format_cpulist(cpus)))
        parts = ["<domain type='qemu'><name>%s</name>" % self._name,
                 "<vcpu placement='static'>%d</vcpu>" % self.vcpus,
                 '<iothreads>%d</iothreads>' % len(self.iothreads)]
        if tune:
            parts.append('<cputune>%s</cputune>' % ''.join(tune))
        if source['partition']:
            parts.append('<resource><partition>%s</partition></resource>' % source['partition'])
        parts.append("<os><type>hvm</type></os></domain>")
        return ''.join(parts)

    # writes
    def _write(self, what, flags, cpus=None):
        if flags & LIVE and not self.active:
            raise FakeError('Requested operation is not valid: domain is not running')
        if cpus is not None and not any(cpus):
            raise FakeError('invalid argument: Empty cpu list for pinning')
        self.lib.writes.append((self._name, what, flags))
        return frozenset(i for i, on in enumerate(cpus) if on) if cpus is not None else None

    def pinVcpuFlags(self, vcpu, cpumap, flags):  # noqa: N802  pylint: disable=invalid-name
        cpus = self._write('vcpu%d' % vcpu, flags, cpumap)
        if flags & LIVE:
            self.live['vcpu_pins'][vcpu] = cpus
        if flags & CONFIG:
            self.config['vcpu_pins'][vcpu] = cpus

    def pinEmulator(self, cpumap, flags):  # noqa: N802  pylint: disable=invalid-name
        cpus = self._write('emulator', flags, cpumap)
        if flags & LIVE:
            self.live['emulator'] = cpus
        if flags & CONFIG:
            self.config['emulator'] = cpus

    def pinIOThread(self, ident, cpumap, flags):  # noqa: N802  pylint: disable=invalid-name
        cpus = self._write('iothread%d' % ident, flags, cpumap)
        if flags & LIVE:
            self.live['iothread_pins'][ident] = cpus
        if flags & CONFIG:
            self.config['iothread_pins'][ident] = cpus

    def setSchedulerParametersFlags(self, params, flags):  # noqa: N802  pylint: disable=invalid-name
        if flags == LIVE | CONFIG:
            raise FakeError("Flags 'VIR_DOMAIN_AFFECT_LIVE' and 'VIR_DOMAIN_AFFECT_CONFIG' are mutually exclusive")
        self._write('shares', flags)
        if flags & LIVE:
            self.live['shares'] = params['cpu_shares']
        else:
            self.config['shares'] = params['cpu_shares']


class FakeConn(object):
    def __init__(self, lib):
        self.lib = lib

    def getCPUMap(self):  # noqa: N802  pylint: disable=invalid-name
        return (self.lib.ncpus, [True] * self.lib.ncpus, self.lib.ncpus)

    def lookupByName(self, name):  # noqa: N802  pylint: disable=invalid-name
        if name not in self.lib.domains:
            raise FakeError("Domain not found: no domain with matching name '%s'" % name)
        return self.lib.domains[name]

    def listAllDomains(self):  # noqa: N802  pylint: disable=invalid-name
        return [self.lib.domains[name] for name in sorted(self.lib.domains)]

    def defineXML(self, xml):  # noqa: N802  pylint: disable=invalid-name
        parsed = lv.parse_domain_xml(xml)
        dom = self.lookupByName(__import__('re').search(r'<name>([^<]+)</name>', xml).group(1))
        self.lib.writes.append((dom.name(), 'define', CONFIG))
        dom.config.update(vcpu_pins=parsed['vcpu_pins'], emulator=parsed['emulator_cpuset'],
                          iothread_pins=parsed['iothread_pins'], shares=parsed['cpu_shares'],
                          partition=parsed['partition'])
        return dom

    def close(self):
        return 0


class FakeLibvirt(object):
    """Stands in for the ``libvirt`` module."""

    libvirtError = FakeError  # noqa: N815  pylint: disable=invalid-name

    def __init__(self, ncpus=4):
        self.ncpus = ncpus
        self.domains = {}
        self.writes = []

    def add(self, name, **kwargs):
        self.domains[name] = FakeDomain(self, name, **kwargs)
        return self.domains[name]

    def registerErrorHandler(self, handler, ctx):  # noqa: N802  pylint: disable=invalid-name
        return None

    def open(self, uri):
        if not uri.startswith('qemu'):
            raise FakeError('no connection driver available for %s' % uri)
        return FakeConn(self)


@pytest.fixture
def fake(monkeypatch):
    lib = FakeLibvirt()
    monkeypatch.setattr(libvirt_pin, 'libvirt', lib)
    return lib


def run(check_mode=False, diff=False, **args):
    return run_module(libvirt_pin.main, args, check_mode=check_mode, diff=diff)


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def test_apply_then_idempotent(fake):
    dom = fake.add('vm1', vcpus=2, iothreads=(1, 2))
    args = dict(vcpu_cpuset='2-3', emulator_cpuset='0', domains=[{'name': 'vm1', 'iothread_pins': {2: '1'},
                                                                  'cpu_shares': 512, 'partition': '/machine/gold'}])
    first = ok(run(diff=True, **args))
    assert first['changed'] is True
    result = first['domains'][0]
    assert result['scopes'] == ['live', 'config']
    assert result['pending'] == ['partition']
    assert dom.live['vcpu_pins'] == {0: frozenset({2, 3}), 1: frozenset({2, 3})}
    assert dom.config['vcpu_pins'] == {0: frozenset({2, 3}), 1: frozenset({2, 3})}
    assert dom.live['shares'] == 512 and dom.config['shares'] == 512
    assert dom.config['partition'] == '/machine/gold' and dom.live['partition'] == '/machine'
    assert first['diff'][0]['after']['config']['iothread_pins'] == {'1': 'unpinned', '2': '1'}
    # identical pins in both scopes take one call each; shares one call per scope; partition one define
    assert sorted(w for w in fake.writes) == sorted(
        [('vm1', 'vcpu0', 3), ('vm1', 'vcpu1', 3), ('vm1', 'emulator', 3), ('vm1', 'iothread2', 3),
         ('vm1', 'shares', 1), ('vm1', 'shares', 2), ('vm1', 'define', 2)])
    fake.writes[:] = []
    second = ok(run(**args))
    assert second['changed'] is False and fake.writes == []
    assert 'diff' not in second


def test_check_mode_predicts_and_writes_nothing(fake):
    fake.add('vm1')
    args = dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '1', 'cpu_shares': 100}])
    checked = ok(run(check_mode=True, **args))
    assert checked['changed'] is True and fake.writes == []
    real = ok(run(**args))
    assert real['domains'][0]['after'] == checked['domains'][0]['after']
    assert real['domains'][0]['changes'] == checked['domains'][0]['changes']


def test_snapshot_restores_exactly(fake):
    dom = fake.add('vm1', vcpus=3)
    dom.config['vcpu_pins'] = {1: frozenset({3})}
    dom.live['vcpu_pins'][1] = frozenset({3})
    dom.config['shares'] = 0
    before_config = dict(dom.config, vcpu_pins=dict(dom.config['vcpu_pins']))
    before_live = dict(dom.live, vcpu_pins=dict(dom.live['vcpu_pins']))
    applied = ok(run(domains=[{'name': 'vm1', 'vcpu_cpuset': '0', 'emulator_cpuset': '0', 'cpu_shares': 5000,
                               'partition': '/machine/gold'}]))
    assert applied['changed'] is True
    restored = ok(run(domains=applied['snapshot']))
    assert restored['changed'] is True
    assert dom.config == before_config
    assert dom.live == before_live
    assert ok(run(domains=applied['snapshot']))['changed'] is False


def test_query_returns_snapshot_and_changes_nothing(fake):
    fake.add('b', active=False)
    fake.add('a')
    result = ok(run(state='query'))
    assert [d['name'] for d in result['domains']] == ['a', 'b']
    assert [(e['name'], e['scope']) for e in result['snapshot']] == [('a', 'config'), ('a', 'live'), ('b', 'config')]
    assert result['changed'] is False and fake.writes == []
    assert result['host_cpus'] == '0-3'
    one = ok(run(state='query', domains=[{'name': 'b', 'vcpu_cpuset': '1'}]))
    assert [d['name'] for d in one['domains']] == ['b'] and fake.writes == []


def test_stopped_domain_auto_is_config_only(fake):
    dom = fake.add('vm1', active=False)
    result = ok(run(domains=[{'name': 'vm1', 'vcpu_cpuset': '1', 'partition': '/machine/bronze'}]))
    assert result['domains'][0]['scopes'] == ['config']
    assert result['domains'][0]['pending'] == ['partition', 'vcpu_pins.0', 'vcpu_pins.1']
    assert dom.config['vcpu_pins'] == {0: frozenset({1}), 1: frozenset({1})}


@pytest.mark.parametrize('args, words', [
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '64'}]), ['vm1', 'vcpu_cpuset', '64', 'not online', '0-3']),
    (dict(domains=[{'name': 'vm1', 'emulator_cpuset': ''}]), ['vm1', 'emulator_cpuset', 'empty']),
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '0'}, {'name': 'ghost'}]), ['ghost', 'not found']),
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '0'}, {'name': 'off', 'scope': 'live', 'vcpu_cpuset': '1'}]),
     ['off', 'not running']),
    (dict(domains=[{'name': 'vm1', 'vcpu_pins': {9: '0'}}]), ['vm1', 'no vCPU 9']),
    (dict(domains=[{'name': 'vm1', 'cpu_shares': 1}]), ['vm1', 'cpu_shares']),
    (dict(uri='test+bad:///', domains=[{'name': 'vm1', 'vcpu_cpuset': '0'}]), ['cannot connect', 'test+bad:///']),
])
def test_validation_fails_before_any_write(fake, args, words):
    fake.add('vm1')
    fake.add('off', active=False)
    result = run(**args)
    assert result['failed'] is True, result
    for word in words:
        assert word in result['msg'], result['msg']
    assert fake.writes == []


def test_domains_required_for_present(fake):
    result = run()
    assert result['failed'] is True and 'domains' in result['msg']


def test_missing_libvirt_python(monkeypatch):
    monkeypatch.setattr(libvirt_pin, 'libvirt', None)
    result = run(domains=[{'name': 'vm1'}])
    assert result['failed'] is True and 'libvirt-python' in result['msg']


def test_libvirt_refusal_mid_apply_is_reported(fake, monkeypatch):
    fake.add('vm1')
    fake.add('vm2')

    def refuse(*args):
        raise FakeError('cgroup went away')
    monkeypatch.setattr(fake.domains['vm2'], 'pinEmulator', refuse)
    result = run(domains=[{'name': 'vm1', 'emulator_cpuset': '1'}, {'name': 'vm2', 'emulator_cpuset': '1'}])
    assert result['failed'] is True
    assert 'vm2' in result['msg'] and 'cgroup went away' in result['msg'] and 'vm1' in result['msg']
