#!/usr/bin/env python3
"""Renders and lints helm/lanes with Helm's own Go code (PyPI helm-python-sdk), checks what the
rendered manifests promise, and writes them out for `kubernetes-validate --strict`.

Run by helm/check.sh inside its virtualenv:

    python3 helm/check_chart.py OUT_DIR

Per case (a set of values) it writes OUT_DIR/<case>.yaml with every manifest of a Kubernetes
kind; custom resources (ServiceMonitor, ScaledObject, TriggerAuthentication) are not in Kubernetes' schemas, so they
are validated here against the small schemas below and listed as such. Exits non-zero on the
first failing case, after printing what failed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "lanes"
# Where the binaries name the metrics they export (one string constant per name).
METRIC_SOURCES = (HERE.parent / "coordinator/src/metrics/mod.rs", HERE.parent / "gateway/src/metrics.rs")
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native gRPC probes).
KUBE_VERSION = "v1.27.0"
RELEASE, NAMESPACE = "lanes", "lanes"


def load_values(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text())


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# The cases: name -> values given on top of values.yaml (None = the defaults alone).
ALL_ON = load_values("values-all-on.yaml")
CASES: dict[str, dict | None] = {
    "default": None,
    "all-on": ALL_ON,
    # The other branch of every either/or: existing Secrets, an HTTP handler, no TLS, one
    # coordinator (no PDB), no gateway, no migration hook.
    "existing-secrets": {
        "database": {"existingSecret": "lanes-db-app", "existingSecretKey": "uri"},
        "auth": {"existingSecret": "lanes-tokens"},
        "agent": {"http": "http://import.default.svc:8000/import", "replicas": 4},
        "coordinator": {"replicas": 1},
        "gateway": {"enabled": False},
        "migrate": {"enabled": False},
        "serviceAccount": {"create": False},
    },
    # KEDA without coordinator TLS: the trigger speaks plaintext, with no TriggerAuthentication.
    "keda-plaintext": {"keda": {"enabled": True}},
}
# Values the chart must refuse, and the words its error must contain.
REFUSED: dict[str, tuple[dict, str]] = {
    "agent token not accepted": (
        {"auth": {"agentTokens": "a1", "agentToken": "a2"}},
        "auth.agentToken must be one of auth.agentTokens",
    ),
    "gateway token not accepted": (
        {"auth": {"adminTokens": "adm", "gatewayToken": "other"}},
        "auth.gatewayToken must be one of auth.adminTokens",
    ),
    "no handler": ({"agent": {"exec": "", "http": ""}}, "set agent.exec"),
    "no queue": ({"agent": {"queues": []}}, "agent.queues needs at least one queue"),
    "no database": ({"database": {"url": ""}}, "set database.url or database.existingSecret"),
    "tls without a secret": (
        {"coordinator": {"tls": {"enabled": True}}},
        "coordinator.tls.secretName is required",
    ),
}

# Custom resources: just the fields the chart writes, strict about unknown ones.
DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}
LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                        "additionalProperties": False,
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string", "minLength": 1},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": DURATION},
                                "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": {"type": "string", "minLength": 1},
                        },
                        "additionalProperties": False,
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"enum": ["external", "external-push"]},
                                "metadata": {
                                    "type": "object",
                                    "required": ["scalerAddress"],
                                    "properties": {
                                        "scalerAddress": {
                                            "type": "string",
                                            "pattern": r"^[a-z0-9.-]+:[0-9]+$",
                                        }
                                    },
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string", "minLength": 1},
                                        "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                    },
                                    "additionalProperties": False,
                                },
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "TriggerAuthentication"},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["secretTargetRef"],
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {"type": "string", "minLength": 1},
                                "name": {"type": "string", "minLength": 1},
                                "key": {"type": "string", "minLength": 1},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


class Failed(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def render(values: dict | None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def lint(case: str, values: dict | None) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    problems += [{"path": "", "error": e} for e in report.get("errors") or []]
    for m in report.get("messages", []):
        if m.get("severity", 0) < 2:
            print(f"  lint info ({case}): {m['path']}: {m['error']}")
    if problems:
        raise Failed("helm lint: " + "; ".join(f"{p['path']}: {p['error']}" for p in problems))


def documents(manifests: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            check(bool(text.strip()), "NOTES.txt renders empty")
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                check(isinstance(doc, dict) and "kind" in doc, f"{path}: not a Kubernetes object")
                docs.append(doc)
    return docs


def by_kind(docs: list[dict], kind: str, suffix: str = "") -> list[dict]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def one(docs: list[dict], kind: str, suffix: str) -> dict:
    found = by_kind(docs, kind, suffix)
    check(len(found) == 1, f"expected one {kind} *{suffix}, found {len(found)}")
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def promises(case: str, docs: list[dict], values: dict) -> None:
    """What the chart promises beyond schema validity, for the values of this case."""
    coord = one(docs, "Deployment", "-coordinator")
    spec = coord["spec"]["template"]["spec"]
    c = spec["containers"][0]
    tls = values["coordinator"]["tls"]["enabled"]
    check(coord["spec"]["replicas"] == values["coordinator"]["replicas"], "coordinator replicas")
    for probe in ("readinessProbe", "livenessProbe"):
        if tls:
            check("tcpSocket" in c[probe], f"coordinator {probe}: TCP with TLS")
        else:
            check(c[probe].get("grpc", {}).get("port") == values["coordinator"]["port"],
                  f"coordinator {probe}: native gRPC probe on the gRPC port")
    if not tls:
        # Readiness follows the database; liveness must not, or an outage restarts replicas.
        check("service" not in c["readinessProbe"]["grpc"], "coordinator readiness: service \"\"")
        check(c["livenessProbe"]["grpc"].get("service") == "liveness",
              "coordinator liveness: service \"liveness\" (always SERVING)")
    check(c["args"] == ["serve"], "coordinator runs `serve`")
    check("DATABASE_URL" in env_of(c), "coordinator gets DATABASE_URL")
    for key in ("LANES_AGENT_TOKENS", "LANES_CLIENT_TOKENS", "LANES_ADMIN_TOKENS"):
        check(key in env_of(c), f"coordinator gets {key}")
    pdbs = by_kind(docs, "PodDisruptionBudget", "-coordinator")
    if values["coordinator"]["replicas"] > 1:
        check(len(pdbs) == 1, "coordinator PodDisruptionBudget")
        check(pdbs[0]["spec"]["minAvailable"] == values["coordinator"]["podDisruptionBudget"]["minAvailable"],
              "coordinator PDB minAvailable")
    else:
        check(not pdbs, "no coordinator PDB with a single replica")
    one(docs, "Service", "-coordinator")
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            check(pod["securityContext"].get("runAsNonRoot") is True, f"{d['metadata']['name']}: non-root")
            for ctr in pod["containers"]:
                check(bool(ctr.get("resources", {}).get("requests")) and bool(ctr["resources"].get("limits")),
                      f"{d['metadata']['name']}: requests and limits")
                check(ctr["securityContext"].get("readOnlyRootFilesystem") is True,
                      f"{d['metadata']['name']}: read-only root filesystem")

    jobs = by_kind(docs, "Job", "-migrate")
    if values["migrate"]["enabled"]:
        check(len(jobs) == 1, "migration Job")
        ann = jobs[0]["metadata"]["annotations"]
        check(ann.get("helm.sh/hook") == "pre-install,pre-upgrade", "migration Job is a pre-install,pre-upgrade hook")
        check(ann.get("helm.sh/hook-delete-policy") == "before-hook-creation,hook-succeeded", "hook delete policy")
        check(jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"], "Job runs `migrate`")
        # The Secret the hook reads exists before it: the user's, or a hook Secret of lower weight.
        ref = env_of(jobs[0]["spec"]["template"]["spec"]["containers"][0])["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        if not values["database"]["existingSecret"]:
            hook_secret = one(docs, "Secret", "-migrate")
            check(ref["name"] == hook_secret["metadata"]["name"], "hook reads its own Secret")
            check(int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"])
                  < int(ann["helm.sh/hook-weight"]), "hook Secret is created before the Job")
        else:
            check(ref == {"name": values["database"]["existingSecret"],
                          "key": values["database"]["existingSecretKey"]}, "hook reads the existing Secret")
    else:
        check(not jobs, "no migration Job when disabled")

    agent = one(docs, "Deployment", "-agent")
    aspec = agent["spec"]["template"]["spec"]
    a = values["agent"]
    check(aspec["terminationGracePeriodSeconds"] == a["gracePeriodSeconds"] + 5,
          "agent terminationGracePeriodSeconds = grace period + 5")
    aenv = env_of(aspec["containers"][0])
    check(aenv["LANES_GRACE_PERIOD_SECS"]["value"] == str(a["gracePeriodSeconds"]), "agent grace period env")
    check(aenv["LANES_QUEUES"]["value"] == ",".join(a["queues"]), "LANES_QUEUES")
    if a["http"]:
        check(aenv["LANES_HTTP"]["value"] == a["http"] and "LANES_EXEC" not in aenv, "HTTP handler")
    else:
        check(aenv["LANES_EXEC"]["value"] == a["exec"] and "LANES_HTTP" not in aenv, "exec handler")
        check(("LANES_PERSISTENT" in aenv) == bool(a.get("persistent")), "persistent handler")
        check(aenv.get("LANES_SOFT_SIGNAL", {}).get("value", "") == a.get("softSignal", ""),
              "soft-limit signal")
    scaled = by_kind(docs, "ScaledObject")
    if values["keda"]["enabled"]:
        check("replicas" not in agent["spec"], "no agent replicas under KEDA")
        check(len(scaled) == 1, "ScaledObject")
        trig = scaled[0]["spec"]["triggers"][0]
        check(trig["type"] == "external", "KEDA trigger type external")
        check(trig["metadata"]["scalerAddress"].endswith(f"-coordinator.{NAMESPACE}.svc:{values['coordinator']['port']}"),
              "scalerAddress is the coordinator Service")
        # KEDA must speak TLS to a TLS coordinator: the CA comes from a TriggerAuthentication
        # (`caCert` is an authentication parameter; metadata would reach the scaler).
        auths = by_kind(docs, "TriggerAuthentication")
        if values["coordinator"]["tls"]["enabled"]:
            check(len(auths) == 1, "TriggerAuthentication for the scaler's TLS")
            check(trig.get("authenticationRef", {}).get("name") == auths[0]["metadata"]["name"],
                  "the trigger uses the TriggerAuthentication")
            check(auths[0]["spec"]["secretTargetRef"] == [{
                "parameter": "caCert", "name": values["coordinator"]["tls"]["secretName"], "key": "ca.crt"}],
                "caCert from the coordinator's TLS Secret")
        else:
            check(not auths and "authenticationRef" not in trig, "no scaler TLS without coordinator TLS")
        check(set(trig["metadata"]) == {"scalerAddress", "queues", "targetJobsPerAgent"},
              "trigger metadata holds only what the scaler accepts")
    else:
        check(agent["spec"]["replicas"] == a["replicas"], "agent replicas")
        check(not scaled, "no ScaledObject when KEDA is off")

    gw = by_kind(docs, "Deployment", "-gateway")
    if values["gateway"]["enabled"]:
        check(len(gw) == 1, "gateway Deployment")
        g = gw[0]["spec"]["template"]["spec"]["containers"][0]
        check(g["readinessProbe"]["httpGet"]["path"] == "/readyz", "gateway readiness /readyz")
        check(g["livenessProbe"]["httpGet"]["path"] == "/healthz", "gateway liveness /healthz")
        for key in ("LANES_API_KEYS", "LANES_COORDINATOR_TOKEN", "LANES_COORDINATOR"):
            check(key in env_of(g), f"gateway gets {key}")
        one(docs, "Service", "-gateway")
    else:
        check(not gw, "no gateway when disabled")

    monitors = by_kind(docs, "ServiceMonitor")
    check(len(monitors) == (1 if values["serviceMonitor"]["enabled"] else 0), "ServiceMonitor iff enabled")
    dashboards = by_kind(docs, "ConfigMap", "-dashboard")
    if values["grafanaDashboard"]["enabled"]:
        check(len(dashboards) == 1, "dashboard ConfigMap")
        dash = json.loads(dashboards[0]["data"]["lanes.json"])
        exprs = json.dumps(dash)
        for metric in ("lanes_jobs_enqueued_total", "lanes_jobs_completed_total", "lanes_jobs_failed_total",
                       "lanes_queue_depth", "lanes_job_duration_seconds_bucket", "lanes_agents_connected",
                       "lanes_gateway_http_requests_total", "lanes_gateway_http_request_duration_seconds_bucket"):
            check(metric in exprs, f"dashboard uses {metric}")
        # Every lanes_* name the dashboard reads (histogram suffixes aside) is one the code exports.
        exported = {m for f in METRIC_SOURCES for m in re.findall(r'"(lanes_[a-z_]+)"', f.read_text())}
        used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"lanes_[a-z_]+", exprs)}
        for metric in sorted(used - exported):
            check(False, f"dashboard reads {metric}, which neither the coordinator nor the gateway exports")

    secrets = {d["metadata"]["name"] for d in by_kind(docs, "Secret")}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        for ctr in d["spec"]["template"]["spec"]["containers"]:
            for e in ctr.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in secrets:
                    expected = {values["database"]["existingSecret"], values["auth"]["existingSecret"]}
                    expected |= {x.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
                                 for comp in ("coordinator", "gateway", "agent")
                                 for x in values[comp].get("extraEnv", [])}
                    check(ref["name"] in expected, f"{d['metadata']['name']}: {e['name']} reads unknown Secret {ref['name']}")


def run_case(case: str, extra: dict | None, out: Path, chart_defaults: dict) -> tuple[int, list[str]]:
    values = deep_merge(chart_defaults, extra or {})
    lint(case, extra)
    docs = documents(render(extra))
    promises(case, docs, values)
    native, custom = [], []
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in CRD_SCHEMAS:
            try:
                jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).validate(d)
            except jsonschema.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path)
                raise Failed(f"{d['kind']}/{d['metadata']['name']}: {path}: {e.message}") from None
            custom.append(f"{d['kind']}/{d['metadata']['name']} ({d['apiVersion']})")
        else:
            native.append(d)
    (out / f"{case}.yaml").write_text(yaml.safe_dump_all(native, sort_keys=False))
    return len(native), custom


def values_documented(defaults: dict) -> None:
    """Every value of values.yaml has a row in the README's values table (or a parent has)."""
    import re

    rows = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.M))

    def leaves(v, path=()):
        if isinstance(v, dict) and v:
            for k, x in v.items():
                yield from leaves(x, path + (k,))
        else:
            yield ".".join(path)

    missing = [leaf for leaf in leaves(defaults)
               if not any(leaf == r or leaf.startswith(r + ".") for r in rows)]
    check(not missing, f"values missing from helm/lanes/README.md's table: {', '.join(missing)}")


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values
    print(f"helm SDK {helm.helm_sdk_version()}, chart {CHART.name}, lint against Kubernetes {KUBE_VERSION}")
    failed = 0
    try:
        values_documented(defaults)
        print("ok   every value is in helm/lanes/README.md's values table")
    except Failed as e:
        failed += 1
        print(f"FAIL {e}")
    for case, extra in CASES.items():
        try:
            n, custom = run_case(case, extra, out, defaults)
            print(f"ok   render+lint+promises {case}: {n} Kubernetes objects -> {case}.yaml")
            for c in custom:
                print(f"       custom resource {c}: not in the Kubernetes schemas; validated against check_chart.py's schema")
        except (Failed, helm.HelmError) as e:
            failed += 1
            print(f"FAIL {case}: {e}")
    for what, (extra, words) in REFUSED.items():
        try:
            render(extra)
            failed += 1
            print(f"FAIL refuses {what}: rendered without an error")
        except helm.HelmError as e:
            if words in str(e):
                print(f"ok   refuses {what}")
            else:
                failed += 1
                print(f"FAIL refuses {what}: error does not say {words!r}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
