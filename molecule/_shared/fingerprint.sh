#!/bin/sh
# The host's state as the kernel, systemd, libvirt and /etc have it, read
# straight from /proc, /sys, systemctl, virsh and the files (never from the
# collection): equal output means equal state. Covers every layer: the host
# foundation (PID 1, host slices, tier slices, manager drop-ins), memory
# (zram, KSM, THP, sysctls) and every libvirt guest (threads, scope, XML).
# Names that change at every guest start (domain ids in scope names) are not
# printed, so a fingerprint taken before a reboot compares with one after.
#
#   fingerprint.sh [all|foundation|memory|guests|pids]
#   sh -s memory < fingerprint.sh      (how the verifiers run it)
set -eu
part=${1:-all}

foundation() {
    echo "pid1 Cpus_allowed_list $(awk '/^Cpus_allowed_list/ {print $2}' /proc/1/status)"
    for slice in system.slice user.slice machine.slice; do
        dir=/sys/fs/cgroup/$slice
        # the raw cpuset.cpus on a line of its own: a kernel that refuses to
        # empty it on a populated cgroup keeps a widened value until the next boot
        echo "$slice cpuset.cpus '$(cat "$dir/cpuset.cpus" 2>/dev/null || echo -)'"
        echo "$slice effective $(cat "$dir/cpuset.cpus.effective" 2>/dev/null || echo -)" \
             "cpu.weight $(cat "$dir/cpu.weight" 2>/dev/null || echo -)"
    done
    for dir in /sys/fs/cgroup/machine.slice/machine-*.slice; do
        [ -d "$dir" ] || continue
        echo "${dir##*/} cpu.weight $(cat "$dir/cpu.weight")"
    done
    for dir in /etc/systemd/system.conf.d /etc/systemd/system /etc/systemd/system.control /etc/default/grub.d; do
        [ -d "$dir" ] || continue
        find "$dir" -maxdepth 2 \( -name '*kvmlab*' -o -name 'machine-*.slice*' -o -name 'system.slice.d' \
             -o -name 'user.slice.d' \) | sort | while read -r f; do
            if [ -f "$f" ]; then
                echo "file $f $(stat -c '%a %U' "$f") $(md5sum < "$f" | cut -c1-12)"
            else
                echo "dir $f $(stat -c '%a %U' "$f")"
            fi
        done
    done
    # whether the directory exists, not only what it lists: an empty one left behind is a difference
    if [ -d /var/lib/kvmlab/snapshots ]; then
        echo "snapshots dir $(stat -c '%a %U' /var/lib/kvmlab/snapshots): $(ls -A /var/lib/kvmlab/snapshots | paste -sd, -)"
    else
        echo "snapshots: no directory"
    fi
}

# one name=value per line (the memory scenario's verifier parses them)
memory() {
    echo "thp.enabled=$(cat /sys/kernel/mm/transparent_hugepage/enabled)"
    echo "thp.defrag=$(cat /sys/kernel/mm/transparent_hugepage/defrag)"
    for k in run pages_to_scan sleep_millisecs merge_across_nodes; do
        echo "ksm.$k=$(cat /sys/kernel/mm/ksm/$k 2>/dev/null || echo -)"
    done
    echo "vm.swappiness=$(cat /proc/sys/vm/swappiness)"
    echo "vm.page-cluster=$(cat /proc/sys/vm/page-cluster)"
    echo "swaps=$(tail -n +2 /proc/swaps | awk '{print $1, $3, $5}' | paste -sd, -)"
    echo "zram.module=$(test -d /sys/module/zram && echo loaded || echo absent)"
    echo "zram.devices=$(ls /sys/block | grep '^zram' | paste -sd, -)"
    status=$(dpkg-query -W -f='${db:Status-Status}' systemd-zram-generator 2>/dev/null || true)
    echo "zram-generator=$([ "$status" = installed ] && echo installed || echo absent)"
    for f in /etc/systemd/zram-generator.conf /etc/systemd/zram-generator.conf.d/90-kvmlab-memory.conf \
             /etc/systemd/system/kvmlab-zram-swap.service /etc/systemd/system/swap.target.d/90-kvmlab-zram.conf \
             /etc/tmpfiles.d/90-kvmlab-memory.conf /etc/sysctl.d/90-kvmlab-memory.conf; do
        echo "file $f=$(test -e "$f" && md5sum < "$f" | cut -c1-12 || echo absent)"
    done
    echo "snapshot=$(test -e /var/lib/kvmlab/snapshots/memory.json && echo present || echo absent)"
}

guests() {
    for guest in $(virsh list --all --name | sort); do
        state=$(virsh -q domstate "$guest")
        echo "$guest state $state"
        virsh dumpxml --inactive "$guest" \
            | grep -E '<(vcpupin|emulatorpin|iothreadpin|shares|partition|kvmlab:)' | sed "s/^ */$guest xml /"
        [ "$state" = running ] || continue
        pid=$(cat "/run/libvirt/qemu/$guest.pid")
        cgroup=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
        scope_dir=/sys/fs/cgroup${cgroup%%.scope/*}.scope
        scope=${scope_dir##*/}
        parent=${scope_dir%/*}
        echo "$guest scope in ${parent#/sys/fs/cgroup}"
        for task in /proc/"$pid"/task/*; do
            comm=$(cat "$task/comm")
            case $comm in
                "CPU "*/TCG|"CPU "*/KVM) class=vcpu ;;
                "IO iothread"*) class=iothread ;;
                *) class=emulator ;;
            esac
            echo "$guest $class $(awk '/^Cpus_allowed_list/ {print $2}' "$task/status")"
        done | sort -u
        echo "$guest scope cpu.weight $(cat "$scope_dir/cpu.weight") cpuset.cpus '$(cat "$scope_dir/cpuset.cpus")'" \
             "effective $(cat "$scope_dir/cpuset.cpus.effective")"
        echo "$guest systemd $(systemctl show -p CPUWeight -p AllowedCPUs "$scope" | sort | tr '\n' ' ')"
        echo "$guest live partition $(virsh dumpxml "$guest" | sed -n 's:.*<partition>\(.*\)</partition>.*:\1:p')"
    done
}

# every running guest's QEMU pid, from libvirt's pid files: a new pid is a restart
pids() {
    for f in /run/libvirt/qemu/*.pid; do
        [ -e "$f" ] || continue
        name=${f##*/}
        echo "${name%.pid} $(cat "$f")"
    done
}

case $part in
    all) foundation; memory; guests ;;
    foundation) foundation ;;
    memory) memory ;;
    guests) guests ;;
    pids) pids ;;
    *) echo "usage: $0 [all|foundation|memory|guests|pids]" >&2; exit 2 ;;
esac
