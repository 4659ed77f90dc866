#!/usr/bin/env bash
# README command 1: the hvkit demo. Part 1, domain lifecycle: start hv-min with a private
#   rundir, create two domains from generated xl.cfg files with `hvctl create` (the granter
#   grants a page and allocates an event channel; the peer grant-copies and maps it, answers
#   and notifies; the granter revokes the grant), `hvctl list`, destroy, nothing left behind.
#   Part 2, real I/O: a private netns hvdemo-<pid> (bridge xenbr0, host veth 10.77.0.1),
#   blkback and netback in Domain-0, a 256 MiB sparse image, and an hv-guest domain from
#   `hvctl create` with disk xvda and a vif on xenbr0 whose command runs fio (nbd engine,
#   crc32c verify) on its disk, pings the host and sends it 4 MB with nc (sha256 checked);
#   then the backends statistics, hvctl destroy, and nothing left.
#   Part 3, the n-tier case: a sparse image, a loop device, an LVM VG/LV on it; a `db` domain
#   (hv-guest) whose PostgreSQL keeps its data on ext4 on a loop device over the FUSE file of
#   its disk (phy:/dev/VG/LV through blkback), listening on its eth0; an `app` domain running
#   pgbench against it over the PV network (netback, bridge in a private netns); a report
#   (transactions/s, latency, blkback and netback bytes, hvctl list), and nothing left.
# Usage: scripts/run-demo.sh [--quick] [--part io|ntier|all] [--build-dir DIR] [--no-deps]
#   --quick      do not (re)build when the programs exist, do not install packages; a short
#                pgbench run
#   --part       io: parts 1 and 2; ntier: part 3; all (default): all three
#   --build-dir  where the programs are (DIR/bin); default build/ (built if missing)
#   --no-deps    do not run scripts/install-deps.sh
# Exit: 0 demo passed, 1 a step failed (the report says which), 2 usage.
# Everything it starts and writes (hv-min, backends, domains, namespace, loop device, VG, temp
# dir) is removed on exit, on any failure and on Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

quick=0 deps=1 build_dir=build part=all
usage() { echo "usage: $0 [--quick] [--part io|ntier|all] [--build-dir DIR] [--no-deps]" >&2; exit 2; }
while (($#)); do
  case $1 in
    --quick) quick=1; deps=0 ;;
    --no-deps) deps=0 ;;
    --build-dir) [[ $# -ge 2 ]] || usage; build_dir=$2; shift ;;
    --part) [[ $# -ge 2 ]] || usage; part=$2; shift
            [[ $part == io || $part == ntier || $part == all ]] || usage ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
  shift
done
build_dir=$(cd "$build_dir" 2>/dev/null && pwd || echo "$repo/$build_dir")
bin=$build_dir/bin

step() { printf '[%s] %s\n' "$1" "$2"; }
fail() { printf 'FAILED: %s\n' "$*"; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
  fail "run as root: hv-min's toolstack connection (hvctl) requires uid 0"
fi

# ---------------------------------------------------------------- packages and build
if ((deps)); then
  step deps "scripts/install-deps.sh"
  scripts/install-deps.sh
fi
progs=(hv-min hvctl hvdemo-domain hv-guest blkback netback)
have_all=1
for p in "${progs[@]}"; do [[ -x $bin/$p ]] || have_all=0; done
if ((quick)) && ((have_all)); then
  step build "using existing programs in $bin"
else
  step build "cmake + ninja into $build_dir (targets: ${progs[*]})"
  if [[ ! -f $build_dir/build.ninja ]]; then
    cmake -S . -B "$build_dir" -G Ninja >/dev/null
  fi
  cmake --build "$build_dir" --target "${progs[@]}" >/dev/null \
    || fail "build failed: run 'cmake --build $build_dir --target ${progs[*]}' to see why"
fi

# ---------------------------------------------------------------- private world, cleanup
work=$(mktemp -d /tmp/hvkit-demo.XXXXXX)
rundir=$work/run
export HVCTL_LOG_DIR=$work/log  # the domains' watchers (hvctl create) log here
hvmin_pid= blkback_pid= netback_pid= nc_pid=
ns=hvdemo-$$
vg=hvdemo$$ pv_loop=
stop_pid() {  # pid: TERM, wait ≤ 5 s, KILL
  [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $hvmin_pid ]] && kill -0 "$hvmin_pid" 2>/dev/null; then
    # Destroy what is left: every process of a domain dies with it, PostgreSQL's too (hv-min
    # would also do that for all of them when it stops).
    for d in io granter peer app db; do
      "$bin/hvctl" --rundir "$rundir" destroy "$d" >/dev/null 2>&1 || true
    done
    kill -TERM "$hvmin_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$hvmin_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$hvmin_pid" 2>/dev/null || true
    wait "$hvmin_pid" 2>/dev/null || true
  fi
  stop_pid "$nc_pid"; stop_pid "$netback_pid"; stop_pid "$blkback_pid"
  ip netns del "$ns" 2>/dev/null || true
  lvm_down
  [[ -n $pv_loop ]] && losetup -d "$pv_loop" 2>/dev/null || true
  exec 3<&- 2>/dev/null || true
  if ((rc != 0)) && [[ -s $work/hv-min.log ]]; then
    echo "--- hv-min log (last 20 lines)"; tail -20 "$work/hv-min.log"
  fi
  if ((rc != 0)); then
    for f in "$work"/log/hvctl-*; do
      [[ -s $f ]] && { echo "--- watcher ${f##*/} (last 5 lines)"; tail -5 "$f"; }
    done
    for f in blkback netback guest progress db.err app.err pgbench.progress pgbench-init.out; do
      [[ -s $work/$f.log ]] && { echo "--- $f log (last 10 lines)"; tail -10 "$work/$f.log"; }
      [[ -s $work/$f ]] && { echo "--- $f (last 10 lines)"; tail -10 "$work/$f"; }
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
lvm_down() {  # the demo's VG and PV label, if there are any
  [[ -n $pv_loop ]] || return 0
  vgremove -q -f --devices "$pv_loop" "$vg" >/dev/null 2>&1 || true
  pvremove -q -f --devices "$pv_loop" "$pv_loop" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

hvctl() { "$bin/hvctl" --rundir "$rundir" "$@"; }
# statistics nodes (written by the backends at most once a second)
xsr() { XENSTORED_PATH=$rundir/xenstored.sock xenstore-read "$1" 2>/dev/null || echo 0; }

# A private namespace holds everything network: the bridge xenbr0, the "host" end of a veth
# pair (10.77.0.1) and netback's taps. Each guest's eth0 lives in the guest's own namespace.
nsx() { ip netns exec "$ns" "$@"; }
net_up() {
  ip netns add "$ns" || fail "ip netns add $ns"
  nsx ip link set lo up
  nsx ip link add xenbr0 type bridge
  nsx ip link add hosteth type veth peer name hostport
  nsx ip link set hostport master xenbr0
  nsx ip addr add 10.77.0.1/24 dev hosteth
  for l in xenbr0 hosteth hostport; do nsx ip link set "$l" up; done
  step netns "$ns: bridge xenbr0, host veth 10.77.0.1/24"
  "$bin/blkback" --rundir "$rundir" >"$work/blkback.log" 2>&1 &
  blkback_pid=$!
  # Not through the nsx function: a backgrounded function is a subshell, and $! would be its pid
  # rather than netback's (ip netns exec execs the program).
  ip netns exec "$ns" "$bin/netback" --rundir "$rundir" >"$work/netback.log" 2>&1 &
  netback_pid=$!
  step backends "blkback (pid $blkback_pid) and netback (pid $netback_pid, in $ns) in Domain-0"
}
net_down() {  # after the domains are gone: no tap left, backends stopped, namespace deleted
  if ip netns exec "$ns" ip -o link show 2>/dev/null | grep -q 'vif'; then fail "tap left in $ns"; fi
  stop_pid "$netback_pid"; netback_pid=
  stop_pid "$blkback_pid"; blkback_pid=
  stray=$(pgrep -f -- "--rundir $rundir" | grep -vx "$hvmin_pid" || true)
  [[ -z $stray ]] || fail "processes of this demo left after stopping the backends: $stray"
  ip netns del "$ns" || fail "ip netns del $ns"
  if ip netns list | grep -q "^$ns\b"; then fail "namespace $ns still exists"; fi
}

# ---------------------------------------------------------------- hv-min
"$bin/hv-min" --rundir "$rundir" --foreground >"$work/hv-min.log" 2>&1 &
hvmin_pid=$!
for _ in $(seq 100); do
  hvctl list >/dev/null 2>&1 && break
  kill -0 "$hvmin_pid" 2>/dev/null || fail "hv-min exited at start"
  sleep 0.05
done
hvctl list >/dev/null 2>&1 || fail "hv-min did not answer within 5 s"
fd_baseline=$(ls "/proc/$hvmin_pid/fd" | wc -l)
step hv-min "started: pid $hvmin_pid, rundir $rundir ($fd_baseline fds open)"

if [[ $part != ntier ]]; then
# ---------------------------------------------------------------- domains
mkfifo "$work/status" "$work/rendezvous"
exec 3<>"$work/status"  # domains report here, one line per step
seed=$((RANDOM * 32768 + RANDOM))
expect() {  # expect ROLE WORD: read one status line; it must be "ROLE <id> WORD ..."
  local line
  IFS= read -r -t 15 line <&3 || fail "no report from the $1 domain within 15 s"
  echo "    $line"
  case $line in
    "$1 "*" FAIL "*) fail "$line" ;;
    "$1 "[0-9]*" $2"*) last=$line ;;
    *) fail "unexpected report '$line' (wanted: $1 ... $2)" ;;
  esac
}
domain_cfg() {  # name cmdline
  cat <<EOF
# generated by scripts/run-demo.sh
name = "$1"
memory = 16
kernel = "$bin/hvdemo-domain"
cmdline = "$2"
on_crash = "destroy"
EOF
}

domain_cfg peer "peer --status $work/status --rendezvous $work/rendezvous --seed $seed" >"$work/peer.cfg"
out=$(hvctl create -q "$work/peer.cfg" 2>&1) || fail "hvctl create peer.cfg: $out"
step create "peer.cfg (memory 16 MiB, kernel hvdemo-domain peer)"
expect peer attached
peer_id=$(awk '{print $2}' <<<"$last")

domain_cfg granter "granter --status $work/status --rendezvous $work/rendezvous --seed $seed --peer $peer_id" >"$work/granter.cfg"
out=$(hvctl create -q "$work/granter.cfg" 2>&1) || fail "hvctl create granter.cfg: $out"
step create "granter.cfg (memory 16 MiB, kernel hvdemo-domain granter --peer $peer_id)"
expect granter attached
granter_id=$(awk '{print $2}' <<<"$last")
step work "granter $granter_id <-> peer $peer_id: grant, copy, map, event channel (seed $seed)"
expect granter "ok granted"
expect peer "ok grant-copied"
expect peer "ok mapped"
expect granter "ok event received"


step list "hvctl list"
listing=$(hvctl list) || fail "hvctl list failed"
sed 's/^/    /' <<<"$listing"
grep -Eq "^peer +$peer_id +16 " <<<"$listing" || fail "hvctl list does not show peer ($peer_id, 16 MiB)"
grep -Eq "^granter +$granter_id +16 " <<<"$listing" || fail "hvctl list does not show granter"
pids=$(hvctl list -l peer granter | awk -F': ' '/"pid"/ {gsub(",", "", $2); print $2}')

# ---------------------------------------------------------------- teardown
hvctl destroy granter || fail "hvctl destroy granter"
hvctl destroy peer || fail "hvctl destroy peer"
after=$(hvctl list)
[[ $(wc -l <<<"$after") -eq 2 ]] && grep -q '^Domain-0 ' <<<"$after" \
  || fail "domains left after destroy: $after"
for p in $pids; do
  [[ ! -e /proc/$p ]] || fail "domain process $p still exists after destroy"
done
for _ in $(seq 50); do  # the domains' and domains' sockets close asynchronously
  fds=$(ls "/proc/$hvmin_pid/fd" | wc -l)
  ((fds == fd_baseline)) && break
  sleep 0.1
done
((fds == fd_baseline)) || fail "hv-min holds $fds fds after destroy (baseline $fd_baseline): memfds not released"
step destroy "both domains destroyed: processes gone, list shows only Domain-0, hv-min back to $fds fds"

# ---------------------------------------------------------------- block and network I/O
net_up

img=$work/disk.img
truncate -s 256M "$img"
step image "$img: 256 MiB sparse ($(du -k "$img" | cut -f1) KiB allocated)"

head -c 4000000 /dev/urandom >"$work/sent.bin"
sent_sum=$(sha256sum <"$work/sent.bin" | cut -d' ' -f1)
ip netns exec "$ns" nc -l 10.77.0.1 5001 >"$work/got.bin" 2>/dev/null &
nc_pid=$!
cat >"$work/guest.sh" <<EOF
# generated by scripts/run-demo.sh: the io domain's command (inside the guest's namespace)
set -e
i=0; while ! ip link show eth0 >/dev/null 2>&1; do i=\$((i+1)); [ \$i -gt 400 ] && { echo "no eth0"; exit 90; }; sleep 0.05; done
ip link set lo up
ip addr add 10.77.0.2/24 dev eth0
ip link set eth0 up
echo "io fio start"
fio --name=demo --ioengine=nbd --uri="\$HV_NBD_URI_XVDA" --rw=randwrite --bs=4k --size=16m \\
    --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --randseed=$seed \\
    --output-format=terse >$work/fio.out
echo "io ping start"
ping -c 3 -W 2 10.77.0.1 >$work/ping.out
echo "io nc start"
ok=0; for i in \$(seq 50); do nc -N 10.77.0.1 5001 <$work/sent.bin && ok=1 && break; sleep 0.1; done
[ \$ok = 1 ]
echo ok >$work/guest.ok
exec sleep 600  # stay up until hvctl destroy
EOF
cat >"$work/io.cfg" <<EOF
# generated by scripts/run-demo.sh
name = "io"
memory = 64
kernel = "$bin/hv-guest"
cmdline = "--nbd-dir $work/nbd --wait-disks 1 --connect-timeout 15000 -- /bin/sh $work/guest.sh"
disk = [ 'format=raw, vdev=xvda, access=rw, target=$img' ]
vif = [ 'bridge=xenbr0' ]
EOF
out=$(hvctl create -q "$work/io.cfg" 2>&1) || fail "hvctl create io.cfg: $out"
io_id=$(hvctl list | awk '$1 == "io" {print $2}')
[[ -n $io_id ]] || fail "io domain not listed after create"
step create "io.cfg (hv-guest, disk xvda -> $img, vif on xenbr0): domain $io_id"
step work "guest: fio randwrite 16 MiB verify=crc32c on xvda, ping 10.77.0.1, 4 MB nc copy"
for _ in $(seq 600); do
  [[ -e $work/guest.ok ]] && break
  hvctl list | grep -q '^io ' || break
  sleep 0.1
done
[[ -e $work/guest.ok ]] || fail "the io domain's command did not finish (fio: $(cat "$work/fio.out" 2>/dev/null | cut -d';' -f1-5))"
wait "$nc_pid" 2>/dev/null || true; nc_pid=
got_sum=$(sha256sum <"$work/got.bin" | cut -d' ' -f1)
[[ $got_sum == "$sent_sum" ]] || fail "nc copy: sha256 $got_sum, sent $sent_sum"
fio_line=$(grep -m1 '^3;' "$work/fio.out" || head -c 200 "$work/fio.out")
fio_wr_kib=$(cut -d';' -f47 <<<"$fio_line")  # terse v3: write io_kbytes
ping_rtt=$(grep -o 'rtt.*' "$work/ping.out" || true)
# statistics are written at most once a second: wait for them to cover the work.
vbd=/local/domain/0/backend/vbd/$io_id/51712/statistics
vif=/local/domain/0/backend/vif/$io_id/0/statistics
for _ in $(seq 30); do
  (( $(xsr $vif/tx_bytes) >= 4000000 && $(xsr $vbd/wr_sect) > 0 )) && break
  sleep 0.1
done
blk_wr=$(( $(xsr $vbd/wr_sect) * 512 )) blk_rd=$(( $(xsr $vbd/rd_sect) * 512 ))
net_tx=$(xsr $vif/tx_bytes) net_rx=$(xsr $vif/rx_bytes)
step stats "blkback: $blk_wr bytes written, $blk_rd read; netback: $net_tx bytes from the guest, $net_rx to it"
((blk_wr > 0 && net_tx >= 4000000)) || fail "backend statistics do not show the I/O"

step list "hvctl list"
listing=$(hvctl list) || fail "hvctl list failed"
sed 's/^/    /' <<<"$listing"
grep -Eq "^io +$io_id " <<<"$listing" || fail "hvctl list does not show io ($io_id)"
io_pid=$(hvctl list -l io | awk -F': ' '/"pid"/ {gsub(",", "", $2); print $2}')

hvctl destroy io || fail "hvctl destroy io"
left=$(XENSTORED_PATH=$rundir/xenstored.sock xenstore-list /local/domain/0/backend/vbd 2>/dev/null || true)
[[ -z $left ]] || fail "vbd backend directories left after destroy: $left"
[[ ! -e /proc/$io_pid ]] || fail "io domain process $io_pid still exists after destroy"
net_down
step destroy "io domain destroyed, its vbd/vif removed; backends stopped; namespace $ns deleted"
rm -f "$img" "$work/sent.bin" "$work/got.bin"
io_fds=$(ls "/proc/$hvmin_pid/fd" | wc -l)

cat <<EOF

== hvkit demo report: domain lifecycle, block and network I/O ==
  hv-min                : private rundir, pid $hvmin_pid
  domains created       : peer (id $peer_id), granter (id $granter_id), via hvctl create CFG
  grant copy (GNTTABOP) : 2048 bytes granter -> peer, verified against the seeded pattern
  grant map             : peer mapped the granter's page, checked it, wrote 2048 bytes back
  event channel         : alloc_unbound / bind_interdomain, peer notified the granter
  grant revoke          : granter revoked the grant after the peer unmapped it
  block I/O (blkback)   : fio nbd randwrite 16 MiB verify=crc32c: ${fio_wr_kib:-?} KiB written, verified; $blk_wr bytes written via blkback
  network (netback)     : ping ${ping_rtt:-ok}; 4000000-byte nc copy sha256 match; $net_tx bytes guest->netback, $net_rx back
  teardown              : hvctl destroy; no process, domain, device, tap or namespace left;
                          hv-min fds: $fds after the lifecycle part, $io_fds after the I/O part
EOF
fi

if [[ $part != io ]]; then
  source "$repo/scripts/demo-ntier.sh"
fi
echo "RESULT: PASS"
