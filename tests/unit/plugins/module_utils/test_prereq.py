"""_prereq: every check on fixture trees, and the one failure message."""
import os

import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _prereq as pr

V2_MOUNTS = 'sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n'
HYBRID_MOUNTS = ('tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n'
                 'cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n')
PROC_CGROUPS = ('#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\ncpu\t0\t1\t1\n'
                'io\t0\t1\t1\nmemory\t0\t1\t1\npids\t0\t1\t1\n')


def write(root, rel, text):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        handle.write(text)
    return path


def host(tmp_path, comm='systemd\n', run_dir=True, mounts=V2_MOUNTS, controllers='cpuset cpu io memory pids\n',
         subtree='cpu memory pids\n', cgroups=PROC_CGROUPS):
    if comm is not None:
        write(tmp_path, 'proc/1/comm', comm)
    if run_dir:
        os.makedirs(str(tmp_path / 'run/systemd/system'))
    if mounts is not None:
        write(tmp_path, 'proc/self/mounts', mounts)
    if controllers is not None:
        write(tmp_path, 'sys/fs/cgroup/cgroup.controllers', controllers)
        write(tmp_path, 'sys/fs/cgroup/cgroup.subtree_control', subtree)
    write(tmp_path, 'proc/cgroups', cgroups)
    return str(tmp_path)


def test_a_good_host_has_no_problems(tmp_path):
    found, problems = pr.check_host(host(tmp_path), euid=0)
    assert problems == []
    assert found['systemd'] == {'pid1': 'systemd', 'run_systemd_system': True, 'ok': True}
    assert found['cgroup'] == {'mount': 'cgroup2', 'unified': True, 'available': ['cpuset', 'cpu', 'io', 'memory',
                               'pids'], 'enabled': ['cpu', 'memory', 'pids'], 'missing': []}
    assert found['root'] == {'euid': 0, 'ok': True}


def test_controller_available_but_not_enabled_is_fine(tmp_path):
    # systemd enables cpuset in subtree_control itself once a unit sets AllowedCPUs=
    found, problems = pr.check_host(host(tmp_path, subtree=''), euid=0)
    assert problems == [] and found['cgroup']['enabled'] == []


def test_pid1_not_systemd(tmp_path):
    _found, problems = pr.check_host(host(tmp_path, comm='bash\n', run_dir=False), euid=0)
    assert problems == ["PID 1 is not systemd (it is 'bash')"]


def test_run_systemd_system_alone_counts_as_booted(tmp_path):
    found, problems = pr.check_host(host(tmp_path, comm='init\n', run_dir=True), euid=0)
    assert problems == [] and found['systemd']['pid1'] == 'init'


def test_pid1_comm_with_trailing_nul(tmp_path):
    found, problems = pr.check_host(host(tmp_path, comm='systemd\n\0', run_dir=False), euid=0)
    assert problems == [] and found['systemd']['pid1'] == 'systemd'


def test_missing_controller_named_with_what_there_is(tmp_path):
    _found, problems = pr.check_host(host(tmp_path, controllers='cpu io memory pids\n'), euid=0)
    assert problems == ['cgroup v2 controller cpuset is not available (have: cpu io memory pids)']


def test_missing_controller_bound_to_v1_or_disabled(tmp_path):
    cgroups = PROC_CGROUPS.replace('cpuset\t0\t1\t1', 'cpuset\t3\t1\t1').replace('cpu\t0\t1\t1', 'cpu\t0\t1\t0')
    found, problems = pr.check_host(host(tmp_path, controllers='io memory pids', cgroups=cgroups), euid=0)
    assert found['cgroup']['missing'] == ['cpu', 'cpuset']
    assert problems == [
        'cgroup v2 controller cpu is not available (have: io memory pids), disabled at boot '
        '(cgroup_disable= on the kernel command line?)',
        'cgroup v2 controller cpuset is not available (have: io memory pids), bound to a cgroup v1 hierarchy']


def test_hybrid_layout_is_not_unified(tmp_path):
    found, problems = pr.check_host(host(tmp_path, mounts=HYBRID_MOUNTS, controllers=None), euid=0)
    assert found['cgroup']['unified'] is False and found['cgroup']['mount'] == 'tmpfs'
    assert problems == ['/sys/fs/cgroup is not the cgroup v2 unified hierarchy (it is tmpfs; cgroup2 is mounted '
                        'at /sys/fs/cgroup/unified)']


def test_without_a_mount_table_cgroup_controllers_decides(tmp_path):
    found, problems = pr.check_host(host(tmp_path, mounts=None), euid=0)
    assert problems == [] and found['cgroup']['mount'] is None and found['cgroup']['unified'] is True
    other = tmp_path / 'other'
    other.mkdir()
    _found, problems = pr.check_host(host(other, mounts=None, controllers=None), euid=0)
    assert problems == ['/sys/fs/cgroup is not the cgroup v2 unified hierarchy (there is no cgroup.controllers)']


def test_not_root():
    assert pr.check_root(1000) == ({'euid': 1000, 'ok': False}, ['not running as root (euid 1000): use become'])


def test_executables_found_under_root_and_package_hints(tmp_path):
    tool = write(tmp_path, 'usr/sbin/zramctl', '#!/bin/sh\n')
    os.chmod(tool, 0o755)
    write(tmp_path, 'usr/bin/virsh', 'not executable')
    found, problems = pr.check_executables(['zramctl', 'virsh', 'mytool'], str(tmp_path), ['/usr/bin', '/usr/sbin'],
                                           {'mytool': 'my-tools'})
    assert found == {'zramctl': '/usr/sbin/zramctl', 'virsh': None, 'mytool': None}
    assert problems == ['executable virsh not found (install libvirt-clients)',
                        'executable mytool not found (install my-tools)']


def test_python_modules_with_hints_and_errors():
    errors = {'libvirt': "No module named 'libvirt'", 'broken': 'OSError: libvirt.so.0: cannot open'}
    found, problems = pr.check_python(['json', 'libvirt', 'broken'], errors.get, '/usr/bin/python3', {})
    assert found['json'] == {'ok': True, 'error': None} and found['libvirt']['ok'] is False
    assert problems == ['Python module libvirt missing for /usr/bin/python3 (install python3-libvirt)',
                        'Python module broken missing for /usr/bin/python3: OSError: libvirt.so.0: cannot open']


def test_one_message_names_everything(tmp_path):
    root = host(tmp_path, comm='bash\n', run_dir=False, controllers='cpu io memory pids\n')
    _found, problems = pr.check_host(root, euid=0, python_modules=['libvirt'],
                                     importable=lambda name: "No module named 'libvirt'",
                                     interpreter='/usr/bin/python3')
    assert pr.failure_message(problems) == (
        "this host cannot be managed: PID 1 is not systemd (it is 'bash'); cgroup v2 controller cpuset is not "
        "available (have: cpu io memory pids); Python module libvirt missing for /usr/bin/python3 "
        "(install python3-libvirt)")


def test_checks_can_be_switched_off(tmp_path):
    found, problems = pr.check_host(str(tmp_path), require_systemd=False, require_cgroup2=False,
                                    require_root=False, euid=1000)
    assert problems == [] and set(found) == {'executables', 'python_modules'}


@pytest.mark.parametrize('text, expected', [
    ('a /x ext4 rw 0 0\nb /x tmpfs rw 0 0\n', {'/x': 'tmpfs'}),
    ('a /my\\040dir ext4 rw 0 0\n', {'/my dir': 'ext4'}),
    ('', {}),
])
def test_parse_mounts(text, expected):
    assert pr.parse_mounts(text) == expected


DPKG_STATUS = """Package: python3-libvirt
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 9.0.0-1
Description: libvirt Python 3 bindings
 continued: Status: deinstall ok config-files

Package: systemd-zram-generator
Status: deinstall ok config-files
Architecture: amd64
Version: 1.1.2-1

Package: libc6
Status: install ok half-configured
Architecture: amd64
Version: 2.36-9

Package: util-linux
Status: install ok installed
Architecture: amd64
Version: 2.38.1-5
"""


def test_dpkg_status_counts_only_installed_packages():
    found = pr.parse_dpkg_status(DPKG_STATUS, ['python3-libvirt', 'systemd-zram-generator', 'libc6', 'util-linux:amd64',
                                               'util-linux:arm64', 'absent'])
    assert found == {'python3-libvirt': '9.0.0-1', 'systemd-zram-generator': None, 'libc6': None,
                     'util-linux:amd64': '2.38.1-5', 'util-linux:arm64': None, 'absent': None}


def test_installed_packages_reads_the_hosts_database(tmp_path):
    assert pr.installed_packages(['util-linux'], str(tmp_path)) is None
    (tmp_path / 'var/lib/dpkg').mkdir(parents=True)
    (tmp_path / 'var/lib/dpkg/status').write_text(DPKG_STATUS)
    assert pr.installed_packages(['util-linux', 'x'], str(tmp_path)) == {'util-linux': '2.38.1-5', 'x': None}
    assert pr.installed_packages([], str(tmp_path)) == {}


def test_search_path_and_importable():
    assert pr.search_path(['/a'], '/usr/bin:relative') == ['/a']
    assert pr.search_path(None, '/opt/bin:relative:/usr/bin')[:3] == ['/opt/bin', '/usr/bin', '/usr/local/sbin']
    assert pr.importable('json') is None
    assert 'kvmlab_no_such_module' in pr.importable('kvmlab_no_such_module')
