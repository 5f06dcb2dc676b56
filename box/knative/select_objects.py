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

    select_objects.py v1.11.0 [--list] [--node RELEASE]
    select_objects.py knative-v1.21.1 [--list] [--node RELEASE] [--config-only]

knative-v1.21.1 is KServe 0.20's Knative, which its quick install puts in with the Knative Operator
v1.21.1 and a KnativeServing CR (kserve v0.20.0 hack/setup/quick-install/
kserve-knative-mode-dependency-install.sh:650-651, 706-800). The objects come from the operator's
own copy of that release (knative.dev/operator v0.48.1, cmd/operator/kodata/: knative-serving/
1.21.1/1-serving-crds.yaml and 2-serving-core.yaml, and ingress/1.21/istio/net-istio.yaml, the
ingress the operator installs by default), with the same selection, and the CR's settings applied
as the operator applies them: config-deployment's registries-skipping-tag-resolving,
config-domain's example.com, each workload's resources. Left out: 3-serving-hpa.yaml
(autoscaler-hpa, for class hpa.autoscaling.knative.dev, which KServe does not set) and the
post-install storage-version migration Job (nothing to migrate on a new cluster).

--config-only: only the CRDs, the Namespace and the config-* ConfigMaps (what start-kserve.sh's
KNATIVE_CRDS=1 applies: KServe sees Knative and builds its Service; no Knative controller runs).

--node RELEASE (for the box's node, knative/on-node.sh): the images images.sh made replace the
release's digests (gcr.io/knative-releases/knative.dev/serving/cmd/<cmd>:RELEASE, and the KIngress
stand-in box.local/knative/kingress:RELEASE in net-istio-controller's place), net-istio-webhook's
Deployment is left out (its two webhook configurations carry no rules: nothing calls it), and
config-deployment skips tag resolution for index.docker.io as well: with no registry here, the
revision reconciler could not resolve `docker.io/pytorch/torchserve-kfs:0.9.0` to a digest
(knative.dev/serving pkg/reconciler/revision/resolve.go; on a cluster it asks Docker Hub), nor
box.local/..., the names of images made here (knative/demo.sh runs one).
"""

import gzip
import json
import subprocess
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


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(tag):
    """manifests.load, with libyaml's loader when PyYAML has it (5x faster on these 10 MB)."""
    path = manifests.REFERENCE / "kubeflow-manifests" / tag / "rendered" / "example.yaml.gz"
    with gzip.open(path, "rt") as f:
        return [d for d in yaml.load_all(f, Loader=LOADER) if d]


def objects(tag):
    docs = operator_objects(tag) if tag.startswith("knative-v") else load(tag)
    return [
        o for o in docs if any(manifests.matches(o, s) for s in SELECTORS) or webhook_to_knative(o)
    ]


OPERATOR = "knative.dev/operator@v0.48.1"  # Knative Operator v1.21.1 (KNATIVE_OPERATOR_VERSION)
# KServe 0.20's KnativeServing CR (dependency-install.sh:713-800): spec.config, spec.workloads
CR_CONFIG = {
    "config-deployment": {"registries-skipping-tag-resolving": "nvcr.io,index.docker.io"},
    "config-domain": {"example.com": ""},
}
CR_RESOURCES = {
    "requests": {"cpu": "5m", "memory": "32Mi"},
    "limits": {"cpu": "100m", "memory": "128Mi"},
}
CR_WORKLOADS = {  # workload -> container, every one with CR_RESOURCES
    "controller": "controller",
    "activator": "activator",
    "autoscaler": "autoscaler",
    "domain-mapping": "domain-mapping",
    "webhook": "webhook",
    "domainmapping-webhook": "domainmapping-webhook",
    "net-istio-controller": "controller",
    "net-istio-webhook": "webhook",
}


def operator_objects(release):
    """The release's objects from the Knative Operator's module, with KServe's CR applied."""
    version = release.removeprefix("knative-v")
    found = subprocess.run(
        ["go", "mod", "download", "-json", OPERATOR], capture_output=True, text=True, check=True
    )
    kodata = Path(json.loads(found.stdout)["Dir"]) / "cmd/operator/kodata"
    minor = ".".join(version.split(".")[:2])
    files = [
        kodata / f"knative-serving/{version}/1-serving-crds.yaml",
        kodata / f"knative-serving/{version}/2-serving-core.yaml",
        kodata / f"ingress/{minor}/istio/net-istio.yaml",
    ]
    docs = [d for f in files for d in yaml.load_all(f.read_text(), Loader=LOADER) if d]
    for o in docs:
        name = o["metadata"]["name"]
        if o["kind"] == "ConfigMap" and name in CR_CONFIG:
            o.setdefault("data", {}).update(CR_CONFIG[name])
        if o["kind"] == "Deployment" and name in CR_WORKLOADS:
            for c in o["spec"]["template"]["spec"]["containers"]:
                if c["name"] == CR_WORKLOADS[name]:
                    c["resources"] = CR_RESOURCES
    return docs


SERVING_IMAGE = "gcr.io/knative-releases/knative.dev/serving/cmd/"
NET_ISTIO_IMAGE = "gcr.io/knative-releases/knative.dev/net-istio/cmd/controller"
# config-deployment's default list (knative.dev/serving pkg/deployment/config.go), plus Docker Hub
# and box.local, the box's own local names (as kind.local is kind's)
SKIP_TAG_RESOLVING = "kind.local,ko.local,dev.local,index.docker.io,box.local"


def node_image(image: str, release: str) -> str:
    """The image of the box's build standing for a release image named by digest."""
    repo = image.split("@")[0].split(":")[0] if "@" in image else image
    if repo.startswith(SERVING_IMAGE):
        return f"{repo}:{release}"
    if repo == NET_ISTIO_IMAGE:
        return f"box.local/knative/kingress:{release}"
    raise SystemExit(f"no image of the box's build stands for {image}")


def for_node(objs, release):
    """The selection as the box's node runs it (module docstring, --node)."""
    kept = []
    for o in objs:
        name = o["metadata"]["name"]
        if o["kind"] == "Deployment" and name == "net-istio-webhook":
            continue
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                c["image"] = node_image(c["image"], release)
        elif o["kind"] == "Image":
            o["spec"]["image"] = node_image(o["spec"]["image"], release)
        elif o["kind"] == "ConfigMap" and name == "config-deployment":
            data = o.setdefault("data", {})
            data["queue-sidecar-image"] = node_image(data["queue-sidecar-image"], release)
            # the release's list (KServe 0.20's CR sets one), else the default, and the box's names
            listed = data.get("registries-skipping-tag-resolving", SKIP_TAG_RESOLVING).split(",")
            data["registries-skipping-tag-resolving"] = ",".join(
                dict.fromkeys(listed + ["index.docker.io", "box.local"])
            )
        kept.append(o)
    return kept


if __name__ == "__main__":
    objs = objects(sys.argv[1])
    if "--config-only" in sys.argv:
        objs = [
            o
            for o in objs
            if o["kind"] in ("CustomResourceDefinition", "Namespace")
            or (o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("config-"))
        ]
    if "--node" in sys.argv:
        objs = for_node(objs, sys.argv[sys.argv.index("--node") + 1])
    if "--list" in sys.argv:
        for o in objs:
            print(f"{o['kind']:32} {o['metadata'].get('namespace', '-')}/{o['metadata']['name']}")
    else:
        yaml.safe_dump_all(objs, sys.stdout, sort_keys=False)
    print(
        f"# {len(objs)} Knative Serving objects from "
        + (OPERATOR if sys.argv[1].startswith("knative-v") else "kubeflow-manifests/")
        + f" {sys.argv[1]}",
        file=sys.stderr,
    )
