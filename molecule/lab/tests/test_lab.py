"""The lab host is what the roles are tested on: real reads from /proc, /sys and libvirt."""

import re
import xml.etree.ElementTree as ET

import pytest

GUESTS = ("kvm-worker-01", "kvm-worker-02", "kvm-worker-03")
ALL_CPUS = "0-7"


def read(host, path):
    return host.file(path).content_string.strip()


def check(host, command):
    return host.check_output(command).strip()


def cpulist(text):
    """'0-3,6' -> {0, 1, 2, 3, 6}"""
    cpus = set()
    for part in text.split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def qemu_pid(host, guest):
    return int(read(host, f"/run/libvirt/qemu/{guest}.pid"))


def threads(host, pid):
    """{tid: (comm, Cpus_allowed_list)} of a process."""
    out = check(
        host,
        f"for t in /proc/{pid}/task/*; do "
        f'printf "%s\\t%s\\t%s\\n" "${{t##*/}}" "$(cat $t/comm)" '
        f'"$(awk \'/^Cpus_allowed_list/ {{print $2}}\' $t/status)"; done',
    )
    result = {}
    for line in out.splitlines():
        tid, comm, allowed = line.split("\t")
        result[int(tid)] = (comm, allowed)
    return result


def test_pid1_is_systemd(host):
    assert read(host, "/proc/1/comm") == "systemd"
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")


def test_kernel_command_line(host):
    assert "mitigations=off" in read(host, "/proc/cmdline").split()


def test_cgroup2_with_cpu_and_cpuset(host):
    assert check(host, "stat -fc %T /sys/fs/cgroup") == "cgroup2fs"
    controllers = read(host, "/sys/fs/cgroup/cgroup.controllers").split()
    for wanted in ("cpu", "cpuset", "memory", "io"):
        assert wanted in controllers
    # systemd delegates them to the machine slice where the guests run.
    machine = read(host, "/sys/fs/cgroup/machine.slice/cgroup.controllers").split()
    assert "cpu" in machine and "cpuset" in machine


def test_two_sockets_two_threads_per_core(host):
    topo = check(
        host,
        "cd /sys/devices/system/cpu && for c in cpu[0-9]*; do "
        "echo $c $(cat $c/topology/physical_package_id) "
        "$(cat $c/topology/thread_siblings_list); done",
    )
    packages = {}
    siblings = set()
    for line in topo.splitlines():
        cpu, package, sibs = line.split()
        packages.setdefault(package, []).append(cpu)
        siblings.add(sibs)
    assert len(packages) == 2
    assert all(len(cpus) == 4 for cpus in packages.values())
    assert siblings == {"0-1", "2-3", "4-5", "6-7"}
    lscpu = check(host, "LC_ALL=C lscpu")
    assert re.search(r"^Socket\(s\):\s+2$", lscpu, re.M)
    assert re.search(r"^Thread\(s\) per core:\s+2$", lscpu, re.M)
    assert re.search(r"^Vendor ID:\s+GenuineIntel$", lscpu, re.M)


def test_two_numa_nodes(host):
    nodes = read(host, "/sys/devices/system/node/online")
    assert cpulist(nodes) == {0, 1}
    assert cpulist(read(host, "/sys/devices/system/node/node0/cpulist")) == {0, 1, 2, 3}
    assert cpulist(read(host, "/sys/devices/system/node/node1/cpulist")) == {4, 5, 6, 7}


def test_no_kvm_inside(host):
    # Guests run under TCG; the VM offers no /dev/kvm to pick by accident.
    assert not host.file("/dev/kvm").exists


def test_guests_running(host):
    running = check(host, "virsh -q list --state-running --name").split()
    assert sorted(running) == sorted(GUESTS)


@pytest.mark.parametrize("guest", GUESTS)
def test_guest_is_stock(host, guest):
    live = ET.fromstring(check(host, f"virsh dumpxml {guest}"))
    persistent = ET.fromstring(check(host, f"virsh dumpxml --inactive {guest}"))
    for dom in (live, persistent):
        assert dom.get("type") == "qemu"
        vcpu = dom.find("vcpu")
        assert vcpu is not None and vcpu.get("cpuset") is None
        cputune = dom.find("cputune")
        if cputune is not None:
            for tag in ("vcpupin", "emulatorpin", "iothreadpin", "shares"):
                assert cputune.find(tag) is None, f"{guest}: {tag} set"
        assert dom.find("devices/disk") is None
        assert dom.find("devices/interface") is None
        assert dom.find("os/kernel").text == "/var/lib/kvmlab/halt.elf"
    partition = live.find("resource/partition")
    assert partition is None or partition.text == "/machine"
    # Live: every vCPU thread may run on every CPU of the lab host.
    vcpus = int(persistent.find("vcpu").text)
    vcpu_threads = [
        allowed
        for comm, allowed in threads(host, qemu_pid(host, guest)).values()
        if re.fullmatch(r"CPU \d+/TCG", comm)
    ]
    assert len(vcpu_threads) == vcpus
    assert all(cpulist(allowed) == cpulist(ALL_CPUS) for allowed in vcpu_threads)
    # The guest runs in its machine scope under machine.slice.
    cgroup = read(host, f"/proc/{qemu_pid(host, guest)}/cgroup")
    assert "/machine.slice/machine-qemu" in cgroup


def test_worker_01_has_one_iothread(host):
    dom = ET.fromstring(check(host, "virsh dumpxml kvm-worker-01"))
    assert dom.find("iothreads").text == "1"
    comms = [comm for comm, _ in threads(host, qemu_pid(host, "kvm-worker-01")).values()]
    assert comms.count("IO iothread1") == 1
    for guest in ("kvm-worker-02", "kvm-worker-03"):
        comms = [comm for comm, _ in threads(host, qemu_pid(host, guest)).values()]
        assert not any(c.startswith("IO iothread") for c in comms)


def test_default_network_not_autostarted(host):
    out = check(host, "virsh net-list --all --autostart --name")
    assert "default" not in out.split()
