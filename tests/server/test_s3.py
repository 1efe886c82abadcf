"""Files in object storage: ``mlop server --files s3://BUCKET/PREFIX`` against moto's S3 server as a process.

No real S3 is reachable from the test machines: the store is moto's standalone S3 server, started here as
its own process on 127.0.0.1 (``tests/server/moto_s3.py``), with a check of presigned-URL signatures put in
front of it (moto itself does not check them; see that module). The mlop server is a real process, the
client a real ``mlop`` run; the bytes are read back from the bucket with boto3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.server.moto_s3 import MotoS3

from mlop_server.testing import ServerProcess

BUCKET = "mlop-files"


@pytest.fixture(scope="module")
def store() -> Iterator[MotoS3]:
    with MotoS3() as s3:
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture(scope="module")
def prefix(backend: str) -> str:
    """The key prefix of one server: two servers (two databases) must never share one, as file ids repeat."""
    return f"team/{backend}"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, store: MotoS3, prefix: str, db_url: str | None
) -> Iterator[ServerProcess]:
    """A server with its files in the bucket, once on SQLite and once on PostgreSQL."""
    data = tmp_path_factory.mktemp("s3server")
    files = ["--files", f"s3://{BUCKET}/{prefix}"]
    with ServerProcess(data, extra_args=files, env=store.env, db=db_url) as proc:
        yield proc


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as client:
        yield client


def _tampered(url: str) -> str:
    """``url`` with one character of its signature changed."""
    at = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    return url[:at] + ("0" if url[at] != "0" else "1") + url[at + 1 :]


def _object(store: MotoS3, prefix: str, file_id: int) -> bytes:
    key = f"{prefix}/{file_id // 1000:06d}/{file_id}.bin"
    body: bytes = store.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def test_an_online_run_keeps_its_image_and_artifact_in_the_bucket(
    server: ServerProcess, store: MotoS3, prefix: str, api: httpx.Client, tmp_path: Path
) -> None:
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(os.urandom(3000))
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import numpy as np
            import mlop
            run = mlop.init(project="s3", name="media", dir=sys.argv[1])
            run.log({{"loss": 0.5}})
            image = np.zeros((16, 16, 3), dtype=np.uint8)
            image[:, :8] = 255
            weights = mlop.Artifact({str(artifact)!r})
            run.log({{"sample": mlop.Image(image, caption="half"), "weights": weights}})
            run.finish()
            print("STATUS", run.status)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "AWS_"))}
    env.update(
        MLOP_API_TOKEN=server.key,
        MLOP_HOST=server.url,
        MLOP_CONFIG_DIR=str(tmp_path / "config"),
        MLOP_DISABLE_SYSTEM_METRICS="1",
    )
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0 and "STATUS COMPLETED" in out.stdout, out.stderr
    (run,) = api.get("/api/runs", params={"project": "s3"}).json()

    (image,) = api.get(f"/api/runs/{run['id']}/files", params={"key": "sample"}).json()
    assert image["uploaded"] and image["caption"] == "half"
    in_bucket = _object(store, prefix, image["id"])
    assert in_bucket.startswith(b"\x89PNG") and len(in_bucket) == image["fileSize"]
    with httpx.Client(headers={"Authorization": f"Bearer {server.key}"}, timeout=30) as reader:
        redirect = reader.get(f"{server.url}/api/runs/{run['id']}/files/{image['id']}/content")
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(store.endpoint)
        assert redirect.headers["cache-control"] == "no-store"
        shown = reader.get(redirect.headers["location"])
    assert shown.status_code == 200 and shown.content == in_bucket
    assert shown.headers["content-type"] == "image/png"
    assert shown.headers["content-disposition"].startswith("inline")

    (weights,) = api.get(f"/api/runs/{run['id']}/files", params={"key": "weights"}).json()
    assert weights["uploaded"] and _object(store, prefix, weights["id"]) == artifact.read_bytes()
    followed = api.get(weights["url"], follow_redirects=True)  # httpx drops the key at the other origin
    assert followed.content == artifact.read_bytes()
    assert followed.headers["content-disposition"].startswith("attachment")
    # The bytes went to the store only: the server's data folder holds no file.
    assert not any(p.is_file() for p in (server.data_dir / "files").rglob("*"))


def _announce(api: httpx.Client, run_id: int, name: str, size: int) -> str:
    entry = {"fileName": name, "fileSize": size, "fileType": "png", "time": 1, "logName": "pic", "step": 0}
    answer = api.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)})
    assert answer.status_code == 200, answer.text
    ((url,),) = (pair.values() for pair in answer.json()["pic"])
    return str(url)


def test_presigned_upload_and_download_and_tampered_signatures_refused(
    server: ServerProcess, store: MotoS3, prefix: str, api: httpx.Client
) -> None:
    run_id = api.post("/api/runs/create", json={"runName": "raw", "projectName": "s3raw"}).json()["runId"]
    api.post("/api/runs/logName/add", json={"runId": run_id, "logType": "IMAGE", "logName": ["pic"]})
    data = os.urandom(1234)
    url = _announce(api, run_id, "a.png", len(data))
    assert url.startswith(f"{store.endpoint}/{BUCKET}/{prefix}/") and "X-Amz-Signature=" in url

    (row,) = api.get(f"/api/runs/{run_id}/files", params={"key": "pic"}).json()
    assert not row["uploaded"] and row["url"] is None  # nothing in the store yet
    assert api.get(f"/api/runs/{run_id}/files/{row['id']}/content").status_code == 404

    refused = httpx.put(_tampered(url), content=data)
    assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content
    assert httpx.put(url, content=data + b"x").status_code == 403  # the announced size is signed
    (row,) = api.get(f"/api/runs/{run_id}/files", params={"key": "pic"}).json()
    assert not row["uploaded"]

    assert httpx.put(url, content=data, headers={"Content-Type": "image/png"}).status_code == 200
    (row,) = api.get(f"/api/runs/{run_id}/files", params={"key": "pic"}).json()
    assert row["uploaded"] and row["fileSize"] == len(data)
    assert _object(store, prefix, row["id"]) == data

    redirect = api.get(row["url"])
    assert redirect.status_code == 307
    download = redirect.headers["location"]
    assert httpx.get(download).content == data
    refused = httpx.get(_tampered(download))
    assert refused.status_code == 403 and data not in refused.content

    # A run of another owner's key gets no URL for this run's files.
    other = _key(server, "someone")
    assert httpx.get(f"{server.url}{row['url'][len(server.url) :]}", headers=other).status_code == 404


def _key(server: ServerProcess, name: str) -> dict[str, str]:
    made = server.cli("keys", "create", "--name", name, timeout=120)
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def _start(tmp_path: Path, files: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "never"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "AWS_"))}
    base.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        MLOP_SERVER_ADMIN_KEY="mlps_test_admin_key_0123456789",
        **env,
    )
    cmd = [sys.executable, "-m", "mlop_server", "--port", "0", "--data", str(data), "--files", files]
    out = subprocess.run(cmd, env=base, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and not data.exists(), out  # a failed start creates nothing
    return out


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ("ftp://host/x", "give a folder or s3://BUCKET/PREFIX"),
        ("s3:///prefix", "the bucket is missing"),
        ("s3://Bad_Bucket/p", "is not a bucket name"),
    ],
)
def test_a_bad_files_value_stops_the_start(tmp_path: Path, files: str, says: str) -> None:
    assert says in _start(tmp_path, files, {}).stderr


def test_missing_credentials_or_bucket_stop_the_start(tmp_path: Path, store: MotoS3) -> None:
    no_keys = {k: v for k, v in store.env.items() if not k.startswith("AWS_")}
    out = _start(tmp_path, f"s3://{BUCKET}/p", no_keys)
    assert "no AWS credentials" in out.stderr and "AWS_ACCESS_KEY_ID" in out.stderr
    out = _start(tmp_path, "s3://no-such-bucket/p", store.env)
    assert "'no-such-bucket' does not exist" in out.stderr
    assert store.env["AWS_SECRET_ACCESS_KEY"] not in out.stderr + out.stdout


def test_the_dashboard_may_fetch_from_the_store(server: ServerProcess, store: MotoS3) -> None:
    policy = httpx.get(f"{server.url}/ui/").headers["content-security-policy"]
    assert store.endpoint in policy.split("connect-src", 1)[1].split(";")[0]


def test_two_processes_share_one_files_folder(tmp_path: Path, pg_url: str) -> None:
    """``--files DIR`` shared by two server processes on one PostgreSQL database: a file uploaded through
    either is read whole through the other."""
    shared = tmp_path / "shared-files"
    files = ["--files", str(shared)]
    with (
        ServerProcess(tmp_path / "a", db=pg_url, extra_args=files) as one,
        ServerProcess(tmp_path / "b", db=pg_url, extra_args=files) as two,
    ):
        auth = {"Authorization": f"Bearer {one.key}"}
        with httpx.Client(headers=auth, timeout=30) as http:
            created = http.post(f"{one.url}/api/runs/create", json={"runName": "s", "projectName": "shared"})
            run_id = created.json()["runId"]
            names = {"runId": run_id, "logType": "FILE", "logName": ["pic"]}
            assert http.post(f"{two.url}/api/runs/logName/add", json=names).status_code == 200
            for writer, reader, name in ((one, two, "first.png"), (two, one, "second.png")):
                data = os.urandom(2048)
                with httpx.Client(base_url=writer.url, headers=auth, timeout=30) as api:
                    url = _announce(api, run_id, name, len(data))
                assert url.startswith(writer.url + "/uploads/")
                assert httpx.put(url, content=data).status_code == 200
                listed = http.get(f"{reader.url}/api/runs/{run_id}/files", params={"key": "pic"}).json()
                (row,) = [r for r in listed if r["fileName"] == name]
                assert row["uploaded"]
                assert http.get(f"{reader.url}/api/runs/{run_id}/files/{row['id']}/content").content == data
                assert (shared / f"{row['id'] // 1000:06d}" / f"{row['id']}.bin").read_bytes() == data
    assert not (tmp_path / "a" / "files").exists() and not (tmp_path / "b" / "files").exists()


def test_without_boto3_the_start_names_the_extra(tmp_path: Path, store: MotoS3) -> None:
    """A server without boto3 (as after a plain ``pip install mlop-server``) says which extra to install."""
    start = (
        "import sys; sys.modules['boto3'] = None; from mlop_server._cli import main; "
        f"sys.exit(main(['--port', '0', '--data', {str(tmp_path / 'never')!r}, "
        f"'--files', 's3://{BUCKET}/p']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")} | store.env
    out = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and 'pip install "mlop-server[s3]"' in out.stderr, out.stderr
    assert not (tmp_path / "never").exists()


def test_a_files_folder_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = _start(tmp_path, str(blocker / "files"), {})
    assert f"{blocker} is not a folder" in out.stderr
