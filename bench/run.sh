#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# run.sh - end-to-end benchmark of the OTLP/HTTP and OTLP/gRPC paths:
#
#   wrk (core 1) --POST /v1/traces---------------+
#   h2load (core 1) --gRPC TraceService/Export---+--> otel2langfuse serve
#       (core 0) --POST /api/public/ingestion--> sink.mjs (core 1)
#
# For each case it measures the spans/s the daemon acknowledged (HTTP 200 or
# gRPC OK only, each sent once the request is committed to the spool),
# the events/s that actually reached the sink, MB/s in and out, the daemon's
# CPU use and its peak RSS (VmHWM), then prints a table and the ratio to the
# targets (>= 40,000 LLM-sized spans/s end to end on one core, peak RSS
# < 64 MB). Every daemon gets a fresh spool directory in the work
# directory; by default each case runs twice, with the spool's fsync
# before the answer (case name as given) and without it (the same name
# with " nosync"), and a line per case gives the ratio of the two. Before
# each daemon is stopped its admin /metrics gives the accepted requests and
# the spool commits, i.e. the requests sharing one commit. It never fails
# on figures: it exits non-zero only when it could not run.
#
# Every HTTP request carries trace ids no other request has (the daemon's
# assemble stage collapses copies of a span that meet in its window, so a
# body sent again and again would come out as one set of events): the
# fixtures get placeholder trace ids (bench/gen_bodies.mjs), wrk writes a
# counter into them per request, and the gzip cases take their bodies from
# a pool of distinct bodies made before the load. h2load cannot vary its
# body, so the gRPC cases repeat one body and their daemons run with the
# assemble stage off (O2L_ASSEMBLE_WINDOW_MS=0, see --grpc-window-ms).
#
# Usage: bench/run.sh [options]
#   --duration S      seconds of load per case (default 15)
#   --connections N   wrk / h2load connections (default 4)
#   --streams N       h2load streams in flight per connection (default 1, so
#                     that both paths keep --connections requests in flight)
#   --repeat N        run every case N times (default 1); the target and
#                     ratio lines use the median of the runs of a case
#   --cases LIST      comma-separated among small,small-gzip,llm,llm-gzip
#                     (OTLP/HTTP, wrk) and grpc-small,grpc-small-gzip,
#                     grpc-llm,grpc-llm-gzip (OTLP/gRPC, h2load);
#                     default: all eight
#   --spool-sync MODE on (O2L_SPOOL_SYNC=true, fsync before each answer),
#                     off (false: no fsync, to measure only) or both
#                     (default: each case with on, then with off)
#   --spool-max-bytes N    O2L_SPOOL_MAX_BYTES (default 8589934592, 8 GiB:
#                     far above what a run holds, so the spool cap never
#                     answers 503)
#   --batch-max-events N   O2L_BATCH_MAX_EVENTS of the daemon (default 500)
#   --queue-max-events N   O2L_QUEUE_MAX_EVENTS (default 1000000), the
#                     exporter's queue in memory, filled from the spool
#   --queue-max-bytes N    O2L_QUEUE_MAX_BYTES (default 1073741824)
#   --drain-max S     longest wait for the sink to stop growing (default 60)
#   --env NAME=VALUE  one more environment variable for the daemon (repeatable)
#   --perf            profile the daemon during the llm case (or grpc-llm
#                     when llm is not among the cases; perf record,
#                     DWARF call graphs), or where perf cannot record, callgrind on
#                     `otel2langfuse convert` of the LLM fixture
#   --callgrind       skip perf; callgrind of `convert` on the LLM fixture
#   --build-dir DIR   where to build the daemon (default build-bench in the
#                     repository)
#   --no-build        use the existing otel2langfuse of the build directory
#   --keep            keep the work directory (logs, spools, perf data)
#   --port N          first of the four loopback ports used (default
#                     18480): daemon HTTP, sink, daemon gRPC, daemon admin
#                     (O2L_ADMIN_LISTEN, /metrics)
#   --map-seconds S   after the cases, bench/map_bench.c (o2l_map_bench, core
#                     0) maps and encodes the golden inputs of every
#                     convention for up to S seconds each (default 1; 0
#                     skips it)
#   --map-only        build and run only the map bench (no load tools,
#                     sink or daemon)
#   --pool-rates S,L  requests a second the gzip pools are sized for
#                     (small-gzip, llm-gzip; default 4000,250): each pool
#                     holds rate x duration distinct bodies, at most about
#                     400 MB; requests past its end reuse bodies and are
#                     reported
#   --grpc-window-ms N   O2L_ASSEMBLE_WINDOW_MS of the daemons of the gRPC
#                     cases (default 0: no holding, as their bodies repeat);
#                     "default" leaves the daemon's own
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
build="$repo/build-bench"

duration=15
connections=4
streams=1
cases="small,small-gzip,llm,llm-gzip,grpc-small,grpc-small-gzip,grpc-llm,grpc-llm-gzip"
batch_max_events=500
queue_max_events=1000000
queue_max_bytes=1073741824
spool_sync=both
spool_max_bytes=8589934592
drain_max=60
do_perf=0
repeat=1
run_index=1
extra_env=()
force_cg=0
do_build=1
keep=0
port=18480
map_seconds=1
map_only=0
pool_rate_small=4000
pool_rate_llm=250
pool_max_bytes=400000000
grpc_window=0

while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --streams) streams="$2"; shift 2 ;;
    --cases) cases="$2"; shift 2 ;;
    --batch-max-events) batch_max_events="$2"; shift 2 ;;
    --queue-max-events) queue_max_events="$2"; shift 2 ;;
    --queue-max-bytes) queue_max_bytes="$2"; shift 2 ;;
    --spool-sync) spool_sync="$2"; shift 2 ;;
    --spool-max-bytes) spool_max_bytes="$2"; shift 2 ;;
    --drain-max) drain_max="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    --perf) do_perf=1; shift ;;
    --callgrind) do_perf=1; force_cg=1; shift ;;
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --keep) keep=1; shift ;;
    --port) port="$2"; shift 2 ;;
    --map-seconds) map_seconds="$2"; shift 2 ;;
    --map-only) map_only=1; shift ;;
    --pool-rates) pool_rate_small="${2%%,*}"; pool_rate_llm="${2#*,}"; shift 2 ;;
    --grpc-window-ms) grpc_window="$2"; shift 2 ;;
    -h | --help) sed -n '3,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for n in "$duration" "$repeat" "$connections" "$streams" "$batch_max_events" "$queue_max_events" \
    "$queue_max_bytes" "$spool_max_bytes" "$drain_max" "$port" "$map_seconds" \
    "$pool_rate_small" "$pool_rate_llm"; do
    case "$n" in
    '' | *[!0-9]*) echo "run.sh: expected a whole number, got '$n'" >&2; exit 2 ;;
    esac
done
if [ "$duration" -lt 1 ] || [ "$duration" -gt 600 ]; then
    echo "run.sh: --duration must be 1..600" >&2
    exit 2
fi

if [ "$pool_rate_small" -lt 1 ] || [ "$pool_rate_llm" -lt 1 ]; then
    echo "run.sh: --pool-rates must be two whole numbers of at least 1" >&2
    exit 2
fi
case "$grpc_window" in
default) ;;
'' | *[!0-9]*) echo "run.sh: --grpc-window-ms must be a whole number or default" >&2; exit 2 ;;
esac
if [ "$map_seconds" -gt 60 ]; then
    echo "run.sh: --map-seconds must be 0..60" >&2
    exit 2
fi
if [ "$map_only" = 1 ] && [ "$map_seconds" = 0 ]; then
    echo "run.sh: --map-only needs --map-seconds of at least 1" >&2
    exit 2
fi

if [ "$connections" -lt 1 ] || [ "$streams" -lt 1 ] || [ "$repeat" -lt 1 ]; then
    echo "run.sh: --connections, --streams and --repeat must be at least 1" >&2
    exit 2
fi
# the daemon's own bounds of spool.max_bytes: 4 KiB .. 1 TiB
if [ "$spool_max_bytes" -lt 4096 ] || [ "$spool_max_bytes" -gt 1099511627776 ]; then
    echo "run.sh: --spool-max-bytes must be 4096..1099511627776" >&2
    exit 2
fi
case "$spool_sync" in
on) sync_modes=(on) ;;
off) sync_modes=(off) ;;
both) sync_modes=(on off) ;;
*) echo "run.sh: --spool-sync must be on, off or both" >&2; exit 2 ;;
esac
if [ "$port" -lt 1024 ] || [ "$port" -gt 65532 ]; then
    echo "run.sh: --port must be 1024..65532 (four ports from it are used)" >&2
    exit 2
fi
build="$(mkdir -p "$build" && cd "$build" && pwd)"
bin="$build/otel2langfuse"

IFS=',' read -r -a case_list <<<"$cases"
want_http=0
want_grpc=0
[ "$map_only" = 1 ] && case_list=()
for c in ${case_list[@]+"${case_list[@]}"}; do
    case "$c" in
    small | small-gzip | llm | llm-gzip) want_http=1 ;;
    grpc-small | grpc-small-gzip | grpc-llm | grpc-llm-gzip) want_grpc=1 ;;
    *) echo "run.sh: unknown case $c" >&2; exit 2 ;;
    esac
done

# --perf records the llm case, or grpc-llm when llm is not asked for
perf_case=llm
case ",$cases," in
*,llm,*) ;;
*,grpc-llm,*) perf_case=grpc-llm ;;
esac

daemon_port=$port
sink_port=$((port + 1))
grpc_port=$((port + 2))
admin_port=$((port + 3))
work="$(mktemp -d /tmp/o2l-bench.XXXXXX)"
sink_pid=""
daemon_pid=""
perf_pid=""
wrk_pid=""

cleanup() {
    for p in $wrk_pid $perf_pid $daemon_pid $sink_pid; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
        fi
    done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        alive=0
        for p in $wrk_pid $perf_pid $daemon_pid $sink_pid; do
            kill -0 "$p" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    for p in $wrk_pid $perf_pid $daemon_pid $sink_pid; do
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ "$keep" = 1 ]; then
        echo "work directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '== %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }

# --- tools ------------------------------------------------------------------
need_pkgs=()
if [ "$want_http" = 1 ]; then
    command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
fi
if [ "$want_grpc" = 1 ]; then
    command -v h2load >/dev/null 2>&1 || need_pkgs+=(nghttp2-client)
fi
if [ "$map_only" = 0 ]; then
    command -v perf >/dev/null 2>&1 || need_pkgs+=(linux-perf)
    command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
fi
command -v taskset >/dev/null 2>&1 || need_pkgs+=(util-linux)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: missing ${need_pkgs[*]}; install them (as root: apt-get install ${need_pkgs[*]})" >&2
        exit 1
    fi
    log "installing ${need_pkgs[*]}"
    apt-get install -y -q "${need_pkgs[@]}" >"$work/apt.log" 2>&1 ||
        { apt-get update -q >>"$work/apt.log" 2>&1 &&
            apt-get install -y -q "${need_pkgs[@]}" >>"$work/apt.log" 2>&1; } ||
        { echo "run.sh: apt-get install ${need_pkgs[*]} failed, see $work/apt.log" >&2; keep=1; exit 1; }
fi
if [ "$map_only" = 0 ]; then
    command -v node >/dev/null 2>&1 || { echo "run.sh: node (20+) is needed for the sink" >&2; exit 1; }
fi
if [ "$want_http" = 1 ]; then
    command -v wrk >/dev/null 2>&1 || { echo "run.sh: wrk is not installed" >&2; exit 1; }
fi
if [ "$want_grpc" = 1 ]; then
    command -v h2load >/dev/null 2>&1 || { echo "run.sh: h2load is not installed" >&2; exit 1; }
fi

ncpu="$(nproc)"
if [ "$ncpu" -lt 2 ] && [ "$map_only" = 0 ]; then
    echo "run.sh: needs 2 cores (daemon on core 0, load and sink on core 1)" >&2
    exit 1
fi

# --- build ------------------------------------------------------------------
if [ "$do_build" = 1 ]; then
    log "building $bin and the map bench (Release, no sanitizers)"
    if ! { cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release \
        -DO2L_BUILD_TESTS=OFF -DO2L_BENCH=ON >"$work/build.log" 2>&1 &&
        cmake --build "$build" -j2 >>"$work/build.log" 2>&1; }; then
        tail -n 30 "$work/build.log" >&2
        echo "run.sh: build failed" >&2
        exit 1
    fi
fi
[ -x "$bin" ] || { echo "run.sh: $bin is missing (drop --no-build)" >&2; exit 1; }

# --- map bench --------------------------------------------------------------
# run_map_bench: o2l_map_bench on core 0 over the golden inputs of every
# convention. Returns non-zero when it could not run (no binary, an input
# that does not decode); its figures never fail it.
map_bin="$build/bench/o2l_map_bench"
golden="$repo/tests/data/golden"
run_map_bench() {
    echo
    if [ ! -x "$map_bin" ]; then
        echo "map bench: $map_bin is missing (configure with -DO2L_BENCH=ON or drop --no-build)"
        return 1
    fi
    if [ ! -d "$golden" ]; then
        echo "map bench: skipped, $golden does not exist"
        return 0
    fi
    echo "otel2langfuse map bench - $(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown) $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "pinned to core 0 (taskset -c 0); inputs decoded once, then mapped and encoded repeatedly"
    # bounded: each convention stops after map_seconds, and there are a
    # few dozen at most
    timeout $((map_seconds * 64 + 60)) taskset -c 0 "$map_bin" --dir "$golden" \
        --seconds "$map_seconds"
}
if [ "$map_only" = 1 ]; then
    run_map_bench
    exit $?
fi

# --- fixtures ---------------------------------------------------------------
small_src="$here/data/small_100.pb"
llm_src="$here/data/langgraph_openinference_512.pb"
if [ ! -f "$small_src" ]; then
    log "generating $small_src"
    node "$here/gen_small.mjs" --spans 100 --out "$small_src" >&2
fi
[ -f "$llm_src" ] || { echo "run.sh: $llm_src is missing" >&2; exit 1; }

# Every request must carry trace ids of its own: the daemon holds a trace's
# spans for assemble.window_ms and collapses copies of a span (same trace
# id and span id) that meet there, so one body sent again and again would
# come out as one set of events. gen_bodies.mjs puts a placeholder in
# every trace id of a fixture (same span ids, same number of traces); wrk
# (wrk/post_body.lua) writes a per-request counter into the placeholders of
# the plain bodies, and takes the gzipped bodies from a pool made here with
# the counters already in (one body per request, as many as the load can
# use: pool_rate_* requests a second for the duration, at most about
# pool_max_bytes per pool).
small_pb="$work/small_100.pb"
llm_pb="$work/llm_512.pb"
node "$here/gen_bodies.mjs" --in "$small_src" --out "$small_pb" >"$work/gen.log" 2>&1 &&
    node "$here/gen_bodies.mjs" --in "$llm_src" --out "$llm_pb" >>"$work/gen.log" 2>&1 ||
    { cat "$work/gen.log" >&2; echo "run.sh: bench/gen_bodies.mjs failed" >&2; exit 1; }
gzip -9 -c "$small_pb" >"$work/small_100.pb.gz"
gzip -9 -c "$llm_pb" >"$work/llm_512.pb.gz"

# pool_size FILE_GZ RATE: bodies for one gzip case
pool_size() {
    local gz n cap
    gz="$(stat -c %s "$1")"
    n=$(($2 * duration))
    cap=$((pool_max_bytes / (gz + 4) + 1))
    [ "$n" -gt "$cap" ] && n=$cap
    echo "$n"
}
# make_pool SRC OUT RATE GZ: the pool of a gzip case, once per run
make_pool() {
    local n
    [ -f "$2" ] && return 0
    n="$(pool_size "$4" "$3")"
    log "writing $n distinct gzipped bodies to $(basename "$2") (for ${3} requests/s over ${duration}s)"
    node "$here/gen_bodies.mjs" --in "$1" --pool "$n" --gzip 9 --out "$2" >>"$work/gen.log" 2>&1 ||
        { cat "$work/gen.log" >&2; echo "run.sh: bench/gen_bodies.mjs --pool failed" >&2; exit 1; }
}
small_pool="$work/small_100.gz.pool"
llm_pool="$work/llm_512.gz.pool"
case ",$cases," in *,small-gzip,*) make_pool "$small_pb" "$small_pool" "$pool_rate_small" "$work/small_100.pb.gz" ;; esac
case ",$cases," in *,llm-gzip,*) make_pool "$llm_pb" "$llm_pool" "$pool_rate_llm" "$work/llm_512.pb.gz" ;; esac

# grpc_frame FLAG IN OUT: IN as one gRPC length-prefixed message: the flag
# byte (0 plain, 1 compressed with grpc-encoding), the length as 4 bytes
# big-endian, then the bytes.
grpc_frame() {
    local n
    n="$(stat -c %s "$2")"
    printf '%b' "$(printf '\\x%02x' "$1" $(((n >> 24) & 255)) $(((n >> 16) & 255)) \
        $(((n >> 8) & 255)) $((n & 255)))" >"$3"
    cat "$2" >>"$3"
}
# h2load sends one file as the body of every request: the gRPC cases repeat
# the same trace ids (the placeholders as they are), and their daemons run
# with the assemble stage off (O2L_ASSEMBLE_WINDOW_MS=0) so that the copies
# are not collapsed; see grpc_window below.
grpc_frame 0 "$small_pb" "$work/small_100.grpc"
grpc_frame 1 "$work/small_100.pb.gz" "$work/small_100.gz.grpc"
grpc_frame 0 "$llm_pb" "$work/llm_512.grpc"
grpc_frame 1 "$work/llm_512.pb.gz" "$work/llm_512.gz.grpc"

# The number of events one request becomes, counted on `convert` output
# with the marker the sink counts (one per span, one trace-create per
# trace; the placeholders keep the number of traces).
events_of() {
    local n
    n="$("$bin" convert "$1" 2>"$work/convert.err" | grep -o -- '-create","timestamp":"' | wc -l)" || true
    if [ -z "$n" ] || [ "$n" -eq 0 ]; then
        echo "run.sh: '$bin convert $1' produced no events:" >&2
        cat "$work/convert.err" >&2
        return 1
    fi
    echo "$n"
}
small_events="$(events_of "$small_pb")"
llm_events="$(events_of "$llm_pb")"
small_spans=100
llm_spans=512

# --- sink -------------------------------------------------------------------
json_num() { # json_num KEY JSON -> the number at "KEY":<number>
    printf '%s' "$2" | grep -o "\"$1\":[0-9.eE+-]*" | head -n 1 | cut -d: -f2
}
sink_stats() { curl -s --max-time 5 "http://127.0.0.1:$sink_port/stats"; }

log "starting the sink on 127.0.0.1:$sink_port (core 1)"
# its own time limit: every case at its longest (load, drain, daemon start
# and stop), plus a margin
taskset -c 1 node "$here/sink.mjs" --port "$sink_port" \
    --max-seconds $(((duration + drain_max + 60) * ${#case_list[@]} * ${#sync_modes[@]} * repeat + 300)) \
    >"$work/sink.log" 2>&1 &
sink_pid=$!
for _ in $(seq 1 50); do
    grep -q 'sink listening' "$work/sink.log" 2>/dev/null && break
    kill -0 "$sink_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'sink listening' "$work/sink.log" ||
    { cat "$work/sink.log" >&2; echo "run.sh: the sink did not start" >&2; exit 1; }

# --- the disk under the spools ---------------------------------------------
# What the spools are written to, and how fast one synchronous 4 KiB write
# (O_DSYNC, appended to a new file like the WAL is) comes back on it: the
# cost one spool commit pays at least when spool.sync is on.
disk_fs="$(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$work" 2>/dev/null || echo unknown)"
disk_df="$(df -hT "$work" 2>/dev/null | awk 'NR == 2 { print $2, "size", $3, "avail", $5 }')"
dsync_writes=500
dsync_line="not measured"
if dd_out="$(timeout 120 dd if=/dev/zero of="$work/dsync-probe" bs=4k count="$dsync_writes" \
    oflag=dsync 2>&1)"; then
    dsync_line="$(printf '%s\n' "$dd_out" | awk -v n="$dsync_writes" '
        / copied, / {
            for (i = 1; i <= NF; i++) if ($i == "s," || $i == "s") { secs = $(i - 1); break }
            if (secs > 0) printf "%d writes of 4 KiB with O_DSYNC: %.0f per second, %.2f ms each", n, n / secs, secs / n * 1000
        }')"
    [ -n "$dsync_line" ] || dsync_line="not measured (dd printed no time)"
fi
rm -f "$work/dsync-probe"
log "spool filesystem: $disk_fs ($disk_df); $dsync_line"

clk_tck="$(getconf CLK_TCK)"
core0_ticks() { # "idle steal total" of core 0 from /proc/stat, in clock ticks
    awk '$1 == "cpu0" { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, $9, t }' /proc/stat
}
cpu_ticks() { # utime + stime of a pid, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

results="$work/results.txt"
: >"$results"

# An OK answer to Export carries one framed, empty
# ExportTraceServiceResponse (5 bytes of DATA) before the grpc-status 0
# trailer; a refusal (UNAVAILABLE when the spool is full, or any other
# error) is a trailers-only response with no DATA at all, yet HTTP status
# 200, which h2load counts as a success. So the OK answers are the DATA
# bytes h2load received / 5 (none of the fixtures has a rejected span, which
# would make the answer longer).
grpc_ok_bytes=5

# h2load_summary OUTPUT REQUEST_LOG: h2load's figures as the one line
# bench/wrk/post_body.lua prints for wrk, "o2l-wrk {...}"; status_200 holds
# the gRPC OK answers, status_503 the other HTTP 200s (gRPC errors),
# status_other what h2load counted as failed. Latency percentiles come from
# the per-request log (third column: microseconds to the end of the answer).
h2load_summary() {
    local p50 p99
    read -r p50 p99 < <(cut -f3 "$2" 2>/dev/null | sort -n |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) { print 0, 0; exit }
            i = int(NR * 0.50 + 0.5); if (i < 1) i = 1
            j = int(NR * 0.99 + 0.5); if (j < 1) j = 1; if (j > NR) j = NR
            print v[i], v[j]
        }')
    awk -v okb="$grpc_ok_bytes" -v p50="$p50" -v p99="$p99" '
    function us(v) { # "10.00s", "523.12ms", "800us" -> microseconds
        if (v ~ /us$/) return v + 0
        if (v ~ /ms$/) return v * 1000
        return v * 1e6
    }
    /^finished in / { sub(/,$/, "", $3); dur = us($3) }
    /^requests: / { total = $2; done = $6; failed = $10; errored = $12; tmo = $14 }
    /^status codes: / { s2 = $3 + 0; s3 = $5; s4 = $7; s5 = $9 }
    /^traffic: / {
        for (i = 1; i <= NF; i++)
            if ($i == "data") { d = $(i - 1); gsub(/[()]/, "", d) }
    }
    END {
        if (dur == "" || total == "") exit 1
        ok = int(d / okb)
        if (ok > s2) ok = s2
        printf "o2l-wrk {\"requests\":%d,\"duration_us\":%d,\"status_200\":%d," \
            "\"status_503\":%d,\"status_other\":%d,\"status_2xx\":%d,\"data_bytes\":%d," \
            "\"errored\":%d,\"timeout\":%d,\"latency_p50_us\":%d,\"latency_p99_us\":%d}\n",
            done, dur, ok, s2 - ok, failed, s2, d, errored, tmo, p50, p99
    }' "$1"
}

# admin_metrics: the daemon's /metrics, or nothing when it does not answer
admin_metrics() {
    curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics" 2>/dev/null || true
}
# metric NAME TEXT -> the value of otel2langfuse_NAME in TEXT, or -1
metric() {
    local v
    v="$(printf '%s\n' "$2" | awk -v m="otel2langfuse_$1" '$1 == m { print $2; exit }')"
    case "$v" in
    '' | *[!0-9]*) echo -1 ;;
    *) echo "$v" ;;
    esac
}

# run_case NAME FILE ENCODING SPANS EVENTS PROTO (http or grpc) SYNC (on or off)
#          [MODE]: MODE is post_body.lua's (pb: the counter written into the
#          placeholders per request, pool: FILE is a pool of distinct bodies)
run_case() {
    local name="$1" file="$2" enc="$3" spans="$4" events="$5" proto="$6" sync="$7"
    local mode="${8:-pb}" window_env=() window=default
    local body_bytes dlog wlog s0 s1 s2 t0 t1 c0 c1 c2 k0 k1 wrkline inflight
    local label="$name" sync_env=true spool m0 m1 m2
    if [ "$sync" = off ]; then
        label="$name-nosync"
        sync_env=false
    fi
    body_bytes="$(stat -c %s "$file")"
    if [ "$mode" = pool ]; then # the first body of the pool, without its length
        body_bytes="$(od -An -tu1 -N4 "$file" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')"
    fi
    if [ "$proto" = grpc ] && [ "$grpc_window" != default ]; then
        window_env=(O2L_ASSEMBLE_WINDOW_MS="$grpc_window")
        window="$grpc_window"
    fi
    local e # --env comes last on the daemon's command line, so it wins
    for e in ${extra_env[@]+"${extra_env[@]}"}; do
        case "$e" in O2L_ASSEMBLE_WINDOW_MS=*) window="${e#*=}" ;; esac
    done
    dlog="$work/daemon-$label-$run_index.log"
    wlog="$work/load-$label-$run_index.log"
    spool="$work/spool-$label-$run_index"
    rm -rf "$spool"

    log "case $label (run $run_index of $repeat): $spans spans/request, $events events/request, body $body_bytes bytes${enc:+ ($enc)}, $proto, spool sync $sync, assemble window $window"
    # the gRPC listener always on the loopback (its default is 0.0.0.0:4317),
    # the admin listener too (its default is 127.0.0.1:13133)
    env -i PATH="$PATH" \
        LANGFUSE_PUBLIC_KEY=pk-lf-bench LANGFUSE_SECRET_KEY=sk-lf-bench \
        LANGFUSE_BASE_URL="http://127.0.0.1:$sink_port" \
        O2L_HTTP_LISTEN="127.0.0.1:$daemon_port" \
        O2L_GRPC_LISTEN="127.0.0.1:$grpc_port" O2L_LOG_LEVEL=warn \
        O2L_ADMIN_LISTEN="127.0.0.1:$admin_port" \
        O2L_SPOOL_DIR="$spool" O2L_SPOOL_SYNC="$sync_env" \
        O2L_SPOOL_MAX_BYTES="$spool_max_bytes" \
        O2L_QUEUE_MAX_EVENTS="$queue_max_events" \
        O2L_QUEUE_MAX_BYTES="$queue_max_bytes" \
        O2L_BATCH_MAX_EVENTS="$batch_max_events" ${window_env[@]+"${window_env[@]}"} \
        ${extra_env[@]+"${extra_env[@]}"} \
        taskset -c 0 "$bin" serve >"$dlog" 2>&1 &
    daemon_pid=$!
    # all listeners are bound before the event loop runs, so an answer on
    # the HTTP port means the gRPC and admin ones are ready too
    local ready=0
    for _ in $(seq 1 100); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$daemon_port/"; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if [ "$ready" != 1 ]; then
        tail -n 20 "$dlog" >&2
        echo "run.sh: the daemon did not start listening on 127.0.0.1:$daemon_port" >&2
        exit 1
    fi

    if [ "$do_perf" = 1 ] && [ "$force_cg" = 0 ] && [ "$name" = "$perf_case" ] &&
        [ "$run_index" = 1 ] && [ "$sync" = "${sync_modes[0]}" ]; then
        perf record -F 499 --call-graph dwarf,32768 -p "$daemon_pid" -o "$work/perf.data" \
            -- sleep "$duration" >"$work/perf-record.log" 2>&1 &
        perf_pid=$!
    fi

    m0="$(admin_metrics)"
    s0="$(sink_stats)"
    c0="$(cpu_ticks "$daemon_pid")"
    k0="$(core0_ticks)"
    t0="$(now_ms)"
    # in the background so that a signal to this script is handled at once
    if [ "$proto" = grpc ]; then
        inflight=$((connections * streams))
        local hdr=(-H 'content-type: application/grpc' -H 'te: trailers')
        [ -n "$enc" ] && hdr+=(-H "grpc-encoding: $enc")
        timeout $((duration + 30)) taskset -c 1 h2load -t1 -c"$connections" \
            -m"$streams" -D"$duration" -d "$file" "${hdr[@]}" \
            --log-file="$work/h2load-requests-$label-$run_index.tsv" \
            "http://127.0.0.1:$grpc_port/opentelemetry.proto.collector.trace.v1.TraceService/Export" \
            >"$wlog" 2>&1 &
    else
        inflight=$connections
        timeout $((duration + 30)) taskset -c 1 wrk -t1 -c"$connections" \
            -d"${duration}s" --timeout 10s -s "$here/wrk/post_body.lua" \
            "http://127.0.0.1:$daemon_port" -- "$file" "$enc" "$mode" >"$wlog" 2>&1 &
    fi
    wrk_pid=$!
    wait "$wrk_pid" || true
    wrk_pid=""
    t1="$(now_ms)"
    c1="$(cpu_ticks "$daemon_pid")"
    k1="$(core0_ticks)"
    s1="$(sink_stats)"
    m1="$(admin_metrics)"
    if [ "$proto" = grpc ]; then
        wrkline="$(h2load_summary "$wlog" "$work/h2load-requests-$label-$run_index.tsv" |
            cut -d' ' -f2-)" || wrkline=""
    else
        wrkline="$(grep '^o2l-wrk ' "$wlog" | head -n 1 | cut -d' ' -f2-)"
    fi
    if [ -z "$wrkline" ]; then
        cat "$wlog" >&2
        echo "run.sh: the load tool printed no result for $label" >&2
        exit 1
    fi

    # wait (bounded) until the sink count stops growing for 3 s
    local last stable=0 e deadline
    last="$(json_num events "$s1")"
    deadline=$(($(now_ms) + drain_max * 1000))
    while [ "$(now_ms)" -lt "$deadline" ] && [ "$stable" -lt 6 ]; do
        sleep 0.5
        e="$(json_num events "$(sink_stats)")"
        if [ "$e" = "$last" ]; then
            stable=$((stable + 1))
        else
            stable=0
            last="$e"
        fi
    done
    s2="$(sink_stats)"
    c2="$(cpu_ticks "$daemon_pid")"

    local hwm
    hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$daemon_pid/status" 2>/dev/null || echo 0)"
    # the spool's counters before the stop: requests accepted, commits
    m2="$(admin_metrics)"
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" 2>/dev/null || true
        perf_pid=""
    fi
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        log "daemon did not stop within 15 s of SIGTERM; killing it"
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    local drc=0
    wait "$daemon_pid" 2>/dev/null || drc=$?
    daemon_pid=""
    local spool_kb
    spool_kb="$(du -sk "$spool" 2>/dev/null | cut -f1)"
    [ -n "$spool_kb" ] || spool_kb=0
    [ "$keep" = 1 ] || rm -rf "$spool"

    # refusals the daemon logged (at warn: spool full found after decoding;
    # the cheaper refusal before reading the body is logged at debug only)
    local logged_refusals
    logged_refusals="$(grep -c 'answered UNAVAILABLE\|answered 503' "$dlog" || true)"

    local wdur n200 n503 nother lat50 lat99 nreq reused
    wdur="$(json_num duration_us "$wrkline")"
    reused="$(json_num reused "$wrkline")" || reused=0 # h2load: none
    [ -n "$reused" ] || reused=0
    nreq="$(json_num requests "$wrkline")"
    n200="$(json_num status_200 "$wrkline")"
    n503="$(json_num status_503 "$wrkline")"
    nother="$(json_num status_other "$wrkline")"
    lat50="$(json_num latency_p50_us "$wrkline")"
    lat99="$(json_num latency_p99_us "$wrkline")"
    local ev0 ev1 ev2 by0 by2 last_ms cpu0 cpu1
    ev0="$(json_num events "$s0")"
    ev1="$(json_num events "$s1")"
    ev2="$(json_num events "$s2")"
    by0="$(json_num bytes "$s0")"
    by2="$(json_num bytes "$s2")"
    last_ms="$(json_num last_ms "$s2")"
    cpu0="$(awk -v a="$(json_num cpu_user_ms "$s0")" -v b="$(json_num cpu_system_ms "$s0")" 'BEGIN { print a + b }')"
    cpu1="$(awk -v a="$(json_num cpu_user_ms "$s1")" -v b="$(json_num cpu_system_ms "$s1")" 'BEGIN { print a + b }')"

    # the spool's counters: at the start and the end of the load, and
    # before the stop (-1 where the admin listener did not answer)
    local acc0 acc1 acc2 com0 com1 com2 refused held wfail
    acc0="$(metric requests_accepted_total "$m0")"
    acc1="$(metric requests_accepted_total "$m1")"
    acc2="$(metric requests_accepted_total "$m2")"
    com0="$(metric spool_commits_total "$m0")"
    com1="$(metric spool_commits_total "$m1")"
    com2="$(metric spool_commits_total "$m2")"
    refused="$(metric requests_refused_total "$m2")"
    held="$(metric spool_requests "$m2")"
    wfail="$(metric spool_write_failures_total "$m2")"

    awk -v name="$label" -v spans="$spans" -v events="$events" \
        -v body="$body_bytes" -v wdur="$wdur" -v n200="$n200" -v n503="$n503" \
        -v nother="$nother" -v ev0="$ev0" -v ev1="$ev1" -v ev2="$ev2" \
        -v by0="$by0" -v by2="$by2" -v t0="$t0" -v t1="$t1" -v last="$last_ms" \
        -v c0="$c0" -v c1="$c1" -v tck="$clk_tck" -v hwm="$hwm" \
        -v scpu0="$cpu0" -v scpu1="$cpu1" -v lat50="$lat50" -v lat99="$lat99" \
        -v drc="$drc" -v k0="$k0" -v k1="$k1" -v c2="$c2" -v nreq="$nreq" \
        -v inflight="$inflight" -v proto="$proto" -v logged="$logged_refusals" \
        -v sync="$sync" -v base="$name" -v acc0="$acc0" -v acc1="$acc1" \
        -v acc2="$acc2" -v com0="$com0" -v com1="$com1" -v com2="$com2" \
        -v refused="$refused" -v held="$held" -v spool_kb="$spool_kb" -v wfail="$wfail" \
        -v reused="$reused" -v window="$window" '
    BEGIN {
        secs = wdur / 1e6
        acked = n200 * spans / secs
        delivered = ev2 - ev0
        expected = n200 * events
        # end to end: from the start of the load to the last event that
        # reached the sink, the whole backlog included
        e2e_secs = (last > t0 ? last - t0 : t1 - t0) / 1000
        e2e_events = delivered / e2e_secs
        e2e_spans = e2e_events * spans / events
        in_window = (ev1 - ev0) / ((t1 - t0) / 1000)
        mb_in = n200 * body / secs / 1e6
        mb_out = (by2 - by0) / e2e_secs / 1e6
        cpu = (c1 - c0) / tck / ((t1 - t0) / 1000) * 100
        scpu = (scpu1 - scpu0) / (t1 - t0) * 100
        split(k0, ka, " ")
        split(k1, kb, " ")
        ktot = kb[3] - ka[3]
        idle = ktot > 0 ? (kb[1] - ka[1]) / ktot * 100 : 0
        steal = ktot > 0 ? (kb[2] - ka[2]) / ktot * 100 : 0
        # spans delivered per CPU-second the daemon used from the start of
        # the load to the end of the drain: what one whole core would do
        per_cpu = c2 > c0 ? delivered * spans / events / ((c2 - c0) / tck) : 0
        # answers of any kind per second, as the load tool saw them
        rps = (n200 + n503 + nother) / secs
        # requests accepted and spool commits over the load window (the
        # commits include those that only deleted delivered requests)
        acc_load = (acc0 >= 0 && acc1 >= 0) ? acc1 - acc0 : -1
        com_load = (com0 >= 0 && com1 >= 0) ? com1 - com0 : -1
        printf "%s %d %d %d %.0f %.0f %.0f %.0f %d %d %.1f %.1f %.0f %.0f %.1f %d %.1f %.1f %d %.0f %.0f %.0f %.0f %d %s %d",
            name, n200, n503, nother, acked, e2e_spans, e2e_events, in_window,
            delivered, expected, mb_in, mb_out, cpu, scpu, hwm / 1024,
            lat99 / 1000, lat50 / 1000, e2e_secs, drc, idle, steal, per_cpu,
            rps, inflight, proto, logged
        printf " %s %s %d %d %d %d %d %d %d %d %d %s\n", sync, base, acc_load, com_load,
            acc2, com2, refused, held, spool_kb, wfail, reused, window
    }' >>"$results"
}

for r in $(seq 1 "$repeat"); do
    run_index=$r
    # with both modes, every other run takes them in the other order, so
    # that a drift of the machine does not always favour the same one
    modes=("${sync_modes[@]}")
    if [ "${#modes[@]}" = 2 ] && [ $((r % 2)) = 0 ]; then
        modes=("${sync_modes[1]}" "${sync_modes[0]}")
    fi
    for c in "${case_list[@]}"; do
        for m in "${modes[@]}"; do
            case "$c" in
            small) run_case small "$small_pb" "" "$small_spans" "$small_events" http "$m" ;;
            small-gzip) run_case small-gzip "$small_pool" gzip "$small_spans" "$small_events" http "$m" pool ;;
            llm) run_case llm "$llm_pb" "" "$llm_spans" "$llm_events" http "$m" ;;
            llm-gzip) run_case llm-gzip "$llm_pool" gzip "$llm_spans" "$llm_events" http "$m" pool ;;
            grpc-small) run_case grpc-small "$work/small_100.grpc" "" "$small_spans" "$small_events" grpc "$m" ;;
            grpc-small-gzip) run_case grpc-small-gzip "$work/small_100.gz.grpc" gzip "$small_spans" "$small_events" grpc "$m" ;;
            grpc-llm) run_case grpc-llm "$work/llm_512.grpc" "" "$llm_spans" "$llm_events" grpc "$m" ;;
            grpc-llm-gzip) run_case grpc-llm-gzip "$work/llm_512.gz.grpc" gzip "$llm_spans" "$llm_events" grpc "$m" ;;
            esac
        done
    done
done

# --- report -----------------------------------------------------------------
echo
echo "otel2langfuse OTLP benchmark - $(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown) $(date -u +%Y-%m-%dT%H:%MZ)"
echo "daemon pinned to core 0 (taskset -c 0); the load (HTTP: wrk -t1 -c$connections, gRPC: h2load -t1 -c$connections -m$streams)"
echo "and the sink on core 1; ${duration}s of load per case"
echo "daemon: O2L_BATCH_MAX_EVENTS=$batch_max_events O2L_QUEUE_MAX_EVENTS=$queue_max_events O2L_QUEUE_MAX_BYTES=$queue_max_bytes ${extra_env[*]+${extra_env[*]}}"
env_window=""
for e in ${extra_env[@]+"${extra_env[@]}"}; do
    case "$e" in O2L_ASSEMBLE_WINDOW_MS=*) env_window="${e#*=}" ;; esac
done
echo "trace ids: HTTP (wrk) a counter per request in every trace id (gzip cases: a pool of distinct bodies),"
echo "  daemon with $(if [ -n "$env_window" ]; then echo "O2L_ASSEMBLE_WINDOW_MS=$env_window (--env)"; else echo "its default assemble window"; fi);" \
    "gRPC (h2load) the same body in every request, daemon with"
echo "  $(if [ -n "$env_window" ]; then echo "O2L_ASSEMBLE_WINDOW_MS=$env_window (--env)"; elif [ "$grpc_window" = default ]; then echo "its default assemble window (copies of a span collapse: events lost to the count)"; else echo "O2L_ASSEMBLE_WINDOW_MS=$grpc_window (no holding, so the copies are not collapsed)"; fi)"
echo "spool: O2L_SPOOL_SYNC=$(case "$spool_sync" in on) echo true ;; off) echo false ;; *) echo "true, then false (\" nosync\")" ;; esac)" \
    "O2L_SPOOL_MAX_BYTES=$spool_max_bytes, a fresh O2L_SPOOL_DIR per run in $work"
echo "spool filesystem: $disk_fs; $disk_df"
echo "spool disk: $dsync_line"
echo
awk 'BEGIN {
    printf "%-22s %7s %7s %7s %5s %8s %8s %8s %9s %9s %9s %9s %6s %6s %5s %5s %5s %5s %7s %6s %6s\n",
        "case", "req/s", "ok", "refused", "other", "acked", "e2e", "e2e", "events/s", "spans per", "delivered", "expected",
        "MB/s", "MB/s", "cpu%", "idle%", "steal", "sink", "peakRSS", "p50", "p99"
    printf "%-22s %7s %7s %7s %5s %8s %8s %8s %9s %9s %9s %9s %6s %6s %5s %5s %5s %5s %7s %6s %6s\n",
        "", "", "", "", "", "spans/s", "spans/s", "events/s", "in window", "cpu-sec", "events", "events",
        "in", "out", "", "core0", "core0", "cpu%", "MB", "ms", "ms"
}
{
    c = $1
    sub(/-nosync$/, " nosync", c)
    printf "%-22s %7d %7d %7d %5d %8d %8d %8d %9d %9d %9d %9d %6.1f %6.1f %5d %5d %5d %5d %7.1f %6.1f %6d\n",
        c, $23, $2, $3, $4, $5, $6, $7, $8, $22, $9, $10, $11, $12, $13, $20, $21, $14, $15, $17, $16
}' "$results"
echo
echo "req/s: answers of any kind per second as the load tool saw them; ok: HTTP 200 (wrk) or"
echo "gRPC OK (h2load: answers with the 5-byte OK message); refused: HTTP 503, or for gRPC the"
echo "HTTP 200s without it (trailers-only grpc-status != 0, e.g. 14 UNAVAILABLE when the spool"
echo "is full), which h2load counts as successes; other: any other answer or failed request."
echo "cpu%: the daemon (all its threads) over the load window; idle%/steal: core 0 idle and"
echo "taken by the hypervisor over that window; sink cpu%: the sink on core 1; spans per"
echo "cpu-sec: spans delivered per CPU-second the daemon used (load + drain), i.e. what one"
echo "core wholly given to the daemon would carry."
echo
echo "acked spans/s: ok answers (each sent once its request is committed to the spool) x spans"
echo "per request / load time; e2e: events that reached the sink / (last arrival - start of"
echo "load), spans/s = that x spans/events per request."
echo
echo "spool, from the daemon's /metrics (otel2langfuse_requests_accepted_total and"
echo "otel2langfuse_spool_commits_total): over the load, and in all before the stop"
awk 'BEGIN {
    printf "%-22s %5s %9s %8s %8s %9s %8s %8s %7s %6s %8s\n", "case", "sync",
        "accepted", "commits", "requests", "accepted", "commits", "requests", "refused", "held", "spool MB"
    printf "%-22s %5s %9s %8s %8s %9s %8s %8s %7s %6s %8s\n", "", "",
        "in load", "in load", "/commit", "in all", "in all", "/commit", "", "at end", "on disk"
}
function per(a, b) { return (a >= 0 && b > 0) ? sprintf("%.2f", a / b) : "n/a" }
function num(v) { return v >= 0 ? v : "n/a" }
{
    c = $1
    sub(/-nosync$/, " nosync", c)
    printf "%-22s %5s %9s %8s %8s %9s %8s %8s %7s %6s %8.1f\n", c, $27,
        num($29), num($30), per($29, $30), num($31), num($32), per($31, $32),
        num($33), num($34), $35 / 1024
}' "$results"
echo "requests/commit: requests that shared one spool transaction (one fsync when sync is on);"
echo "a lower bound, as commits also count the transactions that only delete delivered requests."
echo "held: requests still in the spool before the stop (0 when all was delivered)."
echo
awk '{ n[$1]++; e2e[$1, n[$1]] = $6; win[$1] = $38; if ($15 > rss[$1]) rss[$1] = $15; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
END {
    for (i = 1; i <= k; i++) {
        c = order[i]
        # median of the runs of this case (insertion sort; a few runs)
        m = n[c]
        for (a = 1; a <= m; a++) v[a] = e2e[c, a]
        for (a = 2; a <= m; a++) { x = v[a]; for (b = a - 1; b >= 1 && v[b] > x; b--) v[b + 1] = v[b]; v[b + 1] = x }
        med[c] = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
        shown = c
        sub(/-nosync$/, " nosync", shown)
        if (c ~ /llm/)
            printf "target %-22s e2e %6d LLM-sized spans/s vs 40000: %.2fx   peak RSS %.1f MB vs 64 MB: %s\n",
                shown, med[c], med[c] / 40000, rss[c], (rss[c] < 64 ? "under" : "OVER")
        else
            printf "       %-22s e2e %6d small spans/s (no target)          peak RSS %.1f MB vs 64 MB: %s\n",
                shown, med[c], rss[c], (rss[c] < 64 ? "under" : "OVER")
    }
    # the same body over both paths
    for (i = 1; i <= k; i++) {
        c = order[i]
        if (c !~ /^grpc-/) continue
        h = substr(c, 6)
        if (!(h in med) || med[h] == 0) continue
        shown = h
        sub(/-nosync$/, " nosync", shown)
        printf "gRPC vs HTTP  %-17s e2e %6d vs %6d spans/s (%.2fx)   peak RSS %.1f vs %.1f MB",
            shown, med[c], med[h], med[c] / med[h], rss[c], rss[h]
        # not like for like when the assemble windows differ
        if (win[c] != win[h])
            printf "   (assemble window %s vs %s: not like for like)", win[c], win[h]
        printf "\n"
    }
}' "$results"
# The cost of the fsync before the answer: for every case run both ways,
# the medians with sync on over those with sync off.
awk '
function median(key, col,    m, a, b, x, v) {
    m = n[key]
    for (a = 1; a <= m; a++) v[a] = val[key, col, a]
    for (a = 2; a <= m; a++) { x = v[a]; for (b = a - 1; b >= 1 && v[b] > x; b--) v[b + 1] = v[b]; v[b + 1] = x }
    return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
}
function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
{
    key = $28 SUBSEP $27
    i = ++n[key]
    val[key, "acked", i] = $5
    val[key, "e2e", i] = $6
    val[key, "cpu", i] = $22
    val[key, "p50", i] = $17
    val[key, "rpc", i] = ($29 >= 0 && $30 > 0) ? $29 / $30 : 0
    if (!($28 in seen)) { seen[$28] = 1; order[++k] = $28 }
}
END {
    for (i = 1; i <= k; i++) {
        c = order[i]
        on = c SUBSEP "on"
        off = c SUBSEP "off"
        if (!(on in n) || !(off in n)) continue
        if (!printed++) {
            print ""
            print "spool sync on / off (medians): acked and e2e spans/s, spans per daemon cpu-sec, p50, requests per commit in the load"
        }
        printf "sync/nosync %-16s acked %6d / %6d = %s   e2e %6d / %6d = %s   per cpu-sec %s   p50 %.1f / %.1f ms   requests/commit %.2f / %.2f\n",
            c, median(on, "acked"), median(off, "acked"), ratio(median(on, "acked"), median(off, "acked")),
            median(on, "e2e"), median(off, "e2e"), ratio(median(on, "e2e"), median(off, "e2e")),
            ratio(median(on, "cpu"), median(off, "cpu")),
            median(on, "p50"), median(off, "p50"), median(on, "rpc"), median(off, "rpc")
    }
}' "$results"
awk '{ c = $1; sub(/-nosync$/, " nosync", c) }
$3 > 0 {
    printf "note: %s: %d requests refused (%s), not counted as acknowledged\n", c, $3,
        ($25 == "grpc" ? "gRPC status != 0 in a 200" : "HTTP 503")
}
$26 > 0 {
    printf "note: %s: the daemon logged %d UNAVAILABLE or 503 answers at warn level\n", c, $26
}
$9 < $10 {
    printf "note: %s: the sink received %d events, fewer than the %d expected from the 200s\n", c, $9, $10
}
$9 > $10 + $24 * $10 / ($2 > 0 ? $2 : 1) {
    printf "note: %s: the sink received %d events, more than the %d expected from the 200s and the requests in flight at the stop\n", c, $9, $10
}
$19 != 0 {
    printf "note: %s: the daemon exited with status %d after SIGTERM\n", c, $19
}
$29 < 0 || $31 < 0 {
    printf "note: %s: the admin /metrics on 127.0.0.1:'"$admin_port"' did not answer; no spool figures\n", c
}
$33 > 0 {
    printf "note: %s: the daemon counted %d refusals (otel2langfuse_requests_refused_total: spool full or stopping)\n", c, $33
}
$34 > 0 {
    printf "note: %s: %d requests were still in the spool at the stop (not yet delivered)\n", c, $34
}
$36 > 0 {
    printf "note: %s: %d spool transactions failed\n", c, $36
}
$37 > 0 {
    printf "note: %s: %d requests reused a body of the gzip pool (trace ids sent before; raise --pool-rates)\n", c, $37
}' "$results"
echo "(the sink may count up to $connections (HTTP) or $((connections * streams)) (gRPC) requests more than the ok answers:"
echo " those in flight when the load tool stopped)"

# --- profile ----------------------------------------------------------------
# Splits perf samples by pipeline stage: each sample goes to the innermost
# frame of its call chain that is one of the stage entry points below.
stage_split() {
    awk '
    BEGIN {
        n = split("o2l_otlp_decode_pb:decode o2l_otlp_decode_json:decode " \
            "inflate:gunzip o2l_map_export:map o2l_mapped_free:free-model " \
            "o2l_encode_ingestion:encode o2l_exporter_submit:queue " \
            "o2l_assemble_add:assemble o2l_assemble_release:assemble " \
            "o2l_assemble_done:assemble o2l_assemble_facts:assemble " \
            "o2l_export_free:free-request worker_main:export-thread " \
            "writer_main:spool-writer o2l_delivery_main:delivery-other " \
            "on_request:receive-other event_base_loop:libevent-io", a, " ")
        for (i = 1; i <= n; i++) { split(a[i], kv, ":"); stage[kv[1]] = kv[2] }
    }
    function flush() { total++; cnt[got == "" ? "other" : got]++; got = "" }
    /^[^\t]/ { if (open) flush(); open = 1; got = ""; next }
    /^\t/ {
        if (got == "") { f = $2; sub(/\+0x.*/, "", f); if (f in stage) got = stage[f] }
        next
    }
    /^$/ { if (open) flush(); open = 0 }
    END {
        if (open) flush()
        for (k in cnt) printf "  %5.1f%%  %s\n", 100 * cnt[k] / total, k
    }' | sort -rn
}

if [ "$do_perf" = 1 ]; then
    echo
    if [ "$force_cg" = 0 ] && [ -s "$work/perf.data" ] &&
        perf report -i "$work/perf.data" --stdio --no-children --sort dso,symbol \
            -g none --percent-limit 0.7 >"$work/perf.txt" 2>"$work/perf-report.err"; then
        echo "perf, daemon during the $perf_case case: share of samples by stage"
        perf script -i "$work/perf.data" -F tid,ip,sym 2>/dev/null | stage_split
        echo
        echo "perf, daemon during the $perf_case case: self time by function (top entries)"
        grep -v '^#' "$work/perf.txt" | grep -v '^$' | sed 's/[ -]*$//' | head -n 30
        echo
        echo "(perf data: $work/perf.data; see the README for the caller views)"
    else
        if [ "$force_cg" = 0 ]; then
            echo "perf could not record the daemon ($(tail -n 1 "$work/perf-record.log" 2>/dev/null));"
        fi
        echo "callgrind of 'otel2langfuse convert' on the LLM fixture instead:"
        if ! command -v valgrind >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get install -y -q valgrind >>"$work/apt.log" 2>&1 || true
        fi
        if command -v valgrind >/dev/null 2>&1; then
            timeout 600 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
                "$bin" convert "$llm_pb" >/dev/null 2>"$work/callgrind.log" || true
            callgrind_annotate "$work/callgrind.out" 2>/dev/null | head -n 45
        else
            echo "valgrind is not installed"
        fi
    fi
fi

if [ "$map_seconds" -gt 0 ]; then
    run_map_bench || echo "run.sh: the map bench could not run (see above)" >&2
fi
