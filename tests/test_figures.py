"Plot functions return their Figure and pyplot keeps none: in Jupyter each plot shows exactly once, scripts leak none."
import os
import numpy as np
import nbformat
from nbclient import NotebookClient
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from PIL import Image
from lessonlib.interpret import ClassificationInterpretation
from lessonlib.schedules import plot_schedule
from lessonlib.augment import show_augs, tfms_from_model, transforms_side_on
from lessonlib.exercises import lr_find as ex_lr

def _interp(tmp_path):
    fs = []
    for i in range(6):
        f = tmp_path/f'{i}.png'; Image.new('L', (8, 8), 40 * i).save(f); fs.append(f)
    probs = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7], [.55, .45], [.1, .9]])
    return ClassificationInterpretation(probs, [0, 1, 1, 0, 1, 1], ['cat', 'dog'], fnames=fs)

def test_plot_functions_leave_no_figure_in_pyplot(tmp_path):
    interp, img = _interp(tmp_path), Image.new('RGB', (40, 30), (200, 30, 30))
    calls = {'plot_confusion_matrix': interp.plot_confusion_matrix, 'plot_top_losses': lambda: interp.plot_top_losses(4),
             'plot_confused_pairs': lambda: interp.plot_confused_pairs(k=1, n=2),
             'plot_schedule': lambda: plot_schedule(1e-2, 3, cycle_len=1, cycle_mult=2, n_batches=10, verbose=False),
             'show_augs': lambda: show_augs(img, tfms_from_model('efficientnet_lite0', 32, transforms_side_on), n=3, seed=0),
             'exercise plot': ex_lr.q1.plot}
    plt.close('all')
    for name, f in calls.items():
        fig = f()
        assert isinstance(fig, matplotlib.figure.Figure), name
        assert plt.get_fignums() == [], f'{name} left its figure in pyplot (Jupyter would show it twice)'
        fig.canvas.draw()                           # and it still draws

def test_a_plot_shows_once_in_jupyter(tmp_path):
    "In a real kernel with the inline backend: `f()` shows one image, `fig = f()` none until `fig` is shown."
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in (
        "import numpy as np\nfrom lessonlib.interpret import ClassificationInterpretation\n"
        "interp = ClassificationInterpretation(np.array([[.9, .1], [.2, .8], [.6, .4]]), [0, 1, 1], ['a', 'b'])",
        "interp.plot_confusion_matrix()",
        "fig = interp.plot_confusion_matrix()",
        "fig")]
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}   # let the kernel pick Jupyter's inline backend
    old = os.environ.pop('MPLBACKEND', None)
    try: NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    finally:
        if old is not None: os.environ['MPLBACKEND'] = old
    images = [sum('image/png' in o.get('data', {}) for o in c.outputs) for c in nb.cells]
    assert images == [0, 1, 0, 1]
