#!/usr/bin/env bash
#
# e2e.sh - the end-to-end benchmark (issue 5): smtp-source -> relay ->
# smtp-sink, every message DKIM-signed by the relay on the way, for a
# private Postfix 3.7 with Debian's OpenDKIM as its milter and for vmrelay
# (its own Ed25519 signer, durable spool, [delivery] smarthost = the far
# sink). Both sign with the same Ed25519 key for bench.example, relaxed/
# relaxed, and both relay to an smtp-sink of their own that keeps what it
# gets (-D, on a tmpfs of its own, as a remote MX has its own disk: see
# launch_sink in bench/lib.sh), so the two do the same work.
#
# A run counts from the load's start until the far sink has counted the
# last message (msgs/s end to end), and only if the load exits 0 with nothing
# on stderr, the relay's checks pass (Postfix: every message accepted,
# status=sent and dequeued; vmrelay: every message delivered, result=sent,
# its log clean) and the far sink holds every message once, each signed
# (d=bench.example, s=ed1, a=ed25519-sha256), a sample of them verified
# with dkimpy (bench/e2e/dkimcheck.py).
#
# With --ctl N a third engine, vmrelay+ctl, is vmrelay measured while
# bench/e2e/ctlload.py sends N control commands (stats, quota show, queue
# list, metrics, vps show) at --ctl-rate a second (issue 6). vmrelay and
# vmrelay+ctl then run in pairs, back to back, the pair's order alternating
# round by round, for --ctl-rounds rounds: what the commands cost is the
# median of the pairs' ratios - the relay's CPU per 1000 messages (steady:
# end-to-end rates swing with the delivery backlog a run ends with), the
# accepting rate and the end-to-end rate. ctlload.py's own CPU is measured
# apart and never charged to the relay. Each vmrelay+ctl run also measures,
# between its warm-up and its load, what the commands alone cost the relay:
# its CPU while ctlload.py sends them to it otherwise idle, less its CPU
# over as long a quiet spell just before - set against the relay's CPU for
# the messages, that share is the steadiest figure of the three.
#
# Engines take turns, their order rotating each round; each starts fresh.
# Writes bench/RESULTS-e2e.md (bench/e2e/report.py), with bench/dkim's
# signatures/s per core against `openssl speed` unless --no-dkim-speed.
set -euo pipefail

PROG=e2e.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
COMMAND="bench/e2e.sh${*:+ $*}"

ROUNDS=3 MESSAGES=20000 SESSIONS=20 SIZE=6000 WORKERS=2 WARMUP=200 TIMEOUT=900
ONLY=postfix,vmrelay CTL=0 CTL_RATE=250 CTL_ROUNDS=8 SAMPLE=20 DKIM_SPEED=1
VMRELAY='' VMRELAY_SPOOL='' WORK='' KEEP=0 RESULTS=$BENCH_DIR/RESULTS-e2e.md NO_RESULTS=0
LOAD=smtp-source

usage() {
	cat <<EOF2
usage: bench/e2e.sh [options]     (as root)
  --rounds N           measured runs per engine; the median is reported ($ROUNDS)
  --messages M         messages per measured run ($MESSAGES)
  --sessions S         parallel smtp-source sessions, each reusing its connection ($SESSIONS)
  --size BYTES         payload bytes per message, headers not included ($SIZE)
  --only LIST          engines, comma separated, of: postfix,vmrelay ($ONLY)
  --ctl N              also measure vmrelay+ctl: vmrelay while N control commands
                       are sent to it, paced at --ctl-rate a second (0: not) ($CTL)
  --ctl-rate R         control commands a second during vmrelay+ctl runs ($CTL_RATE)
  --ctl-rounds K       vmrelay / vmrelay+ctl pairs, run back to back, the order
                       alternating; rounds past --rounds run only the pair ($CTL_ROUNDS)
  --sample K           signed messages verified with dkimpy per run ($SAMPLE)
  --workers W          vmrelay worker threads ($WORKERS)
  --delivery-workers D vmrelay's [delivery] workers (default: vmrelay's own default)
  --warmup M           messages sent and delivered before each measured run ($WARMUP)
  --timeout S          bound in seconds on each run, delivery included ($TIMEOUT)
  --vmrelay PATH       use this vmrelay binary (default: build build-bench/, release)
  --vmrelay-spool PATH the spool lister (default: the one in the same build)
  --no-dkim-speed      skip bench/dkim's signatures/s against openssl speed
  --workdir DIR        keep instances, dumps and keys in DIR, and leave it there
  --keep               do not remove the default work directory
  --results FILE       the results file (bench/RESULTS-e2e.md)
  --no-results         write no results file
EOF2
}

while (($#)); do
	opt=$1
	case $opt in
	--rounds | --messages | --sessions | --size | --only | --ctl | --ctl-rate | --ctl-rounds | --sample | \
	--workers | --warmup | --timeout | --vmrelay | --vmrelay-spool | --workdir | --results | \
	--delivery-workers)
		(($# >= 2)) || die "$opt needs a value"
		val=$2
		shift 2 ;;
	--keep) KEEP=1; shift; continue ;;
	--no-results) NO_RESULTS=1; shift; continue ;;
	--no-dkim-speed) DKIM_SPEED=0; shift; continue ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown option '$opt'" ;;
	esac
	case $opt in
	--rounds) need_uint "$opt" "$val" 1; ROUNDS=$val ;;
	--messages) need_uint "$opt" "$val" 1; MESSAGES=$val ;;
	--sessions) need_uint "$opt" "$val" 1; SESSIONS=$val ;;
	--size) need_uint "$opt" "$val" 1; SIZE=$val ;;
	--ctl) need_uint "$opt" "$val" 0; CTL=$val ;;
	--ctl-rate) need_uint "$opt" "$val" 1; CTL_RATE=$val ;;
	--ctl-rounds) need_uint "$opt" "$val" 1; CTL_ROUNDS=$val ;;
	--sample) need_uint "$opt" "$val" 0; SAMPLE=$val ;;
	--workers) need_uint "$opt" "$val" 1; WORKERS=$val ;;
	--delivery-workers) need_uint "$opt" "$val" 1; VR_DELIVERY_WORKERS=$val ;;
	--warmup) need_uint "$opt" "$val" 0; WARMUP=$val ;;
	--timeout) need_uint "$opt" "$val" 1; TIMEOUT=$val ;;
	--only) ONLY=$val ;;
	--vmrelay) VMRELAY=$val ;;
	--vmrelay-spool) VMRELAY_SPOOL=$val ;;
	--workdir) WORK=$val ;;
	--results) RESULTS=$val ;;
	esac
done

ENGINES=()
IFS=, read -r -a wanted <<<"$ONLY"
for e in "${wanted[@]}"; do
	case $e in
	postfix | vmrelay) [[ " ${ENGINES[*]} " == *" $e "* ]] || ENGINES+=("$e") ;;
	*) die "--only: unknown engine '$e' (known: postfix, vmrelay)" ;;
	esac
done
((${#ENGINES[@]})) || die "--only: no engine given"
if ((CTL > 0)); then
	has_engine vmrelay || die "--ctl needs the vmrelay engine"
	ENGINES+=(ctl)
fi
((NO_RESULTS == 0)) || RESULTS=

check_preconditions
if has_engine postfix; then
	command -v opendkim >/dev/null || die "'opendkim' not found: run scripts/deps.sh"
	getent passwd opendkim >/dev/null || die "user 'opendkim' missing: run scripts/deps.sh (package opendkim)"
fi
"$PY" -c 'import dkim, nacl' 2>/dev/null || die "dkimpy with Ed25519 (python3-dkim, python3-nacl) missing: run scripts/deps.sh"

RELAY_DUMP=1 VR_DELIVER=1

# --- the signing key, one for both relays -------------------------------------------

# KEY (PEM, readable by opendkim and vmrelay) and PUBKEY (the p= value).
make_key() {
	mkdir -p "$WORK/keys"
	KEY=$WORK/keys/ed1.pem
	openssl genpkey -algorithm ed25519 -out "$KEY" 2>"$WORK/keys/genpkey.err" ||
		die "openssl genpkey failed:"$'\n'"$(tail_of "$WORK/keys/genpkey.err")"
	chown opendkim:postfix "$KEY" 2>/dev/null || true
	chmod 640 "$KEY"
	PUBKEY=$(openssl pkey -in "$KEY" -pubout -outform DER | tail -c 32 | base64 -w0)
	VR_DKIM_KEY=$KEY
}

# --- Postfix + OpenDKIM ---------------------------------------------------------------

# OpenDKIM as a Debian operator sets it up for a Postfix on the same host:
# signing mode for the one domain, the milter socket beside the instance,
# group postfix so that cleanup (user postfix) can reach it.
start_opendkim() {
	local dir=$1/opendkim i
	mkdir -p "$dir"
	chown opendkim:postfix "$dir"
	chmod 750 "$dir"
	subst "$BENCH_DIR/postfix/opendkim.conf.in" "$dir/opendkim.conf" DIR="$dir" KEY="$KEY" \
		INTERNAL="$CLIENT_ADDR"
	opendkim -f -x "$dir/opendkim.conf" >"$dir/opendkim.log" 2>&1 &
	ODK_PID=$!
	CHILDREN+=("$ODK_PID")
	for ((i = 0; i < 150; i++)); do
		[[ -S $dir/opendkim.sock ]] && return 0
		kill -0 "$ODK_PID" 2>/dev/null || break
		sleep 0.1
	done
	die "opendkim did not create $dir/opendkim.sock:"$'\n'"$(tail_of "$dir/opendkim.log")"
}

start_e2e_postfix() {
	start_opendkim "$1"
	PF_EXTRA_CONF=("smtpd_milters = unix:$1/opendkim/opendkim.sock" "non_smtpd_milters = \$smtpd_milters"
		"milter_default_action = tempfail")
	start_postfix "$1"
	TREE=("${TREE[@]}" "$ODK_PID")
}

settle_e2e_postfix() { settle_postfix "$@"; }
verify_e2e_postfix() { verify_postfix "$@"; }

stop_e2e_postfix() {
	stop_postfix "$1"
	stop_child "$ODK_PID" || true
	forget_child "$ODK_PID"
}

# --- vmrelay, delivering to its far sink (lib.sh: VR_DELIVER) ---------------------------

start_e2e_vmrelay() { start_vmrelay "$@"; }
settle_e2e_vmrelay() { settle_vmrelay "$@"; }
verify_e2e_vmrelay() { verify_vmrelay "$@"; }
stop_e2e_vmrelay() { stop_vmrelay "$@"; }

# vmrelay+ctl: vmrelay itself; e2e_run starts the control commands.
start_e2e_ctl() { start_e2e_vmrelay "$@"; }
settle_e2e_ctl() { settle_e2e_vmrelay "$@"; }
verify_e2e_ctl() { verify_e2e_vmrelay "$@"; }
stop_e2e_ctl() { stop_e2e_vmrelay "$@"; }

name_of_e2e() {
	case $1 in
	ctl) echo vmrelay+ctl ;;
	*) echo "$1" ;;
	esac
}

# --- one measured run -------------------------------------------------------------

# proc_ticks PID: the user + system clock ticks of the process (all threads).
proc_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# ctl_idle_cost DIR: the relay's CPU seconds for the control commands alone
# (vmrelay warmed up, no load): its ticks while ctlload.py sends them less
# its ticks over as long a quiet spell just before.
ctl_idle_cost() {
	local dir=$1 t0 t1 t2
	t0=$(proc_ticks "$VR_PID")
	sleep "$(awk -v n="$CTL" -v r="$CTL_RATE" 'BEGIN { printf "%.3f", n / r }')"
	t1=$(proc_ticks "$VR_PID")
	"$PY" "$BENCH_DIR/e2e/ctlload.py" "$dir/ctl.sock" --count "$CTL" --rate "$CTL_RATE" \
		--account bench --ip "$CLIENT_ADDR" >"$dir/ctl-idle.out" 2>"$dir/ctl-idle.err" ||
		die "vmrelay+ctl: control commands on the idle relay failed:"$'\n'"$(tail_of "$dir/ctl-idle.err")"
	t2=$(proc_ticks "$VR_PID")
	awk -v a="$t0" -v b="$t1" -v c="$t2" -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%.3f", ((c - b) - (b - a)) / hz }'
}

e2e_run() {
	local e=$1 round=$2 name dir total=0 wall cpu rc load_s ctl_pid='' ctl_out='-' check idle_cost
	name=$(name_of_e2e "$e")
	dir=$WORK/$e-r$round
	rm -rf "$dir"
	mkdir -p "$dir"
	"start_e2e_$e" "$dir"
	if ((WARMUP > 0)); then
		warm_up "$name" "$dir" "$PORT" "$WARMUP"
		total=$WARMUP
		"settle_e2e_$e" "$dir" "$total"
	fi
	[[ $e != ctl ]] || idle_cost=$(ctl_idle_cost "$dir")
	total=$((total + MESSAGES))
	load_cmd "$MESSAGES" "$PORT" "$dir/load.json"
	if [[ $e == ctl ]]; then
		"$PY" "$BENCH_DIR/e2e/ctlload.py" "$dir/ctl.sock" --count "$CTL" --rate "$CTL_RATE" \
			--account bench --ip "$CLIENT_ADDR" >"$dir/ctl.out" 2>"$dir/ctl.err" &
		ctl_pid=$!
		CHILDREN+=("$ctl_pid")
	fi
	run_child "$PY" "$BENCH_DIR/measure.py" run "${TREE[@]/#/--tree=}" --timeout "$TIMEOUT" \
		--sink "$dir/relay-sink.out" --sink-count "$total" -- \
		"${LOAD_CMD[@]}" >"$dir/measure.out" 2>"$dir/load.err" ||
		die "$name: measure.py failed:"$'\n'"$(tail_of "$dir/load.err")"
	if [[ -n $ctl_pid ]]; then
		# what was sent by the time the last message arrived: no more
		kill -TERM "$ctl_pid" 2>/dev/null || true
		wait "$ctl_pid" || die "$name: control commands failed:"$'\n'"$(tail_of "$dir/ctl.err")"
		forget_child "$ctl_pid"
		# "sent|seconds|ctlload.py's CPU s|the relay's CPU s for the commands
		# alone|per-command reply times" for report.py
		ctl_out=$(sed -E "1s/^sent=([0-9]+) ok=[0-9]+ seconds=([0-9.]+) cpu_s=([0-9.]+)\$/\\1|\\2|\\3|$idle_cost/" \
			"$dir/ctl.out" | paste -sd '|')
		[[ $ctl_out =~ ^[0-9]+\|[0-9.]+\|[0-9.]+\|-?[0-9.]+\|[^|]+$ ]] ||
			die "$name: ctlload.py printed: $(cat "$dir/ctl.out")"
	fi
	read -r wall cpu rc load_s <<<"$(sed -E 's/[a-z_]+=//g' "$dir/measure.out")"
	((rc != 124)) || die "$name: not all delivered within $TIMEOUT s:"$'\n'"$(tail_of "$dir/load.err")"
	((rc == 0)) || die "$name: $LOAD exited with status $rc:"$'\n'"$(tail_of "$dir/load.err")"
	[[ ! -s $dir/load.err ]] || die "$name: $LOAD reported errors:"$'\n'"$(tail_of "$dir/load.err")"
	"verify_e2e_$e" "$dir" "$total"
	"stop_e2e_$e" "$dir"
	check=$("$PY" "$BENCH_DIR/e2e/dkimcheck.py" "$dir/relay.dump" --expect "$total" --pubkey "$PUBKEY" \
		--domain bench.example --selector ed1 --sample "$SAMPLE" 2>"$dir/dkimcheck.err") ||
		die "$name: the far sink's mail fails the DKIM check:"$'\n'"$(tail_of "$dir/dkimcheck.err" 12)"
	sink_fs_umount "$dir/relay.dump"    # checked; ~130 MB a run, in memory
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$MESSAGES" "$wall" "$load_s" "$cpu" \
		"$ctl_out" "$check" >>"$RUNS"
	say "$(awk -v r="$round" -v n="$name" -v m="$MESSAGES" -v w="$wall" -v l="$load_s" -v c="$cpu" -v k="$check" -v x="$ctl_out" \
		'BEGIN { printf "round %d: %-11s %6.0f msgs/s end to end (%.2f s; load done at %.2f s)  CPU %5.2f s  %s%s", r, n, m / w, w, l, c, k, (x == "-" ? "" : "  ctl sent|s|reply ms: " x) }')"
}

# With --ctl: vmrelay and vmrelay+ctl as pairs, back to back, vmrelay first
# in odd rounds and second in even ones, so each with/without ratio compares
# runs moments apart and neither side always runs on a machine the other
# just warmed; Postfix runs in the first --rounds rounds, before the pair in
# odd rounds and after it in even ones.
e2e_rounds() {
	local round n=$ROUNDS pf e
	if ((CTL == 0)); then
		run_rounds e2e_run
		return
	fi
	((CTL_ROUNDS <= n)) || n=$CTL_ROUNDS
	say "work directory $WORK; engines: ${ENGINES[*]}; $n rounds of $MESSAGES messages," \
		"$CTL_ROUNDS of them vmrelay / vmrelay+ctl pairs"
	for ((round = 1; round <= n; round++)); do
		local order=(vmrelay ctl)
		((round % 2)) || order=(ctl vmrelay)
		((round <= CTL_ROUNDS)) || order=(vmrelay)
		pf=0
		has_engine postfix && ((round <= ROUNDS)) && pf=1
		((pf && round % 2)) && e2e_run postfix "$round"
		for e in "${order[@]}"; do
			e2e_run "$e" "$round"
		done
		((pf && !(round % 2))) && e2e_run postfix "$round"
	done
	return 0
}

# --- main --------------------------------------------------------------------------

prepare_workdir
open_tables
make_key
if has_engine vmrelay; then
	resolve_vmrelay
	rm -rf "$WORK/vmrelay-preflight"
	mkdir -p "$WORK/vmrelay-preflight"
	start_e2e_vmrelay "$WORK/vmrelay-preflight"
	stop_e2e_vmrelay "$WORK/vmrelay-preflight"
	sink_fs_umount "$WORK/vmrelay-preflight/relay.dump"
fi

meta_start
meta warmup "$WARMUP"
meta sample "$SAMPLE"
((CTL == 0)) || meta ctl_rounds "$CTL_ROUNDS"
PF_VERSION=$(postconf -d -h mail_version)
has_engine postfix && meta engine_note "Postfix $PF_VERSION, a private instance (bench/postfix/main.cf.in and master.cf.in, durable queue) with OpenDKIM $(opendkim -V 2>&1 | sed -nE '1s/.*v([0-9.]+).*/\1/p') (Debian's package) as its milter on a Unix socket beside the instance (bench/postfix/opendkim.conf.in: signing mode, Ed25519, relaxed/relaxed, milter_default_action = tempfail so that nothing leaves unsigned), relaying to an smtp-sink that keeps what it gets (-D) on a tmpfs of its own (bench/lib.sh launch_sink says why); every run: its log showed each message accepted and status=sent, no reject, deferral or warning, the queue empty."
has_engine vmrelay && meta engine_note "vmrelay at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- engine dpdk-app include 2>/dev/null || echo ' (with uncommitted changes)'), kernel sockets, $WORKERS workers, ${VR_DELIVERY_WORKERS:-the default number of} delivery workers, durable spool, the bench account signing bench.example with the Ed25519 key (selector ed1), [delivery] smarthost = an smtp-sink that keeps what it gets (-D) on a tmpfs of its own (bench/lib.sh launch_sink says why); every run: its log showed one result=sent delivery per message and no other attempt, \`vmrelay-spool check\` found every record intact, no err or warn line."
((CTL == 0)) || meta engine_note "vmrelay+ctl: vmrelay as above while bench/e2e/ctlload.py sends up to $CTL control requests at $CTL_RATE/s from the start of the load until the last message reached the far sink, each on a connection of its own (as vmrelayctl does), in turn: stats, quota show bench, queue list, metrics, vps show $CLIENT_ADDR; every reply ok. Before the load, after the warm-up, the same commands were sent to the otherwise idle relay and its CPU over them, less its CPU over as long a quiet spell just before, is what the commands alone cost it. The ctl line gives how many were sent during the load, ctlload.py's own CPU seconds (a process apart: not in the relay's CPU), the relay's CPU for the commands alone and each command's reply time."

e2e_rounds

meta_confs
if has_engine postfix; then
	while IFS= read -r line; do meta opendkim_conf "$line"; done < <(grep -v '^#' "$WORK/postfix-r1/opendkim/opendkim.conf" |
		sed -E "s|$WORK/postfix-r1|\$DIR|g; s|$WORK|\$WORK|g" | grep .)
fi
has_engine vmrelay && meta vmrelay_account "$(grep '^{' "$WORK/vmrelay-r1/accounts.jsonl" | sed "s|$WORK|\$WORK|g")"
meta_end

if ((DKIM_SPEED)); then
	build=$ROOT/build-bench
	setup_build "$build"
	ninja -C "$build" bench/dkim/bench_dkim >"$WORK/ninja-dkim.log" 2>&1 ||
		die "building bench_dkim failed:"$'\n'"$(tail_of "$WORK/ninja-dkim.log")"
	say "bench_dkim: signatures/s per core against openssl speed"
	"$build/bench/dkim/bench_dkim" >"$WORK/bench_dkim.out" 2>&1 ||
		die "bench_dkim failed:"$'\n'"$(tail_of "$WORK/bench_dkim.out")"
	meta dkim_speed_file "$WORK/bench_dkim.out"
fi

echo
"$PY" "$BENCH_DIR/e2e/report.py" "$RUNS" "$META" ${RESULTS:+--markdown "$RESULTS"}
[[ -z $RESULTS ]] || say "wrote $RESULTS"
