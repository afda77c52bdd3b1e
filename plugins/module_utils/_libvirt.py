# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt thread pinning, CPU shares and resource partitions.

The one home for libvirt reads and writes of the collection. Most functions
are pure (request and state dicts in, dicts and lists out); the few that talk
to libvirt take a connection or domain object and are marked as such.

Data model
----------
A *state* describes one scope of one domain::

    {'vcpu_pins': {0: frozenset({2, 3}), ...},
     'emulator_cpuset': frozenset(...),
     'iothread_pins': {1: frozenset(...), ...},
     'cpu_shares': 1024,
     'partition': '/machine'}

In the *live* state every pin is the thread's effective CPU set. In the
*config* state (the persistent XML) a pin is ``None`` when the XML has no
``<vcpupin>``/``<emulatorpin>``/``<iothreadpin>`` element for it (unpinned),
``cpu_shares`` is ``0`` when ``<shares>`` is absent and ``partition`` is ``''``
when ``<resource><partition>`` is absent. The config's *effective* pins (what
the guest gets at its next start) are kept beside it, because a wanted cpuset
that equals the effective one of an unpinned vCPU is no change.

Written values: a frozenset of CPUs, or :data:`UNPINNED` (remove the pin, in
the live scope: pin to the domain's default CPUs), ``cpu_shares`` 0 (remove
``<shares>``, config only) and ``partition`` ``''`` (remove it).
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError,
    format_cpulist,
    from_cpumap,
    parse_cpulist,
    to_cpumap,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _libvirt_conn as _conn

UNPINNED = 'unpinned'
SCOPES = ('auto', 'live', 'config', 'both')
SHARES_MIN = 2
SHARES_MAX = 262144
PIN_OPTIONS = ('vcpu_cpuset', 'emulator_cpuset', 'iothread_cpuset')
DEFAULT_PARTITION = '/machine'

# libvirt constants, repeated so the pure functions need no libvirt import
AFFECT_LIVE = 1
AFFECT_CONFIG = 2
XML_SECURE = 1
XML_INACTIVE = 2


class RequestError(ValueError):
    """A request that cannot be applied; the message names domain and option."""


# ---------------------------------------------------------------------------
# Request parsing (pure)
# ---------------------------------------------------------------------------

def libvirt_message(exc):
    """The text of a libvirt error (libvirtError.get_error_message), or str(exc).

    Kept for callers; :mod:`._libvirt_conn` is the home of error translation.
    """
    return _conn.error_message(exc)


def parse_pin(value, what, online=None):
    """A wanted pin: :data:`UNPINNED` or a non-empty frozenset of CPUs.

    With ``online`` (a set of CPU numbers) every CPU must be in it.
    """
    if isinstance(value, str) and value.strip().lower() == UNPINNED:
        return UNPINNED
    try:
        cpus = parse_cpulist(value, what)
    except CpuListError as exc:
        raise RequestError(str(exc))
    if not cpus:
        raise RequestError('%s is empty: give at least one CPU (or "%s")' % (what, UNPINNED))
    if online is not None:
        outside = cpus - frozenset(online)
        if outside:
            raise RequestError('%s "%s" names CPU(s) %s that are not online on this host (online: %s)'
                               % (what, format_cpulist(cpus), format_cpulist(outside), format_cpulist(online)))
    return cpus


def _parse_pin_dict(value, what, online):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError('%s must be a mapping of numbers to cpulists' % what)
    pins = {}
    for key, cpus in value.items():
        try:
            number = int(str(key).strip())
        except ValueError:
            raise RequestError('%s: key "%s" is not a number' % (what, key))
        if number < 0:
            raise RequestError('%s: key "%s" is negative' % (what, key))
        if number in pins:
            raise RequestError('%s: key %d is given twice' % (what, number))
        pins[number] = parse_pin(cpus, '%s[%d]' % (what, number), online)
    return pins


def parse_request(entry, defaults=None, online=None):
    """Normalize one ``domains`` entry of the module into a request dict.

    ``defaults`` holds module-level values (``scope`` and the three
    ``*_cpuset`` options) used where the entry has none. ``online`` is the
    host's online CPU set; masks outside it are refused. Raises
    :class:`RequestError` naming the domain and option.
    """
    defaults = defaults or {}
    name = entry.get('name')
    if not name or not isinstance(name, str):
        raise RequestError('every domains entry needs a name')
    where = 'domain "%s"' % name

    def pick(key):
        value = entry.get(key)
        return defaults.get(key) if value is None else value

    scope = pick('scope') or 'auto'
    if scope not in SCOPES:
        raise RequestError('%s: scope must be one of %s, got "%s"' % (where, ', '.join(SCOPES), scope))
    request = {'name': name, 'scope': scope}
    for option in PIN_OPTIONS:
        value = pick(option)
        request[option] = None if value is None else parse_pin(value, '%s: %s' % (where, option), online)
    request['vcpu_pins'] = _parse_pin_dict(entry.get('vcpu_pins'), '%s: vcpu_pins' % where, online)
    request['iothread_pins'] = _parse_pin_dict(entry.get('iothread_pins'), '%s: iothread_pins' % where, online)

    shares = entry.get('cpu_shares')
    if shares is not None:
        if isinstance(shares, bool) or not isinstance(shares, int):
            raise RequestError('%s: cpu_shares must be an integer' % where)
        if shares != 0 and not SHARES_MIN <= shares <= SHARES_MAX:
            raise RequestError('%s: cpu_shares %d is outside %d-%d (0 removes <shares> from the persistent XML)'
                               % (where, shares, SHARES_MIN, SHARES_MAX))
        if shares == 0 and scope == 'live':
            raise RequestError('%s: cpu_shares 0 (unset) exists only in the persistent config; use scope config'
                               % where)
    request['cpu_shares'] = shares

    partition = entry.get('partition')
    if partition is not None:
        if not isinstance(partition, str):
            raise RequestError('%s: partition must be a string' % where)
        partition = partition.strip()
        if partition and (not partition.startswith('/') or partition.endswith('/') or '//' in partition
                          or not re.match(r'^[A-Za-z0-9_./-]+$', partition)):
            raise RequestError('%s: partition "%s" must be an absolute path such as /machine/gold '
                               '("" removes it)' % (where, partition))
        if scope == 'live':
            raise RequestError('%s: partition is persistent only (it takes effect at the next start); '
                               'use scope config, both or auto' % where)
    request['partition'] = partition
    return request


def has_settings(request):
    """True when the request asks for anything beyond reading."""
    return any(request.get(key) not in (None, {}) for key in
               PIN_OPTIONS + ('vcpu_pins', 'iothread_pins', 'cpu_shares', 'partition'))


def resolve_scopes(request, active, live_on_stopped='fail'):
    """Which scopes a request touches: ``(live, config)`` booleans.

    ``auto``: live and config for a running domain, config for a stopped one.
    A live request for a stopped domain raises, or with ``live_on_stopped``
    ``skip`` drops the live part.
    """
    scope = request['scope']
    live = scope in ('live', 'both') or (scope == 'auto' and active)
    config = scope in ('config', 'both', 'auto')
    if live and not active:
        if live_on_stopped != 'skip':
            raise RequestError('domain "%s" is not running: scope %s needs a running domain '
                               '(use scope config or auto for persistent changes)' % (request['name'], scope))
        live = False
    if live and request.get('cpu_shares') == 0:
        raise RequestError('domain "%s": cpu_shares 0 (unset) exists only in the persistent config; '
                           'the live scope needs %d-%d' % (request['name'], SHARES_MIN, SHARES_MAX))
    return live, config


def check_overlaps(requests_scopes):
    """Refuse a domain listed twice for the same scope.

    ``requests_scopes`` is a list of ``(name, live, config)``.
    """
    seen = {}
    for name, live, config in requests_scopes:
        for scope, used in (('live', live), ('config', config)):
            if not used:
                continue
            if (name, scope) in seen:
                raise RequestError('domain "%s" is listed more than once for the %s scope' % (name, scope))
            seen[(name, scope)] = True


# ---------------------------------------------------------------------------
# XML helpers (pure)
# ---------------------------------------------------------------------------

def _register_namespaces(xml_text):
    """Keep the document's namespace prefixes when ElementTree writes it back."""
    import io
    for _event, (prefix, uri) in ET.iterparse(io.StringIO(xml_text), events=('start-ns',)):
        if prefix:
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:
                pass  # reserved prefix (ns0...): ElementTree picks one


def parse_domain_xml(xml_text):
    """Explicit settings of a domain XML (live or inactive).

    Returns ``vcpu_pins``/``iothread_pins`` (only explicit elements),
    ``emulator_cpuset`` (None when absent), ``cpu_shares`` (0 when absent),
    ``partition`` ('' when absent), ``default_cpuset`` (``<vcpu cpuset>``,
    None when absent), ``vcpus`` (count) and ``iothread_ids``.
    """
    root = ET.fromstring(xml_text)
    result = {'vcpu_pins': {}, 'emulator_cpuset': None, 'iothread_pins': {}, 'cpu_shares': 0,
              'partition': '', 'default_cpuset': None, 'vcpus': 0, 'iothread_ids': []}
    vcpu = root.find('vcpu')
    if vcpu is not None:
        result['vcpus'] = int((vcpu.text or '0').strip())
        if vcpu.get('cpuset'):
            result['default_cpuset'] = parse_cpulist(vcpu.get('cpuset'), 'vcpu cpuset')
    ids = root.find('iothreadids')
    if ids is not None:
        result['iothread_ids'] = sorted(int(item.get('id')) for item in ids.findall('iothread'))
    else:
        count = root.find('iothreads')
        if count is not None and (count.text or '').strip():
            result['iothread_ids'] = list(range(1, int(count.text.strip()) + 1))
    cputune = root.find('cputune')
    if cputune is not None:
        for pin in cputune.findall('vcpupin'):
            result['vcpu_pins'][int(pin.get('vcpu'))] = parse_cpulist(pin.get('cpuset', ''), 'vcpupin')
        emulator = cputune.find('emulatorpin')
        if emulator is not None:
            result['emulator_cpuset'] = parse_cpulist(emulator.get('cpuset', ''), 'emulatorpin')
        for pin in cputune.findall('iothreadpin'):
            result['iothread_pins'][int(pin.get('iothread'))] = parse_cpulist(pin.get('cpuset', ''), 'iothreadpin')
        shares = cputune.find('shares')
        if shares is not None and (shares.text or '').strip():
            result['cpu_shares'] = int(shares.text.strip())
    partition = root.find('resource/partition')
    if partition is not None and (partition.text or '').strip():
        result['partition'] = partition.text.strip()
    return result


def edit_domain_xml(xml_text, remove_vcpupins=(), remove_emulatorpin=False, remove_iothreadpins=(),
                    remove_shares=False, partition=None):
    """The inactive XML with pins/shares removed and the partition set.

    ``partition``: None leaves it, ``''`` removes ``<partition>`` (and an
    emptied ``<resource>``), a path sets it. Empty ``<cputune>`` is dropped.
    """
    _register_namespaces(xml_text)
    root = ET.fromstring(xml_text)
    cputune = root.find('cputune')
    if cputune is not None:
        remove_vcpupins = set(remove_vcpupins)
        remove_iothreadpins = set(remove_iothreadpins)
        for child in list(cputune):
            if ((child.tag == 'vcpupin' and int(child.get('vcpu')) in remove_vcpupins)
                    or (child.tag == 'emulatorpin' and remove_emulatorpin)
                    or (child.tag == 'iothreadpin' and int(child.get('iothread')) in remove_iothreadpins)
                    or (child.tag == 'shares' and remove_shares)):
                cputune.remove(child)
        if len(cputune) == 0:
            root.remove(cputune)
    if partition is not None:
        resource = root.find('resource')
        if partition:
            if resource is None:
                resource = ET.Element('resource')
                # libvirt does not care about the position; keep it near the top
                root.insert(child_insert_index(root, 'resource'), resource)
            node = resource.find('partition')
            if node is None:
                node = ET.SubElement(resource, 'partition')
            node.text = partition
        elif resource is not None:
            node = resource.find('partition')
            if node is not None:
                resource.remove(node)
            if len(resource) == 0:
                root.remove(resource)
    return ET.tostring(root, encoding='unicode')


# The order of a libvirt domain's top-level elements (formatdomain), up to <cpu>:
# a new element goes after the last present one that libvirt writes before it.
DOMAIN_ELEMENT_ORDER = ('name', 'uuid', 'genid', 'title', 'description', 'metadata', 'maxMemory', 'memory',
                        'currentMemory', 'blkiotune', 'memtune', 'memoryBacking', 'vcpu', 'vcpus', 'iothreads',
                        'iothreadids', 'defaultiothread', 'cputune', 'numatune', 'resource', 'sysinfo', 'bootloader',
                        'bootloader_args', 'os', 'idmap', 'features', 'cpu')


def child_insert_index(root, tag):
    """Where a new top-level ``tag`` element goes in the domain element ``root``: after the last child that
    libvirt writes before it (DOMAIN_ELEMENT_ORDER), else first."""
    before = DOMAIN_ELEMENT_ORDER[:DOMAIN_ELEMENT_ORDER.index(tag)]
    index = 0
    for position, child in enumerate(root):
        if child.tag in before:
            index = position + 1
    return index


# ---------------------------------------------------------------------------
# Planning (pure)
# ---------------------------------------------------------------------------

def _targets(request, count_ids, kind):
    """Wanted pin per vCPU/IOThread id: per-id entries override the all-cpuset."""
    all_key, per_key = ('vcpu_cpuset', 'vcpu_pins') if kind == 'vcpu' else ('iothread_cpuset', 'iothread_pins')
    label = 'vCPU' if kind == 'vcpu' else 'IOThread'
    unknown = sorted(set(request[per_key]) - set(count_ids))
    if unknown:
        raise RequestError('domain "%s": %s has no %s %s (it has %s)'
                           % (request['name'], per_key, label, ', '.join(str(u) for u in unknown),
                              format_cpulist(count_ids) or 'none'))
    wanted = {}
    for ident in count_ids:
        value = request[per_key].get(ident, request[all_key])
        if value is not None:
            wanted[ident] = value
    return wanted


def plan_domain(request, current, online, live, config):
    """Changes that bring one domain to the request: a list of change dicts.

    ``current`` is what :func:`read_domain` returns; ``online`` the host's
    online CPUs (the default for a live ``unpinned``). Each change is
    ``{'scope', 'item', 'kind', 'id', 'before', 'after'}`` where ``kind`` is
    ``vcpu``, ``emulator``, ``iothread``, ``cpu_shares`` or ``partition`` and
    before/after are internal values (frozensets, None, ints, strings).
    """
    changes = []
    scopes = []
    if live:
        scopes.append('live')
    if config:
        scopes.append('config')
    for scope in scopes:
        state = current[scope]
        effective = current['config_effective'] if scope == 'config' else state
        default = frozenset(current.get('%s_default' % scope) or online)
        ids = {'vcpu': sorted(state['vcpu_pins']) if scope == 'live' else sorted(effective['vcpu_pins']),
               'iothread': sorted(state['iothread_pins']) if scope == 'live' else sorted(effective['iothread_pins'])}
        items = []
        for kind in ('vcpu', 'iothread'):
            for ident, wanted in sorted(_targets(request, ids[kind], kind).items()):
                items.append((kind, ident, wanted))
        if request['emulator_cpuset'] is not None:
            items.append(('emulator', None, request['emulator_cpuset']))
        for kind, ident, wanted in items:
            key = {'vcpu': 'vcpu_pins', 'iothread': 'iothread_pins', 'emulator': 'emulator_cpuset'}[kind]
            if ident is None:
                have, have_effective = state[key], effective[key]
                item = key
            else:
                have, have_effective = state[key].get(ident), effective[key].get(ident)
                item = '%s.%d' % (key, ident)
            if scope == 'live':
                target = default if wanted == UNPINNED else wanted
                if have != target:
                    changes.append(_change(scope, item, kind, ident, have, target))
            elif wanted == UNPINNED:
                if have is not None:
                    changes.append(_change(scope, item, kind, ident, have, None))
            elif have_effective != wanted:
                changes.append(_change(scope, item, kind, ident, have, wanted))
        if request['cpu_shares'] is not None and state.get('cpu_shares') != request['cpu_shares']:
            changes.append(_change(scope, 'cpu_shares', 'cpu_shares', None, state.get('cpu_shares'),
                                   request['cpu_shares']))
        if scope == 'config' and request['partition'] is not None and state['partition'] != request['partition']:
            changes.append(_change(scope, 'partition', 'partition', None, state['partition'], request['partition']))
    return changes


def _change(scope, item, kind, ident, before, after):
    return {'scope': scope, 'item': item, 'kind': kind, 'id': ident, 'before': before, 'after': after}


def predict_after(current, changes):
    """The state a domain will have once ``changes`` are applied (check mode)."""
    after = {'live': _copy_state(current['live']), 'config': _copy_state(current['config'])}
    for change in changes:
        state = after[change['scope']]
        key = {'vcpu': 'vcpu_pins', 'iothread': 'iothread_pins', 'emulator': 'emulator_cpuset'}.get(
            change['kind'], change['kind'])
        if change['id'] is None:
            state[key] = change['after']
        else:
            state[key][change['id']] = change['after']
    return after


def _copy_state(state):
    if state is None:
        return None
    copy = dict(state)
    copy['vcpu_pins'] = dict(state['vcpu_pins'])
    copy['iothread_pins'] = dict(state['iothread_pins'])
    return copy


def pending_items(request, after, active, changes):
    """Requested items that the guest will only see at its next start.

    Stopped domain: every config item changed now. Running domain: requested
    config items whose persistent value differs from the live one (always
    the case for a changed partition).
    """
    if not active:
        return sorted(set(c['item'] for c in changes if c['scope'] == 'config'))
    pending = set()
    config, live = after['config'], after['live']
    if request['partition'] is not None:
        wanted = config['partition'] or DEFAULT_PARTITION
        if (live or {}).get('partition') != wanted:
            pending.add('partition')
    if live is not None:
        for change in changes:
            if change['scope'] != 'config' or change['kind'] == 'partition':
                continue
            key = {'vcpu': 'vcpu_pins', 'iothread': 'iothread_pins', 'emulator': 'emulator_cpuset'}.get(
                change['kind'], change['kind'])
            live_value = live[key] if change['id'] is None else live[key].get(change['id'])
            if change['after'] in (None, 0):
                continue  # removing a pin/shares: the live value is whatever the default gives
            if live_value != change['after']:
                pending.add(change['item'])
    return sorted(pending)


# ---------------------------------------------------------------------------
# Formatting for module results (pure)
# ---------------------------------------------------------------------------

def _fmt_pin(value):
    return UNPINNED if value is None else format_cpulist(value)


def format_state(state):
    """A state with cpulist strings and string keys, as returned by the module."""
    if state is None:
        return None
    return {
        'vcpu_pins': dict((str(k), _fmt_pin(v)) for k, v in sorted(state['vcpu_pins'].items())),
        'emulator_cpuset': _fmt_pin(state['emulator_cpuset']),
        'iothread_pins': dict((str(k), _fmt_pin(v)) for k, v in sorted(state['iothread_pins'].items())),
        'cpu_shares': state.get('cpu_shares'),
        'partition': state.get('partition'),
    }


def format_value(value):
    if isinstance(value, frozenset):
        return format_cpulist(value)
    if value is None:
        return UNPINNED
    return value


def format_changes(changes):
    return [{'scope': c['scope'], 'item': c['item'], 'before': format_value(c['before']),
             'after': format_value(c['after'])} for c in changes]


def snapshot_entries(name, current):
    """``domains`` entries that restore a domain exactly to ``current``."""
    entries = []
    config = format_state(current['config'])
    entries.append({'name': name, 'scope': 'config', 'vcpu_pins': config['vcpu_pins'],
                    'emulator_cpuset': config['emulator_cpuset'], 'iothread_pins': config['iothread_pins'],
                    'cpu_shares': config['cpu_shares'], 'partition': config['partition']})
    if current['live'] is not None:
        live = format_state(current['live'])
        entry = {'name': name, 'scope': 'live', 'vcpu_pins': live['vcpu_pins'],
                 'emulator_cpuset': live['emulator_cpuset'], 'iothread_pins': live['iothread_pins']}
        if live['cpu_shares'] is not None:
            entry['cpu_shares'] = live['cpu_shares']
        entries.append(entry)
    return entries


# ---------------------------------------------------------------------------
# libvirt I/O (needs a connection)
# ---------------------------------------------------------------------------

def host_cpus(conn):
    """``(count, online set)`` from ``conn.getCPUMap()``."""
    count, cpumap, _online = conn.getCPUMap()
    return count, frozenset(index for index, flag in enumerate(cpumap) if flag)


def _pin_dict(pininfo):
    return dict((index, from_cpumap(cpumap)) for index, cpumap in enumerate(pininfo))


def _iothread_dict(info):
    return dict((ident, from_cpumap(cpumap)) for ident, cpumap in info)


def read_domain(dom, want_shares=True):
    """Everything this module manages for one domain (libvirt calls).

    Returns ``{'active', 'live', 'config', 'config_effective', 'live_default',
    'config_default'}``; ``live`` is None for a stopped domain. Live
    ``cpu_shares`` is None when the host gives no scheduler parameters.
    """
    active = bool(dom.isActive())
    result = {'active': active, 'live': None, 'live_default': None}
    if active:
        live_xml = parse_domain_xml(dom.XMLDesc(0))
        shares = None
        if want_shares:
            try:
                shares = dom.schedulerParametersFlags(AFFECT_LIVE).get('cpu_shares')
            except Exception:  # pylint: disable=broad-except
                shares = None  # no cpu controller: cpu_shares cannot be managed live
        result['live'] = {
            'vcpu_pins': _pin_dict(dom.vcpuPinInfo(AFFECT_LIVE)),
            'emulator_cpuset': from_cpumap(dom.emulatorPinInfo(AFFECT_LIVE)),
            'iothread_pins': _iothread_dict(dom.ioThreadInfo(AFFECT_LIVE)),
            'cpu_shares': shares,
            'partition': live_xml['partition'],
        }
        result['live_default'] = live_xml['default_cpuset']
    config_xml = parse_domain_xml(dom.XMLDesc(XML_INACTIVE | XML_SECURE))
    effective = {
        'vcpu_pins': _pin_dict(dom.vcpuPinInfo(AFFECT_CONFIG)),
        'emulator_cpuset': from_cpumap(dom.emulatorPinInfo(AFFECT_CONFIG)),
        'iothread_pins': _iothread_dict(dom.ioThreadInfo(AFFECT_CONFIG)),
    }
    result['config_effective'] = effective
    result['config'] = {
        'vcpu_pins': dict((index, config_xml['vcpu_pins'].get(index)) for index in effective['vcpu_pins']),
        'emulator_cpuset': config_xml['emulator_cpuset'],
        'iothread_pins': dict((ident, config_xml['iothread_pins'].get(ident))
                              for ident in effective['iothread_pins']),
        'cpu_shares': config_xml['cpu_shares'],
        'partition': config_xml['partition'],
    }
    result['config_default'] = config_xml['default_cpuset']
    return result


class ApplyError(Exception):
    """A libvirt write refused part-way through :func:`apply_changes`.

    ``step`` says what was being written, ``done`` what this call had written
    before (both human-readable), ``error`` is the original exception.
    """

    def __init__(self, step, done, error):
        Exception.__init__(self, '%s: %s' % (step, _conn.error_message(error)))
        self.step = step
        self.done = list(done)
        self.error = error


def _flags_text(flags):
    return '+'.join(name for name, bit in (('live', AFFECT_LIVE), ('config', AFFECT_CONFIG)) if flags & bit)


def _item_name(kind, ident):
    if kind == 'emulator':
        return 'emulator_cpuset'
    return '%s.%d' % ('vcpu_pins' if kind == 'vcpu' else 'iothread_pins', ident)


def write_steps(conn, dom, changes, host_count):
    """The libvirt writes that carry out ``changes``: a list of ``(description, call)``.

    Pins wanted identically in both scopes go in one call with
    LIVE|CONFIG; scheduler parameters are set once per scope (libvirt refuses
    both flags together); removals and the partition are one ``defineXML``
    of the freshly read inactive XML, done last. Nothing is called here.
    """
    steps = []
    pins = {}
    xml_edit = {'vcpu': set(), 'iothread': set(), 'emulator': False, 'shares': False, 'partition': None}
    for change in changes:
        kind, scope, after = change['kind'], change['scope'], change['after']
        if kind in ('vcpu', 'iothread', 'emulator'):
            if after is None:  # config: remove the element
                if kind == 'emulator':
                    xml_edit['emulator'] = True
                else:
                    xml_edit[kind].add(change['id'])
            else:
                pins.setdefault((kind, change['id']), {})[scope] = after
        elif kind == 'cpu_shares':
            if after == 0:
                xml_edit['shares'] = True
            else:
                flag = AFFECT_LIVE if scope == 'live' else AFFECT_CONFIG
                steps.append(('cpu_shares (%s) to %d' % (scope, after),
                              lambda after=after, flag=flag: dom.setSchedulerParametersFlags(
                                  {'cpu_shares': after}, flag)))
        elif kind == 'partition':
            xml_edit['partition'] = after
    for (kind, ident), by_scope in sorted(pins.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        if by_scope.get('live') is not None and by_scope.get('live') == by_scope.get('config'):
            groups = [(AFFECT_LIVE | AFFECT_CONFIG, by_scope['live'])]
        else:
            groups = [((AFFECT_LIVE if scope == 'live' else AFFECT_CONFIG), cpus)
                      for scope, cpus in sorted(by_scope.items())]
        for flags, cpus in groups:
            cpumap = to_cpumap(cpus, host_count)
            if kind == 'vcpu':
                call = functools.partial(dom.pinVcpuFlags, ident, cpumap, flags)
            elif kind == 'iothread':
                call = functools.partial(dom.pinIOThread, ident, cpumap, flags)
            else:
                call = functools.partial(dom.pinEmulator, cpumap, flags)
            steps.append(('%s (%s) to "%s"' % (_item_name(kind, ident), _flags_text(flags), format_cpulist(cpus)),
                          call))
    if (xml_edit['vcpu'] or xml_edit['iothread'] or xml_edit['emulator'] or xml_edit['shares']
            or xml_edit['partition'] is not None):
        edits = (['remove %s' % _item_name('vcpu', ident) for ident in sorted(xml_edit['vcpu'])]
                 + ['remove %s' % _item_name('iothread', ident) for ident in sorted(xml_edit['iothread'])]
                 + (['remove emulator_cpuset'] if xml_edit['emulator'] else [])
                 + (['remove cpu_shares'] if xml_edit['shares'] else []))
        if xml_edit['partition'] is not None:
            edits.append('partition "%s"' % xml_edit['partition'] if xml_edit['partition'] else 'remove partition')

        def define():
            xml = dom.XMLDesc(XML_INACTIVE | XML_SECURE)
            conn.defineXML(edit_domain_xml(xml, remove_vcpupins=xml_edit['vcpu'], remove_emulatorpin=xml_edit['emulator'],
                                           remove_iothreadpins=xml_edit['iothread'], remove_shares=xml_edit['shares'],
                                           partition=xml_edit['partition']))
        steps.append(('persistent XML (config: %s)' % ', '.join(edits), define))
    return steps


def apply_changes(conn, dom, changes, host_count):
    """Carry out planned changes on one domain (libvirt calls), in :func:`write_steps` order.

    Returns the number of libvirt write calls made. A refused call raises
    :class:`ApplyError` naming it and the calls made before it; the
    exception carries the original error.
    """
    done = []
    for description, call in write_steps(conn, dom, changes, host_count):
        try:
            call()
        except Exception as exc:  # pylint: disable=broad-except
            raise ApplyError(description, done, exc)
        done.append(description)
    return len(done)


def restore_changes(name, original, fresh, online):
    """The changes that bring a domain from ``fresh`` back to ``original`` (both from :func:`read_domain`).

    Exactly what passing :func:`snapshot_entries` of ``original`` back to the
    module would do; a live part is planned only while the domain runs.
    """
    changes = []
    for entry in snapshot_entries(name, original):
        request = parse_request(entry)
        live, config = resolve_scopes(request, fresh['active'], 'skip')
        if live or config:
            changes.extend(plan_domain(request, fresh, online, live, config))
    return changes


def restore_domain(conn, dom, name, original, online, host_count, lib=None):
    """Put one domain back to ``original`` after a refused apply (libvirt calls).

    Reads the domain afresh and writes what differs; a refused write does not
    stop the others. Reads again to verify. Returns ``{'name', 'restored',
    'undone', 'left', 'error'}``: ``undone`` the changes written back,
    ``left`` the items that still differ (None when the domain could not be
    read), ``error`` None or the text of what went wrong. ``lib`` is the
    libvirt module whose VIR_ERR_* names the errors are described with.
    """
    report = {'name': name, 'restored': False, 'undone': [], 'left': None, 'error': None}
    errors = []
    try:
        changes = restore_changes(name, original, read_domain(dom), online)
        report['undone'] = format_changes(changes)
        for description, call in write_steps(conn, dom, changes, host_count):
            try:
                call()
            except Exception as exc:  # pylint: disable=broad-except
                errors.append('restoring %s: %s' % (description, _conn.describe(exc, lib)))
    except Exception as exc:  # pylint: disable=broad-except
        errors.append('cannot read its state: %s' % _conn.describe(exc, lib))
    try:
        report['left'] = format_changes(restore_changes(name, original, read_domain(dom), online))
    except Exception as exc:  # pylint: disable=broad-except
        errors.append('cannot read its state to verify: %s' % _conn.describe(exc, lib))
    report['error'] = '; '.join(errors) or None
    report['restored'] = not errors and report['left'] == []
    return report


# ---------------------------------------------------------------------------
# Shared execution pool: placement per guest and virt-install arguments (pure)
# ---------------------------------------------------------------------------

#: Where a guest's emulator thread and IOThreads run (seeds 002 and 004):
#: ``share`` the host_emulator pool shared by all guests, ``isolate`` one
#: host_emulator CPU of its own, ``float`` with the guest's vCPUs.
EMULATOR_POLICIES = ('share', 'isolate', 'float')
WEIGHT_MIN = 1
WEIGHT_MAX = 10000


class PlacementError(ValueError):
    """Guests, tiers or pools that give no placement; the message names the guest or key."""


def _pool(pools, key):
    if not isinstance(pools, dict) or key not in pools:
        raise PlacementError('pools must be a dict with %s (as from the cpu_pools filter), it lacks %s'
                             % (', '.join(('host_reserved', 'host_emulator', 'guest_domain')), key))
    try:
        cpus = parse_cpulist(pools[key], 'pools.%s' % key)
    except CpuListError as exc:
        raise PlacementError(str(exc))
    if not cpus:
        raise PlacementError('pools.%s is empty' % key)
    return cpus


def _int_in(value, low, high, what):
    if isinstance(value, bool):
        raise PlacementError('%s must be an integer, got %r' % (what, value))
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise PlacementError('%s must be an integer, got %r' % (what, value))
    if not low <= number <= high:
        raise PlacementError('%s %d is outside %d-%d' % (what, number, low, high))
    return number


def tier_settings(tiers, tier, guest='guest'):
    """``{tier, slice, partition, cpu_shares, cpu_weight}`` of a tier (name matched without case).

    ``tiers`` maps names to dicts with ``cpu_weight`` and/or ``shares``,
    ``partition`` (default ``/machine/<name>``) and ``slice`` (default the
    systemd slice libvirt maps the partition to).
    """
    if not isinstance(tiers, dict) or not tiers:
        raise PlacementError('tiers must be a non-empty dict of tier name to settings (kvmlab_tiers)')
    if not isinstance(tier, str) or not tier.strip():
        raise PlacementError('%s: tier must be a tier name (one of %s)' % (guest, ', '.join(sorted(tiers))))
    matches = [key for key in tiers if str(key).lower() == tier.strip().lower()]
    if not matches:
        raise PlacementError('%s: unknown tier "%s" (tiers: %s)' % (guest, tier, ', '.join(sorted(tiers))))
    key = matches[0]
    settings = tiers[key]
    if not isinstance(settings, dict):
        raise PlacementError('tiers.%s must be a dict with cpu_weight, shares, partition' % key)
    weight = settings.get('cpu_weight', settings.get('shares'))
    shares = settings.get('shares', settings.get('cpu_weight'))
    if weight is None:
        raise PlacementError('tiers.%s has neither cpu_weight nor shares' % key)
    weight = _int_in(weight, WEIGHT_MIN, WEIGHT_MAX, 'tiers.%s.cpu_weight' % key)
    shares = _int_in(shares, SHARES_MIN, SHARES_MAX, 'tiers.%s.shares' % key)
    partition = settings.get('partition') or '/machine/%s' % key
    if (not isinstance(partition, str) or not partition.startswith('/') or partition.endswith('/')
            or '//' in partition or not re.match(r'^[A-Za-z0-9_./-]+$', partition)):
        raise PlacementError('tiers.%s.partition "%s" must be an absolute path such as /machine/gold'
                             % (key, partition))
    return {'tier': key, 'slice': settings.get('slice') or partition_slice(partition),
            'partition': partition, 'cpu_shares': shares, 'cpu_weight': weight}


def partition_slice(partition):
    """The systemd slice libvirt maps a resource partition to: /machine/gold -> machine-gold.slice."""
    parts = [part for part in partition.strip('/').split('/') if part]
    return '-'.join(parts) + '.slice'


def guest_placement(guests, tiers, pools, emulator_policy='share'):
    """Where every guest's threads go and what weight it gets, from its tier and the pools.

    ``guests``: list of dicts with ``name``, ``tier`` and optional
    ``emulator_policy`` (default ``emulator_policy``), ``vcpus`` and
    ``iothreads``. ``pools``: dict with ``host_reserved``, ``host_emulator``
    and ``guest_domain`` cpulists. vCPUs go to guest_domain; emulator thread
    and IOThreads to host_emulator (``share``, minus the CPUs isolated
    guests took), to one host_emulator CPU of the guest's own (``isolate``,
    handed out in guest order from the lowest CPU) or to the guest's vCPU
    CPUs (``float``). The live scope may use host_reserved plus
    guest_domain. Raises :class:`PlacementError` naming the guest.

    Returns ``{'guests': [...], 'scope_allowed_cpus', 'shared_emulator_cpus',
    'isolated': {name: cpu}}``; each guest entry has ``name``, ``tier``,
    ``slice``, ``partition``, ``cpu_shares``, ``cpu_weight``,
    ``emulator_policy``, ``vcpu_cpuset``, ``emulator_cpuset``,
    ``iothread_cpuset``, ``vcpus`` and ``iothreads`` (None when not given).
    """
    if emulator_policy not in EMULATOR_POLICIES:
        raise PlacementError('emulator_policy must be one of %s, got "%s"'
                             % (', '.join(EMULATOR_POLICIES), emulator_policy))
    if not isinstance(guests, list):
        raise PlacementError('guests must be a list of dicts with name and tier')
    guest_domain = _pool(pools, 'guest_domain')
    host_emulator = _pool(pools, 'host_emulator')
    host_reserved = _pool(pools, 'host_reserved')

    entries = []
    seen = set()
    for index, guest in enumerate(guests):
        if not isinstance(guest, dict) or not isinstance(guest.get('name'), str) or not guest['name']:
            raise PlacementError('guests[%d] must be a dict with a name and a tier, got %r' % (index, guest))
        name = guest['name']
        if name in seen:
            raise PlacementError('guest %s is listed more than once' % name)
        seen.add(name)
        where = 'guest %s' % name
        entry = {'name': name}
        entry.update(tier_settings(tiers, guest.get('tier'), where))
        policy = guest.get('emulator_policy') or emulator_policy
        if policy not in EMULATOR_POLICIES:
            raise PlacementError('%s: emulator_policy must be one of %s, got "%s"'
                                 % (where, ', '.join(EMULATOR_POLICIES), policy))
        entry['emulator_policy'] = policy
        entry['vcpus'] = None if guest.get('vcpus') is None else _int_in(
            guest['vcpus'], 1, 4096, '%s: vcpus' % where)
        entry['iothreads'] = None if guest.get('iothreads') is None else _int_in(
            guest['iothreads'], 0, 1024, '%s: iothreads' % where)
        entries.append(entry)

    isolating = [entry['name'] for entry in entries if entry['emulator_policy'] == 'isolate']
    sharing = [entry['name'] for entry in entries if entry['emulator_policy'] == 'share']
    free = sorted(host_emulator)
    if len(isolating) > len(free):
        raise PlacementError(
            'emulator_policy isolate needs one host_emulator CPU per guest: %d guests (%s) but '
            'host_emulator %s has %d CPU(s); isolate fewer guests or reserve more emulator cores'
            % (len(isolating), ', '.join(isolating), format_cpulist(host_emulator), len(free)))
    if sharing and isolating and len(isolating) == len(free):
        raise PlacementError(
            'emulator_policy isolate takes every host_emulator CPU (%s) for %s and leaves none '
            'for the guests that share it: %s'
            % (format_cpulist(host_emulator), ', '.join(isolating), ', '.join(sharing)))
    isolated = dict(zip(isolating, free))
    shared = frozenset(host_emulator) - frozenset(isolated.values())
    vcpu_text = format_cpulist(guest_domain)
    for entry in entries:
        entry['vcpu_cpuset'] = vcpu_text
        if entry['emulator_policy'] == 'isolate':
            overhead = str(isolated[entry['name']])
        elif entry['emulator_policy'] == 'float':
            overhead = vcpu_text
        else:
            overhead = format_cpulist(shared)
        entry['emulator_cpuset'] = overhead
        entry['iothread_cpuset'] = overhead
    return {
        'guests': entries,
        'scope_allowed_cpus': format_cpulist(host_reserved | guest_domain),
        'shared_emulator_cpus': format_cpulist(shared),
        'isolated': dict((name, str(cpu)) for name, cpu in isolated.items()),
    }


def virt_install_args(guest, tiers, pools, guests=None, emulator_policy='share', tier_metadata=True):
    """virt-install arguments that create ``guest`` placed as :func:`guest_placement` says.

    Seed 001's "Current virt-install Policy": ``--resource partition=``,
    ``--iothreads`` when the guest has IOThreads, and ``--cputune`` with
    ``shares``, one ``vcpupinN`` per vCPU, ``emulatorpin`` and one
    ``iothreadpinN`` per IOThread. ``guests`` is the whole list the
    isolated emulator CPUs are handed out over (default: this guest alone).
    With ``tier_metadata`` (the default) the arguments start with two
    ``--xml`` edits that write the guest's tier into its ``<metadata>`` as
    ``<guest xmlns="https://kvmlab.invalid/host_resources/1"><tier>TIER</tier></guest>``,
    the element the execution_pool module reads, so the tier travels with
    the guest. Returns an argv list (no shell quoting needed: cpulists and paths have
    no spaces; virt-install takes the commas inside cpusets).
    """
    if not isinstance(guest, dict) or not guest.get('name'):
        raise PlacementError('the guest must be a dict with name, tier and vcpus')
    every = list(guests) if guests else [guest]
    names = [g.get('name') for g in every if isinstance(g, dict)]
    if guest['name'] not in names:
        every.append(guest)
    placement = guest_placement(every, tiers, pools, emulator_policy)
    entry = [e for e in placement['guests'] if e['name'] == guest['name']][0]
    own = dict(entry)
    # the guest's own fields win over the list's copy (vcpus, iothreads, policy)
    if guest.get('vcpus') is not None:
        own['vcpus'] = _int_in(guest['vcpus'], 1, 4096, 'guest %s: vcpus' % guest['name'])
    if guest.get('iothreads') is not None:
        own['iothreads'] = _int_in(guest['iothreads'], 0, 1024, 'guest %s: iothreads' % guest['name'])
    if not own['vcpus']:
        raise PlacementError('guest %s: vcpus is needed for one vcpupin per vCPU' % guest['name'])
    tune = ['shares=%d' % own['cpu_shares']]
    for vcpu in range(own['vcpus']):
        tune.append('vcpupin%d.vcpu=%d' % (vcpu, vcpu))
        tune.append('vcpupin%d.cpuset=%s' % (vcpu, own['vcpu_cpuset']))
    tune.append('emulatorpin.cpuset=%s' % own['emulator_cpuset'])
    args = []
    if tier_metadata:
        args.extend(['--xml', './metadata/guest/tier=%s' % own['tier'],
                     # the namespace of _execution_pool.METADATA_NS, as a default namespace
                     '--xml', './metadata/guest/@xmlns=https://kvmlab.invalid/host_resources/1'])
    args.extend(['--resource', 'partition=%s' % own['partition']])
    iothreads = own['iothreads'] or 0
    if iothreads:
        args.extend(['--iothreads', 'iothreads=%d' % iothreads])
        for index in range(iothreads):
            tune.append('iothreadpin%d.iothread=%d' % (index, index + 1))
            tune.append('iothreadpin%d.cpuset=%s' % (index, own['iothread_cpuset']))
    args.extend(['--cputune', ','.join(tune)])
    return args
