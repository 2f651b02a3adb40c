"""Fixtures for browser tests: one JupyterLab server (127.0.0.1, random token) and one headless Chromium per session,
and a folder per test for its notebook. Skipped, with the reason, when Chromium or Playwright is missing."""
import os, re, sys, json, time, shutil, socket, secrets, subprocess, urllib.request, urllib.error
from pathlib import Path
import pytest

CHROMIUM = os.environ.get('LESSONLIB_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
if CHROMIUM is None and Path('/usr/bin/chromium').exists(): CHROMIUM = '/usr/bin/chromium'

KERNEL_IDLE = """() => { const k = document.querySelector('.jp-Toolbar-kernelName'),
  e = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return !!k && !!e && !/No Kernel/.test(k.textContent) && e.dataset.status === 'idle'; }"""


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    reason = None
    if CHROMIUM is None: reason = 'Chromium is not installed (apt-get install chromium); the browser test needs it'
    else:
        try: import playwright  # noqa: F401
        except ImportError: reason = 'playwright (python) is not installed: pip install playwright (no browser download needed)'
    for it in items:
        if Path(str(it.fspath)).parent == here:
            it.add_marker(pytest.mark.browser)
            if reason: it.add_marker(pytest.mark.skip(reason=reason))


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='session')
def jupyter(tmp_path_factory):
    base = tmp_path_factory.mktemp('jlab'); root = base/'root'; root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    settings = base/'config'/'lab'/'user-settings'/'@jupyterlab'/'apputils-extension'
    settings.mkdir(parents=True)
    (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base/'config'), JUPYTER_RUNTIME_DIR=str(base/'runtime'),
               LESSONLIB_QUIET='1', MPLBACKEND='Agg')
    log = open(base/'server.log', 'wb')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--allow-root', '--ip=127.0.0.1',
                             f'--port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
                             f'--ServerApp.root_dir={root}'], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    deadline = time.time() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f'JupyterLab exited with {proc.returncode}:\n' + (base/'server.log').read_text()[-3000:])
        try:
            with urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2) as r:
                if r.status == 200: break
        except (urllib.error.URLError, ConnectionError, OSError): pass
        if time.time() > deadline:
            proc.terminate(); pytest.fail('JupyterLab did not start in 60 s:\n' + (base/'server.log').read_text()[-3000:])
        time.sleep(0.3)
    yield {'url': url, 'token': token, 'root': root, 'log': base/'server.log'}
    proc.terminate()
    try: proc.wait(15)
    except subprocess.TimeoutExpired: proc.kill()
    log.close()


@pytest.fixture(scope='session')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu',
                              '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
    pg = ctx.new_page()
    yield pg
    ctx.close()


@pytest.fixture
def nb_dir(jupyter, request):
    "A folder of its own for this test's notebook and data (the kernel starts there)."
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)
    d = jupyter['root']/name; d.mkdir()
    return d


@pytest.fixture
def run_all(jupyter):
    "A function (page, notebook path, ui='lab' or 'notebook'): open it in JupyterLab or Notebook 7, wait for the kernel, Run All."
    def run(page, nb_rel, ui='lab'):
        where = 'lab/tree' if ui == 'lab' else 'notebooks'
        page.goto(f"{jupyter['url']}/{where}/{nb_rel}?reset&token={jupyter['token']}")
        page.wait_for_function(KERNEL_IDLE, timeout=60_000)
        page.locator('.lm-MenuBar-item', has_text='Run').first.click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
    return run
