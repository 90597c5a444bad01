#!/usr/bin/env bash
#
# compare.sh - the side-by-side benchmark: smtp-sink (Postfix's discarding
# SMTP server, the ceiling for any server driven by this client), a private
# Postfix 3.7 instance with its durable queue, and vmrelay over kernel
# sockets, each driven by the same smtp-source load on loopback. Prints
# msgs/s, wall time, server CPU seconds per 1000 messages and the ratios, and
# writes the same table to bench/RESULTS.md (see report.py).
#
# Every figure is of verified, durable mail: a run counts only if smtp-source
# exits 0 with nothing on stderr and the server then holds every message
# (smtp-sink counted them; Postfix logged, relayed and dequeued them;
# vmrelay's spool lists them). Anything else stops the benchmark and says why.
#
# Each engine starts fresh in every round (new instance, empty queue) and
# gets a short warm-up, so rounds are independent; the engines take turns,
# their order rotating each round, so machine noise falls on all alike. All
# state lives in one work directory on a real disk (never tmpfs), and every
# process started here is stopped on exit, however the script ends.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PY=/usr/bin/python3
COMMAND="bench/compare.sh${*:+ $*}"

ROUNDS=3 MESSAGES=20000 SESSIONS=20 SIZE=6000 WORKERS=2 WARMUP=200 TIMEOUT=600
ONLY=sink,postfix,vmrelay
VMRELAY='' VMRELAY_SPOOL='' WORK='' KEEP=0 RESULTS='' NO_RESULTS=0

usage() {
	cat <<EOF
usage: bench/compare.sh [options]     (as root)
  --rounds N           measured runs per engine; the median is reported ($ROUNDS)
  --messages M         messages per measured run ($MESSAGES)
  --sessions S         parallel SMTP sessions, each reusing its connection ($SESSIONS)
  --size BYTES         payload bytes per message, headers not included ($SIZE)
  --only LIST          engines, comma separated, of: sink,postfix,vmrelay ($ONLY)
  --workers W          vmrelay worker threads ($WORKERS)
  --warmup M           messages sent before each measured run, 0 for none ($WARMUP)
  --timeout S          bound in seconds on each load run and queue drain ($TIMEOUT)
  --vmrelay PATH       use this vmrelay binary as is (default: build build-bench/
                       with --buildtype=release and use its dpdk-app/vmrelay)
  --vmrelay-spool PATH the spool lister (default: the one in the same build)
  --workdir DIR        keep instances and spools in DIR, and leave it there
                       (default: a new directory under /var/tmp, removed at exit)
  --keep               do not remove the default work directory
  --results FILE       write the table and run details to FILE (default:
                       bench/RESULTS.md when all three engines run)
  --no-results         write no results file
EOF
}

die() { echo "compare.sh: $*" >&2; exit 1; }
say() { echo "compare.sh: $*" >&2; }

need_uint() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3)) || die "$1 wants an integer >= $3, not '$2'"; }

while (($#)); do
	opt=$1
	case $opt in
	--rounds | --messages | --sessions | --size | --only | --workers | --warmup | \
	--timeout | --vmrelay | --vmrelay-spool | --workdir | --results)
		(($# >= 2)) || die "$opt needs a value"
		val=$2
		shift 2 ;;
	--keep) KEEP=1; shift; continue ;;
	--no-results) NO_RESULTS=1; shift; continue ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option '$opt'" ;;
	esac
	case $opt in
	--rounds) need_uint "$opt" "$val" 1; ROUNDS=$val ;;
	--messages) need_uint "$opt" "$val" 1; MESSAGES=$val ;;
	--sessions) need_uint "$opt" "$val" 1; SESSIONS=$val ;;
	--size) need_uint "$opt" "$val" 1; SIZE=$val ;;
	--workers) need_uint "$opt" "$val" 1; WORKERS=$val ;;
	--warmup) need_uint "$opt" "$val" 0; WARMUP=$val ;;
	--timeout) need_uint "$opt" "$val" 1; TIMEOUT=$val ;;
	--only) ONLY=$val ;;
	--vmrelay) VMRELAY=$val ;;
	--vmrelay-spool) VMRELAY_SPOOL=$val ;;
	--workdir) WORK=$val ;;
	--results) RESULTS=$val ;;
	esac
done

# Engines, in the order of the first round; "smtp-sink" is accepted for sink.
ENGINES=()
IFS=, read -r -a wanted <<<"$ONLY"
for e in "${wanted[@]}"; do
	[[ $e == smtp-sink ]] && e=sink
	case $e in
	sink | postfix | vmrelay) [[ " ${ENGINES[*]} " == *" $e "* ]] || ENGINES+=("$e") ;;
	*) die "--only: unknown engine '$e' (known: sink, postfix, vmrelay)" ;;
	esac
done
((${#ENGINES[@]})) || die "--only: no engine given"
has_engine() { [[ " ${ENGINES[*]} " == *" $1 "* ]]; }

if ((NO_RESULTS)); then
	RESULTS=
elif [[ -z $RESULTS ]] && ((${#ENGINES[@]} == 3)); then
	RESULTS=$BENCH_DIR/RESULTS.md
fi

# --- preconditions -----------------------------------------------------------

(($(id -u) == 0)) || die "must run as root (a private Postfix instance needs it)"
for tool in smtp-source smtp-sink postfix postconf ss timeout "$PY"; do
	command -v "$tool" >/dev/null || die "'$tool' not found: run scripts/deps.sh"
done
getent passwd postfix >/dev/null && getent group postdrop >/dev/null ||
	die "user 'postfix' or group 'postdrop' missing: run scripts/deps.sh (package postfix)"
getent passwd nobody >/dev/null || die "user 'nobody' missing (the sinks run as nobody)"

# --- process bookkeeping: everything started is stopped at exit -------------

CHILDREN=()        # our own background children: sinks, vmrelay
POSTFIX_DIRS=()    # private Postfix instances started
TEMP_WORK=0

# Stops one of our children: TERM, up to 10 s grace, then KILL. Returns its
# exit status (or 137 when it had to be killed).
stop_child() {
	local pid=$1 i rc=0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || rc=$?; return $rc; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "pid $pid ignored SIGTERM for 10 s: killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || rc=$?
	return $rc
}

# Stops a private Postfix instance and anything of it that lingers.
stop_postfix_dir() {
	local d=$1 master kids i
	master=$(tr -d ' \n' <"$d/queue/pid/master.pid" 2>/dev/null) || master=
	kids=
	[[ -n $master ]] && kids=$(ps -o pid= --ppid "$master" 2>/dev/null | tr '\n' ' ')
	timeout 60 postfix -c "$d/etc" stop >>"$d/stop.log" 2>&1 || true
	for ((i = 0; i < 100; i++)); do
		[[ -n $master ]] && kill -0 "$master" 2>/dev/null || break
		sleep 0.1
	done
	for pid in $master $kids; do
		if kill -0 "$pid" 2>/dev/null; then
			say "Postfix process $pid outlived 'postfix stop': killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

cleanup() {
	local rc=$? d pid
	trap - EXIT INT TERM
	for d in "${POSTFIX_DIRS[@]}"; do stop_postfix_dir "$d"; done
	for pid in "${CHILDREN[@]}"; do stop_child "$pid" || true; done
	if ((TEMP_WORK && !KEEP)); then
		rm -rf "$WORK"
	elif [[ -n $WORK ]]; then
		say "work directory kept: $WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'say "interrupted: stopping everything"; exit 130' INT
trap 'say "terminated: stopping everything"; exit 143' TERM

forget_child() {
	local pid=$1 i
	for i in "${!CHILDREN[@]}"; do [[ ${CHILDREN[$i]} == "$pid" ]] && unset "CHILDREN[$i]"; done
	return 0
}

forget_postfix() {
	local d=$1 i
	for i in "${!POSTFIX_DIRS[@]}"; do [[ ${POSTFIX_DIRS[$i]} == "$d" ]] && unset "POSTFIX_DIRS[$i]"; done
	return 0
}

# --- small helpers ------------------------------------------------------------

# A TCP port free on 127.0.0.1 right now (the kernel's choice).
free_port() {
	"$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:port, while pid lives. Checks the
# listening socket table rather than connecting, so no server sees a session.
wait_listen() {
	local port=$1 pid=$2 i
	for ((i = 0; i < 150; i++)); do
		[[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]] && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# Fills a template: subst IN OUT KEY=VALUE... replaces each @KEY@.
subst() {
	local in=$1 out=$2 kv script=
	shift 2
	for kv in "$@"; do script+="s|@${kv%%=*}@|${kv#*=}|g;"; done
	sed "$script" "$in" >"$out"
	! grep -q '@[A-Z_]*@' "$out" || die "$out: placeholder left unfilled"
}

# The number of messages smtp-sink -c has counted so far in its output file.
sink_count() {
	local n
	n=$(tr '\r' '\n' <"$1" | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2) || true
	echo "${n:-0}"
}

# Starts smtp-sink on port, counting into out; sets SINK_PID.
launch_sink() {
	local port=$1 out=$2 maxconn=$((SESSIONS + 16 > 256 ? SESSIONS + 16 : 256))
	smtp-sink -u nobody -c -m "$maxconn" "127.0.0.1:$port" "$maxconn" >"$out" 2>&1 &
	SINK_PID=$!
	CHILDREN+=("$SINK_PID")
	wait_listen "$port" "$SINK_PID" || die "smtp-sink did not start on port $port: $(tail -n 3 "$out")"
}

# Runs a command as a background child and waits for it, returning its exit
# status. A signal to this script then interrupts the wait at once (a
# foreground child would delay the traps until it ended) and cleanup() stops
# the child with the others.
run_child() {
	local pid rc=0
	"$@" &
	pid=$!
	CHILDREN+=("$pid")
	wait "$pid" || rc=$?
	forget_child "$pid"
	return $rc
}

# The last lines of a log, indented, for an error message.
tail_of() {
	if [[ -s $1 ]]; then
		tail -n "${2:-5}" "$1" | sed 's/^/    /'
	else
		echo "    ($1 is empty)"
	fi
}

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# The load: LOAD_ARGS plus -m COUNT and the target.
LOAD_ARGS=(-d -s "$SESSIONS" -l "$SIZE" -M bench.example -f bench@bench.example -t sink@sink.example)

# Sends count messages as warm-up (not measured). Dies if smtp-source fails.
warm_up() {
	local engine=$1 dir=$2 port=$3 count=$4 rc=0
	run_child timeout "$TIMEOUT" smtp-source "${LOAD_ARGS[@]}" -m "$count" "127.0.0.1:$port" \
		>"$dir/warmup.out" 2>"$dir/warmup.err" || rc=$?
	((rc == 0)) && [[ ! -s $dir/warmup.err ]] ||
		die "$engine: warm-up smtp-source failed (exit $rc):"$'\n'"$(tail_of "$dir/warmup.err")"
}

# --- vmrelay: build, start, verify, stop ---------------------------------------

# The path of the ninja target whose file name is $2, in build dir $1.
ninja_target() {
	ninja -C "$1" -t targets all 2>/dev/null | awk -F: -v name="$2" \
		'{ n = split($1, p, "/") } p[n] == name { print $1; exit }'
}

resolve_vmrelay() {
	if [[ -n $VMRELAY ]]; then
		[[ -x $VMRELAY ]] || die "--vmrelay $VMRELAY: not an executable file"
		if [[ -z $VMRELAY_SPOOL ]]; then
			# the build directory it came from: BUILD/dpdk-app/vmrelay
			VMRELAY_SPOOL=$(find "$(dirname "$VMRELAY")/.." -maxdepth 3 -name vmrelay-spool \
				-type f -perm -u+x -print -quit)
		fi
	else
		local build=$ROOT/build-bench vr sp
		command -v meson >/dev/null && command -v ninja >/dev/null ||
			die "meson and ninja are needed to build vmrelay: run scripts/deps.sh, or give --vmrelay"
		if [[ ! -f $build/build.ninja ]]; then
			say "setting up $build (release)"
			meson setup "$build" "$ROOT" --buildtype=release >"$WORK/meson-setup.log" 2>&1 ||
				die "meson setup $build failed:"$'\n'"$(tail_of "$WORK/meson-setup.log" 20)"
		fi
		vr=$(ninja_target "$build" vmrelay)
		[[ -n $vr ]] || die "$build has no vmrelay target"
		sp=$(ninja_target "$build" vmrelay-spool)
		[[ -n $sp || -n $VMRELAY_SPOOL ]] ||
			die "$build has no vmrelay-spool target (the spool module's lister); give --vmrelay-spool"
		say "building $vr${sp:+ and $sp} in $build"
		ninja -C "$build" "$vr" ${sp:+"$sp"} >"$WORK/ninja.log" 2>&1 ||
			die "building vmrelay failed:"$'\n'"$(grep -m 10 -E 'error|FAILED' "$WORK/ninja.log" | sed 's/^/    /')"
		VMRELAY=$build/$vr
		[[ -n $VMRELAY_SPOOL ]] || VMRELAY_SPOOL=$build/$sp
	fi
	[[ -n $VMRELAY_SPOOL && -x $VMRELAY_SPOOL ]] ||
		die "no vmrelay-spool next to $VMRELAY: give --vmrelay-spool PATH"
}

start_vmrelay() {
	local dir=$1 quota=$(((WARMUP + MESSAGES) * 2)) how st
	PORT=$(free_port)
	subst "$BENCH_DIR/vmrelay/relay.ini.in" "$dir/relay.ini" DIR="$dir" PORT="$PORT" \
		WORKERS="$WORKERS" MAX_CONN=$((SESSIONS + 16)) QUOTA="$quota" RATE=$((quota < 1000000 ? quota : 1000000))
	subst "$BENCH_DIR/vmrelay/accounts.jsonl.in" "$dir/accounts.jsonl" QUOTA="$quota"
	"$VMRELAY" -c "$dir/relay.ini" --io kernel >"$dir/vmrelay.log" 2>&1 &
	VR_PID=$!
	CHILDREN+=("$VR_PID")
	if ! wait_listen "$PORT" "$VR_PID"; then
		how="still not listening after 15 s"
		if ! kill -0 "$VR_PID" 2>/dev/null; then
			wait "$VR_PID" && st=0 || st=$?
			how="it exited with status $st"
		fi
		stop_child "$VR_PID" || true
		forget_child "$VR_PID"
		die "vmrelay ($VMRELAY) did not come up on 127.0.0.1:$PORT: $how; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	fi
	TREE=("$VR_PID")
}

settle_vmrelay() { :; }   # a 250 from vmrelay means on disk: nothing drains

# The spool must hold exactly the messages that got a 250, each of the bench
# account and at least the payload's size, and every record must check out.
verify_vmrelay() {
	local dir=$1 expect=$2 listed ours small
	kill -0 "$VR_PID" 2>/dev/null || die "vmrelay died during the run; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	"$VMRELAY_SPOOL" --json "$dir/spool" >"$dir/spool.json" 2>"$dir/spool.err" ||
		die "vmrelay-spool --json $dir/spool failed:"$'\n'"$(tail_of "$dir/spool.err")"
	listed=$(grep -c '^{"qid":' "$dir/spool.json") || true
	ours=$(grep -c '"account":"bench"' "$dir/spool.json") || true
	small=$(grep -oE '"size":[0-9]+' "$dir/spool.json" | cut -d: -f2 | awk -v s="$SIZE" '$1 < s' | wc -l)
	((listed == expect)) || die "vmrelay: the spool lists $listed messages, smtp-source got 250 for $expect"
	((ours == listed && small == 0)) ||
		die "vmrelay: of $listed spooled messages $((listed - ours)) are not the bench account's and $small are shorter than $SIZE bytes"
	"$VMRELAY_SPOOL" "$dir/spool" check >"$dir/spool.check" 2>&1 ||
		die "vmrelay-spool check found damage:"$'\n'"$(tail_of "$dir/spool.check")"
	vmrelay_log_clean "$dir"
	VERIFIED=$listed
}

# Every line of vmrelay's stderr must be one of its log records, none at err
# or warn: anything else (a sanitizer report, a stray printf) is a failure.
VR_LOG_LINE='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z (info|debug) '
vmrelay_log_clean() {
	local log=$1/vmrelay.log bad
	bad=$(grep -cvE "$VR_LOG_LINE" "$log") || true
	((bad == 0)) || die "vmrelay wrote $bad lines that are errors, warnings or no log records, e.g.:"$'\n'"$(grep -m 5 -vE "$VR_LOG_LINE" "$log" | sed 's/^/    /')"
}

stop_vmrelay() {
	local dir=$1 rc=0
	stop_child "$VR_PID" || rc=$?
	forget_child "$VR_PID"
	((rc == 0)) || die "vmrelay exited with status $rc on SIGTERM; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	vmrelay_log_clean "$dir"
}

# --- Postfix: a private instance, its queue drained into a relay smtp-sink ------

start_postfix() {
	local dir=$1 master qmgr='' i
	mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
	chown postfix "$dir/data"
	RELAY_PORT=$(free_port)
	launch_sink "$RELAY_PORT" "$dir/relay-sink.out"
	RELAY_PID=$SINK_PID
	PORT=$(free_port)
	subst "$BENCH_DIR/postfix/main.cf.in" "$dir/etc/main.cf" DIR="$dir" RELAY_PORT="$RELAY_PORT"
	subst "$BENCH_DIR/postfix/master.cf.in" "$dir/etc/master.cf" PORT="$PORT"
	# check creates the queue's subdirectories with their owners and modes
	timeout 60 postfix -c "$dir/etc" check >"$dir/check.log" 2>&1 ||
		die "postfix check failed:"$'\n'"$(tail_of "$dir/check.log")"
	POSTFIX_DIRS+=("$dir")
	timeout 60 postfix -c "$dir/etc" start >"$dir/start.log" 2>&1 ||
		die "postfix start failed:"$'\n'"$(tail_of "$dir/start.log")"$'\n'"$(tail_of "$dir/maillog")"
	master=$(tr -d ' \n' <"$dir/queue/pid/master.pid") || die "Postfix wrote no master.pid"
	wait_listen "$PORT" "$master" ||
		die "Postfix does not listen on 127.0.0.1:$PORT:"$'\n'"$(tail_of "$dir/maillog")"
	# The daemons run as mail_owner; qmgr, forked right after master, shows it.
	for ((i = 0; i < 50; i++)); do
		qmgr=$(pgrep -P "$master" -x qmgr) && break
		sleep 0.1
	done
	[[ -n $qmgr && $(ps -o user= -p "$qmgr" | xargs) == postfix ]] ||
		die "Postfix's qmgr is not running as user postfix"
	TREE=("$master")
}

# Lines of the instance's log matching an extended regexp.
pf_count() { grep -cE "$2" "$1/maillog" || true; }

# Waits until the relay sink has every message and Postfix logged its removal.
settle_postfix() {
	local dir=$1 expect=$2 deadline=$((SECONDS + TIMEOUT))
	while (($(sink_count "$dir/relay-sink.out") < expect ||
		$(pf_count "$dir" ': removed$') < expect)); do
		((SECONDS < deadline)) ||
			die "Postfix: queue not drained after $TIMEOUT s: relay sink has $(sink_count "$dir/relay-sink.out") of $expect"
		sleep 0.2
	done
}

# Log lines that say something went wrong, and two kinds among them that
# harm no mail and are only noted in RESULTS.md: qmgr saying the queue backs
# up ("mail for X is using up N of N active queue entries" and the advice
# that follows, see qmgr_clog_warn_time), i.e. mail arrives faster than it is
# relayed; and cleanup finding the file system clock ahead of the system
# clock (virtual machines), which costs Postfix a utime() per queue file.
PF_BAD='reject:|status=(deferred|bounced|expired)|(warning|error|fatal|panic):'
PF_CLOG='mail for .* is using up [0-9]+ of [0-9]+ active queue entries|this may slow down other mail|you may need |so that Postfix |please avoid flushing the whole queue|lots of deferred mail|to turn off these warnings'
PF_BACKLOG="/qmgr\\[[0-9]+\\]: warning: ($PF_CLOG)"
PF_CLOCK='/cleanup\[[0-9]+\]: warning: (file system clock is .* ahead of local clock|resetting file time stamps)'
PF_BACKLOG_RUNS=0 PF_CLOCK_RUNS=0

verify_postfix() {
	local dir=$1 expect=$2 accepted sent relayed queued errors
	settle_postfix "$dir" "$expect"
	accepted=$(pf_count "$dir" '/cleanup\[[0-9]+\]: [0-9A-F]+: message-id=')
	sent=$(pf_count "$dir" '/smtp\[[0-9]+\]: .* status=sent ')
	relayed=$(sink_count "$dir/relay-sink.out")
	errors=$(grep -E "$PF_BAD" "$dir/maillog" | grep -cvE "$PF_BACKLOG|$PF_CLOCK") || true
	queued=$(find "$dir/queue/"{incoming,active,deferred,hold,maildrop,corrupt} -type f | wc -l)
	((errors == 0)) || die "Postfix logged $errors errors, warnings or rejects, e.g.:"$'\n'"$(grep -E "$PF_BAD" "$dir/maillog" | grep -m 3 -vE "$PF_BACKLOG|$PF_CLOCK")"
	((accepted == expect && sent == expect && relayed == expect && queued == 0)) ||
		die "Postfix: expected $expect messages: accepted $accepted, sent $sent, relay sink got $relayed, $queued left in the queue"
	[[ $(pf_count "$dir" "$PF_BACKLOG") == 0 ]] || PF_BACKLOG_RUNS=$((PF_BACKLOG_RUNS + 1))
	[[ $(pf_count "$dir" "$PF_CLOCK") == 0 ]] || PF_CLOCK_RUNS=$((PF_CLOCK_RUNS + 1))
	VERIFIED=$accepted
}

stop_postfix() {
	local dir=$1
	stop_postfix_dir "$dir"
	forget_postfix "$dir"
	stop_child "$RELAY_PID" || true
	forget_child "$RELAY_PID"
}

# --- smtp-sink: the ceiling -----------------------------------------------------

start_sink() {
	local dir=$1
	PORT=$(free_port)
	launch_sink "$PORT" "$dir/sink.out"
	CEIL_PID=$SINK_PID
	TREE=("$CEIL_PID")
}

settle_sink() { :; }

verify_sink() {
	local dir=$1 expect=$2 got
	got=$(sink_count "$dir/sink.out")
	((got == expect)) || die "smtp-sink counted $got messages, expected $expect"
	VERIFIED=$got
}

stop_sink() {
	stop_child "$CEIL_PID" || true
	forget_child "$CEIL_PID"
}

# --- one measured run -------------------------------------------------------------

name_of() { [[ $1 == sink ]] && echo smtp-sink || echo "$1"; }

# run_engine ENGINE ROUND: fresh instance, warm-up, measured load, checks, stop.
run_engine() {
	local e=$1 round=$2 name dir total=0 fsync_ms wall cpu rc
	name=$(name_of "$e")
	dir=$WORK/$e-r$round
	rm -rf "$dir"    # a --workdir used before: start from nothing
	mkdir -p "$dir"
	"start_$e" "$dir"
	if ((WARMUP > 0)); then
		warm_up "$name" "$dir" "$PORT" "$WARMUP"
		total=$WARMUP
		"settle_$e" "$dir" "$total"
	fi
	# What a durable commit costs on the disk right now: it moves with other
	# I/O on the machine, and a durable queue's throughput moves with it.
	fsync_ms=$("$PY" "$BENCH_DIR/measure.py" fsync "$dir")
	run_child "$PY" "$BENCH_DIR/measure.py" run "${TREE[@]/#/--tree=}" --timeout "$TIMEOUT" -- \
		smtp-source "${LOAD_ARGS[@]}" -m "$MESSAGES" "127.0.0.1:$PORT" \
		>"$dir/measure.out" 2>"$dir/load.err" ||
		die "$name: measure.py failed:"$'\n'"$(tail_of "$dir/load.err")"
	read -r wall cpu rc <<<"$(sed -E 's/[a-z_]+=//g' "$dir/measure.out")"
	((rc != 124)) || die "$name: smtp-source timed out after $TIMEOUT s:"$'\n'"$(tail_of "$dir/load.err")"
	((rc == 0)) || die "$name: smtp-source exited with status $rc:"$'\n'"$(tail_of "$dir/load.err")"
	[[ ! -s $dir/load.err ]] || die "$name: smtp-source reported errors:"$'\n'"$(tail_of "$dir/load.err")"
	total=$((total + MESSAGES))
	"verify_$e" "$dir" "$total"
	"stop_$e" "$dir"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$MESSAGES" "$wall" "$cpu" "$fsync_ms" >>"$RUNS"
	say "$(awk -v r="$round" -v n="$name" -v m="$MESSAGES" -v w="$wall" -v c="$cpu" -v f="$fsync_ms" -v v="$VERIFIED" \
		'BEGIN { printf "round %d: %-9s %6.0f msgs/s  %6.2f s  server CPU %5.2f s  fdatasync %.2f ms  (%d messages verified)", r, n, m / w, w, c, f, v }')"
}

# --- the machine, as RESULTS.md describes it ----------------------------------------

# "SOURCE FSTYPE on MODEL (rotational flag R)" for the disk holding $1.
disk_of() {
	local src fstype dev base what='' rot
	read -r src fstype < <(df --output=source,fstype "$1" | tail -n 1)
	dev=$(basename "$(readlink -f "$src")")
	base=$dev
	[[ -e /sys/class/block/$dev/partition ]] &&
		base=$(basename "$(dirname "$(readlink -f "/sys/class/block/$dev")")")
	if [[ -r /sys/block/$base/device/model ]]; then
		what=$(xargs <"/sys/block/$base/device/model")
	elif [[ $(cat "/sys/block/$base/device/vendor" 2>/dev/null) == 0x1af4 ]]; then
		what=virtio-blk
	fi
	rot=$(cat "/sys/block/$base/queue/rotational" 2>/dev/null) || rot='?'
	echo "$src $fstype${what:+ on $what} (rotational flag $rot)"
}

etc_postfix_sum() { find /etc/postfix -type f -print0 2>/dev/null | sort -z | xargs -0 -r md5sum | md5sum; }

# --- main --------------------------------------------------------------------------

if [[ -z $WORK ]]; then
	WORK=$(mktemp -d /var/tmp/vmrelay-bench.XXXXXX)
	TEMP_WORK=1
else
	mkdir -p "$WORK"
	WORK=$(cd "$WORK" && pwd)
fi
# Postfix's daemons (user postfix) must reach their queue below it.
chmod 755 "$WORK"
case $(stat -f -c %T "$WORK") in
tmpfs | ramfs) die "$WORK is on $(stat -f -c %T "$WORK"): the queues must be on a real disk" ;;
esac
RUNS=$WORK/runs.tsv META=$WORK/meta.tsv
: >"$RUNS"
: >"$META"
ETC_POSTFIX_BEFORE=$(etc_postfix_sum)

if has_engine vmrelay; then
	resolve_vmrelay
	# Fail now, not after the other engines' rounds, if vmrelay cannot start.
	rm -rf "$WORK/vmrelay-preflight"
	mkdir -p "$WORK/vmrelay-preflight"
	start_vmrelay "$WORK/vmrelay-preflight"
	stop_vmrelay "$WORK/vmrelay-preflight"
fi

meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta loadavg_start "$(cut -d' ' -f1 /proc/loadavg)"
meta nproc "$(nproc)"
meta cpu "$(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
meta kernel "$(uname -srm)"
meta disk "$(disk_of "$WORK")"
meta fsync_ms_start "$("$PY" "$BENCH_DIR/measure.py" fsync "$WORK")"
meta command "$COMMAND"
meta load "smtp-source ${LOAD_ARGS[*]} -m $MESSAGES 127.0.0.1:PORT"
meta rounds "$ROUNDS"
meta warmup "$WARMUP"
PF_VERSION=$(postconf -d -h mail_version)
has_engine sink && meta engine_note "smtp-sink (Postfix $PF_VERSION's discarding server, -c counter): accepts and throws away; every run its counter showed every message."
has_engine postfix && meta engine_note "Postfix $PF_VERSION, a private instance (own config, queue and data directories under the work directory; master as root, daemons as user postfix; main.cf below, master.cf from bench/postfix/master.cf.in: Debian's services without chroot), durable queue (cleanup fsyncs each queue file before the 250), relaying to a second smtp-sink; every run: its log showed each message accepted by cleanup and status=sent, no reject, deferral or error and no warning other than those noted below, the relay sink counted every message and the queue was empty."
has_engine vmrelay && meta engine_note "vmrelay at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- engine dpdk-app include 2>/dev/null || echo ' (with uncommitted changes)'), kernel sockets, $WORKERS workers (configuration below); every run: \`vmrelay-spool --json\` listed exactly the messages smtp-source got a 250 for (warm-up included), all of the bench account and of full size, \`vmrelay-spool DIR check\` found every record intact, and the log had no err or warn line."

say "work directory $WORK; engines: ${ENGINES[*]}; $ROUNDS rounds of $MESSAGES messages"
for ((round = 1; round <= ROUNDS; round++)); do
	n=${#ENGINES[@]}
	for ((i = 0; i < n; i++)); do
		run_engine "${ENGINES[$(((i + round - 1) % n))]}" "$round"
	done
done

if has_engine postfix; then
	while IFS= read -r line; do meta postfix_conf "$line"; done < <(postconf -c "$WORK/postfix-r1/etc" -n |
		sed -E "s|$WORK/postfix-r1|\$DIR|g; s|^(relayhost = .*:)[0-9]+|\1\$RELAY_PORT|")
fi
if has_engine vmrelay; then
	while IFS= read -r line; do meta vmrelay_conf "$line"; done < <(grep -v '^;' "$WORK/vmrelay-r1/relay.ini" |
		sed -E "s|$WORK/vmrelay-r1|\$DIR|g; s|^(listen = .*:)[0-9]+|\1\$PORT|")
fi
((PF_CLOCK_RUNS == 0)) || meta note "In $PF_CLOCK_RUNS of $ROUNDS Postfix runs cleanup warned that the file system clock was ahead of the local clock and reset queue file time stamps (\"this hurts performance\"): a trait of this machine that slows Postfix a little."
((PF_BACKLOG_RUNS == 0)) || meta note "In $PF_BACKLOG_RUNS of $ROUNDS Postfix runs qmgr warned that the relay's active queue entries were all in use: mail arrived faster than Postfix relayed it and its queue backed up; every message was still relayed, as checked."
meta loadavg_end "$(cut -d' ' -f1 /proc/loadavg)"
meta fsync_ms_end "$("$PY" "$BENCH_DIR/measure.py" fsync "$WORK")"
[[ $(etc_postfix_sum) == "$ETC_POSTFIX_BEFORE" ]] || die "/etc/postfix changed during the run: this is a bug in compare.sh"

echo
"$PY" "$BENCH_DIR/report.py" "$RUNS" "$META" ${RESULTS:+--markdown "$RESULTS"}
[[ -z $RESULTS ]] || say "wrote $RESULTS"
