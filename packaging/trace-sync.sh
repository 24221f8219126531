#!/usr/bin/env bash
# Records what a real relay-sync run does, to derive relay-sync.service's limits from it:
#   packaging/trace-sync.sh [OUT_DIR]        (default target/trace; needs root and strace)
#
# Starts `cargo xtask sandbox` (a private MariaDB and Postfix on 127.0.0.1, relay-sync's release
# build synced to 100 domains), flips one domain in the database so that the next run adds or
# removes it (every apply step: backup, postmap, postconf -e, postfix reload, verification),
# then runs that sync and a run that finds nothing to do under `strace -f`, and summarizes:
#   syscalls.txt      every system call made by relay-sync and the commands it ran
#   outside.txt       those not in systemd's @system-service set (SystemCallFilter= must add them)
#   families.txt      socket address families (RestrictAddressFamilies=)
#   writes.txt        paths opened for writing, created, renamed, removed or chowned (ReadWritePaths=)
#   programs.txt      programs executed
#   privileged.txt    calls that need a capability when run as root on others' files, or that
#                     change credentials: chown, setuid/setgid/setgroups, kill (CapabilityBoundingSet=)
#   denied.txt        calls that failed with EPERM or EACCES
# and then runs one more changing sync with the unit's CapabilityBoundingSet= and
# NoNewPrivileges= (setpriv), checking that it succeeds and leaves nothing to do.
# The sandbox's paths stand for the configured ones: its Postfix directory for /etc/postfix
# (POSTFIX_CONFIG_DIR), its queue for /var/spool/postfix, its backup, log and state directories
# for BACKUP_DIR, LOG_FILE's directory and STATE_DIR. packaging/README-unit.md reads the result.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v strace >/dev/null || { echo "trace-sync: strace not found: apt-get install -y strace" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "trace-sync: systemd-analyze not found: apt-get install -y systemd" >&2; exit 1; }
out=$(realpath -m "${1:-target/trace}")
rm -rf "$out"; mkdir -p "$out"

fifo=$out/sandbox.stdin
mkfifo "$fifo"
cargo xtask sandbox 100 inline <"$fifo" >"$out/sandbox.txt" 2>"$out/sandbox.err" &
sandbox=$!
# Holding the fifo open keeps the sandbox up; closing it (on exit) stops and removes it.
exec 3>"$fifo"
trap 'exec 3>&-; wait "$sandbox" 2>/dev/null || true' EXIT
for _ in $(seq 1200); do
  grep -q '^sandbox ready' "$out/sandbox.txt" 2>/dev/null && break
  kill -0 "$sandbox" 2>/dev/null || { cat "$out/sandbox.err" >&2; exit 1; }
  sleep 0.5
done
grep -q '^sandbox ready' "$out/sandbox.txt" || { echo "trace-sync: the sandbox did not start" >&2; exit 1; }
run=$(sed -n 's/^  run: *//p' "$out/sandbox.txt")
toggle=$(sed -n 's/^  toggle: *//p' "$out/sandbox.txt")

trace() { # NAME: runs the sandbox's sync under strace into $out/NAME.strace
  local code=0
  # -f: children too (postconf, postmap, postfix-script, postsuper, ...); -yy: paths of file
  # descriptors and socket families.
  strace -f -qq -yy -s 200 -o "$out/$1.strace" $run >"$out/$1.out" 2>&1 || code=$?
  echo "$1: exit $code" >>"$out/runs.txt"
}
eval "$toggle"
trace change
trace nochange

# The unit's capability bounding set and NoNewPrivileges, applied by hand (CI cannot boot
# systemd): a changing sync, with its postmap and postfix reload, must still succeed with them.
# TRACE_CAPS=+chown,+setuid,... tries another set (to see what breaks without one).
caps=${TRACE_CAPS:-$(sed -nE 's/^CapabilityBoundingSet=//p' packaging/relay-sync.service | tr 'A-Z' 'a-z' | sed -E 's/cap_/+/g; s/ +/,/g')}
[ -n "$caps" ] || { echo "trace-sync: no CapabilityBoundingSet= in relay-sync.service" >&2; exit 1; }
eval "$toggle"
code=0
setpriv --no-new-privs --bounding-set "-all,$caps" --inh-caps -all -- $run >"$out/bounded.out" 2>&1 || code=$?
echo "bounded ($caps, no-new-privs): exit $code" >>"$out/runs.txt"
# And it really applied the change: a dry run afterwards finds nothing to do.
code=0
$run --dry-run >"$out/after-bounded.out" 2>&1 || code=$?
grep -q 'no changes' "$out/after-bounded.out" || code="$code (the bounded run left changes)"
echo "dry run after the bounded one: exit $code" >>"$out/runs.txt"
cat "$out/runs.txt"
grep -q ': exit [^0]' "$out/runs.txt" && { echo "trace-sync: a run failed; see $out/*.out" >&2; exit 1; }

cat "$out"/*.strace >"$out/all.strace"
# Lines look like `PID name(args) = result`; resumed calls (`<... name resumed>`) name it too.
sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p; s/^[0-9]+ +<\.\.\. ([a-z0-9_]+) resumed>.*/\1/p' \
  "$out/all.strace" | sort -u >"$out/syscalls.txt"
expand() { # GROUP: the syscalls of a systemd syscall group, nested groups expanded
  local line
  systemd-analyze --no-pager syscall-filter "$1" | sed -nE 's/^ +([@a-z0-9_-]+)$/\1/p' | while read -r line; do
    case $line in @*) expand "$line" ;; *) echo "$line" ;; esac
  done
}
expand @system-service | sort -u >"$out/system-service.txt"
comm -23 "$out/syscalls.txt" "$out/system-service.txt" >"$out/outside.txt"
grep -oE 'socket\((AF_[A-Z0-9]+)' "$out/all.strace" | sed 's/socket(//' | sort | uniq -c >"$out/families.txt" || true
{
  grep -E ' (open|openat|creat)\(.*(O_WRONLY|O_RDWR|O_CREAT)' "$out/all.strace" | grep -oE '"/[^"]*"' || true
  grep -E ' (rename|renameat|renameat2|unlink|unlinkat|mkdir|mkdirat|rmdir|link|linkat|symlink|chown|fchownat|lchown|chmod|fchmodat|utimensat)\(' "$out/all.strace" \
    | grep -oE '"/[^"]*"' || true
  grep -E ' (fchown|fchmod|ftruncate|fsync|fdatasync|write)\([0-9]+</' "$out/all.strace" | grep -oE '\(([0-9]+)</[^>]*>' | sed -E 's/^\([0-9]+<//; s/>$//' || true
} | tr -d '"' | grep -vE '^/(dev|proc)/' | sed -E 's/[0-9]{8}-[0-9]{6}/STAMP/' | sort | uniq -c >"$out/writes.txt"
grep -oE ' execve\("[^"]+"' "$out/all.strace" | sed 's/ execve(//; s/"//g' | sort | uniq -c >"$out/programs.txt" || true
grep -E ' (chown|fchown|fchownat|lchown|setuid|setgid|setresuid|setresgid|setgroups|setreuid|setregid|capset|kill|tgkill)\(' "$out/all.strace" \
  | sed -E 's/^[0-9]+ +//' | sed -E 's/0x[0-9a-f]+/ADDR/g' | sort | uniq -c | sort -rn >"$out/privileged.txt" || true
grep -E '= -1 (EPERM|EACCES)' "$out/all.strace" | sed -E 's/^[0-9]+ +//' | sort | uniq -c | sort -rn >"$out/denied.txt" || true

for f in outside families programs privileged denied writes; do
  echo "== $f.txt"; cat "$out/$f.txt"
done
echo "== $(wc -l <"$out/syscalls.txt") distinct syscalls in $out/syscalls.txt"
