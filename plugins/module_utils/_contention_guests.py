# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Busy guests as the contention load: which guests, their domain XML, their live weights.

Pure functions (data in, data out) for ``cpu_contention_measure`` with
``load=guests``; the runner (``_contention_run``) talks to libvirt and reads
the host.

* :func:`guest_counts` and :func:`load_guests`: how many busy guests each
  tier gets (seed 001's 3 Gold, 4 Silver, 6 Bronze by default) and their names
  (``<prefix>-<tier>-<n>``);
* :func:`guest_plan`: where each guest's threads go, from
  ``_libvirt.guest_placement`` (the shared execution pool's own placement:
  vCPUs floating over the whole guest pool, emulator thread and IOThreads
  on ``host_emulator``), with the tier's partition and shares;
* :func:`domain_xml`: the domain of a busy guest, pinned from its first start
  (busy guests that are not pinned spread over the reserve and starve the
  host); phase ``in_place`` defines it as a guest that ran before apply (no
  partition, no ``<shares>``), phase ``moved`` as apply leaves it (the tier's
  partition and ``<shares>``), so a destroy and start moves it into its tier;
* :func:`scope_weights`: the live weight apply gives each guest still in
  ``machine.slice``: its tier's weight split over the tier's running guests
  (``_execution_pool.weight_budget``), so that a tier's nodes together carry
  exactly the tier's weight;
* :func:`scenario_states`: which guests run and which are paused in a
  scenario (a paused guest's vCPU threads sleep, as an idle guest's do).
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention import (
    ContentionError,
    partition_cgroup,
)
from ansible_collections.kvmlab.host_resources.plugins.module_utils._execution_pool import weight_budget
from ansible_collections.kvmlab.host_resources.plugins.module_utils._libvirt import (
    PlacementError,
    guest_placement,
)

#: Seed 001's busy guests per tier (held-out check of issue 15).
DEFAULT_GUESTS_PER_TIER = {'gold': 3, 'silver': 4, 'bronze': 6}
#: The phases of a guest load, in order.
PHASES = ('in_place', 'moved')
#: The namespace of the collection's libvirt metadata; the element marks a contention guest.
METADATA_NS = 'https://kvmlab.invalid/host_resources/1'
METADATA_ELEMENT = 'contention'
DOMAIN_TYPES = ('qemu', 'kvm')

_PREFIX_RE = re.compile(r'^[a-z0-9][a-z0-9-]{0,30}$')
_RUN_RE = re.compile(r'<(?:\w+:)?%s\b[^>]*\brun=["\']([^"\']+)["\']' % METADATA_ELEMENT)


def validate_guest_prefix(prefix):
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ContentionError('guest_prefix "%s" must be 1-31 lower case letters, digits and -, starting '
                              'with a letter or digit' % (prefix,))
    return prefix


def guest_counts(tier_names, per_tier=None):
    """Busy guests per tier, in tier order: ``{tier: count}``.

    ``per_tier`` None gives seed 001's counts (3 Gold, 4 Silver, 6 Bronze);
    a tier without a count then fails, as does a count that is not an
    integer >= 0, or a tier that is not one of ``tier_names``.
    """
    given = DEFAULT_GUESTS_PER_TIER if per_tier is None else per_tier
    if not isinstance(given, dict):
        raise ContentionError('guests_per_tier must map tier names to guest counts, got %r' % (given,))
    unknown = sorted(str(t) for t in given if t not in tier_names)
    if unknown and per_tier is not None:
        raise ContentionError('guests_per_tier names unknown tiers %s (tiers: %s)'
                              % (', '.join(unknown), ', '.join(tier_names)))
    out = {}
    for tier in tier_names:
        if tier not in given:
            raise ContentionError('guests_per_tier has no count for tier %s' % tier)
        count = given[tier]
        if isinstance(count, bool) or not isinstance(count, int):
            try:
                count = int(str(count).strip())
            except ValueError:
                raise ContentionError('guests_per_tier.%s must be an integer, got %r' % (tier, given[tier]))
        if count < 0 or count > 64:
            raise ContentionError('guests_per_tier.%s must be 0-64, got %d' % (tier, count))
        out[tier] = count
    if not any(out.values()):
        raise ContentionError('guests_per_tier gives no guest at all')
    return out


def load_guests(prefix, counts):
    """``[{'name', 'tier'}]``: ``<prefix>-<tier>-<n>`` for n = 1..count, in tier order."""
    validate_guest_prefix(prefix)
    out = []
    for tier, count in counts.items():
        for index in range(count):
            out.append({'name': '%s-%s-%d' % (prefix, tier.replace('_', '-'), index + 1), 'tier': tier})
    return out


def guest_plan(guests, tiers, pools, vcpus):
    """Each busy guest with its placement, tier partition and weights, from ``guest_placement``.

    ``pools`` holds ``guest_domain``, ``host_emulator`` and ``host_reserved``
    cpulists. Returns ``[{'name', 'tier', 'vcpus', 'vcpu_cpuset',
    'emulator_cpuset', 'partition', 'slice', 'cpu_shares', 'cpu_weight'}]``.
    """
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or not 1 <= vcpus <= 64:
        raise ContentionError('busy_vcpus must be 1-64, got %r' % (vcpus,))
    try:
        placement = guest_placement([dict(g, vcpus=vcpus) for g in guests], tiers, pools, 'share')
    except PlacementError as exc:
        raise ContentionError(str(exc))
    keys = ('name', 'tier', 'vcpus', 'vcpu_cpuset', 'emulator_cpuset', 'partition', 'slice', 'cpu_shares',
            'cpu_weight')
    return [dict((k, entry[k]) for k in keys) for entry in placement['guests']]


def domain_xml(entry, kernel, phase, run_id, memory_mib=16, domain_type='qemu', emulator=None, uuid=None):
    """The domain XML of a busy guest for ``phase`` (``in_place`` or ``moved``).

    Every vCPU is pinned to the whole guest pool (it floats there, as apply
    places it), the emulator thread to its ``emulator_cpuset``; the
    multiboot ``kernel`` keeps every vCPU busy. ``moved`` adds the tier's
    resource partition and ``<shares>``, which libvirt applies at the next
    start. The metadata element ``<contention run="RUN_ID"/>`` marks it as a
    measurement's guest, so that a later run or ``mode=cleanup`` can find
    leftovers without touching any other domain. ``uuid`` (that of the defined
    domain) lets the XML redefine it.
    """
    if phase not in PHASES:
        raise ContentionError('phase must be one of %s, got %r' % (', '.join(PHASES), phase))
    if domain_type not in DOMAIN_TYPES:
        raise ContentionError('domain_type must be one of %s, got %r' % (', '.join(DOMAIN_TYPES), domain_type))
    tune = ['    <vcpupin vcpu="%d" cpuset="%s"/>' % (vcpu, entry['vcpu_cpuset']) for vcpu in range(entry['vcpus'])]
    tune.append('    <emulatorpin cpuset="%s"/>' % entry['emulator_cpuset'])
    if phase == 'moved':
        tune.insert(0, '    <shares>%d</shares>' % entry['cpu_shares'])
    parts = [
        '<domain type=%s>' % quoteattr(domain_type),
        '  <name>%s</name>' % escape(entry['name']),
    ] + (['  <uuid>%s</uuid>' % escape(uuid)] if uuid else []) + [
        '  <metadata>',
        '    <kvmlab:%s xmlns:kvmlab=%s run=%s tier=%s/>' % (
            METADATA_ELEMENT, quoteattr(METADATA_NS), quoteattr(run_id), quoteattr(entry['tier'])),
        '  </metadata>',
        "  <memory unit='MiB'>%d</memory>" % memory_mib,
        "  <vcpu placement='static'>%d</vcpu>" % entry['vcpus'],
        '  <cputune>',
    ] + tune + ['  </cputune>']
    if phase == 'moved':
        parts.append('  <resource><partition>%s</partition></resource>' % escape(entry['partition']))
    parts += [
        "  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>%s</kernel></os>" % escape(kernel),
        "  <clock offset='utc'/>",
        '  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>',
        '  <devices>',
    ]
    if emulator:
        parts.append('    <emulator>%s</emulator>' % escape(emulator))
    parts += [
        "    <controller type='usb' model='none'/>",
        "    <memballoon model='none'/>",
        '  </devices>',
        '</domain>',
    ]
    return '\n'.join(parts) + '\n'


def contention_run_id(xml_text):
    """The ``run`` of a domain's contention metadata element, None when the domain is not a measurement's."""
    if METADATA_NS not in (xml_text or ''):
        return None
    match = _RUN_RE.search(xml_text)
    return match.group(1) if match else None


def is_leftover(name, xml_text, prefix):
    """A domain an earlier measurement left: its name has the prefix and its XML the contention mark."""
    return name.startswith(prefix + '-') and contention_run_id(xml_text) is not None


def tier_node(tier_entry, systemd):
    """The cgroup node name that is the tier's own: its slice, or its partition's directory without systemd."""
    if systemd:
        return tier_entry['slice']
    return partition_cgroup(tier_entry['partition']).rsplit('/', 1)[-1]


def scope_weights(plan, running, systemd=True):
    """The live weight apply gives each running guest's scope, by the tier weight budget.

    ``plan``: :func:`guest_plan` entries; ``running``: name ->
    ``{'cgroup'}`` (the guest's own cgroup path) of the guests that run.
    A guest whose cgroup's parent is its tier's node (slice, or partition
    directory without systemd) has moved: its scope keeps the tier's own
    weight (from ``<shares>``) and is not listed. A guest still elsewhere
    (``machine.slice``, ``/machine``) gets its tier's weight times the share
    of the tier's running guests its scope holds. Weights are ``cpu_weight``
    with systemd (cgroup v2 ``cpu.weight``) and ``cpu_shares`` without
    (cgroup v1 ``cpu.shares``). Returns ``{name: weight}``.
    """
    tiers = {}
    budget_guests = []
    for entry in plan:
        if entry['name'] not in running:
            continue
        cgroup = running[entry['name']]['cgroup'] or ''
        parts = [p for p in cgroup.split('/') if p]
        if not parts:
            continue
        node = tier_node(entry, systemd)
        weight = entry['cpu_weight'] if systemd else entry['cpu_shares']
        tiers[entry['tier']] = {'slice': node, 'cpu_weight': weight}
        budget_guests.append({'name': entry['name'], 'tier': entry['tier'], 'scope': parts[-1],
                              'slice': parts[-2] if len(parts) > 1 else ''})
    nodes = weight_budget(tiers, budget_guests)['nodes']
    out = {}
    for guest in budget_guests:
        if guest['slice'] == tiers[guest['tier']]['slice']:
            continue
        out[guest['name']] = nodes[guest['scope']]
    return out


def scenario_states(plan, loaded):
    """``{name: 'running' | 'paused'}``: the loaded tiers' guests run, the others are paused (idle)."""
    loaded = set(loaded)
    return dict((entry['name'], 'running' if entry['tier'] in loaded else 'paused') for entry in plan)
