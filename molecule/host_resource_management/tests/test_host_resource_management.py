"""The applied host foundation, read from /proc, /sys and /etc (not from the role)."""
import json


def _expected_reserved(host):
    """host_reserved for the lab's topology, worked out here from sysfs alone.

    The lab has at most 4 cores per socket, so the policy reserves one whole
    core per socket: the one holding the socket's lowest-numbered CPU.
    """
    script = r'''
import glob, json
def cpus(text):
    out = set()
    for part in text.strip().split(','):
        if '-' in part:
            a, b = part.split('-'); out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    return out
online = cpus(open('/sys/devices/system/cpu/online').read())
first = {}
for cpu in sorted(online):
    pkg = int(open('/sys/devices/system/cpu/cpu%d/topology/physical_package_id' % cpu).read())
    first.setdefault(pkg, cpu)
reserved = set()
for cpu in first.values():
    reserved |= cpus(open('/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list' % cpu).read())
print(json.dumps(sorted(reserved)))
'''
    return json.loads(host.check_output("python3 - <<'EOF'\n%s\nEOF" % script))


def _parse(text):
    out = set()
    for part in text.strip().split(','):
        if '-' in part:
            first, last = part.split('-')
            out.update(range(int(first), int(last) + 1))
        elif part:
            out.add(int(part))
    return sorted(out)


def _allowed(host, path):
    for line in host.file(path).content_string.splitlines():
        if line.startswith('Cpus_allowed_list:'):
            return _parse(line.split(':', 1)[1])
    raise AssertionError('no Cpus_allowed_list in %s' % path)


def test_pid1_runs_on_host_reserved(host):
    reserved = _expected_reserved(host)
    assert reserved == [0, 1, 4, 5]  # the lab: 2 sockets x 2 cores x 2 adjacent threads
    assert _allowed(host, '/proc/1/status') == reserved


def test_new_services_inherit_host_reserved(host):
    out = host.check_output('systemd-run --quiet --wait --pipe grep Cpus_allowed_list /proc/self/status')
    assert _parse(out.split(':', 1)[1]) == _expected_reserved(host)


def test_manager_dropin(host):
    dropin = host.file('/etc/systemd/system.conf.d/90-kvmlab-host-resource-management.conf')
    assert dropin.exists and dropin.user == 'root' and dropin.mode == 0o644
    lines = dropin.content_string.splitlines()
    assert 'DefaultCPUAccounting=yes' in lines
    assert 'CPUAffinity=0-1,4-5' in lines


def test_tier_slices_weights_in_cgroup_files(host):
    for tier, weight in (('gold', 512), ('silver', 333), ('bronze', 167)):
        cgroup = host.file('/sys/fs/cgroup/machine.slice/machine-%s.slice/cpu.weight' % tier)
        assert cgroup.exists, tier
        assert int(cgroup.content_string) == weight
        unit = host.file('/etc/systemd/system/machine-%s.slice' % tier)
        assert 'CPUWeight=%d' % weight in unit.content_string


def test_snapshot_is_root_only_and_records_stock(host):
    snapdir = host.file('/var/lib/kvmlab/snapshots')
    assert snapdir.is_directory and snapdir.mode == 0o700 and snapdir.user == 'root'
    snap = host.file('/var/lib/kvmlab/snapshots/host-resource-management.json')
    assert snap.mode == 0o600 and snap.user == 'root'
    data = json.loads(snap.content_string)
    assert data['values']['pid1_cpus_allowed'] == host.file('/root/molecule/pid1-stock').content_string.strip()
    dropin = '/etc/systemd/system.conf.d/90-kvmlab-host-resource-management.conf'
    assert data['files'][dropin]['exists'] is False


def test_no_control_dropins_left(host):
    assert not host.file('/etc/systemd/system.control').exists


def test_host_slices_confined_to_host_reserved(host):
    reserved = _expected_reserved(host)
    for name in ('system.slice', 'user.slice'):
        cpuset = host.file('/sys/fs/cgroup/%s/cpuset.cpus' % name)
        assert cpuset.exists, name
        assert _parse(cpuset.content_string) == reserved, name
    # a long-running service started before apply now runs there too
    pid = host.check_output('systemctl show -p MainPID --value ssh.service')
    assert _allowed(host, '/proc/%s/status' % pid.strip()) == reserved
