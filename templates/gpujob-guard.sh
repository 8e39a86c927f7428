#!/bin/bash
# gpujob machine guard: powers this machine off once nobody needs it, even if every client is gone.
# Started at boot by the boot script (aws-user-data.sh, gcp-startup.sh), as root, before any client
# has logged in: it protects a machine whose client died right after the launch.
#
#   gpujob-guard.sh --dir DIR [--ssh-port 22] [--unfetched-grace 900] [--idle-timeout 600]
#                   [--poll 5] [--poweroff CMD]          (durations in seconds, decimals allowed)
#
# What it watches (written by the client over SSH, see launcher/guard.py):
#   DIR/job      "PGID EXIT_FILE", written by the same remote shell that starts the job
#   DIR/fetched  "release" once the results are home, "keep" when the user kept the machine (--keep)
# A client is attached while a TCP connection to sshd (--ssh-port) is established: gpujob's own
# session, `gpujob ssh`, or the user's ssh. sshd's ClientAliveInterval drops connections of dead clients.
#
# Rules, on the monotonic clock (/proc/uptime), every --poll seconds; the first that matches decides:
#   1. the job runs                                   -> nothing (the max_duration watchdog bounds it)
#   2. results fetched ("release"), no client attached -> power off now
#   3. the job ended, results not fetched: once it ended --unfetched-grace ago and no client is
#      attached -> power off (the results are lost: that grace is the user's window to fetch them)
#   4. otherwise (no job yet, or a kept machine): no client attached for --idle-timeout -> power off
# Powering off runs --poweroff (default: a clean shutdown, forced if that fails). On EC2 the instance
# was launched with InstanceInitiatedShutdownBehavior=terminate, so it is terminated; a Compute Engine
# VM stops (no more GPU, CPU or memory billing; its boot disk bills until the instance is deleted).
# Each decision is logged to DIR/guard.log; the reason for powering off is written to DIR/poweroff.
set -u

dir="" port=22 grace=900 idle=600 poll=5
poweroff="shutdown -h now 'gpujob guard: nothing left to do' || poweroff -f || halt -f"
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || { echo "gpujob-guard: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --dir) dir=$2 ;;
    --ssh-port) port=$2 ;;
    --unfetched-grace) grace=$2 ;;
    --idle-timeout) idle=$2 ;;
    --poll) poll=$2 ;;
    --poweroff) poweroff=$2 ;;
    *) echo "gpujob-guard: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
[ -n "$dir" ] || { echo "gpujob-guard: --dir is required" >&2; exit 2; }
mkdir -p "$dir"

centis() { awk -v s="$1" 'BEGIN { printf "%d", s * 100 }'; }  # seconds (decimals) -> 1/100 s
now() { local up _; read -r up _ < /proc/uptime; echo $(( 10#${up/./} )); }  # monotonic, 1/100 s
log() { echo "$(date -u +%FT%TZ) t=$(now) $*" >> "$dir/guard.log"; }

grace_cs=$(centis "$grace") idle_cs=$(centis "$idle")
hexport=$(printf '%04X' "$port")

attached() {  # an established TCP connection whose local port is sshd's
  awk -v p=":$hexport" '$4 == "01" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

group_alive() {  # a live (non-zombie) process in the job's process group
  if command -v ps >/dev/null 2>&1; then
    ps -e -o pgid= -o stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'
  else
    kill -0 -- "-$1" 2>/dev/null
  fi
}

job_state() {  # none | running | ended
  local pgid="" exitfile=""
  [ -s "$dir/job" ] || { echo none; return; }
  read -r pgid exitfile < "$dir/job"
  if [ -n "$exitfile" ] && [ -e "$exitfile" ]; then echo ended; return; fi
  case "$pgid" in ''|*[!0-9]*) echo ended; return ;; esac
  if group_alive "$pgid"; then echo running; else echo ended; fi
}

power_off() {
  log "powering off: $1"
  echo "$1" > "$dir/poweroff"
  sh -c "$poweroff"
  exit 0
}

log "started: ssh port $port, unfetched grace ${grace}s, idle timeout ${idle}s"
last_seen=$(now)  # the last time a client was attached (boot counts as a visit)
ended_at=""
while :; do
  t=$(now)
  if attached; then last_seen=$t; is_attached=1; else is_attached=0; fi
  state=$(job_state)
  fetched=$(cat "$dir/fetched" 2>/dev/null || true)
  if [ "$state" = running ]; then
    ended_at=""
  elif [ "$fetched" = release ] && [ $is_attached = 0 ]; then
    power_off "the results were fetched and no client is attached"
  elif [ "$state" = ended ] && [ -z "$fetched" ]; then
    [ -n "$ended_at" ] || { ended_at=$t; log "the job ended; results not fetched yet"; }
    if [ $is_attached = 0 ] && [ $(( t - ended_at )) -ge "$grace_cs" ]; then
      power_off "the job ended ${grace}s or more ago and no client fetched the results"
    fi
  elif [ $is_attached = 0 ] && [ $(( t - last_seen )) -ge "$idle_cs" ]; then
    power_off "no client attached for ${idle}s and no job running (job: $state, fetched: ${fetched:-no})"
  fi
  sleep "$poll"
done
