"""Sphinx glue for the course site: pages load nothing they do not use.

Thebe (live code through Binder) is off, but sphinx-thebe, which Jupyter Book always loads, still adds its
configuration script to every page, twice with sphinx-book-theme 1.3 (the second copy throws "Identifier
'THEBE_JS_URL' has already been declared" in the console). This drops thebe's scripts from the pages.
"""

def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get('script_files')
    if not scripts: return
    def thebe(js): return 'thebe' in str(js) or 'thebe' in str(getattr(js, 'attributes', {}).get('body', ''))
    context['script_files'] = [js for js in scripts if not thebe(js)]


def setup(app):
    app.connect('html-page-context', _drop_thebe, priority=900)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
