#!/usr/bin/env bash
# The package installed as a user installs it: `apt-get install ./warren_*.deb` into a fresh
# Debian bookworm root, then each unit started there under that root's own systemd.
#   packaging/fresh-root-test.sh DEB WORK_DIR
# The root: debootstrap --variant=minbase (plus systemd, the units' manager) of bookworm from
# deb.debian.org, made once and cached in ${WARREN_ROOT_CACHE:-~/.cache/warren}/bookworm with the
# packages the .deb depends on already downloaded (--download-only), so a later run needs no
# network (about 3 to 5 minutes for the first run; the cache is about 400 MB). Each run works on a
# tmpfs overlay of it in private mount, pid, network, UTS and IPC namespaces: the cache, the host's
# root and its /etc are never written. Prints "fresh-root: ok" at the end; exits non-zero on the
# first failed check. Root only.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 DEB WORK_DIR" >&2; exit 2; }
DEB=$(readlink -f "$1"); WORK=$(mkdir -p "$2" && cd "$2" && pwd)
CACHE=${WARREN_ROOT_CACHE:-$HOME/.cache/warren}
ROOTFS="$CACHE/bookworm"
MIRROR=${WARREN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "fresh-root: $*" >&2; }

if [[ ! -x "$ROOTFS/usr/bin/apt-get" ]]; then
  command -v debootstrap >/dev/null || { log "needs debootstrap (apt-get install debootstrap)"; exit 77; }
  log "making the cached root $ROOTFS (debootstrap, once)"
  mkdir -p "$CACHE"
  rm -rf "$ROOTFS.tmp"
  debootstrap --variant=minbase --include=systemd bookworm "$ROOTFS.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # what the package depends on, downloaded now (in the host's network) so runs need none; the
  # chroot sees the host's /proc only for apt's sake, and nothing is installed here
  mount --bind /proc "$ROOTFS.tmp/proc"
  if ! chroot "$ROOTFS.tmp" sh -c "apt-get update -qq && apt-get install -qq -y --download-only default-jre-headless adduser" \
      >>"$CACHE/debootstrap.log" 2>&1; then
    umount "$ROOTFS.tmp/proc"; tail -20 "$CACHE/debootstrap.log" >&2; exit 1
  fi
  umount "$ROOTFS.tmp/proc"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

rm -rf "$WORK/merged" "$WORK/rw"; mkdir -p "$WORK/merged" "$WORK/rw"
cat > "$WORK/boot.sh" <<BOOT
#!/bin/bash
set -e
mount -t tmpfs -o mode=755 tmpfs "$WORK/rw"
mkdir "$WORK/rw/up" "$WORK/rw/work"
mount -t overlay overlay -o lowerdir="$ROOTFS",upperdir="$WORK/rw/up",workdir="$WORK/rw/work" "$WORK/merged"
R="$WORK/merged"
mount -t proc proc "\$R/proc"
mount --rbind /sys "\$R/sys"; mount -o remount,bind,ro "\$R/sys" || true
mount -t tmpfs -o mode=755 tmpfs "\$R/dev"
for d in null zero full random urandom tty; do touch "\$R/dev/\$d"; mount --bind /dev/\$d "\$R/dev/\$d"; done
mkdir -p "\$R/dev/net" "\$R/dev/pts" "\$R/dev/shm"; mknod -m 0600 "\$R/dev/net/tun" c 10 200
mount -t devpts -o newinstance,ptmxmode=0666 devpts "\$R/dev/pts"; ln -s pts/ptmx "\$R/dev/ptmx"
mount -t tmpfs tmpfs "\$R/run"; mount -t tmpfs tmpfs "\$R/tmp"; chmod 1777 "\$R/tmp"
cp "$DEB" "\$R/tmp/"
# apt as a user runs it (no network here: every dependency is in the cached root's archives)
chroot "\$R" sh -c "cd /tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y ./$(basename "$DEB")" > "$WORK/apt.log" 2>&1 \
  || { echo "apt-get install failed:"; tail -30 "$WORK/apt.log"; exit 1; }
# Fish's egress namespace as an operator makes one (the unit's own /proc/sys is read-only, so
# forwarding is turned on there beforehand; without fish.netns Fish would use the unit's private
# network namespace, where it cannot, and refuses to start saying so)
mkdir -p "\$R/run/netns"; touch "\$R/run/netns/egress"
unshare --net="\$R/run/netns/egress" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding'
# systemd as PID 1 would write global sysctls; it may not
mount --bind "\$R/proc/sys" "\$R/proc/sys"; mount -o remount,bind,ro "\$R/proc/sys"
# an empty boot target: nothing of the root's own units starts but what the checks start; units
# that touch the machine (kernel modules, binfmt, sysctl, clock, udev) are masked
mkdir -p "\$R/run/systemd/system"
for u in systemd-sysctl.service systemd-modules-load.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    systemd-timesyncd.service systemd-udevd.service systemd-udev-trigger.service systemd-remount-fs.service \
    systemd-random-seed.service systemd-pstore.service systemd-firstboot.service getty.target console-getty.service \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount dev-hugepages.mount; do
  ln -sf /dev/null "\$R/run/systemd/system/\$u"
done
printf '[Unit]\nDescription=warren fresh root\nDefaultDependencies=no\n' > "\$R/run/systemd/system/warren-test.target"
cd "\$R"; mkdir -p .old; pivot_root . .old; umount -l /.old; rmdir /.old
exec env container=other /lib/systemd/systemd --system --unit=warren-test.target
BOOT
chmod +x "$WORK/boot.sh"
unshare --pid --fork --mount --uts --ipc --net --mount-proc --propagation private "$WORK/boot.sh" >"$WORK/boot.log" 2>&1 &
UNSHARE=$!
PID1=""
cleanup() {
  [[ -n "$PID1" ]] && kill -KILL "$PID1" 2>/dev/null || true
  kill -KILL "$UNSHARE" 2>/dev/null || true
  wait "$UNSHARE" 2>/dev/null || true
}
trap cleanup EXIT
inr() { nsenter -t "$PID1" -m -p -u -i -n -r -w "$@"; }
fail() {
  log "FAILED: $*"
  inr systemctl --no-pager status 'warren-*' 2>&1 | tail -40 >&2 || true
  inr journalctl --no-pager -o cat -u 'warren-*' 2>&1 | tail -30 >&2 || true
  exit 1
}

deadline=$((SECONDS + 240))
while [[ -z "$PID1" ]]; do
  kill -0 "$UNSHARE" 2>/dev/null || { cat "$WORK/boot.log" >&2; log "the boot failed"; exit 1; }
  c=$(pgrep -P "$UNSHARE" -x systemd || true)   # unshare's child once it exec'd systemd
  [[ -n "$c" ]] && PID1=$c
  (( SECONDS < deadline )) || { cat "$WORK/boot.log" >&2; exit 1; }
  sleep 0.2
done
state=""
until [[ $state == running || $state == degraded ]]; do
  state=$(inr systemctl is-system-running 2>/dev/null || true)
  (( SECONDS < deadline )) || { cat "$WORK/boot.log" >&2; fail "systemd is '$state'"; }
  sleep 0.2
done
log "installed with apt-get: $(grep -c '^Unpacking\|^Setting up' "$WORK/apt.log") unpack/setup lines, $(grep -o 'Setting up warren[^ ]* ([^)]*)' "$WORK/apt.log")"

# what the install made
inr getent passwd warren | grep -q ':/usr/sbin/nologin$' || fail "no warren system user"
inr getent group warren >/dev/null || fail "no warren group"
for d in splicer bumblebee fish; do
  inr test -f "/etc/warren/$d.conf" || fail "no /etc/warren/$d.conf"
done
inr dpkg-query -W -f='${Conffiles}\n' warren | grep -q /etc/warren/fish.conf || fail "/etc/warren/*.conf are not conffiles"
inr /usr/bin/warren --version | grep -q '^warren ' || fail "/usr/bin/warren --version"
rc=0; inr /usr/bin/warren build >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "installed warren build: exit $rc, not 2 (needs a checkout)"
inr systemctl daemon-reload
inr sh -c 'echo "fish.netns = /run/netns/egress" >> /etc/warren/fish.conf'
inr systemctl start systemd-journald.socket systemd-journald.service || true

# each unit, as shipped: the socket, then a client's connection starts the service
for d in splicer bumblebee fish; do
  inr systemctl start "warren-$d.socket" || fail "start warren-$d.socket"
  out=$(inr /usr/bin/warren status --control "/run/warren/$d.sock" 2>&1) || fail "warren status of $d: $out"
  grep -q "$d" <<<"$out" || fail "status of $d: $out"
  [[ $(inr systemctl show -p ActiveState --value "warren-$d.service") == active ]] || fail "warren-$d.service is not active"
  inr systemctl reload "warren-$d.service" || fail "reload (upgrade in place) of warren-$d.service"
  [[ $(inr systemctl show -p ActiveState --value "warren-$d.service") == active ]] || fail "warren-$d.service after reload"
  log "warren-$d.service active, reloaded: $(inr systemctl show -p MainPID,NRestarts "warren-$d.service" | tr '\n' ' ')"
done

# an upgrade of the package (the same .deb again): its postinst reloads each running daemon,
# which upgrades in place onto the installed jars: a new MainPID, still active, no restart
declare -A before
for d in splicer bumblebee fish; do before[$d]=$(inr systemctl show -p MainPID --value "warren-$d.service"); done
cp "$DEB" "/proc/$PID1/root/root/"
inr sh -c "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall ./$(basename "$DEB")" >"$WORK/reinstall.log" 2>&1 \
  || fail "apt-get install --reinstall: $(tail "$WORK/reinstall.log")"
for d in splicer bumblebee fish; do
  now=$(inr systemctl show -p MainPID --value "warren-$d.service")
  [[ $now != "${before[$d]}" && $now != 0 ]] || fail "the package upgrade did not upgrade warren-$d.service in place (MainPID $now)"
  st=$(inr systemctl show -p ActiveState --value "warren-$d.service")/$(inr systemctl show -p NRestarts --value "warren-$d.service")
  [[ $st == active/0 ]] || fail "warren-$d.service after the package upgrade: ActiveState/NRestarts $st"
done
log "package upgrade: each daemon upgraded in place by the postinst"

# remove, then purge: the units stop, the files go, the user stays (Debian policy)
inr env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq warren >"$WORK/remove.log" 2>&1 || fail "apt-get remove: $(tail "$WORK/remove.log")"
for d in splicer bumblebee fish; do
  [[ $(inr systemctl show -p ActiveState --value "warren-$d.socket") != active ]] || fail "warren-$d.socket still active after remove"
  [[ $(inr systemctl show -p ActiveState --value "warren-$d.service") != active ]] || fail "warren-$d.service still active after remove"
done
inr test ! -e /usr/bin/warren || fail "/usr/bin/warren left after remove"
inr test ! -e /usr/lib/warren || fail "/usr/lib/warren left after remove"
inr test -f /etc/warren/splicer.conf || fail "remove took the conffiles (only purge should)"
inr env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq warren >>"$WORK/remove.log" 2>&1 || fail "apt-get purge"
inr test ! -e /etc/warren || fail "/etc/warren left after purge"
inr test ! -e /var/log/warren || fail "/var/log/warren left after purge"
inr getent passwd warren >/dev/null || fail "purge removed the warren user (policy: it stays)"
log "ok"
