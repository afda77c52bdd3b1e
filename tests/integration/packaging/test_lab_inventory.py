"""The lab's guest list is lab inventory data: lab-up's inventory writer, run without booting anything.

tools/lab/lib.sh's lab_write_inventory writes DIR/inventory.yml and copies
tools/lab/inventory/group_vars beside it; ansible-inventory then gives the lab
host the lab's kvmlab_guests as group_vars, and the guests lab-up creates
(LAB_GUESTS) are the ones that list names.
"""
import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LIB = os.path.join(ROOT, 'tools', 'lab', 'lib.sh')
GROUP_VARS = os.path.join(ROOT, 'tools', 'lab', 'inventory', 'group_vars', 'lab.yml')
BINDIR = os.path.dirname(sys.executable)


def _bash(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_')}
    env['HOME'] = str(tmp_path)
    return subprocess.run(['bash', '-c', 'set -euo pipefail; . "$1"; ' + script, 'test', LIB],
                          env=env, capture_output=True, text=True, timeout=60, check=True).stdout


def test_lab_guests_are_the_inventory_list():
    with open(GROUP_VARS) as handle:
        names = [g['name'] for g in yaml.safe_load(handle)['kvmlab_guests']]
    out = subprocess.run(['bash', '-c', '. "$1"; printf "%s\\n" "${LAB_GUESTS[@]}"', 'test', LIB],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == names == ['kvm-worker-01', 'kvm-worker-02', 'kvm-worker-03']


def test_written_inventory_carries_the_lab_guests(tmp_path):
    lab = tmp_path / 'lab'
    lab.mkdir()
    _bash('DIR=%s; lab_files "$DIR"; PORT=2222; KEY=$DIR/id_ed25519; lab_write_inventory' % lab, tmp_path)
    assert sorted(os.listdir(str(lab))) == ['group_vars', 'inventory.yml']
    assert os.listdir(str(lab / 'group_vars')) == ['lab.yml']
    # written again (lab-up's "rewrote the missing inventory"): replaced, not nested
    _bash('DIR=%s; lab_files "$DIR"; PORT=2223; KEY=$DIR/id_ed25519; lab_write_inventory' % lab, tmp_path)
    assert os.listdir(str(lab / 'group_vars')) == ['lab.yml']

    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_')}
    cfg = tmp_path / 'ansible.cfg'
    cfg.write_text('[defaults]\n')
    env.update(HOME=str(tmp_path), ANSIBLE_CONFIG=str(cfg))
    proc = subprocess.run([os.path.join(BINDIR, 'ansible-inventory'), '-i', str(lab / 'inventory.yml'),
                           '--host', 'kvmlab-host'], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)
    assert hostvars['ansible_port'] == 2223
    assert [(g['name'], g['tier']) for g in hostvars['kvmlab_guests']] == [
        ('kvm-worker-01', 'gold'), ('kvm-worker-02', 'silver'), ('kvm-worker-03', 'bronze')]
