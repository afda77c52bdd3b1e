# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cpu_pool role's playbooks against hypervisors of different CPU generations.

Inventory hosts are local aliases, each pointing at a private libvirtd that
sees one real CPU generation (cpu_models/cpu_host_sim.py) and keeping its
pool record in a directory of its own. The playbooks run with
ansible-playbook; their JSON report (cpu_pool_report_file) is checked, and
the effects are read back independently: guests' persistent XML from the
files libvirt stores, live XML from libvirt, the records from disk.

One test walks the operator story in order, because each step starts from
the state the previous one left: join (check mode, then for real), recalc
(no change), stat, leave (the model widens), a move into a pool of the other
vendor (refused), a move into a new pool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ET

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cpu_models'))

import cpu_host_sim as sim  # noqa: E402  pylint: disable=wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MEMBERS = {'hv-haswell': 'haswell-ep', 'hv-skylake': 'skylake-sp', 'hv-icelake': 'icelake-sp',
           'hv-epyc': 'epyc-rome'}
NS = 'urn:kvmlab:host-resources:cpu-pool:1'


def _playbook_command():
    command = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    return command if os.path.exists(command) else shutil.which('ansible-playbook')


@pytest.fixture(scope='module')
def lab(fastvirt, fastvirt_base):
    if not _playbook_command():
        pytest.skip('ansible-playbook is not installed')
    if not os.path.isdir(sim.CPU_MAP_DIR):
        pytest.skip('libvirt CPU map not found at %s (set LIBVIRT_CPU_MAP_DIR)' % sim.CPU_MAP_DIR)
    pool = sim.SimulatedHosts(fastvirt_base, sorted(set(MEMBERS.values())))
    work = tempfile.mkdtemp(prefix='kvmlab-cpupool-')
    token = uuid.uuid4().hex[:5]
    guests = {}
    try:
        pool.start()
        for host, fixture in MEMBERS.items():
            virt = pool.hosts[fixture]
            names = {'run': 'cp%s-%s-run' % (token, host[3:7]), 'off': 'cp%s-%s-off' % (token, host[3:7])}
            if host != 'hv-epyc':
                virt.define_guest(names['run'], vcpus=1)
            else:
                del names['run']
            virt.define_guest(names['off'], vcpus=1, start=False)
            guests[host] = names
        yield Lab(pool, work, guests)
    finally:
        pool.stop()
        shutil.rmtree(work, ignore_errors=True)


class Lab(object):
    def __init__(self, pool, work, guests):
        self.pool = pool
        self.work = work
        self.guests = guests
        self.collections = self._collections()

    def _collections(self):
        linked = os.path.join(REPO, '.build', 'collections')
        if os.path.realpath(os.path.join(linked, 'ansible_collections', 'kvmlab', 'host_resources')) == REPO:
            return linked
        root = os.path.join(self.work, 'collections')
        os.makedirs(os.path.join(root, 'ansible_collections', 'kvmlab'))
        os.symlink(REPO, os.path.join(root, 'ansible_collections', 'kvmlab', 'host_resources'))
        return root

    def virt(self, host):
        return self.pool.hosts[MEMBERS[host]]

    def facts_dir(self, host):
        return os.path.join(self.work, 'facts', host)

    def record(self, host):
        path = os.path.join(self.facts_dir(host), 'kvmlab_cpu_pool.fact')
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    def persistent(self, host, guest):
        """Pool metadata and CPU model of the guest's persistent XML, read from libvirt's file."""
        root = ET.fromstring(self.pool.persistent_xml(MEMBERS[host], guest))
        mark = root.find('metadata/{%s}cpu-pool' % NS)
        return {'pool': mark.get('pool') if mark is not None else None,
                'digest': mark.get('digest') if mark is not None else None,
                'model': root.findtext('cpu/model')}

    def inventory(self, pools):
        hosts = {}
        for host in MEMBERS:
            hosts[host] = {'cpu_pool_uri': self.virt(host).uri, 'cpu_pool_facts_dir': self.facts_dir(host)}
        children = dict(('cpu_pool_%s' % pool, {'hosts': dict((h, hosts[h]) for h in members)})
                        for pool, members in pools.items())
        placed = set(h for members in pools.values() for h in members)
        children['ungrouped'] = {'hosts': dict((h, hosts[h]) for h in MEMBERS if h not in placed)}
        data = {'all': {'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable,
                                 'ansible_become': False, 'cpu_pool_virttype': 'qemu',
                                 # the CI host is not a managed host: install nothing, lock a private file
                                 'kvmlab_install_packages': False,
                                 'kvmlab_host_lock_path': os.path.join(self.work, 'host.lock')},
                        'children': children}}
        path = os.path.join(self.work, 'inventory-%s.yml' % uuid.uuid4().hex[:6])
        with open(path, 'w') as handle:
            yaml.safe_dump(data, handle)
        return path

    def play(self, action, pools, *extra, **kwargs):
        """Run playbooks/cpu_pool_<action>.yml; returns (rc, report, changed per host, output)."""
        report = os.path.join(self.work, 'report-%s.json' % uuid.uuid4().hex[:6])
        command = [_playbook_command(), '-i', self.inventory(pools), 'playbooks/cpu_pool_%s.yml' % action]
        if kwargs.get('report', True):  # the report file is a (controller) change of its own
            command += ['-e', 'cpu_pool_report_file=%s' % report]
        command += list(extra)
        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                   ANSIBLE_COLLECTIONS_PATH=self.collections)
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=kwargs.get('timeout', 900), check=False)
        changed = dict((host, int(count)) for host, count in
                       re.findall(r'^(\S+)\s+: ok=\d+\s+changed=(\d+)', proc.stdout, re.M))
        data = None
        if os.path.exists(report):
            with open(report) as handle:
                data = json.load(handle)
        return proc.returncode, data, changed, proc.stdout


def _pool(report, name):
    found = [entry for entry in report['pools'] if entry['pool'] == name]
    assert found, 'pool %s not in the report: %s' % (name, [entry['pool'] for entry in report['pools']])
    return found[0]


def test_operator_story(lab):
    alpha = ['hv-haswell', 'hv-skylake', 'hv-icelake']
    pools = {'alpha': alpha, 'beta': ['hv-epyc']}
    before = dict((host, lab.pool.persistent_xml(MEMBERS[host], names['off'])) for host, names in lab.guests.items())

    # join in check mode: the whole plan is reported, nothing is written
    rc, report, changed, out = lab.play('join', pools, '--check')
    assert rc == 0, out
    assert report['check_mode'] and report['action'] == 'join'
    assert sorted(_pool(report, 'alpha')['joined']) == sorted(alpha)
    assert all(changed[host] > 0 for host in MEMBERS), changed
    for host, names in lab.guests.items():
        assert lab.pool.persistent_xml(MEMBERS[host], names['off']) == before[host]
        assert lab.record(host) is None

    # join: every guest of the pool carries the model, which fits every member
    rc, report, changed, out = lab.play('join', pools)
    assert rc == 0, out
    entry = _pool(report, 'alpha')
    assert entry['vendor'] == 'Intel' and entry['model'] == 'Haswell-noTSX-IBRS'
    assert all(member['model_fits'] for member in entry['members_detail'])
    assert all(guest['starts_on_every_member'] for guest in entry['guests'])
    assert report['misfits'] == []
    running = sorted('%s/%s' % (host, lab.guests[host]['run']) for host in alpha)
    assert sorted(entry['pending']) == running  # reported, not restarted
    for host in alpha:
        assert lab.record(host)['pool'] == 'alpha' and lab.record(host)['model']['digest'] == entry['digest']
        for guest in lab.guests[host].values():
            assert lab.persistent(host, guest) == {'pool': 'alpha', 'digest': entry['digest'],
                                                   'model': 'Haswell-noTSX-IBRS'}
    assert lab.persistent('hv-epyc', lab.guests['hv-epyc']['off'])['pool'] == 'beta'
    gives_up = dict((member['name'], member['gives_up']) for member in entry['members_detail'])
    assert gives_up['hv-haswell'] == ['invtsc']
    assert {'avx512f', 'sha-ni', 'gfni'} <= set(gives_up['hv-icelake'])

    # recalc with unchanged members: nothing changes anywhere
    rc, _report, changed, out = lab.play('recalc', pools, report=False)
    assert rc == 0, out
    assert set(changed.values()) == {0}, changed
    assert 'model Haswell-noTSX-IBRS' in out and entry['digest'] in out

    # a running guest started again runs the pool model
    dom = lab.virt('hv-skylake').connect().lookupByName(lab.guests['hv-skylake']['run'])
    dom.destroy()
    dom.create()
    assert ET.fromstring(dom.XMLDesc(0)).findtext('cpu/model') == 'Haswell-noTSX-IBRS'

    # stat: the model, each member's state and what it gives up, the guests
    rc, report, changed, out = lab.play('stat', pools)
    assert rc == 0, out
    assert sum(changed.values()) == 1, changed  # the report file on the controller, nothing else
    view = _pool(report, 'alpha')
    assert view['recorded_model']['digest'] == entry['digest'] and view['records_agree']
    assert view['recalc_needed'] is False
    members = dict((member['name'], member) for member in view['members_detail'])
    assert members['hv-haswell']['gives_up'] == ['invtsc'] and members['hv-haswell']['lacks'] == []
    assert set(members['hv-icelake']['gives_up']) == set(gives_up['hv-icelake'])
    assert all(member['status'] == 'member' for member in members.values())
    assert len(view['guests_carrying_model']) == 6 and view['guests_without_model'] == []
    assert 'hv-skylake/%s' % lab.guests['hv-skylake']['run'] not in view['pending']
    assert 'gives up 1 (invtsc)' in out

    # leave: Haswell's guests get their own CPU back, the pool widens without it
    rc, report, changed, out = lab.play('leave', pools, '-e', 'cpu_pool_leave=hv-haswell')
    assert rc == 0, out
    released = report['released'][0]
    assert released['host'] == 'hv-haswell' and released['pool'] == 'alpha'
    assert sorted(released['restored']) == sorted(lab.guests['hv-haswell'].values())
    assert lab.record('hv-haswell') is None
    for guest in lab.guests['hv-haswell'].values():
        assert lab.persistent('hv-haswell', guest)['pool'] is None
    wide = _pool(report, 'alpha')
    assert sorted(wide['members']) == ['hv-icelake', 'hv-skylake'] and wide['left'] == ['hv-haswell']
    assert wide['model'] == 'Skylake-Server-IBRS' and wide['lost'] == []
    assert {'avx512f', 'avx512vl', 'clwb'} <= set(wide['gained'])
    assert all(member['model_fits'] for member in wide['members_detail'])
    assert all(guest['starts_on_every_member'] for guest in wide['guests'])
    assert 'hv-skylake/%s' % lab.guests['hv-skylake']['run'] in wide['pending']  # runs the old, narrower model
    pools = {'alpha': ['hv-skylake', 'hv-icelake'], 'beta': ['hv-epyc']}

    # a move into the other vendor's pool is refused before anything changes
    rc, report, changed, out = lab.play('move', {'alpha': ['hv-skylake'], 'beta': ['hv-epyc', 'hv-icelake']})
    assert rc != 0
    assert 'pool "beta" mixes CPU vendors (AMD: hv-epyc; Intel: hv-icelake)' in out
    assert lab.record('hv-icelake')['pool'] == 'alpha'
    assert lab.persistent('hv-icelake', lab.guests['hv-icelake']['off'])['digest'] == wide['digest']

    # a move into a pool of its own: both pools are recalculated
    rc, report, changed, out = lab.play('move', {'alpha': ['hv-skylake'], 'beta': ['hv-epyc'],
                                                 'gamma': ['hv-icelake']})
    assert rc == 0, out
    assert _pool(report, 'alpha')['moved_out'] == ['hv-icelake']
    gamma = _pool(report, 'gamma')
    assert gamma['moved_in'] == ['hv-icelake'] and gamma['model'].startswith('Icelake-Server')
    assert lab.record('hv-icelake')['pool'] == 'gamma'
    assert lab.record('hv-skylake')['members'] == ['hv-skylake']
    assert lab.persistent('hv-icelake', lab.guests['hv-icelake']['off'])['pool'] == 'gamma'
    pools = {'alpha': ['hv-skylake'], 'beta': ['hv-epyc'], 'gamma': ['hv-icelake']}
    records = dict((host, lab.record(host)) for host in MEMBERS)

    # join with nobody to join: said so, nothing recalculated, no report
    rc, report, changed, out = lab.play('join', pools)
    assert rc == 0, out
    assert 'No host to join' in out and report is None
    assert set(changed.values()) == {0}, changed

    # recalc refuses a host added to a group without join, before anything changes
    rc, report, changed, out = lab.play('recalc', dict(pools, alpha=['hv-skylake', 'hv-haswell']))
    assert rc != 0
    assert 'hv-haswell is listed in group cpu_pool_alpha but has not joined; run join or move first' in out
    assert report is None and dict((host, lab.record(host)) for host in MEMBERS) == records

    # a host in two pool groups fails alone; stat shows the rest
    rc, report, changed, out = lab.play('stat', dict(pools, gamma=['hv-icelake', 'hv-skylake']))
    assert rc != 0
    assert 'hv-skylake is in several CPU pool groups (cpu_pool_alpha, cpu_pool_gamma)' in out
    assert _pool(report, 'gamma')['not_in_play'] == ['hv-skylake']
    assert [member['name'] for member in _pool(report, 'gamma')['members_detail']] == ['hv-icelake']
    assert 'alpha' not in [entry['pool'] for entry in report['pools']]
