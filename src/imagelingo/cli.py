"""`imagelingo` command line: one subcommand per stage, plus `demo` and `caption`.

    imagelingo ingest ../shared/flickr8k --out runs/flickr8k/dataset
    imagelingo vocab    --dataset runs/flickr8k/dataset --out runs/flickr8k/vocab
    imagelingo features --dataset runs/flickr8k/dataset --out runs/flickr8k/features
    imagelingo train    --dataset ... --vocab ... --features ... --out runs/flickr8k/model
    imagelingo evaluate --model ... --features ... --dataset ... --out runs/flickr8k/eval
    imagelingo evaluate --results runs/flickr8k/eval/captions.json --dataset ...  # no model
    imagelingo package  --model runs/flickr8k/model --out runs/flickr8k/store
    imagelingo serve    runs/flickr8k/store [--runtime torchserve|kserve] [--port 8080]
    imagelingo caption  photo.jpg --url http://127.0.0.1:8080 [--protocol v1|v2]
    imagelingo deploy   runs/f8k/store --target kserve --storage-uri s3://b/imagelingo
    imagelingo demo     # every stage on generated data, a few minutes on 2 CPU cores

Defaults come from params.yaml; override any with `-p section.key=value`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from imagelingo.cluster.platforms import DEFAULT_TARGET, TARGETS
from imagelingo.config import ServeConfig, apply_overrides, from_params, load_params
from imagelingo.errors import ImageLingoError, QualityGateError

DEFAULT_CACHE = Path(os.environ.get("IMAGELINGO_CACHE", Path.home() / ".cache" / "imagelingo"))


def run_ingest(args, params: dict) -> dict:
    from imagelingo.ingest import IngestConfig, ingest

    config = from_params(IngestConfig, params)
    return ingest(
        args.source, args.out, args.cache, config, args.s3_endpoint_url, args.strict, args.images
    )


def run_vocab(args, params: dict) -> dict:
    from imagelingo.vocab import VocabConfig, build_vocab_stage

    return build_vocab_stage(args.dataset, args.out, from_params(VocabConfig, params).min_freq)


def run_features(args, params: dict) -> dict:
    from imagelingo.features import FeaturesConfig, extract_features, parse_shard

    config = from_params(FeaturesConfig, params)
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else None
    return extract_features(args.dataset, args.out, config, args.encoder_weights, shard)


def run_features_merge(args, params: dict) -> dict:
    from imagelingo.features import merge_features

    return merge_features(args.dataset, args.shards, args.out)


def run_train(args, params: dict) -> dict:
    from imagelingo.train import TrainConfig, train

    config = from_params(TrainConfig, params)
    return train(
        args.dataset,
        args.vocab,
        args.features,
        args.out,
        config,
        resume=args.resume,
        checkpoint_uri=getattr(args, "checkpoint_uri", None),
    )


def _evaluate_config(params: dict):
    from imagelingo.evaluate import EvaluateConfig

    return from_params(EvaluateConfig, params)


def run_evaluate(args, params: dict) -> dict:
    from imagelingo.evaluate import evaluate, rescore

    if args.results is not None:  # a results file: scored without the model
        if args.model is not None or args.features is not None:
            raise ImageLingoError("--results scores a captions file: give no --model/--features")
        return rescore(args.results, args.dataset, args.out, split=args.split)
    if None in (args.model, args.features, args.out):
        raise ImageLingoError("give --model, --features and --out (or --results FILE)")
    config = _evaluate_config(params)
    return evaluate(args.model, args.features, args.dataset, args.out, config, split=args.split)


def run_caption(args, params: dict) -> dict:
    p = _evaluate_config(params)
    if (args.model is None) == (args.url is None):
        raise ImageLingoError("give either --model DIR (local) or --url URL (a served model)")
    if args.url:
        from imagelingo.serving.client import caption_remote

        images = []
        for path in args.images:
            if not path.is_file():
                raise ImageLingoError(f"image file not found: {path}")
            images.append(path.read_bytes())
        options = {"beam_width": p.beam_width, "max_len": p.max_len}
        served = caption_remote(args.url, images, args.protocol, args.model_name, options)
        texts = [s["caption"] for s in served]
    else:
        from imagelingo.captioning import caption_image_files

        captions = caption_image_files(args.model, args.images, p.beam_width, p.max_len, p.device)
        texts = [c.text for c in captions]
    for path, text in zip(args.images, texts, strict=True):
        print(f"{path}\t{text}")
    return {}


def run_package(args, params: dict) -> dict:
    from imagelingo.serving.package import ServingConfig, package_model

    config = from_params(ServingConfig, params)
    return package_model(args.model, args.out, config, args.encoder_weights)


def run_deploy(args, params: dict) -> dict:
    """Roll a packaged model store out on KServe (or render it locally), or move traffic."""
    from imagelingo.deploy import DeployConfig, change_traffic, deploy

    config = from_params(DeployConfig, params)
    if args.promote or args.rollback:
        if args.model_store is not None or args.target != "kserve":
            raise ImageLingoError("--promote/--rollback need --target kserve and no model store")
        result = change_traffic("promote" if args.promote else "rollback", config, args.out)
        print(f"{result['action']}: {config.namespace}/{config.name} Ready at {result['url']}")
        return {}
    if args.model_store is None:
        raise ImageLingoError("give the model store directory (imagelingo package --out DIR)")
    record = deploy(
        args.model_store,
        args.out,
        args.target,
        config,
        s3_endpoint_url=args.s3_endpoint_url,
        model_version=args.model_version,
        kserve_version=args.kserve_version,
    )
    where = record["url"] or str(args.out / "inferenceservice.yaml")
    uri = record["params"]["storage_uri"]
    print(f"{record['action']} {config.namespace}/{config.name} ({uri}): {where}")
    return record


def run_serve(args, params: dict) -> dict:
    """Serve a model store on 127.0.0.1 until Ctrl-C (or SIGTERM)."""
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    serve_config = from_params(ServeConfig, params)
    runtime, port = serve_config.runtime, serve_config.port
    if runtime == "kserve":
        from imagelingo.serving.kserve_predictor import serve

        with contextlib.suppress(KeyboardInterrupt):
            serve(args.model_store, args.workdir, port, args.host)
        return {}
    from imagelingo.serving.local import local_server

    server = local_server(runtime, args.model_store, args.workdir, port)
    try:  # start() inside: a SIGTERM while waiting for ready still stops the Java frontend
        server.start()
        print(f"{runtime} ready: POST {server.url}/v1/models/<model>:predict (Ctrl-C stops it)")
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return {}


def run_demo(args, params: dict) -> dict:
    """Every stage on the synthetic dataset, then BLEU and a caption for a test image."""
    from imagelingo.data.dataset import load_records

    work = Path(args.workdir)
    steps = argparse.Namespace(
        source="synthetic",
        images=None,  # the generated scenes' own folder
        shard=None,  # every image in one extraction
        results=None,  # evaluate scores the model, not a results file
        split="test",  # the demo's evaluation is the test one (MLflow, the registry)
        cache=args.cache,
        s3_endpoint_url=None,
        strict=True,
        dataset=work / "dataset",
        vocab=work / "vocab" / "vocab.json",
        features=work / "features",
        model=work / "model",
        encoder_weights=None,
        resume=False,
    )
    for stage, runner, out in (
        ("ingest", run_ingest, steps.dataset),
        ("vocab", run_vocab, work / "vocab"),
        ("features", run_features, steps.features),
        ("train", run_train, steps.model),
        ("evaluate", run_evaluate, work / "eval"),
    ):
        print(f"== {stage}", flush=True)
        steps.out = out
        runner(steps, params)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    print(
        "test BLEU: "
        + "  ".join(f"{k.upper()} {metrics[k]:.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4"))
        + f"  (COCO: BLEU-4 {metrics['coco_bleu4']:.3f}  CIDEr-D {metrics['cider']:.3f})"
    )
    print("== package", flush=True)
    steps.out = work / "store"
    run_package(steps, params)
    sample = load_records(steps.dataset, "test")[0]
    image = steps.dataset / "images" / sample.image
    caption, url = _caption_served(work, image, params)
    print(f"caption from {url}/v1/models/imagelingo:predict for {image}:")
    print(f"  {caption!r}  (a reference: {sample.captions[0]!r})")
    return metrics


def _pipeline_arguments(args) -> dict:
    from imagelingo.orchestration import parse_arguments

    arguments = parse_arguments(args.pipeline_args)
    if getattr(args, "source", None):
        arguments["source"] = args.source
    return arguments


def run_pipeline_locally(args, params: dict) -> dict:
    from imagelingo.orchestration import run_local

    rows = run_local(args.pipeline_root, _pipeline_arguments(args), args.cache, args.target)
    print(f"{'stage':<10} {'status':<8} {'seconds':>8}  outputs")
    for row in rows:
        outputs = json.dumps(row.get("outputs", ""), default=str) if row.get("outputs") else ""
        print(f"{row['stage']:<10} {row['status']:<8} {row['seconds']!s:>8}  {outputs}")
    return {}


def run_compile(args, params: dict) -> dict:
    from imagelingo.cluster.platforms import TARGETS
    from imagelingo.orchestration import compile_all

    targets = tuple(TARGETS) if args.target == "all" else (args.target,)
    root = {"root": args.out} if args.out else {}
    written = compile_all(**root, targets=targets, pods=_pod_options(args))
    for path in written:
        print(f"wrote {path}")
    return {}


def _pod_options(args):
    from imagelingo.cluster.gpu_nodes import GpuNodes
    from imagelingo.cluster.pod_options import PodOptions

    gpu = GpuNodes.from_options(args.cuda, args.gpu_toleration, args.gpu_node_selector)
    return PodOptions(tuple(args.image_pull_secret), gpu)


def _add_gpu_options(p) -> None:
    p.add_argument(
        "--cuda",
        action="store_true",
        help="features and train run the CUDA image (imagelingo-cuda): for accelerator_count > 0",
    )
    p.add_argument(
        "--gpu-toleration",
        action="append",
        default=[],
        help="KEY[=VALUE][:EFFECT] of a GPU node taint features and train tolerate; repeatable",
    )
    p.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        help="LABEL=VALUE of the nodes features and train run on; repeatable",
    )


def _kfp_access(args):
    from imagelingo.orchestration import Access

    return Access.from_env(args.host, args.namespace, args.token, args.cookies)


def run_submit(args, params: dict) -> dict:
    from imagelingo.orchestration import submit

    run = submit(
        _kfp_access(args),
        args.experiment,
        _pipeline_arguments(args),
        target=args.target,
        pods=_pod_options(args),
    )
    print(f"submitted run {run}")
    return {}


def run_schedule(args, params: dict) -> dict:
    from imagelingo.orchestration import schedule

    job = schedule(
        _kfp_access(args),
        args.cron,
        args.experiment,
        _pipeline_arguments(args),
        target=args.target,
        pods=_pod_options(args),
    )
    print(f"created recurring run {job} ({args.cron})")
    return {}


def run_fingerprint(args, params: dict) -> dict:
    from imagelingo.storage import fingerprint

    print(fingerprint(args.source))
    return {}


def run_models(args, params: dict) -> dict:
    from imagelingo.evaluate import check_gate
    from imagelingo.registry import production_score, versions

    if args.gate:
        config = _evaluate_config(params)
        production = production_score(check_gate(config))
        # no production model yet: the configured minimum is the gate
        print(f"{config.min_score if production is None else production + args.margin:.4f}")
        return {}
    rows = versions()
    if not rows:
        print("no registered versions of imagelingo")
    print(
        f"{'version':>7}  {'BLEU-1':>6}  {'BLEU-4':>6}  {'CIDEr-D':>7}  {'commit':<20} "
        f"{'data':<12}  production"
    )
    for r in rows:
        cider = f"{r['cider']:7.4f}" if "cider" in r else f"{'-':>7}"  # versions before CIDEr-D
        print(
            f"{r['version']:>7}  {r.get('bleu1', 0):6.4f}  {r.get('bleu4', 0):6.4f}  {cider}  "
            f"{r['git_commit']:<20} {r['data_sha256']:<12}  {'*' if r['production'] else ''}"
        )
    return {}


def _caption_served(work: Path, image: Path, params: dict) -> tuple[str, str]:
    """Serve the demo's model store locally (TorchServe; kserve when Java is missing) and caption
    one image through its KServe v1 endpoint."""
    import shutil

    from imagelingo.serving.client import caption_remote
    from imagelingo.serving.local import local_server

    runtime = from_params(ServeConfig, params).runtime
    if runtime == "torchserve" and shutil.which("java") is None:
        print("Java not found: serving with the kserve predictor instead of TorchServe")
        runtime = "kserve"
    print(f"== serve ({runtime} on 127.0.0.1)", flush=True)
    with local_server(runtime, work / "store", work / "serve") as server:
        options = {"beam_width": _evaluate_config(params).beam_width}
        served = caption_remote(server.url, [image.read_bytes()], "v1", parameters=options)
        return served[0]["caption"], server.url


DEVICE_HELP = "auto (a GPU if torch sees one) | cpu | cuda | cuda:N"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagelingo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, help="params file (default: ./params.yaml)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one parameter, e.g. -p train.epochs=5",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="caption source -> validated dataset directory")
    p.add_argument(
        "source",
        help="Flickr8k folder | Karpathy .json | COCO captions_<set>.json or COCO folder | "
        ".csv/.jsonl of image,caption[,split] | flickr8k | http(s) URL(s) | "
        "s3://bucket/prefix | synthetic (README: Your own data)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--images", type=Path, help="image folder of a captions file (default: images/ beside it)"
    )
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="downloads and generated data")
    p.add_argument("--s3-endpoint-url", help="S3 API endpoint (MinIO); default AWS_ENDPOINT_URL")
    p.add_argument("--strict", action="store_true", help="fail on the first undecodable image")
    p.set_defaults(run=run_ingest)

    p = sub.add_parser("vocab", help="build the vocabulary from TRAIN captions")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=run_vocab)

    p = sub.add_parser("features", help="encode every image into the feature store")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--encoder", help="efficientnet_lite0 (default) | efficientnet_lite2 | resnet50 | resnet101"
    )
    p.add_argument("--encoder-weights", type=Path, help="local weights file for the encoder")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--shard", help="i/n: only shard i of n of the images (see features-merge)")
    p.set_defaults(run=run_features)

    p = sub.add_parser("features-merge", help="join `features --shard i/n` stores into one")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--shards", type=Path, nargs="+", required=True, help="shard 0..n-1 folders")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=run_features_merge)

    p = sub.add_parser("train", help="train the attention LSTM decoder")
    for name in ("dataset", "vocab", "features", "out"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoint.pt")
    p.add_argument(
        "--checkpoint-uri",
        help="folder or s3:// prefix mirroring the checkpoint and best weights every epoch "
        "(and metadata.json at the end); a run finding a checkpoint there resumes from it",
    )
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument(
        "--precision",
        help="autocast of the forward pass: auto (bf16 where the CPU or GPU computes it natively, "
        "else fp32), fp32, bf16 or fp16 (CUDA only)",
    )
    p.set_defaults(run=run_train)

    p = sub.add_parser(
        "evaluate",
        help="test split: BLEU, METEOR, ROUGE-L, CIDEr-D, captions.json, report, quality gate",
    )
    for name in ("model", "features", "out"):
        p.add_argument(f"--{name}", type=Path)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument(
        "--results",
        type=Path,
        help="score this captions.json (one {image, caption} per test image) without a model; "
        "--out (optional) gets its metrics.json",
    )
    p.add_argument(
        "--split",
        choices=("test", "dev"),
        default="test",
        help="the split scored (default test); dev chooses decoding settings without touching "
        "test, and is neither logged to MLflow nor registered",
    )
    p.add_argument("--beam-width", type=int)
    p.add_argument("--length-penalty", type=float, help="0: total log-prob; 1: mean per word")
    p.add_argument("--gate-metric", help="the quality gate's metric: bleu4 | cider")
    p.add_argument("--min-score", type=float, help="quality gate: the minimum gate metric")
    p.add_argument("--device", help=DEVICE_HELP)
    p.set_defaults(run=run_evaluate)

    p = sub.add_parser("caption", help="caption image files with a model dir or a served model")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--model", type=Path, help="trained model directory (caption locally)")
    p.add_argument("--url", help="KServe endpoint base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1")
    p.add_argument("--model-name", default="imagelingo", help="served model name")
    p.add_argument("--beam-width", type=int)
    p.add_argument("--device", help=DEVICE_HELP + " (with --model)")
    p.set_defaults(run=run_caption)

    p = sub.add_parser("package", help="model dir -> TorchServe MAR + config.properties")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--encoder-weights", type=Path, help="local weights file for the encoder")
    p.set_defaults(run=run_package)

    p = sub.add_parser("serve", help="serve a model store on 127.0.0.1 (TorchServe or kserve)")
    p.add_argument("model_store", type=Path, help="directory written by `imagelingo package`")
    p.add_argument("--runtime", choices=("torchserve", "kserve"))
    p.add_argument("--port", type=int)
    p.add_argument(
        "--host", default="127.0.0.1", help="kserve runtime: bind address (0.0.0.0 in a container)"
    )
    p.add_argument("--workdir", type=Path, default=Path("runs/serve"), help="logs, unpacked MAR")
    p.set_defaults(run=run_serve)

    p = sub.add_parser(
        "deploy",
        help="upload a model store and roll it out on KServe (--target kserve), or render it",
    )
    p.add_argument("model_store", type=Path, nargs="?", help="directory from `imagelingo package`")
    p.add_argument("--target", choices=("local", "kserve"), default="local")
    p.add_argument("--out", type=Path, default=Path("runs/deploy"), help="rendered YAML, metadata")
    # The flags below stand for `-p deploy.<flag>`: their defaults are params.yaml's.
    p.add_argument("--name", help="InferenceService name")
    p.add_argument("--namespace", help="its namespace")
    p.add_argument(
        "--storage-uri", help="s3://bucket/prefix; each model version goes to PREFIX/<version>/"
    )
    p.add_argument("--canary-traffic-percent", type=int, help="0-100 to the new version; -1 none")
    p.add_argument("--protocol-version", choices=("v1", "v2"))
    p.add_argument("--mode", choices=("Knative", "Standard"), help="KServe deployment mode")
    p.add_argument(
        "--kserve-version",
        default="auto",
        help="the cluster's KServe: 0.15 (Kubeflow 1.10/1.11), 0.20, or auto (read its CRD)",
    )
    p.add_argument(
        "--runtime",
        choices=("imagelingo-torchserve", "kserve-torchserve", "imagelingo-kserve"),
        help="ServingRuntime",
    )
    p.add_argument("--service-account", help="the predictor's ServiceAccount")
    p.add_argument("--s3-secret", help="Secret KServe reads the bucket with")
    p.add_argument("--s3-endpoint-url", help="S3 API endpoint (MinIO); default AWS_ENDPOINT_URL")
    p.add_argument("--model-version", default="", help="registry version to mark production")
    p.add_argument("--timeout", type=int, help="seconds to wait for Ready (deploy.timeout_s)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--promote", action="store_true", help="all traffic to the canary")
    group.add_argument("--rollback", action="store_true", help="back to the previous version")
    p.set_defaults(run=run_deploy)

    pipeline_help = "pipeline argument NAME=VALUE (e.g. epochs=3); repeatable"
    p = sub.add_parser("run", help="run the whole KFP pipeline here with kfp.local")
    p.add_argument("--source", help="data source (default: synthetic)")
    p.add_argument(
        "--param", "--arg", dest="pipeline_args", action="append", default=[], help=pipeline_help
    )
    p.add_argument("--pipeline-root", type=Path, default=Path("runs/pipeline"))
    p.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help=f"whose DAG layout to run (default {DEFAULT_TARGET}; one of {', '.join(TARGETS)})",
    )
    p.add_argument(
        "--cache",
        action="store_true",
        help="kfp.local's task cache: unchanged tasks (same inputs, same data fingerprint) "
        "are not run again",
    )
    p.set_defaults(run=run_pipeline_locally)

    targets = ", ".join(TARGETS)
    pull_help = "an image pull Secret for every pod (private images); repeatable"
    p = sub.add_parser(
        "compile", help="write the pipeline YAML of each target and every component.yaml"
    )
    p.add_argument("--target", default="all", help=f"all (default) or one of {targets}")
    p.add_argument("--image-pull-secret", action="append", default=[], help=pull_help)
    _add_gpu_options(p)
    p.add_argument(
        "--out", type=Path, help="write under this folder instead of the source tree (uploads)"
    )
    p.set_defaults(run=run_compile)

    for name, runner, helptext in (
        ("submit", run_submit, "submit a pipeline run to Kubeflow Pipelines"),
        ("schedule", run_schedule, "create a recurring run (6-field KFP cron)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--host", required=True, help="KFP API, e.g. http://ml-pipeline-ui:80")
        p.add_argument("--experiment", default="imagelingo")
        p.add_argument(
            "--namespace", help="Kubeflow profile namespace (multi-user; env KFP_NAMESPACE)"
        )
        p.add_argument(
            "--token",
            help="bearer token (env KFP_TOKEN); else the file KF_PIPELINES_SA_TOKEN_PATH names",
        )
        p.add_argument("--cookies", help="e.g. oauth2_proxy_kubeflow=... (env KFP_COOKIES)")
        p.add_argument(
            "--target",
            default="auto",
            help=f"auto (default: from the backend's reported version) or one of {targets}",
        )
        p.add_argument("--image-pull-secret", action="append", default=[], help=pull_help)
        _add_gpu_options(p)
        p.add_argument("--source", help="data source")
        p.add_argument(
            "--param",
            "--arg",
            dest="pipeline_args",
            action="append",
            default=[],
            help=pipeline_help,
        )
        if name == "schedule":
            p.add_argument("--cron", required=True, help="e.g. '0 0 3 * * *' (03:00 daily)")
        p.set_defaults(run=runner)

    p = sub.add_parser(
        "fingerprint",
        help="what the data of a source is (DVC md5, S3 listing or folder hash): what the "
        "pipeline's fingerprint task feeds to ingest's cache key",
    )
    p.add_argument("source", help="a folder, s3://bucket/prefix, URL or 'synthetic'")
    p.set_defaults(run=run_fingerprint)

    p = sub.add_parser("models", help="registered model versions, BLEU, which is in production")
    p.add_argument(
        "--gate",
        action="store_true",
        help="print production's evaluate.gate_metric + --margin (the retrain gate)",
    )
    p.add_argument("--margin", type=float, default=0.0)
    p.set_defaults(run=run_models)

    p = sub.add_parser("demo", help="all stages on generated data; prints BLEU and a caption")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.set_defaults(run=run_demo)
    return parser


# Flags that are shorthand for a parameter, per command: `evaluate --beam-width 5` is
# `-p evaluate.beam_width=5`. (Per command: submit's --namespace is not deploy's.)
DEPLOY_FLAGS = (
    "name",
    "namespace",
    "storage_uri",
    "service_account",
    "s3_secret",
    "runtime",
    "mode",
    "protocol_version",
    "canary_traffic_percent",
)
SHORTHAND = {
    "features": {"encoder": "features.encoder", "device": "features.device"},
    "train": {"device": "train.device", "precision": "train.precision"},
    "evaluate": {
        "beam_width": "evaluate.beam_width",
        "length_penalty": "evaluate.length_penalty",
        "gate_metric": "evaluate.gate_metric",
        "min_score": "evaluate.min_score",
        "device": "evaluate.device",
    },
    "caption": {"beam_width": "evaluate.beam_width", "device": "evaluate.device"},
    "serve": {"runtime": "serve.runtime", "port": "serve.port"},
    "deploy": {**{f: f"deploy.{f}" for f in DEPLOY_FLAGS}, "timeout": "deploy.timeout_s"},
}


def _shorthand_overrides(args) -> dict:
    return {
        key: getattr(args, name)
        for name, key in SHORTHAND.get(args.command, {}).items()
        if getattr(args, name, None) is not None
    }


def resolve_params(args) -> dict:
    """params.yaml (or --params), then the demo's overrides, -p overrides, shorthand flags."""
    params = load_params(args.params)
    if args.command == "demo":
        params = apply_overrides(params, params.get("demo", {}))
    params = apply_overrides(params, args.param)
    return apply_overrides(params, _shorthand_overrides(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        record = args.run(args, resolve_params(args))
    except QualityGateError as exc:
        print(f"imagelingo {args.command}: {exc}", file=sys.stderr)
        return 3
    except ImageLingoError as exc:
        print(f"imagelingo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if record and args.command not in ("demo", "caption"):
        summary = {
            k: record[k] for k in ("counts", "metrics", "best_val_bleu4", "seconds") if k in record
        }
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
