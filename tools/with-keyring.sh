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
# The inner shell unlocks the keyring with a throwaway password, waits (bounded) until the
# daemon owns the Secret Service name on the bus, then runs the command. Without the wait,
# a busy machine lets the first request reach the bus before the daemon did: D-Bus then
# activates a second daemon, one of them exits, and its clients see "disconnected".
dbus-run-session -- bash -c '
  echo funnel-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  for _ in $(seq 200); do
    if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null \
        | grep -q "boolean true"; then
      break
    fi
    sleep 0.1
  done
  exec "$@"
' with-keyring "$@"
