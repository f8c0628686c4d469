"""Alerts, recording rules, the dashboard and the engine's autoscaling read the metrics the service exports:
promtool checks and unit-tests the rules, and a renamed metric fails here rather than on a silent panel."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"

# The service's own metrics by kind (service/metrics.py), and the series /metrics shows of each.
COUNTERS = (
    "resnet_images",
    "resnet_answers",
    "resnet_ood",
    "resnet_shadow_compared",
    "resnet_shadow_agreed",
    "resnet_shadow_top1_difference",
    "resnet_shadow_ood",
    "resnet_shadow_dropped",
)
HISTOGRAMS = (
    "resnet_batch_size",
    "resnet_inference_seconds",
    "resnet_preprocess_seconds",
    "resnet_top1_probability",
    "resnet_answer_model_seconds",
)
GAUGES = (
    "resnet_shadow_min_agreement",
    "resnet_drift",
    "resnet_drift_threshold",
    "resnet_reference_label_fraction",
    "resnet_engine_queued_images",
    "resnet_engine_batches_in_flight",
)
EXPORTED = (
    {f"{name}_total" for name in COUNTERS}
    | {f"{name}_{part}" for name in HISTOGRAMS for part in ("bucket", "sum", "count")}
    | set(GAUGES)
)
# BentoML's request metrics, as `bentoml serve` shows them (they count /classify, fast path and all).
BENTOML = {"bentoml_service_request_total", "bentoml_service_request_duration_seconds_bucket"}
METRIC = re.compile(r"(?<![\w:])(?:resnet|bentoml)_\w+")
RECORDED = re.compile(r"(?<![\w:])resnet:[\w:]+")


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make test` installs it (apt-get install prometheus)"
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True)


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load((PROMETHEUS / "rules.yaml").read_text())["groups"] for rule in group["rules"]
    ]


def panels() -> list[dict]:
    """The dashboard's panels, rows (which hold no queries) left out."""
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def engine_hpa() -> dict:
    docs = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "engine.yaml").read_text())
    return next(doc for doc in docs if doc["kind"] == "HorizontalPodAutoscaler")


def test_rules_pass_promtool_check() -> None:
    run = promtool("check", "rules", "rules.yaml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_alerts_fire_when_they_should_and_only_then() -> None:
    """rules.test.yaml: a scenario that fires each alert and a normal one that fires none."""
    run = promtool("test", "rules", "rules.test.yaml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_tells_an_operator_what_to_do() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(alerts) == {"ResnetDrift", "ResnetOodRate", "ResnetEngineQueueDeep", "ResnetShadowDisagrees"}
    for rule in alerts.values():
        assert rule["for"] and rule["labels"]["severity"], rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_dashboard_panel_queries_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    assert "DS_PROMETHEUS" in {var["name"] for var in dashboard["templating"]["list"]}
    for panel in panels():
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert [t for t in panel["targets"] if t["expr"].strip()], f"{panel['title']}: no query"


def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Grafana's variables filled in, each query parses as PromQL (promtool checks it as a recording rule)."""
    exprs = [e.replace("$__rate_interval", "5m").replace("$model", ".*") for e in dashboard_exprs()]
    records = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    run = promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_rules_and_dashboard_read_only_metrics_the_service_exports() -> None:
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs()
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= EXPORTED | BENTOML, f"not exported: {sorted(used - EXPORTED - BENTOML)}"
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    missing = {name for expr in dashboard_exprs() for name in RECORDED.findall(expr)} - recorded
    assert not missing, f"the dashboard reads recording rules that rules.yaml lacks: {missing}"


def test_the_service_defines_every_metric_named_here() -> None:
    """The other half of the check above: renaming a metric in the service breaks this list."""
    source = "\n".join(path.read_text() for path in (ROOT / "service").rglob("*.py"))
    defined = set(re.findall(r"name=\"(resnet_\w+)\"", source))
    assert set(COUNTERS + HISTOGRAMS + GAUGES) <= defined, sorted(set(COUNTERS + HISTOGRAMS + GAUGES) - defined)


def test_keda_scales_the_engine_on_the_hpa_metric() -> None:
    """deploy/keda/ is the alternative to the engine's HPA: same Deployment, metric and target."""
    scaled = yaml.safe_load((ROOT / "deploy" / "keda" / "scaledobject.yaml").read_text())
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    hpa = engine_hpa()["spec"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == hpa["scaleTargetRef"]["name"]
    ((metric,), (trigger,)) = hpa["metrics"], scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger.get("metricType", "AverageValue") == "AverageValue"
    assert METRIC.findall(trigger["metadata"]["query"]) == [metric["pods"]["metric"]["name"]]
    assert float(trigger["metadata"]["threshold"]) == float(metric["pods"]["target"]["averageValue"])


def test_prometheus_scrapes_the_engine_with_its_token() -> None:
    """The engine's /metrics needs its bearer token; the adapter needs namespace and pod labels on its series.
    (Debian's promtool is built without Kubernetes discovery, so this file is checked here, by hand.)"""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yaml").read_text())
    assert config["rule_files"] == ["rules.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"resnet-front", "resnet-engine"}
    assert jobs["resnet-engine"]["authorization"]["credentials_file"]
    assert "authorization" not in jobs["resnet-front"], "the front's /metrics is public"
    for name, job in jobs.items():
        keep = next(r for r in job["relabel_configs"] if r.get("action") == "keep")
        assert keep["regex"] == name, "each job keeps its own Deployment's pods"
        assert {"namespace", "pod"} <= {r.get("target_label") for r in job["relabel_configs"]}
