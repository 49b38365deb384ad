#!/usr/bin/env bash
# Install or upgrade tracker as a systemd service on Raspberry Pi OS or any Debian with systemd.
#
#   sudo scripts/install-pi.sh                 # from a clone: install, enable, start
#   scripts/install-pi.sh --root DIR --no-systemctl   # into a scratch root (tests, images)
#
# What it does, each step only when needed (running it again upgrades in place):
#   - the Debian packages systemd-python builds with (real root only)
#   - a system user `tracker` (group tracker; also dialout, and i2c and bluetooth where present)
#   - a virtual environment in /opt/tracker with this checkout installed ('.[all]')
#   - /etc/tracker/tracker.toml from config/tracker.toml, ONLY if there is none (yours is kept;
#     the newest example is always written beside it as tracker.toml.example)
#   - /etc/credstore/ (0700) for LoadCredential= secrets
#   - the unit /etc/systemd/system/tracker.service and the udev rule
#     /etc/udev/rules.d/99-tracker-gps.rules
#   - systemctl daemon-reload, udev reload, enable; start, or restart when it was running
# The database (/var/lib/tracker) is never touched.
#
# Options:
#   --root DIR        install under DIR instead of / (no apt, no systemctl, users via useradd -P)
#   --no-systemctl    do not call systemctl or udevadm (e.g. in a container or an image build)
#   --pip-args ARGS   extra pip arguments, e.g. "--no-deps --no-build-isolation" for offline use
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
root=/
systemctl=yes
pip_args=""
user=tracker
prefix=/opt/tracker

die() { echo "install-pi: $*" >&2; exit 1; }
say() { echo "install-pi: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        --no-systemctl) systemctl=no; shift ;;
        --pip-args) pip_args=${2?--pip-args needs a value}; shift 2 ;;
        --pip-args=*) pip_args=${1#--pip-args=}; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

root=$(cd "$root" 2>/dev/null && pwd) || die "--root: $root is not a directory"
R=${root%/}   # "" for the real root, so "$R/etc" is /etc
real_root=no
[ -z "$R" ] && real_root=yes
if [ "$real_root" = yes ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0), or use --root DIR for a scratch root"
fi
[ "$real_root" = no ] && systemctl=no   # never touch the host's services for a scratch root

# --- packages ---------------------------------------------------------------------------------
if [ "$real_root" = yes ] && command -v dpkg >/dev/null 2>&1; then
    missing=()
    for pkg in python3 python3-venv python3-dev gcc pkg-config libsystemd-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
fi

# --- the service user -----------------------------------------------------------------------------
prefix_args=()
[ "$real_root" = no ] && prefix_args=(--prefix "$root")
has_group() { grep -q "^$1:" "$R/etc/group" 2>/dev/null; }
if ! grep -q "^$user:" "$R/etc/passwd" 2>/dev/null; then
    say "creating system user $user"
    has_group "$user" || groupadd "${prefix_args[@]}" --system "$user"
    useradd "${prefix_args[@]}" --system --gid "$user" --no-create-home \
        --home-dir /var/lib/tracker --shell /usr/sbin/nologin \
        --comment "tracker GPS daemon" "$user"
fi
groups=()
for g in dialout i2c bluetooth; do
    if has_group "$g"; then groups+=("$g"); fi
done
if [ ${#groups[@]} -gt 0 ]; then
    usermod "${prefix_args[@]}" --append --groups "$(IFS=,; echo "${groups[*]}")" "$user"
fi
has_group dialout || say "warning: no dialout group here; the service will not open serial devices"

# --- the virtual environment -------------------------------------------------------------------
python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
[ -n "$python" ] || die "tracker needs Python 3.11 or newer (apt-get install python3)"
venv="$R$prefix"
if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment $venv"
    "$python" -m venv "$venv"
fi
say "installing tracker into $venv"
# shellcheck disable=SC2086  # pip_args is a list of words on purpose
# The versions tested together (constraints.txt), not whatever is newest on the day.
constraints=()
[ -f "$src/constraints.txt" ] && constraints=(-c "$src/constraints.txt")
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade $pip_args \
    "${constraints[@]}" "$src[all]"
[ -x "$venv/bin/tracker" ] || die "pip did not install $venv/bin/tracker"

# --- files -----------------------------------------------------------------------------------------
group_id() { awk -F: -v g="$1" '$1 == g { print $3 }' "$R/etc/group"; }
gid=$(group_id "$user")
install -d -m 0755 "$R/etc/systemd/system" "$R/etc/udev/rules.d"
install -d -m 0750 "$R/etc/tracker"
install -d -m 0700 "$R/etc/credstore"
[ "$(id -u)" -eq 0 ] && [ -n "$gid" ] && chgrp "$gid" "$R/etc/tracker"
install -m 0644 "$src/config/tracker.toml" "$R/etc/tracker/tracker.toml.example"
if [ -e "$R/etc/tracker/tracker.toml" ]; then
    say "keeping $R/etc/tracker/tracker.toml (the newest example is tracker.toml.example)"
else
    install -m 0640 "$src/config/tracker.toml" "$R/etc/tracker/tracker.toml"
    [ "$(id -u)" -eq 0 ] && [ -n "$gid" ] && chgrp "$gid" "$R/etc/tracker/tracker.toml"
    say "wrote $R/etc/tracker/tracker.toml: set [gps] device and your backends there"
fi
install -m 0644 "$src/systemd/tracker.service" "$R/etc/systemd/system/tracker.service"
install -m 0644 "$src/config/99-tracker-gps.rules" "$R/etc/udev/rules.d/99-tracker-gps.rules"

# The Pi's UART: only a hint, never an edit of the boot configuration.
for cfgtxt in "$R/boot/firmware/config.txt" "$R/boot/config.txt"; do
    if [ -f "$cfgtxt" ]; then
        grep -q '^enable_uart=1' "$cfgtxt" ||
            say "note: $cfgtxt has no enable_uart=1; for /dev/serial0 run raspi-config (README)"
        break
    fi
done

# --- systemd ----------------------------------------------------------------------------------------
if [ "$systemctl" = yes ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        udevadm control --reload-rules && udevadm trigger --subsystem-match=tty || true
        systemctl enable tracker.service
        if systemctl is-active --quiet tracker.service; then
            say "restarting the running service with the new version"
            systemctl restart tracker.service
        else
            systemctl start tracker.service
        fi
        systemctl --no-pager --lines=5 status tracker.service || true
    else
        say "systemd is not running here: enable later with systemctl enable --now tracker"
    fi
else
    say "skipped systemctl: run 'systemctl daemon-reload && systemctl enable --now tracker'"
fi
say "done. Check the setup with: $prefix/bin/tracker doctor -c /etc/tracker/tracker.toml"
