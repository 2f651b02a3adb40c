"Shared pytest fixtures. Keep this small: helpers add fixtures they share here, one short block each."
import os, shutil, subprocess
import pytest

@pytest.fixture(scope='session', autouse=True)
def lessonlib_data(tmp_path_factory):
    "Point the dataset cache root (LESSONLIB_DATA) at a fresh temporary folder for the whole session."
    old = {k: os.environ.get(k) for k in ('LESSONLIB_DATA', 'LESSONLIB_QUIET')}
    root = tmp_path_factory.mktemp('lessonlib_data')
    os.environ['LESSONLIB_DATA'], os.environ['LESSONLIB_QUIET'] = str(root), '1'
    yield root
    for k, v in old.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v

@pytest.fixture(scope='session')
def sample_path(lessonlib_data):
    "The bundled Fashion-MNIST sample (folder layout), materialized once per session under LESSONLIB_DATA."
    from lessonlib.data import get_dataset
    return get_dataset('fashion-sample')

class ReadOnly:
    "Make folders unwritable (chmod; the immutable flag for root, who ignores permissions) and, with `undo`, writable again."
    def __init__(self): self.paths = []
    def __call__(self, *paths):
        if os.geteuid() == 0 and not shutil.which('chattr'): pytest.skip('running as root without chattr: cannot make a folder read-only')
        for p in paths:
            try: self._set(p, True)
            except subprocess.CalledProcessError as e: pytest.skip(f'chattr +i refused here: {e.stderr!r}')
            self.paths.append(p)
    def undo(self):
        while self.paths: self._set(self.paths.pop(), False)
    @staticmethod
    def _set(p, on):
        if os.geteuid() == 0: subprocess.run(['chattr', '+i' if on else '-i', str(p)], check=True, capture_output=True)
        else: os.chmod(p, 0o555 if on else 0o755)

@pytest.fixture
def readonly():
    "Call it with folders to make them read-only for the test; they are made writable again afterwards."
    ro = ReadOnly()
    yield ro
    ro.undo()

@pytest.fixture
def warned_here(request):
    "`warned_here(rec, text)`: the warnings in `rec` whose message holds `text` exist and name a line of this test file."
    def check(rec, text):
        ws = [w for w in rec if text in str(w.message)]
        assert ws, f'no warning containing {text!r} among {[str(w.message)[:60] for w in rec]}'
        assert all(w.filename == str(request.path) for w in ws), [(w.filename, w.lineno) for w in ws]
    return check
