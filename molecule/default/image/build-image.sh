#!/usr/bin/env bash
# Build (or reuse) the Debian 12 guest image used by the molecule scenarios
# (`default`, `kernels`): a debootstrap'ed minbase rootfs packed into an ext4
# qcow2, plus the kernels, initrds and the root ssh key pair that opens it.
#
# Kernels: bookworm's own (6.1) and the linux-image-amd64 kernels of the
# suites in KERNEL_SUITES (bullseye 5.10, trixie 6.12), all in the one
# bookworm userland (bullseye's libbpf 0.3 cannot run the collection). A
# foreign suite's kernel .deb is extracted (dpkg-deb -x: installing it with
# apt would drag that suite's userland in), then depmod and the image's own
# mkinitramfs make its module index and initrd.
#
#   build-image.sh            build if needed, print the image directory
#   build-image.sh --dir      only print the image directory (no build)
#   build-image.sh --force    rebuild even if a complete image exists
#
# Output (stdout, last line): <cache>/<hash>/ containing
#   base.qcow2  vmlinuz  initrd.img  id_ed25519  id_ed25519.pub  manifest.txt  complete
#   kernels/<major.minor>/{vmlinuz,initrd.img,release}   one per kernel (5.10, 6.1, 6.12)
# vmlinuz/initrd.img are bookworm's kernel (6.1), the default of create.yml.
#
# Tracing refusal: refuse_tracing.bpf.c (a BPF-LSM policy) is built into
# /usr/local/lib/lqos-policy/ and lqos-refuse-tracing.service loads it at boot
# when the kernel command line has lqos.refuse_tracing (with bpf in lsm=).
# Everything else goes to stderr.
#
# Cache: ${LQOS_VM_CACHE:-/var/cache/lqos-bpf/molecule}/<hash>, where <hash>
# covers this script, the policy sources next to it, the kernel suites and the package list (LQOS_VM_EXTRA_PACKAGES included),
# so editing either builds a new image; an image is reused only when its
# `complete` marker exists (written last, then the build dir is renamed into
# place atomically). Downloaded .debs are kept in <cache>/debs.
# The cache is pruned on every run: the image in use plus the newest other
# complete images, LQOS_VM_CACHE_KEEP in all (default 2), are kept; older
# <hash> dirs, incomplete ones and stale .build.* dirs are removed, unless a
# process still has a file in them open (a running VM's overlay keeps its
# base.qcow2 open).
#
# Environment:
#   LQOS_VM_CACHE           cache root (default /var/cache/lqos-bpf/molecule)
#   LQOS_VM_CACHE_KEEP      image dirs to keep, the current one included (default 2)
#   LQOS_DEBIAN_MIRROR      mirror URL (default: first bookworm URI of the
#                           host's apt sources, else http://deb.debian.org/debian)
#   LQOS_VM_EXTRA_PACKAGES  extra packages, comma or space separated
#   LQOS_VM_DISK_SIZE       ext4 size (default 4G; qcow2 stays sparse)
#
# SSH host keys: none are baked into the image. Each VM generates its own
# ed25519 host key at first boot (lqos-ssh-hostkey.service); clients ignore
# host keys (molecule passes StrictHostKeyChecking=no and
# UserKnownHostsFile=/dev/null) because forwarded 127.0.0.1 ports are reused.
set -euo pipefail

SUITE=bookworm
PACKAGES=(
  linux-image-amd64 initramfs-tools zstd kmod udev
  systemd systemd-sysv openssh-server
  python3 python3-cffi python3-ply
  iproute2 iputils-ping ethtool procps
  clang llvm bpftool libbpf-dev gcc-multilib bindgen binutils
  python3-pytest
)
# Foreign suites whose linux-image-amd64 kernel is added (bookworm's own is in PACKAGES).
KERNEL_SUITES=(bullseye trixie)
DISK_SIZE=${LQOS_VM_DISK_SIZE:-4G}

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mode=build
case "${1:-}" in
  "") ;;
  --dir) mode=dir ;;
  --force) mode=force ;;
  -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unknown argument: $1" ;;
esac

if [[ -n "${LQOS_VM_EXTRA_PACKAGES:-}" ]]; then
  read -r -a extra <<<"${LQOS_VM_EXTRA_PACKAGES//,/ }"
  PACKAGES+=("${extra[@]}")
fi
# Sorted, de-duplicated: the order in the list does not change the hash.
mapfile -t PACKAGES < <(printf '%s\n' "${PACKAGES[@]}" | sort -u)
PKG_CSV=$(IFS=,; echo "${PACKAGES[*]}")

CACHE_ROOT=${LQOS_VM_CACHE:-/var/cache/lqos-bpf/molecule}
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname "$SCRIPT_PATH")
POLICY_SRC="$SCRIPT_DIR/refuse_tracing.bpf.c"
POLICY_LOADER="$SCRIPT_DIR/lqos-refuse-tracing"
HASH=$( { cat "$SCRIPT_PATH" "$POLICY_SRC" "$POLICY_LOADER"
  printf 'suite=%s\npackages=%s\ndisk=%s\nkernels=%s\n' \
  "$SUITE" "$PKG_CSV" "$DISK_SIZE" "${KERNEL_SUITES[*]}"; } | sha256sum | cut -c1-16)
OUT="$CACHE_ROOT/$HASH"

if [[ $mode == dir ]]; then
  echo "$OUT"
  exit 0
fi

is_complete() {
  local f
  [[ -f "$1/complete" ]] || return 1
  for f in base.qcow2 vmlinuz initrd.img id_ed25519 id_ed25519.pub; do
    [[ -s "$1/$f" ]] || return 1
  done
  [[ -d "$1/kernels" ]] || return 1
}

# Is any file under $1 open by a process (e.g. a VM's backing base.qcow2)?
in_use() {
  local fd
  for fd in /proc/[0-9]*/fd/*; do
    case $(readlink "$fd" 2>/dev/null) in "$1"/*) return 0 ;; esac
  done
  return 1
}

# Bound the cache: keep $OUT and the newest other complete images (by their
# `complete` marker), LQOS_VM_CACHE_KEEP dirs in all; remove older or
# incomplete <hash> dirs and .build.* leftovers of builders that died. Call it
# only while holding the cache lock (a live builder holds it too).
prune_cache() {
  local keep=${LQOS_VM_CACHE_KEEP:-2} kept=1 d
  if ! [[ $keep =~ ^[0-9]+$ ]] || ((keep < 1)); then
    die "LQOS_VM_CACHE_KEEP must be a number >= 1, got '$keep'"
  fi
  while IFS= read -r d; do
    [[ $d == "$OUT" ]] && continue
    if is_complete "$d" && ((kept < keep)); then
      kept=$((kept + 1))
      continue
    fi
    if in_use "$d"; then
      log "prune: keeping $d (in use)"
      continue
    fi
    log "prune: removing old image $d ($(du -sh "$d" 2>/dev/null | cut -f1))"
    rm -rf "$d"
  done < <(
    # complete images newest first, then the incomplete ones
    for d in "$CACHE_ROOT"/????????????????; do
      [[ -d $d && $(basename "$d") =~ ^[0-9a-f]{16}$ ]] || continue
      if [[ -f $d/complete ]]; then
        printf '%s %s\n' "$(stat -c %Y "$d/complete")" "$d"
      else
        printf '0 %s\n' "$d"
      fi
    done | sort -k1,1nr | cut -d' ' -f2-
  )
  for d in "$CACHE_ROOT"/.build.*; do
    [[ -d $d && $d != "${WORK:-}" ]] || continue
    # never rm -rf across a mount a killed builder left behind
    if grep -q " $d/" /proc/mounts || in_use "$d"; then
      log "prune: leaving $d (mounted or in use)"
      continue
    fi
    log "prune: removing stale build dir $d"
    rm -rf "$d"
  done
}

if [[ $mode == build ]] && is_complete "$OUT"; then
  log "reusing $OUT"
  # Prune only when no build holds the lock (it prunes itself when done).
  if [[ $EUID -eq 0 ]] && exec 9>"$CACHE_ROOT/.lock" && flock -n 9; then
    prune_cache
  fi
  echo "$OUT"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot)"
for tool in debootstrap mkfs.ext4 qemu-img ssh-keygen chroot flock; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done

mkdir -p "$CACHE_ROOT/debs"
# One builder at a time per cache (molecule may run scenarios in parallel).
exec 9>"$CACHE_ROOT/.lock"
log "waiting for lock $CACHE_ROOT/.lock"
flock 9
if [[ $mode == build ]] && is_complete "$OUT"; then
  log "reusing $OUT (built while waiting)"
  prune_cache
  echo "$OUT"
  exit 0
fi

detect_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
           /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    case $f in
      *.sources)
        awk -v s="$SUITE" '
          /^[[:space:]]*$/ { if (u != "" && suites ~ "(^| )" s "( |$)") { print u; exit } u=""; suites=""; next }
          /^URIs:/ { u=$2 }
          /^Suites:/ { $1=""; suites=$0; sub(/^ /, "", suites) }
          END { if (u != "" && suites ~ "(^| )" s "( |$)") print u }' "$f" ;;
      *)
        awk -v s="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp):/) { if ($(i+1) == s) print $i; break } }' "$f" ;;
    esac
  done | head -n1
}
MIRROR=${LQOS_DEBIAN_MIRROR:-$(detect_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

WORK=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
ROOT="$WORK/rootfs"
mounts=()
cleanup() {
  local rc=$? m
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    m=${mounts[i]}
    if mountpoint -q "$m"; then umount -l "$m" || true; fi
  done
  # Never rm -rf across a mount that failed to go away.
  if ! grep -q " $WORK/" /proc/mounts; then
    rm -rf "$WORK"
  else
    log "leaving $WORK (still mounted)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
log "image $HASH -> $OUT"
log "mirror $MIRROR, packages: $PKG_CSV"
mkdir -p "$ROOT"
debootstrap --variant=minbase --components=main --merged-usr \
  --cache-dir="$CACHE_ROOT/debs" --include="$PKG_CSV" \
  "$SUITE" "$ROOT" "$MIRROR" >&2
log "debootstrap done in $((SECONDS - t0)) s"

mount -t proc proc "$ROOT/proc"; mounts+=("$ROOT/proc")
mount -t sysfs sysfs "$ROOT/sys"; mounts+=("$ROOT/sys")
in_root() { LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

# --- base system files ------------------------------------------------------
echo lqos-vm >"$ROOT/etc/hostname"
cat >"$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
EOF
# Root file system is the whole virtio disk (no partition table); no fsck.
cat >"$ROOT/etc/fstab" <<'EOF'
/dev/vda	/	ext4	rw,noatime,errors=remount-ro	0	0
EOF
# The guest reaches nothing outside (slirp restrict=on): no resolver.
rm -f "$ROOT/etc/resolv.conf"
printf '# no DNS inside lqos test VMs\n' >"$ROOT/etc/resolv.conf"

# --- initramfs: only what -kernel/-initrd boot on virtio needs ----------------
cat >"$ROOT/etc/initramfs-tools/conf.d/lqos.conf" <<'EOF'
# Built in a chroot, so the root fs type cannot be probed: say it.
FSTYPE=ext4
MODULES=list
COMPRESS=zstd
RESUME=none
EOF
cat >>"$ROOT/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_net
virtio_rng
ext4
crc32c_generic
EOF

# --- network: DHCP on eth0 (slirp), eth1 from kernel cmdline ---------------
mkdir -p "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
# lqos.eth1=ADDR/PREFIX on the kernel command line gives eth1 (the VM-to-VM
# link) a static address; without it eth1 stays unmanaged and down.
cat >"$ROOT/usr/local/sbin/lqos-link-network" <<'EOF'
#!/bin/sh
set -eu
addr=
for arg in $(cat /proc/cmdline); do
  case $arg in lqos.eth1=*) addr=${arg#lqos.eth1=} ;; esac
done
[ -n "$addr" ] || exit 0
mkdir -p /run/systemd/network
cat >/run/systemd/network/20-eth1.network <<EON
[Match]
Name=eth1

[Link]
RequiredForOnline=no

[Network]
Address=$addr
LinkLocalAddressing=no
IPv6AcceptRA=no
EON
EOF
chmod 0755 "$ROOT/usr/local/sbin/lqos-link-network"
cat >"$ROOT/etc/systemd/system/lqos-link-network.service" <<'EOF'
[Unit]
Description=Static address for eth1 from lqos.eth1= on the kernel command line
DefaultDependencies=no
Before=systemd-networkd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lqos-link-network

[Install]
WantedBy=systemd-networkd.service
EOF

# --- ssh: key-only root login; host key made per VM at first boot ---------
KEYS="$WORK/keys"
mkdir -m 0700 "$KEYS"
ssh-keygen -q -t ed25519 -N '' -C "lqos-molecule-$HASH" -f "$KEYS/id_ed25519"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$KEYS/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat >"$ROOT/etc/ssh/sshd_config.d/lqos.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
cat >"$ROOT/etc/systemd/system/lqos-ssh-hostkey.service" <<'EOF'
[Unit]
Description=Generate this VM's SSH host key
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=ssh.service
EOF

# --- systemd units: keep boot under TCG short --------------------------------
in_root systemctl enable systemd-networkd.service lqos-link-network.service \
  lqos-ssh-hostkey.service ssh.service >&2
# wait-online would block on an unconfigured NIC; firstboot would prompt on
# the serial console (empty machine-id = first boot); the rest is idle work.
for unit in systemd-networkd-wait-online.service systemd-firstboot.service \
    getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer \
    systemd-hwdb-update.service; do
  in_root systemctl mask "$unit" >&2 2>/dev/null || true
done
in_root systemd-hwdb update >&2 || true

# --- tracing refusal policy (BPF-LSM), loaded at boot on request ----------------
install -d "$ROOT/usr/local/lib/lqos-policy"
install -m 0644 "$POLICY_SRC" "$ROOT/usr/local/lib/lqos-policy/refuse_tracing.bpf.c"
# The loader says `#!/usr/bin/env python` (the shebang ansible-test sanity allows); the image has python3 only.
sed '1s|^#!.*|#!/usr/bin/python3|' "$POLICY_LOADER" >"$ROOT/usr/local/sbin/lqos-refuse-tracing"
chmod 0755 "$ROOT/usr/local/sbin/lqos-refuse-tracing"
in_root clang -O2 -g -target bpf -c /usr/local/lib/lqos-policy/refuse_tracing.bpf.c \
  -o /usr/local/lib/lqos-policy/refuse_tracing.bpf.o >&2
cat >"$ROOT/etc/systemd/system/lqos-refuse-tracing.service" <<'EOF'
[Unit]
Description=Refuse tracing BPF programs (lqos molecule BPF-LSM policy)
ConditionKernelCommandLine=lqos.refuse_tracing
DefaultDependencies=no
After=sys-fs-bpf.mount
Before=ssh.service sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
# A bpffs of its own: the deploy's /sys/fs/bpf never sees the policy's pin.
ExecStartPre=/bin/mkdir -p /run/lqos-policy
ExecStartPre=/bin/mount -t bpf lqos-policy /run/lqos-policy
ExecStart=/usr/local/sbin/lqos-refuse-tracing /usr/local/lib/lqos-policy/refuse_tracing.bpf.o /run/lqos-policy

[Install]
WantedBy=sysinit.target
EOF
in_root systemctl enable lqos-refuse-tracing.service >&2

# --- foreign kernels (KERNEL_SUITES) -------------------------------------------
# The chroot's apt, with lists, cache and an empty dpkg status of its own per
# suite: the candidate of linux-image-amd64 is that suite's, and nothing of the
# image's own apt state changes. The .debs are kept in <cache>/debs.
# The image has no resolver (see above): lend it the host's for the download.
cp "$ROOT/etc/resolv.conf" "$WORK/resolv.conf.image"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
for ksuite in "${KERNEL_SUITES[@]}"; do
  kd=/var/tmp/lqos-kernel-$ksuite
  mkdir -p "$ROOT$kd/lists/partial" "$ROOT$kd/archives/partial" "$ROOT$kd/parts"
  echo "deb $MIRROR $ksuite main" >"$ROOT$kd/sources.list"
  : >"$ROOT$kd/status"
  kopts=(-o "Dir::Etc::SourceList=$kd/sources.list" -o "Dir::Etc::SourceParts=$kd/parts"
         -o "Dir::State::Lists=$kd/lists" -o "Dir::State::status=$kd/status"
         -o "Dir::Cache::archives=$kd/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
  in_root apt-get -q "${kopts[@]}" update >&2
  kpkg=$(in_root apt-cache "${kopts[@]}" depends linux-image-amd64 \
    | awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
  [[ -n $kpkg ]] || die "no linux-image-* behind linux-image-amd64 in $ksuite"
  kver_want=$(in_root apt-cache "${kopts[@]}" show --no-all-versions "$kpkg" | awk '/^Version:/ { print $2; exit }')
  kdeb="$CACHE_ROOT/debs/${kpkg}_${kver_want}_amd64.deb"
  if [[ ! -s $kdeb ]]; then
    # shellcheck disable=SC2016  # $1 is for the inner sh
    in_root sh -c 'cd "$1" && shift && exec apt-get "$@"' sh "$kd/archives" \
      -q "${kopts[@]}" download "$kpkg" >&2
    cp "$ROOT$kd/archives/${kpkg}_${kver_want}_amd64.deb" "$kdeb"
  fi
  log "kernel from $ksuite: $(basename "$kdeb")"
  kx="$WORK/kx-$ksuite"
  dpkg-deb -x "$kdeb" "$kx"
  kv=$(find "$kx/lib/modules" "$kx/usr/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | head -n1 || true)
  [[ -n $kv ]] || die "$(basename "$kdeb") holds no /lib/modules/<release>"
  # merged /usr: lib is a symlink in the image, never let cp replace it
  [[ -d $kx/lib ]] && cp -a "$kx/lib/." "$ROOT/usr/lib/"
  [[ -d $kx/usr ]] && cp -a "$kx/usr/." "$ROOT/usr/"
  cp -a "$kx/boot/." "$ROOT/boot/"
  rm -rf "$kx" "$ROOT$kd"
  in_root depmod -a "$kv" >&2
  in_root mkinitramfs -o "/boot/initrd.img-$kv" "$kv" >&2
done
cp "$WORK/resolv.conf.image" "$ROOT/etc/resolv.conf"

# --- initramfs (bookworm's own kernel) -----------------------------------------
# shellcheck disable=SC2016  # dpkg-query format, not shell
kver=$(in_root dpkg-query -W -f '${Depends}' linux-image-amd64 | grep -o 'linux-image-[0-9][^ ,]*' | head -n1)
kver=${kver#linux-image-}
in_root update-initramfs -u -k "$kver" >&2
log "kernels: $(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f ' | sort -V)"

# --- scrub per-machine state --------------------------------------------------
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/var/lib/systemd/random-seed"
rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
  "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log "$ROOT"/tmp/* 2>/dev/null || true
passwd -R "$ROOT" -l root >/dev/null
# ConditionNeedsUpdate= units (ldconfig, hwdb) have nothing to do at boot.
touch "$ROOT/etc/.updated" "$ROOT/var/.updated"
for m in "${mounts[@]}"; do umount "$m"; done
mounts=()

# --- artefacts ------------------------------------------------------------------
IMG="$WORK/img"
mkdir "$IMG"
cp "$ROOT/boot/vmlinuz-$kver" "$IMG/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$IMG/initrd.img"
kernels=()
for kv in $(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V); do
  series=$(echo "$kv" | cut -d. -f1,2)
  mkdir -p "$IMG/kernels/$series"
  cp "$ROOT/boot/vmlinuz-$kv" "$IMG/kernels/$series/vmlinuz"
  cp "$ROOT/boot/initrd.img-$kv" "$IMG/kernels/$series/initrd.img"
  echo "$kv" >"$IMG/kernels/$series/release"
  kernels+=("$series=$kv")
done
mv "$KEYS"/id_ed25519 "$KEYS"/id_ed25519.pub "$IMG/"
# shellcheck disable=SC2016  # dpkg-query format, not shell
in_root dpkg-query -W -f '${Package} ${Version}\n' >"$IMG/packages.txt"
log "rootfs $(du -sh "$ROOT" | cut -f1); making ext4 ($DISK_SIZE)"
mkfs.ext4 -q -F -L lqos-root -d "$ROOT" "$WORK/root.ext4" "$DISK_SIZE" >&2
qemu-img convert -f raw -O qcow2 "$WORK/root.ext4" "$IMG/base.qcow2"
rm -f "$WORK/root.ext4"
chmod 0444 "$IMG/base.qcow2"   # overlays only; never boot the base itself
cat >"$IMG/manifest.txt" <<EOF
hash=$HASH
suite=$SUITE
kernel=$kver
kernels=${kernels[*]}
mirror=$MIRROR
packages=$PKG_CSV
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
build_seconds=$((SECONDS - t0))
EOF
touch "$IMG/complete"

# --- publish atomically ---------------------------------------------------------
if [[ -e "$OUT" ]]; then
  mv "$OUT" "$WORK/old"   # --force, or an incomplete leftover
fi
mv "$IMG" "$OUT"
log "image ready in $((SECONDS - t0)) s: $OUT"
prune_cache
echo "$OUT"
