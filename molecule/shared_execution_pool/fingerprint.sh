#!/bin/sh
# Prints the guests' placement and weights as the kernel, systemd and the
# persistent XML have them, read straight from /proc, /sys/fs/cgroup,
# systemctl and virsh (not from the role): equal output means equal state.
set -eu
for guest in kvm-worker-01 kvm-worker-02 kvm-worker-03; do
    pid=$(cat "/run/libvirt/qemu/$guest.pid")
    cgroup=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
    scope_dir=/sys/fs/cgroup${cgroup%%.scope/*}.scope
    scope=${scope_dir##*/}
    echo "$guest scope $scope"
    for task in /proc/"$pid"/task/*; do
        comm=$(cat "$task/comm")
        case $comm in
            "CPU "*/TCG) class=vcpu ;;
            "IO iothread"*) class=iothread ;;
            *) class=emulator ;;
        esac
        echo "$guest $class $(awk '/^Cpus_allowed_list/ {print $2}' "$task/status")"
    done | sort -u
    echo "$guest cpu.weight $(cat "$scope_dir/cpu.weight") cpuset.effective $(cat "$scope_dir/cpuset.cpus.effective")"
    echo "$guest systemd $(systemctl show -p CPUWeight -p AllowedCPUs "$scope" | sort | tr '\n' ' ')"
    virsh dumpxml --inactive "$guest" | grep -E '<(vcpupin|emulatorpin|iothreadpin|shares|partition)' | sed "s/^ */$guest xml /"
    echo "$guest live partition $(virsh dumpxml "$guest" | sed -n 's:.*<partition>\(.*\)</partition>.*:\1:p')"
done
ls /var/lib/kvmlab/snapshots 2>/dev/null | sed 's/^/snapshot /' || true
ls /etc/systemd/system.control 2>/dev/null | sed 's/^/system.control /' || true
