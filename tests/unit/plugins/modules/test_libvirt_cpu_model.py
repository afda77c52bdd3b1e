# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_cpu_model's main() against a fake libvirt that keeps domain XML.

The fake keeps a persistent and a live XML per domain, records every
defineXML and refuses what libvirt refuses here (unknown domains). Real
libvirt is exercised by tests/integration/fast/test_cpu_pool.py.
"""

from __future__ import annotations

import pytest
import yaml

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpumodel as cm
from ansible_collections.kvmlab.host_resources.plugins.modules import libvirt_cpu_model
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

POOL_CPU = ("<cpu mode='custom' match='exact'><model fallback='forbid'>Haswell-noTSX-IBRS</model>"
            "<vendor>Intel</vendor><feature policy='require' name='vmx'/></cpu>")
WIDER_CPU = POOL_CPU.replace('Haswell-noTSX-IBRS', 'Skylake-Server-IBRS')


def domain(name, cpu="<cpu mode='host-model'><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>"):
    return ("<domain type='kvm'><name>%s</name><memory unit='KiB'>65536</memory><vcpu>2</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os>%s<devices/></domain>" % (name, cpu))


class FakeError(Exception):
    def __init__(self, msg, code=1):
        Exception.__init__(self, msg)
        self.code = code

    def get_error_message(self):
        return str(self)

    def get_error_code(self):  # noqa: N802
        return self.code


class FakeDomain(object):
    def __init__(self, lib, name, active, persistent=True, cpu=None):
        self.lib = lib
        self._name = name
        self.active = active
        self.persistent = persistent
        self.config = domain(name) if cpu is None else domain(name, cpu)
        self.live = self.config if active else None

    def name(self):
        return self._name

    def isActive(self):  # noqa: N802
        return 1 if self.active else 0

    def isPersistent(self):  # noqa: N802
        return 1 if self.persistent else 0

    def XMLDesc(self, flags):  # noqa: N802
        if flags & 2 or not self.active:  # VIR_DOMAIN_XML_INACTIVE
            assert flags & 1, 'the inactive XML must be read with VIR_DOMAIN_XML_SECURE'
            return self.config
        assert flags == 8, 'the live CPU is read from the migratable XML'
        return self.live

    def restart(self):
        self.active = True
        self.live = self.config


class FakeConn(object):
    def __init__(self, lib):
        self.lib = lib

    def listAllDomains(self, flags):  # noqa: N802
        assert flags == 4  # persistent only
        return [dom for dom in self.lib.domains.values() if dom.persistent]

    def lookupByName(self, name):  # noqa: N802
        if name not in self.lib.domains:
            raise FakeError('Domain not found: no domain with matching name %r' % name, 42)
        return self.lib.domains[name]

    def defineXML(self, xml_text):  # noqa: N802
        name = cm.ET.fromstring(xml_text).findtext('name')
        if name in self.lib.refuse:
            raise FakeError('unsupported configuration: CPU model refused')
        self.lib.writes.append(name)
        self.lib.domains[name].config = xml_text
        return self.lib.domains[name]

    def close(self):
        pass


class FakeLibvirt(object):
    libvirtError = FakeError  # noqa: N815  pylint: disable=invalid-name

    def __init__(self):
        self.domains = {}
        self.writes = []
        self.refuse = set()

    def add(self, name, active=False, **kwargs):
        self.domains[name] = FakeDomain(self, name, active, **kwargs)
        return self.domains[name]

    def registerErrorHandler(self, handler, ctx):  # noqa: N802
        return None

    def open(self, uri):
        return FakeConn(self)


@pytest.fixture
def lib(monkeypatch):
    fake = FakeLibvirt()
    fake.add('db-01', active=True)
    fake.add('web-01', active=False)
    fake.add('web-02', active=False, cpu='')
    monkeypatch.setattr(libvirt_cpu_model, 'libvirt', fake)
    return fake


def call(check_mode=False, diff=False, **args):
    return run_module(libvirt_cpu_model.main, args, check_mode=check_mode, diff=diff)


def by_name(result):
    return dict((entry['name'], entry) for entry in result['domains'])


def test_check_mode_reports_and_writes_nothing(lib):
    before = dict((name, dom.config) for name, dom in lib.domains.items())
    result = call(check_mode=True, diff=True, pool='alpha', cpu=POOL_CPU)
    assert result['changed'] and result['changed_domains'] == ['db-01', 'web-01', 'web-02']
    assert lib.writes == []
    assert dict((name, dom.config) for name, dom in lib.domains.items()) == before
    assert result['pending'] == ['db-01']
    predicted = by_name(result)['web-01']
    assert predicted['pool_before'] is None and predicted['pool_after'] == 'alpha'
    assert 'Haswell-noTSX-IBRS' in predicted['cpu_after'] and 'topology' in predicted['cpu_after']
    assert len(result['diff']) == 3 and result['diff'][0]['after']['pool'] == 'alpha'


def test_apply_then_no_change_and_running_guest_pending_until_restart(lib):
    result = call(pool='alpha', cpu=POOL_CPU)
    assert result['changed'] and sorted(lib.writes) == ['db-01', 'web-01', 'web-02']
    running = by_name(result)['db-01']
    assert running['active'] and running['pending'] and running['live_pool'] is None
    assert "mode=\"host-model\"" in running['live_cpu']
    assert by_name(result)['web-01']['pending'] is False

    again = call(pool='alpha', cpu=POOL_CPU)
    assert again['changed'] is False and len(lib.writes) == 3
    assert again['pending'] == ['db-01']

    lib.domains['db-01'].restart()  # destroy + start: the live XML is the persistent one
    after_start = call(pool='alpha', cpu=POOL_CPU)
    assert after_start['pending'] == [] and by_name(after_start)['db-01']['live_pool'] == 'alpha'

    # recalc to a wider model: the running guest is pending again
    wider = call(pool='alpha', cpu=WIDER_CPU)
    assert wider['changed'] and wider['pending'] == ['db-01']


def test_absent_restores_and_is_idempotent(lib):
    original = lib.domains['web-01'].config
    call(pool='alpha', cpu=POOL_CPU)
    result = call(state='absent', diff=True)
    assert result['changed'] and by_name(result)['web-01']['pool_after'] is None
    assert cm.guest_state(lib.domains['web-01'].config)['cpu'] == cm.guest_state(original)['cpu']
    assert call(state='absent')['changed'] is False


def test_query_changes_nothing(lib):
    call(pool='alpha', cpu=POOL_CPU, domains=['web-01'])
    writes = list(lib.writes)
    result = call(state='query')
    assert result['changed'] is False and lib.writes == writes
    assert by_name(result)['web-01']['pool_before'] == 'alpha'
    assert by_name(result)['db-01']['pool_before'] is None


def test_domains_and_exclude_select_guests(lib):
    result = call(pool='alpha', cpu=POOL_CPU, exclude=['db-01'])
    assert [entry['name'] for entry in result['domains']] == ['web-01', 'web-02']
    result = call(pool='alpha', cpu=POOL_CPU, domains=['db-01', 'db-01'])
    assert [entry['name'] for entry in result['domains']] == ['db-01']


def test_unknown_or_transient_domain_fails_before_any_write(lib):
    lib.add('scratch', active=True, persistent=False)
    result = call(pool='alpha', cpu=POOL_CPU, domains=['web-01', 'nope'])
    assert result['failed'] and 'domain(s) not found at uri "qemu:///system": nope' in result['msg']
    result = call(pool='alpha', cpu=POOL_CPU, domains=['web-01', 'scratch'])
    assert result['failed'] and 'transient' in result['msg']
    assert lib.writes == []
    # every persistent guest: the transient one is not listed
    assert 'scratch' not in by_name(call(state='query'))


@pytest.mark.parametrize('cpu, message', [
    ("<cpu mode='host-model'/>", 'custom model'),
    ("<cpu mode='custom'><model>Haswell</model></cpu>", 'needs a <model> and a <vendor>'),
    ('<cpu', 'not valid XML'),
])
def test_bad_pool_cpu_is_refused(lib, cpu, message):
    result = call(pool='alpha', cpu=cpu)
    assert result['failed'] and message in result['msg']
    assert lib.writes == []


def test_present_needs_pool_and_cpu(lib):
    result = call(cpu=POOL_CPU)
    assert result['failed'] and 'pool' in result['msg']


def test_refused_definition_names_guests_changed_before(lib):
    lib.refuse.add('web-01')
    result = call(pool='alpha', cpu=POOL_CPU)
    assert result['failed']
    assert 'domain "web-01": libvirt refused' in result['msg'] and 'before this one: db-01' in result['msg']


def test_lookup_error_other_than_no_domain_is_reported_as_itself(lib, monkeypatch):
    real = FakeConn.lookupByName

    def lookup(self, name):
        if name == 'web-01':
            raise FakeError('Cannot recv data: Connection reset by peer', 38)
        return real(self, name)
    monkeypatch.setattr(FakeConn, 'lookupByName', lookup)
    result = call(pool='alpha', cpu=POOL_CPU, domains=['db-01', 'web-01'])
    assert result['failed']
    assert result['msg'] == ('domain "web-01": lookup at uri "qemu:///system" failed: Cannot recv data: '
                             'Connection reset by peer (libvirt error 38)')
    assert lib.writes == []


def test_missing_libvirt_python(monkeypatch):
    monkeypatch.setattr(libvirt_cpu_model, 'libvirt', None)
    result = call(state='query')
    assert result['failed'] and 'libvirt-python' in result['msg']


def test_documentation_parses():
    for block in (libvirt_cpu_model.DOCUMENTATION, libvirt_cpu_model.EXAMPLES, libvirt_cpu_model.RETURN):
        assert yaml.safe_load(block)
    options = yaml.safe_load(libvirt_cpu_model.DOCUMENTATION)['options']
    assert set(options) == set(libvirt_cpu_model.argument_spec())
