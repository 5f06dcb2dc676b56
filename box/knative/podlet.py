#!/usr/bin/env python3
"""podlet: the smallest process "kubelet" the Knative part of the box needs.

It is NOT the box's kubelet (box/kubelet/ is). It runs, as host processes, the
pods bound to one Node whose every container image maps to a binary built here
(--map IMAGE=BINARY; the image is compared without its @digest / :tag), each
pod in its own network namespace with its own IP on a bridge (so that every
Knative component can bind its ports 8080/8008/9090 as in its pod), and writes
the pod status back. Pods with an image it has no binary for stay Pending:
that is "no kubelet".

What it does, and the kubelet behaviour it imitates (kubernetes v1.34.4):
  - env: value (absent = the empty string), and fieldRef metadata.name /
    metadata.namespace / status.podIP / spec.nodeName / spec.serviceAccountName
    (pkg/kubelet/kubelet_pods.go:726 makeEnvironmentVariables, :989
    podFieldSelectorRuntimeValue); no envFrom.
  - the service-account credentials: a bound token (TokenRequest for the pod,
    as the kubelet's projected token volume asks,
    pkg/kubelet/token/token_manager.go) written into a kubeconfig passed as
    KUBECONFIG (the binaries read it before in-cluster config; no volume mounts).
  - readiness: httpGet probes as pkg/probe/http does (request.go: User-Agent
    "kube-probe/<major>.<minor>"; http.go:111: success for 200 <= code < 400;
    TLS unverified, httpHeaders sent); Ready is set when the probe of every container passes
    (or at once for a container without a readiness probe).
  - status: phase Running, podIP/podIPs, hostIP, conditions PodScheduled,
    Initialized, ContainersReady, Ready, containerStatuses (as
    pkg/kubelet/status/generate.go). restartPolicy Always/OnFailure: an exited
    container is restarted after 10 s (pkg/kubelet/kubelet.go:216 backOffPeriod),
    doubling to 300 s (kubelet.go:157 MaxCrashLoopBackOff) (CrashLoopBackOff,
    waiting state, restartCount, lastState); Never: terminated, phase
    Failed/Succeeded once all exited.
  - stop: SIGTERM to every process, SIGKILL after the pod's
    terminationGracePeriodSeconds (capped by --max-grace); on pod deletion too.
  - cluster DNS names: /etc/netns/<netns>/hosts (see write_hosts), no CoreDNS.
Not done: volumes, init containers, securityContext (processes run as root),
resources, liveness probes, exec/tcp probes (treated as passing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def log(*a):
    print(time.strftime("%H:%M:%S"), "podlet:", *a, flush=True)


class Podlet:
    def __init__(self, a):
        self.a = a
        self.kubectl = [a.kubectl, "--kubeconfig", a.kubeconfig]
        self.images = dict(m.split("=", 1) for m in a.map)
        self.pods: dict[str, dict] = {}  # uid -> record
        self.skipped: set[str] = set()
        self.next_ip = a.first_ip
        self.work = Path(a.workdir)
        self.kver = subprocess.run(
            self.kubectl + ["version", "-o", "json"], capture_output=True, text=True
        ).stdout
        try:
            sv = json.loads(self.kver)["serverVersion"]
            self.ua = f"kube-probe/{sv['major']}.{sv['minor']}"
        except Exception:
            self.ua = "kube-probe/1.34"

    def k(self, *args, input=None, check=True):
        r = subprocess.run(self.kubectl + list(args), input=input, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    @staticmethod
    def image_key(image: str) -> str:
        image = image.split("@", 1)[0]
        last = image.rsplit("/", 1)[-1]
        if ":" in last:
            image = image[: image.rfind(":")]
        return image

    # ---- network namespace per pod -----------------------------------------
    def netns_up(self, ns: str, ip: str, idx: int):
        def sh(*c):
            subprocess.run(c, check=True, capture_output=True)

        veth = f"knv{idx}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.a.bridge, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", self.a.gateway)

    @staticmethod
    def netns_down(ns: str):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        d = Path("/etc/netns") / ns
        (d / "hosts").unlink(missing_ok=True)
        if d.exists():
            d.rmdir()

    def write_hosts(self):
        """Cluster DNS names without a cluster DNS: `ip netns exec NS` bind-mounts
        /etc/netns/NS/hosts over /etc/hosts, so each pod's processes resolve
        <svc>.<ns>.svc.cluster.local (and the shorter forms) to the first ready
        Endpoints address of that Service: the pod IP, not the ClusterIP (there is no
        kube-proxy either). Right only where the Service port equals the target port,
        as for autoscaler.knative-serving:8080, which the activator dials."""
        try:
            eps = json.loads(self.k("get", "endpoints", "-A", "-o", "json"))["items"]
        except Exception as e:
            log(f"hosts: {e}")
            return
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        for ep in eps:
            addrs = [a["ip"] for ss in ep.get("subsets") or [] for a in ss.get("addresses") or []]
            if addrs:
                n, ns = ep["metadata"]["name"], ep["metadata"]["namespace"]
                lines.append(f"{addrs[0]} {n}.{ns}.svc.cluster.local {n}.{ns}.svc {n}.{ns}")
        text = "\n".join(lines) + "\n"
        if text == getattr(self, "_hosts", None):
            return
        self._hosts = text
        for rec in self.pods.values():
            self.hosts_file(rec["ns"], text)

    @staticmethod
    def hosts_file(ns: str, text: str):
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "hosts", "w") as f:  # in place: the bind mount keeps the inode
            f.write(text)

    # ---- credentials -----------------------------------------------------------
    def kubeconfig_for(self, pod: dict, path: Path):
        md, spec = pod["metadata"], pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        token = self.k(
            "create",
            "token",
            sa,
            "-n",
            md["namespace"],
            "--duration=24h",
            "--bound-object-kind=Pod",
            f"--bound-object-name={md['name']}",
            f"--bound-object-uid={md['uid']}",
        ).strip()
        admin = json.loads(self.k("config", "view", "--raw", "--minify", "-o", "json"))
        cluster = admin["clusters"][0]["cluster"]
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "box", "cluster": cluster}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "box", "context": {"cluster": "box", "user": sa}}],
            "current-context": "box",
        }
        path.write_text(json.dumps(cfg))
        path.chmod(0o600)

    # ---- pods --------------------------------------------------------------
    def env_for(self, pod: dict, c: dict, ip: str) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
        # the service links the kubelet adds (enableServiceLinks) are left out; the
        # binaries here use KUBECONFIG, not KUBERNETES_SERVICE_HOST.
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
                f = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": pod["metadata"]["namespace"],
                    "metadata.uid": pod["metadata"]["uid"],
                    "status.podIP": ip,
                    "status.hostIP": self.a.gateway,
                    "spec.nodeName": pod["spec"].get("nodeName", ""),
                    "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
                }.get(f, "")
            elif "valueFrom" in e and "resourceFieldRef" in e["valueFrom"]:
                env[e["name"]] = "0"
            elif "valueFrom" not in e:  # `value: ""` is omitted from the JSON: set, empty
                env[e["name"]] = ""
        return env

    def start(self, pod: dict):
        md, spec = pod["metadata"], pod["spec"]
        key = f"{md['namespace']}/{md['name']}"
        bins = []
        for c in spec["containers"]:
            b = self.images.get(self.image_key(c["image"]))
            if not b:
                if key not in self.skipped:
                    log(
                        f"{key}: no binary for image {c['image']} "
                        f"(container {c['name']}): left Pending"
                    )
                    self.skipped.add(key)
                return
            bins.append(b)
        idx = self.next_ip
        self.next_ip += 1
        ip = f"{self.a.subnet}.{idx}"
        ns = f"kn-pod{idx}"
        d = self.work / "pods" / f"{md['namespace']}_{md['name']}"
        d.mkdir(parents=True, exist_ok=True)
        self.netns_up(ns, ip, idx)
        self.hosts_file(ns, getattr(self, "_hosts", None) or "127.0.0.1 localhost\n")
        kc = d / "kubeconfig"
        self.kubeconfig_for(pod, kc)
        procs = []
        for c, b in zip(spec["containers"], bins, strict=True):
            env = self.env_for(pod, c, ip)
            env["KUBECONFIG"] = str(kc)
            cmd = (
                ["ip", "netns", "exec", ns, b]
                + list(c.get("command") or [])[1:]
                + list(c.get("args") or [])
            )
            pc = {
                "name": c["name"],
                "ready": False,
                "cmd": cmd,
                "env": env,
                "dir": d,
                "probe": c.get("readinessProbe"),
                "ports": c.get("ports") or [],
                "image": c["image"],
                "bin": b,
                "restarts": 0,
                "backoff": 0.0,
                "restart_at": None,
                "last_rc": None,
            }
            self.run_container(key, pc)
            procs.append(pc)
        self.pods[md["uid"]] = {
            "key": key,
            "ns": ns,
            "ip": ip,
            "procs": procs,
            "pod": pod,
            "restart": spec.get("restartPolicy", "Always"),
            "grace": spec.get("terminationGracePeriodSeconds", 30),
            "last": None,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def run_container(self, key: str, pc: dict):
        out = open(pc["dir"] / f"{pc['name']}.log", "ab")
        pc["proc"] = subprocess.Popen(
            pc["cmd"],
            env=pc["env"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=pc["dir"],
            start_new_session=True,
        )
        pc["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        pc["restart_at"] = None
        log(
            f"{key}: started {pc['name']} ({pc['bin']}) pid {pc['proc'].pid} "
            f"restarts {pc['restarts']}"
        )

    def restarts(self, rec: dict):
        """restartPolicy Always/OnFailure: restart an exited container after a back-off of
        10 s doubling to 300 s, as the kubelet's CrashLoopBackOff
        (pkg/kubelet/kubelet.go:216 backOffPeriod, :157 MaxCrashLoopBackOff)."""
        if rec["restart"] == "Never":
            return
        for pc in rec["procs"]:
            rc = pc["proc"].poll()
            if rc is None or (rec["restart"] == "OnFailure" and rc == 0):
                continue
            if pc["restart_at"] is None:
                pc["last_rc"] = rc
                pc["backoff"] = min(300.0, pc["backoff"] * 2 or 10.0)
                pc["restart_at"] = time.time() + pc["backoff"]
                log(f"{rec['key']}: {pc['name']} exited rc={rc}; restart in {pc['backoff']:.0f}s")
            elif time.time() >= pc["restart_at"]:
                pc["restarts"] += 1
                self.run_container(rec["key"], pc)

    def probe(self, rec: dict, pc: dict) -> bool:
        pr = pc["probe"]
        if not pr:
            return True
        if "httpGet" not in pr:
            return True  # exec/tcp probes not implemented: treated as passing
        hg = pr["httpGet"]
        port = hg.get("port")
        if isinstance(port, str) and not port.isdigit():
            port = next((p["containerPort"] for p in pc["ports"] if p.get("name") == port), port)
        scheme = hg.get("scheme", "HTTP").lower()
        url = f"{scheme}://{rec['ip']}:{port}{hg.get('path', '/')}"
        req = urllib.request.Request(url, headers={"User-Agent": self.ua, "Accept": "*/*"})
        for h in hg.get("httpHeaders") or []:
            req.add_header(h["name"], h["value"])
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(req, timeout=pr.get("timeoutSeconds", 1), context=ctx) as r:
                return 200 <= r.status < 400
        except urllib.error.HTTPError as e:
            return 200 <= e.code < 400
        except Exception:
            return False

    def status_for(self, uid: str) -> dict:
        rec = self.pods[uid]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        css, all_ready, all_exited, any_failed = [], True, True, False
        for pc in rec["procs"]:
            rc = pc["proc"].poll()
            if rc is None:
                all_exited = False
                state = {"running": {"startedAt": pc["started_at"]}}
            elif pc["restart_at"] is not None:
                all_exited = False
                pc["ready"] = False
                state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {pc['backoff']:.0f}s restarting failed container",
                    }
                }
            else:
                any_failed |= rc != 0
                pc["ready"] = False
                state = {
                    "terminated": {
                        "exitCode": rc,
                        "reason": "Completed" if rc == 0 else "Error",
                        "startedAt": rec["started_at"],
                        "finishedAt": now,
                    }
                }
            all_ready &= pc["ready"]
            last = (
                {"lastState": {"terminated": {"exitCode": pc["last_rc"], "reason": "Error"}}}
                if pc["last_rc"] is not None
                else {}
            )
            css.append(
                {
                    "name": pc["name"],
                    "image": pc["image"],
                    "imageID": "",
                    "ready": pc["ready"],
                    "started": rc is None,
                    "restartCount": pc["restarts"],
                    "state": state,
                    **last,
                    "containerID": f"podlet://{pc['proc'].pid}",
                }
            )
        phase = "Running" if not all_exited else ("Failed" if any_failed else "Succeeded")

        def t(b):
            return "True" if b else "False"

        conds = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": t(all_ready)},
            {"type": "Ready", "status": t(all_ready)},
        ]
        return {
            "phase": phase,
            "podIP": rec["ip"],
            "podIPs": [{"ip": rec["ip"]}],
            "hostIP": self.a.gateway,
            "hostIPs": [{"ip": self.a.gateway}],
            "startTime": rec["started_at"],
            "conditions": conds,
            "containerStatuses": css,
        }

    def sync_status(self, uid: str):
        rec = self.pods[uid]
        st = self.status_for(uid)
        sig = json.dumps(st, sort_keys=True)
        if sig == rec["last"]:
            return
        # lastTransitionTime only when something changed, as the status manager does
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for c in st["conditions"]:
            c["lastTransitionTime"] = now
        patch = json.dumps({"status": st})
        ns, name = rec["key"].split("/")
        r = subprocess.run(
            self.kubectl
            + ["-n", ns, "patch", "pod", name, "--subresource=status", "--type=merge", "-p", patch],
            capture_output=True,
            text=True,
        )
        if r.returncode == 0:
            rec["last"] = sig
            log(
                f"{rec['key']}: status phase={st['phase']} "
                f"ready={st['conditions'][3]['status']} ip={rec['ip']}"
            )
        else:
            log(f"{rec['key']}: status patch failed: {r.stderr.strip()}")

    def stop(self, uid: str, grace: float | None = None):
        rec = self.pods.pop(uid)
        g = min(rec["grace"] if grace is None else grace, self.a.max_grace)
        for pc in rec["procs"]:
            if pc["proc"].poll() is None:
                os.killpg(pc["proc"].pid, signal.SIGTERM)
        end = time.time() + g
        for pc in rec["procs"]:
            try:
                pc["proc"].wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(pc["proc"].pid, signal.SIGKILL)
                pc["proc"].wait()
        self.netns_down(rec["ns"])
        log(f"{rec['key']}: stopped")

    def loop(self):
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        last_probe = last_hosts = 0.0
        while not stopping:
            try:
                out = self.k(
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    "json",
                    f"--field-selector=spec.nodeName={self.a.node}",
                )
                pods = {p["metadata"]["uid"]: p for p in json.loads(out)["items"]}
            except Exception as e:  # apiserver gone or slow
                log(f"list pods: {e}")
                time.sleep(1)
                continue
            for uid, p in pods.items():
                if (
                    uid not in self.pods
                    and not p["metadata"].get("deletionTimestamp")
                    and p.get("status", {}).get("phase", "Pending") == "Pending"
                ):
                    try:
                        self.start(p)
                    except Exception as e:
                        log(
                            f"{p['metadata']['namespace']}/{p['metadata']['name']}: "
                            f"start failed: {e}"
                        )
                        self.skipped.add(f"{p['metadata']['namespace']}/{p['metadata']['name']}")
            for uid in list(self.pods):
                p = pods.get(uid)
                if p is None or p["metadata"].get("deletionTimestamp"):
                    self.stop(uid)
                    if p is not None:  # the kubelet removes the pod once its containers are gone
                        ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
                        self.k(
                            "-n",
                            ns,
                            "delete",
                            "pod",
                            name,
                            "--grace-period=0",
                            "--force",
                            "--wait=false",
                            check=False,
                        )
            if time.time() - last_probe >= 1:
                last_probe = time.time()
                if time.time() - last_hosts >= 5:
                    last_hosts = time.time()
                    self.write_hosts()
                for uid, rec in self.pods.items():
                    self.restarts(rec)
                    for pc in rec["procs"]:
                        if pc["proc"].poll() is None:
                            pc["ready"] = self.probe(rec, pc)
                    self.sync_status(uid)
            time.sleep(1)
        log("stopping all pods")
        for rec in self.pods.values():  # SIGTERM to all first, then wait for each
            for pc in rec["procs"]:
                if pc["proc"].poll() is None:
                    os.killpg(pc["proc"].pid, signal.SIGTERM)
        for uid in list(self.pods):
            self.stop(uid)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kubectl", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--node", default="box-node")
    p.add_argument("--bridge", default="kn-br0")
    p.add_argument("--subnet", default="10.244.0")
    p.add_argument("--gateway", default="10.244.0.1")
    p.add_argument("--first-ip", type=int, default=10)
    p.add_argument("--max-grace", type=float, default=10)
    p.add_argument("--map", action="append", default=[], help="IMAGE=BINARY")
    Podlet(p.parse_args()).loop()


if __name__ == "__main__":
    sys.exit(main())
