"""Verdicts and the markdown report of the runtime rehearsal."""

from __future__ import annotations

import json
import re

import podround


def is_caption(status, body: str, protocol: str) -> bool:
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    if protocol == "v1":
        return bool(data.get("predictions")) and all(p.get("caption") for p in data["predictions"])
    outputs = data.get("outputs") or []
    return bool(outputs) and all(outputs[0].get("data", []))


INFORMATIONAL = ("GET", "describe", "register", "unregister", "v2 path with a v1 body")


def verdicts(round_result: dict) -> dict:
    """The error contract: good requests get captions, bad ones a 4xx naming the problem.

    The stock wrapper turns every non-2xx answer of TorchServe into a 500 (issue 13), so there
    only captions are required, and only in the round's PROTOCOL_VERSION (the wrapper forwards
    every request to TorchServe's route for that protocol). The project's runtime must hold the
    whole contract. Informational cases are recorded but not judged: readiness routes, the
    management API, and a well-formed v1 body posted to the v2 route (the handler picks the
    protocol from the body, as TorchServe does not hand it the URL)."""
    name = round_result["name"]
    protocol = name.split("-")[1] if name.startswith("stock") else None
    good, bad = [], []
    for probe in round_result["probes"]:
        case = probe["case"]
        if case.startswith(INFORMATIONAL):
            continue
        if protocol is not None and "client form" in case:
            continue  # the forms our parser accepts: KServe's stock wrapper is not judged on them
        if "good" in case or "two JPEGs" in case or "beam_width 5" in case:
            if protocol in (None, case[:2]):
                good.append(is_caption(probe["status"], probe["body"], case[:2]))
        else:
            bad.append(isinstance(probe["status"], int) and 400 <= probe["status"] < 500)
    mixes_ok = round_result.get("batch_mixes", {}).get("ok", True)  # pod rounds (issue 30)
    clients = round_result.get("clients")  # pod rounds (issue 29): every client call succeeds
    clients_ok = clients is None or (bool(clients) and all(c["ok"] for c in clients))
    verdict = {
        "good_captioned": f"{sum(good)}/{len(good)}",
        "bad_4xx": f"{sum(bad)}/{len(bad)}",
        "ok": all(good) and (all(bad) or protocol is not None) and mixes_ok and clients_ok,
    }
    if clients is not None:
        verdict["client_calls_ok"] = f"{sum(c['ok'] for c in clients)}/{len(clients)}"
    return verdict


def cell(probe: dict) -> str:
    body = re.sub(r"\s+", " ", probe["body"]).strip()
    if len(body) > 150:
        body = body[:147] + "..."
    return (
        f"**{probe['status']}** `{body}`".replace("|", "\\|") if body else f"**{probe['status']}**"
    )


def render(report: dict) -> str:
    rounds = [r for r in report["rounds"] if "probes" in r]
    v = report["versions"]
    lines = [
        f"Date: {report['date']}. Command: `{report['command']}`. Model: {report['model']}, "
        f"packaged by `imagelingo package`. Probe images: {report['images']}.",
        "",
        f"Runtime environment (`.venv-kfs`, serving/kfs-runtime/requirements.txt): Python "
        f"{v['python']}, torch {v['torch']}, torchvision {v['torchvision']}, torchserve "
        f"{v['torchserve']}, kserve {v['kserve']}, grpcio {v['grpcio']}, grpcio-tools "
        f"{v['grpcio-tools']}, protobuf {v['protobuf']}, Pillow {v['pillow']}, fastapi "
        f"{v['fastapi']}, uvicorn {v['uvicorn']}; {v['java']}. Wrapper stubs: `protoc` on "
        f"inference.proto; the wrapper imports {', '.join(report['wrapper']['pb2_imports'])} "
        "only (no management_pb2).",
        "",
        "| round | started as | env | front says ready | model READY | good → caption "
        "| bad → 4xx |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        if "probes" not in r:
            lines.append(f"| {r['name']} | FAILED: {r.get('error')} | | | | | |")
            continue
        if r["name"].startswith("pod-"):  # its own table below
            continue
        env = ", ".join(f"{k}={val}" for k, val in r["env"].items())
        lines.append(
            f"| {r['name']} | `{r['command']}` | {env} | `GET {r['ready_path']}` 200 after "
            f"{r['front_ready_s']} s | {r['model_ready_s']} s | {r['verdict']['good_captioned']} | "
            f"{r['verdict']['bad_4xx']} |"
        )
    lines += [
        "",
        "A good request sent the moment the front first said ready (KServe's readiness):",
        "",
    ]
    for r in rounds:
        first = dict(r["first_request"], case="")
        lines.append(f"- {r['name']}: {cell(first)} after {first['s']} s")
    lines += ["", "Listening sockets in each round (private network namespace):", ""]
    for r in rounds:
        lines.append(f"- {r['name']}: {', '.join(r['listeners'])}")
    lines += ["", "| case | " + " | ".join(r["name"] for r in rounds) + " |"]
    lines.append("|---" * (len(rounds) + 1) + "|")
    # the pod rounds skip the stock rounds' management-API cases (they unregister on their own)
    by_case = [{p["case"]: p for p in r["probes"]} for r in rounds]
    names = list(dict.fromkeys(p["case"] for r in rounds for p in r["probes"]))
    for name in names:
        cells = [cell(found[name]) if name in found else "—" for found in by_case]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += podround.render([r for r in rounds if r["name"].startswith("pod-")])
    t = report["timings"]
    per_round = ", ".join(f"{r['name']} {r.get('round_s', '?')} s" for r in report["rounds"])
    lines += [
        "",
        f"Timings: package {t['package_s']} s; rounds: {per_round}; whole rehearsal "
        f"{t.get('total_s', '?')} s.",
    ]
    return "\n".join(lines) + "\n"
