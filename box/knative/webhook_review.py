#!/usr/bin/env python3
"""Sends a Knative Service (YAML file) straight to the running Knative webhook, as the API
server would but without the CRD schema pruning in between: /defaulting first, its JSON
patch applied, then /resource-validation; prints both answers.

    webhook_review.py WEBHOOK_POD_IP FILE.yaml
"""

import base64
import copy
import json
import ssl
import sys
import urllib.request
import uuid

import yaml

ip, f = sys.argv[1], sys.argv[2]
obj = yaml.safe_load(open(f))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def review(path, o):
    req = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "serving.knative.dev", "version": "v1", "kind": "Service"},
            "resource": {"group": "serving.knative.dev", "version": "v1", "resource": "services"},
            "requestKind": {"group": "serving.knative.dev", "version": "v1", "kind": "Service"},
            "requestResource": {
                "group": "serving.knative.dev",
                "version": "v1",
                "resource": "services",
            },
            "name": o["metadata"]["name"],
            "namespace": "demo",
            "operation": "CREATE",
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": o,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    r = urllib.request.Request(
        f"https://{ip}:8443{path}",
        data=json.dumps(req).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(r, context=ctx, timeout=10) as resp:
        return json.load(resp)["response"]


def apply_patch(doc, ops):  # RFC 6902 add/replace/remove, enough for Knative's patches
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        tgt = doc
        for p in parts[:-1]:
            tgt = tgt[int(p)] if isinstance(tgt, list) else tgt.setdefault(p, {})
        last = parts[-1]
        if isinstance(tgt, list):
            i = len(tgt) if last == "-" else int(last)
            if op["op"] == "add":
                tgt.insert(i, op["value"])
            elif op["op"] == "replace":
                tgt[i] = op["value"]
            else:
                del tgt[i]
        else:
            if op["op"] in ("add", "replace"):
                tgt[last] = op["value"]
            else:
                tgt.pop(last, None)
    return doc


d = review("/defaulting", obj)
ops = json.loads(base64.b64decode(d.get("patch", "") or "W10="))
paths = [o["path"] for o in ops]
print(f"defaulting webhook: allowed={d['allowed']}, {len(ops)} patch ops: {paths}")
v = review("/resource-validation", apply_patch(obj, ops))
print("validation webhook answer:", json.dumps({k: v[k] for k in v if k != "uid"}))
