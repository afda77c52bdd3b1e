# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_cpu_baseline's main() against a fake of the libvirt host CPU API.

The fake answers getDomainCapabilities, baselineHypervisorCPU and
compareHypervisorCPU from feature sets, the way libvirt does in outline
(intersection, vendor check, FAIL_INCOMPATIBLE error). What real libvirt
computes is exercised by tests/integration/fast/test_cpu_pool.py.
"""

from __future__ import annotations

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpumodel as cm
from ansible_collections.kvmlab.host_resources.plugins.modules import libvirt_cpu_baseline
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module

HOSTS = {
    'hv1': ('Haswell-noTSX-IBRS', 'Intel', {'sse4.2', 'avx2', 'vmx', 'invtsc'}),
    'hv2': ('Skylake-Server-IBRS', 'Intel', {'sse4.2', 'avx2', 'vmx', 'avx512f', 'invtsc'}),
    'hv3': ('EPYC-Rome', 'AMD', {'sse4.2', 'avx2', 'svm', 'sha-ni'}),
}
NOT_MIGRATABLE = {'invtsc'}


class FakeError(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code

    def get_error_message(self):
        return str(self)

    def get_error_code(self):
        return self.code


def cpu_text(model, vendor, features, mode='custom'):
    body = ''.join("<feature policy='require' name='%s'/>" % name for name in sorted(features))
    return "<cpu mode='%s' match='exact'><model fallback='forbid'>%s</model><vendor>%s</vendor>%s</cpu>" % (
        mode, model, vendor, body)


class FakeConn(object):
    def __init__(self, lib, host):
        self.lib = lib
        self.model, self.vendor, self.features = HOSTS[host]

    def getDomainCapabilities(self, emulator, arch, machine, virttype, flags):  # noqa: N802
        self.lib.calls.append(('domcaps', arch, virttype))
        if virttype not in ('kvm', 'qemu'):
            raise FakeError('unknown virttype %s' % virttype)
        features = ''.join("<feature policy='require' name='%s'/>" % name for name in sorted(self.features))
        return ("<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>%s</domain>"
                "<machine>pc-q35-7.2</machine><arch>%s</arch><cpu><mode name='host-model' supported='yes'>"
                "<model fallback='forbid'>%s</model><vendor>%s</vendor>%s</mode></cpu></domainCapabilities>"
                % (virttype, arch, self.model, self.vendor, features))

    def baselineHypervisorCPU(self, emulator, arch, machine, virttype, xmls, flags):  # noqa: N802
        self.lib.calls.append(('baseline', len(xmls), flags))
        cpus = [cm.parse_cpu(text) for text in xmls]
        if len({cpu['vendor'] for cpu in cpus}) > 1:
            raise FakeError('operation failed: CPU vendors do not match', 9)
        common = set.intersection(*[set(cm.provided(cpu)) for cpu in cpus])
        if flags & cm.BASELINE_MIGRATABLE:
            common -= NOT_MIGRATABLE
        return cpu_text(cpus[0]['model'] if len(cpus) == 1 else 'Haswell-noTSX-IBRS', cpus[0]['vendor'], common)

    def compareHypervisorCPU(self, emulator, arch, machine, virttype, xml_text, flags):  # noqa: N802
        self.lib.calls.append(('compare',))
        cpu = cm.parse_cpu(xml_text)
        if cpu['vendor'] and cpu['vendor'] != self.vendor:
            raise FakeError('the CPU is incompatible with host CPU: host CPU vendor does not match', 91)
        missing = cm.provided(cpu) - self.features
        if missing:
            raise FakeError('the CPU is incompatible with host CPU: Host CPU does not provide required '
                            'features: %s' % ', '.join(sorted(missing)), 91)
        if cpu['model'] == 'broken':
            raise FakeError('internal error: Unknown CPU model broken', 1)
        return 1 if cm.provided(cpu) == self.features else 2

    def close(self):
        self.lib.closed += 1


class FakeLibvirt(object):
    libvirtError = FakeError  # noqa: N815  pylint: disable=invalid-name

    def __init__(self):
        self.calls = []
        self.closed = 0

    def registerErrorHandler(self, handler, ctx):  # noqa: N802
        return None

    def open(self, uri):
        host = uri.rsplit('/', 1)[-1]
        if host not in HOSTS:
            raise FakeError('Failed to connect socket to %s' % uri)
        return FakeConn(self, host)


@pytest.fixture
def lib(monkeypatch):
    fake = FakeLibvirt()
    monkeypatch.setattr(libvirt_cpu_baseline, 'libvirt', fake)
    return fake


def call(host='hv1', check_mode=False, **args):
    args.setdefault('uri', 'qemu+fake:///%s' % host)
    return run_module(libvirt_cpu_baseline.main, args, check_mode=check_mode)


def host_cpu(host):
    result = call(host)
    assert not result.get('failed'), result
    return dict(result['host_cpu'], name=host)


def test_host_cpu_is_the_host_model_with_expanded_features(lib):
    result = call('hv2', virttype='qemu')
    assert result['changed'] is False
    cpu = result['host_cpu']
    assert (cpu['model'], cpu['vendor'], cpu['virttype'], cpu['arch']) == (
        'Skylake-Server-IBRS', 'Intel', 'qemu', 'x86_64')
    assert cpu['features'] == sorted(HOSTS['hv2'][2])
    assert cm.parse_cpu(cpu['xml'])['mode'] == 'custom'
    assert ('baseline', 1, cm.BASELINE_EXPAND_FEATURES) in lib.calls
    assert lib.closed == 1
    assert 'baseline' not in result and 'comparisons' not in result


def test_baseline_reports_what_each_member_gives_up(lib):
    cpus = [host_cpu('hv1'), host_cpu('hv2')]
    result = call('hv1', pool='alpha', cpus=cpus)
    assert not result.get('failed'), result
    base = result['baseline']
    assert base['pool'] == 'alpha' and base['vendor'] == 'Intel' and base['computed_by'] == 'baselineHypervisorCPU'
    assert base['features'] == ['avx2', 'sse4.2', 'vmx']  # invtsc is not migratable
    members = dict((m['name'], m) for m in base['members'])
    assert members['hv1']['gives_up'] == ['invtsc']
    assert members['hv2']['gives_up'] == ['avx512f', 'invtsc']
    assert all(m['lacks'] == [] for m in members.values())
    assert base['digest'] == cm.digest(cm.parse_cpu(base['xml']))
    # computed with the migratable flag, expanded with it too
    assert ('baseline', 2, cm.BASELINE_MIGRATABLE) in lib.calls
    assert ('baseline', 2, cm.BASELINE_MIGRATABLE | cm.BASELINE_EXPAND_FEATURES) in lib.calls


def test_baseline_without_migratable_keeps_invtsc(lib):
    result = call('hv1', cpus=[host_cpu('hv1'), host_cpu('hv2')], migratable=False)
    assert 'invtsc' in result['baseline']['features']


def test_member_features_are_expanded_here_when_not_given(lib):
    cpus = [dict(host_cpu('hv1'), features=None), host_cpu('hv2')]
    result = call('hv1', cpus=[dict((k, v) for k, v in cpu.items() if v is not None) for cpu in cpus])
    assert dict((m['name'], m['gives_up']) for m in result['baseline']['members'])['hv1'] == ['invtsc']


def test_vendor_mix_is_refused_before_libvirt_is_asked(lib):
    cpus = [host_cpu('hv1'), host_cpu('hv2'), host_cpu('hv3')]
    del lib.calls[:]
    result = call('hv1', pool='alpha', cpus=cpus)
    assert result['failed']
    assert 'pool "alpha" mixes CPU vendors (AMD: hv3; Intel: hv1, hv2)' in result['msg']
    assert not [c for c in lib.calls if c[0] == 'baseline' and c[1] > 1]


def test_member_listed_twice_and_empty_cpus_are_refused(lib):
    cpu = host_cpu('hv1')
    assert 'more than once' in call('hv1', cpus=[cpu, cpu])['msg']
    assert 'at least one member' in call('hv1', cpus=[])['msg']


def test_bad_member_xml_names_the_member(lib):
    result = call('hv1', cpus=[{'name': 'hv9', 'xml': '<cpu'}])
    assert result['failed'] and 'cpus entry "hv9"' in result['msg']


def test_compare_results_with_libvirt_explanations(lib):
    model = cpu_text('Haswell-noTSX-IBRS', 'Intel', {'sse4.2', 'avx2'})
    result = call('hv1', check_mode=True, compare=[
        {'name': 'model', 'xml': model},
        {'name': 'same', 'xml': cpu_text('Haswell-noTSX-IBRS', 'Intel', HOSTS['hv1'][2])},
        {'name': 'wide', 'xml': cpu_text('Skylake-Server-IBRS', 'Intel', HOSTS['hv2'][2])},
        {'name': 'amd', 'xml': cpu_text('EPYC-Rome', 'AMD', {'sse4.2'})},
        {'name': 'broken', 'xml': cpu_text('broken', 'Intel', set())},
        {'name': 'model-again', 'xml': model},
    ])
    found = dict((entry['name'], entry) for entry in result['comparisons'])
    assert found['model']['result'] == 'superset' and found['model']['compatible']
    assert found['same']['result'] == 'identical'
    assert found['wide']['result'] == 'incompatible' and 'avx512f' in found['wide']['message']
    assert found['amd']['result'] == 'incompatible' and 'vendor' in found['amd']['message']
    assert found['broken']['result'] == 'error' and not found['broken']['compatible']
    assert found['model-again']['result'] == 'superset'
    assert len([c for c in lib.calls if c == ('compare',)]) == 5  # identical XML compared once


def test_connection_failure_and_missing_library(lib, monkeypatch):
    result = call(uri='qemu+fake:///nowhere')
    assert result['failed'] and 'cannot connect to libvirt at uri "qemu+fake:///nowhere"' in result['msg']
    monkeypatch.setattr(libvirt_cpu_baseline, 'libvirt', None)
    result = call()
    assert result['failed'] and 'libvirt-python' in result['msg']


def test_unknown_virttype_is_reported(lib):
    result = call(virttype='xen')
    assert result['failed'] and 'virttype xen' in result['msg']


def test_documentation_parses():
    import yaml
    for block in (libvirt_cpu_baseline.DOCUMENTATION, libvirt_cpu_baseline.EXAMPLES, libvirt_cpu_baseline.RETURN):
        assert yaml.safe_load(block)
    options = yaml.safe_load(libvirt_cpu_baseline.DOCUMENTATION)['options']
    assert set(options) == set(libvirt_cpu_baseline.argument_spec())


def test_connection_is_closed_after_success_and_failure(lib):
    assert not call().get('failed')
    assert lib.closed == 1
    assert call(virttype='xen')['failed']
    assert lib.closed == 2


def test_libvirt_errors_carry_their_code(lib):
    result = call(virttype='xen')
    assert '(libvirt error ' in result['msg'], result['msg']
