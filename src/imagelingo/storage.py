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
        client.upload_file(str(path), bucket, key)
    return len(files)
