# shellcheck shell=bash
# Shared helpers of the lab scripts (lab-up, lab-down, lab-status, build-image).
# Sourced, not executed. Every path is derived from this file's location or
# from the caller's --dir; nothing of the machine is hard-coded.

LAB_TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_TOOLS/../.." && pwd)
KVMLAB_CACHE=${KVMLAB_CACHE:-$HOME/.cache/kvmlab-lab}
LAB_HOST_NAME=kvmlab-host
# The lab's own inventory data (group_vars of group 'lab'), copied next to the
# inventory lab-up writes. The guests lab-up creates are the ones it lists.
LAB_INVENTORY_SRC=$LAB_TOOLS/inventory
# shellcheck disable=SC2207
LAB_GUESTS=($(awk '/^  - name: / { print $3 }' "$LAB_INVENTORY_SRC/group_vars/lab.yml" 2>/dev/null))

PROG=$(basename "$0")

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Seconds since the epoch with a fraction, for timings.
now() { date +%s.%N; }
# elapsed START -> "12.3"
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# abs_dir DIR -> absolute path of DIR (created if missing).
abs_dir() {
    mkdir -p -- "$1"
    (cd -- "$1" && pwd)
}

# The state directory's files.
lab_files() {
    local d=$1
    PIDFILE=$d/qemu.pid
    OVERLAY=$d/overlay.qcow2
    SERIAL_LOG=$d/serial.log
    QEMU_LOG=$d/qemu.log
    KEY=$d/id_ed25519
    SSH_CONFIG=$d/ssh_config
    SSH_HELPER=$d/ssh
    INVENTORY=$d/inventory.yml
    GROUP_VARS=$d/group_vars
    STATE_ENV=$d/lab.env
    STATE_JSON=$d/lab.json
    LOCKFILE=$d/lock
}

# lab_pid DIR -> prints the pid of this DIR's QEMU and returns 0 when the
# recorded pid is alive and is really our QEMU (its command line names this
# DIR's overlay); returns 1 otherwise. Never looks processes up by name.
lab_pid() {
    local d=$1 pid cmdline
    [[ -s $d/qemu.pid ]] || return 1
    read -r pid < "$d/qemu.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmdline=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
    grep -qF -- "file=$d/overlay.qcow2," <<<"$cmdline" || return 1
    case $(head -n1 <<<"$cmdline") in
        *qemu-system-x86_64) ;;
        *) return 1 ;;
    esac
    printf '%s\n' "$pid"
}

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# lab_ssh DIR [ssh args...]: run a command on the lab host. Short timeouts:
# callers poll.
lab_ssh() {
    local d=$1; shift
    ssh -F "$d/ssh_config" -o ConnectTimeout=10 -o ServerAliveInterval=10 \
        -o ServerAliveCountMax=3 "$LAB_HOST_NAME" "$@"
}

# read_state DIR: loads PORT, PID, IMAGE, ... from DIR/lab.env if present.
read_state() {
    local f=$1/lab.env
    PORT= IMAGE= BOOTED_AT=
    [[ -r $f ]] || return 1
    # shellcheck disable=SC1090
    . "$f"
}

# lab_write_inventory: DIR/group_vars/ (the lab's inventory data, from
# tools/lab/inventory/group_vars) and DIR/inventory.yml for PORT and KEY, as
# set by lab_files and the caller. The inventory is written last and
# atomically: its presence means "usable". Needs DIR, PORT, KEY.
lab_write_inventory() {
    # ssh's control sockets: a short path (unix sockets are limited to 108
    # bytes), the directory Ansible uses too.
    local control_dir=$HOME/.ansible/cp
    mkdir -p -m 0700 "$control_dir"
    rm -rf "$GROUP_VARS.tmp"
    cp -R "$LAB_INVENTORY_SRC/group_vars" "$GROUP_VARS.tmp"
    rm -rf "$GROUP_VARS"
    mv "$GROUP_VARS.tmp" "$GROUP_VARS"
    cat > "$INVENTORY.tmp" <<EOF
# Written by lab-up for the lab in $DIR (removed by lab-down).
# Group variables (the lab's guests): group_vars/ beside this file.
all:
  children:
    lab:
      hosts:
        $LAB_HOST_NAME:
          ansible_host: 127.0.0.1
          ansible_port: $PORT
          ansible_user: root
          ansible_ssh_private_key_file: $KEY
          ansible_python_interpreter: /usr/bin/python3
          # The ControlPath lets testinfra (which builds its own ssh command
          # lines) reuse one connection; Ansible uses its own ControlPath.
          ansible_ssh_common_args: >-
            -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
            -o IdentitiesOnly=yes -o LogLevel=ERROR
            -o ControlMaster=auto -o ControlPersist=60s
            -o ControlPath=$control_dir/kvmlab-%C
EOF
    mv "$INVENTORY.tmp" "$INVENTORY"
}

# python3 for small helpers (free port); prefer the system one.
host_python() {
    local p
    for p in /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
        [[ -n $p && -x $p ]] && "$p" -c '' 2>/dev/null && { printf '%s\n' "$p"; return 0; }
    done
    return 1
}

# free_port -> a TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
    "$(host_python)" - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}
