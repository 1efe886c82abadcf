"""The links ``init()`` and ``finish()`` print open the run's page in a browser, never an API URL."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import httpx

from mlop._online._client import page_url


def test_init_and_finish_print_the_dashboard_page_of_the_run(online: Any) -> None:
    out = online.run(
        """
        run = mlop.init(project="links", name="linked", dir=sys.argv[1])
        run.log({"x": 1.0})
        print("URL", run.url, flush=True)
        run.finish()
        """
    )
    run = online.server_run("links")
    page = f"{online.server.url}/ui/#/run/{run['id']}"
    printed = re.findall(r"https?://\S+", out.stderr)
    assert printed == [page, page], out.stderr  # once by init(), once by finish()
    assert "run linked completed: " + page in out.stderr
    assert f"URL {page}" in out.stdout  # run.url is the same page
    # what a browser gets there without any key: the dashboard, not a 401
    answer = httpx.get(page.split("#", maxsplit=1)[0], timeout=10)
    assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]


def test_an_older_servers_api_url_becomes_the_dashboard_page() -> None:
    assert page_url("http://127.0.0.1:8080/api/runs/42") == "http://127.0.0.1:8080/ui/#/run/42"
    assert page_url("https://mlop.example/base/api/runs/7/") == "https://mlop.example/base/ui/#/run/7"
    hosted = "https://trakkur.trainy.ai/o/acme/projects/demo/abc123"
    assert page_url(hosted) == hosted  # the hosted service answers its app's page: kept as it is
    assert page_url(None) is None and page_url("") is None
    assert urllib.parse.urlsplit(page_url("http://h/api/runs/1") or "").fragment == "/run/1"
