#!/usr/bin/env python3
"""Knative Serving's objects from a Kubeflow release's rendered install, in the release's order.

Uses box/manifests.py (load/select). Kept: the knative-serving Namespace, the *.knative.dev
CRDs, every object in namespace knative-serving (ConfigMaps, Secrets, ServiceAccounts, Role
and RoleBinding, Services, Deployments incl. net-istio's, HPAs, PDBs, the queue-proxy Image),
the cluster-scoped RBAC labelled app.kubernetes.io/name=knative-serving, and the webhook
configurations whose webhooks call a Service in knative-serving (Knative's and net-istio's).
Left out: Istio's and cert-manager's kinds (no CRDs for them in the box: manifests.NOT_IN_BOX),
the istio-system Service knative-local-gateway (Istio's namespace) and the kubeflow-namespace
NetworkPolicy default-allow-same-namespace-knative-serving (no enforcer here).

    select_objects.py v1.11.0 [--list]
"""

import gzip
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import manifests  # noqa: E402  (box/manifests.py)

SELECTORS = [
    {"kind": "Namespace", "name": "knative-serving"},
    {"kind": "CustomResourceDefinition", "name": "*.knative.dev"},
    {"namespace": "knative-serving", "skip_kinds": manifests.NOT_IN_BOX},
    {
        "kind": ["ClusterRole", "ClusterRoleBinding"],
        "labels": {"app.kubernetes.io/name": "knative-serving"},
    },
]


def webhook_to_knative(o):
    return o["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration") and any(
        (w.get("clientConfig", {}).get("service") or {}).get("namespace") == "knative-serving"
        for w in o.get("webhooks") or []
    )


def load(tag):
    """manifests.load, with libyaml's loader when PyYAML has it (5x faster on these 10 MB)."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        return manifests.load(tag)
    path = manifests.REFERENCE / "kubeflow-manifests" / tag / "rendered" / "example.yaml.gz"
    with gzip.open(path, "rt") as f:
        return [d for d in yaml.load_all(f, Loader=loader) if d]


def objects(tag):
    return [
        o
        for o in load(tag)
        if any(manifests.matches(o, s) for s in SELECTORS) or webhook_to_knative(o)
    ]


if __name__ == "__main__":
    objs = objects(sys.argv[1])
    if "--list" in sys.argv:
        for o in objs:
            print(f"{o['kind']:32} {o['metadata'].get('namespace', '-')}/{o['metadata']['name']}")
    else:
        yaml.safe_dump_all(objs, sys.stdout, sort_keys=False)
    print(
        f"# {len(objs)} Knative Serving objects from kubeflow-manifests/{sys.argv[1]}",
        file=sys.stderr,
    )
