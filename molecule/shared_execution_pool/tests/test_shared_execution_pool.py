"""The applied shared execution pool, read from /proc and /sys/fs/cgroup (not from the role or libvirt)."""
import json
import re
import xml.etree.ElementTree as ET

import pytest

GUEST_DOMAIN = "2-3,6-7"   # the lab: 2 sockets x 2 cores x 2 threads, one core per socket reserved
HOST_EMULATOR = "0-1,4-5"
SCOPE_CPUS = "0-7"         # host_reserved plus guest_domain
TIERS = {
    "kvm-worker-01": ("/machine/gold", 512),      # from the lab inventory (group_vars)
    "kvm-worker-02": ("/machine/silver", 333),
    "kvm-worker-03": ("/machine/bronze", 167),
    "kvm-extra-01": ("/machine/bronze", 167),     # outside the inventory: the default tier
    "kvm-extra-02": ("/machine/silver", 333),     # outside the inventory: the tier of its own metadata
}
METADATA = {"kvm-worker-01": "gold", "kvm-worker-02": "silver", "kvm-worker-03": "bronze",
            "kvm-extra-01": None, "kvm-extra-02": "silver"}
KVMLAB_NS = "https://kvmlab.invalid/host_resources/1"


def qemu_pid(host, guest):
    return int(host.file(f"/run/libvirt/qemu/{guest}.pid").content_string.strip())


def threads(host, pid):
    """[(comm, Cpus_allowed_list)] of every thread of a process."""
    out = host.check_output(
        f"for t in /proc/{pid}/task/*; do "
        f'printf "%s\\t%s\\n" "$(cat $t/comm)" "$(awk \'/^Cpus_allowed_list/ {{print $2}}\' $t/status)"; done'
    )
    return [tuple(line.split("\t")) for line in out.splitlines()]


def classes(host, guest):
    found = {"vcpu": set(), "iothread": set(), "emulator": set()}
    counts = {"vcpu": 0, "iothread": 0, "emulator": 0}
    for comm, allowed in threads(host, qemu_pid(host, guest)):
        kind = ("vcpu" if re.fullmatch(r"CPU \d+/TCG", comm)
                else "iothread" if re.fullmatch(r"IO iothread\d+", comm) else "emulator")
        found[kind].add(allowed)
        counts[kind] += 1
    return found, counts


def scope_dir(host, guest):
    """The guest's scope cgroup, from its QEMU pid's cgroup (never a guessed name)."""
    line = host.file(f"/proc/{qemu_pid(host, guest)}/cgroup").content_string.strip()
    path = line.split("::", 1)[1]
    return "/sys/fs/cgroup" + path[: path.index(".scope") + len(".scope")]


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_vcpu_threads_on_guest_domain(host, guest):
    found, counts = classes(host, guest)
    assert counts["vcpu"] == 2
    assert found["vcpu"] == {GUEST_DOMAIN}


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_emulator_threads_and_iothreads_on_host_emulator(host, guest):
    found, counts = classes(host, guest)
    assert counts["emulator"] >= 1
    assert found["emulator"] == {HOST_EMULATOR}
    if guest == "kvm-worker-01":
        assert counts["iothread"] == 1
        assert found["iothread"] == {HOST_EMULATOR}
    else:
        assert counts["iothread"] == 0


def scope_weight(host, guest):
    return int(host.file(f"{scope_dir(host, guest)}/cpu.weight").content_string.strip())


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_budget_share_live_on_the_scope_agrees_with_systemd_and_libvirt(host, guest):
    # every guest still runs in machine.slice: its scope carries its share of the tier's weight
    # (weight / running guests of the tier, the remainder to the first scopes by unit name)
    partition, weight = TIERS[guest]
    running = [name for name, (part, _w) in TIERS.items() if part == partition]
    share = scope_weight(host, guest)
    assert weight // len(running) <= share <= -(-weight // len(running))
    scope = scope_dir(host, guest).rsplit("/", 1)[1]
    out = host.check_output(f"systemctl show -p CPUWeight -p AllowedCPUs '{scope}'")
    assert f"CPUWeight={share}" in out.splitlines()
    # libvirt's live cpu_shares is the same value (libvirt writes the scope's CPUWeight)
    sched = host.check_output(f"virsh schedinfo --live {guest}")
    assert re.search(rf"^cpu_shares\s*:\s*{share}$", sched, re.M)


def test_tier_weight_is_a_budget_over_machine_slice(host):
    # a tier's scopes in machine.slice together carry exactly its weight, whatever its number of guests
    totals = {}
    for guest, (partition, weight) in TIERS.items():
        totals.setdefault((partition, weight), 0)
        totals[(partition, weight)] += scope_weight(host, guest)
    assert all(total == weight for (_p, weight), total in totals.items()), totals


def test_no_budget_drop_in_while_no_slice_holds_a_guest(host):
    for name in ("gold", "silver", "bronze"):
        assert not host.file(f"/run/systemd/system/machine-{name}.slice.d/40-kvmlab-weight-budget.conf").exists


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_scope_reaches_reserve_and_guest_pool_without_a_runtime_restriction(host, guest):
    # the stock scope is unrestricted and already reaches every CPU the pins use: apply leaves it so
    directory = scope_dir(host, guest)
    assert host.file(f"{directory}/cpuset.cpus").content_string.strip() == ""
    assert host.file(f"{directory}/cpuset.cpus.effective").content_string.strip() == SCOPE_CPUS


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_tier_metadata_travels_with_the_guest(host, guest):
    dom = ET.fromstring(host.check_output(f"virsh dumpxml --inactive {guest}"))
    tier = dom.find(f"metadata/{{{KVMLAB_NS}}}guest/{{{KVMLAB_NS}}}tier")
    assert (tier.text if tier is not None else None) == METADATA[guest]


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_persistent_xml_has_tier_partition_shares_and_pins(host, guest):
    dom = ET.fromstring(host.check_output(f"virsh dumpxml --inactive {guest}"))
    partition, shares = TIERS[guest]
    assert dom.find("resource/partition").text == partition
    tune = dom.find("cputune")
    assert int(tune.find("shares").text) == shares
    assert {pin.get("cpuset") for pin in tune.findall("vcpupin")} == {GUEST_DOMAIN}
    assert len(tune.findall("vcpupin")) == 2
    assert tune.find("emulatorpin").get("cpuset") == HOST_EMULATOR
    pins = tune.findall("iothreadpin")
    assert [pin.get("cpuset") for pin in pins] == ([HOST_EMULATOR] if guest == "kvm-worker-01" else [])


@pytest.mark.parametrize("guest", sorted(TIERS))
def test_guest_still_runs_in_machine_slice_until_its_next_start(host, guest):
    # the partition is persistent only: pending until the guest restarts
    assert "/machine.slice/machine-qemu" in host.file(f"/proc/{qemu_pid(host, guest)}/cgroup").content_string


def test_tier_slices_carry_the_tier_weights(host):
    for name, weight in (("gold", 512), ("silver", 333), ("bronze", 167)):
        assert host.file(f"/sys/fs/cgroup/machine.slice/machine-{name}.slice/cpu.weight").content_string.strip() \
            == str(weight)


def test_no_persistent_drop_ins_for_transient_scopes(host):
    assert not host.file("/etc/systemd/system.control").exists


def test_snapshot_kept_root_only(host):
    directory = host.file("/var/lib/kvmlab/snapshots")
    assert directory.is_directory and directory.mode == 0o700 and directory.user == "root"
    snapshot = host.file("/var/lib/kvmlab/snapshots/shared-execution-pool.json")
    assert snapshot.is_file and snapshot.mode == 0o600 and snapshot.user == "root"
    data = json.loads(snapshot.content_string)
    assert (data["schema"], data["version"], data["layer"]) == ("kvmlab.host_resources/snapshot", 2,
                                                                "shared_execution_pool")
