#!/usr/bin/python3
"""Evaluates every PromQL expression of deploy/prometheus/rules.yml (alert expressions without
their final threshold, which is what makes them empty when all is well) and of every panel of
deploy/grafana/*.json through a running Prometheus' HTTP API. Fails on an expression that errors
or returns no series.  Usage: promql_check.py PROMETHEUS_URL"""
import glob
import json
import re
import sys
import urllib.parse
import urllib.request

import yaml

url = sys.argv[1]
exprs = []
for group in yaml.safe_load(open("deploy/prometheus/rules.yml"))["groups"]:
    for rule in group["rules"]:
        expr = rule["expr"].strip()
        if "alert" in rule:
            expr = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[-+0-9.e]+$", "", expr)
        exprs.append((rule.get("record") or rule.get("alert"), expr))
for path in glob.glob("deploy/grafana/*.json"):
    for panel in json.load(open(path))["panels"]:
        for target in panel["targets"]:
            exprs.append((f'{path}: "{panel["title"]}"', target["expr"]))

bad = []
for name, expr in exprs:
    q = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as r:
            body = json.load(r)
    except Exception as e:  # an HTTP 400 is a PromQL error
        bad.append(f"{name}: {expr}: {e}")
        continue
    if body.get("status") != "success":
        bad.append(f"{name}: {expr}: {body.get('error')}")
    elif not body["data"]["result"]:
        bad.append(f"{name}: {expr}: no series")
for b in bad:
    print("promql_check: FAILED", b)
print(f"promql_check: {len(exprs) - len(bad)} of {len(exprs)} expressions return data")
sys.exit(1 if bad else 0)
