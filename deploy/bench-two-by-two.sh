#!/bin/sh
# Plays `rlslab bench workshop` through HAProxy (deploy/haproxy.cfg) in
# front of two rlslab instances that both make labs on two PostgreSQL 15
# servers, everything on this machine, and prints the bench's report. Run
# it from the repository's root:
#
#   deploy/bench-two-by-two.sh [PARTICIPANTS] [bench flags...]
#   deploy/bench-two-by-two.sh 200 -crowd=false -fair=false
#
# SERVERS=1 INSTANCES=1 runs the same bench against one instance on one
# server (no HAProxy), to compare. MAXCONN sets each server's
# max_connections (default 100, the stock value); PGBIN where initdb and
# pg_ctl are; BASEPORT the first of the ports it uses (PostgreSQL on
# BASEPORT+1.., rlslab on BASEPORT+11.., HAProxy on BASEPORT+10). As root,
# PostgreSQL runs as the postgres user. Everything it starts is stopped,
# and its directory removed, when it ends.
set -eu
set -f # URLs hold '?'
N=${1:-200}
[ $# -gt 0 ] && shift
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MAXCONN=${MAXCONN:-100}
SERVERS=${SERVERS:-2}
INSTANCES=${INSTANCES:-2}
BASEPORT=${BASEPORT:-25530}

work=$(mktemp -d /tmp/rlslab-bench.XXXXXX)
chmod 755 "$work"
mkdir "$work/pg"
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
	chown postgres "$work/pg"
	as_pg() { runuser -u postgres -- "$@"; }
fi
started=""
cleanup() {
	for p in $started; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	set +f
	for d in "$work"/pg/data*; do
		[ -d "$d" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m fast stop >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

go build -o "$work/rlslab" ./cmd/rlslab

urls=""
i=1
while [ "$i" -le "$SERVERS" ]; do
	port=$((BASEPORT + i))
	as_pg "$PGBIN/initdb" -D "$work/pg/data$i" -U postgres -A trust >/dev/null
	as_pg "$PGBIN/pg_ctl" -D "$work/pg/data$i" -l "$work/pg/log$i" -w \
		-o "-p $port -k $work/pg -c listen_addresses= -c max_connections=$MAXCONN" start >/dev/null
	urls="$urls postgres://postgres@/postgres?host=$work/pg&port=$port&sslmode=disable"
	i=$((i + 1))
done
first=${urls# }
first=${first%% *}
labdb=""
dbflags=""
for u in $urls; do
	labdb="$labdb -lab-db $u"
	dbflags="$dbflags -db $u"
done

pidflags=""
addrs=""
i=1
while [ "$i" -le "$INSTANCES" ]; do
	addr=127.0.0.1:$((BASEPORT + 10 + i))
	# shellcheck disable=SC2086 # $labdb is a list of flags
	"$work/rlslab" serve -addr "$addr" -db "$first" $labdb -instance "bench$i" -proxy-addr off 2>"$work/rlslab$i.log" >/dev/null &
	started="$started $!"
	pidflags="$pidflags -pid $!"
	addrs="$addrs $addr"
	i=$((i + 1))
done
for addr in $addrs; do
	tries=0
	until curl -fs "http://$addr/healthz" >/dev/null 2>&1; do
		tries=$((tries + 1))
		[ "$tries" -gt 600 ] && { echo "rlslab at $addr did not start; its log:" >&2; cat "$work"/rlslab*.log >&2; exit 1; }
		sleep 0.2
	done
done

url=http://${addrs# }
if [ "$INSTANCES" -eq 2 ]; then
	a=${addrs# }
	RLSLAB_LISTEN=127.0.0.1:$((BASEPORT + 10)) RLSLAB_A=${a%% *} RLSLAB_B=${a##* } \
		haproxy -db -f deploy/haproxy.cfg >"$work/haproxy.log" 2>&1 &
	started="$started $!"
	url=http://127.0.0.1:$((BASEPORT + 10))
	until curl -fs "$url/healthz" >/dev/null 2>&1; do sleep 0.2; done
fi

echo "bench: $N participants, $INSTANCES instance(s), $SERVERS server(s) (max_connections $MAXCONN each), at $url; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086 # lists of flags
if "$work/rlslab" bench workshop -url "$url" -participants "$N" $dbflags $pidflags "$@"; then
	status=0
else
	status=$?
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
i=1
while [ "$i" -le "$SERVERS" ]; do
	echo "server $i logged \"too many clients\" $(grep -c 'too many clients' "$work/pg/log$i" || true) times, \"remaining connection slots are reserved\" $(grep -c 'remaining connection slots are reserved' "$work/pg/log$i" || true) times"
	i=$((i + 1))
done
exit $status
