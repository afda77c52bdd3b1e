#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: metrics_collector
short_description: Install or remove the kvmlab metrics collector (node_exporter textfile, systemd timer)
version_added: 0.2.0
description:
  - Installs on the host the collector that tells, continuously, whether the shared
    execution pool keeps its promise - per tier CPU seconds, weight, entitled share
    given the busy tiers and achieved share over the last interval, running guests;
    per guest vCPU run delay ("CPU ready"), CPU seconds, tier and whether its vCPUs
    stay in C(guest_domain); busy seconds of C(host_reserved) and C(guest_domain),
    CPU time of host services allowed outside the reserve, PSI; KSM, zram and swap
    figures; one gauge per layer for its status verdict - in node_exporter's textfile
    format, under metric names C(kvmlab_*).
  - The collector is the collection's C(module_utils/_metrics.py), written verbatim to
    O(install_dir)/C(kvmlab_metrics.py) (the module reads its own payload's copy, so
    there is one source of the collector); a JSON configuration with the tiers, the
    pools and the guest-to-tier map; a oneshot service and a timer running it every
    O(interval) seconds with the system Python (C(-I -S), standard library only), which
    imports the collector so that its bytecode is cached between runs, in
    O(state_dir)/C(pycache) (C(-X pycache_prefix)). No
    daemon of its own and no port; node_exporter's textfile collector reads the file,
    which the collector writes atomically (temporary file in the same directory, then
    a rename).
  - The first O(state=present) records what was there before (every file and
    directory it will create, the collector's output and state files included) in a
    root-only snapshot at O(snapshot_path) through the collection's snapshot library.
    O(state=absent) stops and disables the timer, restores that snapshot (files that
    did not exist are removed, directories that did not exist are removed when empty)
    and removes the snapshot; without a snapshot it removes the files it manages. The
    bytecode cache goes whole either way.
  - The role C(kvmlab.host_resources.shared_execution_pool_metrics) installs, reports
    and uninstalls the collector with the collection's policy.
author:
  - kvmlab.host_resources contributors (@kvmlab)
extends_documentation_fragment:
  - kvmlab.host_resources.attributes
attributes:
  check_mode:
    support: full
    details: Predicts every file written or removed and every systemctl action; runs only C(systemctl is-enabled) and C(is-active).
  diff_mode:
    support: full
    details: Before and after of every file written or removed.
  platform:
    platforms: posix
    details: Linux with cgroup v2; with O(systemd=true) systemd as PID 1.
options:
  state:
    description:
      - V(present) installs (or updates) the collector, its configuration and units, and
        enables and starts the timer.
      - V(absent) removes everything V(present) added, the collector's output and state included.
      - V(query) changes nothing; it compares the installed files and the timer with what V(present) would
        install and reads the collector's latest output (RV(items), RV(verdict), RV(latest)).
    type: str
    choices: [present, absent, query]
    default: present
  tiers:
    description:
      - The weighted tiers, C(kvmlab_tiers)-shaped - tier name to a dict with C(slice) and
        C(cpu_weight) (or C(weight)); other keys are ignored. Required with O(state=present).
    type: dict
  pools:
    description:
      - The C(cpu_pools) filter's result (or any dict with the pool cpulists C(host_reserved),
        C(host_housekeeping), C(host_emulator), C(guest_domain)); other keys are ignored.
        Without C(host_reserved) and C(guest_domain) their series are absent.
    type: dict
    default: {}
  guests:
    description:
      - Guest-to-tier map for guests whose scope is not (yet) inside their tier's slice - a
        C(kvmlab_guests)-shaped list of dicts with C(name) and C(tier), or a dict of name to tier.
        Guests are found live (libvirt's pid files and the machine scopes); this only names
        the tier of those outside every tier slice.
    type: raw
    default: []
  busy_threshold_cpus:
    description: A tier is busy when it used more than this many CPUs on average over the last interval.
    type: float
    default: 0.1
  policy_status_file:
    description:
      - >-
        JSON file the roles' status entry points may write,
        C({"layers": {"<layer>": {"verdict": "applied"}}}), read for the C(kvmlab_policy_status)
        gauge; absent file, no series. The snapshot records it, so O(state=absent) puts it back as it was
        before the first install (removes the one the status playbook wrote).
    type: path
    default: /var/lib/kvmlab/policy_status.json
  interval:
    description: Seconds between two runs of the collector.
    type: int
    default: 15
  textfile_dir:
    description: node_exporter's textfile collector directory (Debian's C(prometheus-node-exporter) reads this one).
    type: path
    default: /var/lib/prometheus/node-exporter
  output_name:
    description: Name of the file written in O(textfile_dir); must end in C(.prom).
    type: str
    default: kvmlab.prom
  install_dir:
    description: Directory of the collector script.
    type: path
    default: /usr/local/lib/kvmlab
  config_path:
    description: The collector's JSON configuration.
    type: path
    default: /etc/kvmlab/metrics.json
  state_dir:
    description: Directory of the collector's state file (the previous sample).
    type: path
    default: /var/lib/kvmlab/metrics
  unit_dir:
    description: Directory of the service and timer units.
    type: path
    default: /etc/systemd/system
  unit_name:
    description: Name of the units, without suffix (C(NAME.service), C(NAME.timer)).
    type: str
    default: kvmlab-metrics
  python:
    description: The interpreter that runs the collector on the host (Python 3.8 or later).
    type: path
    default: /usr/bin/python3
  systemd:
    description:
      - Run C(systemctl) (daemon-reload; enable and start the timer, or stop and disable it).
        V(false) only writes or removes files (an image being built, a chroot).
    type: bool
    default: true
  snapshot_path:
    description: Root-only snapshot of the state before the first install; O(state=absent) restores and removes it.
    type: path
    default: /var/lib/kvmlab/snapshots/metrics.json
'''

EXAMPLES = r'''
- name: Install the collector with the built-in tiers and the host's pools
  kvmlab.host_resources.metrics_collector:
    tiers: "{{ kvmlab_tiers }}"
    pools: "{{ ansible_facts.cpu_topology | kvmlab.host_resources.cpu_pools }}"
    guests: "{{ kvmlab_guests | default([]) }}"
    interval: 15

- name: Remove it again, output and state included
  kvmlab.host_resources.metrics_collector:
    state: absent
'''

RETURN = r'''
state:
  description: The state applied.
  returned: always
  type: str
  sample: present
files:
  description: Files written or removed (or that would be), in order.
  returned: always
  type: list
  elements: str
  sample: [/usr/local/lib/kvmlab/kvmlab_metrics.py, /etc/kvmlab/metrics.json]
dirs:
  description: Directories created or removed (or that would be).
  returned: always
  type: list
  elements: str
  sample: [/usr/local/lib/kvmlab]
systemctl:
  description: The systemctl commands run (or that would run), as argument lists without the binary.
  returned: always
  type: list
  elements: list
  sample: [[daemon-reload], [enable, --now, kvmlab-metrics.timer]]
snapshot:
  description: The snapshot path and whether this run created (V(created)), restored (V(restored)) or found it (V(exists)), or none (V(absent)).
  returned: always
  type: dict
  sample: {path: /var/lib/kvmlab/snapshots/metrics.json, action: created}
paths:
  description: Where everything is on the host.
  returned: always
  type: dict
  contains:
    collector:
      description: The collector script.
      type: str
      sample: /usr/local/lib/kvmlab/kvmlab_metrics.py
    config:
      description: Its configuration.
      type: str
      sample: /etc/kvmlab/metrics.json
    output:
      description: The textfile it writes.
      type: str
      sample: /var/lib/prometheus/node-exporter/kvmlab.prom
    state:
      description: Its state file.
      type: str
      sample: /var/lib/kvmlab/metrics/state.json
    service:
      description: The service unit file.
      type: str
      sample: /etc/systemd/system/kvmlab-metrics.service
    timer:
      description: The timer unit file.
      type: str
      sample: /etc/systemd/system/kvmlab-metrics.timer
timer:
  description: The timer as systemd reports it after the run (V(null) values with O(systemd=false)).
  returned: always
  type: dict
  contains:
    enabled:
      description: Whether the timer is enabled.
      type: bool
    active:
      description: Whether the timer is active.
      type: bool
config:
  description: The collector's configuration as written (or that would be); V(null) for O(state=absent).
  returned: always
  type: dict
items:
  description:
    - With O(state=query), one item per installed piece (collector, config, service, timer, the timer
      running, a fresh output), each C(name), C(state) (V(applied), V(stock), V(drifted)), C(intended), C(live).
  returned: when state is query
  type: list
  elements: dict
verdict:
  description: With O(state=query), the layer's verdict from RV(items) (C(verdict), C(summary), ...).
  returned: when state is query
  type: dict
latest:
  description:
    - With O(state=query), the tier series of the collector's latest output (C(kvmlab_tier_*),
      C(kvmlab_collector_*)) as family name to a list of C(labels) and C(value); empty without output.
  returned: when state is query
  type: dict
  sample: {kvmlab_tier_entitled_share: [{labels: {tier: gold}, value: 0.6}]}
output_age_seconds:
  description: With O(state=query), seconds since the output was written; V(null) when there is none.
  returned: when state is query
  type: float
'''

import base64
import json
import os
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _metrics
from ansible_collections.kvmlab.host_resources.plugins.module_utils import _snapshot as snap
from ansible_collections.kvmlab.host_resources.plugins.module_utils._status import verdict as _verdict


def collector_source():
    """The text of ``_metrics.py`` as shipped in this module's payload (zipped by AnsiballZ)."""
    loader = getattr(_metrics, '__loader__', None)
    source = None
    if loader is not None and hasattr(loader, 'get_source'):
        source = loader.get_source(_metrics.__name__)
    if not source:
        with open(_metrics.__file__) as handle:
            source = handle.read()
    # the collection loader (ansible-test, controller-side imports) hands the source back as bytes
    if isinstance(source, bytes):
        source = source.decode('utf-8')
    return source


def parse_latest(text, prefixes=('kvmlab_tier_', 'kvmlab_collector_')):
    """Family name -> [{labels, value}] of the text format lines whose names start with ``prefixes``."""
    out = {}
    for line in (text or '').splitlines():
        if not line or line.startswith('#') or not line.startswith(prefixes):
            continue
        head, _sep, value = line.rpartition(' ')
        name, _brace, labels_text = head.partition('{')
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels_text))
        try:
            out.setdefault(name, []).append({'labels': labels, 'value': float(value)})
        except ValueError:
            continue
    return out


def _text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


class Installer(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        self.p = p
        if not p['output_name'].endswith('.prom') or '/' in p['output_name']:
            module.fail_json(msg='output_name must be a file name ending in .prom, got %s' % p['output_name'])
        self.paths = {
            'collector': os.path.join(p['install_dir'], _metrics.COLLECTOR_NAME),
            'config': p['config_path'],
            'output': os.path.join(p['textfile_dir'], p['output_name']),
            'state': os.path.join(p['state_dir'], 'state.json'),
            'pycache': os.path.join(p['state_dir'], _metrics.PYCACHE_NAME),
            'service': os.path.join(p['unit_dir'], p['unit_name'] + '.service'),
            'timer': os.path.join(p['unit_dir'], p['unit_name'] + '.timer'),
        }
        self.service_name = p['unit_name'] + '.service'
        self.timer_name = p['unit_name'] + '.timer'
        self.result = {'state': p['state'], 'files': [], 'dirs': [], 'systemctl': [], 'paths': self.paths,
                       'snapshot': {'path': p['snapshot_path'], 'action': 'absent'},
                       'timer': {'enabled': None, 'active': None}, 'config': None, 'changed': False}
        self.diffs = []
        self.systemctl = module.get_bin_path('systemctl', required=True) if p['systemd'] else None

    # systemd
    def _query(self, verb):
        rc, _out, _err = self.module.run_command([self.systemctl, verb, self.timer_name],
                                                 environ_update={'LC_ALL': 'C'})
        return rc == 0

    def _systemctl(self, *args):
        self.result['systemctl'].append(list(args))
        if self.module.check_mode:
            return
        rc, out, err = self.module.run_command([self.systemctl] + list(args), environ_update={'LC_ALL': 'C'})
        if rc != 0:
            self.module.fail_json(msg='systemctl %s failed (rc %d): %s' % (' '.join(args), rc, (err or out).strip()),
                                  rc=rc, stdout=out, stderr=err, **self.result)

    def _timer_state(self):
        if not self.systemctl:
            return {'enabled': None, 'active': None}
        return {'enabled': self._query('is-enabled'), 'active': self._query('is-active')}

    # files
    def wanted_files(self):
        p = self.p
        try:
            doc = _metrics.config_document(p['tiers'], p['pools'], p['guests'], p['busy_threshold_cpus'],
                                           p['policy_status_file'])
            service = _metrics.service_unit(p['python'], self.paths['collector'], self.paths['config'],
                                            self.paths['output'], self.paths['state'],
                                            [p['textfile_dir'], p['state_dir']], self.paths['pycache'])
            timer = _metrics.timer_unit(self.service_name, p['interval'])
        except _metrics.MetricsError as exc:
            self.module.fail_json(msg='metrics_collector: %s' % exc)
        self.result['config'] = doc
        return [
            (self.paths['collector'], collector_source(), 0o644),
            (self.paths['config'], json.dumps(doc, indent=2, sort_keys=True) + '\n', 0o644),
            (self.paths['service'], service, 0o644),
            (self.paths['timer'], timer, 0o644),
        ]

    def wanted_dirs(self):
        p = self.p
        return [(p['install_dir'], 0o755), (os.path.dirname(p['config_path']), 0o755),
                (p['textfile_dir'], 0o755), (p['state_dir'], 0o700)]

    def _diff(self, path, before, after):
        self.diffs.append({'before_header': path, 'after_header': path,
                           'before': before if before is not None else '', 'after': after if after is not None else ''})

    def present(self):
        files = self.wanted_files()
        new_dirs = []
        for directory, _mode in self.wanted_dirs():
            for missing in snap.missing_dirs(directory):
                if missing not in new_dirs:
                    new_dirs.append(missing)
        # the snapshot first: what exists before anything is written
        snapshot_path = self.p['snapshot_path']
        if os.path.exists(snapshot_path):
            self.result['snapshot']['action'] = 'exists'
        else:
            self.result['snapshot']['action'] = 'created'
            record_dirs = list(new_dirs) + [d for d in snap.missing_dirs(os.path.dirname(snapshot_path))
                                            if d not in new_dirs]
            try:
                # the policy status file the status playbook writes while the collector is installed
                extra = [self.p['policy_status_file']] if self.p['policy_status_file'] else []
                snapshot = snap.capture('metrics', files=[f[0] for f in files] + [self.paths['output'],
                                                                                  self.paths['state']] + extra,
                                        dirs=record_dirs, values={'unit_name': self.p['unit_name']})
                if not self.module.check_mode:
                    snap.save(snapshot_path, snapshot)
            except snap.SnapshotError as exc:
                self.module.fail_json(msg='metrics_collector: snapshot: %s' % exc)
        modes = dict(self.wanted_dirs())
        for directory in new_dirs:
            self.result['dirs'].append(directory)
            if not self.module.check_mode and not os.path.isdir(directory):
                try:
                    os.mkdir(directory, modes.get(directory, 0o755))
                except OSError as exc:
                    self.module.fail_json(msg='cannot create %s: %s' % (directory, exc.strerror or exc))
        units_changed = False
        for path, content, mode in files:
            before = _text(path)
            if before == content:
                continue
            self.result['files'].append(path)
            self._diff(path, before, content)
            if path in (self.paths['service'], self.paths['timer']):
                units_changed = True
            if not self.module.check_mode:
                try:
                    snap.write_atomic(path, content.encode('utf-8'), mode)
                except snap.SnapshotError as exc:
                    self.module.fail_json(msg='metrics_collector: %s' % exc)
        if self.systemctl:
            state = self._timer_state()
            if units_changed:
                self._systemctl('daemon-reload')
            if not state['enabled'] or not state['active']:
                self._systemctl('enable', '--now', self.timer_name)
            elif self.paths['timer'] in self.result['files']:
                self._systemctl('restart', self.timer_name)
            self.result['timer'] = self._timer_state() if not self.module.check_mode else \
                {'enabled': True, 'active': True}

    def _ours(self, path):
        text = _text(path)
        if text is None:
            return False
        if path == self.paths['config']:
            return _metrics.CONFIG_SCHEMA in text
        if path == self.paths['collector']:
            return 'CONFIG_SCHEMA = %r' % _metrics.CONFIG_SCHEMA in text
        if path in (self.paths['service'], self.paths['timer']):
            return text.startswith(_metrics.UNIT_HEADER)
        return True  # output and state files carry our fixed names in our directories

    def absent(self):
        if self.systemctl and os.path.exists(self.paths['timer']):
            state = self._timer_state()
            if state['enabled'] or state['active']:
                self._systemctl('disable', '--now', self.timer_name)
        snapshot_path = self.p['snapshot_path']
        dir_plan = []
        if os.path.exists(snapshot_path):
            try:
                snapshot = snap.load(snapshot_path, layer='metrics')
                current_files, current_dirs = snap.read_current(snapshot)
            except snap.SnapshotError as exc:
                self.module.fail_json(msg='metrics_collector: %s' % exc)
            file_plan = snap.file_restore_plan(snapshot, current_files)
            dir_plan = snap.dir_restore_plan(snapshot, current_dirs)
            self.result['snapshot']['action'] = 'restored'
        else:
            file_plan = []
            for key in ('collector', 'config', 'service', 'timer', 'output', 'state'):
                path = self.paths[key]
                if self._ours(path):
                    file_plan.append({'action': 'remove', 'path': path})
        # the collector's bytecode cache: the interpreter's, not recorded; it goes whole
        cache_files, cache_dirs = [], []
        for directory, _subdirs, names in os.walk(self.paths['pycache'], topdown=False):
            cache_files.extend({'action': 'remove', 'path': os.path.join(directory, n)} for n in sorted(names))
            cache_dirs.append({'action': 'rmdir_if_empty', 'path': directory})
        dir_plan = cache_dirs + dir_plan
        units_changed = False
        for action in file_plan:
            if action['action'] == 'keep':
                continue
            path = action['path']
            before = _text(path)
            after = None
            if action['action'] == 'write':
                after = base64.b64decode(action.get('content_b64') or '').decode('utf-8', 'replace')
            self.result['files'].append(path)
            self._diff(path, before, after)
            if path in (self.paths['service'], self.paths['timer']):
                units_changed = True
        self.result['files'].extend(a['path'] for a in cache_files)  # bytecode: no diff
        file_plan = file_plan + cache_files
        # check mode predicts with the same call that the real run makes (dir_plan is the cache's alone
        # without a snapshot)
        try:
            if not self.module.check_mode:
                snap.apply_file_plan(file_plan)
            self.result['dirs'] = snap.retire(snapshot_path, dir_plan, check=self.module.check_mode,
                                              gone=[a['path'] for a in file_plan if a['action'] == 'remove'])
        except snap.SnapshotError as exc:
            self.module.fail_json(msg='metrics_collector: %s' % exc, **self.result)
        if self.systemctl and units_changed:
            self._systemctl('daemon-reload')
        if self.systemctl:
            self.result['timer'] = self._timer_state() if not self.module.check_mode else \
                {'enabled': False, 'active': False}

    def query(self):
        items = []
        names = {'collector': 'collector script', 'config': 'collector config', 'service': 'service unit',
                 'timer': 'timer unit'}
        for path, content, _mode in self.wanted_files():
            live = _text(path)
            key = [k for k, v in self.paths.items() if v == path][0]
            state = 'applied' if live == content else 'stock' if live is None else 'drifted'
            items.append({'name': names[key], 'state': state, 'intended': path,
                          'live': 'absent' if live is None else 'as intended' if live == content else 'differs'})
        if self.systemctl:
            timer = self._timer_state()
            self.result['timer'] = timer
            running = timer['enabled'] and timer['active']
            items.append({'name': self.timer_name, 'state': 'applied' if running else
                          'stock' if not timer['enabled'] and not timer['active'] else 'drifted',
                          'intended': 'enabled, active', 'live': '%s, %s' % (
                              'enabled' if timer['enabled'] else 'disabled',
                              'active' if timer['active'] else 'inactive')})
        age = None
        try:
            age = max(0.0, time.time() - os.stat(self.paths['output']).st_mtime)
        except OSError:
            pass
        fresh_limit = 3 * self.p['interval'] + 5
        items.append({'name': 'output', 'state': 'stock' if age is None else 'applied' if age <= fresh_limit
                      else 'drifted', 'intended': 'written within %d s' % fresh_limit,
                      'live': 'absent' if age is None else 'written %.0f s ago' % age})
        self.result['items'] = items
        self.result['verdict'] = _verdict(items)
        self.result['output_age_seconds'] = age
        self.result['latest'] = parse_latest(_text(self.paths['output']))

    def run(self):
        if self.p['state'] == 'query':
            self.query()
            self.module.exit_json(**self.result)
        if self.p['state'] == 'present':
            if self.p['tiers'] is None:
                self.module.fail_json(msg='metrics_collector: tiers is required with state=present')
            self.present()
        else:
            self.absent()
        self.result['changed'] = bool(self.result['files'] or self.result['dirs'] or
                                      [c for c in self.result['systemctl'] if c != ['daemon-reload']] or
                                      self.result['snapshot']['action'] in ('created', 'restored'))
        if self.module._diff:
            self.result['diff'] = self.diffs
        self.module.exit_json(**self.result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', choices=['present', 'absent', 'query'], default='present'),
            tiers=dict(type='dict'),
            pools=dict(type='dict', default={}),
            guests=dict(type='raw', default=[]),
            busy_threshold_cpus=dict(type='float', default=0.1),
            policy_status_file=dict(type='path', default='/var/lib/kvmlab/policy_status.json'),
            interval=dict(type='int', default=15),
            textfile_dir=dict(type='path', default='/var/lib/prometheus/node-exporter'),
            output_name=dict(type='str', default='kvmlab.prom'),
            install_dir=dict(type='path', default='/usr/local/lib/kvmlab'),
            config_path=dict(type='path', default='/etc/kvmlab/metrics.json'),
            state_dir=dict(type='path', default='/var/lib/kvmlab/metrics'),
            unit_dir=dict(type='path', default='/etc/systemd/system'),
            unit_name=dict(type='str', default='kvmlab-metrics'),
            python=dict(type='path', default='/usr/bin/python3'),
            systemd=dict(type='bool', default=True),
            snapshot_path=dict(type='path', default='/var/lib/kvmlab/snapshots/metrics.json'),
        ),
        supports_check_mode=True,
    )
    Installer(module).run()


if __name__ == '__main__':
    main()
