#!/bin/bash
# test-deb.sh - the Debian package as an admin meets it (issue 14).
#
# Builds the package (tools/build-deb.sh), makes a fresh Debian 12 root
# (debootstrap --variant=minbase, from the mirror apt uses here) and, in
# it, with apt (so the package's declared dependencies are proved
# complete):
#  1. chroot, no init: installs relayq, then bsd-mailx (which must take
#     relayq as its mail-transport-agent); checks the links, the user, the
#     directories' owners and modes, the conffile and the enabled unit;
#     sets relayhost to an smtp-sink on the host's 127.0.0.1 and checks the
#     config; starts the daemon as the unit's User=/ExecStart= would (read
#     from the installed unit); mail from root and from a user (mailx) and
#     a cron-style `sendmail -t` wait in the queue (mailq as root) while the
#     sink is down; SIGHUP, SIGTERM; remove keeps config and queue;
#     reinstall; the sink comes up and everything arrives after
#     `sendmail -q`; an upgrade keeps the edited conffile; purge removes
#     config, queue and spool and keeps the user.
#  2. systemd booted in the same root (systemd-nspawn): install starts the
#     unit (its config is valid), mail passes through the hardened unit,
#     `systemctl reload` reloads and fails on a bad config, a reinstall
#     with a bad config does not restart the daemon, `systemctl stop` is
#     graceful and loses nothing, remove stops the daemon, purge cleans up.
#
# Needs root (debootstrap, chroot, nspawn) and the network (the mirror):
# skipped, exit 0, otherwise.  tests/run-all.sh runs it; ctest does not.
# Work files: build-ci-deb/ in the checkout (or $1), made afresh each run.
# Usage: bash tests/pkg/test-deb.sh [WORKDIR]
#   TEST_DEB_SYSTEMD=0 leaves out part 2; TEST_DEB_KEEP=1 keeps the root.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	echo "test-deb: skipped (needs root: debootstrap, chroot)"
	exit 0
fi
top=$(cd "$(dirname "$0")/../.." && pwd)
work=$(realpath -m "${1:-$top/build-ci-deb}")
root=$work/chroot
t0=$(date +%s)
step() { printf '\n=== test-deb: %s (%ds)\n' "$*" $(($(date +%s) - t0)); }
fail() {
	echo "test-deb: FAIL: $*" >&2
	exit 1
}

# --- cleanup: every process started here, every mount below $root ------
pids=()
box_pid=""
umount_below() {
	local m
	awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' \
	    /proc/mounts | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
}
cleanup() {
	local p
	set +e
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	if [ -n "$box_pid" ]; then
		kill "$box_pid" 2>/dev/null
		wait "$box_pid" 2>/dev/null
	fi
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	umount_below "$root"
	if [ "${TEST_DEB_KEEP:-0}" != 1 ] && [ -d "$root" ] &&
	    ! grep -q " ${root}[ /]" /proc/mounts; then
		rm -rf --one-file-system "$root"
	fi
}
trap cleanup EXIT

# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_for() {
	local secs=$1 what=$2 end
	shift 2
	end=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$end" ] || fail "$what (waited ${secs}s)"
		sleep 0.5
	done
}

# in_root COMMAND...: runs COMMAND in the root, in a clean environment.
in_root() {
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# sink_start PORT DIR: Postfix's smtp-sink on 127.0.0.1:PORT, outside the
# root, writing each message it receives to a file in DIR.
sink_start() {
	mkdir -p "$2"
	chmod 0777 "$2"
	/usr/sbin/smtp-sink -u nobody -d "$2/%M%S." "127.0.0.1:$1" 64 \
	    >/dev/null 2>&1 &
	pids+=($!)
	sink_pid=$!
	wait_for 10 "smtp-sink listens on $1" \
	    bash -c "exec 3<>/dev/tcp/127.0.0.1/$1"
}

# sink_has DIR SUBJECT: whether a message with this subject arrived.
sink_has() {
	grep -qsE "^Subject: $2"$'\r'"?\$" "$1"/*
}

# expect_mode PATH OWNER:GROUP MODE (in the root)
expect_mode() {
	local got
	got=$(in_root stat -c "%U:%G %a" "$1")
	[ "$got" = "$2 $3" ] || fail "$1 is $got, want $2 $3"
}

# --- the package ---------------------------------------------------------
step "building the package (tools/build-deb.sh)"
rm -rf "$work/deb"
umount_below "$root"
rm -rf --one-file-system "$root"
mkdir -p "$work"
bash "$top/tools/build-deb.sh" "$work/deb" >"$work/build-deb.log" 2>&1 || {
	tail -40 "$work/build-deb.log"
	fail "tools/build-deb.sh"
}
grep -E 'tests passed|Overall exposure' "$work/build-deb.log" || true
deb=$(ls "$work"/deb/relayq_*.deb)
version=$(dpkg-deb -f "$deb" Version)
echo "package: $(basename "$deb")"

step "debootstrap --variant=minbase bookworm"
for p in debootstrap postfix; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    fail "package $p missing: sh tools/install-deps.sh --test"
done
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
debootstrap --variant=minbase bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
	tail -20 "$work/debootstrap.log"
	fail "debootstrap from $mirror"
}
# apt in the root: the suites this host uses (with security updates)
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
	cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
	rm -f "$root/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
in_root apt-get update -qq
# not in /tmp: nspawn mounts a tmpfs there
cp "$deb" "$root/root/"
rdeb=/root/$(basename "$deb")

# ===================== part 1: chroot, no init ===========================
step "apt-get install relayq, then bsd-mailx"
in_root apt-get install -y -q "$rdeb" >"$work/install1.log" 2>&1 || {
	cat "$work/install1.log"
	fail "apt-get install $rdeb"
}
in_root apt-get install -y -q bsd-mailx >"$work/mailx.log" 2>&1 || {
	cat "$work/mailx.log"
	fail "apt-get install bsd-mailx"
}
for other in exim4-base exim4-daemon-light postfix nullmailer dma; do
	if in_root dpkg-query -W -f='${Status}' "$other" 2>/dev/null |
	    grep -q "ok installed"; then
		fail "bsd-mailx pulled in $other: relayq is not its MTA"
	fi
done

step "what the package installed"
[ "$(in_root relayq --version)" = "relayq ${version%%-*}" ] ||
    fail "relayq --version says $(in_root relayq --version), package $version"
for l in /usr/sbin/sendmail /usr/lib/sendmail /usr/bin/mailq \
    /usr/bin/newaliases; do
	[ "$(readlink -f "$root$l")" = "$root/usr/sbin/relayq" ] ||
	    fail "$l is not relayq"
done
# the network-up hook (issue 13): `relayq flush` when a network comes up
for h in /etc/network/if-up.d/relayq \
    /etc/networkd-dispatcher/routable.d/relayq; do
	[ -x "$root$h" ] || fail "$h missing or not executable"
done
for f in man/man8/relayq.8.gz man/man5/relayq.conf.5.gz \
    doc/relayq/relayq.conf.example; do
	[ -f "$root/usr/share/$f" ] || fail "/usr/share/$f missing"
done
in_root dpkg-query -W -f='${Conffiles}\n' relayq |
    grep -q '^ /etc/relayq/relayq.conf ' ||
    fail "/etc/relayq/relayq.conf is not a conffile"
[ -L "$root/etc/systemd/system/multi-user.target.wants/relayq.service" ] ||
    fail "relayq.service is not enabled"
in_root getent passwd relayq >/dev/null || fail "no user relayq"
uid=$(in_root id -u relayq)
expect_mode /var/lib/relayq relayq:relayq 700
expect_mode /var/spool/relayq relayq:relayq 755
expect_mode /var/spool/relayq/incoming relayq:relayq 3733
expect_mode /var/spool/relayq/tmp relayq:relayq 3733
expect_mode /var/spool/relayq/bad relayq:relayq 700
# /etc/aliases made when missing (Debian Policy 11.6), and it checks
grep -q '^postmaster: *root$' "$root/etc/aliases" ||
    fail "/etc/aliases has no postmaster: root"
in_root newaliases >"$work/newaliases.txt" 2>&1 || {
	cat "$work/newaliases.txt"
	fail "newaliases on the /etc/aliases postinst made"
}
echo "links, man pages, conffile, enabled unit, user relayq ($uid)," \
    "directories, /etc/aliases: ok"

step "relayhost on the host's loopback; relayq check-config"
port=$(free_port)
conf=$root/etc/relayq/relayq.conf
sed -i "s|^#relayhost = .*|relayhost = [127.0.0.1]:$port|" "$conf"
[ "$(grep -c '^relayhost = ' "$conf")" = 1 ] ||
    fail "the shipped config has no '#relayhost = ' line to edit"
in_root relayq check-config >"$work/check-config.txt" ||
    fail "relayq check-config on the shipped config"
grep -q "^relayhost = \[127.0.0.1\]:$port" "$work/check-config.txt" ||
    fail "check-config does not show the relayhost"

# The installed unit says how the daemon is started; no init runs here,
# so start it that way: its user and group, umask, bounding set,
# no_new_privs, ExecStartPre= and ExecStart=.
unit=$root/lib/systemd/system/relayq.service
unit_val() { sed -n "s/^$1=//p" "$unit" | tail -1; }
u_user=$(unit_val User)
u_group=$(unit_val Group)
u_umask=$(unit_val UMask)
u_pre=$(unit_val ExecStartPre)
u_start=$(unit_val ExecStart)
u_stop=$(unit_val TimeoutStopSec)
u_stop=${u_stop%s}
[ -n "$u_user" ] && [ -n "$u_start" ] || fail "no User=/ExecStart= in the unit"
setpriv_args=(--reuid="$u_user" --regid="${u_group:-$u_user}" --init-groups)
if grep -q '^CapabilityBoundingSet=$' "$unit"; then
	setpriv_args+=(--bounding-set=-all --inh-caps=-all)
	u_caps=0000000000000000
elif grep -q '^CapabilityBoundingSet=CAP_LEASE$' "$unit" &&
	grep -q '^AmbientCapabilities=CAP_LEASE$' "$unit"; then
	setpriv_args+=(--bounding-set=-all,+lease --inh-caps=-all,+lease
	    --ambient-caps=-all,+lease)
	u_caps=0000000010000000 # CAP_LEASE alone
fi
[ "$(unit_val NoNewPrivileges)" = yes ] && setpriv_args+=(--no-new-privs)
# as_unit COMMAND-LINE: sets cmd to run it as the unit runs its Exec*=
# lines (every program on the way execs the next: one pid)
as_unit() {
	cmd=(chroot "$root" setpriv "${setpriv_args[@]}" -- /usr/bin/env -i
	    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	    HOME=/var/lib/relayq USER="$u_user" LOGNAME="$u_user"
	    /bin/sh -c "umask ${u_umask:-0022}; exec ${1#[-@:+!]}")
}
daemon_start() { # LOG
	if [ -n "$u_pre" ]; then
		as_unit "$u_pre"
		"${cmd[@]}" || fail "ExecStartPre=$u_pre"
	fi
	as_unit "$u_start"
	"${cmd[@]}" >"$1" 2>&1 &
	daemon_pid=$!
	pids+=("$daemon_pid")
	wait_for 10 "daemon started (log $1)" grep -q "daemon started" "$1"
	grep "daemon started" "$1"
	read -r _ ruid euid _ < <(grep '^Uid:' "/proc/$daemon_pid/status")
	[ "$ruid" = "$uid" ] && [ "$euid" = "$uid" ] ||
	    fail "the daemon runs as uid $ruid/$euid, not relayq ($uid)"
	grep -q '^NoNewPrivs:.*1' "/proc/$daemon_pid/status" ||
	    fail "no_new_privs is not set"
	[ -z "${u_caps:-}" ] ||
	    grep -q "^CapEff:[[:space:]]*$u_caps\$" "/proc/$daemon_pid/status" ||
	    fail "the daemon's capabilities are not $u_caps: $(grep Cap \
		"/proc/$daemon_pid/status")"
}
daemon_stop() { # LOG: SIGTERM; must exit 0 within TimeoutStopSec
	local rc=0 end=$(($(date +%s) + ${u_stop:-90}))
	kill -TERM "$daemon_pid"
	while kill -0 "$daemon_pid" 2>/dev/null; do
		[ "$(date +%s)" -lt "$end" ] ||
		    fail "the daemon ignored SIGTERM for ${u_stop}s"
		sleep 0.2
	done
	wait "$daemon_pid" || rc=$?
	[ "$rc" = 0 ] || { cat "$1"; fail "the daemon exited $rc on SIGTERM"; }
	grep -q "daemon stopped" "$1" || fail "no 'daemon stopped' in $1"
}

step "auth_file as README.md says: relayq's, 0600; ExecStartPre= takes it"
in_root install -m 0600 -o relayq -g relayq /dev/null /etc/relayq/auth
echo "[127.0.0.1]:$port me@example.org:secret" >"$root/etc/relayq/auth"
echo "auth_file = /etc/relayq/auth" >>"$conf"
as_unit "$u_pre"
"${cmd[@]}" || fail "ExecStartPre=$u_pre with auth_file"
sed -i '/^auth_file = /d' "$conf"
rm "$root/etc/relayq/auth"

step "daemon as the unit starts it: $u_user, '$u_start'"
daemon_start "$work/daemon1.log"

step "mail from root and a user (bsd-mailx), cron-style sendmail -t"
in_root useradd -m alice
echo hi | in_root mail -s "pkgtest root mailx" root ||
    fail "mail as root"
echo hi | chroot "$root" setpriv --reuid=alice --regid=alice --init-groups \
    -- /usr/bin/env -i PATH=/usr/bin:/bin HOME=/home/alice \
    mail -s "pkgtest alice mailx" root || fail "mail as alice"
# Vixie cron's MAILCMD and MAILARGS
printf 'From: root (Cron Daemon)\nTo: root\nSubject: %s\n\nhi\n' \
    "pkgtest cron" | in_root /usr/sbin/sendmail -FCronDaemon -odi -oem -oi -t ||
    fail "sendmail -t"
# the sink is not up yet: they wait in the queue
mailq_says() { in_root mailq | grep -q "$1"; }
wait_for 60 "mailq as root shows 3 requests" mailq_says "in 3 Requests"
in_root mailq | tee "$work/mailq1.txt"
grep -q "root@" "$work/mailq1.txt" || fail "mailq shows no recipient"
rc=0
chroot "$root" setpriv --reuid=alice --regid=alice --init-groups -- \
    /usr/bin/mailq >/dev/null 2>&1 || rc=$?
[ "$rc" = 77 ] || fail "mailq as alice exited $rc, not 77"

step "SIGHUP reloads, SIGTERM stops within TimeoutStopSec=$u_stop"
kill -HUP "$daemon_pid"
wait_for 10 "reload logged" grep -q "reloaded configuration" \
    "$work/daemon1.log"
daemon_stop "$work/daemon1.log"

step "apt-get remove relayq: config and queue stay"
in_root apt-get remove -y -q relayq >"$work/remove.log" 2>&1 || {
	cat "$work/remove.log"
	fail "apt-get remove relayq"
}
[ "$(in_root dpkg-query -W -f='${db:Status-Status}' relayq)" = \
    config-files ] || fail "relayq is not in state config-files"
[ ! -e "$root/usr/sbin/relayq" ] && [ ! -e "$root/usr/sbin/sendmail" ] ||
    fail "binaries left after remove"
[ -s "$root/var/lib/relayq/data.mdb" ] || fail "the queue went with remove"
[ -d "$root/var/spool/relayq/incoming" ] || fail "the spool went with remove"
grep -q "^relayhost = \[127.0.0.1\]:$port" "$conf" ||
    fail "the config went with remove"
in_root getent passwd relayq >/dev/null || fail "remove took the user"

step "reinstall; the sink comes up; sendmail -q delivers the queue"
in_root apt-get install -y -q "$rdeb" bsd-mailx >"$work/install2.log" 2>&1 || {
	cat "$work/install2.log"
	fail "reinstall"
}
grep -q "^relayhost = \[127.0.0.1\]:$port" "$conf" ||
    fail "reinstall lost the edited config"
expect_mode /var/lib/relayq relayq:relayq 700
expect_mode /var/spool/relayq/incoming relayq:relayq 3733
dump=$work/sink
rm -rf "$dump"
sink_start "$port" "$dump"
daemon_start "$work/daemon2.log"
in_root sendmail -q || fail "sendmail -q"
for s in "pkgtest root mailx" "pkgtest alice mailx" "pkgtest cron"; do
	wait_for 60 "'$s' reached the sink" sink_has "$dump" "$s"
done
printf 'To: root\nSubject: pkgtest cron live\n\nagain\n' |
    in_root /usr/sbin/sendmail -FCronDaemon -odi -oem -oi -t
wait_for 60 "the live cron mail reached the sink" \
    sink_has "$dump" "pkgtest cron live"
wait_for 30 "mailq: queue empty" mailq_says "Mail queue is empty"
echo "4 messages in the sink: $(ls "$dump" | wc -l) files"

step "upgrade to $version+pkgtest: the edited conffile stays"
rm -rf "$work/repack"
dpkg-deb -R "$deb" "$work/repack"
sed -i "s/^Version: .*/Version: $version+pkgtest/" "$work/repack/DEBIAN/control"
dpkg-deb -b "$work/repack" "$root/root/relayq_up.deb" >/dev/null
in_root apt-get install -y -q /root/relayq_up.deb </dev/null \
    >"$work/upgrade.log" 2>&1 || {
	cat "$work/upgrade.log"
	fail "upgrade"
}
[ "$(in_root dpkg-query -W -f='${Version}' relayq)" = "$version+pkgtest" ] ||
    fail "not upgraded"
grep -q "^relayhost = \[127.0.0.1\]:$port" "$conf" ||
    fail "the upgrade lost the edited config"
daemon_stop "$work/daemon2.log"

step "apt-get purge relayq: config, queue, spool gone, said so"
in_root apt-get purge -y -q relayq >"$work/purge.log" 2>&1 || {
	cat "$work/purge.log"
	fail "purge"
}
grep "relayq: purge" "$work/purge.log"
grep -q "relayq: purge: removing /var/lib/relayq" "$work/purge.log" ||
    fail "purge did not say it removes the queue"
for d in /etc/relayq /var/lib/relayq /var/spool/relayq; do
	[ ! -e "$root$d" ] || fail "$d left after purge"
done
in_root getent passwd relayq >/dev/null ||
    fail "purge removed the user (Debian MTAs keep theirs)"
[ -f "$root/etc/aliases" ] ||
    fail "purge removed /etc/aliases (the system's, not relayq's)"
st=$(in_root dpkg-query -W -f='${db:Status-Status}' relayq 2>/dev/null || true)
[ -z "$st" ] || [ "$st" = not-installed ] || fail "relayq is $st after purge"
kill "$sink_pid"

# ===================== part 2: systemd in the root =======================
if [ "${TEST_DEB_SYSTEMD:-1}" = 0 ]; then
	step "part 2 (systemd) left out: TEST_DEB_SYSTEMD=0"
	step "passed"
	exit 0
fi
command -v systemd-nspawn >/dev/null ||
    fail "systemd-nspawn missing: sh tools/install-deps.sh --test"
step "systemd in the root, booted with systemd-nspawn"
in_root apt-get install -y -q --no-install-recommends systemd systemd-sysv \
    >"$work/systemd.log" 2>&1 || {
	cat "$work/systemd.log"
	fail "apt-get install systemd"
}
umount "$root/proc"
systemd-nspawn -q -D "$root" --boot --register=no --keep-unit \
    --console=pipe --link-journal=no --resolv-conf=copy-host \
    </dev/null >"$work/boot.log" 2>&1 &
box_pid=$!
leader=""
wait_for 30 "nspawn started systemd" pgrep -P "$box_pid"
leader=$(pgrep -P "$box_pid" | head -1)
in_box() {
	nsenter -t "$leader" -a /usr/bin/env -i \
	    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	    DEBIAN_FRONTEND=noninteractive "$@"
}
box_up() {
	case $(in_box systemctl is-system-running 2>/dev/null) in
	running | degraded) return 0 ;;
	esac
	return 1
}
wait_for 60 "systemd in the root is up" box_up
main_pid() { in_box systemctl show -p MainPID --value relayq; }

step "install: postinst starts the unit (valid config)"
in_box apt-get install -y -q "$rdeb" bsd-mailx >"$work/install3.log" 2>&1 || {
	cat "$work/install3.log"
	fail "install under systemd"
}
wait_for 15 "relayq.service active after install" \
    in_box systemctl is-active -q relayq
p1=$(main_pid)
[ "$(in_box stat -c %U "/proc/$p1")" = relayq ] ||
    fail "the unit's daemon does not run as relayq"
in_box systemctl is-enabled -q relayq || fail "relayq.service not enabled"
# the sandbox lets it raise its soft open-file limit (setrlimit), and the
# directories postinst made need no repair
read -r soft hard _ < <(in_box sh -c "sed -n 's/^Max open files *//p' \
    /proc/$p1/limits")
[ "$soft" = "$hard" ] || fail "open-file limit not raised: $soft < $hard"
echo "open files: soft $soft = hard $hard"
journal() { in_box journalctl -u relayq --no-pager -o cat; }
journal | grep -E "cannot raise|repaired|warning" && fail "warnings at start"
# through syslog (issue 13): facility mail (2), its component's identity,
# one header (none of relayq's own in the text)
mail_started() {
	in_box journalctl --no-pager SYSLOG_FACILITY=2 \
	    SYSLOG_IDENTIFIER=relayq/relayq -o cat | grep -q "daemon started"
}
wait_for 15 "'daemon started' of relayq/relayq, facility mail, in the journal" \
    mail_started
journal | grep -E "^[A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} " &&
    fail "lines stamped twice in the journal"

step "through the hardened unit: reload, mail to the sink"
port=$(free_port)
dump=$work/sink2
rm -rf "$dump"
sink_start "$port" "$dump"
sed -i "s|^#relayhost = .*|relayhost = [127.0.0.1]:$port|" "$conf"
in_box systemctl reload relayq || fail "systemctl reload"
reloaded() { journal | grep -q "reloaded configuration"; }
wait_for 10 "reload in the journal" reloaded
echo hi | in_box mail -s "pkgtest systemd mailx" root
printf 'To: root\nSubject: pkgtest systemd cron\n\nhi\n' |
    in_box /usr/sbin/sendmail -FCronDaemon -odi -oem -oi -t
wait_for 60 "mailx mail through the unit" \
    sink_has "$dump" "pkgtest systemd mailx"
wait_for 60 "cron mail through the unit" \
    sink_has "$dump" "pkgtest systemd cron"
[ "$(main_pid)" = "$p1" ] || fail "the daemon restarted (crashed?)"

step "a bad config: reload fails, reinstall does not restart"
echo "no_such_key = 1" >>"$conf"
in_box systemctl reload relayq 2>/dev/null && fail "reload took a bad config"
in_box systemctl is-active -q relayq || fail "bad reload stopped the daemon"
in_box apt-get install -y -q --reinstall "$rdeb" >"$work/install4.log" 2>&1 || {
	cat "$work/install4.log"
	fail "reinstall with a bad config"
}
grep -q "the daemon was not (re)started" "$work/install4.log" ||
    fail "postinst did not say it leaves the daemon alone"
[ "$(main_pid)" = "$p1" ] || fail "postinst restarted a bad config"
sed -i '/^no_such_key/d' "$conf"

step "systemctl stop is graceful; nothing is lost"
kill "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
printf 'To: root\nSubject: pkgtest waits\n\nwaits\n' | in_box sendmail -t
box_mailq_says() { in_box mailq | grep -q "$1"; }
wait_for 60 "the message waits in the queue" box_mailq_says "in 1 Request"
s0=$(date +%s)
in_box systemctl stop relayq || fail "systemctl stop"
echo "stopped in $(($(date +%s) - s0))s (TimeoutStopSec=$u_stop)"
[ "$(in_box systemctl show -p Result --value relayq)" = success ] ||
    fail "stop: Result is not success"
[ "$(in_box systemctl show -p ExecMainStatus --value relayq)" = 0 ] ||
    fail "stop: the daemon did not exit 0"
in_box mailq | grep -q 'in 1 Request' || fail "stop lost the waiting mail"

step "remove stops the daemon, purge cleans up"
in_box systemctl start relayq
wait_for 15 "started again" in_box systemctl is-active -q relayq
[ -d "$root/var/log/relayq" ] || fail "LogsDirectory= made no /var/log/relayq"
in_box apt-get remove -y -q relayq >"$work/remove2.log" 2>&1 || {
	cat "$work/remove2.log"
	fail "remove under systemd"
}
in_box systemctl is-active -q relayq && fail "remove left the daemon running"
# (no procps in a minbase root: read /proc)
left=$(in_box sh -c 'grep -lx relayq /proc/[0-9]*/comm' 2>/dev/null || true)
[ -z "$left" ] || fail "relayq processes left after remove: $left"
[ -s "$root/var/lib/relayq/data.mdb" ] || fail "the queue went with remove"
in_box apt-get purge -y -q relayq >"$work/purge2.log" 2>&1 || {
	cat "$work/purge2.log"
	fail "purge under systemd"
}
for d in /etc/relayq /var/lib/relayq /var/spool/relayq /var/log/relayq; do
	[ ! -e "$root$d" ] || fail "$d left after purge"
done
in_box systemctl poweroff >/dev/null 2>&1 || true
for _ in $(seq 1 40); do
	kill -0 "$box_pid" 2>/dev/null || break
	sleep 0.5
done
step "passed"
