# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared execution pool's decisions, as pure functions (data in, data out).

Used by the ``execution_pool`` module; nothing here talks to libvirt,
systemd or ``/proc``.

- Which guests the layer manages and where each one's tier comes from:
  :func:`resolve_guests` (the operator's list, else the guest's own libvirt
  ``<metadata>``, else the default tier; excluded guests are left alone).
- The guest's kvmlab metadata element: :func:`parse_metadata`,
  :func:`metadata_fragment`.
- What apply asks of libvirt and systemd per guest: :func:`pin_request`,
  :func:`scope_wanted`.
- Status items rule by rule (:func:`thread_state`, :func:`weight_state`,
  :func:`allowed_state`, :func:`persistent_state`), one list per guest
  (:func:`guest_items`) and the verdict (:func:`status`) through
  ``_status.verdict``.
- The snapshot's values (:func:`snapshot_values`) and the restore plan
  (:func:`restore_plan`, :func:`scope_restore`, :func:`cpuset_fixup`).
- The tier weight as a budget over the cgroup nodes under machine.slice
  (:func:`weight_budget`).

Kinds: ``placement`` (the apply entry point: pins, weights, partition,
metadata, scope AllowedCPUs) and ``weights`` (the contention entry points:
shares, partition and the scopes' CPUWeight only).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    parse_cpulist,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import verdict as _verdict

KINDS = ('placement', 'weights')

#: The libvirt metadata namespace of this collection and the element apply writes.
METADATA_NS = 'https://kvmlab.invalid/host_resources/1'
METADATA_PREFIX = 'kvmlab'
METADATA_ELEMENT = 'guest'

#: Where a guest's tier came from.
SOURCES = ('inventory', 'metadata', 'default')

#: Verdict labels: (applied, stock, drifted).
LABELS = {
    'placement': ('shared execution pool', 'stock', 'mixed'),
    'weights': ('weighted', 'stock', 'mixed'),
}

#: What a snapshot of each kind restores: libvirt_pin entry keys and live scope properties.
RESTORE_KEYS = {
    'placement': {'domain': ('name', 'scope', 'vcpu_pins', 'emulator_cpuset', 'iothread_pins', 'cpu_shares',
                             'partition'),
                  'scope': ('CPUWeight', 'AllowedCPUs')},
    'weights': {'domain': ('name', 'scope', 'cpu_shares', 'partition'),
                'scope': ('CPUWeight',)},
}
#: The ``kind`` recorded in the snapshot values (release 1 wrote apply / contention).
SNAPSHOT_KIND = {'placement': 'apply', 'weights': 'contention'}

#: What "stock" means for a live weight: the kernel's and libvirt's defaults.
STOCK_SHARES = (100, 1024)
STOCK_CPU_WEIGHT = ('', '100')
KERNEL_CPU_WEIGHT = 100

NOT_RUNNING = 'not running: applies at its next start'
UNPINNED = 'unpinned'


class PoolError(ValueError):
    """Guests, tiers or snapshot values the layer cannot work with; the message names the guest or key."""


# ---------------------------------------------------------------------------
# Metadata

def metadata_fragment(tier):
    """The element apply gives ``virDomainSetMetadata`` (libvirt puts it in :data:`METADATA_NS`)."""
    if not isinstance(tier, str) or not re.match(r'^[A-Za-z0-9_.-]+$', tier):
        raise PoolError('tier "%s" cannot be written into the guest metadata' % (tier,))
    return '<%s><tier>%s</tier></%s>' % (METADATA_ELEMENT, tier, METADATA_ELEMENT)


def _local(tag):
    return tag.split('}', 1)[1] if tag.startswith('{') else tag


def _strip_ns(element):
    copy = ET.Element(_local(element.tag), dict(element.attrib))
    copy.text = element.text
    copy.tail = None
    for child in element:
        sub = _strip_ns(child)
        sub.tail = child.tail
        copy.append(sub)
    return copy


def parse_metadata(xml_text):
    """The kvmlab metadata of a domain XML.

    Returns ``{'has_metadata', 'element', 'prefix', 'tier'}``: whether the
    XML has a ``<metadata>`` element at all, the kvmlab element as
    ``virDomainSetMetadata`` takes it back (namespace stripped; None when
    absent), the namespace prefix used and the tier it names (None when
    absent or empty). Accepts ``<kvmlab:guest><kvmlab:tier>`` and a bare
    ``<kvmlab:tier>`` element.
    """
    root = ET.fromstring(xml_text)
    metadata = root.find('metadata')
    result = {'has_metadata': metadata is not None, 'element': None, 'prefix': METADATA_PREFIX, 'tier': None}
    if metadata is None:
        return result
    ours = [child for child in metadata if child.tag.startswith('{%s}' % METADATA_NS)]
    if not ours:
        return result
    element = ours[0]
    result['element'] = ET.tostring(_strip_ns(element), encoding='unicode')
    match = re.search(r'<([A-Za-z_][\w.-]*):%s\b[^>]*xmlns:\1=["\']%s["\']'
                      % (re.escape(_local(element.tag)), re.escape(METADATA_NS)), xml_text)
    if match:
        result['prefix'] = match.group(1)
    if _local(element.tag) == 'tier':
        node = element
    else:
        node = None
        for child in element:
            if _local(child.tag) == 'tier':
                node = child
                break
    if node is not None and (node.text or '').strip():
        result['tier'] = node.text.strip()
    return result


# ---------------------------------------------------------------------------
# Which guests, which tier

def _tier_key(tiers, tier):
    if not isinstance(tier, str):
        return None
    for key in tiers:
        if str(key).lower() == tier.strip().lower():
            return key
    return None


def resolve_guests(domains, inventory, exclude, metadata_tiers, default_tier, tiers):
    """Every guest of the connection with its tier and where the tier came from.

    ``domains``: names of all defined domains. ``inventory``: the operator's
    list of dicts (``name``, optional ``tier``, ``emulator_policy``,
    ``vcpus``, ``iothreads``). ``exclude``: names left alone.
    ``metadata_tiers``: name -> tier from the guest's metadata (or None).
    The tier is the inventory's, else the metadata's, else ``default_tier``.

    Returns ``{'guests': [...], 'excluded': [...]}``; guests keep the
    inventory's order first (the order isolated emulator CPUs are handed
    out in), then the other domains by name; each guest dict has ``name``,
    ``tier``, ``tier_source`` and the inventory's other keys. Raises
    :class:`PoolError` for an inventory guest that libvirt does not know, a
    malformed entry, or a tier that is not one of ``tiers``.
    """
    if not isinstance(tiers, dict) or not tiers:
        raise PoolError('tiers must be a non-empty dict of tier name to settings (kvmlab_tiers)')
    if not isinstance(inventory, list):
        raise PoolError('guests must be a list of dicts with name and tier')
    if _tier_key(tiers, default_tier) is None:
        raise PoolError('default_tier "%s" is not one of the tiers (%s)' % (default_tier, ', '.join(sorted(tiers))))
    domains = list(domains)
    known = set(domains)
    excluded = set(exclude or [])
    listed = []
    seen = set()
    for index, entry in enumerate(inventory):
        if not isinstance(entry, dict) or not isinstance(entry.get('name'), str) or not entry['name']:
            raise PoolError('guests[%d] must be a dict with a name (and a tier), got %r' % (index, entry))
        if entry['name'] in seen:
            raise PoolError('guest %s is listed more than once in the guests' % entry['name'])
        seen.add(entry['name'])
        listed.append(entry)
    missing = [entry['name'] for entry in listed if entry['name'] not in known and entry['name'] not in excluded]
    if missing:
        raise PoolError('guest(s) %s of the guest list are not defined in libvirt on this host; define them '
                        'first, remove them from the list or name them in the exclude list' % ', '.join(missing))
    order = [entry['name'] for entry in listed if entry['name'] in known] + sorted(
        name for name in domains if name not in seen)
    by_name = dict((entry['name'], entry) for entry in listed)
    guests = []
    for name in order:
        if name in excluded:
            continue
        entry = dict(by_name.get(name, {'name': name}))
        meta = (metadata_tiers or {}).get(name)
        if entry.get('tier'):
            source = 'inventory'
        elif meta:
            entry['tier'], source = meta, 'metadata'
        else:
            entry['tier'], source = default_tier, 'default'
        if _tier_key(tiers, entry['tier']) is None:
            raise PoolError('guest %s: tier "%s" (from the %s) is not one of the tiers (%s)'
                            % (name, entry['tier'], {'inventory': 'guest list', 'metadata': 'guest\'s libvirt '
                                                     'metadata', 'default': 'default tier'}[source],
                               ', '.join(sorted(tiers))))
        entry['tier_source'] = source
        guests.append(entry)
    return {'guests': guests, 'excluded': sorted(name for name in excluded if name in known)}


def wants_metadata(entry, kind):
    """The tier apply writes into the guest's metadata, or None.

    Only a tier the operator's list gave is recorded (it then travels with
    the guest); a tier read from the metadata is already there, and the
    default tier is not written so that it follows the operator's default.
    The contention entry points write none.
    """
    if kind == 'placement' and entry.get('tier_source') == 'inventory':
        return entry['tier']
    return None


# ---------------------------------------------------------------------------
# What apply asks for

def pin_request(entry, kind):
    """The ``libvirt_pin``-style request for one placed guest (``_libvirt.parse_request`` takes it)."""
    request = {'name': entry['name'], 'cpu_shares': entry['cpu_shares'], 'partition': entry['partition']}
    if kind == 'placement':
        request.update({'vcpu_cpuset': entry['vcpu_cpuset'], 'emulator_cpuset': entry['emulator_cpuset'],
                        'iothread_cpuset': entry['iothread_cpuset']})
    return request


def covers(effective, wanted):
    """True when the CPU list ``effective`` holds every CPU of ``wanted`` (both cpulists)."""
    have, want = _cpus(effective), _cpus(wanted)
    return have is not None and want is not None and set(want) <= set(have)


def scope_wanted(entry, kind, scope_allowed_cpus, weight=None, allowed='', effective=None):
    """Live properties of a running guest's scope, in systemd's assignment spelling.

    ``weight`` overrides the tier weight (the budget share of a scope that
    still sits in machine.slice). AllowedCPUs is set only on a scope that is
    restricted (``allowed`` not empty) or whose effective CPUs (``effective``,
    the cgroup's cpuset.cpus.effective) miss some of ``scope_allowed_cpus``:
    an unrestricted scope already lets the vCPU, emulator and IOThread pins
    work, and a runtime AllowedCPUs on it could not be taken back exactly (the
    kernel refuses to empty the cpuset of a cgroup with tasks).
    """
    wanted = {'CPUWeight': str(entry['cpu_weight'] if weight is None else weight)}
    if kind == 'placement' and (allowed or not covers(effective, scope_allowed_cpus)):
        wanted['AllowedCPUs'] = scope_allowed_cpus
    return wanted


# ---------------------------------------------------------------------------
# Status rules

def _cpus(text):
    try:
        return parse_cpulist(text or '')
    except CpuListError:
        return None


def thread_state(seen, wanted, online):
    """``applied`` when every thread of the class runs on ``wanted``, ``stock`` on all online CPUs, else ``drifted``."""
    if seen == [wanted]:
        return 'applied'
    if seen == [online]:
        return 'stock'
    return 'drifted'


def on_reserved(seen, reserved):
    """The reserved CPUs the threads may run on (canonical cpulist, '' for none)."""
    reserved_set = _cpus(reserved) or frozenset()
    hit = set()
    for text in seen:
        cpus = _cpus(text)
        if cpus:
            hit |= cpus & reserved_set
    return format_cpulist(hit)


def weight_state(prop, cgroup_weight, wanted):
    """systemd hosts: the scope's CPUWeight property and its cgroup's cpu.weight against the tier weight.

    Stock is systemd's default (``''``, or ``'100'``) with the kernel's
    cpu.weight 100 (or an unreadable file).
    """
    if prop == str(wanted) and cgroup_weight in (None, wanted):
        return 'applied'
    if prop in STOCK_CPU_WEIGHT and cgroup_weight in (None, KERNEL_CPU_WEIGHT):
        return 'stock'
    return 'drifted'


def shares_state(shares, wanted):
    """Hosts without systemd: libvirt's live cpu_shares against the tier's; stock is 100 or 1024."""
    if shares == wanted:
        return 'applied'
    if shares in STOCK_SHARES:
        return 'stock'
    return 'drifted'


def allowed_state(allowed, wanted, effective=None):
    """The scope's CPUs, judged on what is effective.

    ``applied`` when AllowedCPUs is ``wanted``; ``info`` when the scope is
    unrestricted (``''``) and its effective CPUs cover ``wanted`` (stock and
    applied hosts alike: nothing to do); ``drifted`` when the pins cannot all
    work (an unrestricted scope whose effective CPUs miss some of ``wanted``,
    or any other restriction).
    """
    if allowed == wanted:
        return 'applied'
    if allowed == '' and covers(effective, wanted):
        return 'info'
    return 'drifted'


def persistent_state(config, entry, metadata_tier, kind='placement'):
    """The persistent XML against the placement: pins, shares, partition and (placement) the tier metadata.

    ``config`` is ``_libvirt.format_state`` of the inactive XML. Stock is no
    pin, no ``<shares>``, no partition and no kvmlab metadata (a tier the
    operator wrote there is not the layer's doing).
    """
    vpins = sorted(set(config['vcpu_pins'].values()))
    ipins = sorted(set(config['iothread_pins'].values()))
    want_meta = wants_metadata(entry, kind)
    meta_ok = want_meta is None or (metadata_tier or '').lower() == want_meta.lower()
    if kind == 'placement':
        applied = (vpins == [entry['vcpu_cpuset']] and config['emulator_cpuset'] == entry['emulator_cpuset']
                   and ipins == ([entry['iothread_cpuset']] if ipins else [])
                   and config['cpu_shares'] == entry['cpu_shares'] and config['partition'] == entry['partition']
                   and meta_ok)
    else:
        applied = config['cpu_shares'] == entry['cpu_shares'] and config['partition'] == entry['partition']
    pins_stock = (not [p for p in vpins if p != UNPINNED] and config['emulator_cpuset'] == UNPINNED
                  and not [p for p in ipins if p != UNPINNED])
    meta_stock = metadata_tier is None or entry.get('tier_source') == 'metadata'
    stock = config['cpu_shares'] == 0 and config['partition'] == '' and meta_stock
    if kind == 'placement':
        stock = stock and pins_stock
    if applied:
        return 'applied'
    return 'stock' if stock else 'drifted'


def _persistent_text(config, entry, metadata_tier, kind):
    vpins = sorted(set(config['vcpu_pins'].values()))
    ipins = sorted(set(config['iothread_pins'].values()))
    want_meta = wants_metadata(entry, kind)
    if kind == 'placement':
        intended = 'vCPUs %s, emulator %s%s, shares %s, partition %s' % (
            entry['vcpu_cpuset'], entry['emulator_cpuset'],
            ', IOThreads %s' % entry['iothread_cpuset'] if ipins else '', entry['cpu_shares'], entry['partition'])
        live = 'vCPUs %s, emulator %s%s, shares %s, partition %s' % (
            '|'.join(vpins), config['emulator_cpuset'], ', IOThreads %s' % '|'.join(ipins) if ipins else '',
            config['cpu_shares'] or 'unset', config['partition'] or 'unset')
    else:
        intended = 'shares %s, partition %s' % (entry['cpu_shares'], entry['partition'])
        live = 'shares %s, partition %s' % (config['cpu_shares'] or 'unset', config['partition'] or 'unset')
    if want_meta is not None:
        intended += ', tier metadata %s' % want_meta
    if want_meta is not None or metadata_tier is not None:
        live += ', tier metadata %s' % (metadata_tier or 'unset')
    return intended, live


def guest_items(guest, context, kind='placement'):
    """Status items of one placed guest.

    ``guest``: ``{'entry'`` (placement entry with ``tier_source``),
    ``'active'``, ``'proc'`` (``_qemu.read_guest``), ``'libvirt'``
    (``{'live', 'config'}`` as ``_libvirt.format_state``), ``'scope'``
    (``{'unit', 'properties', 'cgroup'}`` or None) and ``'metadata'``
    (:func:`parse_metadata`)``}``. ``context``: ``online``, ``reserved``,
    ``scope_allowed_cpus``, ``systemd`` and optionally ``weights`` (unit ->
    the weight apply gives it, when the budget applies).
    Items carry ``name``, ``class`` (placement, weight, persistent, info),
    ``guest``, ``tier``, ``tier_source``, ``intended``, ``live`` and ``state``.
    """
    entry = guest['entry']
    name = entry['name']
    proc = guest.get('proc') or {}
    running = bool(guest.get('active')) and bool(proc.get('running'))
    config = guest['libvirt']['config']
    live_state = guest['libvirt'].get('live')
    scope = guest.get('scope')
    meta_tier = (guest.get('metadata') or {}).get('tier')
    base = {'guest': name, 'tier': entry['tier'], 'tier_source': entry.get('tier_source')}
    items = []

    def add(item_name, cls, intended, live, state):
        item = dict(base)
        item.update({'name': item_name, 'class': cls, 'intended': intended, 'live': live, 'state': state})
        items.append(item)

    if kind == 'placement':
        add('%s tier' % name, 'info', entry['tier'], '%s from %s' % (entry['tier'], entry.get('tier_source')),
            'info')
        classes = [('vCPU', 'vcpu', entry['vcpu_cpuset']), ('emulator', 'emulator', entry['emulator_cpuset'])]
        if proc.get('counts', {}).get('iothread') or config['iothread_pins']:
            classes.append(('IOThread', 'iothread', entry['iothread_cpuset']))
        for label, key, wanted in classes:
            seen = proc.get('cpus', {}).get(key, []) if running else []
            if running:
                live = ' and '.join(seen) if seen else 'no such threads'
                reserved = on_reserved(seen, context.get('reserved')) if key == 'vcpu' else ''
                if reserved:
                    live += ' (can run on reserved CPUs %s)' % reserved
                state = thread_state(seen, wanted, context['online'])
            else:
                live, state = NOT_RUNNING, 'info'
            add('%s %s threads' % (name, label), 'placement', wanted, live, state)

    # live weight
    if context.get('systemd'):
        props = (scope or {}).get('properties') or {}
        cgroup = (scope or {}).get('cgroup') or {}
        prop = props.get('CPUWeight', '')
        cg = cgroup.get('cpu_weight')
        wanted = (context.get('weights') or {}).get((scope or {}).get('unit'), entry['cpu_weight'])
        live = 'CPUWeight %s, cpu.weight %s' % (prop or 'default', cg if cg is not None else 'unreadable')
        state = weight_state(prop, cg, wanted)
        intended = '%s CPUWeight %s' % (entry['tier'], wanted)
    else:
        shares = (live_state or {}).get('cpu_shares')
        live = 'cpu_shares %s' % shares
        state = shares_state(shares, entry['cpu_shares'])
        intended = '%s CPUWeight %s' % (entry['tier'], entry['cpu_weight'])
    if not running:
        live, state = NOT_RUNNING, 'info'
    add('%s weight' % name, 'weight', intended, live, state)

    if kind == 'placement' and context.get('systemd'):
        if running:
            props = (scope or {}).get('properties') or {}
            allowed = props.get('AllowedCPUs', '')
            effective = ((scope or {}).get('cgroup') or {}).get('cpuset_cpus_effective') or 'unreadable'
            live = '%s (effective %s) on %s' % (allowed or 'unrestricted', effective, (scope or {}).get('unit'))
            state = allowed_state(allowed, context['scope_allowed_cpus'], effective)
        else:
            live, state = NOT_RUNNING, 'info'
        add('%s scope AllowedCPUs' % name, 'placement', context['scope_allowed_cpus'], live, state)

    intended, live = _persistent_text(config, entry, meta_tier, kind)
    add('%s persistent XML' % name, 'persistent', intended, live, persistent_state(config, entry, meta_tier, kind))

    if kind == 'placement':
        live_partition = (live_state or {}).get('partition') if running else None
        next_start = config['partition'] or '/machine'
        text = ('running in %s' % live_partition if live_partition else 'not running') + ', next start in ' + next_start
        if live_partition and live_partition != next_start:
            text += ' (pending)'
        add('%s partition' % name, 'info', entry['partition'], text, 'info')
    return items


def slice_items(slices, tiers):
    """Info items for the tier slices: ``slices`` maps a slice name to its ``systemctl show`` block."""
    items = []
    for key in sorted(tiers):
        settings = tiers[key] if isinstance(tiers[key], dict) else {}
        name = settings.get('slice')
        if not name or name not in slices:
            continue
        show = slices[name]
        defined = bool(show.get('FragmentPath') or show.get('DropInPaths'))
        weight = show.get('CPUWeight', '')
        weight = 'default' if weight in ('', '[not set]') else weight
        items.append({'name': name, 'class': 'info', 'guest': None, 'tier': key, 'tier_source': None,
                      'intended': 'defined by the host foundation, CPUWeight %s' % settings.get('cpu_weight', '?'),
                      'live': (('defined, CPUWeight %s' % weight) if defined
                               else 'no unit file (guests of this tier would get the default weight)'),
                      'state': 'info'})
    return items


def excluded_items(names):
    """Info items for the guests the operator excluded."""
    return [{'name': '%s excluded' % name, 'class': 'info', 'guest': name, 'tier': None, 'tier_source': None,
             'intended': 'left alone (exclude list)', 'live': 'not managed', 'state': 'info'} for name in names]


def status(items, kind):
    """The layer's status from its items: ``verdict``, ``summary``, ``mixed`` and ``items``.

    The weights kind judges the weight items only. ``mixed`` names the items
    that are not applied when the verdict is mixed.
    """
    if kind not in KINDS:
        raise PoolError('kind must be one of %s' % ', '.join(KINDS))
    if kind == 'weights':
        items = [item for item in items if item['class'] == 'weight']
    labels = LABELS[kind]
    result = _verdict(items, *labels)
    mixed = result['drifted'] + result['stock'] if result['verdict'] == labels[2] else []
    return {'verdict': result['verdict'], 'summary': result['summary'], 'mixed': mixed, 'items': items,
            'counted': result['counted']}


# ---------------------------------------------------------------------------
# Snapshot and restore

def snapshot_values(kind, uri, guests, entries, scopes, metadata, shapes=None):
    """The ``values`` of the layer's snapshot.

    ``guests``: names of the placed guests. ``entries``: the
    ``_libvirt.snapshot_entries`` of each (all scopes). ``scopes``: guest ->
    ``{'unit', 'properties', 'cgroup'}`` for the running ones (systemd hosts).
    ``metadata``: guest -> :func:`parse_metadata` and ``shapes``: guest ->
    :func:`xml_shape` of the persistent XML (placement only). Domain entries
    keep only the keys the kind restores; an entry left with nothing but its
    name and scope is dropped.
    """
    keys = RESTORE_KEYS[kind]
    domains = []
    for entry in entries:
        kept = dict((key, value) for key, value in entry.items() if key in keys['domain'])
        if kept.get('scope') == 'live':
            kept.pop('partition', None)
        if len(kept) > 2:
            domains.append(kept)
    recorded = []
    for name in guests:
        scope = (scopes or {}).get(name)
        if not scope or not scope.get('unit'):
            continue
        props = scope.get('properties') or {}
        record = {'guest': name, 'unit': scope['unit'],
                  'properties': dict((key, props.get(key, '')) for key in keys['scope'])}
        cgroup = scope.get('cgroup') or {}
        if 'AllowedCPUs' in keys['scope'] and cgroup.get('cpuset_cpus') is not None:
            record['cgroup'] = {'cpuset_cpus': cgroup['cpuset_cpus']}
        recorded.append(record)
    values = {'kind': SNAPSHOT_KIND[kind], 'uri': uri, 'guests': list(guests), 'domains': domains,
              'scopes': recorded}
    if kind == 'placement':
        values['metadata'] = dict(
            (name, {'element': meta.get('element'), 'prefix': meta.get('prefix', METADATA_PREFIX),
                    'has_metadata': bool(meta.get('has_metadata'))})
            for name, meta in sorted((metadata or {}).items()))
        values['xml_shape'] = dict((name, dict(shape)) for name, shape in sorted((shapes or {}).items()))
    return values


def check_values(values, kind, path):
    """Raise :class:`PoolError` unless ``values`` is a snapshot of this kind with usable records."""
    if values.get('kind') != SNAPSHOT_KIND[kind]:
        raise PoolError('%s: a snapshot of %s, not of %s' % (path, values.get('kind'), SNAPSHOT_KIND[kind]))
    for key in ('guests', 'domains', 'scopes'):
        if not isinstance(values.get(key, []), list):
            raise PoolError('%s: "%s" must be a list' % (path, key))
    for index, entry in enumerate(values.get('domains', [])):
        if not isinstance(entry, dict) or not entry.get('name') or entry.get('scope') not in ('live', 'config'):
            raise PoolError('%s: domains[%d] needs a name and a scope live or config' % (path, index))
    for index, entry in enumerate(values.get('scopes', [])):
        if not isinstance(entry, dict) or not entry.get('unit') or not isinstance(entry.get('properties'), dict):
            raise PoolError('%s: scopes[%d] needs a unit and properties' % (path, index))
    for key in ('metadata', 'xml_shape'):
        if not isinstance(values.get(key, {}), dict):
            raise PoolError('%s: "%s" must be a mapping' % (path, key))


def restore_plan(values, kind, now):
    """What rollback does, from the snapshot's values and the guests as they are now.

    ``now``: guest -> ``{'defined', 'running', 'scope'}``. Returns
    ``{'domains'`` (libvirt_pin entries, scope live or config),
    ``'scopes'`` (``{'guest', 'unit', 'properties', 'cgroup', 'restarted'}``
    for each running guest's current scope), ``'metadata'`` (guest ->
    record), ``'gone'`` (snapshot guests libvirt no longer knows)``}``.

    A guest that was stopped at snapshot time and runs now started from
    the applied XML: its live threads go back to what the snapshot's
    persistent pins give (unpinned: the default CPUs). A running guest's
    current scope gets the properties its scope had then; a guest that did
    not run then (or whose scope was not recorded) the defaults (``''``).
    """
    keys = RESTORE_KEYS[kind]
    gone = sorted(name for name in values.get('guests', []) if not (now.get(name) or {}).get('defined'))
    domains = [dict(entry) for entry in values.get('domains', []) if entry['name'] not in gone]
    has_live = set(entry['name'] for entry in domains if entry['scope'] == 'live')
    if 'vcpu_pins' in keys['domain']:
        for entry in list(domains):
            name = entry['name']
            if entry['scope'] != 'config' or name in has_live or not (now.get(name) or {}).get('running'):
                continue
            domains.append({'name': name, 'scope': 'live', 'vcpu_pins': entry.get('vcpu_pins', {}),
                            'emulator_cpuset': entry.get('emulator_cpuset'),
                            'iothread_pins': entry.get('iothread_pins', {})})
    recorded = dict((entry.get('guest'), entry) for entry in values.get('scopes', []))
    scopes = []
    for name in values.get('guests', []):
        state = now.get(name) or {}
        if not state.get('running') or not state.get('scope'):
            continue
        record = recorded.get(name)
        if record:
            props = dict((key, record['properties'].get(key, '')) for key in keys['scope'])
        else:
            props = dict((key, '') for key in keys['scope'])
        scopes.append({'guest': name, 'unit': state['scope'], 'properties': props,
                       'cgroup': (record or {}).get('cgroup') or ({'cpuset_cpus': ''} if not record else {}),
                       'restarted': record is None or record['unit'] != state['scope']})
    metadata = dict((name, record) for name, record in (values.get('metadata') or {}).items()
                    if name not in gone and (now.get(name) or {}).get('defined'))
    shapes = dict((name, shape) for name, shape in (values.get('xml_shape') or {}).items()
                  if name not in gone and (now.get(name) or {}).get('defined'))
    return {'domains': domains, 'scopes': scopes, 'metadata': metadata, 'shapes': shapes, 'gone': gone}


def scope_restore(recorded, current):
    """The properties to set on a scope (``''`` resets to systemd's default, inherit for AllowedCPUs)."""
    return dict((key, value) for key, value in sorted(recorded.items()) if current.get(key, '') != value)


def cpuset_fixup(record, cgroup_after):
    """The text to write to the scope's ``cpuset.cpus`` after its properties were reset, or None.

    When the snapshot recorded an unrestricted scope (AllowedCPUs ``''``
    and ``cpuset.cpus`` empty: inherit) and the file still lists CPUs after
    systemd's reset, the file goes back to empty rather than staying on a
    list of every CPU.
    """
    if record.get('properties', {}).get('AllowedCPUs', None) != '':
        return None
    if (record.get('cgroup') or {}).get('cpuset_cpus') != '':
        return None
    seen = (cgroup_after or {}).get('cpuset_cpus')
    if seen:
        return ''
    return None


def metadata_restore(record, current):
    """``('keep' | 'set' | 'remove', element)`` for one guest's kvmlab metadata element.

    ``record``: the snapshot's ``{'element', 'prefix', 'has_metadata'}``;
    ``current``: :func:`parse_metadata` now. What libvirt leaves of an emptied
    ``<metadata>`` is tidied by :func:`tidy_xml`.
    """
    want = record.get('element')
    have = current.get('element')
    if want is not None:
        if _canonical_xml(have) != _canonical_xml(want):
            return 'set', want
        return 'keep', None
    if have is not None:
        return 'remove', None
    return 'keep', None


_IOTHREADIDS_RE = re.compile(r'\n?[ \t]*<iothreadids>((?:\s*<iothread id=[\'"]\d+[\'"]\s*/>)+)\s*</iothreadids>')
_IOTHREAD_ID_RE = re.compile(r'id=[\'"](\d+)[\'"]')
_IOTHREADS_RE = re.compile(r'<iothreads>\s*(\d+)\s*</iothreads>')


_METADATA_BLOCK_RE = re.compile(r'<metadata\b[^>]*?(?:/>|>.*?</metadata>)', re.S)


def metadata_block(xml_text):
    """The ``<metadata>`` element of a domain XML exactly as written, or None."""
    match = _METADATA_BLOCK_RE.search(xml_text)
    return match.group(0) if match else None


def xml_shape(xml_text):
    """The parts of a persistent XML that apply may reshape and rollback puts back as they were.

    ``has_metadata``: a ``<metadata>`` element exists; ``metadata_block``: its
    exact text (libvirt moves namespace declarations around when the XML is
    redefined); ``iothreadids``: an ``<iothreadids>`` list exists (libvirt
    writes one when an IOThread is pinned).
    """
    return {'has_metadata': re.search(r'<metadata\b', xml_text) is not None,
            'metadata_block': metadata_block(xml_text),
            'iothreadids': '<iothreadids>' in xml_text}


def _element_tree(node):
    return (node.tag, sorted(node.attrib.items()), (node.text or '').strip(),
            [_element_tree(child) for child in node])


def tidy_xml(xml_text, shape):
    """The persistent XML with its reshaped parts as ``shape`` recorded them, or None when nothing differs.

    An ``<iothreadids>`` list that only numbers the IOThreads 1..N of
    ``<iothreads>N</iothreads>`` goes when the recorded XML had none. The
    ``<metadata>`` element gets its recorded text back when it means the
    same (same elements in the same namespaces, whatever the prefixes and
    where they are declared); an empty one goes when there was none. A
    ``<metadata>`` whose content differs from the record is left alone.
    """
    text = xml_text
    if shape.get('iothreadids') is False:
        match = _IOTHREADIDS_RE.search(text)
        count = _IOTHREADS_RE.search(text)
        if match and count:
            ids = [int(i) for i in _IOTHREAD_ID_RE.findall(match.group(1))]
            if ids == list(range(1, int(count.group(1)) + 1)):
                text = text[:match.start()] + text[match.end():]
    if 'metadata_block' in shape or 'has_metadata' in shape:
        recorded = shape.get('metadata_block')
        if recorded is None and shape.get('has_metadata'):
            recorded = '<metadata/>'
        match = _METADATA_BLOCK_RE.search(text)
        if match and match.group(0) != recorded:
            node = ET.fromstring(text).find('metadata')
            now = _element_tree(node) if node is not None else None
            if recorded is None:
                if node is not None and len(node) == 0:
                    head = text[:match.start()]
                    cut = len(head) - len(head.rstrip(' \t'))
                    start = match.start() - cut
                    if start > 0 and text[start - 1] == '\n':
                        start -= 1
                    text = text[:start] + text[match.end():]
            elif now == _element_tree(ET.fromstring(recorded)):
                text = text[:match.start()] + recorded + text[match.end():]
    return None if text == xml_text else text


def _canonical_xml(text):
    if text is None:
        return None
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return text

    def walk(node):
        return (_local(node.tag), sorted(node.attrib.items()), (node.text or '').strip(),
                [walk(child) for child in node])
    return walk(root)


# ---------------------------------------------------------------------------
# The tier weight as a budget

def weight_budget(tiers, guests):
    """CPUWeight per cgroup node under machine.slice so that each tier's nodes carry exactly its weight.

    ``tiers``: tier -> ``{'slice', 'cpu_weight'}``. ``guests``: the running
    guests, each ``{'name', 'tier', 'scope', 'slice'}`` where ``slice`` is
    the slice holding the scope (``machine.slice`` for a guest not yet moved,
    the tier slice for a moved one). A tier's nodes are its slice (when one
    of its running guests is in it) and the scopes of its guests still in
    machine.slice; each gets ``weight * guests it holds / running guests of
    the tier``, rounded so that the tier's total is exactly its weight
    (largest remainder, ties to the node listed first; at least 1).

    Returns ``{'nodes': {unit: weight}, 'tiers': {tier: {'weight', 'total',
    'nodes': {unit: guests held}}}}``. A tier without running guests has no
    nodes and total 0. Scopes inside a tier slice keep the tier's own weight
    (they share that slice among themselves) and are not part of the budget.
    """
    per_tier = {}
    for key in sorted(tiers):
        per_tier[key] = {'weight': int(tiers[key]['cpu_weight']), 'total': 0, 'nodes': {}}
    for guest in guests:
        key = guest['tier']
        if key not in per_tier:
            raise PoolError('guest %s: tier "%s" is not one of the tiers' % (guest['name'], key))
        slice_name = tiers[key].get('slice')
        if guest.get('slice') and guest.get('slice') == slice_name:
            node = slice_name
        elif guest.get('scope'):
            node = guest['scope']
        else:
            continue
        nodes = per_tier[key]['nodes']
        nodes[node] = nodes.get(node, 0) + 1
    result = {}
    for key, info in per_tier.items():
        nodes = info['nodes']
        running = sum(nodes.values())
        if not running:
            continue
        weight = info['weight']
        order = sorted(nodes, key=lambda node: (node != tiers[key].get('slice'), node))
        exact = dict((node, float(weight) * nodes[node] / running) for node in order)
        shares = dict((node, int(exact[node])) for node in order)
        left = weight - sum(shares.values())
        for node in sorted(order, key=lambda node: (-(exact[node] - shares[node]), order.index(node)))[:left]:
            shares[node] += 1
        for node in order:
            if shares[node] < 1:
                shares[node] = 1
        result.update(shares)
        info['total'] = sum(shares.values())
    return {'nodes': result, 'tiers': per_tier}


#: The runtime drop-in that carries a tier slice's budget share (``/run``: gone at the next boot, when every
#: guest starts in its tier slice and the slice needs its configured weight only).
BUDGET_UNIT_DIR = '/run/systemd/system'
# 40-: sorts before systemctl set-property's 50-CPUWeight.conf, so an operator's runtime
# override wins (and status names it as drift)
BUDGET_DROPIN = '40-kvmlab-weight-budget.conf'
BUDGET_MARKER = '# X-Kvmlab-Managed: kvmlab.host_resources.execution_pool weight budget'
BUDGET_NOTE = 'weight budget %d of %d while guests wait for their move'


def parent_slice(slice_name):
    """The slice holding ``slice_name`` in systemd's naming: machine-gold.slice -> machine.slice."""
    stem = slice_name[:-len('.slice')] if slice_name.endswith('.slice') else slice_name
    return (stem.rsplit('-', 1)[0] + '.slice') if '-' in stem else '-.slice'


def budget_dropin_path(slice_name, unit_dir=BUDGET_UNIT_DIR):
    """Where the budget drop-in of a tier slice lives."""
    return '%s/%s.d/%s' % (unit_dir.rstrip('/'), slice_name, BUDGET_DROPIN)


def budget_dropin_text(slice_name, tier, weight, tier_weight):
    """The budget drop-in of a tier slice: our marker, what it is for, ``[Slice] CPUWeight``."""
    return ('%s\n'
            '# %s of tier %s: %s.\n'
            '# Runtime only (/run): apply removes it once the tier\'s running guests are all in %s (or none\n'
            '# runs), rollback removes it, and the next boot does not need it (guests start in their slice).\n'
            '[Slice]\nCPUWeight=%d\n'
            % (BUDGET_MARKER, slice_name, tier, BUDGET_NOTE % (weight, tier_weight), slice_name, weight))


def parse_budget_dropin(text):
    """The CPUWeight of a budget drop-in of ours, or None (no file, not ours, or no usable CPUWeight)."""
    if text is None or BUDGET_MARKER not in text.splitlines():
        return None
    weight = None
    for line in text.splitlines():
        key, sep, value = line.strip().partition('=')
        if sep and key.strip() == 'CPUWeight':
            value = value.strip()
            weight = int(value) if value.isdigit() else None
    return weight


def budget_tiers(tiers):
    """tier -> ``{'slice', 'cpu_weight'}`` from placement settings (``_libvirt.tier_settings`` of each)."""
    return dict((key, {'slice': settings['slice'], 'cpu_weight': int(settings['cpu_weight'])})
                for key, settings in tiers.items())


def plan_budget(tiers, guests):
    """What apply sets live so that each tier's nodes under machine.slice carry exactly its weight.

    ``tiers``: :func:`budget_tiers`. ``guests``: the running guests whose
    scope is known, each ``{'name', 'tier', 'scope', 'slice'}`` (``slice``:
    the slice that holds the scope now). A guest counts in its tier's budget
    when its scope sits in its tier slice (moved) or beside it, in the tier
    slice's parent (machine.slice: waiting for its move); a scope anywhere
    else (another tier's slice, say) is not a node under machine.slice and
    keeps its tier weight.

    Returns ``{'scopes': {unit: weight}`` (the waiting scopes' budget shares),
    ``'slices': {slice: weight or None}`` (every tier slice: the share its
    runtime drop-in carries, None when no drop-in is wanted because all the
    tier's running guests are in it or none runs), ``'tiers'`` (as
    :func:`weight_budget`, plus ``slice``) and ``'nodes'`` (unit -> share)``}``.
    """
    counted = []
    for guest in guests:
        settings = tiers.get(guest['tier'])
        if settings is None:
            raise PoolError('guest %s: tier "%s" is not one of the tiers' % (guest['name'], guest['tier']))
        if not guest.get('scope'):
            continue
        where = guest.get('slice')
        if where in (settings['slice'], parent_slice(settings['slice'])):
            counted.append(guest)
    budget = weight_budget(tiers, counted)
    scopes, slices = {}, {}
    for key in sorted(tiers):
        info = budget['tiers'][key]
        info['slice'] = tiers[key]['slice']
        for node in info['nodes']:
            if node != info['slice']:
                scopes[node] = budget['nodes'][node]
        partial = info['slice'] in info['nodes'] and len(info['nodes']) > 1
        slices[info['slice']] = budget['nodes'][info['slice']] if partial else None
    return {'scopes': scopes, 'slices': slices, 'tiers': budget['tiers'], 'nodes': budget['nodes']}


def budget_dropin_plan(slice_name, tier, wanted, tier_weight, current_text, path):
    """One tier slice's budget drop-in: ``{'slice', 'tier', 'path', 'action', 'before', 'after', 'content'}``.

    ``wanted``: the share (:func:`plan_budget` ``slices``) or None (no
    drop-in). ``action`` is ``write``, ``remove`` or None; ``before`` and
    ``after`` are the drop-in's CPUWeight (None: no drop-in, the slice runs
    with its configured weight). A file at ``path`` without our marker is not
    ours: :class:`PoolError` names it.
    """
    if current_text is not None and BUDGET_MARKER not in current_text.splitlines():
        raise PoolError('%s exists and was not written by execution_pool (no "%s" line); remove or rename it'
                        % (path, BUDGET_MARKER))
    before = parse_budget_dropin(current_text)
    content = None if wanted is None else budget_dropin_text(slice_name, tier, wanted, tier_weight)
    if content is None:
        action = 'remove' if current_text is not None else None
    else:
        action = 'write' if current_text != content else None
    return {'slice': slice_name, 'tier': tier, 'path': path, 'action': action, 'before': before,
            'after': wanted, 'content': content}


def budget_dropin_value(weight):
    """A slice's budget drop-in as a diff shows it."""
    if weight is None:
        return 'no budget drop-in (the configured weight)'
    return 'CPUWeight %d (runtime budget drop-in)' % weight


def budget_lines(budget):
    """Readable lines of the ``budget`` result: per tier with running guests its nodes and shares."""
    if not budget:
        return []
    lines = []
    for key in sorted(budget['tiers']):
        info = budget['tiers'][key]
        if not info['nodes']:
            continue
        order = sorted(info['nodes'], key=lambda unit: (unit != info['slice'], unit))
        lines.append('weight budget %s %d: %s' % (key, info['weight'], ', '.join(
            '%s %d' % (unit, info['nodes'][unit]) for unit in order)))
    for item in budget['slices']:
        if item.get('action'):
            before, after = budget_dropin_value(item['before']), budget_dropin_value(item['after'])
            lines.append('%s: %s -> %s (%s)' % (item['slice'], before, after, item['path']))
    return lines


def budget_state(weight, total, unreadable, stock=False):
    """A tier's live total under machine.slice against its weight.

    ``applied`` only when they are equal (every node readable); ``stock``
    when the layer set nothing (``stock``: every scope node at the kernel's
    default weight and no budget drop-in on the slice); else ``drifted``.
    """
    if not unreadable and total == weight:
        return 'applied'
    if stock:
        return 'stock'
    return 'drifted'


def budget_items(budget, live, dropins=None):
    """One weight item per tier: the live total of its nodes under machine.slice against its weight.

    ``budget``: :func:`plan_budget`. ``live``: unit -> the kernel's
    cpu.weight of that node (None when unreadable). ``dropins``: slice ->
    the CPUWeight of its budget drop-in now (None or absent: no drop-in). A
    tier without a running guest has no node: info. Items carry the node
    list (``nodes``: unit -> ``{'budget', 'live', 'guests'}``) and the
    ``total``.
    """
    dropins = dropins or {}
    items = []
    for key in sorted(budget['tiers']):
        info = budget['tiers'][key]
        weight = info['weight']
        nodes = dict((unit, {'budget': budget['nodes'][unit], 'live': live.get(unit), 'guests': held})
                     for unit, held in sorted(info['nodes'].items()))
        base = {'name': '%s weight budget' % key, 'class': 'weight', 'guest': None, 'tier': key,
                'tier_source': None, 'intended': 'total CPUWeight %d under machine.slice' % weight,
                'nodes': nodes, 'total': None}
        if not nodes:
            items.append(dict(base, live='no running guest (no node under machine.slice)', state='info'))
            continue
        unreadable = [unit for unit, node in nodes.items() if node['live'] is None]
        total = sum(node['live'] for node in nodes.values() if node['live'] is not None)
        order = sorted(nodes, key=lambda unit: (unit != info['slice'], unit))
        text = ', '.join('%s %s%s (%d guest%s)' % (
            unit, nodes[unit]['live'] if nodes[unit]['live'] is not None else 'unreadable',
            '' if nodes[unit]['live'] == nodes[unit]['budget'] else ' [budget %d]' % nodes[unit]['budget'],
            nodes[unit]['guests'], '' if nodes[unit]['guests'] == 1 else 's') for unit in order)
        stock = (dropins.get(info['slice']) is None
                 and all(node['live'] == KERNEL_CPU_WEIGHT for unit, node in nodes.items() if unit != info['slice']))
        items.append(dict(base, live='total %d: %s' % (total, text), total=total,
                          state=budget_state(weight, total, unreadable, stock)))
    return items


# ---------------------------------------------------------------------------
# Reports (readable lines for the role's debug task)

def status_report(result, kind):
    """Lines of a status: the summary, the pools (placement) and one line per item."""
    from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import status_line
    if kind == 'weights':
        lines = ['contention-status: %s' % result['summary']]
        return lines + [status_line(item, 24) for item in result['items']]
    pools = result.get('pools') or {}
    lines = ['shared-execution-pool-status: %s' % result['summary'],
             'pools: guest_domain %s, host_emulator %s, host_reserved %s; scopes may use %s'
             % (pools.get('guest_domain'), pools.get('host_emulator'), pools.get('host_reserved'),
                result.get('scope_allowed_cpus'))]
    lines += ['%s: tier %s from %s' % (guest['name'], guest['tier'], guest['tier_source'])
              for guest in result.get('guests', [])]
    if result.get('excluded'):
        lines.append('excluded (left alone): %s' % ', '.join(result['excluded']))
    return lines + [status_line(item, 36) for item in result['items']]


def apply_report(result, placement, kind):
    """Lines of an apply: per guest its tier (and source), weights, placement and what changed or is pending."""
    done = dict((guest['name'], guest) for guest in result['guests'])
    lines = []
    for entry in placement:
        guest = done[entry['name']]
        line = '%s: %s from %s (CPUWeight %s, shares %s, partition %s)' % (
            entry['name'], entry['tier'], entry.get('tier_source'), entry['cpu_weight'], entry['cpu_shares'],
            entry['partition'])
        if kind == 'placement':
            line += ', vCPUs %s, emulator/IOThreads %s (%s)' % (entry['vcpu_cpuset'], entry['emulator_cpuset'],
                                                                entry['emulator_policy'])
        line += ', %s' % ('changed' if guest['changed'] else 'unchanged')
        if guest['pending']:
            line += '; pending until its next start: %s' % ', '.join(guest['pending'])
        lines.append(line)
    if result.get('excluded'):
        lines.append('excluded (left alone): %s' % ', '.join(result['excluded']))
    if kind == 'placement':
        lines.append('live scopes: AllowedCPUs %s' % result.get('scope_allowed_cpus'))
    lines += budget_lines(result.get('budget'))
    if result.get('missing_slices'):
        lines.append('WARNING: no unit file for %s: guests of those tiers start in them at their next start, but '
                     'with the default weight instead of the tier weight; apply the host foundation first '
                     '(lab_host_resource_management, host_resource_management_apply.yml)'
                     % ', '.join(result['missing_slices']))
    snapshot = result.get('snapshot')
    if snapshot:
        lines.append('rollback snapshot: %s (%s)' % (
            snapshot['path'], 'kept from the first apply' if snapshot['existed'] else 'written now'))
    return lines


def restore_report(result):
    """Lines of a rollback: per guest restored or already as recorded, then what else happened."""
    lines = []
    for guest in result['guests']:
        line = '%s: %s' % (guest['name'], 'restored' if guest['changed'] else 'already as in the snapshot')
        if guest['pending']:
            line += '; pending until its next start: %s' % ', '.join(guest['pending'])
        lines.append(line)
    if result.get('restarted'):
        lines.append('started since the snapshot, now in a new scope that got the recorded (or default) '
                     'properties: %s' % ', '.join(result['restarted']))
    if result.get('gone'):
        lines.append('no longer defined, nothing to restore: %s' % ', '.join(result['gone']))
    if result.get('fixups'):
        lines.append('cpuset.cpus set back to empty (inherit) as recorded: %s' % ', '.join(result['fixups']))
    if result.get('budget_dropins'):
        lines.append('weight budget drop-ins restored as recorded (tier slices back to their configured weight): %s'
                     % ', '.join(result['budget_dropins']))
    for unit, reason in sorted((result.get('not_restored') or {}).items()):
        lines.append('not restored exactly: %s: %s' % (unit, reason))
    lines.append('snapshot %s restored and removed' % result['snapshot']['path'])
    return lines
