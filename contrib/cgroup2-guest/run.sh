#!/bin/bash
# run.sh CHECK_SCRIPT - boot a pure cgroup v2 guest (qemu, TCG, Debian kernel with
# cgroup_no_v1=all) whose root is this machine's / (read-only over virtio-9p) under
# an overlay on tmpfs, run CHECK_SCRIPT in it as root, power off, and exit with the
# check script's exit status.  The guest console (serial) is copied to $LOG.
# Needs: root, qemu-system-x86, busybox-static, apt access for the kernel .deb.
# Env: LOG (default $CACHE/last-run.log), TIMEOUT (seconds, default 2700), ACCEL (tcg).
set -euo pipefail

[ $# -eq 1 ] && [ -r "$1" ] || { echo "usage: $0 CHECK_SCRIPT" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: must be run as root" >&2; exit 2; }
CHECK=$(realpath "$1")
HERE=$(dirname "$(realpath "$0")")
CACHE=${XDG_CACHE_HOME:+$XDG_CACHE_HOME/kobako-cgroup2-guest}
CACHE=${CACHE:-/var/tmp/kobako-cgroup2-guest}
LOG=${LOG:-$CACHE/last-run.log}
TIMEOUT=${TIMEOUT:-2700}
BUSYBOX=/bin/busybox
dpkg -S "$BUSYBOX" | grep -q '^busybox-static:' || { echo "$BUSYBOX is not busybox-static's" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86 is not installed" >&2; exit 2; }

# --- kernel: the package linux-image-amd64 depends on, extracted once into the cache
mkdir -p "$CACHE"
PKG=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
KVER=${PKG#linux-image-}
KDIR=$CACHE/$KVER            # holds boot/ and lib/modules/$KVER of the .deb
if [ ! -e "$KDIR/lib/modules/$KVER/modules.dep" ]; then
    echo "run.sh: fetching $PKG into $CACHE"
    (cd "$CACHE" && rm -f "$PKG"_*.deb && apt-get download "$PKG" 2>&1 | grep -v unsandboxed || true)
    rm -rf "$KDIR.tmp" && dpkg-deb -x "$CACHE/$PKG"_*.deb "$KDIR.tmp"
    "$BUSYBOX" depmod -b "$KDIR.tmp" "$KVER"   # modules.dep/alias for insmod order and guest modprobe
    rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR" && rm -f "$CACHE/$PKG"_*.deb
fi
MODDIR=$KDIR/lib/modules/$KVER

# --- everything temporary lives in $WORK; qemu and the console follower are killed on exit
WORK=$(mktemp -d /tmp/cgroup2-guest.XXXXXX)
QEMU_PID= TAIL_PID=
cleanup() {
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
    [ -n "$TAIL_PID" ] && kill "$TAIL_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- initramfs: busybox, the modules for virtio-9p and overlay (dependencies first), /init
R=$WORK/initramfs
mkdir -p "$R"/{bin,dev,proc,sys,mods,newroot,mnt/ro,mnt/rw,kobako-guest}
cp "$BUSYBOX" "$R/bin/busybox"
declare -A SEEN=()
add_module() {   # $1: path relative to $MODDIR, as in modules.dep
    local m=$1 d
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    for d in $(sed -n "s|^$m: *||p" "$MODDIR/modules.dep"); do add_module "$d"; done
    cp "$MODDIR/$m" "$R/mods/" && basename "$m" >> "$R/mods/order"
}
for name in virtio_pci 9pnet_virtio 9p overlay; do
    add_module "$(grep -o "^[^:]*/$name\.ko" "$MODDIR/modules.dep")"
done
cp "$HERE/guest-init.sh" "$R/kobako-guest/stage2.sh"
cp "$CHECK" "$R/kobako-guest/check.sh"
cp "$BUSYBOX" "$R/kobako-guest/busybox"
printf 'KVER=%s\nMODDIR=%s\n' "$KVER" "$MODDIR" > "$R/kobako-guest/env"
cat > "$R/init" <<'EOF'
#!/bin/busybox sh
# stage 1: root = overlay(host / over 9p read-only, tmpfs), then stage 2 as init
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /mnt/ro
mount -t tmpfs -o mode=755 tmpfs /mnt/rw && mkdir /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/ro,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay /newroot
cp -a /kobako-guest /newroot/
for d in proc sys dev; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /kobako-guest/busybox sh /kobako-guest/stage2.sh
EOF
chmod +x "$R/init"
(cd "$R" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1) > "$WORK/initrd.gz"

# --- boot; the check script's status comes back as a marker line on the console
mkdir -p "$(dirname "$LOG")" && : > "$LOG"
echo "run.sh: booting $KVER (log: $LOG)"
START=$(date +%s)
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel "${ACCEL:-tcg,thread=multi}" -cpu max \
    -smp 2 -m 3G -nic none -display none -monitor none -no-reboot -serial "file:$LOG" \
    -kernel "$KDIR/boot/vmlinuz-$KVER" -initrd "$WORK/initrd.gz" \
    -append "console=ttyS0 cgroup_no_v1=all panic=-1 loglevel=3" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap &
QEMU_PID=$!
tail -n +1 -f --pid="$QEMU_PID" "$LOG" | tr -d '\r' &   # live console
TAIL_PID=$!
wait "$QEMU_PID" || echo "run.sh: qemu exited with $? (124: timed out after ${TIMEOUT}s)"
QEMU_PID=
wait "$TAIL_PID" || true
TAIL_PID=
RC=$(tr -d '\r' < "$LOG" | sed -n 's/^KOBAKO-CHECK-EXIT=\([0-9]*\)$/\1/p' | tail -n1)
echo "run.sh: guest ran $(( $(date +%s) - START ))s; check status: ${RC:-none}"
exit "${RC:-125}"
