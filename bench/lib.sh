# lib.sh - what bench/compare.sh and bench/scale.sh share (sourced, not run):
# the command line's common options, process bookkeeping that stops
# everything started, however the script ends; the load generator (smtp-source or vmrelay-bench); and, for each
# engine (smtp-sink, a private Postfix, vmrelay), start / settle / verify /
# stop. The sourcing script sets PROG (its name, for messages) and the run
# parameters the engines read: SESSIONS, SIZE, MESSAGES, WARMUP, WORKERS,
# TIMEOUT, WORK, KEEP, VMRELAY, VMRELAY_SPOOL, LOAD, VMRELAY_BENCH; and,
# for a path other than loopback, SERVER_ADDR (where the servers listen)
# and LOAD_WRAP (the command the load generator runs under).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
PY=/usr/bin/python3

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }

SERVER_ADDR=${SERVER_ADDR:-127.0.0.1}
CLIENT_ADDR=${CLIENT_ADDR:-127.0.0.1}
LOAD_WRAP=()
# Set by bench/e2e.sh: Postfix settings added to main.cf (PF_EXTRA_CONF),
# the relay sinks keeping what they get (RELAY_DUMP=1), vmrelay delivering
# to a relay sink of its own (VR_DELIVER=1) and signing with this Ed25519
# key (VR_DKIM_KEY), with VR_DELIVERY_WORKERS delivery threads (empty:
# vmrelay's default). Without VR_DELIVER its mail stays in its spool.
PF_EXTRA_CONF=() RELAY_DUMP='' VR_DELIVER='' VR_DKIM_KEY='' VR_DELIVERY_WORKERS=''
VR_RELAY_PID=''    # the relay sink start_vmrelay started, if any

. "$BENCH_DIR/netns.sh"
. "$BENCH_DIR/dpdk.sh"

need_uint() { [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3)) || die "$1 wants an integer >= $3, not '$2'"; }

# Root, the tools and the users a run needs.
check_preconditions() {
	(($(id -u) == 0)) || die "must run as root (a private Postfix instance needs it)"
	for tool in smtp-source smtp-sink postfix postconf ss timeout "$PY"; do
		command -v "$tool" >/dev/null || die "'$tool' not found: run scripts/deps.sh"
	done
	getent passwd postfix >/dev/null && getent group postdrop >/dev/null ||
		die "user 'postfix' or group 'postdrop' missing: run scripts/deps.sh (package postfix)"
	getent passwd nobody >/dev/null || die "user 'nobody' missing (the sinks run as nobody)"
}

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
	for d in "${SINK_FS[@]}"; do umount "$d" 2>/dev/null || true; done
	dpdk_link_down
	netns_down
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

# A far sink's message directory on a tmpfs of its own (see launch_sink),
# unmounted by sink_fs_umount or at exit.
SINK_FS=()
sink_fs_mount() {
	mkdir -p "$1"
	mount -t tmpfs -o size=2g,mode=0755 vr-bench-sink "$1" || die "cannot mount a tmpfs on $1"
	SINK_FS+=("$1")
}
sink_fs_umount() {
	local i
	umount "$1" || die "cannot unmount $1"
	for i in "${!SINK_FS[@]}"; do [[ ${SINK_FS[$i]} == "$1" ]] && unset "SINK_FS[$i]"; done
	rmdir "$1"
}

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

# A TCP port free on address $1 (default 127.0.0.1) right now (the kernel's choice).
free_port() {
	"$PY" -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' \
		"${1:-127.0.0.1}"
}

# Waits until something listens on port, while pid lives. Checks the
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

# Starts smtp-sink on addr:port, counting into out; sets SINK_PID. With a
# fourth argument, a directory, it also keeps every message there (-D: the
# sink, user nobody, appends to files it names), as bench/e2e.sh's far sink
# does to check the signatures. That directory is a tmpfs of its own
# (sink_fs_mount): the sink writes each message to a temporary file beside
# its dump first (a create and an unlink per message), and on the work
# directory's ext4, which skips inodes deleted in the last minutes when it
# allocates one and reads each one's deletion time to do so, those creates
# cost up to 4x as much after a run that deleted tens of thousands of files
# (a Postfix queue, the last sink's temporary files). The far sink, a remote
# MX in real life, is what bounds a vmrelay run: its figure then depended on
# which run came before it.
launch_sink() {
	local addr=$1 port=$2 out=$3 dump=${4:-} maxconn=$((SESSIONS + 16 > 256 ? SESSIONS + 16 : 256))
	if [[ -n $dump ]]; then
		sink_fs_mount "$dump"
		chown nobody "$dump"
	fi
	smtp-sink -u nobody -c ${dump:+-D "$dump/mail"} -m "$maxconn" "$addr:$port" "$maxconn" >"$out" 2>&1 &
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

# --- the load: smtp-source (the issue-2 figures are defined with it) or vmrelay-bench

LOAD=${LOAD:-smtp-source}
LOAD_DURATION=''    # vmrelay-bench only: seconds instead of a message count

# load_cmd COUNT PORT REPORT: sets LOAD_CMD to the command that sends COUNT
# messages (or runs LOAD_DURATION seconds) to SERVER_ADDR:PORT, run under
# LOAD_WRAP (on the veth path: in the client's namespace). vmrelay-bench
# writes its JSON report to REPORT and nothing to stderr unless a message
# failed; both reuse connections, as in production.
load_cmd() {
	local count=$1 port=$2 report=$3
	if [[ $LOAD == smtp-source ]]; then
		LOAD_CMD=(smtp-source -d -s "$SESSIONS" -l "$SIZE" -M bench.example
			-f bench@bench.example -t sink@sink.example -m "$count" "$SERVER_ADDR:$port")
	else
		LOAD_CMD=("$VMRELAY_BENCH" --target "$SERVER_ADDR:$port" --sessions "$SESSIONS"
			--size "$SIZE" --reuse --helo bench.example --from bench@bench.example
			--to sink@sink.example --timeout "$TIMEOUT" --json --output "$report")
		if [[ -n $LOAD_DURATION ]]; then
			LOAD_CMD+=(--duration "$LOAD_DURATION")
		else
			LOAD_CMD+=(--messages "$count")
		fi
	fi
	LOAD_CMD=("${LOAD_WRAP[@]}" "${LOAD_CMD[@]}")
}

# The load as RESULTS files show it.
load_describe() {
	load_cmd "$1" PORT REPORT
	local shown=("${LOAD_CMD[@]}") gen=${#LOAD_WRAP[@]}
	[[ $LOAD == smtp-source ]] || shown[gen]=vmrelay-bench
	# the namespace's name changes every run: show its pattern
	[[ -z $NS_NAME ]] || shown=("${shown[@]/#$NS_NAME/vrb-PID}")
	echo "${shown[*]}"
}

# The messages a vmrelay-bench report says were accepted.
report_accepted() {
	"$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["messages"]["accepted"])' "$1"
}

# Sends count messages as warm-up (not measured). Dies if the load fails.
warm_up() {
	local engine=$1 dir=$2 port=$3 count=$4 rc=0
	load_cmd "$count" "$port" "$dir/warmup.json"
	run_child timeout "$TIMEOUT" "${LOAD_CMD[@]}" >"$dir/warmup.out" 2>"$dir/warmup.err" || rc=$?
	((rc == 0)) && [[ ! -s $dir/warmup.err ]] ||
		die "$engine: warm-up $LOAD failed (exit $rc):"$'\n'"$(tail_of "$dir/warmup.err")"
}

# The vmrelay-bench binary: VMRELAY_BENCH as given, or built in build-bench/.
resolve_bench() {
	[[ $LOAD == vmrelay-bench ]] || return 0
	if [[ -n $VMRELAY_BENCH ]]; then
		[[ -x $VMRELAY_BENCH ]] || die "--vmrelay-bench $VMRELAY_BENCH: not an executable file"
		return 0
	fi
	local build=$ROOT/build-bench target
	setup_build "$build"
	target=$(ninja_target "$build" vmrelay-bench)
	[[ -n $target ]] || die "$build has no vmrelay-bench target"
	say "building $target in $build"
	ninja -C "$build" "$target" >"$WORK/ninja-bench.log" 2>&1 ||
		die "building vmrelay-bench failed:"$'\n'"$(grep -m 10 -E 'error|FAILED' "$WORK/ninja-bench.log" | sed 's/^/    /')"
	VMRELAY_BENCH=$build/$target
}

# --- vmrelay: build, start, verify, stop ---------------------------------------

# The path of the ninja target whose file name is $2, in build dir $1. awk
# reads to the end: exiting early would kill ninja with SIGPIPE (pipefail).
ninja_target() {
	ninja -C "$1" -t targets all 2>/dev/null | awk -F: -v name="$2" \
		'{ n = split($1, p, "/") } p[n] == name && !found { print $1; found = 1 }'
}

# Configures build dir $1 (release) unless it is already.
setup_build() {
	command -v meson >/dev/null && command -v ninja >/dev/null ||
		die "meson and ninja are needed to build vmrelay: run scripts/deps.sh, or give --vmrelay"
	if [[ -f $1/build.ninja ]]; then
		# meson.build files changed since: regenerate, so new targets exist
		ninja -C "$1" build.ninja >"$WORK/meson-regen.log" 2>&1 ||
			die "regenerating $1 failed:"$'\n'"$(tail_of "$WORK/meson-regen.log" 20)"
		return 0
	fi
	say "setting up $1 (release)"
	meson setup "$1" "$ROOT" --buildtype=release >"$WORK/meson-setup.log" 2>&1 ||
		die "meson setup $1 failed:"$'\n'"$(tail_of "$WORK/meson-setup.log" 20)"
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
		setup_build "$build"
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
	local dir=$1 how st
	local smarthost=127.0.0.1:1 dkim=''
	PORT=$(free_port "$SERVER_ADDR")
	VR_RELAY_PID=
	if [[ -n $VR_DELIVER ]]; then
		RELAY_PORT=$(free_port)
		launch_sink 127.0.0.1 "$RELAY_PORT" "$dir/relay-sink.out" ${RELAY_DUMP:+"$dir/relay.dump"}
		VR_RELAY_PID=$SINK_PID
		smarthost=127.0.0.1:$RELAY_PORT
	fi
	[[ -z $VR_DKIM_KEY ]] ||
		dkim=',"dkim":{"bench.example":[{"selector":"ed1","algorithm":"ed25519-sha256","key":"'$VR_DKIM_KEY'"}]}'
	subst "$BENCH_DIR/vmrelay/relay.ini.in" "$dir/relay.ini" DIR="$dir" PORT="$PORT" \
		WORKERS="$WORKERS" MAX_CONN=$((SESSIONS + 16)) SMARTHOST="$smarthost"
	if [[ -n $VR_DELIVERY_WORKERS ]]; then
		sed -i "/^\[delivery\]\$/a workers = $VR_DELIVERY_WORKERS" "$dir/relay.ini"
		grep -A 1 '^\[delivery\]$' "$dir/relay.ini" | grep -q "^workers = $VR_DELIVERY_WORKERS\$" ||
			die "bench/vmrelay/relay.ini.in changed: cannot set [delivery] workers"
	fi
	cp "$BENCH_DIR/vmrelay/accounts.jsonl.in" "$dir/accounts.jsonl"
	if [[ -n $dkim ]]; then
		sed -i -E 's|("id":"bench",.*"unlimited":true)\}$|\1'"$dkim"'}|' "$dir/accounts.jsonl"
		grep -q '"dkim":{"bench.example"' "$dir/accounts.jsonl" ||
			die "bench/vmrelay/accounts.jsonl.in changed: cannot give the bench account its DKIM key"
	fi
	if [[ $SERVER_ADDR != 127.0.0.1 ]]; then
		# The templates are for loopback: listen on SERVER_ADDR and let the
		# bench account send from the client's address as well.
		sed -i -E "s|^listen = 127\.0\.0\.1:|listen = $SERVER_ADDR:|" "$dir/relay.ini"
		sed -i -E "s|(\"id\":\"bench\",\"ips\":\[)|\1\"$CLIENT_ADDR\",|" "$dir/accounts.jsonl"
		grep -q "^listen = $SERVER_ADDR:$PORT\$" "$dir/relay.ini" &&
			grep -q "\"ips\":\[\"$CLIENT_ADDR\"," "$dir/accounts.jsonl" ||
			die "bench/vmrelay templates changed: cannot set listen = $SERVER_ADDR and the bench account's ips"
	fi
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
		die "vmrelay ($VMRELAY) did not come up on $SERVER_ADDR:$PORT: $how; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	fi
	TREE=("$VR_PID")
}

# Whether the instance in $1 delivers to a relay sink start_vmrelay started
# for it (VR_DELIVER); an instance started otherwise (bench/dpdk.sh) does not.
vr_delivers() { [[ -e $1/relay-sink.out ]]; }

# A 250 from vmrelay means on disk; delivering, it has settled once the
# relay sink has every message, as Postfix's queue has.
settle_vmrelay() {
	local dir=$1 expect=$2 deadline=$((SECONDS + TIMEOUT))
	vr_delivers "$dir" || return 0
	while (($(sink_count "$dir/relay-sink.out") < expect)); do
		((SECONDS < deadline)) ||
			die "vmrelay: not delivered after $TIMEOUT s: relay sink has $(sink_count "$dir/relay-sink.out") of $expect"
		kill -0 "$VR_PID" 2>/dev/null || die "vmrelay died; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
		sleep 0.2
	done
}

# Not delivering: the spool must hold exactly the messages that got a 250,
# each of the bench account and at least the payload's size. Delivering:
# the relay sink got every message and the log shows each delivered once
# (result=sent), no other attempt. Either way every record checks out.
verify_vmrelay() {
	local dir=$1 expect=$2 listed ours small sent others
	kill -0 "$VR_PID" 2>/dev/null || die "vmrelay died during the run; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	if vr_delivers "$dir"; then
		settle_vmrelay "$dir" "$expect"
		sent=$(grep -cE ' event=delivery .* result=sent ' "$dir/vmrelay.log") || true
		others=$(grep ' event=delivery ' "$dir/vmrelay.log" | grep -cv ' result=sent ') || true
		((sent == expect && others == 0)) ||
			die "vmrelay: expected $expect deliveries: $sent logged result=sent, $others other attempts"
		VERIFIED=$sent
	else
		"$VMRELAY_SPOOL" --json "$dir/spool" >"$dir/spool.json" 2>"$dir/spool.err" ||
			die "vmrelay-spool --json $dir/spool failed:"$'\n'"$(tail_of "$dir/spool.err")"
		listed=$(grep -c '^{"qid":' "$dir/spool.json") || true
		ours=$(grep -c '"account":"bench"' "$dir/spool.json") || true
		small=$(grep -oE '"size":[0-9]+' "$dir/spool.json" | cut -d: -f2 | awk -v s="$SIZE" '$1 < s' | wc -l)
		((listed == expect)) || die "vmrelay: the spool lists $listed messages, $LOAD got 250 for $expect"
		((ours == listed && small == 0)) ||
			die "vmrelay: of $listed spooled messages $((listed - ours)) are not the bench account's and $small are shorter than $SIZE bytes"
		VERIFIED=$listed
	fi
	"$VMRELAY_SPOOL" "$dir/spool" check >"$dir/spool.check" 2>&1 ||
		die "vmrelay-spool check found damage:"$'\n'"$(tail_of "$dir/spool.check")"
	vmrelay_log_clean "$dir"
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
	if [[ -n $VR_RELAY_PID ]]; then
		stop_child "$VR_RELAY_PID" || true
		forget_child "$VR_RELAY_PID"
	fi
	((rc == 0)) || die "vmrelay exited with status $rc on SIGTERM; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	vmrelay_log_clean "$dir"
}

# --- Postfix: a private instance, its queue drained into a relay smtp-sink ------

start_postfix() {
	local dir=$1 master qmgr='' i
	mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
	chown postfix "$dir/data"
	RELAY_PORT=$(free_port)
	launch_sink 127.0.0.1 "$RELAY_PORT" "$dir/relay-sink.out" ${RELAY_DUMP:+"$dir/relay.dump"}
	RELAY_PID=$SINK_PID
	PORT=$(free_port "$SERVER_ADDR")
	subst "$BENCH_DIR/postfix/main.cf.in" "$dir/etc/main.cf" DIR="$dir" RELAY_PORT="$RELAY_PORT"
	subst "$BENCH_DIR/postfix/master.cf.in" "$dir/etc/master.cf" PORT="$PORT"
	if [[ $SERVER_ADDR != 127.0.0.1 ]]; then
		# The templates are for loopback: smtpd on SERVER_ADDR, relaying
		# for the client's address too (the queue still drains to 127.0.0.1).
		sed -i -E "s|^127\.0\.0\.1:$PORT |$SERVER_ADDR:$PORT |" "$dir/etc/master.cf"
		grep -q "^$SERVER_ADDR:$PORT " "$dir/etc/master.cf" ||
			die "bench/postfix/master.cf.in changed: cannot move smtpd to $SERVER_ADDR"
		postconf -c "$dir/etc" -e "mynetworks = 127.0.0.0/8 $CLIENT_ADDR/32" ||
			die "postconf mynetworks failed"
	fi
	# Postfix listens with a backlog of its process limit (100 as shipped):
	# sessions beyond it hang, half-open, so many sessions need a higher one.
	if ((${PF_PROCESS_LIMIT:-0})); then
		postconf -c "$dir/etc" -e "default_process_limit = $PF_PROCESS_LIMIT" ||
			die "postconf default_process_limit failed"
	fi
	# bench/e2e.sh's settings on top (the DKIM milter), "name = value" each
	local kv
	for kv in "${PF_EXTRA_CONF[@]}"; do
		postconf -c "$dir/etc" -e "$kv" || die "postconf '$kv' failed"
	done
	# check creates the queue's subdirectories with their owners and modes
	timeout 60 postfix -c "$dir/etc" check >"$dir/check.log" 2>&1 ||
		die "postfix check failed:"$'\n'"$(tail_of "$dir/check.log")"
	POSTFIX_DIRS+=("$dir")
	timeout 60 postfix -c "$dir/etc" start >"$dir/start.log" 2>&1 ||
		die "postfix start failed:"$'\n'"$(tail_of "$dir/start.log")"$'\n'"$(tail_of "$dir/maillog")"
	master=$(tr -d ' \n' <"$dir/queue/pid/master.pid") || die "Postfix wrote no master.pid"
	wait_listen "$PORT" "$master" ||
		die "Postfix does not listen on $SERVER_ADDR:$PORT:"$'\n'"$(tail_of "$dir/maillog")"
	# The daemons run as mail_owner; qmgr, forked right after master, shows
	# it once it has dropped root, a moment after it appears.
	for ((i = 0; i < 150; i++)); do
		qmgr=$(pgrep -P "$master" -x qmgr) &&
			[[ $(ps -o user= -p "$qmgr" | xargs) == postfix ]] && break
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
	PORT=$(free_port "$SERVER_ADDR")
	launch_sink "$SERVER_ADDR" "$PORT" "$dir/sink.out"
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

name_of() {
	case $1 in
	sink) echo smtp-sink ;;
	dpdk) echo vmrelay-dpdk ;;
	*) echo "$1" ;;
	esac
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

# WORK: the given directory, or a new one under /var/tmp (removed at exit);
# never on tmpfs, where a durable queue's fsync costs nothing.
prepare_workdir() {
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
}

# --- the command line (compare.sh, scale.sh, e2e.sh) -----------------------------

# parse_args ARG...: the script's command line. VALUE_OPTS lists the options
# that take a value and FLAG_OPTS the flags beyond --keep, --no-results and
# --help (usage, then exit). Each option goes first to the script's own
# set_opt OPT [VALUE], which returns 1 for one it leaves to common_opt; an
# option in neither list is an error after the usage.
parse_args() {
	local opt values=" ${VALUE_OPTS//[$'\n\t']/ } "
	while (($#)); do
		opt=$1
		if [[ $values == *" $opt "* ]]; then
			(($# >= 2)) || die "$opt needs a value"
			set_opt "$opt" "$2" || common_opt "$opt" "$2"
			shift 2
			continue
		fi
		case $opt in
		--keep) KEEP=1 ;;
		--no-results) NO_RESULTS=1 ;;
		-h | --help) usage; exit 0 ;;
		*)
			[[ " $FLAG_OPTS " == *" $opt "* ]] || { usage >&2; die "unknown option '$opt'"; }
			set_opt "$opt" ;;
		esac
		shift
	done
}

# common_opt OPT VALUE: the options that mean the same in every script.
common_opt() {
	case $1 in
	--rounds) need_uint "$1" "$2" 1; ROUNDS=$2 ;;
	--messages) need_uint "$1" "$2" 1; MESSAGES=$2 ;;
	--sessions) need_uint "$1" "$2" 1; SESSIONS=$2 ;;
	--size) need_uint "$1" "$2" 1; SIZE=$2 ;;
	--workers) need_uint "$1" "$2" 1; WORKERS=$2 ;;
	--warmup) need_uint "$1" "$2" 0; WARMUP=$2 ;;
	--timeout) need_uint "$1" "$2" 1; TIMEOUT=$2 ;;
	--only) ONLY=$2 ;;
	--vmrelay) VMRELAY=$2 ;;
	--vmrelay-spool) VMRELAY_SPOOL=$2 ;;
	--vmrelay-bench) VMRELAY_BENCH=$2 ;;
	--workdir) WORK=$2 ;;
	--results) RESULTS=$2 ;;
	--load)
		[[ $2 == smtp-source || $2 == vmrelay-bench ]] ||
			die "--load: '$2' is neither smtp-source nor vmrelay-bench"
		LOAD=$2 ;;
	--path)
		[[ $2 == loopback || $2 == veth ]] ||
			die "--path: '$2' is neither loopback nor veth"
		NET_PATH=$2 ;;
	*) die "option $1 has no handler: a bug in $PROG" ;;
	esac
}

# For --path veth: the load in a namespace of its own across a veth pair
# (netns.sh), the servers on the root namespace's end.
use_net_path() {
	[[ $NET_PATH == veth ]] || return 0
	netns_up
	SERVER_ADDR=$NS_HOST_ADDR CLIENT_ADDR=$NS_PEER_ADDR
	LOAD_WRAP=(ip netns exec "$NS_NAME")
}

# parse_engines LIST: sets ENGINES from --only's comma-separated list, in
# its order, without repeats; "smtp-sink" is accepted for sink.
parse_engines() {
	local e wanted
	ENGINES=()
	IFS=, read -r -a wanted <<<"$1"
	for e in "${wanted[@]}"; do
		[[ $e == smtp-sink ]] && e=sink
		[[ $e == vmrelay-dpdk ]] && e=dpdk
		case $e in
		sink | postfix | vmrelay | dpdk) [[ " ${ENGINES[*]} " == *" $e "* ]] || ENGINES+=("$e") ;;
		*) die "--only: unknown engine '$e' (known: sink, postfix, vmrelay, vmrelay-dpdk)" ;;
		esac
	done
	((${#ENGINES[@]})) || die "--only: no engine given"
}

has_engine() { [[ " ${ENGINES[*]} " == *" $1 "* ]]; }

# --- the report's tables (compare.sh, e2e.sh) ------------------------------------

# RUNS (a line a measured run) and META (key TAB value lines), empty; and
# what the machine and /etc/postfix look like before the runs.
open_tables() {
	RUNS=$WORK/runs.tsv META=$WORK/meta.tsv
	: >"$RUNS"
	: >"$META"
	ETC_POSTFIX_BEFORE=$(etc_postfix_sum)
}

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# The machine, the disk and the invocation, before the first run.
meta_start() {
	meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
	meta loadavg_start "$(cut -d' ' -f1 /proc/loadavg)"
	meta nproc "$(nproc)"
	meta cpu "$(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
	meta kernel "$(uname -srm)"
	meta disk "$(disk_of "$WORK")"
	meta fsync_ms_start "$("$PY" "$BENCH_DIR/measure.py" fsync "$WORK")"
	meta command "$COMMAND"
	meta load "$(load_describe "$MESSAGES")"
	meta rounds "$ROUNDS"
}

# run_rounds FUNCTION: FUNCTION ENGINE ROUND for every engine, ROUNDS times,
# the order rotating each round so that no engine always goes first.
run_rounds() {
	local round i n=${#ENGINES[@]}
	say "work directory $WORK; engines: ${ENGINES[*]}; $ROUNDS rounds of $MESSAGES messages"
	for ((round = 1; round <= ROUNDS; round++)); do
		for ((i = 0; i < n; i++)); do
			"$1" "${ENGINES[$(((i + round - 1) % n))]}" "$round"
		done
	done
}

# The first round's Postfix and vmrelay configurations, with the work
# directory and the ports made generic.
meta_confs() {
	local line
	if has_engine postfix; then
		while IFS= read -r line; do meta postfix_conf "$line"; done < <(postconf -c "$WORK/postfix-r1/etc" -n |
			sed -E "s|$WORK/postfix-r1|\$DIR|g; s|^(relayhost = .*:)[0-9]+|\1\$RELAY_PORT|")
	fi
	if has_engine vmrelay; then
		while IFS= read -r line; do meta vmrelay_conf "$line"; done < <(grep -v '^;' "$WORK/vmrelay-r1/relay.ini" |
			sed -E "s|$WORK/vmrelay-r1|\$DIR|g; s|^(listen = .*:)[0-9]+|\1\$PORT|; s|^(smarthost = .*:)[0-9]+|\1\$RELAY_PORT|")
	fi
}

# After the last run: the machine again, and /etc/postfix untouched.
meta_end() {
	meta loadavg_end "$(cut -d' ' -f1 /proc/loadavg)"
	meta fsync_ms_end "$("$PY" "$BENCH_DIR/measure.py" fsync "$WORK")"
	[[ $(etc_postfix_sum) == "$ETC_POSTFIX_BEFORE" ]] || die "/etc/postfix changed during the run: this is a bug in $PROG"
}
