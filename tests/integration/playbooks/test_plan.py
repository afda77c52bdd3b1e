"""playbooks/plan.yml run for real by ansible-playbook against fixture trees."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, '.build', 'collections'))

from ansible_collections.kvmlab.host_resources.tests.unit.topologies import build  # noqa: E402


def run_plan(tmp_path, *extra):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default', ANSIBLE_CALLBACK_RESULT_FORMAT='json', ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    playbook = os.path.join(ROOT, 'playbooks', 'plan.yml')
    bindir = os.path.dirname(sys.executable)
    proc = subprocess.run([os.path.join(bindir, 'ansible-playbook'), playbook] + list(extra),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc


def _layout_lines(stdout):
    """The layout lines from the default callback's JSON result of the last debug task."""
    start = stdout.index('TASK [Show the layout]')
    body = stdout[start:]
    body = body[body.index('{'):body.index('PLAY RECAP')]
    return json.loads(body[:body.rindex('}') + 1])['msg']


def _recap(stdout):
    line = [ln for ln in stdout.splitlines() if ln.startswith('localhost ')][-1]
    return dict(item.split('=') for item in line.split(':', 1)[1].split())


def test_plan_m5_metal_with_seed_guests(tmp_path):
    sysfs, proc = build(tmp_path, 'm5_metal')
    result = run_plan(tmp_path, '-e', '@' + os.path.join(ROOT, 'vars', 'guest_tiers_example.yml'),
                      '-e', 'kvmlab_sysfs_root=%s' % sysfs, '-e', 'kvmlab_proc_root=%s' % proc)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = _layout_lines(result.stdout)
    text = '\n'.join(lines)
    assert 'host_reserved      0-5,24-29,48-53,72-77' in text
    assert 'guest_domain       6-23,30-47,54-71,78-95' in text
    assert 'host_emulator      2-5,50-53  cores [2,50] [3,51] [4,52] [5,53]' in text
    assert '122 vCPUs on 72 guest CPUs = 1.69:1' in text
    assert 'memory commit 0.94:1' in text
    recap = _recap(result.stdout)
    assert recap['changed'] == '0' and recap['failed'] == '0' and int(recap['ok']) >= 4


def test_plan_validates_given_pools(tmp_path):
    sysfs, proc = build(tmp_path, 'm5_metal')
    pools = {'host_reserved': '0-5,24-29,48-53,72-77', 'host_housekeeping': '0-1,24-25,48-49,72-73',
             'host_emulator': '2-5,26-29,50-53,74-77', 'guest_domain': '6-23,30-46,54-71,78-94'}
    result = run_plan(tmp_path, '-e', json.dumps({'kvmlab_pools': pools, 'kvmlab_sysfs_root': sysfs,
                                                  'kvmlab_proc_root': proc}))
    assert result.returncode != 0
    assert 'online CPU(s) 47,95 are in no pool' in result.stdout
    assert 'Traceback' not in result.stdout + result.stderr


@pytest.mark.parametrize('extra, message', [
    (['-e', 'kvmlab_reserved_cores_per_socket=0'], 'reserved_cores_per_socket must be a positive integer'),
    (['-e', 'kvmlab_reserved_cores_per_socket=24'], 'leaves no guest core'),
])
def test_plan_bad_counts(tmp_path, extra, message):
    sysfs, proc = build(tmp_path, 'm5_metal')
    result = run_plan(tmp_path, '-e', 'kvmlab_sysfs_root=%s' % sysfs, '-e', 'kvmlab_proc_root=%s' % proc, *extra)
    assert result.returncode != 0
    assert message in result.stdout
    assert 'Traceback' not in result.stdout + result.stderr


def test_plan_on_this_host(tmp_path):
    result = run_plan(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert any(line.startswith('localhost: ') for line in _layout_lines(result.stdout))
