#!/usr/bin/env bash
# Runs a command inside a private D-Bus session with an unlocked gnome-keyring, so that
# tests reach a real Secret Service. The keyring lives in a fresh temporary folder per run
# (reusing one with another password gives KeyringLocked). Where gnome-keyring or
# dbus-run-session is not installed, the command runs as it is and the keyring tests skip
# with a reason.
set -euo pipefail
if ! command -v dbus-run-session >/dev/null 2>&1 || ! command -v gnome-keyring-daemon >/dev/null 2>&1; then
  echo "with-keyring: no dbus-run-session/gnome-keyring-daemon; keyring tests will skip" >&2
  exec "$@"
fi
kr=$(mktemp -d)
trap 'rm -rf "$kr"' EXIT
export XDG_DATA_HOME="$kr/data" XDG_CACHE_HOME="$kr/cache" XDG_RUNTIME_DIR="$kr/run"
mkdir -p "$XDG_DATA_HOME" "$XDG_CACHE_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
# The bus has no activatable services: if the daemon ever leaves it, nothing starts a
# second, locked daemon in its place (whose unlock prompt has no display, so the tests
# hang or fail with "Message recipient disconnected"). Under heavy load gnome-keyring-daemon
# has aborted on a GLib assertion (secret_objects_lookup_gck_object_for_path: 'session'),
# a bug of the daemon's, when a client's connection goes away while a property read of it
# is pending; keyring opens and closes a connection per call.
# Instead the inner shell keeps the daemon running in the foreground and starts it again,
# unlocked with the same throwaway password, should it exit. It waits (bounded) until the
# daemon owns the Secret Service name before running the command, and stops the daemon
# after it.
# The session bus's own limits (the defaults of a custom config are the system bus's).
limits=$(grep -h '<limit ' /usr/share/dbus-1/session.conf 2>/dev/null || true)
cat >"$kr/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
$limits
</busconfig>
CONF
dbus-run-session --config-file="$kr/bus.conf" -- bash -c '
  (
    daemon=
    log="$XDG_RUNTIME_DIR/keyring-daemon.log"
    trap "kill -TERM \"\$daemon\" 2>/dev/null; exit 0" TERM
    while :; do
      echo funnel-test | gnome-keyring-daemon --unlock --foreground --components=secrets \
        >>"$log" 2>&1 &
      daemon=$!
      status=0
      wait "$daemon" || status=$?
      # Say so, with the last lines of the daemon log (see the abort above).
      echo "with-keyring: gnome-keyring-daemon exited (status $status); starting it again" >&2
      grep -v "already registered" "$log" | tail -n 5 >&2 || true
      sleep 0.2
    done
  ) &
  keeper=$!
  for _ in $(seq 200); do
    if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null \
        | grep -q "boolean true"; then
      break
    fi
    sleep 0.1
  done
  status=0
  "$@" || status=$?
  kill -TERM "$keeper" 2>/dev/null || true
  wait "$keeper" 2>/dev/null || true
  exit "$status"
' with-keyring "$@"
