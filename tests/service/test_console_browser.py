"""The web console in headless Chromium: sign in -> submit a task -> see the results.

Runs the API under uvicorn (a real server on 127.0.0.1) and a real worker; Chromium is
Debian's, driven by Selenium through Debian's chromedriver."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from svc_helpers import REPO, SERVICES_DIR, WorkerProcess, read_env_file
from svc_oidc import FakeIssuer
from svc_site import LocalSite

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("uvicorn") / "api.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=REPO,
        env={**os.environ, "PUBLIC_BASE_URL": base},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    tools = read_env_file(SERVICES_DIR / "env")
    chromium = tools.get("CHROMIUM_BIN", "/usr/bin/chromium")
    driver_bin = tools.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
    assert Path(chromium).exists() and Path(driver_bin).exists(), "scripts/services.sh start installs chromium"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_sign_in_submit_and_see_results(
    server: str, browser: WebDriver, issuer: FakeIssuer, site: LocalSite, worker: WorkerProcess
) -> None:
    wait = WebDriverWait(browser, 30)
    issuer.sign_in_as(f"browser-{uuid.uuid4().hex[:6]}@example.com", name="Bea")
    browser.get(f"{server}/console")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "task-form")))
    assert "100</strong> of 100 credits" in browser.find_element(By.ID, "credits").get_attribute("innerHTML")

    urls = browser.find_element(By.ID, "urls")
    urls.send_keys(f"{site.url}/products\n{site.url}/products/3")
    browser.find_element(By.ID, "submit-task").click()
    wait.until(ec.url_contains("/console/tasks/"))
    WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "task-state"), "completed"))

    results = browser.find_element(By.ID, "results").text
    assert "Product 3" in results and "$3.99" in results and "Products" in results
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 21  # 20 products of the list page + the product page
    download = browser.find_element(By.ID, "download-csv").get_attribute("href")
    assert download and download.endswith(".csv")

    browser.find_element(By.LINK_TEXT, "API keys").click()
    browser.find_element(By.ID, "key-name").send_keys("from the browser")
    browser.find_element(By.ID, "create-key").click()
    key = wait.until(ec.presence_of_element_located((By.ID, "new-key"))).text
    assert key.startswith("sx_")
    assert httpx.get(f"{server}/api/v1/tasks", headers={"Authorization": f"Bearer {key}"}).json()["total"] == 1


def test_bad_rules_are_shown_in_the_form(server: str, browser: WebDriver, site: LocalSite) -> None:
    browser.get(f"{server}/console")
    browser.find_element(By.ID, "urls").send_keys(f"{site.url}/products")
    rules = browser.find_element(By.ID, "extract")
    rules.clear()
    rules.send_keys('{"title": "h1[["}')
    browser.find_element(By.ID, "submit-task").click()
    errors = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "errors"))).text
    assert "invalid CSS selector 'h1[['" in errors
