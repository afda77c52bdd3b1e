# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure CPU pool logic: parsing, vendor check, feature arithmetic, guest XML edits."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpumodel as cm

# Feature sets in the shape of real generations (subsets of libvirt's CPU map
# models Haswell-noTSX-IBRS, Skylake-Server-IBRS and Icelake-Server-noTSX).
BASE = {'fpu', 'sse', 'sse2', 'ssse3', 'sse4.1', 'sse4.2', 'avx', 'avx2', 'aes', 'pclmuldq', 'fma', 'bmi1',
        'bmi2', 'movbe', 'x2apic', 'xsave', 'pcid', 'invpcid', 'spec-ctrl', 'vmx'}
HASWELL = frozenset(BASE | {'invtsc'})
SKYLAKE = frozenset(BASE | {'avx512f', 'avx512dq', 'avx512cd', 'avx512bw', 'avx512vl', 'clwb', 'clflushopt',
                            'pku', 'xsavec', 'xsaves', 'invtsc', 'hle', 'rtm'})
ICELAKE = frozenset(SKYLAKE - {'hle', 'rtm'}
                    | {'avx512vnni', 'avx512vbmi', 'avx512vbmi2', 'gfni', 'vaes', 'vpclmulqdq', 'sha-ni', 'la57',
                       'umip'})
MODEL = frozenset(BASE)  # what the migratable baseline of the three keeps

DOMCAPS = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>kvm</domain>
  <machine>pc-q35-7.2</machine>
  <arch>x86_64</arch>
  <cpu>
    <mode name='host-passthrough' supported='yes'/>
    <mode name='host-model' supported='yes'>
      <model fallback='forbid'>Skylake-Server-IBRS</model>
      <vendor>Intel</vendor>
      <feature policy='require' name='ss'/>
      <feature policy='require' name='vmx'/>
      <feature policy='disable' name='hle'/>
    </mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='Intel'>Haswell</model>
    </mode>
  </cpu>
</domainCapabilities>"""

POOL_CPU_XML = """<cpu mode='custom' match='exact'>
  <model fallback='forbid'>Haswell-noTSX-IBRS</model>
  <vendor>Intel</vendor>
  <feature policy='require' name='vmx'/>
  <feature policy='disable' name='pcid'/>
</cpu>"""

GUEST = """<domain type='kvm' xmlns:other='urn:example:other'>
  <name>db-01</name>
  <uuid>4d1e8a5c-0f3e-4b59-9b3c-3d2b1a0c9e11</uuid>
  <metadata>
    <other:note>kept</other:note>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <vcpu placement='static'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <features><acpi/></features>
  %s
  <clock offset='utc'/>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>"""

HOST_MODEL_GUEST_CPU = """<cpu mode='host-model' check='partial'>
    <topology sockets='1' dies='1' cores='2' threads='2'/>
    <numa><cell id='0' cpus='0-3' memory='1048576' unit='KiB'/></numa>
  </cpu>"""


def pool_cpu():
    return cm.parse_cpu(POOL_CPU_XML)


# -- parsing ------------------------------------------------------------------

def test_parse_host_form_features_count_as_required():
    cpu = cm.parse_cpu("<cpu><arch>x86_64</arch><model>Haswell</model><vendor>Intel</vendor>"
                       "<feature name='vmx'/><feature name='invtsc'/></cpu>")
    assert cpu['model'] == 'Haswell' and cpu['vendor'] == 'Intel' and cpu['arch'] == 'x86_64'
    assert cm.provided(cpu) == {'vmx', 'invtsc'}
    assert cpu['mode'] is None


def test_parse_guest_form_keeps_policies():
    cpu = pool_cpu()
    assert cpu['mode'] == 'custom' and cpu['match'] == 'exact' and cpu['fallback'] == 'forbid'
    assert cm.provided(cpu) == {'vmx'}
    assert cm.disabled(cpu) == {'pcid'}


@pytest.mark.parametrize('text, message', [
    ('', 'empty XML'),
    ('<cpu>', 'not valid XML'),
    ('<domain/>', 'expected a <cpu> element'),
])
def test_parse_refuses_what_is_no_cpu(text, message):
    with pytest.raises(cm.CpuModelError, match=message):
        cm.parse_cpu(text)


def test_host_model_from_domain_capabilities():
    caps = cm.host_model(DOMCAPS)
    assert caps['cpu']['model'] == 'Skylake-Server-IBRS'
    assert caps['cpu']['vendor'] == 'Intel'
    assert (caps['emulator'], caps['machine'], caps['arch'], caps['virttype']) == (
        '/usr/bin/qemu-system-x86_64', 'pc-q35-7.2', 'x86_64', 'kvm')
    again = cm.parse_cpu(caps['xml'])
    assert again['mode'] == 'custom' and again['match'] == 'exact'
    assert again['features'] == {'ss': 'require', 'vmx': 'require', 'hle': 'disable'}


def test_host_model_unsupported_is_an_error():
    text = DOMCAPS.replace("<mode name='host-model' supported='yes'>", "<mode name='host-model' supported='no'>")
    with pytest.raises(cm.CpuModelError, match='no host-model CPU'):
        cm.host_model(text)


def test_cpu_xml_round_trip_and_digest_ignores_order():
    cpu = pool_cpu()
    assert cm.parse_cpu(cm.cpu_xml(cpu)) == dict(cpu, arch=None)
    shuffled = cm.parse_cpu(POOL_CPU_XML.replace(
        "<feature policy='require' name='vmx'/>\n  <feature policy='disable' name='pcid'/>",
        "<feature policy='disable' name='pcid'/><feature policy='require' name='vmx'/>"))
    assert cm.digest(shuffled) == cm.digest(cpu)
    assert cm.same_model(shuffled, cpu)
    flipped = dict(cpu, features={'vmx': 'disable', 'pcid': 'disable'})
    assert cm.digest(flipped) != cm.digest(cpu)


def test_compare_result_names():
    assert [cm.compare_result(code) for code in (-1, 0, 1, 2, 7)] == [
        'error', 'incompatible', 'identical', 'superset', 'error']
    assert cm.COMPATIBLE == ('identical', 'superset')


# -- pools ----------------------------------------------------------------------

def test_one_vendor_is_accepted():
    assert cm.check_vendors([('hv1', 'Intel'), ('hv2', 'Intel')], 'alpha') == 'Intel'


def test_vendor_mix_is_refused_naming_hosts_per_vendor():
    with pytest.raises(cm.VendorMixError) as info:
        cm.check_vendors([('hv1', 'Intel'), ('hv3', 'AMD'), ('hv2', 'Intel')], 'alpha')
    message = str(info.value)
    assert 'pool "alpha" mixes CPU vendors (AMD: hv3; Intel: hv1, hv2)' in message
    assert 'one vendor' in message


def test_unknown_vendor_and_empty_pool_are_refused():
    with pytest.raises(cm.VendorMixError, match='names no vendor'):
        cm.check_vendors([('hv1', 'Intel'), ('hv2', None)])
    with pytest.raises(cm.CpuModelError, match='no members'):
        cm.check_vendors([], 'alpha')


def test_what_each_member_gives_up():
    assert cm.gives_up(HASWELL, MODEL) == ['invtsc']
    assert cm.gives_up(SKYLAKE, MODEL) == sorted(SKYLAKE - BASE)
    assert 'sha-ni' in cm.gives_up(ICELAKE, MODEL) and 'hle' not in cm.gives_up(ICELAKE, MODEL)
    assert cm.lacks(HASWELL, MODEL) == []
    assert cm.lacks(HASWELL, MODEL | {'avx512f'}) == ['avx512f']


def test_model_change_widens_when_the_weakest_leaves():
    narrow = MODEL
    wide = SKYLAKE & ICELAKE  # Haswell left
    change = cm.model_change(narrow, wide)
    assert change['lost'] == []
    assert 'avx512f' in change['gained'] and 'xsaves' in change['gained']
    assert cm.model_change(wide, narrow) == {'gained': [], 'lost': change['gained']}
    assert cm.model_change(None, ['a']) == {'gained': ['a'], 'lost': []}


def test_pool_members_report():
    report = cm.pool_members_report([
        {'name': 'hv1', 'model': 'Haswell-noTSX-IBRS', 'vendor': 'Intel', 'features': sorted(HASWELL)},
        {'name': 'hv2', 'model': 'Skylake-Server-IBRS', 'vendor': 'Intel', 'features': sorted(SKYLAKE)},
    ], MODEL)
    assert [entry['name'] for entry in report] == ['hv1', 'hv2']
    assert report[0]['gives_up'] == ['invtsc'] and report[0]['features'] == len(HASWELL)
    assert report[1]['gives_up'] == sorted(SKYLAKE - MODEL)
    assert all(entry['lacks'] == [] for entry in report)


# -- guest XML ------------------------------------------------------------------

def _cpu_of(xml_text):
    return ET.fromstring(xml_text).find('cpu')


def test_set_pool_cpu_keeps_topology_and_numa_and_saves_the_original():
    before = GUEST % HOST_MODEL_GUEST_CPU
    after, changed = cm.set_pool_cpu(before, pool_cpu(), 'alpha')
    assert changed
    node = _cpu_of(after)
    assert node.get('mode') == 'custom' and node.get('match') == 'exact' and node.get('check') is None
    assert node.findtext('model') == 'Haswell-noTSX-IBRS' and node.findtext('vendor') == 'Intel'
    assert node.find('topology').get('threads') == '2'
    assert node.find('numa/cell').get('cpus') == '0-3'
    state = cm.guest_state(after)
    assert state['pool'] == 'alpha' and state['has_original']
    assert state['digest'] == cm.digest(pool_cpu())
    assert cm.same_model(state['cpu'], pool_cpu())
    # the other application's metadata and the guest's own elements stay
    assert 'urn:example:other' in after and 'kept' in after
    assert ET.fromstring(after).find('features/acpi') is not None


def test_passthrough_only_children_are_dropped_and_restored():
    passthrough = ("""<cpu mode='host-passthrough' check='none' migratable='on'>
    <topology sockets='1' dies='1' cores='2' threads='1'/>
    <cache mode='passthrough'/>
    <maxphysaddr mode='passthrough'/>
  </cpu>""")
    after = cm.set_pool_cpu(GUEST % passthrough, pool_cpu(), 'alpha')[0]
    node = _cpu_of(after)
    assert node.get('migratable') is None and node.find('topology') is not None
    assert node.find('cache') is None and node.find('maxphysaddr') is None
    restored = _cpu_of(cm.restore_cpu(after)[0])
    assert restored.get('mode') == 'host-passthrough' and restored.find('cache').get('mode') == 'passthrough'
    emulated = HOST_MODEL_GUEST_CPU.replace('<numa>', "<cache level='3' mode='emulate'/><numa>")
    assert _cpu_of(cm.set_pool_cpu(GUEST % emulated, pool_cpu(), 'alpha')[0]).find('cache') is not None


def test_set_pool_cpu_is_idempotent_and_keeps_the_first_original():
    first = cm.set_pool_cpu(GUEST % HOST_MODEL_GUEST_CPU, pool_cpu(), 'alpha')[0]
    again, changed = cm.set_pool_cpu(first, pool_cpu(), 'alpha')
    assert not changed and again == first
    # a move: same model, other pool -> metadata changes, original stays the host-model one
    moved, changed = cm.set_pool_cpu(first, pool_cpu(), 'beta')
    assert changed and cm.guest_state(moved)['pool'] == 'beta'
    wider = dict(pool_cpu(), features={'vmx': 'require'})
    recalc, changed = cm.set_pool_cpu(moved, wider, 'beta')
    assert changed
    restored, changed = cm.restore_cpu(recalc)
    assert changed
    node = _cpu_of(restored)
    assert node.get('mode') == 'host-model' and node.find('numa') is not None
    assert cm.guest_state(restored)['pool'] is None


def test_guest_without_cpu_gets_one_after_os_and_features_and_loses_it_again():
    before = GUEST % ''
    after, changed = cm.set_pool_cpu(before, pool_cpu(), 'alpha')
    assert changed
    tags = [child.tag for child in ET.fromstring(after)]
    assert tags.index('cpu') == tags.index('features') + 1
    restored, changed = cm.restore_cpu(after)
    assert changed and _cpu_of(restored) is None
    root = ET.fromstring(restored)
    # our metadata is gone, the other application's stays
    assert root.find('metadata/{urn:example:other}note') is not None
    assert root.find('metadata/' + cm.METADATA_TAG) is None


def test_restore_keeps_topology_added_to_a_guest_that_had_no_cpu():
    with_pool = cm.set_pool_cpu(GUEST % '', pool_cpu(), 'alpha')[0]
    root = ET.fromstring(with_pool)
    ET.SubElement(root.find('cpu'), 'topology', {'sockets': '1', 'cores': '4', 'threads': '1'})
    restored = cm.restore_cpu(ET.tostring(root, encoding='unicode'))[0]
    node = _cpu_of(restored)
    assert node is not None and node.find('model') is None and node.find('topology').get('cores') == '4'


def test_restore_leaves_guests_without_pool_metadata_alone():
    text = GUEST % HOST_MODEL_GUEST_CPU
    assert cm.restore_cpu(text) == (text, False)


def test_metadata_element_is_removed_when_it_only_held_the_pool():
    text = (GUEST % HOST_MODEL_GUEST_CPU).replace('<other:note>kept</other:note>', '')
    with_pool = cm.set_pool_cpu(text, pool_cpu(), 'alpha')[0]
    restored = cm.restore_cpu(with_pool)[0]
    assert ET.fromstring(restored).find('metadata') is None


def test_set_pool_cpu_refuses_incomplete_input():
    with pytest.raises(cm.CpuModelError, match='pool name'):
        cm.set_pool_cpu(GUEST % '', pool_cpu(), '')
    with pytest.raises(cm.CpuModelError, match='no model or vendor'):
        cm.set_pool_cpu(GUEST % '', dict(pool_cpu(), vendor=None), 'alpha')


def test_live_uses_reads_the_metadata_the_guest_was_started_with():
    persistent = cm.set_pool_cpu(GUEST % HOST_MODEL_GUEST_CPU, pool_cpu(), 'alpha')[0]
    assert cm.live_uses(persistent, 'alpha', pool_cpu()) is True
    assert cm.live_uses(GUEST % HOST_MODEL_GUEST_CPU, 'alpha', pool_cpu()) is False
    assert cm.live_uses(persistent, 'beta', pool_cpu()) is False
    assert cm.live_uses(None, 'alpha', pool_cpu()) is None
