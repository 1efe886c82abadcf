"""The dashboard shows an image kept in object storage: headless Chromium, a real server with ``--files s3://``.

No real S3 is reachable from the test machines: the store is moto's S3 server as a process (see
``tests/server/moto_s3.py``). The page fetches the file's content route, which redirects to a presigned
``GET`` of the store; the test reads the image's pixels from the page. The bucket gets the CORS rule that
``docs/deploy.md`` asks for (moto answers preflights even without one, real S3 does not).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from PIL import Image
from tests.server.moto_s3 import MotoS3

from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

CHROMIUM: Final = os.environ.get("MLOP_TEST_CHROMIUM", "/usr/bin/chromium")
BUCKET = "mlop-ui-files"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"], timeout=60_000
        )
        try:
            yield launched
        finally:
            launched.close()


def test_the_dashboard_shows_an_image_from_the_bucket(browser: Any, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 0, 0)).save(buffer, "PNG")
    png = buffer.getvalue()
    with MotoS3() as store:
        client = store.client()
        client.create_bucket(Bucket=BUCKET)
        rule = {
            "AllowedOrigins": ["*"],
            "AllowedMethods": ["GET"],
            "AllowedHeaders": ["*"],
            "MaxAgeSeconds": 600,
        }
        client.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": [rule]})
        files = ["--files", f"s3://{BUCKET}/ui"]
        with ServerProcess(tmp_path / "server", extra_args=files, env=store.env) as server:
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"})
            run_id = api.post("/api/runs/create", json={"runName": "r", "projectName": "p"}).json()["runId"]
            api.post("/api/runs/logName/add", json={"runId": run_id, "logType": "IMAGE", "logName": ["pic"]})
            entry = {"fileName": "red.png", "fileSize": len(png), "fileType": "png", "time": 1}
            entry |= {"logName": "pic", "step": 0}
            answer = api.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)}).json()
            assert httpx.put(answer["pic"][0]["red.png"], content=png).status_code == 200

            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/ui/#key={server.key}")
            page.wait_for_selector("body[data-ready]")
            page.evaluate("where => { location.hash = where; }", f"#/run/{run_id}/media")
            page.wait_for_selector(".media img")
            page.wait_for_function("() => document.querySelector('.media img').complete")
            pixel = page.eval_on_selector(
                ".media img",
                "img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; "
                "c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0); "
                "return Array.from(g.getImageData(4, 4, 1, 1).data); }",
            )
            api.close()
    assert pixel == [120, 0, 0, 255]
    assert not errors, errors
