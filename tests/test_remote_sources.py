"""Ingest from the network: archive URLs (downloaded once, checksummed) and s3:// prefixes.

Both servers are real and local: Python's http.server for the archives, moto's S3 server for the
bucket, each bound to 127.0.0.1 on a free port.
"""

import functools
import http.server
import threading
import zipfile

import pytest

from imagelingo.data.flickr8k import download
from imagelingo.errors import ImageLingoError
from imagelingo.ingest import ingest
from imagelingo.storage import upload_dir


@pytest.fixture
def archive_server(synthetic_source, tmp_path):
    """Serve the synthetic dataset as the two Flickr8k zip archives; count GET requests."""
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "Flickr8k_Dataset.zip", "w") as zf:
        for image in (synthetic_source / "images").iterdir():
            zf.write(image, f"Flicker8k_Dataset/{image.name}")
    with zipfile.ZipFile(served / "Flickr8k_text.zip", "w") as zf:
        for text in synthetic_source.glob("*.txt"):
            zf.write(text, text.name)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, requests, served
    server.shutdown()


def test_archives_are_downloaded_once_and_ingested(archive_server, tmp_path):
    base, requests, _ = archive_server
    source = f"{base}/Flickr8k_Dataset.zip,{base}/Flickr8k_text.zip"
    first = ingest(source, tmp_path / "ds1", tmp_path / "cache")
    second = ingest(source, tmp_path / "ds2", tmp_path / "cache")
    assert len(requests) == 2  # the second ingest came from the cache
    assert first["counts"]["images"] == second["counts"]["images"]
    assert sum(first["counts"]["images"].values()) == len(
        list((tmp_path / "ds1" / "images").iterdir())
    )


def test_checksum_mismatch_is_an_error_and_leaves_nothing_cached(archive_server, tmp_path):
    base, _, _ = archive_server
    with pytest.raises(ImageLingoError, match="sha256 .* expected 0000"):
        download(f"{base}/Flickr8k_text.zip", tmp_path / "cache", sha256="0000")
    assert not list((tmp_path / "cache").glob("*.zip*"))


def test_cached_file_that_changed_is_refused(archive_server, tmp_path):
    base, _, _ = archive_server
    path = download(f"{base}/Flickr8k_text.zip", tmp_path / "cache")
    path.write_bytes(b"tampered")
    with pytest.raises(ImageLingoError, match="cached .* has sha256"):
        download(f"{base}/Flickr8k_text.zip", tmp_path / "cache")


def test_s3_prefix_is_ingested_through_the_endpoint_url(s3_server, synthetic_source, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="datasets")
    uploaded = upload_dir(synthetic_source, "s3://datasets/flickr8k-mini", s3_server)
    record = ingest(
        "s3://datasets/flickr8k-mini",
        tmp_path / "ds",
        tmp_path / "cache",
        s3_endpoint_url=s3_server,
    )
    assert uploaded == len(list(synthetic_source.rglob("*.*")))
    assert sum(record["counts"]["images"].values()) == len(
        list((synthetic_source / "images").iterdir())
    )


def test_empty_s3_prefix_is_an_error_naming_it(s3_server, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="empty")
    with pytest.raises(ImageLingoError, match="s3://empty/nothing: no objects"):
        ingest("s3://empty/nothing", tmp_path / "ds", tmp_path / "cache")


def test_a_failed_upload_is_an_error_naming_the_file_and_the_key(s3_server, tmp_path):
    """boto3's S3UploadFailedError is no botocore error: it escaped as a traceback (seen on the
    box, SeaweedFS out of volumes: "InternalError when calling the UploadPart operation")."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "imagelingo.mar").write_bytes(b"model")
    with pytest.raises(
        ImageLingoError,
        match=r"upload of .*\.mar to s3://no-such-bucket/v1/imagelingo\.mar failed: .*NoSuchBucket",
    ):
        upload_dir(tmp_path / "store", "s3://no-such-bucket/v1", s3_server)
