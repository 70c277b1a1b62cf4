#!/bin/bash
# End-to-end test of examples/cluster/slurm*.sh on a real, throw-away,
# single-node SLURM cluster (munged + slurmctld + slurmd) run on this machine.
#
#   bash tests/slurm/run.sh /path/to/ome-pyramid
#
# Needs root (slurmd launches jobs) and the Debian packages slurm-wlm and
# munge; nothing in /etc is read or changed (SLURM_CONF and munged's options
# point into a temporary directory) and no systemd is needed.
# Exits 0 on success, 77 (SKIP) without the daemons or root, 1 on failure.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash tests/slurm/run.sh /path/to/ome-pyramid" >&2
    exit 2
fi
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -x "$bin" ] || { echo "FAIL: $1 is not an executable" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
cluster="$repo/examples/cluster"

for cmd in munged munge slurmctld slurmd sbatch scontrol sinfo scancel; do
    if ! command -v "$cmd" > /dev/null; then
        echo "SKIP: $cmd is not installed (Debian: apt-get install slurm-wlm munge)"
        exit 77
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: needs root (slurmd runs jobs as their users)"
    exit 77
fi

start=$SECONDS
log() { echo "[$((SECONDS - start))s] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# A SLURM job or the caller's shell may carry SLURM_*/SBATCH_* variables that
# would steer sbatch (SBATCH_WAIT, SLURM_JOB_ID, ...) away from our cluster.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(SLURM|SBATCH|SALLOC|SRUN)_' || true)

# munged insists that every directory above its socket is executable by all,
# and that the key's directory is not writable by others: 0755 and 0700.
tmp=$(mktemp -d /tmp/ome-pyramid-slurm.XXXXXX)
chmod 0755 "$tmp"
mkdir -m 0700 "$tmp/munge"
mkdir -m 0755 "$tmp/run"
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/work"

ctld_pid='' slurmd_pid='' munged_pid=''
cleanup() {
    local status=$?
    set +e
    # Ask a live controller (a dead one would make clients retry for minutes)
    # to cancel our jobs, which ends any sbatch --wait, then to stop both daemons.
    if [ -n "$ctld_pid" ] && kill -0 "$ctld_pid" 2> /dev/null; then
        timeout 10 scancel --quiet --user=root 2> /dev/null
        timeout 10 scontrol shutdown > /dev/null 2>&1
        for _ in $(seq 50); do
            kill -0 "$ctld_pid" 2> /dev/null || kill -0 "$slurmd_pid" 2> /dev/null || break
            sleep 0.2
        done
    fi
    for pid in $ctld_pid $slurmd_pid; do kill -9 "$pid" 2> /dev/null; done
    [ -n "$munged_pid" ] && kill "$munged_pid" 2> /dev/null
    if [ "$status" -ne 0 ]; then
        for f in "$tmp"/log/* "$tmp"/work/*.log "$tmp"/work/*.out; do
            [ -f "$f" ] || continue
            # A daemon's .out repeats its .log; it matters only without one.
            case $f in "$tmp"/log/slurm*.out) [ -s "${f%.out}.log" ] && continue ;; esac
            echo "----- $f (last 40 lines)"
            tail -n 40 "$f"
        done
        echo "FAIL: exit status $status after $((SECONDS - start)) s" >&2
    fi
    wait 2> /dev/null
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- munge, with its own key and socket -----------------------------------
if command -v mungekey > /dev/null; then
    mungekey --create --keyfile="$tmp/munge/munge.key"
else
    dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 0400 "$tmp/munge/munge.key"   # munged runs as root here, root owns it
socket="$tmp/run/munge.socket"
munged --socket="$socket" --key-file="$tmp/munge/munge.key" \
    --log-file="$tmp/log/munged.log" --pid-file="$tmp/run/munged.pid" \
    --seed-file="$tmp/munge/munged.seed"   # forks; the pid file names it
munged_pid=$(cat "$tmp/run/munged.pid")
munge -n -S "$socket" | unmunge -S "$socket" > /dev/null || fail "munge round trip"
log "munged $(munged -V | cut -d' ' -f1) up (pid $munged_pid)"

# --- slurm.conf -------------------------------------------------------------
host=$(hostname -s)
mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
mem=$((mem * 9 / 10))   # a node reporting less memory than configured is drained
# Two free TCP ports, chosen at random so that this can run beside a real
# cluster or another test; bash's /dev/tcp connects only if one is in use.
for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && continue
    (echo > "/dev/tcp/127.0.0.1/$((port + 1))") 2> /dev/null && continue
    break
done
export SLURM_CONF="$tmp/slurm.conf"
cat > "$SLURM_CONF" << EOF
ClusterName=omepyramidtest
# Everything on loopback: the host name need not resolve.
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
# No cgroups (containers, no systemd): plain process tracking, no binding,
# no accounting (no slurmdbd, so sacct does not work: scontrol is used).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A node that was down comes back by itself once its slurmd registers.
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons: -D (no fork) in background jobs, so that $! is their pid; setsid
# keeps a Ctrl-C for this script from killing them before the orderly teardown.
setsid slurmctld -D > "$tmp/log/slurmctld.out" 2>&1 < /dev/null &
ctld_pid=$!
setsid slurmd -D > "$tmp/log/slurmd.out" 2>&1 < /dev/null &
slurmd_pid=$!
state=''
for _ in $(seq 120); do
    state=$(sinfo --noheader --nodes="$host" --format=%T 2> /dev/null || true)
    [ "$state" = idle ] && break
    kill -0 "$ctld_pid" 2> /dev/null || fail "slurmctld exited"
    kill -0 "$slurmd_pid" 2> /dev/null || fail "slurmd exited"
    sleep 0.5
done
[ "$state" = idle ] || fail "node $host is '$state', not idle, after 60 s"
log "slurm $(slurmd -V | cut -d' ' -f2) up: node $host idle, $(nproc) CPUs, ${mem} MB"

# --- the flow -----------------------------------------------------------------
cd "$tmp/work"
# Small jobs: one core each, so that the 3 parts fit even a 1-core machine
# (the example scripts ask for more, which this node may not have).
export OME_PYRAMID="$bin" SBATCH_OPTS="--cpus-per-task=1 --mem=256M"

"$bin" synth in.zarr --size 64,256,256 --chunks 16,64,64 -q
"$bin" build in.zarr ref.ome.zarr --backend cpu -q
log "reference built"

# job_field JOBID FIELD: FIELD=value of each record (an array has one per task).
job_field() { scontrol show job "$1" | grep -o "\b$2=[^ ]*" | cut -d= -f2; }

# 1. plan, 3 array tasks, finalize after them; --wait returns finalize's status.
status=0
timeout --foreground 90 bash "$cluster/slurm.sh" --wait in.zarr out.ome.zarr 3 --backend cpu -q \
    > slurm.out 2>&1 || status=$?
cat slurm.out
[ "$status" -eq 0 ] || fail "slurm.sh exited $status"
array=$(sed -n 's/^parts: array job \([0-9]*\).*/\1/p' slurm.out)
final=$(sed -n 's/^finalize: job \([0-9]*\).*/\1/p' slurm.out)
[ -n "$array" ] && [ -n "$final" ] || fail "no job ids in slurm.sh's output"
states=$(job_field "$array" JobState | sort | uniq -c | xargs)
[ "$states" = "3 COMPLETED" ] || fail "array $array tasks: $states, not 3 COMPLETED"
codes=$(job_field "$array" ExitCode | sort -u | xargs)
[ "$codes" = "0:0" ] || fail "array $array exit codes: $codes"
for i in 0 1 2; do
    [ -f "ome-pyramid-part-${array}_$i.log" ] || fail "no log of task $i"
done
[ "$(job_field "$final" JobState)" = COMPLETED ] || fail "finalize job $final: $(job_field "$final" JobState)"
diff -r ref.ome.zarr out.ome.zarr || fail "partitioned output differs from build"
log "PASS: 3 parts COMPLETED, finalize COMPLETED, output equals build"

# 2. finalize alone, no part has run: must fail and name the parts.
"$bin" plan in.zarr out2.ome.zarr --parts 3 --backend cpu -q
status=0
# shellcheck disable=SC2086 # SBATCH_OPTS is word-split on purpose
final2=$(timeout --foreground 60 sbatch --parsable --wait $SBATCH_OPTS "$cluster/slurm-finalize.sh" out2.ome.zarr) || status=$?
final2=${final2%%;*}
[ "$status" -eq 1 ] || fail "finalize without parts: sbatch --wait exited $status, not 1"
[ "$(job_field "$final2" JobState)" = FAILED ] || fail "finalize job $final2: $(job_field "$final2" JobState)"
grep -q 'part 0 has not run; part 1 has not run; part 2 has not run' \
    "ome-pyramid-finalize-$final2.log" || fail "finalize's log does not name the missing parts"
[ ! -e out2.ome.zarr/.zattrs ] || fail "failed finalize wrote image metadata"
log "PASS: finalize without parts FAILED (exit 1) naming parts 0, 1, 2"

# 3. a failing task: finalize is cancelled (not left pending for ever), and
#    rerunning that task then finalize completes the same output.
cat > failing-part.sh << EOF
#!/bin/bash
[ "\${SLURM_ARRAY_TASK_ID:-}" = 1 ] && [ "\${1:-}" = part ] && { echo "task 1 fails on purpose" >&2; exit 3; }
exec "$bin" "\$@"
EOF
chmod +x failing-part.sh
status=0
# (SBATCH_WAIT=1 here, the other spelling of --wait.)
OME_PYRAMID="$tmp/work/failing-part.sh" SBATCH_WAIT=1 timeout --foreground 60 bash "$cluster/slurm.sh" \
    in.zarr out3.ome.zarr 3 --backend cpu -q > slurm3.out 2>&1 || status=$?
cat slurm3.out
[ "$status" -ne 0 ] || fail "slurm.sh with a failing task exited 0"
array3=$(sed -n 's/^parts: array job \([0-9]*\).*/\1/p' slurm3.out)
final3=$(sed -n 's/^finalize: job \([0-9]*\).*/\1/p' slurm3.out)
[ "$(job_field "$final3" JobState)" = CANCELLED ] || fail "finalize job $final3: $(job_field "$final3" JobState), not CANCELLED"
[ "$(scontrol show job "${array3}_1" | grep -o '\bJobState=[^ ]*')" = JobState=FAILED ] || fail "task 1 did not fail"
[ ! -e out3.ome.zarr/.zattrs ] || fail "image metadata written though a part failed"
# Rerun the failed part alone, then finalize. Its INDEX is given: a task of
# a new --array=1 would be part 0 (the index counts from SLURM_ARRAY_TASK_MIN).
# shellcheck disable=SC2086
rerun=$(sbatch --parsable $SBATCH_OPTS "$cluster/slurm-part.sh" out3.ome.zarr 1)
rerun=${rerun%%;*}
# shellcheck disable=SC2086
timeout --foreground 60 sbatch --parsable --wait $SBATCH_OPTS --dependency="afterok:$rerun" \
    --kill-on-invalid-dep=yes "$cluster/slurm-finalize.sh" out3.ome.zarr > /dev/null ||
    fail "finalize after rerunning task 1 failed"
diff -r ref.ome.zarr out3.ome.zarr || fail "output after the rerun differs from build"
log "PASS: failed task cancels finalize; rerun + finalize equals build"

log "ALL PASS (slurm $(slurmd -V | cut -d' ' -f2), $((SECONDS - start)) s)"
