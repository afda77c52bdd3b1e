"""site.yml on the lab host, read back from /proc, /sys and virsh (never from the collection)."""
import re

HOST_RESERVED = "0-1,4-5"   # the lab: 2 sockets x 2 cores x 2 threads, one core per socket reserved
GUEST_DOMAIN = "2-3,6-7"


def allowed(host, pid):
    return host.check_output(f"awk '/^Cpus_allowed_list/ {{print $2}}' /proc/{pid}/status")


def test_pid1_on_the_host_reserve(host):
    assert allowed(host, 1) == HOST_RESERVED


def test_host_slices_confined_to_the_reserve(host):
    for slice_ in ("system.slice", "user.slice"):
        assert host.file(f"/sys/fs/cgroup/{slice_}/cpuset.cpus.effective").content_string.strip() == HOST_RESERVED


def test_a_new_service_starts_on_the_reserve(host):
    out = host.check_output("systemd-run --quiet --pipe --wait awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status")
    assert out == HOST_RESERVED


def test_every_guest_vcpu_on_the_guest_pool_and_the_rest_on_the_reserve(host):
    names = host.check_output("virsh list --name").split()
    assert len(names) >= 3
    for name in names:
        pid = int(host.file(f"/run/libvirt/qemu/{name}.pid").content_string.strip())
        vcpus = emulators = 0
        for task in host.check_output(f"ls /proc/{pid}/task").split():
            comm = host.file(f"/proc/{pid}/task/{task}/comm").content_string.strip()
            cpus = allowed(host, f"{pid}/task/{task}")
            if re.fullmatch(r"CPU \d+/(TCG|KVM)", comm):
                vcpus += 1
                assert cpus == GUEST_DOMAIN, (name, comm, cpus)
            else:
                emulators += 1
                assert cpus == HOST_RESERVED, (name, comm, cpus)
        assert vcpus >= 1 and emulators >= 1


def test_memory_layer_live(host):
    assert host.file("/sys/kernel/mm/transparent_hugepage/enabled").content_string.strip().find("[madvise]") >= 0
    assert host.file("/sys/kernel/mm/ksm/run").content_string.strip() == "1"
    swaps = host.file("/proc/swaps").content_string
    assert re.search(r"^/dev/zram\d+\s", swaps, re.M)


def test_snapshots_root_only(host):
    directory = host.file("/var/lib/kvmlab/snapshots")
    assert directory.is_directory and directory.mode == 0o700 and directory.user == "root"
    listing = host.check_output("stat -c '%a %U %n' /var/lib/kvmlab/snapshots/*").splitlines()
    assert len(listing) >= 3
    for line in listing:
        assert line.startswith("600 root "), line
