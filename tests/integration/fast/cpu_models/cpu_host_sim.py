# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private libvirtds that see the host CPU of another CPU generation.

The fast tier has one real machine, and its QEMU runs guests with TCG. What a
pool of hypervisors of different generations needs is one libvirt per member
whose domain capabilities report *that* member's CPU. This module makes them:

- A fixture in this directory describes a host CPU the way ``virsh
  capabilities`` does: a libvirt CPU model, its vendor, a CPUID signature and
  the features the host has beyond the model. Its full feature set is the
  model's features from libvirt's CPU map (``x86_<model>.xml``) plus those.
- libvirt builds the TCG "host CPU" of its domain capabilities from the QEMU
  capabilities cache (``/var/cache/libvirt/qemu/capabilities/*.xml``): the
  properties of QEMU's ``max`` CPU under ``<hostCPU type='tcg'>`` and, per
  CPU model, whether TCG can run it (``usable``, ``<blocker>`` features).
  :func:`prepare_cache` copies the shared cache of the fast tier and rewrites
  both for the x86_64 emulator: every boolean property is true exactly when
  the fixture has the feature, vendor/family/model/stepping come from the
  fixture, and each known model is usable unless it needs features the
  fixture lacks (those become its blockers).
- A :class:`fastvirt.FastVirt` daemon started on that cache is a real
  libvirtd whose ``getDomainCapabilities()`` host-model CPU,
  ``baselineHypervisorCPU()`` and ``compareHypervisorCPU()`` answer for the
  fixture's CPU. Guests still run under TCG: QEMU emulates what it can.

Nothing here is product code; the collection never rewrites caches.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
#: libvirt's CPU map (Debian: package libvirt-daemon); override with LIBVIRT_CPU_MAP_DIR
CPU_MAP_DIR = os.environ.get('LIBVIRT_CPU_MAP_DIR', os.path.join(os.sep, 'usr', 'share', 'libvirt', 'cpu_map'))
VENDOR_STRINGS = {'Intel': 'GenuineIntel', 'AMD': 'AuthenticAMD', 'Hygon': 'HygonGenuine'}
#: libvirt feature names whose QEMU property has another spelling beyond '_' -> '-'
QEMU_SPELLING = {'pclmuldq': 'pclmulqdq'}
X86_64_EMULATOR = re.compile(r'<emulator>[^<]*qemu-system-x86_64</emulator>')


class SimulationError(RuntimeError):
    """The cache cannot be made to describe the fixture."""


def fixture_names():
    return sorted(os.path.basename(path)[:-4] for path in glob.glob(os.path.join(HERE, '*.xml')))


def fixture_xml(name):
    with open(os.path.join(HERE, name + '.xml')) as handle:
        return handle.read()


def cpu_map_model(model):
    """``(vendor, features)`` of a libvirt CPU model from the CPU map."""
    path = os.path.join(CPU_MAP_DIR, 'x86_%s.xml' % model)
    if not os.path.exists(path):
        raise SimulationError('libvirt CPU map has no model %s (%s)' % (model, path))
    node = ET.parse(path).getroot().find('model')
    vendor = node.find('vendor')
    return (vendor.get('name') if vendor is not None else None,
            frozenset(feature.get('name') for feature in node.findall('feature')))


def non_migratable():
    """Features the CPU map marks ``migratable='no'`` (invtsc, xsaves...)."""
    root = ET.parse(os.path.join(CPU_MAP_DIR, 'x86_features.xml')).getroot()
    return frozenset(node.get('name') for node in root.findall('feature') if node.get('migratable') == 'no')


def cpu_map_models():
    """Names of every x86 model in the CPU map."""
    names = {}
    for path in glob.glob(os.path.join(CPU_MAP_DIR, 'x86_*.xml')):
        node = ET.parse(path).getroot().find('model')
        if node is not None and node.get('name'):
            names[node.get('name')] = path
    return sorted(names)


def load_fixture(name):
    """A fixture as a dict: name, model, vendor, signature, extras and the full feature set."""
    root = ET.fromstring(fixture_xml(name))
    model = root.findtext('model')
    vendor = root.findtext('vendor')
    signature = root.find('signature')
    extras = frozenset(node.get('name') for node in root.findall('feature'))
    map_vendor, model_features = cpu_map_model(model)
    if map_vendor and map_vendor != vendor:
        raise SimulationError('fixture %s: vendor %s but CPU map model %s is %s' % (name, vendor, model, map_vendor))
    return {
        'name': name,
        'model': model,
        'vendor': vendor,
        'family': int(signature.get('family')),
        'cpuid_model': int(signature.get('model')),
        'stepping': int(signature.get('stepping', '0')),
        'extras': extras,
        'features': model_features | extras,
        'xml': fixture_xml(name),
    }


def _qemu_name(feature, known):
    for candidate in (QEMU_SPELLING.get(feature), feature.replace('_', '-'), feature):
        if candidate and candidate in known:
            return candidate
    return None


def _rewrite(text, fixture):
    start = text.find("<hostCPU type='tcg'")
    if start < 0:
        raise SimulationError('QEMU capabilities cache has no TCG host CPU')
    end = text.index('</hostCPU>', start)
    block = text[start:end]
    known = set(re.findall(r"<property name='([^']+)' type='boolean'", block))
    host = {}
    missing = []
    pinned = non_migratable()
    for feature in fixture['features']:
        qemu = _qemu_name(feature, known)
        if qemu is None:
            missing.append(feature)
        else:
            host[qemu] = feature
    if missing:
        raise SimulationError('fixture %s: QEMU knows no property for %s' % (fixture['name'], ', '.join(sorted(missing))))
    values = {'vendor': VENDOR_STRINGS[fixture['vendor']], 'family': fixture['family'],
              'model': fixture['cpuid_model'], 'stepping': fixture['stepping'],
              'model-id': '%s (simulated %s)' % (fixture['model'], fixture['name'])}

    def prop(match):
        name, kind = match.group(1), match.group(2)
        if kind == 'boolean':
            if name in host:
                # QEMU marks what cannot migrate (invtsc...) in its migratable expansion
                return ("<property name='%s' type='boolean' value='true' migratable='%s'/>"
                        % (name, 'no' if host[name] in pinned else 'yes'))
            return "<property name='%s' type='boolean' value='false'/>" % name
        if name in values:
            return "<property name='%s' type='%s' value='%s'/>" % (name, kind, values[name])
        return match.group(0)

    block = re.sub(r"<property name='([^']+)' type='(\w+)' value='[^']*'(?: migratable='\w+')?/>", prop, block)
    text = text[:start] + block + text[end:]

    # per-model usability under TCG: blockers are the model's features the host lacks
    models = set(cpu_map_models())
    host_features = fixture['features']

    def cpu(match):
        attrs, name = match.group(1), match.group(2)
        if name not in models:
            return match.group(0)
        lacking = sorted(cpu_map_model(name)[1] - host_features)
        head = re.sub(r"usable='\w+'", "usable='%s'" % ('no' if lacking else 'yes'), attrs)
        if not lacking:
            return head + '/>'
        blockers = ''.join("\n    <blocker name='%s'/>" % (_qemu_name(f, known) or f) for f in lacking)
        return head + '>' + blockers + '\n  </cpu>'

    return re.sub(r"(<cpu type='tcg' name='([^']+)'[^>]*?)(?:/>|>.*?</cpu>)", cpu, text, flags=re.S)


def prepare_cache(source_cache, target_cache, fixture):
    """Copy the shared QEMU capabilities cache and make its x86_64 TCG host the fixture's CPU."""
    if os.path.exists(target_cache):
        shutil.rmtree(target_cache)
    shutil.copytree(source_cache, target_cache)
    done = 0
    for path in glob.glob(os.path.join(target_cache, 'qemu', 'capabilities', '*.xml')):
        with open(path) as handle:
            text = handle.read()
        if not X86_64_EMULATOR.search(text):
            continue
        with open(path, 'w') as handle:
            handle.write(_rewrite(text, fixture))
        done += 1
    if not done:
        raise SimulationError('no qemu-system-x86_64 capabilities in %s (start a fastvirt daemon first)'
                              % source_cache)
    return target_cache


def host_model(domcaps_xml):
    """``(model, vendor, required, disabled)`` of a domain capabilities host-model CPU."""
    root = ET.fromstring(domcaps_xml)
    for mode in root.iter('mode'):
        if mode.get('name') == 'host-model':
            return (mode.findtext('model'), mode.findtext('vendor'),
                    {f.get('name') for f in mode.findall('feature') if f.get('policy') == 'require'},
                    {f.get('name') for f in mode.findall('feature') if f.get('policy') == 'disable'})
    raise SimulationError('domain capabilities without a host-model CPU')


class SimulatedHosts(object):
    """One private libvirtd per fixture, each seeing that fixture's host CPU.

    ``base`` is the fastvirt base directory (state dirs there are reaped by
    the next session if this one dies: each gets an ``owner.pid``).
    """

    def __init__(self, base, names):
        self.base = base
        self.names = list(names)
        self.hosts = {}
        self.primer = None
        self.fixtures = dict((name, load_fixture(name)) for name in self.names)

    def _state_dir(self):
        import tempfile
        state_dir = tempfile.mkdtemp(prefix='c', dir=self.base)
        with open(os.path.join(state_dir, 'owner.pid'), 'w') as handle:
            handle.write('%d\n' % os.getpid())
        return state_dir

    def start(self):
        """Probe QEMU once, then start one daemon per fixture on a rewritten copy of that cache.

        libvirt keeps the host's CPUID in the QEMU capabilities cache and
        throws the cache away ("host cpuid changed") when the CPU it checks on
        answers otherwise; CPUID differs between CPUs (APIC ids), so the probe
        and every simulated daemon run on one CPU (they inherit this process's
        affinity, set for the time they start and restored after).
        """
        import fastvirt  # pylint: disable=import-outside-toplevel  (tools/fastvirt on sys.path)
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(before)})
        try:
            self.primer = fastvirt.FastVirt(self._state_dir())
            self.primer.up()
            self.primer.connect().getDomainCapabilities(None, 'x86_64', None, 'qemu', 0)
            for name in self.names:
                virt = fastvirt.FastVirt(self._state_dir())
                prepare_cache(self.primer.cache_dir, virt.cache_dir, self.fixtures[name])
                self.hosts[name] = virt
                virt.up()
        finally:
            os.sched_setaffinity(0, before)
        return self

    def stop(self):
        daemons = list(self.hosts.values()) + ([self.primer] if self.primer else [])
        for virt in daemons:
            try:
                virt.down()
            finally:
                shutil.rmtree(virt.dir, ignore_errors=True)
        self.hosts = {}
        self.primer = None

    def uri(self, name):
        return self.hosts[name].uri

    def persistent_xml(self, name, guest):
        """The guest's persistent definition as libvirt stored it on disk (not through the API)."""
        with open(self.hosts[name].path('etc', 'libvirt', 'qemu', '%s.xml' % guest)) as handle:
            return handle.read()
