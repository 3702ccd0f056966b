"""Checks a /metrics scrape of tests/metrics.rs with Prometheus's Python text parser.

Usage: metrics_check.py SCRAPE_FILE REPO SECRET

The traffic before the scrape was: one Set that succeeded, one Set refused with
INVALID_ARGUMENT, one Get answered NOT_FOUND, one Watch still open. Checked: exact counts per
method and code, that histogram buckets are cumulative and +Inf equals _count, that no label
value carries SECRET, and that every series the Grafana dashboard and the alert rules use is
exported.
"""

import json
import math
import re
import sys
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

POLICY_SERVICE = "provision.v1.ProvisionPolicyService"
# Series Prometheus makes itself, never exported by a target.
SYNTHETIC = {"up"}


def main(scrape_file, repo, secret):
    text = open(scrape_file, encoding="utf-8").read()
    families = list(text_string_to_metric_families(text))
    samples = [sample for family in families for sample in family.samples]
    exported = {sample.name for sample in samples} | {family.name for family in families}

    def value(name, **labels):
        found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def rpc(method, **labels):
        return dict(grpc_service=POLICY_SERVICE, grpc_method=method, grpc_type="unary", **labels)

    expected = {
        ("grpc_server_started_total", "SetProvisionPolicy", None): 2,
        ("grpc_server_started_total", "GetProvisionPolicy", None): 1,
        ("grpc_server_handled_total", "SetProvisionPolicy", "OK"): 1,
        ("grpc_server_handled_total", "SetProvisionPolicy", "InvalidArgument"): 1,
        ("grpc_server_handled_total", "GetProvisionPolicy", "NotFound"): 1,
        ("grpc_server_handled_total", "GetProvisionPolicy", "OK"): 0,
        ("grpc_server_handling_seconds_count", "SetProvisionPolicy", None): 2,
        ("grpc_server_handling_seconds_count", "GetProvisionPolicy", None): 1,
    }
    for (name, method, code), want in expected.items():
        labels = rpc(method) if code is None else rpc(method, grpc_code=code)
        got = value(name, **labels)
        assert got == want, f"{name}{labels} = {got}, want {want}"
    # Every code of the policy service's handled series, summed: exactly the three unary calls.
    handled = sum(
        s.value for s in samples
        if s.name == "grpc_server_handled_total" and s.labels["grpc_service"] == POLICY_SERVICE
        and s.labels["grpc_type"] == "unary"
    )
    assert handled == 3, f"{handled} unary RPCs handled, want 3"
    assert value("grpc_server_started_total", grpc_service=POLICY_SERVICE,
                 grpc_method="WatchProvisionPolicies", grpc_type="server_stream") == 1
    assert value("provisiond_watch_streams") == 1
    assert value("provisiond_live_policies") == 1
    assert value("provisiond_auth_failures_total", code="UNAUTHENTICATED") == 0
    assert value("provisiond_auth_failures_total", code="PERMISSION_DENIED") == 0
    assert sum(s.value for s in samples if s.name == "provisiond_policy_violations_total") >= 1
    assert value("provisiond_store_write_batch_size_count") == 1, "one committed write"
    assert value("provisiond_store_commit_seconds_count") == 1

    # Histograms: cumulative buckets, +Inf equal to _count, per label set.
    histograms = 0
    for family in families:
        if family.type != "histogram":
            continue
        series = defaultdict(lambda: {"buckets": [], "count": None})
        for s in family.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, entry in series.items():
            buckets = sorted(entry["buckets"])
            assert buckets and math.isinf(buckets[-1][0]), f"{family.name}{key}: no +Inf bucket"
            counts = [count for _, count in buckets]
            assert counts == sorted(counts), f"{family.name}{key}: buckets not cumulative: {buckets}"
            assert buckets[-1][1] == entry["count"], f"{family.name}{key}: +Inf {buckets[-1][1]} != count {entry['count']}"
            histograms += 1
    assert histograms >= 4, f"only {histograms} histogram series"

    for s in samples:
        for label, label_value in s.labels.items():
            assert secret not in label_value, f"{s.name}{{{label}}} carries a request value"

    # Every series the dashboard and the alert rules use.
    exprs = []
    dashboard = json.load(open(f"{repo}/deploy/grafana/provisiond.json", encoding="utf-8"))

    def walk(node):
        if isinstance(node, dict):
            for key, child in node.items():
                if key == "expr" and isinstance(child, str):
                    exprs.append(child)
                else:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dashboard)
    dashboard_exprs = len(exprs)
    assert dashboard_exprs >= 10, f"the dashboard has only {dashboard_exprs} exprs"
    rules = open(f"{repo}/deploy/prometheus/alerts.yml", encoding="utf-8").read()
    # `expr: …` on one line, or `expr: |` and the more indented lines below it.
    lines = rules.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, rest = len(match.group(1)), match.group(2)
        if rest.strip() in ("|", ">", "|-", ">-"):
            block = []
            for following in lines[index + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following)
            exprs.append("\n".join(block))
        else:
            exprs.append(rest)
    assert len(exprs) - dashboard_exprs >= 5, "the alert rules have too few exprs"

    referenced = set()
    for expr in exprs:
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings):
            if name.startswith(("grpc_server_", "provisiond_")) or name in SYNTHETIC:
                referenced.add(name)
    missing = []
    for name in sorted(referenced - SYNTHETIC):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            missing.append(name)
    assert not missing, f"used by the dashboard or the alerts but not exported: {missing}"
    print(f"ok: {len(families)} families, {histograms} histogram series, "
          f"{len(referenced)} referenced series all exported")


if __name__ == "__main__":
    main(*sys.argv[1:4])
