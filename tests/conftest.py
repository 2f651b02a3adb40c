"Shared pytest fixtures. Keep this small: helpers add fixtures they share here, one short block each."
import os
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
