import subprocess
import sys

import numpy as np
import pytest

plt = pytest.importorskip("matplotlib.pyplot", reason="iba.plot needs the plot extra")


def test_explanation_and_grid_figures(tmp_path):
    import iba.plot

    image = np.random.default_rng(0).random((16, 12, 3))
    heat = np.zeros((16, 12))
    heat[4:8, 2:6] = 2.0
    fig = iba.plot.explanation(image, heat, title="test")
    assert len(fig.axes) == 3  # photo, overlay, colour bar
    assert fig.axes[2].get_ylabel() == "bits"
    fig.savefig(tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 1000
    fig = iba.plot.grid([image, image[..., 0]], [heat, heat], titles=["a", "b"], columns=1)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]
    with pytest.raises(ValueError, match=r"heatmap of shape \(3, 3\) does not match image"):
        iba.plot.explanation(image, np.zeros((3, 3)))
    plt.close("all")


def test_importing_iba_does_not_load_matplotlib():
    code = "import sys, iba; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
