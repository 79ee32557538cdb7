#!/usr/bin/env python3
"""schema_check.py - docs/scenario.schema.json and the runner's validation agree.

1. Every shipped scenario (scenarios/), every scenario of tests/scenario/ and every whole
   scenario example in docs/scenarios.md is valid under the schema (the runner's side is
   tests/unit/test_scenario_docs.c).
2. The invalid scenarios of tests/scenario/invalid/ whose fault a schema can express are
   refused by the schema.
3. Random mutations of the valid scenarios: whenever the schema refuses one, the runner
   (`twinhub verify EMPTY --scenario FILE`, exit 2 = invalid) refuses it too. The runner may be
   stricter (regular expressions, ${...} names, step references, the registry).

Usage: schema_check.py SOURCE_ROOT TWINHUB_BIN [MUTATIONS]
"""
import copy
import glob
import json
import os
import random
import re
import subprocess
import sys
import tempfile

import jsonschema

root, twinhub = sys.argv[1], sys.argv[2]
mutations = int(sys.argv[3]) if len(sys.argv) > 3 else 300
os.chdir(root)
validator = jsonschema.Draft202012Validator(json.load(open("docs/scenario.schema.json")))
jsonschema.Draft202012Validator.check_schema(validator.schema)
failures = 0


def fail(msg):
    global failures
    failures += 1
    print("not ok:", msg)


valid = []
for f in sorted(glob.glob("scenarios/*/*.json") + glob.glob("tests/scenario/*.json")):
    valid.append((f, json.load(open(f))))
for kind, block in re.findall(r"```(\w*)\n(.*?)```", open("docs/scenarios.md").read(), re.S):
    if kind != "json":
        continue
    try:
        doc = json.loads(block)
    except ValueError:
        continue
    if isinstance(doc, dict) and "name" in doc and "steps" in doc:
        valid.append(("docs/scenarios.md example " + repr(doc["name"]), doc))
for name, doc in valid:
    errors = list(validator.iter_errors(doc))
    if errors:
        fail("%s is refused by the schema: %s" % (name, errors[0].message))
print("ok: %d valid scenarios are valid under the schema" % len(valid))

for f in ["typo-kind", "bad-duration", "missing-field", "no-name", "operator-mix",
          "unknown-operator"]:
    doc = json.load(open("tests/scenario/invalid/%s.json" % f))
    if not list(validator.iter_errors(doc)):
        fail("the schema accepts tests/scenario/invalid/%s.json" % f)
print("ok: the schema refuses the invalid scenarios it can express")


def paths(o, p=()):
    yield p
    if isinstance(o, dict):
        for k, x in o.items():
            yield from paths(x, p + (k,))
    elif isinstance(o, list):
        for i, x in enumerate(o):
            yield from paths(x, p + (i,))


def get(o, p):
    for k in p:
        o = o[k]
    return o


values = [1, -1, 0, 1.5, "x", "", "PT5", "PT1S", None, True, [], {}, {"$regex": "a"},
          {"$foo": 1}, 600, 300, {"min": 2, "max": 1}]
random.seed(20261123)
files = [(f, d) for f, d in valid if not f.startswith("docs")]
empty = tempfile.NamedTemporaryFile(suffix=".jsonl")
refused_by_schema = 0
for _ in range(mutations):
    f, doc = random.choice(files)
    doc = copy.deepcopy(doc)
    p = random.choice([p for p in paths(doc) if p])
    parent, key = get(doc, p[:-1]), p[-1]
    op = random.choice(["del", "set", "rename", "add"])
    if op == "del":
        del parent[key]
    elif op == "set":
        parent[key] = copy.deepcopy(random.choice(values))
    elif op == "rename" and isinstance(parent, dict):
        parent[key + "x"] = parent.pop(key)
    elif op == "add" and isinstance(parent, dict):
        parent[random.choice(["extra", "within", "moduleId", "count", "match", "name"])] = \
            copy.deepcopy(random.choice(values))
    if not list(validator.iter_errors(doc)):
        continue
    refused_by_schema += 1
    # next to the original, so that relative files resolve the same way
    tmp = os.path.join(os.path.dirname(f), ".schema-check-%d.json" % os.getpid())
    with open(tmp, "w") as out:
        json.dump(doc, out)
    try:
        r = subprocess.run([twinhub, "verify", empty.name, "--scenario", tmp],
                           capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(tmp)
    if r.returncode != 2:
        fail("the schema refuses, the runner accepts (%s %s %s): %s" % (f, op, p, json.dumps(doc)[:300]))
print("ok: the runner refuses all %d mutations the schema refuses" % refused_by_schema)
sys.exit(1 if failures else 0)
