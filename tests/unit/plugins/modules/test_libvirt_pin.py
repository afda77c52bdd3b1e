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


ERR_INTERNAL, ERR_SYSTEM, ERR_NO_DOMAIN, ERR_ACCESS_DENIED = 1, 38, 42, 88


class FakeError(Exception):
    """libvirtError: a message and a VIR_ERR_* code."""

    def __init__(self, msg, code=ERR_INTERNAL):
        Exception.__init__(self, msg)
        self.code = code

    def get_error_message(self):
        return str(self)

    def get_error_code(self):  # noqa: N802  pylint: disable=invalid-name
        return self.code


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
            raise FakeError("Domain not found: no domain with matching name '%s'" % name, ERR_NO_DOMAIN)
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
    VIR_ERR_INTERNAL_ERROR = ERR_INTERNAL
    VIR_ERR_SYSTEM_ERROR = ERR_SYSTEM
    VIR_ERR_NO_DOMAIN = ERR_NO_DOMAIN
    VIR_ERR_ACCESS_DENIED = ERR_ACCESS_DENIED

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


@pytest.mark.parametrize('args', [
    dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '7'}]),  # not online (the host has 0-3)
    dict(domains=[{'name': 'vm1', 'vcpu_cpuset': 'zero', 'emulator_cpuset': '', 'iothread_cpuset': '0,,1'}]),
    dict(domains=[{'name': 'vm1', 'vcpu_pins': {9: '0', 'x': '1'}, 'iothread_pins': {5: '3-1'}}]),
    dict(domains=[{'name': 'vm1', 'cpu_shares': 1, 'partition': 'gold', 'scope': 'live'}]),
    dict(vcpu_cpuset='99', emulator_cpuset='a', scope='live', domains=[{'name': 'off'}]),
    dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '0'}, {'name': 'vm1', 'vcpu_cpuset': '1'}]),  # twice
])
def test_query_ignores_the_settings_of_its_entries(fake, args):
    fake.add('vm1')
    fake.add('off', active=False)
    plain = ok(run(state='query', domains=[{'name': d['name']} for d in args['domains']]))
    result = ok(run(state='query', **args))
    assert result['changed'] is False and fake.writes == []
    assert result['domains'] == plain['domains']
    assert result['snapshot'] == plain['snapshot']
    assert all(d['changes'] == [] and d['scopes'] == [] for d in result['domains'])


def test_query_still_needs_existing_named_domains(fake):
    fake.add('vm1')
    result = run(state='query', domains=[{'name': 'vm1'}, {'name': 'ghost', 'vcpu_cpuset': '7'}])
    assert result['failed'] is True and 'not found' in result['msg'] and 'ghost' in result['msg']


@pytest.mark.parametrize('code, text, words', [
    (ERR_SYSTEM, 'End of file while reading data: Input/output error',
     ['domain "vm2": lookup at uri "qemu:///system" failed: End of file while reading data: Input/output error '
      '(libvirt error 38, VIR_ERR_SYSTEM_ERROR)']),
    (ERR_ACCESS_DENIED, "access denied: 'vm2' is not yours",
     ["access denied: 'vm2' is not yours (libvirt error 88, VIR_ERR_ACCESS_DENIED)"]),
    (None, 'an error without a code', ['lookup at uri "qemu:///system" failed: an error without a code']),
])
@pytest.mark.parametrize('state', ['present', 'query'])
def test_lookup_errors_other_than_no_domain_say_what_they_are(fake, monkeypatch, code, text, words, state):
    fake.add('vm1')
    fake.add('vm2')
    real = FakeConn.lookupByName

    def lookup(self, name):
        if name == 'vm2':
            raise FakeError(text, code)
        return real(self, name)
    monkeypatch.setattr(FakeConn, 'lookupByName', lookup)
    result = run(state=state, domains=[{'name': 'vm1', 'vcpu_cpuset': '1'}, {'name': 'vm2', 'vcpu_cpuset': '1'}])
    assert result['failed'] is True
    for word in words:
        assert word in result['msg'], result['msg']
    assert 'not found' not in result['msg']
    assert fake.writes == []


def test_stopped_domain_auto_is_config_only(fake):
    dom = fake.add('vm1', active=False)
    result = ok(run(domains=[{'name': 'vm1', 'vcpu_cpuset': '1', 'partition': '/machine/bronze'}]))
    assert result['domains'][0]['scopes'] == ['config']
    assert result['domains'][0]['pending'] == ['partition', 'vcpu_pins.0', 'vcpu_pins.1']
    assert dom.config['vcpu_pins'] == {0: frozenset({1}), 1: frozenset({1})}


@pytest.mark.parametrize('args, words', [
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '64'}]), ['vm1', 'vcpu_cpuset', '64', 'not online', '0-3']),
    (dict(domains=[{'name': 'vm1', 'emulator_cpuset': ''}]), ['vm1', 'emulator_cpuset', 'empty']),
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '0'}, {'name': 'ghost'}]),
     ['domain(s) not found at uri "qemu:///system": ghost']),
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '0-1,,3'}]), ['vm1', 'vcpu_cpuset', 'empty item at character 5']),
    (dict(domains=[{'name': 'vm1', 'vcpu_cpuset': '0, 1'}]), ['vm1', 'vcpu_cpuset', 'whitespace']),
    (dict(domains=[{'name': 'vm1', 'vcpu_pins': {0: '0--1'}}]), ['vm1', 'vcpu_pins[0]', 'cannot parse "0--1"']),
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


def _state(dom):
    return {'config': dict(dom.config, vcpu_pins=dict(dom.config['vcpu_pins']),
                           iothread_pins=dict(dom.config['iothread_pins'])),
            'live': dict(dom.live, vcpu_pins=dict(dom.live['vcpu_pins']),
                         iothread_pins=dict(dom.live['iothread_pins']))}


def _refuse(fake, monkeypatch, dom_name, method, when=lambda *args: True, times=None, msg='cgroup went away'):
    """Make one domain's libvirt method raise (for ``times`` calls, default always) when ``when(*args)``."""
    dom = fake.domains[dom_name]
    real = getattr(dom, method)
    left = {'n': times}

    def refuse(*args):
        if when(*args) and (left['n'] is None or left['n'] > 0):
            if left['n'] is not None:
                left['n'] -= 1
            raise FakeError(msg, ERR_SYSTEM)
        return real(*args)
    monkeypatch.setattr(dom, method, refuse)


APPLY = dict(vcpu_cpuset='1', emulator_cpuset='0', domains=[
    {'name': 'vm1', 'cpu_shares': 512, 'partition': '/machine/gold'},
    {'name': 'vm2', 'cpu_shares': 256, 'iothread_cpuset': '2'},
    {'name': 'vm3'}])


@pytest.fixture
def three(fake):
    for name in ('vm1', 'vm2', 'vm3'):
        dom = fake.add(name, vcpus=2, iothreads=(1,))
    dom.config['vcpu_pins'] = {0: frozenset({3})}  # vm3 starts with a pin of its own
    dom.live['vcpu_pins'][0] = frozenset({3})
    return dict((name, _state(fake.domains[name])) for name in ('vm1', 'vm2', 'vm3'))


def test_refusal_mid_apply_restores_every_domain_changed(fake, monkeypatch, three):
    # vm2: shares (live, config) and vCPU 0 go through, vCPU 1 is refused
    _refuse(fake, monkeypatch, 'vm2', 'pinVcpuFlags', when=lambda vcpu, cpumap, flags: vcpu == 1)
    result = run(**APPLY)
    assert result['failed'] is True
    msg = result['msg']
    assert msg.startswith('domain "vm2": libvirt refused vcpu_pins.1 (live+config) to "1": cgroup went away '
                          '(libvirt error 38, VIR_ERR_SYSTEM_ERROR); its own changes made before the refusal: '
                          'cpu_shares (live) to 256, cpu_shares (config) to 256, emulator_cpuset (live+config) '
                          'to "0", iothread_pins.1 (live+config) to "2", vcpu_pins.0 (live+config) to "1". Restored to the state read before this run: '
                          'vm2 ('), msg
    assert ('vm1 (config vcpu_pins.0, config vcpu_pins.1, config emulator_cpuset, config cpu_shares, '
            'config partition, live vcpu_pins.0, live vcpu_pins.1, live emulator_cpuset, live cpu_shares)') in msg
    assert msg.endswith('Nothing is left changed.'), msg
    assert 'vm3' not in msg  # never reached
    for name in ('vm1', 'vm2', 'vm3'):
        assert _state(fake.domains[name]) == three[name], name
    assert result['failed_domain'] == 'vm2'
    assert [(r['name'], r['restored'], r['left'], r['error']) for r in result['rollback']] == [
        ('vm2', True, [], None), ('vm1', True, [], None)]
    vm2_undone = dict(((c['scope'], c['item']), c['after']) for c in result['rollback'][0]['undone'])
    assert vm2_undone == {('live', 'vcpu_pins.0'): '0-3', ('config', 'vcpu_pins.0'): 'unpinned',
                          ('live', 'emulator_cpuset'): '0-3', ('config', 'emulator_cpuset'): 'unpinned',
                          ('live', 'iothread_pins.1'): '0-3', ('config', 'iothread_pins.1'): 'unpinned',
                          ('live', 'cpu_shares'): 1024, ('config', 'cpu_shares'): 0}
    # the rerun then applies everything
    fake.writes[:] = []
    monkeypatch.undo()
    monkeypatch.setattr(libvirt_pin, 'libvirt', fake)
    assert ok(run(**APPLY))['changed'] is True


def test_refusal_of_the_first_write_of_the_first_domain(fake, monkeypatch, three):
    _refuse(fake, monkeypatch, 'vm1', 'setSchedulerParametersFlags')
    result = run(**APPLY)
    assert result['failed'] is True
    assert ('domain "vm1": libvirt refused cpu_shares (live) to 512: cgroup went away (libvirt error 38, '
            'VIR_ERR_SYSTEM_ERROR); it had no change made before the refusal. Restored to the state read '
            'before this run: vm1 (nothing to undo). Nothing is left changed.') == result['msg']
    for name in ('vm1', 'vm2', 'vm3'):
        assert _state(fake.domains[name]) == three[name]


def test_refused_define_restores_pins_of_the_same_domain(fake, monkeypatch, three):
    real = FakeConn.defineXML

    def define(self, xml):
        if 'gold' in xml:
            raise FakeError("unsupported configuration: resource partition '/machine/gold' is not allowed",
                            ERR_INTERNAL)
        return real(self, xml)
    monkeypatch.setattr(FakeConn, 'defineXML', define)
    result = run(**APPLY)
    assert result['failed'] is True
    assert result['msg'].startswith('domain "vm1": libvirt refused persistent XML (config: partition '
                                    '"/machine/gold"): unsupported configuration'), result['msg']
    assert '(libvirt error 1, VIR_ERR_INTERNAL_ERROR)' in result['msg']
    assert 'Nothing is left changed.' in result['msg']
    assert _state(fake.domains['vm1']) == three['vm1']


def test_restore_that_libvirt_also_refuses_is_reported(fake, monkeypatch, three):
    # vm1 applied; vm2's emulator pin is refused, and so is every later emulator pin of vm1
    _refuse(fake, monkeypatch, 'vm2', 'pinEmulator')
    _refuse(fake, monkeypatch, 'vm1', 'pinEmulator', msg='emulator cgroup is gone',
            when=lambda cpumap, flags: cpumap == (True,) * 4)
    result = run(**APPLY)
    assert result['failed'] is True
    msg = result['msg']
    assert msg.startswith('domain "vm2": libvirt refused emulator_cpuset (live+config) to "0": cgroup went away')
    assert 'Restored to the state read before this run: vm2 (' in msg
    assert ('Could not restore: vm1 (restoring emulator_cpuset (live) to "0-3": emulator cgroup is gone '
            '(libvirt error 38, VIR_ERR_SYSTEM_ERROR); still differs: live emulator_cpuset') in msg, msg
    assert 'Nothing is left changed' not in msg
    report = dict((r['name'], r) for r in result['rollback'])
    assert report['vm2']['restored'] is True
    assert report['vm1']['restored'] is False
    assert [(c['scope'], c['item']) for c in report['vm1']['left']] == [('live', 'emulator_cpuset')]
    # everything else of vm1 went back
    state = _state(fake.domains['vm1'])
    assert state['live']['emulator'] == frozenset({0})
    assert state['config'] == three['vm1']['config']
    assert state['live']['vcpu_pins'] == three['vm1']['live']['vcpu_pins']
    assert state['live']['shares'] == 1024
    assert _state(fake.domains['vm2']) == three['vm2']


def test_read_failure_after_apply_also_restores(fake, monkeypatch, three):
    dom = fake.domains['vm2']
    real = dom.vcpuPinInfo
    calls = {'n': 0}

    def pininfo(flags):
        calls['n'] += 1
        if calls['n'] == 3:  # 1, 2: the read before any change; 3: the read after the apply
            raise FakeError('Unable to read from monitor: Connection reset by peer', ERR_SYSTEM)
        return real(flags)
    monkeypatch.setattr(dom, 'vcpuPinInfo', pininfo)
    result = run(**APPLY)
    assert result['failed'] is True
    assert result['msg'].startswith('domain "vm2": cannot read its state after the change: Unable to read from '
                                    'monitor: Connection reset by peer (libvirt error 38, VIR_ERR_SYSTEM_ERROR). '
                                    'Restored to the state read before this run: vm2 ('), result['msg']
    for name in ('vm1', 'vm2', 'vm3'):
        assert _state(fake.domains[name]) == three[name]


def test_check_mode_never_writes_even_when_libvirt_would_refuse(fake, monkeypatch, three):
    _refuse(fake, monkeypatch, 'vm2', 'pinVcpuFlags')
    result = ok(run(check_mode=True, **APPLY))
    assert result['changed'] is True and fake.writes == []
