#!/usr/bin/env bash
# check-serve-packages.sh - the README's first command (scripts/serve.sh) must work on a fresh
# machine where only the serve packages were installed (scripts/setup.sh's APT_PACKAGES, not
# TEST_PACKAGES). The test machine has every package, so a serve build that silently needs a
# test package (as it once needed cmocka) would pass everywhere but on a user's machine. This
# test configures and builds a tree the way serve.sh does (-Dtests=false), maps every
# dependency, header and program that the configuration used to the Debian package that owns
# it, and fails naming each one that is not in APT_PACKAGES (or that those packages pull in);
# then it starts the built `twinhub serve` and waits for it to be ready.
# TAP output. Usage: check-serve-packages.sh SOURCE_ROOT
set -uo pipefail
root=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/twinhub-serve-pkgs-XXXXXX")
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
echo "1..3"

# The serve packages, and everything they depend on (apt would install those too).
mapfile -t serve_pkgs < <(sed -n '/^APT_PACKAGES=(/,/)/p' "$root/scripts/setup.sh" |
  sed 's/APT_PACKAGES=(//; s/)//' | tr ' ' '\n' | grep -v '^$')
allowed=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "${serve_pkgs[@]}" 2>/dev/null |
  grep -v '^ ' | sed 's/:.*//' | sort -u)
allowed=$(printf '%s\n%s\n' "$allowed" "$(printf '%s\n' "${serve_pkgs[@]}")" | sort -u)

if ! meson setup "$tmp/build" "$root" -Dtests=false >"$tmp/setup.log" 2>&1; then
  echo "not ok 1 - meson setup -Dtests=false (as scripts/serve.sh runs it)"
  sed 's/^/# /' "$tmp/setup.log" | tail -20
  echo "not ok 2 - # SKIP no configuration"; echo "not ok 3 - # SKIP no build"; exit 1
fi
echo "ok 1 - meson setup -Dtests=false (as scripts/serve.sh runs it)"

# owner FILE: the package that holds FILE (usrmerge: try the /usr-less path too).
owner() {
  local f=$1 p
  p=$(dpkg -S "$f" 2>/dev/null | head -1 | sed 's/:.*//; s/, .*//')
  if [ -z "$p" ]; then p=$(dpkg -S "${f#/usr}" 2>/dev/null | head -1 | sed 's/:.*//; s/, .*//'); fi
  printf '%s' "${p:-?}"
}
log="$tmp/build/meson-logs/meson-log.txt"
used=()
while read -r name; do
  pc="$(pkg-config --variable=pcfiledir "$name" 2>/dev/null)/$name.pc"
  used+=("dependency $name:$(owner "$pc")")
done < <(sed -n 's/^Run-time dependency \([^ ]*\) found: YES.*/\1/p' "$log" | grep -vx threads | sort -u)
while read -r h; do
  f=$(echo "#include <$h>" | cc -E -M -x c - 2>/dev/null | tr ' \\' '\n\n' | grep "/$h\$" | head -1)
  used+=("header $h:$(owner "${f:-/usr/include/$h}")")
done < <(sed -n 's/^Has header "\([^"]*\)" *: YES.*/\1/p' "$log" | sort -u)
while read -r path; do
  used+=("program $path:$(owner "$(readlink -f "$path")")")
done < <(sed -n 's/^Program .* found: YES (\([^) ]*\).*/\1/p' "$log" | sort -u)
bad=0
for u in "${used[@]}"; do
  pkg=${u##*:}
  if ! grep -qx "$pkg" <<<"$allowed"; then
    echo "# $u: package '$pkg' is not installed by scripts/setup.sh without --tests"
    bad=1
  fi
done
if [ $bad = 0 ] && [ ${#used[@]} -gt 3 ]; then
  echo "ok 2 - the ${#used[@]} dependencies, headers and programs the serve build uses come from the serve packages"
else
  echo "not ok 2 - the serve build uses something the serve packages do not install (${#used[@]} checked)"
fi

if ! ninja -C "$tmp/build" >"$tmp/ninja.log" 2>&1; then
  echo "not ok 3 - build and start twinhub serve"; tail -20 "$tmp/ninja.log" | sed 's/^/# /'; exit 1
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$tmp/build/emulator/cli/twinhub" serve --mqtt-port "$(port)" --mqtts-port "$(port)" \
  --https-port 0 --cert-dir "$tmp/certs" --info-file "$tmp/hub.json" >"$tmp/serve.out" 2>&1 &
serve_pid=$!
touch "$tmp/serve.out"
for _ in $(seq 1 300); do
  grep -q '^twinhub: ready' "$tmp/serve.out" && break
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.1
done
if grep -q '^twinhub: ready' "$tmp/serve.out"; then
  echo "ok 3 - the serve-only build starts and reports ready"
else
  echo "not ok 3 - the serve-only build starts and reports ready"; sed 's/^/# /' "$tmp/serve.out" | tail -20
  exit 1
fi
[ $bad = 0 ]
