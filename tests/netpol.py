"""Kubernetes NetworkPolicy ingress semantics, to evaluate real policy objects offline.

Written from the API's definition (Kubernetes 1.32, networking.k8s.io/v1; the concepts page
https://kubernetes.io/docs/concepts/services-networking/network-policies/ and the API reference
of NetworkPolicySpec / NetworkPolicyIngressRule / NetworkPolicyPeer / NetworkPolicyPort):

- a policy applies to the pods of its own namespace that its podSelector selects (an empty
  selector selects all), for ingress when policyTypes lists Ingress or, policyTypes unset, always;
- a pod no policy applies to accepts all ingress; one that policies apply to accepts a connection
  that at least one rule of one of them allows (policies are additive);
- a rule allows a source when `from` is absent or empty, or one peer matches: podSelector alone
  selects pods in the policy's namespace, namespaceSelector alone all pods of the selected
  namespaces, both together the selected pods of the selected namespaces (ipBlock is for
  addresses outside the cluster's pod network: never a pod here);
- and a port when `ports` is absent or empty, or one entry matches: protocol (default TCP), port
  by number or by the destination container port's name (absent: all), up to endPort;
- label selectors (meta/v1 LabelSelector): matchLabels and matchExpressions all hold (In, NotIn,
  Exists, DoesNotExist); an empty selector matches everything;
- every namespace carries kubernetes.io/metadata.name=<its name>, set by the API server (1.21+).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Pod:
    namespace: str
    labels: dict
    namespace_labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)  # container port name -> number

    @property
    def ns_labels(self) -> dict:
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


def selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        holds = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not holds:
            return False
    return True


def applies(policy: dict, pod: Pod) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes") or ["Ingress"]
    return (
        policy["metadata"]["namespace"] == pod.namespace
        and "Ingress" in types
        and selects(spec.get("podSelector", {}), pod.labels)
    )


def _peer(peer: dict, policy_namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = selects(namespaces, source.ns_labels)
    return in_namespace and (pods is None or selects(pods, source.labels))


def _port(entry: dict, port: int, protocol: str, target: Pod) -> bool:
    if entry.get("protocol", "TCP") != protocol:
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        wanted = target.ports.get(wanted)
        return wanted == port
    return wanted <= port <= entry.get("endPort", wanted)


def allows(policy: dict, source: Pod, target: Pod, port: int, protocol: str = "TCP") -> bool:
    for rule in policy["spec"].get("ingress") or []:
        peers, ports = rule.get("from") or [], rule.get("ports") or []
        peer_ok = not peers or any(_peer(p, policy["metadata"]["namespace"], source) for p in peers)
        port_ok = not ports or any(_port(p, port, protocol, target) for p in ports)
        if peer_ok and port_ok:
            return True
    return False


def admitted(policies: list[dict], source: Pod, target: Pod, port: int) -> bool:
    """Whether `target` accepts a TCP connection from `source` on `port`."""
    relevant = [p for p in policies if applies(p, target)]
    return not relevant or any(allows(p, source, target, port) for p in relevant)


def isolated(policies: list[dict], pod: Pod) -> bool:
    return any(applies(p, pod) for p in policies)
