#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/kubernetes (no API server needed).

Run it with the Python environment `ensure_kubernetes_validate` (scripts/lib.sh) makes:

    "$GREENTIC_K8S_VALIDATE" scripts/validate-manifests.py --metrics METRICS_FILE \
        [--also deploy/crds/X.yaml ...] [--dir deploy/kubernetes] [--kubernetes-version 1.33.0]

It checks:
  1. the kustomization: every YAML file of the directory is listed in `resources`, every listed
     one exists, every configMapGenerator file exists;
  2. every document of every listed file (and of each --also file) against the Kubernetes API's
     JSON schemas (kubernetes-validate, strict: unknown fields are errors); a kind it has no
     schema for (a custom resource) is an error too;
  3. what a reviewer looks for: pods run as non-root with RuntimeDefault seccomp, containers
     with a read-only root filesystem, no privilege escalation, all capabilities dropped,
     resource requests and limits; the greentic-host pod mounts no service account token, has a
     /readyz readiness probe and a termination grace period longer than the bundle's
     `shutdown_grace_secs`, itself longer than every tenant's `deadline_ms` plus
     `queue_timeout_ms`; no RBAC rule uses `*`; no ClusterRole reaches Secrets; the referenced
     ConfigMaps, ServiceAccounts and scale targets exist; the OpenTelemetry Collector's
     pipelines name only components it defines; every metric the Grafana dashboard, the HPA and
     the KEDA ScaledObject query is one the host exports (METRICS_FILE: one name a line);
  4. deploy/kubernetes/keda: a kustomize Component with a keda.sh/v1alpha1 ScaledObject
     scaling the greentic-host Deployment on an exported metric;
  5. deploy/kubernetes/sidecar and gateway (providers outside the host): kustomize Components
     whose files are all used, whose resources pass 2 and 3, and whose patches, applied to the
     base's greentic-host Deployment (a strategic merge: lists of named items merged by name),
     leave a Deployment that still passes 2 and 3; the gateway is reached only from the hosts
     (and the operator), on its port, by a NetworkPolicy.

Exits 0 when everything passes, 1 listing every problem otherwise (2 on bad usage).
"""

import argparse
import json
import os
import re
import sys
import tomllib

import kubernetes_validate
import yaml
from kubernetes_validate.utils import (
    InvalidSchemaError,
    SchemaNotFoundError,
    ValidationError,
    VersionNotSupportedError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "greentic-host"
BUNDLE_CONFIGMAP = "greentic-bundle"
OTEL_CONFIGMAP = "otel-collector"
DASHBOARD = "grafana-dashboard.json"
# The host's defaults (host/bundle/src/) for what a bundle may leave out.
DEFAULT_SHUTDOWN_GRACE_SECS = 10
DEFAULT_DEADLINE_MS = 5_000
DEFAULT_QUEUE_TIMEOUT_MS = 1_000
# Kubernetes' default terminationGracePeriodSeconds.
DEFAULT_TERMINATION_GRACE = 30
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
METRIC = re.compile(r"greentic_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class Report:
    def __init__(self):
        self.problems = []
        self.passed = []

    def fail(self, where, message):
        self.problems.append(f"{where}: {message}")

    def ok(self, message):
        self.passed.append(message)


def rel(path):
    """`path` relative to the repository when it is inside it."""
    r = os.path.relpath(os.path.abspath(path), ROOT)
    return path if r.startswith("..") else r


def ident(doc):
    kind = doc.get("kind", "?") if isinstance(doc, dict) else "?"
    name = "?"
    if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
        name = doc["metadata"].get("name", "?")
    return f"{kind}/{name}"


def load_yaml_docs(path, report):
    """The non-empty documents of a YAML file, or None if it does not parse."""
    try:
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        report.fail(rel(path), f"does not parse as YAML: {e}")
        return None


def schema_check(path, docs, version, report):
    """Every document against the API's schema (strict); a missing schema is an error."""
    for i, doc in enumerate(docs):
        where = f"{rel(path)}: document {i + 1}"
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            report.fail(where, "not a Kubernetes object (apiVersion and kind are required)")
            continue
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            report.fail(f"{where} ({doc['kind']})", "metadata.name is required")
            continue
        where = f"{rel(path)}: {ident(doc)}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as e:
            field = ".".join(str(p) for p in e.path) or "(the object)"
            report.fail(where, f"invalid against Kubernetes {e.version}: {field}: {e.message}")
        except SchemaNotFoundError as e:
            report.fail(where, f"{e.message}; custom resources do not belong in this base")
        except VersionNotSupportedError as e:
            report.fail(where, f"kubernetes-validate has no schemas for Kubernetes {e.version}")
        except InvalidSchemaError as e:
            report.fail(where, e.message)
        except Exception as e:  # noqa: BLE001 - any other failure is a failed check too
            report.fail(where, f"could not be validated: {type(e).__name__}: {e}")


def check_kustomization(directory, report):
    """The listed resource files, in order, after checking the list against the directory."""
    path = os.path.join(directory, "kustomization.yaml")
    docs = load_yaml_docs(path, report)
    if not docs:
        report.fail(rel(path), "missing or empty")
        return []
    k = docs[0]
    if not isinstance(k, dict):
        report.fail(rel(path), "not a mapping")
        return []
    resources = k.get("resources") or []
    listed = []
    for r in resources:
        full = os.path.normpath(os.path.join(directory, str(r)))
        if not os.path.isfile(full):
            report.fail(rel(path), f"resource `{r}` is not a file in {rel(directory)}")
        else:
            listed.append(full)
    present = sorted(
        os.path.join(directory, n)
        for n in os.listdir(directory)
        if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml"
        and os.path.isfile(os.path.join(directory, n))
    )
    for p in present:
        if os.path.normpath(p) not in listed:
            report.fail(rel(path), f"{os.path.basename(p)} is in the directory but not in `resources`")
    for gen in k.get("configMapGenerator") or []:
        for entry in gen.get("files") or []:
            source = str(entry).split("=", 1)[-1]
            if not os.path.isfile(os.path.join(directory, source)):
                report.fail(rel(path), f"configMapGenerator `{gen.get('name')}`: file `{source}` is missing")
    if k.get("namespace") != "greentic-system":
        report.fail(rel(path), "namespace must be greentic-system")
    report.ok(f"kustomization lists all {len(listed)} resource files")
    return listed


def pod_spec(doc):
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        return spec
    if doc["kind"] == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def check_pod(where, pod, report):
    psc = pod.get("securityContext") or {}
    containers = [("container", c) for c in pod.get("containers") or []]
    containers += [("initContainer", c) for c in pod.get("initContainers") or []]
    if not containers:
        report.fail(where, "the pod has no containers")
    for what, c in containers:
        cw = f"{where}: {what} `{c.get('name')}`"
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            report.fail(cw, "runAsNonRoot must be true (pod or container securityContext)")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            report.fail(cw, "seccompProfile.type must be RuntimeDefault (or Localhost)")
        if sc.get("readOnlyRootFilesystem") is not True:
            report.fail(cw, "securityContext.readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            report.fail(cw, "securityContext.allowPrivilegeEscalation must be false")
        if sc.get("privileged") is True:
            report.fail(cw, "securityContext.privileged must not be true")
        drop = ((sc.get("capabilities") or {}).get("drop")) or []
        if "ALL" not in drop:
            report.fail(cw, "securityContext.capabilities.drop must contain ALL")
        if ((sc.get("capabilities") or {}).get("add")):
            report.fail(cw, "securityContext.capabilities.add must be empty")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            have = res.get(kind) or {}
            for r in ("cpu", "memory"):
                if r not in have:
                    report.fail(cw, f"resources.{kind}.{r} is missing")


def bundle_toml(objects, report):
    """The greentic.toml of the greentic-bundle ConfigMap, parsed."""
    for path, doc in objects:
        if doc.get("kind") == "ConfigMap" and doc["metadata"].get("name") == BUNDLE_CONFIGMAP:
            text = (doc.get("data") or {}).get("greentic.toml")
            if text is None:
                report.fail(f"{rel(path)}: {ident(doc)}", "has no greentic.toml key")
                return None
            try:
                return tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                report.fail(f"{rel(path)}: {ident(doc)}", f"greentic.toml does not parse: {e}")
                return None
    report.fail("deploy/kubernetes", f"no ConfigMap {BUNDLE_CONFIGMAP}")
    return None


def check_host(objects, report):
    hosts = [(p, d) for p, d in objects if d["kind"] == "Deployment" and d["metadata"]["name"] == HOST]
    if len(hosts) != 1:
        report.fail("deploy/kubernetes", f"expected one Deployment {HOST}, found {len(hosts)}")
        return
    path, doc = hosts[0]
    where = f"{rel(path)}: {ident(doc)}"
    pod = pod_spec(doc)
    if pod.get("automountServiceAccountToken") is not False:
        report.fail(where, "automountServiceAccountToken must be false (the host needs no Kubernetes API)")
    sa_name = pod.get("serviceAccountName", "default")
    for p, d in objects:
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == sa_name:
            if d.get("automountServiceAccountToken") is not False:
                report.fail(f"{rel(p)}: {ident(d)}", "automountServiceAccountToken must be false")
    probes = [
        ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
        for c in pod.get("containers") or []
    ]
    if "/readyz" not in probes:
        report.fail(where, "no container has a readinessProbe with httpGet.path /readyz")
    bundle = bundle_toml(objects, report)
    if bundle is None:
        return
    grace = pod.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE)
    shutdown = (bundle.get("host") or {}).get("shutdown_grace_secs", DEFAULT_SHUTDOWN_GRACE_SECS)
    if not grace > shutdown:
        report.fail(where, f"terminationGracePeriodSeconds ({grace}) must exceed the bundle's [host].shutdown_grace_secs ({shutdown})")
    longest, who = 0, None
    for tenant, t in (bundle.get("tenants") or {}).items():
        limits = (t or {}).get("limits") or {}
        ms = limits.get("deadline_ms", DEFAULT_DEADLINE_MS) + limits.get("queue_timeout_ms", DEFAULT_QUEUE_TIMEOUT_MS)
        if ms > longest:
            longest, who = ms, tenant
    if who is not None and not shutdown * 1000 > longest:
        report.fail(
            f"ConfigMap/{BUNDLE_CONFIGMAP}: greentic.toml",
            f"[host].shutdown_grace_secs ({shutdown}) must exceed tenant `{who}`'s deadline_ms plus queue_timeout_ms ({longest} ms)",
        )
    report.ok(f"{HOST}: no token, /readyz, grace {grace}s > shutdown_grace_secs {shutdown}s"
              + (f" > longest deadline+queue {longest / 1000:g}s" if who else " (no tenants in the bootstrap bundle)"))


def check_rbac(objects, report):
    for path, doc in objects:
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        where = f"{rel(path)}: {ident(doc)}"
        if doc.get("aggregationRule"):
            report.fail(where, "aggregationRule: aggregated roles grant what other roles say; list the rules")
        for i, rule in enumerate(doc.get("rules") or []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                if any("*" in str(v) for v in rule.get(field) or []):
                    report.fail(where, f"rules[{i}].{field} uses `*`; name what is needed")
            if doc["kind"] == "ClusterRole":
                res = rule.get("resources") or []
                if any(r == "secrets" or str(r).startswith("secrets/") for r in res):
                    report.fail(where, f"rules[{i}] grants access to Secrets cluster-wide; use a Role in greentic-system")
    report.ok("RBAC: no wildcard, no cluster-wide Secrets access")


def check_references(objects, report):
    names = {(d["kind"], d["metadata"]["name"]) for _, d in objects}
    for path, doc in objects:
        where = f"{rel(path)}: {ident(doc)}"
        if doc["kind"] in POD_KINDS:
            pod = pod_spec(doc)
            sa = pod.get("serviceAccountName")
            if sa and ("ServiceAccount", sa) not in names:
                report.fail(where, f"serviceAccountName `{sa}` is not defined here")
            for v in pod.get("volumes") or []:
                cm = v.get("configMap")
                if cm and not cm.get("optional") and ("ConfigMap", cm.get("name")) not in names:
                    report.fail(where, f"volume `{v.get('name')}`: ConfigMap `{cm.get('name')}` is not defined here")
        if doc["kind"] == "HorizontalPodAutoscaler":
            ref = (doc.get("spec") or {}).get("scaleTargetRef") or {}
            if (ref.get("kind"), ref.get("name")) not in names:
                report.fail(where, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not defined here")


def check_otel(objects, report):
    found = False
    for path, doc in objects:
        if doc["kind"] != "ConfigMap" or doc["metadata"]["name"] != OTEL_CONFIGMAP:
            continue
        found = True
        where = f"{rel(path)}: {ident(doc)}: config.yaml"
        text = (doc.get("data") or {}).get("config.yaml")
        if text is None:
            report.fail(where, "missing")
            continue
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            report.fail(where, f"does not parse: {e}")
            continue
        defined = {k: set((config.get(k) or {}).keys()) for k in ("receivers", "processors", "exporters", "extensions", "connectors")}
        service = config.get("service") or {}
        for ext in service.get("extensions") or []:
            if ext not in defined["extensions"]:
                report.fail(where, f"service.extensions names `{ext}`, which `extensions` does not define")
        pipelines = service.get("pipelines") or {}
        if not pipelines:
            report.fail(where, "service.pipelines is empty")
        for name, p in pipelines.items():
            if name.split("/", 1)[0] not in ("traces", "metrics", "logs"):
                report.fail(where, f"pipeline `{name}` is not traces, metrics or logs (optionally /NAME)")
            p = p or {}
            for field in ("receivers", "processors", "exporters"):
                for comp in p.get(field) or []:
                    ok = comp in defined[field] or (field != "processors" and comp in defined["connectors"])
                    if not ok:
                        report.fail(where, f"pipeline `{name}`: {field} names `{comp}`, which is not defined")
            for field in ("receivers", "exporters"):
                if not p.get(field):
                    report.fail(where, f"pipeline `{name}` has no {field}")
        report.ok(f"otel collector: pipelines {', '.join(pipelines)} name only defined components")
    if not found:
        report.fail("deploy/kubernetes", f"no ConfigMap {OTEL_CONFIGMAP}")


def metric_problems(text, exported):
    """The greentic metric names in `text` (histogram series by their metric's name), and those
    of them the host does not export."""
    unknown, seen = [], []
    for name in METRIC.findall(text):
        if name not in exported:
            name = next(
                (name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s) and name[: -len(s)] in exported),
                name,
            )
        seen.append(name)
        if name not in exported:
            unknown.append(name)
    return seen, unknown


def query_strings(node, key=None):
    """Every string under an `expr`, `query` or `definition` key of a dashboard."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from query_strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from query_strings(v, key)
    elif isinstance(node, str) and key in ("expr", "query", "definition"):
        yield node


def check_dashboard(directory, exported, report):
    path = os.path.join(directory, DASHBOARD)
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        report.fail(rel(path), f"not readable JSON: {e}")
        return
    if dash.get("uid") != HOST:
        report.fail(rel(path), f"uid must be `{HOST}`")
    used = set()
    for q in query_strings(dash):
        seen, unknown = metric_problems(q, exported)
        used.update(seen)
        for name in unknown:
            report.fail(rel(path), f"query names `{name}`, which the host does not export: {q.strip()}")
    if not used:
        report.fail(rel(path), "no query names a greentic metric")
    report.ok(f"dashboard: {len(used)} metric names, all exported")


def check_hpa_metrics(objects, exported, report):
    for path, doc in objects:
        if doc["kind"] != "HorizontalPodAutoscaler":
            continue
        for m in (doc.get("spec") or {}).get("metrics") or []:
            if m.get("type") == "Pods":
                name = ((m.get("pods") or {}).get("metric") or {}).get("name", "")
                _, unknown = metric_problems(name, exported)
                if unknown or not METRIC.fullmatch(name):
                    report.fail(f"{rel(path)}: {ident(doc)}", f"Pods metric `{name}` is not a metric the host exports")


def check_keda(directory, exported, report):
    keda = os.path.join(directory, "keda")
    if not os.path.isdir(keda):
        return
    files = sorted(n for n in os.listdir(keda) if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml")
    kpath = os.path.join(keda, "kustomization.yaml")
    kdocs = load_yaml_docs(kpath, report) if os.path.isfile(kpath) else None
    if not kdocs or not isinstance(kdocs[0], dict):
        report.fail(rel(kpath), "missing: keda/ must be a kustomize Component")
    else:
        k = kdocs[0]
        if k.get("kind") != "Component":
            report.fail(rel(kpath), "kind must be Component")
        listed = {os.path.normpath(str(r)) for r in k.get("resources") or []}
        for n in files:
            if n not in listed:
                report.fail(rel(kpath), f"{n} is not in `resources`")
    scaled = 0
    for n in files:
        path = os.path.join(keda, n)
        for doc in load_yaml_docs(path, report) or []:
            where = f"{rel(path)}: {ident(doc)}"
            if not isinstance(doc, dict) or doc.get("apiVersion") != "keda.sh/v1alpha1":
                report.fail(where, "apiVersion must be keda.sh/v1alpha1")
                continue
            if doc.get("kind") != "ScaledObject":
                continue
            scaled += 1
            spec = doc.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("name") != HOST or ref.get("kind", "Deployment") != "Deployment":
                report.fail(where, f"scaleTargetRef must name the Deployment {HOST}")
            queries = [
                (t.get("metadata") or {}).get("query", "")
                for t in spec.get("triggers") or []
                if t.get("type") == "prometheus"
            ]
            if not queries:
                report.fail(where, "no prometheus trigger")
            for q in queries:
                seen, unknown = metric_problems(q, exported)
                if not seen:
                    report.fail(where, f"query names no greentic metric: {q}")
                for name in unknown:
                    report.fail(where, f"query names `{name}`, which the host does not export")
    if scaled == 0:
        report.fail(rel(keda), "no ScaledObject")
    else:
        report.ok("keda: ScaledObject scales greentic-host on an exported metric")


def strategic_merge(base, patch):
    """`patch` over `base` as kustomize merges a Deployment patch: mappings recursively, lists of
    mappings that all have a `name` merged item by item by name, anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else v
        return out
    named = lambda items: isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)
    if named(base) and named(patch):
        out = [dict(i) for i in base]
        for item in patch:
            at = next((n for n, b in enumerate(out) if b["name"] == item["name"]), None)
            if at is None:
                out.append(item)
            else:
                out[at] = strategic_merge(out[at], item)
        return out
    return patch


def check_components(directory, objects, version, report):
    """The Components of providers outside the host: see 5 in the module's doc."""
    base_host = next((d for _, d in objects if d["kind"] == "Deployment" and d["metadata"]["name"] == HOST), None)
    for name in ("sidecar", "gateway"):
        cdir = os.path.join(directory, name)
        kpath = os.path.join(cdir, "kustomization.yaml")
        if not os.path.isdir(cdir):
            report.fail(rel(cdir), "missing: the Component of providers outside the host")
            continue
        kdocs = load_yaml_docs(kpath, report) if os.path.isfile(kpath) else None
        if not kdocs or not isinstance(kdocs[0], dict) or kdocs[0].get("kind") != "Component":
            report.fail(rel(kpath), f"{name}/ must be a kustomize Component")
            continue
        k = kdocs[0]
        resources = [os.path.normpath(os.path.join(cdir, str(r))) for r in k.get("resources") or []]
        patches = []
        for p in k.get("patches") or []:
            target = p.get("target") or {}
            if not p.get("path"):
                report.fail(rel(kpath), "a patch without `path`: keep patches in files, so they are checked")
                continue
            if target.get("kind") != "Deployment" or target.get("name") != HOST:
                report.fail(rel(kpath), f"patch {p['path']}: only the {HOST} Deployment is patched here")
            patches.append(os.path.normpath(os.path.join(cdir, str(p["path"]))))
        used = set(resources) | set(patches)
        for n in sorted(os.listdir(cdir)):
            full = os.path.join(cdir, n)
            if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml" and full not in used:
                report.fail(rel(kpath), f"{n} is neither a resource nor a patch")
        own = []
        for path in resources:
            if not os.path.isfile(path):
                report.fail(rel(kpath), f"resource `{rel(path)}` is missing")
                continue
            docs = load_yaml_docs(path, report) or []
            schema_check(path, docs, version, report)
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") in POD_KINDS:
                    check_pod(f"{rel(path)}: {ident(doc)}", pod_spec(doc), report)
                if isinstance(doc, dict) and doc.get("kind"):
                    own.append((path, doc))
        merged = base_host
        for path in patches:
            if not os.path.isfile(path):
                report.fail(rel(kpath), f"patch `{rel(path)}` is missing")
                continue
            for doc in load_yaml_docs(path, report) or []:
                if merged is not None:
                    merged = strategic_merge(merged, doc)
        if merged is not None and patches:
            where = f"{name}/: {HOST} with its patches"
            schema_check(os.path.join(cdir, "(patched greentic-host)"), [merged], version, report)
            check_pod(where, pod_spec(merged), report)
            containers = [c.get("name") for c in pod_spec(merged).get("containers") or []]
            if "host" not in containers:
                report.fail(where, "the patch lost the host container")
        if name == "gateway":
            gateways = [d for _, d in own if d["kind"] == "Deployment"]
            policies = [d for _, d in own if d["kind"] == "NetworkPolicy"]
            for g in gateways:
                labels = ((g.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                guard = [
                    p for p in policies
                    if ((p.get("spec") or {}).get("podSelector") or {}).get("matchLabels") == labels
                ]
                if not guard:
                    report.fail(f"{name}/: {ident(g)}", "no NetworkPolicy selects the gateway's pods")
                for p in guard:
                    for rule in (p.get("spec") or {}).get("ingress") or []:
                        froms = rule.get("from") or []
                        if not froms:
                            report.fail(f"{name}/: {ident(p)}", "an ingress rule admits every source; admit the hosts only")
                        for f in froms:
                            who = ((f.get("podSelector") or {}).get("matchLabels") or {}).get("app.kubernetes.io/name")
                            if f.get("namespaceSelector") or who not in (HOST, "greentic-operator"):
                                report.fail(f"{name}/: {ident(p)}", f"ingress from {f}: only the hosts and the operator may reach the gateway")
        report.ok(f"{name}/: a Component, its resources and its patched {HOST} valid and within the policy checks")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.path.join(ROOT, "deploy", "kubernetes"), help="the kustomize base (default: deploy/kubernetes)")
    ap.add_argument("--kubernetes-version", default="1.33.0", help="the Kubernetes API version to validate against (default: 1.33.0)")
    ap.add_argument("--metrics", required=True, help="file with the metric names the host exports, one a line")
    ap.add_argument("--also", action="append", default=[], metavar="FILE", help="another manifest to validate against the schemas (e.g. deploy/crds/*.yaml); repeatable")
    args = ap.parse_args()

    try:
        with open(args.metrics, encoding="utf-8") as f:
            exported = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    except OSError as e:
        print(f"error: --metrics: {e}", file=sys.stderr)
        return 2
    if not exported:
        print(f"error: --metrics {args.metrics} names no metric", file=sys.stderr)
        return 2

    report = Report()
    directory = os.path.abspath(args.dir)
    objects = []
    for path in check_kustomization(directory, report):
        docs = load_yaml_docs(path, report)
        if docs is None:
            continue
        schema_check(path, docs, args.kubernetes_version, report)
        objects += [(path, d) for d in docs if isinstance(d, dict) and d.get("kind") and isinstance(d.get("metadata"), dict) and d["metadata"].get("name")]
    report.ok(f"{len(objects)} objects valid against the Kubernetes {args.kubernetes_version} schemas (strict)")

    pods = 0
    for path, doc in objects:
        if doc["kind"] in POD_KINDS:
            pods += 1
            check_pod(f"{rel(path)}: {ident(doc)}", pod_spec(doc), report)
    report.ok(f"{pods} workloads: non-root, read-only root, no escalation, no capabilities, requests and limits")
    check_host(objects, report)
    check_rbac(objects, report)
    check_references(objects, report)
    check_otel(objects, report)
    check_dashboard(directory, exported, report)
    check_hpa_metrics(objects, exported, report)
    check_keda(directory, exported, report)
    check_components(directory, objects, args.kubernetes_version, report)

    for extra in args.also:
        docs = load_yaml_docs(extra, report)
        if docs is None:
            continue
        if not docs:
            report.fail(rel(extra), "has no documents")
        schema_check(extra, docs, args.kubernetes_version, report)
        report.ok(f"{rel(extra)}: {len(docs)} objects checked")

    if report.problems:
        for p in report.problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"{len(report.problems)} problems in the Kubernetes manifests", file=sys.stderr)
        return 1
    for line in report.passed:
        print(f"ok: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
