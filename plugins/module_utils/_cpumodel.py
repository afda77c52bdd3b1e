# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU models of hypervisor pools: host CPUs, the common model, guest CPU XML.

Pure functions from data to data (XML text, dicts, sets); nothing here talks
to libvirt. The modules ``libvirt_cpu_baseline`` and ``libvirt_cpu_model``
make the libvirt calls and use these functions for everything else; pool
membership, plans and the cpu_pool role's reports are in ``_cpupool``, which
uses :func:`gives_up`, :func:`lacks` and :func:`model_change` from here.

Data model
----------
A *CPU* is the parsed form of a libvirt ``<cpu>`` element (host or guest
form) or of the ``<mode name='host-model'>`` element of domain
capabilities::

    {'mode': 'custom', 'match': 'exact', 'model': 'Skylake-Server-IBRS',
     'fallback': 'forbid', 'vendor': 'Intel',
     'features': {'vmx': 'require', 'hle': 'disable', ...}}

Host CPUs (``virsh capabilities`` form) have features without a policy; they
count as ``require``. A *feature set* is the frozenset of every feature a CPU
provides once its model is expanded (libvirt expands it,
``VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES``); :func:`provided` reads it
from an expanded CPU.

Guests of a pool carry the pool's CPU in their persistent XML and a metadata
element in the namespace :data:`METADATA_NS`::

    <kcp:cpu-pool xmlns:kcp="urn:kvmlab:host-resources:cpu-pool:1"
                  pool="alpha" digest="3f2a...">
      <kcp:original><cpu mode='host-model'/></kcp:original>
    </kcp:cpu-pool>

``original`` keeps the ``<cpu>`` element the guest had before it first got a
pool CPU (empty when it had none), so leaving a pool restores it exactly;
``digest`` identifies the pool CPU, and because a running guest's live XML
keeps the metadata it was started with, the digest there tells whether the
running guest already uses the pool CPU.
"""

from __future__ import annotations

import copy
import hashlib
import xml.etree.ElementTree as ET

from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import _register_namespaces, child_insert_index

METADATA_NS = 'urn:kvmlab:host-resources:cpu-pool:1'
METADATA_PREFIX = 'kcp'
METADATA_TAG = '{%s}cpu-pool' % METADATA_NS
ORIGINAL_TAG = '{%s}original' % METADATA_NS

#: virConnectCompareCPU results, repeated so nothing here imports libvirt
COMPARE_RESULTS = {-1: 'error', 0: 'incompatible', 1: 'identical', 2: 'superset'}
#: compare results under which a guest CPU can start on (and migrate to) a host
COMPATIBLE = ('identical', 'superset')
#: libvirt flags and error codes, repeated for the same reason
BASELINE_EXPAND_FEATURES = 1
BASELINE_MIGRATABLE = 2
COMPARE_FAIL_INCOMPATIBLE = 1
DOMAIN_XML_MIGRATABLE = 8
ERR_CPU_INCOMPATIBLE = 91

#: children of a guest <cpu> that describe the model; the rest (topology,
#: numa, cache, maxphysaddr) belongs to the guest and is kept
MODEL_CHILDREN = ('model', 'vendor', 'feature')
#: children valid only with host-passthrough CPUs (cache and maxphysaddr in
#: passthrough mode); dropped under a custom model, restored on leave
PASSTHROUGH_ONLY = ('cache', 'maxphysaddr')
REQUIRING_POLICIES = ('require', 'force')


class CpuModelError(ValueError):
    """CPU or domain XML that cannot be used; the message names what and why."""


class VendorMixError(CpuModelError):
    """Hosts of more than one CPU vendor in one pool."""


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

def _parse_xml(xml_text, what):
    if not isinstance(xml_text, str) or not xml_text.strip():
        raise CpuModelError('%s: empty XML' % what)
    try:
        return ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise CpuModelError('%s: not valid XML (%s)' % (what, exc))


def _cpu_from_element(node):
    model = node.find('model')
    features = {}
    for feature in node.findall('feature'):
        name = feature.get('name')
        if name:
            features[name] = feature.get('policy') or 'require'
    vendor = node.findtext('vendor')
    return {
        'mode': node.get('mode') or ('host-model' if node.tag == 'mode' else None),
        'match': node.get('match'),
        'model': model.text.strip() if model is not None and model.text else None,
        'fallback': model.get('fallback') if model is not None else None,
        'vendor': vendor.strip() if vendor else None,
        'arch': node.findtext('arch'),
        'features': features,
    }


def parse_cpu(xml_text, what='CPU'):
    """The CPU dict of a ``<cpu>`` element or ``<mode name='host-model'>``."""
    root = _parse_xml(xml_text, what)
    if root.tag not in ('cpu', 'mode'):
        raise CpuModelError('%s: expected a <cpu> element, got <%s>' % (what, root.tag))
    return _cpu_from_element(root)


def host_model(domcaps_xml, what='domain capabilities'):
    """The host-model CPU of domain capabilities, and where they came from.

    Returns ``{'cpu': CPU dict, 'xml': guest-form <cpu> text, 'emulator',
    'machine', 'arch', 'virttype'}``. The XML is the host-model CPU as a
    ``<cpu mode='custom' match='exact'>`` definition, the form the baseline
    and compare calls accept.
    """
    root = _parse_xml(domcaps_xml, what)
    mode = None
    for node in root.iter('mode'):
        if node.get('name') == 'host-model':
            mode = node
            break
    if mode is None or mode.get('supported') == 'no' or mode.find('model') is None:
        raise CpuModelError('%s: the hypervisor reports no host-model CPU (virttype %s)'
                            % (what, root.findtext('domain')))
    cpu = _cpu_from_element(mode)
    cpu['mode'], cpu['match'] = 'custom', 'exact'
    return {
        'cpu': cpu,
        'xml': cpu_xml(cpu),
        'emulator': root.findtext('path'),
        'machine': root.findtext('machine'),
        'arch': root.findtext('arch'),
        'virttype': root.findtext('domain'),
    }


def cpu_xml(cpu, extra_children=()):
    """``<cpu>`` text of a CPU dict (guest form), with optional kept children."""
    node = ET.Element('cpu')
    for attr in ('mode', 'match'):
        if cpu.get(attr):
            node.set(attr, cpu[attr])
    if cpu.get('model'):
        model = ET.SubElement(node, 'model')
        if cpu.get('fallback'):
            model.set('fallback', cpu['fallback'])
        model.text = cpu['model']
    if cpu.get('vendor'):
        ET.SubElement(node, 'vendor').text = cpu['vendor']
    for child in extra_children:
        node.append(copy.deepcopy(child))
    for name in sorted(cpu.get('features') or {}):
        ET.SubElement(node, 'feature', {'policy': cpu['features'][name], 'name': name})
    return ET.tostring(node, encoding='unicode')


def provided(cpu):
    """Features a CPU requires (with policy require or force), as a frozenset."""
    return frozenset(name for name, policy in (cpu.get('features') or {}).items()
                     if policy in REQUIRING_POLICIES)


def disabled(cpu):
    return frozenset(name for name, policy in (cpu.get('features') or {}).items() if policy == 'disable')


def digest(cpu):
    """Short stable identifier of a CPU model (mode, match, model, vendor, features)."""
    parts = [cpu.get('mode') or '', cpu.get('match') or '', cpu.get('model') or '', cpu.get('fallback') or '',
             cpu.get('vendor') or '']
    parts += ['%s=%s' % (name, policy) for name, policy in sorted((cpu.get('features') or {}).items())]
    return hashlib.sha256('\n'.join(parts).encode('utf-8')).hexdigest()[:16]


def same_model(left, right):
    """Whether two CPU dicts describe the same model (ignoring topology and order)."""
    return digest(left) == digest(right)


def compare_result(code):
    """Name of a virConnectCompareCPU result code."""
    return COMPARE_RESULTS.get(code, 'error')


# ---------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------

def check_vendors(members, pool=None):
    """The one vendor of a pool's members; :class:`VendorMixError` otherwise.

    ``members`` is a list of ``(host, vendor)``. A host whose CPU names no
    vendor is refused as well: without it nothing guarantees the same vendor.
    """
    label = 'pool "%s"' % pool if pool else 'the pool'
    if not members:
        raise CpuModelError('%s has no members' % label)
    by_vendor = {}
    for host, vendor in members:
        by_vendor.setdefault(vendor or 'unknown', []).append(host)
    if 'unknown' in by_vendor:
        raise VendorMixError('%s: the CPU of %s names no vendor; a pool needs hosts whose CPUs name one vendor'
                             % (label, ', '.join(by_vendor['unknown'])))
    if len(by_vendor) > 1:
        listing = '; '.join('%s: %s' % (vendor, ', '.join(sorted(hosts))) for vendor, hosts in sorted(by_vendor.items()))
        raise VendorMixError('%s mixes CPU vendors (%s). Live migration between CPUs of different vendors is '
                             'impossible, so one pool takes hosts of one vendor only: put the hosts of each '
                             'vendor in a pool of their own' % (label, listing))
    return next(iter(by_vendor))


def gives_up(member_features, model_features):
    """Sorted features a member has that the pool model lacks."""
    return sorted(frozenset(member_features) - frozenset(model_features))


def lacks(member_features, model_features):
    """Sorted features of the model that a member does not have (must be empty)."""
    return sorted(frozenset(model_features) - frozenset(member_features))


def model_change(old_features, new_features):
    """``{'gained': [...], 'lost': [...]}`` from one pool model to another.

    ``gained`` non-empty: the model widened (a weaker member left);
    ``lost`` non-empty: it narrowed (a weaker member joined).
    """
    old, new = frozenset(old_features or ()), frozenset(new_features or ())
    return {'gained': sorted(new - old), 'lost': sorted(old - new)}


def pool_members_report(members, model_features):
    """Per member: its CPU, what it gives up and what the model needs that it lacks.

    ``members``: list of dicts with ``name``, ``model``, ``vendor`` and
    ``features`` (the member's expanded feature set).
    """
    report = []
    for member in members:
        features = frozenset(member.get('features') or ())
        report.append({
            'name': member['name'],
            'model': member.get('model'),
            'vendor': member.get('vendor'),
            'features': len(features),
            'gives_up': gives_up(features, model_features),
            'lacks': lacks(features, model_features) if features else [],
        })
    return report


# ---------------------------------------------------------------------------
# Guest XML
# ---------------------------------------------------------------------------

def _metadata(root):
    node = root.find('metadata')
    if node is None:
        return None, None
    return node, node.find(METADATA_TAG)


def guest_state(domain_xml, what='domain'):
    """What a domain XML says about its CPU and pool.

    ``{'cpu': CPU dict or None, 'cpu_xml': <cpu> text or None, 'pool': name
    or None, 'digest': pool CPU digest or None, 'has_original': bool}``.
    """
    root = _parse_xml(domain_xml, what)
    node = root.find('cpu')
    _meta, mark = _metadata(root)
    return {
        'cpu': _cpu_from_element(node) if node is not None else None,
        'cpu_xml': ET.tostring(node, encoding='unicode').strip() if node is not None else None,
        'pool': mark.get('pool') if mark is not None else None,
        'digest': mark.get('digest') if mark is not None else None,
        'has_original': mark is not None and mark.find(ORIGINAL_TAG) is not None,
    }


def set_pool_cpu(domain_xml, pool_cpu, pool, what='domain'):
    """The domain XML with the pool's CPU model and the pool metadata.

    ``pool_cpu`` is a CPU dict (from :func:`parse_cpu` of the baseline).
    The guest's own ``<cpu>`` children (topology, numa, cache, maxphysaddr)
    are kept, except cache and maxphysaddr in passthrough mode, which only
    host-passthrough CPUs may have; model, vendor and features are replaced
    and ``check`` is left to libvirt's default. The first time, the original ``<cpu>`` is saved in
    the metadata. Returns ``(xml, changed)``; unchanged input gives
    ``changed`` False and the input text back.
    """
    if not pool or not isinstance(pool, str):
        raise CpuModelError('%s: a pool name is needed' % what)
    if not pool_cpu.get('model') or not pool_cpu.get('vendor'):
        raise CpuModelError('%s: the pool CPU names no model or vendor' % what)
    wanted_digest = digest(dict(pool_cpu, mode='custom', match=pool_cpu.get('match') or 'exact'))
    state = guest_state(domain_xml, what)
    wanted = dict(pool_cpu, mode='custom', match=pool_cpu.get('match') or 'exact')
    if (state['cpu'] is not None and same_model(state['cpu'], wanted) and state['pool'] == pool
            and state['digest'] == wanted_digest and state['has_original']):
        return domain_xml, False

    _register_namespaces(domain_xml)
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    root = ET.fromstring(domain_xml)
    old = root.find('cpu')
    kept = [child for child in (old if old is not None else []) if child.tag not in MODEL_CHILDREN
            and not (child.tag in PASSTHROUGH_ONLY and child.get('mode') == 'passthrough')]
    new = ET.fromstring(cpu_xml(wanted, kept))

    meta, mark = _metadata(root)
    if meta is None:
        meta = ET.Element('metadata')
        root.insert(child_insert_index(root, 'metadata'), meta)
    if mark is None:
        mark = ET.SubElement(meta, METADATA_TAG)
    if mark.find(ORIGINAL_TAG) is None:
        original = ET.SubElement(mark, ORIGINAL_TAG)
        if old is not None:
            original.append(copy.deepcopy(old))
    mark.set('pool', pool)
    mark.set('digest', wanted_digest)

    if old is not None:
        index = list(root).index(old)
        root.remove(old)
        root.insert(index, new)
    else:
        root.insert(child_insert_index(root, 'cpu'), new)
    return ET.tostring(root, encoding='unicode'), True


def restore_cpu(domain_xml, what='domain'):
    """The domain XML with the ``<cpu>`` saved before its first pool CPU.

    The guest's topology and other non-model children of the current
    ``<cpu>`` are kept only when the original had none of its own. Returns
    ``(xml, changed)``; a domain without pool metadata is left unchanged.
    """
    state = guest_state(domain_xml, what)
    if state['pool'] is None and not state['has_original']:
        return domain_xml, False
    _register_namespaces(domain_xml)
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    root = ET.fromstring(domain_xml)
    meta, mark = _metadata(root)
    saved = mark.find(ORIGINAL_TAG) if mark is not None else None
    original = saved.find('cpu') if saved is not None else None
    current = root.find('cpu')
    if saved is not None:
        if current is not None:
            index = list(root).index(current)
            root.remove(current)
        else:
            index = child_insert_index(root, 'cpu')
        if original is not None:
            root.insert(index, copy.deepcopy(original))
        elif current is not None:
            # the guest had no <cpu>: keep only what is not the pool model (topology...)
            kept = [child for child in current if child.tag not in MODEL_CHILDREN]
            if kept:
                node = ET.Element('cpu')
                for child in kept:
                    node.append(child)
                root.insert(index, node)
    meta.remove(mark)
    if len(meta) == 0 and not (meta.text or '').strip():
        root.remove(meta)
    return ET.tostring(root, encoding='unicode'), True


def live_uses(live_xml, pool, pool_cpu):
    """Whether a running guest was started with this pool's CPU (its live metadata says so)."""
    if not live_xml:
        return None
    state = guest_state(live_xml, 'live domain')
    wanted = dict(pool_cpu, mode='custom', match=pool_cpu.get('match') or 'exact')
    return state['pool'] == pool and state['digest'] == digest(wanted)
