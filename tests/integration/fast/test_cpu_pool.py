# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU pools against real libvirtds that see real CPU generations.

Each pool member is a private libvirtd (tools/fastvirt) whose QEMU
capabilities describe one of the host CPUs in cpu_models/ (Haswell-EP,
Skylake-SP, Cascade Lake-SP, Ice Lake-SP, EPYC Rome; see
cpu_models/cpu_host_sim.py). The modules run through their main() and make
the real calls: getDomainCapabilities, baselineHypervisorCPU (migratable),
compareHypervisorCPU and defineXML. Effects are read back independently:
the persistent XML from the file libvirt stores, the live XML from libvirt.
"""

from __future__ import annotations

import os
import sys
import uuid
import xml.etree.ElementTree as ET

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cpu_models'))

import cpu_host_sim as sim  # noqa: E402  pylint: disable=wrong-import-position

INTEL = ['haswell-ep', 'skylake-sp', 'cascadelake-sp', 'icelake-sp']
ALL = INTEL + ['epyc-rome']
MIGRATABLE = 8  # VIR_DOMAIN_XML_MIGRATABLE


@pytest.fixture(scope='module')
def hosts(fastvirt, fastvirt_base):
    if not os.path.isdir(sim.CPU_MAP_DIR):
        pytest.skip('libvirt CPU map not found at %s (set LIBVIRT_CPU_MAP_DIR)' % sim.CPU_MAP_DIR)
    pool = sim.SimulatedHosts(fastvirt_base, ALL)
    try:
        yield pool.start()
    finally:
        pool.stop()


@pytest.fixture(scope='module')
def run():
    from ansible_collections.kvmlab.host_resources.plugins.modules import libvirt_cpu_baseline, libvirt_cpu_model
    from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
    modules = {'baseline': libvirt_cpu_baseline.main, 'model': libvirt_cpu_model.main}

    def call(module, check_mode=False, diff=False, **args):
        if module == 'baseline':
            args.setdefault('virttype', 'qemu')
        return run_module(modules[module], args, check_mode=check_mode, diff=diff)

    return call


@pytest.fixture(scope='module')
def cpus(hosts, run):
    """Every member's host CPU as the module reads it from its libvirtd."""
    found = {}
    for name in ALL:
        result = run('baseline', uri=hosts.uri(name))
        assert not result.get('failed'), result
        found[name] = dict(result['host_cpu'], name=name)
    return found


def pool_model(run, hosts, cpus, members, on):
    result = run('baseline', uri=hosts.uri(on), pool='test', cpus=[cpus[name] for name in members])
    assert not result.get('failed'), result
    return result['baseline']


def test_each_member_reports_its_generation(hosts, cpus):
    for name in ALL:
        fixture = hosts.fixtures[name]
        cpu = cpus[name]
        assert cpu['vendor'] == fixture['vendor']
        assert cpu['virttype'] == 'qemu' and cpu['arch'] == 'x86_64'
        # libvirt names the model of the generation (a TSX-less variant decodes as the
        # base model with hle/rtm disabled) and provides exactly the fixture's features
        assert cpu['model'].split('-noTSX')[0] == fixture['model'].split('-noTSX')[0].split('-IBRS')[0] \
            or cpu['model'] == fixture['model']
        assert set(cpu['features']) == set(fixture['features']), name


def test_pool_model_passes_compare_on_every_member(hosts, run, cpus):
    model = pool_model(run, hosts, cpus, INTEL, on='haswell-ep')
    assert model['vendor'] == 'Intel' and model['computed_by'] == 'baselineHypervisorCPU'
    features = set(model['features'])
    # never more than any member has, and nothing that blocks migration
    for name in INTEL:
        assert features <= set(cpus[name]['features']), name
    assert not features & {'invtsc', 'xsaves'}
    for name in INTEL:
        result = run('baseline', uri=hosts.uri(name), compare=[{'name': 'model', 'xml': model['xml']}])
        assert result['comparisons'][0]['result'] in ('identical', 'superset'), (name, result['comparisons'])
    # the other vendor's host refuses it, with libvirt's explanation
    other = run('baseline', uri=hosts.uri('epyc-rome'), compare=[{'name': 'model', 'xml': model['xml']}])
    assert other['comparisons'][0]['result'] == 'incompatible'
    assert 'vendor' in other['comparisons'][0]['message']


def test_what_each_member_gives_up(hosts, run, cpus):
    model = pool_model(run, hosts, cpus, INTEL, on='haswell-ep')
    members = dict((entry['name'], entry) for entry in model['members'])
    assert all(entry['lacks'] == [] for entry in members.values())
    assert members['haswell-ep']['gives_up'] == ['invtsc']  # the weakest keeps all but the unmigratable
    assert {'avx512f', 'avx512bw', 'clwb', 'pku'} <= set(members['skylake-sp']['gives_up'])
    assert {'avx512vnni', 'arch-capabilities', 'mds-no'} <= set(members['cascadelake-sp']['gives_up'])
    assert {'avx512vbmi', 'gfni', 'vaes', 'sha-ni', 'la57'} <= set(members['icelake-sp']['gives_up'])
    for name in INTEL:
        assert set(members[name]['gives_up']) == set(cpus[name]['features']) - set(model['features'])
    assert len(members['icelake-sp']['gives_up']) > len(members['skylake-sp']['gives_up']) > 1


def test_same_model_whichever_member_computes_it(hosts, run, cpus):
    digests = set(pool_model(run, hosts, cpus, INTEL, on=name)['digest'] for name in INTEL)
    assert len(digests) == 1


def test_model_widens_when_the_weakest_member_leaves(hosts, run, cpus):
    narrow = pool_model(run, hosts, cpus, INTEL, on='skylake-sp')
    wide = pool_model(run, hosts, cpus, INTEL[1:], on='skylake-sp')
    gained = set(wide['features']) - set(narrow['features'])
    assert set(narrow['features']) < set(wide['features'])
    assert {'avx512f', 'avx512vl', 'clwb'} <= gained
    for name in INTEL[1:]:
        result = run('baseline', uri=hosts.uri(name), compare=[{'name': 'wide', 'xml': wide['xml']}])
        assert result['comparisons'][0]['compatible'], name
    # why the wider model needs the Haswell host gone: it would not start there
    left = run('baseline', uri=hosts.uri('haswell-ep'), compare=[{'name': 'wide', 'xml': wide['xml']}])
    assert left['comparisons'][0]['result'] == 'incompatible'
    assert 'avx512f' in left['comparisons'][0]['message']


def test_vendor_mix_is_refused_with_a_clear_message(hosts, run, cpus):
    result = run('baseline', uri=hosts.uri('haswell-ep'), pool='mixed', cpus=[cpus[name] for name in ALL])
    assert result['failed']
    assert 'pool "mixed" mixes CPU vendors (AMD: epyc-rome; Intel: ' in result['msg']
    # libvirt itself would refuse as well, less clearly
    import libvirt
    conn = hosts.hosts['haswell-ep'].connect()
    with pytest.raises(libvirt.libvirtError, match='vendors do not match'):
        conn.baselineHypervisorCPU(None, 'x86_64', None, 'qemu', [cpus[name]['xml'] for name in ALL],
                                   libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE)


def _cpu(xml_text):
    root = ET.fromstring(xml_text)
    node = root.find('cpu')
    return node.findtext('model'), node.findtext('vendor'), node


def test_guests_carry_the_model_after_their_next_start(hosts, run, cpus):
    member = 'skylake-sp'
    virt = hosts.hosts[member]
    token = uuid.uuid4().hex[:6]
    running, stopped = 'cp%s-run' % token, 'cp%s-off' % token
    model = pool_model(run, hosts, cpus, INTEL, on='haswell-ep')
    try:
        virt.define_guest(running, vcpus=2)
        virt.define_guest(stopped, vcpus=1, start=False)
        original = hosts.persistent_xml(member, stopped)
        args = dict(uri=virt.uri, pool='alpha', cpu=model['xml'], domains=[running, stopped])

        checked = run('model', check_mode=True, diff=True, **args)
        assert checked['changed'] and sorted(checked['changed_domains']) == sorted([running, stopped])
        assert hosts.persistent_xml(member, stopped) == original  # check mode wrote nothing
        assert len(checked['diff']) == 2

        applied = run('model', **args)
        assert applied['changed'] and applied['pending'] == [running]
        for guest in (running, stopped):
            name, vendor, node = _cpu(hosts.persistent_xml(member, guest))
            assert (name, vendor) == (model['model'], 'Intel') and node.get('mode') == 'custom'
            assert 'urn:kvmlab:host-resources:cpu-pool:1' in hosts.persistent_xml(member, guest)
        dom = virt.connect().lookupByName(running)
        assert _cpu(dom.XMLDesc(0))[0] != model['model']  # running: not changed live

        again = run('model', **args)
        assert again['changed'] is False and again['pending'] == [running]

        # the next start: the guests run with the pool model
        dom.destroy()
        dom.create()
        virt.connect().lookupByName(stopped).create()
        for guest in (running, stopped):
            live = virt.connect().lookupByName(guest)
            assert _cpu(live.XMLDesc(0))[:2] == (model['model'], 'Intel')
            assert _cpu(live.XMLDesc(MIGRATABLE))[:2] == (model['model'], 'Intel')
        after_start = run('model', **args)
        assert after_start['pending'] == [] and after_start['changed'] is False
        entries = dict((entry['name'], entry) for entry in after_start['domains'])
        assert entries[running]['live_pool'] == 'alpha'

        # each guest's CPU (next start and live) fits every member of the pool
        checks = [{'name': entry['name'], 'xml': entry['cpu_after']} for entry in entries.values()]
        checks += [{'name': entry['name'] + ' live', 'xml': entry['live_cpu']} for entry in entries.values()]
        for name in INTEL:
            result = run('baseline', uri=hosts.uri(name), compare=checks)
            assert all(entry['compatible'] for entry in result['comparisons']), (name, result['comparisons'])

        # leaving: the original definition comes back, once
        restored = run('model', uri=virt.uri, state='absent', domains=[running, stopped])
        assert restored['changed'] and restored['pending'] == sorted([running, stopped])
        assert _cpu(hosts.persistent_xml(member, stopped))[:2] == _cpu(original)[:2]
        assert 'cpu-pool' not in hosts.persistent_xml(member, stopped)
        assert run('model', uri=virt.uri, state='absent', domains=[running, stopped])['changed'] is False
    finally:
        virt.remove_guest(running)
        virt.remove_guest(stopped)
