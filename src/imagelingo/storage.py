"""One place that reads local paths and s3:// URIs (S3 or MinIO through boto3)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from imagelingo.errors import ImageLingoError


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ImageLingoError(f"expected an s3://bucket/prefix URI, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; the endpoint comes from the argument or AWS_ENDPOINT_URL (MinIO, moto)."""
    import boto3

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def upload_file(client, path: Path, bucket: str, key: str) -> None:
    """One upload; a failure (after boto3's own retries) names the file and where it went."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.upload_file(str(path), bucket, key)
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        raise ImageLingoError(f"upload of {path} to s3://{bucket}/{key} failed: {exc}") from exc


def download_prefix(uri: str, dest: Path, endpoint_url: str | None = None) -> Path:
    """Copy every object under an s3:// prefix into `dest`, keeping relative paths.

    Objects already present with the same size are not downloaded again.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(uri)
    client = s3_client(endpoint_url)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = [obj for page in pages for obj in page.get("Contents", [])]
        if not objects:
            raise ImageLingoError(f"{uri}: no objects under this prefix")
        for obj in tqdm(objects, desc=f"download {uri}", unit="file"):
            relative = obj["Key"][len(prefix) :].lstrip("/")
            target = Path(dest) / relative
            if target.is_file() and target.stat().st_size == obj["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
    except (BotoCoreError, ClientError) as exc:
        raise ImageLingoError(f"{uri}: S3 error: {exc}") from exc
    return Path(dest)


def upload_dir(local_dir: Path, uri: str, endpoint_url: str | None = None) -> int:
    """Upload every file under `local_dir` to an s3:// prefix; return the number of files."""
    bucket, prefix = split_s3_uri(uri)
    client = s3_client(endpoint_url)
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    for path in tqdm(files, desc=f"upload {uri}", unit="file"):
        key = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(local_dir).as_posix()]))
        upload_file(client, path, bucket, key)
    return len(files)


def put_files(paths: list[Path], uri: str, endpoint_url: str | None = None) -> None:
    """Copy files (by name) into a local directory or an s3:// prefix, each one atomically."""
    import shutil

    if uri.startswith("s3://"):
        bucket, prefix = split_s3_uri(uri)
        client = s3_client(endpoint_url)
        for path in paths:
            key = "/".join(filter(None, [prefix.rstrip("/"), Path(path).name]))
            upload_file(client, Path(path), bucket, key)
        return
    dest = Path(uri)
    dest.mkdir(parents=True, exist_ok=True)
    for path in paths:
        tmp = dest / f".{Path(path).name}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest / Path(path).name)


def get_files(uri: str, dest: Path, endpoint_url: str | None = None) -> list[str]:
    """Copy what a local directory or an s3:// prefix holds into `dest`; [] when it is empty or
    absent (a first attempt), the copied names otherwise."""
    import shutil

    dest = Path(dest)
    if uri.startswith("s3://"):
        bucket, prefix = split_s3_uri(uri)
        client = s3_client(endpoint_url)
        prefix = prefix.rstrip("/") + "/"
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        names = []
        for obj in (o for page in pages for o in page.get("Contents", [])):
            name = obj["Key"][len(prefix) :]
            if "/" in name:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest / name))
            names.append(name)
        return sorted(names)
    source = Path(uri)
    if not source.is_dir():
        return []
    names = sorted(p.name for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in names:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, dest / name)
    return names


# A source naming one of these files is a captions file (imagelingo.data.formats).
CAPTION_FILE_SUFFIXES = (".json", ".csv", ".jsonl")


def fingerprint(source: str, endpoint_url: str | None = None) -> str:
    """What a pipeline run's data is, as a short string that changes when the data does: ingest's
    cache key (the pipeline's never-cached `fingerprint` task feeds it to ingest as
    `data_fingerprint`), so a retraining run re-reads changed
    data and skips unchanged data.

    - a DVC-tracked folder (`DIR.dvc` beside it): `dvc:<md5>` from the pointer, no data read;
    - an s3:// prefix: `s3:<sha256>` of the listing (key, size, ETag of every object);
    - a local folder: `dir:<sha256>` of every file's relative path and content; a captions file
      (or an s3:// one): that of the folder (prefix) holding it, which holds its images;
    - anything else ("synthetic", "flickr8k", archive URLs): the source string itself, since the
      same string is the same data (generated with the run's seed, or fixed public archives).
    """
    import hashlib

    if source.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        if Path(source).suffix in CAPTION_FILE_SUFFIXES:
            source = source.rpartition("/")[0]  # its images are beside it: the whole prefix
        bucket, prefix = split_s3_uri(source)
        digest = hashlib.sha256()
        try:
            pages = s3_client(endpoint_url).get_paginator("list_objects_v2")
            count = 0
            for page in pages.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    count += 1
                    digest.update(f"{obj['Key']}\0{obj['Size']}\0{obj['ETag']}\n".encode())
        except (BotoCoreError, ClientError) as exc:
            raise ImageLingoError(f"{source}: S3 error: {exc}") from exc
        if not count:
            raise ImageLingoError(f"{source}: no objects under this prefix")
        return f"s3:{digest.hexdigest()[:16]}"
    if "://" in source or source in ("synthetic", "flickr8k"):
        return source
    path = Path(source)
    pointer = Path(str(source).rstrip("/") + ".dvc")
    if pointer.is_file():
        import yaml

        md5 = yaml.safe_load(pointer.read_text())["outs"][0].get("md5", "")
        if md5:
            return f"dvc:{md5}"
    if path.is_file() and path.suffix in CAPTION_FILE_SUFFIXES:
        path = path.parent  # a captions file (Karpathy, COCO, CSV): its folder holds the images
    if not path.is_dir():
        raise ImageLingoError(
            f"dataset source {source!r}: not a directory, captions file, s3:// URI or URL"
        )
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\n")
    return f"dir:{digest.hexdigest()[:16]}"
