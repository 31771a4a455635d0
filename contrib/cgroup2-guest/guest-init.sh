#!/kobako-guest/busybox sh
# Stage 2 of the guest's init (PID 1, copied into the initramfs by run.sh): a minimal
# host-like system on the overlay root, then the check script; its exit status is
# printed as a marker line for run.sh, and the guest powers off.
BB=/kobako-guest/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1
. /kobako-guest/env
$BB hostname cgroup2-guest
$BB ip link set lo up
for d in /tmp /run /var/lib/kobako; do $BB mkdir -p $d && $BB mount -t tmpfs tmpfs $d; done
$BB chmod 1777 /tmp
# the pure v2 hierarchy, every controller enabled at the root (as systemd does)
$BB mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for c in $($BB cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control; done
$BB mkdir -p /dev/pts /dev/shm /dev/mqueue
$BB mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts && $BB ln -sf pts/ptmx /dev/ptmx
$BB mount -t tmpfs shm /dev/shm; $BB mount -t mqueue mqueue /dev/mqueue; $BB mount -t bpf bpf /sys/fs/bpf
$BB ln -sf /proc/self/fd /dev/fd
for i in 0 1 2; do $BB ln -sf /proc/self/fd/$i /dev/$(echo stdin stdout stderr | $BB cut -d' ' -f$((i+1))); done
# the kernel's modules (from the .deb in the cache), loaded on demand by busybox modprobe
$BB mkdir -p /lib/modules/$KVER && $BB mount --bind $MODDIR /lib/modules/$KVER
$BB ln -sf $BB /sbin/modprobe && echo /sbin/modprobe > /proc/sys/kernel/modprobe
for m in veth bridge br_netfilter nf_tables nft_chain_nat nft_ct nft_nat nft_masq nft_compat \
         iptable_nat iptable_filter ip6table_nat ip6table_filter xt_MASQUERADE xt_conntrack xt_addrtype tun; do
    /sbin/modprobe $m 2>/dev/null
done
echo "=== guest up: kernel $KVER, $($BB nproc) cpus, $(/bin/cat /proc/cmdline)"
cd / && /bin/bash /kobako-guest/check.sh < /dev/null 2>&1
echo "KOBAKO-CHECK-EXIT=$?"
$BB sync
$BB poweroff -f
