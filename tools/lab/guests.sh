#!/bin/bash
# Runs INSIDE the lab host (lab-up pipes it through ssh): defines and starts
# the three stock guests. Idempotent: defined guests are left as they are,
# stopped ones are started.
#
#   guests.sh VCPUS MEMORY_MIB NAME...
#
# Stock shape: TCG (type='qemu'), the idle multiboot kernel, no disks, no
# network, no pinning, the default partition and weights; the first guest
# has one IOThread. Guests autostart, so a reboot of the lab host brings
# them back.
set -euo pipefail

vcpus=$1 memory=$2
shift 2
kernel=/var/lib/kvmlab/halt.elf
emulator=/usr/bin/qemu-system-x86_64

# libvirtd is socket-activated: the first call waits for it to start.
for _ in $(seq 60); do
    virsh -q uri >/dev/null 2>&1 && break
    sleep 2
done

first=1
for name in "$@"; do
    iothreads=
    if ((first)); then
        iothreads="  <iothreads>1</iothreads>"
    fi
    first=0
    if ! virsh -q dominfo "$name" >/dev/null 2>&1; then
        xml=$(mktemp)
        cat > "$xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>$memory</memory>
  <currentMemory unit='MiB'>$memory</currentMemory>
  <vcpu placement='static'>$vcpus</vcpu>
$iothreads
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$emulator</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
        virsh -q define "$xml" >/dev/null
        rm -f "$xml"
        virsh -q autostart "$name" >/dev/null
    fi
    if [[ $(virsh -q domstate "$name") != running ]]; then
        virsh -q start "$name" >/dev/null
    fi
    echo "$name: $(virsh -q domstate "$name")"
done
