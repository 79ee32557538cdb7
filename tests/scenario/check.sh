#!/bin/sh
# check.sh CASE - one test of `twinhub run` / `twinhub verify` (tests/scenario/meson.build).
# Environment: TWINHUB_BIN (the twinhub binary), SCN_AGENT (scn_agent), SCN_DIR (this
# directory), SCN_RECORDINGS (fixtures/recordings). Exit 0 when the case holds; on failure
# prints what was expected and the command's output.
set -u
CASE=${1:?usage: check.sh CASE}
: "${TWINHUB_BIN:?}" "${SCN_AGENT:?}" "${SCN_DIR:?}" "${SCN_RECORDINGS:?}"
export SCN_AGENT
TMP=$(mktemp -d "${TMPDIR:-/tmp}/scn-check-XXXXXX")
SERVE_PID=
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
cd "$SCN_DIR" || exit 1

failures=0
fail() {
  echo "not ok: $*"
  failures=$((failures + 1))
}
ok() {
  echo "ok: $*"
}
show() { # show FILE...: the output of the command under test
  for f in "$@"; do echo "--- $f"; cat "$f"; done
}

# run_twinhub NAME ARGS...: runs twinhub, keeps stdout/stderr in $TMP/NAME.out/.err, sets RC.
run_twinhub() {
  name=$1
  shift
  "$TWINHUB_BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  RC=$?
}

expect_rc() { # expect_rc NAME WANT
  if [ "$RC" -eq "$2" ]; then ok "$1 exits $2"; else
    fail "$1 exits $RC, expected $2"
    show "$TMP/$1.out" "$TMP/$1.err"
  fi
}

expect_in() { # expect_in FILE TEXT WHAT: FILE contains TEXT (fixed string)
  if grep -qF -- "$2" "$1"; then ok "$3"; else
    fail "$3: '$2' not in $1"
    show "$1"
  fi
}

expect_not_in() {
  if grep -qF -- "$2" "$1"; then
    fail "$3: '$2' unexpectedly in $1"
    show "$1"
  else ok "$3"; fi
}

count_of() { # count_of FILE TEXT: number of lines with TEXT
  grep -cF -- "$2" "$1"
}

# The verdict column of the step lines ("PASS  3 name"), without timings, for comparisons.
verdicts() {
  grep -E '^(PASS|FAIL|SKIP) ' "$1" | sed -E 's/ \([0-9.]+ (ms|s)\).*$//; s/ \([0-9]+ min [0-9]+ s\).*$//'
}

# A free loopback port pair for `twinhub serve`: tried by serve itself, retried when taken.
start_serve() {
  for attempt in 1 2 3 4 5; do
    # Below the kernel's ephemeral range (32768-60999), where outgoing connections take ports.
    base=$(( ( $$ * 7 + attempt * 131 ) % 12000 + 20000 ))
    mkfifo "$TMP/serve.fifo.$attempt"
    "$TWINHUB_BIN" serve --mqtt-port "$base" --mqtts-port $((base + 1)) --https-port 0 \
      --cert-dir "$TMP/certs" --info-file "$TMP/hub.json" \
      >"$TMP/serve.fifo.$attempt" 2>"$TMP/serve.err" &
    SERVE_PID=$!
    while IFS= read -r line; do
      [ "$line" = "twinhub: ready" ] && break
    done <"$TMP/serve.fifo.$attempt"
    if [ -s "$TMP/hub.json" ] && kill -0 "$SERVE_PID" 2>/dev/null; then return 0; fi
    wait "$SERVE_PID" 2>/dev/null
    SERVE_PID=
  done
  return 1
}

case "$CASE" in
pass)
  # A good agent: every step passes, JUnit says so, and the recording verifies the same.
  run_twinhub pass run pass.json --junit "$TMP/pass.xml" --record "$TMP/pass.jsonl" \
    --report-dir "$TMP/report"
  expect_rc pass 0
  expect_in "$TMP/pass.out" "17 passed, 0 failed, 0 skipped" "every step passes"
  expect_in "$TMP/pass.out" "PASS  7 sends readings" "a line per step"
  expect_in "$TMP/pass.xml" 'tests="17" failures="0" errors="0" skipped="0"' "JUnit counts"
  [ "$(count_of "$TMP/pass.xml" '<testcase ')" -eq 17 ] && ok "17 testcases" ||
    fail "JUnit has $(count_of "$TMP/pass.xml" '<testcase ') testcases, expected 17"
  expect_not_in "$TMP/pass.xml" "<failure" "no failure in JUnit"
  expect_in "$TMP/pass.xml" '<testcase name="acknowledges interval 30" classname="runner: a good agent passes"' \
    "testcases are named after the steps"
  expect_in "$TMP/report/agent.log" "agent: CONNACK 0" "the agent's output is in agent.log"
  expect_in "$TMP/pass.jsonl" '"action":"scenarioBegin"' "the recording starts with the scenario's mark"
  [ "$(count_of "$TMP/pass.jsonl" '"kind":"mark"')" -eq 19 ] && ok "one mark per step" ||
    fail "the recording has $(count_of "$TMP/pass.jsonl" '"kind":"mark"') marks, expected 17 + 2"
  run_twinhub verify verify "$TMP/pass.jsonl" --scenario pass.json --junit "$TMP/verify.xml"
  expect_rc verify 0
  verdicts "$TMP/pass.out" >"$TMP/live.v"
  verdicts "$TMP/verify.out" >"$TMP/offline.v"
  if cmp -s "$TMP/live.v" "$TMP/offline.v"; then ok "verify gives the run's verdicts"; else
    fail "verify's verdicts differ from the run's"
    diff "$TMP/live.v" "$TMP/offline.v"
  fi
  expect_in "$TMP/verify.xml" 'tests="17" failures="0"' "verify writes the same JUnit"
  ;;
fail)
  # A wrong agent: the step fails with expected against actual; the rest is skipped.
  run_twinhub fail run pass.json --agent 'AGENT_MODE=wrong "$SCN_AGENT"' \
    --junit "$TMP/fail.xml" --report-dir "$TMP/report"
  expect_rc fail 1
  expect_in "$TMP/fail.out" "FAIL  3 reports firmware and the desired interval" "the failing step's line"
  expect_in "$TMP/fail.out" "reported.interval: expected 10, got 11" "the line shows expected and actual"
  expect_in "$TMP/fail.out" "SKIP  4 the captured firmware is the configured one" "later steps are skipped"
  expect_in "$TMP/fail.out" "2 passed, 1 failed, 14 skipped" "the summary"
  expect_in "$TMP/fail.out" "agent log (last lines of" "the agent log is shown on failure"
  expect_in "$TMP/fail.xml" 'tests="17" failures="1" errors="0" skipped="14"' "JUnit counts"
  if grep -A1 -F '<testcase name="reports firmware and the desired interval"' "$TMP/fail.xml" |
    grep -qF '<failure message="reported properties of scn-dev did not match within 5.0 s: reported.interval: expected 10, got 11'; then
    ok "JUnit names the failing step with expected and actual"
  else
    fail "JUnit does not carry the failure on the failing step"
    show "$TMP/fail.xml"
  fi
  [ "$(count_of "$TMP/fail.xml" '<skipped/>')" -eq 14 ] && ok "14 skipped testcases" ||
    fail "JUnit has $(count_of "$TMP/fail.xml" '<skipped/>') skipped testcases, expected 14"
  ;;
invalid)
  # Invalid scenarios: exit 2, nothing started, the message names the file and the field.
  check_invalid() { # FILE TEXT
    run_twinhub invalid run "invalid/$1"
    expect_rc invalid 2
    expect_in "$TMP/invalid.err" "invalid/$1: $2" "invalid/$1 is refused with '$2'"
    expect_not_in "$TMP/invalid.out" "scenario " "invalid/$1: nothing ran"
  }
  check_invalid typo-kind.json 'steps[1].expectReport: unknown member; did you mean the step kind "expectReported"?'
  check_invalid bad-duration.json 'steps[0].waitConnected.within: expected an ISO 8601 duration'
  check_invalid bad-regex.json 'steps[0].expectReported.match.fw.$regex: not a POSIX extended regular expression'
  check_invalid unknown-var.json 'steps[0].patchDesired.patch.x: unknown variable ${nope}'
  check_invalid no-name.json 'name: required'
  check_invalid since-later.json 'steps[0].expectTelemetry.since: no earlier step is named "later"'
  check_invalid not-json.json 'line 3, column 30: not valid JSON'
  check_invalid bad-registry.json "registry.devices[0].deviceId: 'a b' is not a valid id"
  check_invalid operator-mix.json 'steps[0].expectReported.match.fw.other: an operator object holds only its operator'
  check_invalid missing-field.json 'steps[0].patchDesired.patch: required'
  check_invalid unknown-operator.json "steps[0].expectReported.match.fw.\$regx: unknown operator '\$regx'"
  # One invalid file among valid ones: nothing runs at all.
  run_twinhub invalid run startup.json invalid/bad-duration.json
  expect_rc invalid 2
  expect_not_in "$TMP/invalid.out" "PASS" "no scenario runs when one is invalid"
  run_twinhub invalid verify "$SCN_RECORDINGS/pass.jsonl" --scenario invalid/no-name.json
  expect_rc invalid 2
  printf '{"seq":1,"time":"2026-11-23T14:00:00.0000000Z","kind":"mark"}\nnot json\n' >"$TMP/broken.jsonl"
  run_twinhub invalid verify "$TMP/broken.jsonl" --scenario pass.json
  expect_rc invalid 2
  expect_in "$TMP/invalid.err" "broken.jsonl:2: not an event record" "verify names the bad line"
  ;;
verify)
  # Committed recordings: a good agent's passes offline, a wrong agent's fails at its step.
  run_twinhub good verify "$SCN_RECORDINGS/pass.jsonl" --scenario pass.json --junit "$TMP/good.xml"
  expect_rc good 0
  expect_in "$TMP/good.out" "17 passed, 0 failed, 0 skipped" "the good recording passes"
  expect_in "$TMP/good.xml" 'tests="17" failures="0"' "JUnit of the good recording"
  run_twinhub wrong verify "$SCN_RECORDINGS/wrong.jsonl" --scenario pass.json --junit "$TMP/wrong.xml"
  expect_rc wrong 1
  expect_in "$TMP/wrong.out" "FAIL  3 reports firmware and the desired interval (5.0 s): reported properties of scn-dev did not match within 5.0 s: reported.interval: expected 10, got 11" \
    "the wrong recording fails at the same step, with expected and actual"
  expect_in "$TMP/wrong.out" "2 passed, 1 failed, 14 skipped" "the rest is skipped"
  expect_in "$TMP/wrong.xml" 'failures="1"' "JUnit of the wrong recording"
  # The faults and restart recordings verify too (seq restarts, reconnects, refused requests).
  run_twinhub faults verify "$SCN_RECORDINGS/faults.jsonl" --scenario faults.json
  expect_rc faults 0
  run_twinhub restart verify "$SCN_RECORDINGS/restart.jsonl" --scenario restart.json
  expect_rc restart 0
  # A scenario whose steps are not in the recording fails with a reason, not silently.
  run_twinhub other verify "$SCN_RECORDINGS/pass.jsonl" --scenario faults.json
  expect_rc other 1
  expect_in "$TMP/other.out" "FAIL  1 connects" "a scenario absent from the recording fails"
  ;;
faults)
  run_twinhub faults run faults.json --record "$TMP/faults.jsonl" --junit "$TMP/faults.xml"
  expect_rc faults 0
  expect_in "$TMP/faults.out" "17 passed, 0 failed, 0 skipped" "disconnect, expireToken and injectError pass"
  expect_in "$TMP/faults.jsonl" '"kind":"disconnected","deviceId":"scn-faults"' "the drops are recorded"
  run_twinhub verify verify "$TMP/faults.jsonl" --scenario faults.json
  expect_rc verify 0
  ;;
restart)
  run_twinhub restart run restart.json --record "$TMP/restart.jsonl"
  expect_rc restart 0
  expect_in "$TMP/restart.out" "PASS  5 the reported state survived" "reported state kept across restartHub"
  expect_in "$TMP/restart.out" "PASS  6 the desired state survived" "desired state kept across restartHub"
  expect_in "$TMP/restart.out" "8 passed, 0 failed, 0 skipped" "the agent reconnects to the restarted hub"
  [ "$(grep -c '"seq":1,' "$TMP/restart.jsonl")" -eq 2 ] && ok "the recording holds both hub runs" ||
    fail "the recording should restart its seq once"
  run_twinhub verify verify "$TMP/restart.jsonl" --scenario restart.json
  expect_rc verify 0
  ;;
agent-exit)
  run_twinhub exit run exit.json --junit "$TMP/exit.xml"
  expect_rc exit 1
  expect_in "$TMP/exit.out" "FAIL  2 sends telemetry for a while" "the running step fails"
  expect_in "$TMP/exit.out" "the agent exited with code 3" "with the agent's exit code"
  expect_in "$TMP/exit.xml" 'message="the agent exited with code 3"' "JUnit says why"
  ;;
startup)
  # Start-up overhead: from `twinhub run` to the first step, without an agent.
  best=
  for i in 1 2 3; do
    run_twinhub startup run startup.json -v
    expect_rc startup 0
    ms=$(sed -n 's/^twinhub run: first step starts \([0-9]*\) ms.*/\1/p' "$TMP/startup.err")
    echo "start-up overhead: ${ms:-?} ms"
    if [ -n "$ms" ] && { [ -z "$best" ] || [ "$ms" -lt "$best" ]; }; then best=$ms; fi
  done
  if [ -n "$best" ] && [ "$best" -lt 500 ]; then ok "first step within ${best} ms"; else
    fail "the first step started after ${best:-?} ms (expected tens of ms)"
  fi
  ;;
hub)
  # --hub: a running `twinhub serve`; the registry is imported; restartHub is refused.
  if ! start_serve; then
    fail "twinhub serve did not start"
    show "$TMP/serve.err"
  else
    run_twinhub hub run hub.json --hub "$TMP/hub.json" --record "$TMP/hub.jsonl"
    expect_rc hub 1
    expect_in "$TMP/hub.out" "PASS  1 the registry was imported" "the registry is imported into the running hub"
    expect_in "$TMP/hub.out" "PASS  2 its reported properties are seen" "its twin seeds the expectations"
    expect_in "$TMP/hub.out" "FAIL  3 restartHub is refused (" "restartHub is refused with --hub"
    expect_in "$TMP/hub.out" "cannot restart a hub given with --hub" "and says why"
    expect_in "$TMP/hub.jsonl" '"action":"scenarioBegin"' "--record with --hub writes what the runner saw"
    run_twinhub again run startup.json --hub "$TMP/hub.json"
    expect_rc again 0
  fi
  ;;
walkthrough)
  # docs/scenarios.md's walk-through, as written: its Node.js agent (the Azure IoT device SDK
  # of tests/conformance/node_modules) passes its scenario, and the recording verifies.
  : "${SCN_NODE_MODULES:?}"
  doc="$SCN_DIR/../../docs/scenarios.md"
  awk '/^```js$/ {on = 1; next} /^```/ {if (on) exit} on' "$doc" >"$TMP/my-agent.js"
  awk '/^```json$/ {on = 1; buf = ""; next}
       /^```/ {if (on && buf ~ /"my agent: firmware/) {printf "%s", buf; exit} on = 0; next}
       on {buf = buf $0 "\n"}' "$doc" >"$TMP/my-agent.scenario.json"
  if [ ! -s "$TMP/my-agent.js" ] || [ ! -s "$TMP/my-agent.scenario.json" ]; then
    fail "the walk-through's agent or scenario was not found in docs/scenarios.md"
  else
    NODE_PATH="$SCN_NODE_MODULES" run_twinhub walk run "$TMP/my-agent.scenario.json" \
      --record "$TMP/walk.jsonl" --report-dir "$TMP/walk-report"
    expect_rc walk 0
    expect_in "$TMP/walk.out" "8 passed, 0 failed, 0 skipped" "the walk-through's scenario passes"
    run_twinhub walkv verify "$TMP/walk.jsonl" --scenario "$TMP/my-agent.scenario.json"
    expect_rc walkv 0
  fi
  ;;
options)
  # --time-scale multiplies the bounds and reaches the agent; --var overrides a declared variable.
  run_twinhub scaled run pass.json --agent 'AGENT_MODE=wrong "$SCN_AGENT"' --time-scale 0.2 \
    --var firmware=9.9.9 --report-dir "$TMP/scaled-report"
  expect_rc scaled 1
  expect_in "$TMP/scaled.out" "did not match within 1.0 s" "--time-scale 0.2: the 5 s bound became 1 s"
  expect_in "$TMP/scaled-report/agent.log" '"firmware":"9.9.9"' "--var reached the agent's env"
  run_twinhub envcheck run pass.json --time-scale 3 --report-dir "$TMP/env-report" \
    --agent 'echo "scale=$TWINHUB_TIME_SCALE"; exec "$SCN_AGENT"'
  expect_rc envcheck 0
  expect_in "$TMP/env-report/agent.log" "scale=3" "the agent gets TWINHUB_TIME_SCALE"
  run_twinhub novar run pass.json --var nosuch=1
  expect_rc novar 2
  expect_in "$TMP/novar.err" "no scenario given declares the variable nosuch" "an undeclared --var is refused"
  run_twinhub badscale run pass.json --time-scale 0
  expect_rc badscale 2
  expect_in "$TMP/badscale.err" "--time-scale 0: expected a number" "a bad --time-scale is refused"
  ;;
ports)
  # Every hub of `twinhub run` has a loopback address of its own with the standard ports, so an
  # agent that dials HostName:8883 and nothing else runs unmodified, and runs go side by side:
  # two shipped scenarios with their reference agents (the Node SDK's Mqtt transport dials
  # mqtts://<GatewayHostName or HostName>, port 8883), plain `twinhub run`, at the same time as
  # pass.json with scn_agent told to dial HostName:8883 whatever else it is given.
  : "${SCN_NODE_MODULES:?}"
  shipped="$SCN_DIR/../../scenarios"
  TWINHUB_NODE_MODULES="$SCN_NODE_MODULES" "$TWINHUB_BIN" run -v \
    "$shipped/device-agent/01-startup.json" >"$TMP/dev.out" 2>"$TMP/dev.err" &
  dev_pid=$!
  TWINHUB_NODE_MODULES="$SCN_NODE_MODULES" "$TWINHUB_BIN" run -v \
    "$shipped/security-module/02-reported-shape.json" >"$TMP/sec.out" 2>"$TMP/sec.err" &
  sec_pid=$!
  AGENT_DIAL=hostname "$TWINHUB_BIN" run -v pass.json --report-dir "$TMP/c-report" \
    >"$TMP/c.out" 2>"$TMP/c.err" &
  c_pid=$!
  wait "$dev_pid"; RC=$?; expect_rc dev 0
  wait "$sec_pid"; RC=$?; expect_rc sec 0
  wait "$c_pid"; RC=$?; expect_rc c 0
  # Each hub's MQTT/TLS listener, from serve's banner: 127.x.y.z:8883, three different ones.
  addrs=""
  for n in dev sec c; do
    a=$(sed -n 's/^  MQTT\/TLS  \(127\.[0-9.]*\):8883 .*/\1/p' "$TMP/$n.err" | head -n 1)
    case "$a" in
    127.0.0.1 | "") fail "$n: no hub of its own on 127.x.y.z:8883 (got '$a')"; show "$TMP/$n.err" ;;
    *) ok "$n: its hub listens on $a:8883" ;;
    esac
    addrs="$addrs $a"
  done
  # One run alone always takes the first free address, so three different ones mean that the
  # three hubs were up at the same time.
  distinct=$(echo $addrs | tr ' ' '\n' | sort -u | wc -l)
  [ "$distinct" -eq 3 ] && ok "three runs side by side on three addresses ($addrs )" ||
    fail "the runs shared an address:$addrs"
  c_addr=$(echo $addrs | cut -d' ' -f3)
  expect_in "$TMP/c-report/agent.log" "agent: dialling $c_addr port 8883" \
    "scn_agent dialled HostName:8883 only"
  expect_in "$TMP/dev.out" "passed, 0 failed, 0 skipped" "device-agent/01 passes"
  expect_in "$TMP/sec.out" "passed, 0 failed, 0 skipped" "security-module/02 passes"
  ;;
*)
  echo "check.sh: unknown case $CASE"
  exit 2
  ;;
esac

if [ "$failures" -ne 0 ]; then
  echo "$CASE: $failures check(s) failed"
  exit 1
fi
echo "$CASE: all checks passed"
exit 0
