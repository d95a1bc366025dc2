#!/bin/sh
# install-deps.sh - installs, from Debian 12's packages, what relayq needs to
# build (--build) or to build and run its tests and benchmarks (--test).
# Needs root (apt-get); does nothing for packages already installed.
# exim4, the real MTA of the smarthost tests, is not installed (it
# conflicts with postfix): tests/e2e/eximlib.py unpacks it under the build
# directory; libidn12 is the one library of its own it needs, and
# libnss-wrapper gives it its Debian-exim user.  redis-server is only run
# by the cluster tests (on 127.0.0.1, started and stopped by them): the
# package's own service is not needed.
# prometheus (its server
# and promtool) and chromium (headless) are the real consumers of the
# daemon's metrics and status page (tests/e2e/test_http_*.py).
# nsd, unbound and ldnsutils run the DNSSEC-signed test zone of the DANE
# tests (tests/e2e/dnsseclib.py).
# linux-perf and strace are for profiling the benchmarks
# (tools/bench/prof/).
set -eu
build_pkgs="gcc make cmake ninja-build pkg-config liblmdb-dev libevent-dev
 libssl-dev zlib1g-dev libdeflate-dev libc-ares-dev libhiredis-dev
 libunbound-dev libopendkim-dev"
test_pkgs="$build_pkgs clang libclang-rt-14-dev clang-format lmdb-utils
 postfix python3 python3-aiosmtpd dnsmasq-base bsd-mailx pflogsumm openssl
 rsyslog
 git git-email libmailtools-perl
 procps linux-perf strace
 libidn12 libnss-wrapper
 nsd unbound ldnsutils
 python3-dkim
 build-essential debhelper lintian debootstrap systemd systemd-container
 redis-server prometheus chromium"
case "${1:---test}" in
--build) pkgs=$build_pkgs ;;
--test) pkgs=$test_pkgs ;;
*) echo "usage: $0 [--build|--test]" >&2; exit 64 ;;
esac
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix is only wanted for smtp-sink/smtp-source/postqueue: no config.
echo "postfix postfix/main_mailer_type select No configuration" |
    debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
