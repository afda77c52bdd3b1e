#!/bin/sh
# Prints the memory values that apply must change and rollback must bring
# back exactly, one name=value per line (run on the lab host by prepare.yml
# and by the verifier).
set -e
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
