"""The course site (`make docs`, tools/build_docs.py) in headless Chromium, served by `python -m http.server` on 127.0.0.1.

Every page loads without a console error, shows every image, links only to pages and anchors that exist, and shows
nothing of the build (`#| export`, `test_eq`, `fastcore.test`, a /tmp/ path, a progress bar). Search finds lesson
words; previous / next walk the whole course in order. Screenshots of the home page and of the lr_find lesson are
saved in the test's tmp folder (and copied to runs/test-report/).
"""
import html, re, shutil, socket, subprocess, sys, time, importlib.util, urllib.request, urllib.error
from pathlib import Path
from urllib.parse import urljoin, urlsplit
import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT/'runs'/'test-report'
spec = importlib.util.spec_from_file_location('build_docs', ROOT/'tools'/'build_docs.py')
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)

FORBIDDEN = {'directive': r'#\| ?(export|hide|default_exp)', 'test_eq': r'test_eq', 'fastcore.test': r'fastcore\.test',
             'tmp path': r'(?<![\w.>~-])/tmp/',               # an absolute path, not `<dataset root>/tmp/` in the prose
             'progress bar': r'\d+%\|[^|\n]*\|\s*\d+/\d+'}
COURSE = ['index'] + [p.stem for p in B.lessons() if p.name != 'index.ipynb']


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site from nbs/ into a tmp folder and serve it on 127.0.0.1; yields (base url, html folder)."
    out = tmp_path_factory.mktemp('docs')
    t0 = time.perf_counter()
    index = B.build(out)
    print(f'site built in {time.perf_counter() - t0:.1f} s')
    port = _free_port()
    srv = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1', '--directory', str(index.parent)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}/'
    for _ in range(100):
        try: urllib.request.urlopen(url, timeout=1).close(); break
        except (urllib.error.URLError, OSError): time.sleep(0.1)
    yield url, index.parent
    srv.terminate(); srv.wait(10)


def _open(page, url, settle=True):
    "Open `url` (`settle`: and wait until the network is idle), collecting console and page errors; returns them."
    errors = []
    def console(m):
        if m.type == 'error': errors.append(f'console error: {m.text} ({m.location.get("url")})')
    def pageerror(e): errors.append(f'page error: {e}')
    page.on('console', console); page.on('pageerror', pageerror)
    try:
        page.goto(url, wait_until='load' if settle else 'domcontentloaded')
        if settle: page.wait_for_load_state('networkidle')
    finally: page.remove_listener('console', console); page.remove_listener('pageerror', pageerror)
    return errors


def _ids(url, cache):
    "The element ids of the page at `url` (fetched once), or None when it does not answer 200."
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=10) as r: body = r.read().decode('utf-8', 'replace')
            cache[url] = set(re.findall(r'\sid="([^"]+)"', body))
        except urllib.error.HTTPError: cache[url] = None
    return cache[url]


@pytest.fixture(scope='module')
def crawl(site, browser):
    "Visit every page of the site once; returns {page: {'errors', 'images', 'links', 'text': {what: excerpt}}}."
    url, root = site
    ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
    page, cache, res = ctx.new_page(), {}, {}
    t0 = time.perf_counter()
    for name in sorted(p.name for p in root.glob('*.html')):
        r = res[name] = {'errors': _open(page, url + name), 'links': [], 'text': {}}
        r['images'] = page.evaluate("""async () => {
            const imgs = [...document.images];
            imgs.forEach(i => i.loading = 'eager');
            await Promise.all(imgs.map(i => i.decode().catch(() => null)));
            return imgs.filter(i => !i.naturalWidth).map(i => i.getAttribute('src')); }""")
        visible = page.inner_text('body')
        folded_too = page.evaluate("() => (document.querySelector('article') || document.body).textContent")
        for what, pat in FORBIDDEN.items():
            for text, where in ((visible, 'shows'), (folded_too, 'holds (folded)')):
                m = re.search(pat, text)
                if m: r['text'][what] = f'{where} ...{text[max(0, m.start()-80):m.end()+40]!r}...'; break
        for href in set(page.eval_on_selector_all('a[href]', 'as => as.map(a => a.getAttribute("href"))')):
            target = urljoin(url + name, href)
            if not target.startswith(url): continue
            base, _, frag = target.partition('#')
            ids = _ids(base, cache)
            if ids is None: r['links'].append(f'missing page: {href}')
            elif frag and base.endswith('.html') and html.unescape(frag) not in ids: r['links'].append(f'missing anchor: {href}')
            r.setdefault('n_links', 0); r['n_links'] = r['n_links'] + 1
    ctx.close()
    print(f'{len(res)} pages, {sum(r.get("n_links", 0) for r in res.values())} internal links, {time.perf_counter() - t0:.1f} s')
    return res


def test_every_page_loads_cleanly(crawl):
    "No console error, every image shows, every internal link (page and anchor) exists."
    assert {f'{s}.html' for s in COURSE} <= set(crawl), sorted(crawl)
    problems = [f'{n}: {e}' for n, r in crawl.items() for e in r['errors']]
    problems += [f'{n}: image does not show: {s}' for n, r in crawl.items() for s in r['images']]
    problems += [f'{n}: link to a {l}' for n, r in crawl.items() for l in r['links']]
    assert not problems, '\n'.join(problems)


def test_nothing_of_the_build_shows(crawl):
    "No `#| export` line, no test_eq, no fastcore.test import, no progress-bar residue, on any page."
    problems = [f'{n}: {what}: {ex}' for n, r in crawl.items() for what, ex in r['text'].items() if what != 'tmp path']
    assert not problems, '\n'.join(problems)


def test_no_path_of_the_build_machine(crawl):
    "Stored outputs show the temporary folders and home of the machine that ran them: the site hides them."
    problems = {n: r['text']['tmp path'] for n, r in crawl.items() if 'tmp path' in r['text']}
    assert not problems, '\n'.join(f'{n}: {ex}' for n, ex in problems.items())


def test_lesson_pages_show_the_course(site, page, tmp_path):
    url, root = site
    _open(page, url + 'index.html')
    page.screenshot(path=str(tmp_path/'home.png'))
    sidebar = page.eval_on_selector_all('nav.bd-docs-nav a.reference', 'as => as.map(a => a.getAttribute("href"))')
    assert [h.removesuffix('.html') for h in sidebar] == COURSE[1:], sidebar      # the sidebar in course order
    assert page.locator('table a[href="06_lr_find.html"]').count() == 2   # once in the lesson table, once in the module map

    _open(page, url + '06_lr_find.html')
    page.screenshot(path=str(tmp_path/'lr_find.png'))
    assert page.locator('img').count() >= 1                                          # its figures are in the page
    assert page.locator('button.copybtn').count() >= 1                               # code cells have copy buttons

    _open(page, url + '05_schedules.html')
    assert page.locator('h3, h4').filter(has_text=re.compile(r'^sgdr_lrs')).count() == 1   # show_doc reference
    assert 'def sgdr_lrs(' in page.inner_text('article')
    exercises = page.locator('div.exercise')
    assert exercises.count() == 6 and 'q1 · Cosine annealing by hand' in exercises.first.inner_text()
    solution = page.locator('div.solution').first                                  # folded until clicked
    assert solution.count() and not solution.locator('pre').first.is_visible()
    solution.locator('button.toggle-button').click()
    assert solution.locator('pre').first.is_visible()
    dl = page.locator('a.download[href$="05_schedules.ipynb"]')                       # the notebook to download
    assert dl.count() == 1
    with urllib.request.urlopen(urljoin(url + '05_schedules.html', dl.get_attribute('href'))) as r:
        assert b'"cells"' in r.read()
    for shot in ('home.png', 'lr_find.png'):
        try: REPORT.mkdir(parents=True, exist_ok=True); shutil.copy(tmp_path/shot, REPORT/f'site_{shot}')
        except OSError: pass


@pytest.mark.parametrize('word, lesson', [('cycle_mult', '05_schedules'), ('precompute', '04_precompute')])
def test_search_finds(site, page, word, lesson):
    url, _ = site
    errors = _open(page, url + 'index.html')
    page.locator('button.search-button__button').first.click()
    box = page.locator('#pst-search-dialog input[name="q"]')
    box.fill(word); box.press('Enter')
    page.wait_for_url(re.compile(r'search\.html\?q='))
    results = page.locator('#search-results ul.search li a')
    results.first.wait_for(timeout=15_000)
    hrefs = results.evaluate_all('as => as.map(a => a.getAttribute("href"))')
    assert any(h.split('?')[0].split('#')[0] == f'{lesson}.html' for h in hrefs), hrefs
    assert not errors, errors


def test_prev_next_walk_the_course(site, page):
    url, _ = site
    seen, here = [], url + 'index.html'
    while here and len(seen) <= len(COURSE):
        _open(page, here, settle=False)
        seen.append(urlsplit(page.url).path.rsplit('/', 1)[-1].removesuffix('.html'))
        nxt = page.locator('.prev-next-area a.right-next')
        here = urljoin(page.url, nxt.get_attribute('href')) if nxt.count() else None
    assert seen == COURSE, seen
    back = []
    while True:
        back.append(urlsplit(page.url).path.rsplit('/', 1)[-1].removesuffix('.html'))
        prev = page.locator('.prev-next-area a.left-prev')
        if not prev.count() or len(back) > len(COURSE): break
        _open(page, urljoin(page.url, prev.get_attribute('href')), settle=False)
    assert back == COURSE[::-1], back
