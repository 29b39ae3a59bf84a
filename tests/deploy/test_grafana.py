"""The Grafana dashboard in deploy/grafana queries only metrics that real nodes export."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import yaml

import pbkv
from tests.runtime.inprocess import local_cluster, scrape_metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "pbkv-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
ALERTS = ROOT / "deploy" / "prometheus-alerts.yml"
METRIC_NAME = re.compile(r"\b((?:pbkv|process|python)_[a-z0-9_]+)\b")
DOCUMENTED_NAME = re.compile(r"`((?:pbkv|process|python)_[a-z0-9_]*\*?)")
ONLY_WITH_DATA_DIR = {"pbkv_disk_sync_seconds"}
"""Exported by a server started with --data-dir only (metrics.md says so); the scraped
cluster keeps its state in memory."""
ONLY_WITH_TLS = {"pbkv_tls_certificate_expiry_timestamp_seconds"}
"""Exported by a process started with --tls-cert only (metrics.md says so; the reload tests
read it); the scraped cluster runs without TLS."""


def queried_metrics(dashboard: dict[str, object]) -> set[str]:
    """Every metric name in every panel's PromQL expressions."""
    names: set[str] = set()
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        for target in panel["targets"]:
            names.update(METRIC_NAME.findall(target["expr"]))
    return names


def exported_metrics(exposition: str) -> set[str]:
    """Sample names in a Prometheus text exposition."""
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def documented_metrics(text: str) -> set[str]:
    """Every metric name in backticks in ``text``; ``process_*`` stands for a family."""
    return set(DOCUMENTED_NAME.findall(text))


def missing_metrics(documented: set[str], exported: set[str]) -> set[str]:
    """The documented names no sample answers (a histogram answers by its ``_bucket``)."""

    def found(name: str) -> bool:
        if name.endswith("*"):
            return any(sample.startswith(name[:-1]) for sample in exported)
        return name in exported or f"{name}_bucket" in exported

    return {name for name in documented if not found(name)}


def _scrape_a_busy_cluster() -> str:
    async def main() -> str:
        async with local_cluster(servers=2, metrics=True) as cluster:
            async with pbkv.AsyncClient(cluster.address, timeout=10.0) as kv:
                await asyncio.gather(*(kv.put(f"k{i}", "v") for i in range(10)))
                await kv.get("k1")
            nodes = [cluster.viewserver.node, *(s.node for s in cluster.servers)]
            return "\n".join([await scrape_metrics(node) for node in nodes])

    return asyncio.run(main())


def test_every_metric_the_grafana_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = queried_metrics(dashboard)
    assert len(queried) >= 15
    exported = exported_metrics(_scrape_a_busy_cluster())
    assert queried - exported == set()
    # the check catches a dashboard that queries a metric nobody exports
    dashboard["panels"][0]["targets"][0]["expr"] = "rate(pbkv_operation_total[1m])"
    assert queried_metrics(dashboard) - exported == {"pbkv_operation_total"}


def test_every_alert_rule_queries_exported_metrics_of_the_scraped_job() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == [ALERTS.name]  # relative to prometheus.yml
    job = prometheus["scrape_configs"][0]["job_name"]
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    queried: set[str] = set()
    for rule in rules:
        assert {"alert", "expr"} <= set(rule) and rule["annotations"]["description"]
        queried.update(METRIC_NAME.findall(rule["expr"]))
        for used in re.findall(r'job="([^"]*)"', rule["expr"]):
            assert used == job, rule["alert"]
    only_on_disk = {n for n in queried if any(n.startswith(d) for d in ONLY_WITH_DATA_DIR)}
    unscraped = only_on_disk | ONLY_WITH_TLS
    assert queried - unscraped - exported_metrics(_scrape_a_busy_cluster()) == set()


def test_every_metric_docs_metrics_md_names_is_exported() -> None:
    """metrics.md promised `python_gc_*`, which no process exported (only `python_info`)."""
    documented = documented_metrics(METRICS_DOC.read_text())
    assert {"pbkv_failovers_total", "pbkv_operation_latency_seconds", "python_gc_*"} <= documented
    exported = exported_metrics(_scrape_a_busy_cluster())
    assert missing_metrics(documented - ONLY_WITH_DATA_DIR - ONLY_WITH_TLS, exported) == set()
    assert missing_metrics({"python_gc_*", "pbkv_nothing"}, {"python_info"}) == {
        "python_gc_*",
        "pbkv_nothing",
    }
