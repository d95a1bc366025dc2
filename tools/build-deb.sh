#!/bin/bash
# build-deb.sh - builds the Debian package of this checkout, from scratch:
#  1. installs what the build needs (apt-get build-dep on debian/control,
#     which brings debhelper and build-essential; lintian; systemd for
#     systemd-analyze) when something is missing (needs root then);
#  2. checks that debian/changelog's newest entry carries the version of
#     project(relayq VERSION ...) in CMakeLists.txt;
#  3. runs `dpkg-buildpackage -us -uc -b` on a copy of the tree (the
#     checkout stays clean): the project's flags (-Werror ...) on top of
#     Debian's hardening flags, and the unit tests (ctest -L unit);
#  4. runs lintian (fails on an error; overrides in debian/ say why) and
#     checks the packaged unit: `systemd-analyze verify`, and `security`
#     with an exposure of 2.0 or lower.
# The packages end up in OUTDIR (default build-deb/ in the checkout):
#   relayq_VERSION_ARCH.deb and relayq-dbgsym_VERSION_ARCH.deb.
# Usage: bash tools/build-deb.sh [OUTDIR]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$top/build-deb}")
t0=$(date +%s)
step() { printf '\n=== build-deb: %s (%ds)\n' "$*" $(($(date +%s) - t0)); }

version=$(sed -n 's/^project(relayq VERSION \([^ )]*\).*/\1/p' \
    "$top/CMakeLists.txt")
if [ -z "$version" ]; then
	echo "build-deb: no version in CMakeLists.txt" >&2
	exit 1
fi

step "copying the tree to $out/relayq-$version"
src=$out/relayq-$version
# what an earlier run left there, and nothing else
rm -rf "$src" "$out/root" "$out"/relayq_* "$out"/relayq-dbgsym_* \
    "$out/build.log" "$out/lintian.log"
mkdir -p "$src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	# tracked and untracked files, without what .gitignore keeps out
	# (build trees); symlinks (debian/relayq.service) stay symlinks
	git -C "$top" ls-files -z --cached --others --exclude-standard |
	    (cd "$top" && tar --null -T - -cf -) | tar -C "$src" -xf -
else
	tar -C "$top" --exclude='./build*' --exclude=./.git -cf - . |
	    tar -C "$src" -xf -
fi

step "build dependencies"
need=""
(cd "$src" && dpkg-checkbuilddeps >/dev/null 2>&1) || need=build-dep
for p in build-essential lintian systemd; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
	    need="$need $p"
done
if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "build-deb: missing: $need (run as root to install)" >&2
		(cd "$src" && dpkg-checkbuilddeps) || true
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get build-dep -y -qq "$src" >/dev/null
	apt-get install -y -qq --no-install-recommends build-essential \
	    lintian systemd >/dev/null
fi

step "version $version in debian/changelog"
debver=$(cd "$src" && dpkg-parsechangelog -S Version)
upstream=${debver#*:}
upstream=${upstream%-*}
if [ "$upstream" != "$version" ]; then
	echo "build-deb: debian/changelog's newest entry is $debver, but" \
	    "CMakeLists.txt says $version: add an entry (dch -v $version)" >&2
	exit 1
fi

step "dpkg-buildpackage -us -uc -b"
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}"
(cd "$src" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1 || {
	tail -60 "$out/build.log"
	echo "build-deb: dpkg-buildpackage failed; see $out/build.log" >&2
	exit 1
}
grep -E '^(Label Time Summary|unit +=|[0-9]+% tests passed)' \
    "$out/build.log" || true
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=$out/relayq_${debver#*:}_$arch.deb
changes=$out/relayq_${debver#*:}_$arch.changes
[ -f "$deb" ] || { echo "build-deb: $deb was not made" >&2; exit 1; }

step "lintian"
lintian --allow-root --fail-on error --tag-display-limit 0 "$changes" |
    tee "$out/lintian.log"

step "systemd-analyze on the packaged unit"
# verify on a copy that names the packaged binary where it was unpacked,
# so that the check that every Exec*= program exists checks that one
root=$out/root
dpkg-deb -x "$deb" "$root"
mkdir "$root/verify"
sed "s|/usr/sbin/relayq|$root/usr/sbin/relayq|g" \
    "$root/lib/systemd/system/relayq.service" >"$root/verify/relayq.service"
systemd-analyze verify --man=no "$root/verify/relayq.service"
systemd-analyze security --offline=yes --threshold=20 --no-pager \
    "$root/lib/systemd/system/relayq.service" | tail -1
rm -rf "$root" "$src"

step "done"
ls -l "$out"/*.deb
