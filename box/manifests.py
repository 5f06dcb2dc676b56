#!/usr/bin/env python3
"""Select objects from what a release installs, as a YAML stream for the box's kubectl.

A source is a Kubeflow tag, read from
../shared/cluster-reference/kubeflow-manifests/<tag>/rendered/example.yaml.gz (the whole
`kubectl kustomize example` of kubeflow/manifests at that tag; its README says how it was
made), or a YAML file (.yaml, .yml, .gz), e.g. a KServe release's install/<v>/kserve.yaml.

    box/manifests.py v1.11.0 --preset kserve --list         # kind namespace/name only
    box/manifests.py v1.11.0 --preset kserve --skip-kind Deployment \\
        --inject-ca kubeflow/serving-cert=ca.crt | kubectl apply --server-side -f -
    box/manifests.py v1.10.2 --kind ConfigMap --namespace knative-serving --name 'config-*'
    box/manifests.py ~/go/pkg/mod/github.com/kserve/kserve@v0.20.0/install/v0.20.0/kserve.yaml

`select()` keeps, in the source's order, the objects that match any selector and no
exclude selector. A selector is a dict whose keys must all match:
    kind, namespace, name: a value or list of values, each an fnmatch pattern ("*.kserve.io")
    labels: {"key": "value"} (value None: the label only has to exist)
    skip_kinds: kinds this selector never matches
No selector at all selects everything.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import gzip
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

# libyaml's parser when PyYAML has it (about 10x faster on the 8 MB installs).
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "cluster-reference"

# Kinds the presets leave out: cert-manager's (box/certmanager/on-node.sh installs cert-manager
# and kserve/start-kserve.sh applies KServe's Certificate and Issuer itself, or, where cert-manager
# does not run, makes the Secret and --inject-ca does cainjector's part) and Istio's (no Envoy).
NOT_IN_BOX = [
    "Certificate",
    "Issuer",
    "ClusterIssuer",
    "VirtualService",
    "AuthorizationPolicy",
    "DestinationRule",
    "Gateway",
    "PeerAuthentication",
    "RequestAuthentication",
    "Sidecar",
]

PRESETS: dict[str, list[dict]] = {
    # What the KServe component of a Kubeflow release installs: its CRDs, the objects
    # labelled app=kserve (RBAC, ServiceAccounts, Services, Deployments, the
    # inferenceservice-config ConfigMap, webhook configurations, the webhook Secret), the
    # unlabelled ClusterServingRuntimes, ClusterStorageContainer and NetworkPolicy, and the
    # namespace it runs in.
    "kserve": [
        {"kind": "Namespace", "name": "kubeflow"},
        {"kind": "CustomResourceDefinition", "name": "*.serving.kserve.io"},
        {"labels": {"app": "kserve"}, "skip_kinds": NOT_IN_BOX},
        {"kind": ["ClusterServingRuntime", "ClusterStorageContainer"]},
        {"kind": "NetworkPolicy", "namespace": "kubeflow", "name": "kserve"},
    ],
}
EXCLUDE: dict[str, list[dict]] = {
    # The models web app (a UI) is not part of the box.
    "kserve": [
        {"labels": {"app.kubernetes.io/component": "kserve-models-web-app"}},
        {"kind": "NetworkPolicy", "name": "kserve-models-web-app"},
    ],
}


def load(source: str, reference: Path = REFERENCE) -> list[dict]:
    """All objects of a source (a Kubeflow tag or a YAML file), in order."""
    path = Path(source)
    if not source.endswith((".yaml", ".yml", ".gz")):
        path = reference / "kubeflow-manifests" / source / "rendered" / "example.yaml.gz"
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        return [d for d in yaml.load_all(f, Loader=Loader) if d]


def _any(patterns: str | list[str], value: str | None) -> bool:
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatch.fnmatchcase(value or "", p) for p in patterns)


def matches(obj: dict, sel: dict) -> bool:
    meta = obj.get("metadata") or {}
    if obj.get("kind") in sel.get("skip_kinds", ()):
        return False
    fields = {
        "kind": obj.get("kind"),
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name"),
    }
    if any(key in sel and not _any(sel[key], value) for key, value in fields.items()):
        return False
    labels = meta.get("labels") or {}
    return all(
        k in labels and (v is None or labels[k] == v) for k, v in (sel.get("labels") or {}).items()
    )


def select(
    objs: Iterable[dict], selectors: list[dict], exclude: Iterable[dict] = ()
) -> Iterator[dict]:
    """Objects that match any selector and no exclude selector, in the given order."""
    exclude = list(exclude)
    return (
        o
        for o in objs
        if any(matches(o, s) for s in selectors) and not any(matches(o, s) for s in exclude)
    )


def inject_ca(objs: Iterable[dict], bundles: dict[str, str]) -> Iterator[dict]:
    """Set caBundle as cert-manager's cainjector does, on objects annotated
    cert-manager.io/inject-ca-from: <namespace>/<Certificate> whose CA (PEM) is in
    `bundles`: every webhook of a webhook configuration, a CRD's conversion webhook, an
    APIService. cainjector copies the ca.crt of the Certificate's Secret."""
    for o in objs:
        src = ((o.get("metadata") or {}).get("annotations") or {}).get(
            "cert-manager.io/inject-ca-from"
        )
        if src in bundles:
            b64 = base64.b64encode(bundles[src].encode()).decode()
            kind, spec = o["kind"], o.get("spec") or {}
            if kind.endswith("WebhookConfiguration"):
                for w in o.get("webhooks") or []:
                    w.setdefault("clientConfig", {})["caBundle"] = b64
            elif kind == "CustomResourceDefinition" and "webhook" in (spec.get("conversion") or {}):
                spec["conversion"]["webhook"].setdefault("clientConfig", {})["caBundle"] = b64
            elif kind == "APIService":
                spec["caBundle"] = b64
        yield o


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="+", help="kubeflow/manifests tag (v1.11.0) or a YAML file")
    p.add_argument("--preset", choices=sorted(PRESETS), action="append", default=[])
    p.add_argument("--kind", action="append")
    p.add_argument("--namespace", action="append")
    p.add_argument("--name", action="append")
    p.add_argument("-l", "--label", action="append", help="key=value, or key (exists)")
    p.add_argument("--skip-kind", action="append", default=[], help="drop this kind")
    p.add_argument(
        "--inject-ca",
        action="append",
        default=[],
        metavar="NS/CERT=PEMFILE",
        help="caBundle for objects annotated cert-manager.io/inject-ca-from: NS/CERT",
    )
    p.add_argument("--list", action="store_true", help="print kind namespace/name only")
    p.add_argument("--reference", type=Path, default=REFERENCE)
    a = p.parse_args(argv)

    selectors = [s for name in a.preset for s in PRESETS[name]]
    own = {k: getattr(a, k) for k in ("kind", "namespace", "name") if getattr(a, k)}
    if a.label:
        own["labels"] = {k: v if eq else None for k, eq, v in (s.partition("=") for s in a.label)}
    if own:
        selectors.append(own)
    exclude = [s for name in a.preset for s in EXCLUDE.get(name, [])]
    exclude += [{"kind": k} for k in a.skip_kind]
    bundles = {src: Path(f).read_text() for src, _, f in (x.partition("=") for x in a.inject_ca)}

    objs = [o for src in a.source for o in load(src, a.reference)]
    objs = list(inject_ca(select(objs, selectors or [{}], exclude), bundles))
    if a.list:
        for o in objs:
            m = o["metadata"]
            print(f"{o['kind']:32} {m.get('namespace', '-')}/{m['name']}")
    else:
        yaml.dump_all(objs, sys.stdout, Dumper=Dumper, sort_keys=False)
    print(f"# {len(objs)} objects from {' '.join(a.source)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
