"""host_prerequisites as a module on fixture trees: fails with one message, returns what it found."""
import os

from ansible_collections.kvmlab.host_resources.plugins.modules import host_prerequisites
from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
from ansible_collections.kvmlab.host_resources.tests.unit.plugins.module_utils.test_prereq import host, write


def test_good_tree_passes_in_check_mode_and_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    root = host(tmp_path)
    tool = write(tmp_path, 'usr/bin/systemctl', '#!/bin/sh\n')
    os.chmod(tool, 0o755)
    result = run_module(host_prerequisites.main, {'root': root, 'python_modules': ['json'],
                                                  'executables': ['systemctl'], 'search_path': ['/usr/bin']},
                        check_mode=True)
    assert not result.get('failed') and result['changed'] is False and result['missing'] == []
    assert result['found']['executables'] == {'systemctl': '/usr/bin/systemctl'}
    assert result['found']['python_modules'] == {'json': {'ok': True, 'error': None}}
    assert result['found']['search_path'] == ['/usr/bin']


def test_everything_missing_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    root = host(tmp_path, comm='bash\n', run_dir=False, controllers='cpu io memory pids\n')
    result = run_module(host_prerequisites.main, {
        'root': root, 'python_modules': ['kvmlab_no_such_module'], 'executables': ['zramctl'],
        'search_path': ['/usr/sbin'], 'packages': {'kvmlab_no_such_module': 'python3-kvmlab'}})
    assert result['failed']
    assert result['msg'].startswith("this host cannot be managed: PID 1 is not systemd (it is 'bash'); cgroup v2 "
                                    "controller cpuset is not available (have: cpu io memory pids); not running "
                                    "as root (euid 1000): use become; executable zramctl not found (install "
                                    "util-linux); Python module kvmlab_no_such_module missing for ")
    assert result['msg'].endswith('(install python3-kvmlab)')
    assert len(result['missing']) == 5 and result['found']['root'] == {'euid': 1000, 'ok': False}


def test_switches_off_the_host_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    result = run_module(host_prerequisites.main, {'root': str(tmp_path), 'systemd': False, 'cgroup2': False,
                                                  'root_user': False})
    assert not result.get('failed') and 'systemd' not in result['found'] and 'cgroup' not in result['found']
