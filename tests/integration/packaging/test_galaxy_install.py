"""The collection as an operator gets it: built, installed, run by FQCN.

Builds the galaxy tarball from this checkout, installs it with
``ansible-galaxy collection install`` into an empty temporary collections
path, and runs the installed playbooks by their FQCN from a temporary
directory, with a temporary ansible.cfg and ANSIBLE_COLLECTIONS_PATH naming
only that path: nothing of the checkout (its ansible.cfg, .build/collections,
roles/) is visible to ansible-playbook. The inventory is an operator's one,
with group_vars and host_vars for two hypervisors whose topologies are
generated sysfs trees (tests/unit/sysfs_builder.py).
"""
import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, '.build', 'collections'))

from ansible_collections.kvmlab.host_resources.tests.unit.topologies import build  # noqa: E402

BINDIR = os.path.dirname(sys.executable)
FQCN = 'kvmlab.host_resources'
PLAYBOOKS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, 'playbooks', '*.yml')))
ROLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, 'roles', '*')) if os.path.isdir(p))

# Development, test, CI and lab material: none of it may ship.
MUST_NOT_SHIP = ('requirements-dev.txt', 'requirements-oldest.txt', 'docs/DEVELOPING.md', 'docs/contention/lab-report.json',
                 'docs/contention/lab-report.md', 'docs/contention/lab-report.svg', 'vars/lab_guests.yml',
                 'Makefile', 'ansible.cfg')
MUST_NOT_SHIP_DIRS = ('tests/', 'tools/', 'molecule/', '.ci/', '.venv/', '.build/', '.lab/', '.pytest_cache/', '.git/',
                     '.ansible/')
MUST_SHIP = ('README.md', 'COPYING', 'meta/runtime.yml', 'meta/execution-environment.yml', 'meta/ee-requirements.txt',
             'bindep.txt', 'CHANGELOG.md', 'changelogs/changelog.yaml', 'vars/tiers.yml', 'vars/host_pools.yml',
             'vars/memory_policy.yml', 'vars/guest_tiers_example.yml', 'plugins/lookup/policy.py')

# Group-vars masks for hv2 (2 sockets x 8 cores x 2 threads, adjacent siblings):
# two reserved cores per socket (one housekeeping), where the derived default
# would reserve four.
HV2_POOLS = {'host_reserved': '0-3,16-19', 'host_housekeeping': '0-1,16-17',
             'host_emulator': '2-3,18-19', 'guest_domain': '4-15,20-31'}
GUESTS = [{'name': 'db-01', 'tier': 'gold', 'vcpus': 8, 'memory': '32GiB'},
          {'name': 'app-01', 'tier': 'silver', 'vcpus': 4, 'memory': '8GiB', 'iothreads': 1},
          {'name': 'ci-01', 'tier': 'bronze', 'vcpus': 4, 'memory': '8GiB'}]


def _clean_env(**extra):
    """This process's environment without any Ansible setting or Python path of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_') and k != 'PYTHONPATH'}
    env.update(ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_HOST_KEY_CHECKING='false', ANSIBLE_RETRY_FILES_ENABLED='false')
    env.update(extra)
    return env


def _run(argv, cwd, env, timeout=300):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(tarball, env, cwd): the tarball installed alone in an empty collections path."""
    base = tmp_path_factory.mktemp('galaxy')
    dist, colls, cwd = base / 'dist', base / 'collections', base / 'cwd'
    for d in (dist, colls, cwd):
        d.mkdir()
    cfg = cwd / 'ansible.cfg'
    cfg.write_text('[defaults]\ncollections_path = %s\ncollections_scan_sys_path = False\n'
                   'roles_path = %s\n' % (colls, base / 'no-roles'))
    env = _clean_env(ANSIBLE_CONFIG=str(cfg), ANSIBLE_COLLECTIONS_PATH=str(colls),
                     ANSIBLE_COLLECTIONS_SCAN_SYS_PATH='false', HOME=str(base))
    result = _run([os.path.join(BINDIR, 'ansible-galaxy'), 'collection', 'build', '--output-path', str(dist), ROOT],
                  cwd=str(cwd), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    tarballs = glob.glob(str(dist / '*.tar.gz'))
    assert len(tarballs) == 1, tarballs
    result = _run([os.path.join(BINDIR, 'ansible-galaxy'), 'collection', 'install', '--offline', '-p', str(colls),
                   tarballs[0]], cwd=str(cwd), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return tarballs[0], env, cwd, colls


def test_tarball_ships_the_collection_and_no_development_material(installed):
    tarball = installed[0]
    with tarfile.open(tarball) as tar:
        names = set(m.name.rstrip('/') for m in tar.getmembers())
    with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
        version = yaml.safe_load(handle)['version']
    assert os.path.basename(tarball) == 'kvmlab-host_resources-%s.tar.gz' % version
    assert sorted(n for n in MUST_NOT_SHIP if n in names) == []
    assert sorted(n for n in names for d in MUST_NOT_SHIP_DIRS if (n + '/').startswith(d)) == []
    assert sorted(n for n in MUST_SHIP if n not in names) == []
    assert sorted(p for p in PLAYBOOKS if 'playbooks/%s.yml' % p not in names) == []
    assert sorted(r for r in ROLES if 'roles/%s/README.md' % r not in names) == []


def test_only_the_installed_copy_is_on_the_path(installed):
    _tarball, env, cwd, colls = installed
    result = _run([os.path.join(BINDIR, 'ansible-galaxy'), 'collection', 'list', FQCN, '--format', 'json'],
                  cwd=str(cwd), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout)
    assert list(listed) == [os.path.join(str(colls), 'ansible_collections')]
    path = os.path.join(str(colls), 'ansible_collections', 'kvmlab', 'host_resources')
    assert not os.path.islink(path) and os.path.isfile(os.path.join(path, 'MANIFEST.json'))
    assert not os.path.exists(os.path.join(path, 'tests'))


def _syntax_check(installed, names):
    _tarball, env, cwd, _colls = installed
    return _run([os.path.join(BINDIR, 'ansible-playbook'), '--syntax-check'] + ['%s.%s' % (FQCN, n) for n in names],
                cwd=str(cwd), env=env)


@pytest.fixture(scope='module')
def syntax_all(installed):
    """One --syntax-check of every playbook (one process: ~3 s instead of ~3 s each)."""
    return _syntax_check(installed, PLAYBOOKS).returncode == 0


@pytest.mark.parametrize('name', PLAYBOOKS)
def test_syntax_check_by_fqcn(installed, syntax_all, name):
    if syntax_all:
        return      # every playbook passed in the one batched run
    result = _syntax_check(installed, [name])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# --- plan by FQCN against an operator's inventory ------------------------------

def _inventory(tmp_path, hv2_pools):
    """An inventory directory: groups m5 (hv1) and small (hv2) under hypervisors."""
    inv = tmp_path / 'inventory'
    for d in ('group_vars', 'host_vars'):
        (inv / d).mkdir(parents=True)
    hosts = {'all': {'children': {'hypervisors': {'children': {'m5': {'hosts': {'hv1': None}},
                                                               'small': {'hosts': {'hv2': None}}}}}}}
    (inv / 'hosts.yml').write_text(yaml.safe_dump(hosts))
    (inv / 'group_vars' / 'hypervisors.yml').write_text(yaml.safe_dump({
        'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'kvmlab_guests': GUESTS}))
    (inv / 'group_vars' / 'small.yml').write_text(yaml.safe_dump({'kvmlab_pools': hv2_pools}))
    sys1, proc1 = build(tmp_path / 'hv1', 'm5_metal')
    sys2, proc2 = build(tmp_path / 'hv2', 'adjacent_smt')
    (inv / 'host_vars' / 'hv1.yml').write_text(yaml.safe_dump({
        'kvmlab_sysfs_root': sys1, 'kvmlab_proc_root': proc1, 'kvmlab_reserved_cores_per_socket': 4}))
    (inv / 'host_vars' / 'hv2.yml').write_text(yaml.safe_dump({'kvmlab_sysfs_root': sys2, 'kvmlab_proc_root': proc2}))
    return str(inv)


def _plan(installed, inventory, *extra):
    """Run the installed plan playbook; (process, {'tasks': [...], 'stats': {...}}) from the results callback."""
    _tarball, env, cwd, _colls = installed
    results = os.path.join(os.path.dirname(inventory), 'results.json')
    env = dict(env, ANSIBLE_CALLBACK_PLUGINS=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins'),
               ANSIBLE_CALLBACKS_ENABLED='kvmlab_results', KVMLAB_RESULTS_FILE=results)
    result = _run([os.path.join(BINDIR, 'ansible-playbook'), '%s.plan' % FQCN, '-i', inventory] + list(extra),
                  cwd=str(cwd), env=env)
    try:
        with open(results) as handle:
            report = json.load(handle)
    except (IOError, ValueError):
        raise AssertionError('no results file:\n' + result.stdout[-3000:] + result.stderr[-3000:])
    return result, report


def _task_results(report, task_name):
    """{host: result} of the named task over every play."""
    out = {}
    for task in report['tasks']:
        if task['name'] == task_name:
            out.update(task['hosts'])
    return out


def test_plan_obeys_host_vars_group_vars_and_guest_list(installed, tmp_path):
    result, report = _plan(installed, _inventory(tmp_path, HV2_POOLS))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert report['stats']['hv1']['failures'] == 0 and report['stats']['hv2']['failures'] == 0
    assert report['stats']['hv1']['changed'] == 0 and report['stats']['hv2']['changed'] == 0

    pools = {h: r['ansible_facts']['kvmlab_plan_pools'] for h, r in _task_results(report, 'Derive or validate the pools').items()}
    # host_vars: 4 reserved cores per socket on 2 x 24 x 2 (siblings n, n + 48), not the derived 6
    assert pools['hv1']['source'] == 'derived'
    assert pools['hv1']['reserved_cores_per_socket'] == 4
    assert pools['hv1']['host_reserved'] == '0-3,24-27,48-51,72-75'
    assert pools['hv1']['guest_domain'] == '4-23,28-47,52-71,76-95'
    assert [s['counts']['host_reserved']['cores'] for s in pools['hv1']['sockets']] == [4, 4]
    # group_vars masks: taken as given (validated), 2 reserved cores per socket where the derived default is 4
    assert pools['hv2']['source'] == 'given'
    assert pools['hv2']['reserved_cores_per_socket'] == 2
    assert {k: pools['hv2'][k] for k in HV2_POOLS} == HV2_POOLS

    layout = _task_results(report, 'Show the layout')
    hv1 = '\n'.join(layout['hv1']['msg'])
    hv2 = '\n'.join(layout['hv2']['msg'])
    assert '4 reserved core(s)/socket' in hv1
    assert 'host_reserved      0-3,24-27,48-51,72-75' in hv1
    assert 'host_reserved      0-3,16-19' in hv2
    # group_vars guest list: 3 guests, 16 vCPUs, 48 GiB
    assert 'capacity: 3 guests, 16 vCPUs on 80 guest CPUs = 0.20:1 vCPU oversubscription' in hv1
    assert 'capacity: 3 guests, 16 vCPUs on 24 guest CPUs = 0.67:1 vCPU oversubscription' in hv2
    assert '(48.0 GiB of 384.0 GiB)' in hv1


def test_extra_vars_beat_host_vars(installed, tmp_path):
    result, report = _plan(installed, _inventory(tmp_path, HV2_POOLS), '-e', 'kvmlab_reserved_cores_per_socket=2',
                           '--limit', 'hv1,localhost')
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    pools = _task_results(report, 'Derive or validate the pools')['hv1']['ansible_facts']['kvmlab_plan_pools']
    assert pools['reserved_cores_per_socket'] == 2
    assert pools['host_reserved'] == '0-1,24-25,48-49,72-73'


def test_bad_group_vars_mask_fails_naming_variable_and_host(installed, tmp_path):
    bad = dict(HV2_POOLS, guest_domain='2-15,20-31')     # core 2-3 is in host_reserved too
    result, report = _plan(installed, _inventory(tmp_path, bad))
    assert result.returncode != 0
    failed = _task_results(report, 'Derive or validate the pools')
    assert failed['hv2']['_status'] == 'failed'
    message = failed['hv2']['msg']
    assert 'kvmlab_pools' in message and 'hv2' in message, message
    assert 'Traceback' not in result.stdout + result.stderr
    # the other host, whose own values are good, is planned
    assert failed['hv1']['_status'] == 'ok'
    assert report['stats']['hv2']['failures'] == 1 and report['stats']['hv1']['failures'] == 0
