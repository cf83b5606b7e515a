#!/usr/bin/env bash
# Stops the daemons that ci/slurm/up.sh started, by their saved process ids, compute nodes first.
# Safe to run when nothing is running.
STATE=${STATE:-/var/lib/slurm-ci}
# Cancel what is still queued or running (this cluster only runs CI jobs) so no job step outlives it.
if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
  jobs=$(timeout 3 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    timeout 5 scancel $jobs || true
    for _ in $(seq 20); do [ -z "$(timeout 3 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
for pidfile in "$STATE"/slurmd-n*.pid "$STATE/slurmctld.pid" /run/munge/munged.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$pidfile"
done
exit 0
