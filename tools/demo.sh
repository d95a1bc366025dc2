#!/bin/bash
# demo.sh - sets up a fresh Debian 12 machine and runs relayq's main job on
# the bundled demo config (tools/demo/relayq.conf): messages of all three
# priority classes are dropped into the spool, taken into the queue while
# the SMTP sink is still down (so they wait, deferred), shown with mailq;
# then Postfix's smtp-sink starts on 127.0.0.1:2525, the queue is flushed
# and drains, and mailq is shown again.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
demo=/tmp/relayq-demo
conf=$top/tools/demo/relayq.conf
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing packages and building"
sh tools/install-deps.sh --test
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build >/dev/null
rq="$top/build/tools/relayq"
export RELAYQ_CONFIG=$conf

rm -rf "$demo"
mkdir -p "$demo/spool/incoming" "$demo/spool/tmp" "$demo/sink"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

say "relayq check-config (excerpt)"
"$rq" check-config | grep -E '^(relayhost|hostname|timeout\.queue(warn|return)\.)'

say "dropping 6 messages: 2 urgent, 2 normal, 2 non-urgent"
n=0
for class in urgent normal non-urgent; do
	for i in 1 2; do
		n=$((n + 1))
		f="$demo/spool/tmp/demo-$n"
		{
			printf 'X-Sender: alice@example.org\n'
			printf 'X-Receiver: bob%d@example.net\n' "$n"
			printf 'From: Alice <alice@example.org>\n'
			printf 'To: bob%d@example.net\n' "$n"
			printf 'Subject: demo %s message %d\n' "$class" "$i"
			printf 'Priority: %s\n\n' "$class"
			printf 'This is a %s message.\n' "$class"
		} >"$f"
		mv "$f" "$demo/spool/incoming/"
	done
done
printf 'Subject: via relayq send\nPriority: urgent\n\nhello\n' |
    "$rq" send -f carol@example.org dave@example.net
ls "$demo/spool/incoming" | sed 's/^/  incoming\//'

say "relayq run (the SMTP sink is not up yet: first attempts defer)"
"$rq" run &
pids+=($!)
for _ in $(seq 100); do
	[ -z "$(ls "$demo/spool/incoming")" ] && break
	sleep 0.1
done
sleep 2.5

say "mailq before delivery"
"$rq" mailq
say "summary"
"$rq" summary

say "starting smtp-sink on 127.0.0.1:2525 and flushing the queue"
chmod 777 "$demo/sink"
/usr/sbin/smtp-sink -u nobody -d "$demo/sink/%M%S." 127.0.0.1:2525 64 &
pids+=($!)
sleep 0.5
"$rq" flush
for _ in $(seq 150); do
	[ -z "$("$rq" mailq --json)" ] && break
	sleep 0.2
done

say "mailq after delivery"
"$rq" mailq
say "delivery log ($demo/relayq.log)"
grep -E 'status=|removed|from=<' "$demo/relayq.log" | tail -25
say "messages received by the sink: $(ls "$demo/sink" | wc -l)"
kill "${pids[0]}" 2>/dev/null || true
wait "${pids[0]}" 2>/dev/null || true
