"""`make docs`: the course as a book. Every lesson notebook, as nbdev processes it, rendered by Jupyter Book 1.x
(Sphinx + MyST-NB + sphinx-book-theme) into a static site that works offline: runs/docs/_build/html/index.html.

1. check: a lesson whose stored outputs hold an error stops the build, naming the notebook and the cell;
2. process: nbdev 2's own processors (those of `nbdev_proc_nbs`/`nbdev_docs`) strip the `#|` directive lines,
   drop `#| hide` cells and render `show_doc` for every exported symbol; two changes for a course: exported code
   stays visible (it is what the lesson teaches), and stored outputs are kept (only what `show_doc` needs is run:
   export cells, imports, `show_doc` calls; nothing is trained again);
3. shape for the book: each `show_doc` becomes a reference entry (heading, signature, docstring) with a label that
   nbdev's backtick links point to; test-only lines (`test_eq`, `assert`, ...) and build imports are left out (the
   notebooks keep them: `nbdev_test` runs them); each exercise becomes an exercise with its hints and solution
   folded; widgets become their text (the lessons show a screenshot next to them); each lesson links its .ipynb;
4. build: `jupyter-book build -W --keep-going`, so any warning (a broken cross-reference, an unknown target) fails.

Usage (project root, inside the venv): python tools/build_docs.py [OUT] [--nbs NBS_DIR]   (OUT defaults to runs/docs)
Nothing is executed beyond step 2: `make lessons` refreshes the stored outputs.
"""
import ast, json, os, re, shutil, subprocess, sys, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from run_lessons import lessons                      # the course's notebooks, in order: one list for every tool
CONF = ROOT/'docs'                       # _config.yml and _static/ of the book
TEST_FUNCS = {'test_eq', 'test_ne', 'test_close', 'test_fail', 'test_is', 'test_eq_type', 'test_shuffled',
              'test_stdout', 'test_warns', 'test_fig_exists', 'test', 'nequals', 'is_close'}
BUILD_MODULES = ('fastcore.test', 'nbdev')          # imports that only serve the tests and the docs build
WIDGET = 'application/vnd.jupyter.widget-view+json'


class BuildError(Exception): "The site cannot be built: the message says which notebook and cell, and why."


def page_name(stem):
    "nbdev's page name for a notebook (`05_schedules` -> `schedules`), as in the links of `_modidx.py`."
    return re.sub(r'^\d+[a-z]?_', '', stem)


def without_outputs(nbs=ROOT/'nbs'):
    "Names of the lessons that store no output at all (`make lessons` has not run them)."
    def has(p): return any(c.get('outputs') for c in json.loads(p.read_text(encoding='utf-8'))['cells'])
    return [p.name for p in lessons(nbs) if not has(p)]


def stored_errors(path):
    "One line per error output stored in notebook `path`: which cell (index, first code line) and the error."
    nb, res = json.loads(Path(path).read_text(encoding='utf-8')), []
    for i, c in enumerate(nb['cells']):
        for o in c.get('outputs', []) if c['cell_type'] == 'code' else []:
            if o.get('output_type') == 'error':
                first = next((l for l in ''.join(c['source']).splitlines() if l.strip() and not l.startswith('#|')), '')
                res.append(f"{Path(path).name}, cell {i} (`{first.strip()[:60]}`): {o.get('ename')}: {str(o.get('evalue'))[:200]}")
    return res


# ---------------------------------------------------------------------------------------------- 2. nbdev processing
def nbdev_process(path):
    "Run nbdev's docs processors on notebook `path` (exported code kept, stored outputs kept); returns the notebook."
    from execnb.nbio import read_nb, mk_cell
    from nbdev.processors import FilterDefaults, exec_show_docs, rm_export, _do_eval, _show_docs

    class keep_outputs_show_docs(exec_show_docs):
        "nbdev's `exec_show_docs`, running only what `show_doc` needs, and keeping every other cell's stored outputs."
        def __call__(self, cell):
            if not self.nb.has_docs_ or not hasattr(self, 'k') or not _do_eval(cell): return
            trees = cell.parsed_()
            is_doc = bool(_show_docs(trees))
            if cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'} or is_doc: run = cell
            else: run = mk_cell('\n'.join(ast.unparse(t) for t in trees if isinstance(t, (ast.Import, ast.ImportFrom))))
            stored = cell.get('outputs', [])
            self.k.cell(run)
            if self.k.exc:
                raise BuildError(f"{Path(path).name}, cell {cell.idx_}: rendering show_doc failed: "
                                 f"{type(self.k.exc).__name__}: {self.k.exc}\n{cell.source}") from None
            if not is_doc: cell.outputs = stored

    class LessonProcs(FilterDefaults):
        def base_procs(self):
            return [keep_outputs_show_docs if p is exec_show_docs else p for p in super().base_procs() if p is not rm_export]

    nb = read_nb(path)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Found cells containing imports and other code')
        LessonProcs()(nb)
    return nb


# ---------------------------------------------------------------------------------------------- 3. shaping for the book
_re_opt = re.compile(r'^#\|\s*([\w-]+):\s*(.*)$')
_re_heading = re.compile(r'^(#{1,6})\s+\S')


def _src(x): return ''.join(x) if isinstance(x, list) else (x or '')


def _strip_opts(src):
    "Quarto cell options that nbdev's processors add (`#| echo: false`...): (options, the code without them)."
    opts, lines = {}, src.splitlines()
    while lines and _re_opt.match(lines[0]):
        k, v = _re_opt.match(lines[0]).groups(); opts[k] = v; lines.pop(0)
    return opts, '\n'.join(l for l in lines if not l.lstrip().startswith('#|'))


def _is_test(stmt):
    "Is this statement only a test: `assert ...` or a call to a fastcore.test function?"
    if isinstance(stmt, ast.Assert): return True
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id in TEST_FUNCS)


def _is_build_import(stmt):
    if isinstance(stmt, ast.ImportFrom): return (stmt.module or '').startswith(BUILD_MODULES)
    if isinstance(stmt, ast.Import): return all(a.name.startswith(BUILD_MODULES) for a in stmt.names)
    return False


def _blocks(stmt):
    "The statement lists inside a compound statement (not inside a def or a class: those are code, not tests)."
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): return []
    blocks = [getattr(stmt, f) for f in ('body', 'orelse', 'finalbody') if getattr(stmt, f, None)]
    return blocks + [h.body for h in getattr(stmt, 'handlers', [])]


def _removable(stmt, asserts=True):
    """A test (`asserts=False`: a fastcore test call, not an assert), a build import, or a compound statement that only
    tests: `for x in xs: test_eq(...)`, `with torch.no_grad(): test_eq(...)`, `try: test_fail(...) finally: ...`."""
    if _is_build_import(stmt) or (_is_test(stmt) and (asserts or not isinstance(stmt, ast.Assert))): return True
    blocks = _blocks(stmt)
    if not blocks: return False
    if isinstance(stmt, ast.Try): return all(_removable(b, asserts) for b in stmt.body)
    return all(_removable(b, asserts) or isinstance(b, ast.Pass) for blk in blocks for b in blk)


def _drops(body, asserts):
    "(statement, its block) pairs to leave out of `body`, at any depth; a block is never emptied."
    res = []
    for s in body:
        if _removable(s, asserts): res.append((s, body)); continue
        for blk in _blocks(s):
            sub = _drops(blk, asserts)
            if len(sub) < len(blk) or any(b is not blk for _, b in sub): res += sub
    return res


def strip_tests(src, keep_asserts=False):
    "`src` without its tests and build imports (with the comment lines just above them); other code stays as written."
    try: tree = ast.parse(src)
    except SyntaxError: return src
    drops = _drops(tree.body, not keep_asserts)
    if not drops: return src
    lines, gone, dropped = src.splitlines(), set(), {id(s) for s, _ in drops}
    for s, block in drops:
        for ln in range(s.lineno, s.end_lineno + 1):
            kept = [k for k in block if id(k) not in dropped and k.lineno == ln == k.end_lineno]
            if kept:                                  # `x = f(); test_eq(x, 1)`: keep what is not a test
                indent = re.match(r'\s*', lines[ln-1]).group(0)
                lines[ln-1] = indent + '; '.join(ast.get_source_segment(src, k) for k in kept)
            else: gone.add(ln)
        ln = s.lineno - 1                             # its comment lines just above
        while ln >= 1 and lines[ln-1].lstrip().startswith('#'): gone.add(ln); ln -= 1
    return '\n'.join(l for i, l in enumerate(lines, 1) if i not in gone).strip('\n')


def _has_code(src):
    return any(l.strip() and not l.lstrip().startswith('#') for l in src.splitlines())


def show_doc_md(md, level, used=None):
    """A `show_doc` output as a reference entry: label, heading at `level`, signature, docstring (no link to GitHub).
    The label `api-<name>` goes on the first entry of a name only (in course order); `used` collects them."""
    md = _src(md)
    m = re.search(r'^#{1,6} (.+)$', md, re.MULTILINE)
    if not m: return md
    name, body = m.group(1).strip(), md[m.end():].strip()
    def sig(g):                                       # `def f(\n    \n):` -> `def f():`; a class is no `def`
        code = '\n'.join(l for l in g.group(1).splitlines() if l.strip())
        code = re.sub(r'\(\n\)', '()', code)
        if re.fullmatch(r'[A-Z]\w*', name): code = re.sub(r'^def ', 'class ', code)
        return f'```python\n{code}\n```'
    body = re.sub(r'```python\n(.*?)```', sig, body, count=1, flags=re.S)
    label = f'api-{name.lower()}'
    target = '' if used is not None and label in used else f'({label})=\n'
    if used is not None: used.add(label)
    title = re.sub(r'([_*])', r'\\\1', name)        # `__dir__` is no bold "dir"
    return f"{target}{'#' * level} {title}\n\n{body}\n"


def _md(src): return {'cell_type': 'markdown', 'metadata': {}, 'source': src}


_re_kernel_file = re.compile(r'^\S*/ipykernel_\d+/\d+\.py:\d+: (?=\w+:)', re.MULTILINE)


_re_tmp_dir = re.compile(r'(?:/private)?(?:/var)?/tmp/(?:tmp|lessonlib-)[\w.-]*')      # tempfile.mkdtemp() folders


def _no_machine_paths(text):
    "Text with the build machine's paths hidden: a temporary folder as `<tmp>`, the home folder as `~`."
    text = _re_tmp_dir.sub('<tmp>', text)
    home = os.path.expanduser('~')
    return text.replace(home + '/', '~/') if home not in ('/', '') else text


def _clean_outputs(outs):
    """Stored outputs as the site shows them: widgets as their text, no ANSI colours, and a warning's location
    `/tmp/ipykernel_11448/2536761431.py:28: UserWarning: ...` (the kernel's name for the cell) as `UserWarning: ...`."""
    res = []
    for o in outs:
        o = dict(o)
        if 'data' in o and WIDGET in o['data']:
            data = {k: v for k, v in o['data'].items() if k != WIDGET}
            text = _src(data.get('text/plain', ''))
            if not set(data) - {'text/plain'} and re.match(r'^\w*(Box|Widget|Output|Button|Dropdown|Tab|Accordion)\(|^[A-Z]\w+\(children=', text):
                continue                                # the bare repr of a widget says nothing on a static page
            o['data'] = data
        if o.get('output_type') == 'stream':            # ANSI colours; the kernel's file name of a cell in warnings
            o['text'] = _re_kernel_file.sub('', re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', _src(o.get('text'))))
        if 'text' in o: o['text'] = _no_machine_paths(_src(o['text']))
        if 'data' in o:                                 # paths of the machine that ran `make lessons`
            o['data'] = {k: _no_machine_paths(_src(v)) if k.startswith('text/') else v for k, v in o['data'].items()}
        res.append(o)
    return res


def _exercise_cells(lesson, name, title, body):
    label = f'{lesson.name}-{name}'
    return _md(f":::::{{exercise}} {name} · {title}\n:label: {label}\n:nonumber:\n\n{body.strip()}\n:::::")


def _answer_cells(lesson, name):
    e, label, out = lesson[name], f'{lesson.name}-{name}', []
    if e.hints:
        hints = '\n'.join(f'{i}. {h}' for i, h in enumerate(e.hints, 1))
        out.append(f":::{{admonition}} Hint{'s' if len(e.hints) > 1 else ''}\n:class: tip, dropdown\n\n{hints}\n:::")
    ans = f"```python\n{e.solution_text}\n```" if e.kind == 'code' else f"**Answer:** {e.solution_text}"
    out.append(f"::::{{solution}} {label}\n:class: dropdown\n\n{ans}\n\n{e.explanation}\n::::")
    return _md('\n\n'.join(out))


def to_book(nb, path, labels, pages, exercises=None, used=None):
    """Notebook `nb` (processed by nbdev) as the page of the book: a list of nbformat cells, title first.
    `labels`: every reference label of the book; `pages`: nbdev page name -> notebook stem."""
    fm, cells, level, out = getattr(nb, 'frontmatter_', {}) or {}, nb.cells, 1, []
    title, desc = fm.get('title') or path.stem, fm.get('description')
    head = f"# {title}\n\n" + (f"> {desc}\n\n" if desc else '')
    what = 'this page' if path.name == 'index.ipynb' else 'this lesson'
    head += f"{{download}}`Download {what} as a notebook ({path.name}) <_notebooks/{path.name}>`"
    out.append(_md(head))
    pending = None                                       # (lesson, qN) whose hints/solution go before the next text
    for c in cells:
        if c.cell_type == 'raw': continue                # nbdev's front matter, now the title above
        if c.cell_type == 'markdown':
            src = _link(_src(c.source), labels, pages)
            if pending and _re_heading.match(src): out.append(_answer_cells(*pending)); pending = None
            fenced = False
            for line in src.splitlines():                # the level a show_doc entry goes under (+1)
                if line.lstrip().startswith('```'): fenced = not fenced
                h = None if fenced else _re_heading.match(line)
                if h: level = len(h.group(1))
            out.append(_md(src)); continue
        opts, code = _strip_opts(_src(c.source))
        m = re.fullmatch(r'ex\.(q\d+)', code.strip())       # a lesson shows exercise `qN`: the exercise, then its answer
        if m and exercises is not None and m.group(1) in exercises._exercises:
            if pending: out.append(_answer_cells(*pending))
            e = exercises[m.group(1)]
            body = _link(e._repr_markdown_().split('\n\n', 1)[1], labels, pages)
            out.append(_exercise_cells(exercises, e.name, e.title[:1].upper() + e.title[1:], body))
            pending = (exercises, e.name); continue
        outs = [dict(o) for o in c.get('outputs', [])]
        if re.match(r'^show_doc\(', code.strip()):
            md = next((o['data']['text/markdown'] for o in outs if 'text/markdown' in o.get('data', {})), None)
            if md is not None: out.append(_md(_link(show_doc_md(md, min(level + 1, 6), used), labels, pages)))
            continue
        shown = strip_tests(code)
        if not _has_code(shown) and outs:               # only asserts, but it shows something: keep the asserts
            shown = strip_tests(code, keep_asserts=True)
        if not _has_code(shown): continue
        outs = _clean_outputs(outs)
        for o in outs:                                   # a lesson's exercise list repeats what the exercises below show
            md = _src(o.get('data', {}).get('text/markdown', ''))
            if md.startswith('### Exercises:'): o['data'] = {'text/plain': o['data'].get('text/plain', '')}
            elif md: o['data']['text/markdown'] = _link(md, labels, pages)
        tags = ['remove-input'] if opts.get('echo') == 'false' else []
        out.append({'cell_type': 'code', 'execution_count': None, 'metadata': {'tags': tags} if tags else {},
                    'outputs': outs, 'source': shown})
    if pending: out.append(_answer_cells(*pending))
    return out


def _link(md, labels, pages):
    "nbdev's backtick links to this library's docs site -> cross-references inside the book (checked by Sphinx)."
    from nbdev.config import get_config
    cfg = get_config()
    base = re.escape(cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')) + r'/([\w.-]+)\.html(?:#([\w.-]+))?'
    def repl(m):
        page, anchor = m.group(1), (m.group(2) or '').lower()
        for a in (anchor, anchor.split('.')[0]):
            if a and a in labels: return f'(#api-{a})'
        stem = pages.get(page)
        if stem is None: raise BuildError(f"a link points to page {page!r}, which is no lesson: {m.group(0)}")
        return f'({stem}.ipynb)'
    return re.sub(r'\(' + base + r'\)', repl, md)


# ---------------------------------------------------------------------------------------------- 4. the book
def write_nb(cells, meta, dest):
    "Write the page's notebook (nbformat 4.4, no nbdev bookkeeping) for MyST-NB."
    meta = {k: v for k, v in meta.items() if k in ('kernelspec', 'language_info')}
    meta.setdefault('kernelspec', {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'})
    meta.setdefault('language_info', {'name': 'python', 'pygments_lexer': 'ipython3'})
    for c in cells:
        if c['cell_type'] == 'code':
            for o in c['outputs']:
                for k in [k for k in o if k.endswith('_')]: o.pop(k)
    dest.write_text(json.dumps({'cells': cells, 'metadata': meta, 'nbformat': 4, 'nbformat_minor': 4}, indent=1,
                               ensure_ascii=False), encoding='utf-8')


def toc(paths):
    chapters = '\n'.join(f'  - file: {p.stem}' for p in paths if p.name != 'index.ipynb')
    return f"format: jb-book\nroot: index\nparts:\n- caption: Lessons\n  chapters:\n{chapters}\n"


def prepare(src, nbs=ROOT/'nbs'):
    "Check and process every lesson into `src` (notebooks, _toc.yml, _config.yml, images, downloads); returns the lesson paths."
    paths = lessons(nbs)
    if not paths: raise BuildError(f'no notebooks in {nbs}')
    errors = [e for p in paths for e in stored_errors(p)]
    if errors: raise BuildError('stored outputs hold an error (fix the lesson, then `make lessons`):\n  ' + '\n  '.join(errors))
    import importlib, pkgutil, lessonlib.exercises as E
    for m in pkgutil.iter_modules(E.__path__): importlib.import_module(f'lessonlib.exercises.{m.name}')
    by_nb = {l.notebook: l for l in E.LESSONS.values()}
    src.mkdir(parents=True, exist_ok=True)
    processed = {p: nbdev_process(p) for p in paths}
    labels = {m.group(1).lower() for nb in processed.values() for c in nb.cells if c.cell_type == 'code'
              for m in [re.match(r'^(?:#\|.*\n)*show_doc\(([\w.]+)\)\s*$', _src(c.source))] if m}
    pages, used = {page_name(p.stem): p.stem for p in paths}, set()
    for p, nb in processed.items():
        write_nb(to_book(nb, p, labels, pages, by_nb.get(p.stem), used), dict(nb.metadata), src/p.name)
    for p in src.glob('*.ipynb'):
        if p.name not in {q.name for q in paths}: p.unlink()
    if (nbs/'images').exists(): shutil.copytree(nbs/'images', src/'images', dirs_exist_ok=True)
    shutil.copytree(CONF, src, dirs_exist_ok=True)
    (src/'_notebooks').mkdir(exist_ok=True)
    for p in paths: shutil.copy2(p, src/'_notebooks'/p.name)
    (src/'_toc.yml').write_text(toc(paths))
    return paths


def build(out=ROOT/'runs'/'docs', nbs=ROOT/'nbs', quiet=True):
    "Build the site into `out`/_build/html; returns the path of its index.html. Raises BuildError naming what is wrong."
    out, nbs, t0 = Path(out).resolve(), Path(nbs).resolve(), time.perf_counter()
    # nbdev's show_doc processing runs each lesson's export cells, and those @patch the library's classes: do it in a
    # child process, so that building the site never changes the classes of the process that asked for it (a test run).
    env = dict(os.environ, LESSONLIB_QUIET='1', MPLBACKEND='Agg')
    r = subprocess.run([sys.executable, __file__, '--prepare', str(out), '--nbs', str(nbs)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if r.returncode: raise BuildError(r.stderr.strip().removeprefix('make docs: '))
    paths = lessons(nbs)
    t1 = time.perf_counter()
    jb = Path(sys.executable).parent/'jupyter-book'
    cmd = [str(jb), 'build', str(out/'src'), '--path-output', str(out), '--builder', 'html', '--all', '-W', '--keep-going']
    r = subprocess.run(cmd + (['-q'] if quiet else []), capture_output=True, text=True)
    if r.returncode:
        log = re.sub(r'\x1b\[[0-9;]*m', '', r.stdout + r.stderr).strip().splitlines()
        raise BuildError('jupyter-book build failed:\n' + '\n'.join(log[-60:]))
    index = out/'_build'/'html'/'index.html'
    print(f'{len(paths)} lessons; nbdev processing {t1 - t0:.1f} s, jupyter-book {time.perf_counter() - t1:.1f} s; '
          f'open {index}', flush=True)
    return index


if __name__ == '__main__':
    args, nbs = sys.argv[1:], ROOT/'nbs'
    if '--nbs' in args: i = args.index('--nbs'); nbs = Path(args[i+1]); del args[i:i+2]
    try:
        if '--prepare' in args: os.chdir(ROOT); prepare(Path(args[args.index('--prepare') + 1])/'src', nbs)
        else: build(*(args[:1] or []), nbs=nbs)
    except BuildError as e: sys.exit(f'make docs: {e}')
