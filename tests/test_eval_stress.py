"""tools/eval_stress.py: each condition changes image and labels alike, and the run scores them end to end."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from .helpers import load_tool


@pytest.fixture(scope="module")
def st():
    load_tool("eval_sets")
    return load_tool("eval_stress")


LIA = np.array([[-1.0, 0, 0, 32], [0, 0, 1, -32], [0, -1, 0, 128], [0, 0, 0, 1]])  # LIA, as FreeSurfer conforms


def _volume():
    """A 1 mm LIA head: a bright ellipsoid with two 'hippocampi' (labels 53 / 17) low in it."""
    shape = (64, 64, 64)
    ijk = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    ras = ijk @ LIA[:3, :3].T + LIA[:3, 3]
    head = (((ras - [0, 0, 96]) / [28, 30, 26]) ** 2).sum(1) < 1
    image = np.where(head, 100.0, 0.0).reshape(shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.int16)
    for value, x in ((53, 12.0), (17, -12.0)):
        blob = (((ras - [x, 0, 86]) / [4, 8, 4]) ** 2).sum(1) < 1
        labels.reshape(-1)[blob] = value
    image[labels > 0] = 60.0
    return image, labels, LIA.copy()


def _centroid(mask, affine):
    return affine[:3, :3] @ np.argwhere(mask).mean(0) + affine[:3, 3]


def test_axis_along_finds_the_superior_axis_of_a_conformed_grid(st):
    assert st.axis_along(LIA, 2) == 1 and st.axis_along(LIA, 1) == 2 and st.axis_along(LIA, 0) == 0


def test_storage_order_and_pitch_keep_the_anatomy_in_world_space(st):
    image, labels, affine = _volume()
    values = (53, 17)
    im2, lab2, aff2 = st.CONDITIONS["storage_order"][0](image, labels, affine, values, 0)
    assert im2.shape == (64, 64, 64) and not np.array_equal(im2, image)
    for v in values:
        np.testing.assert_allclose(_centroid(lab2 == v, aff2), _centroid(labels == v, affine), atol=1e-6)
    assert (lab2 == 53).sum() == (labels == 53).sum()
    im3, lab3, aff3 = st.CONDITIONS["pitch_20"][0](image, labels, affine, values, 0)
    assert im3 is image and lab3 is labels
    r = aff3[:3, :3] @ np.linalg.inv(affine[:3, :3])
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)  # a rotation by 20 degrees about R
    assert np.isclose(np.linalg.det(r), 1.0) and np.isclose(np.degrees(np.arccos(r[1, 1])), 20.0)
    np.testing.assert_allclose(r[0], [1, 0, 0], atol=1e-12)


@pytest.mark.parametrize("condition, spacing", [("thick_axial_5mm", (1, 5, 1)), ("iso_3mm", (3, 3, 3))])
def test_coarse_grids_keep_the_field_of_view_and_the_label_volumes(st, condition, spacing):
    image, labels, affine = _volume()
    im2, lab2, aff2 = st.CONDITIONS[condition][0](image, labels, affine, (53, 17), 0)
    np.testing.assert_allclose(np.linalg.norm(aff2[:3, :3], axis=0), spacing, atol=1e-6)
    assert im2.shape == tuple(int(np.ceil(64 / s)) for s in spacing) and lab2.shape == im2.shape
    # The grid's outer corner stays where it was (same field of view, half a new voxel in).
    half = np.full(3, -0.5)
    np.testing.assert_allclose(aff2[:3, :3] @ half + aff2[:3, 3], affine[:3, :3] @ half + affine[:3, 3], atol=1e-6)
    for v in (53, 17):
        vol, vol2 = (labels == v).sum(), (lab2 == v).sum() * np.prod(spacing)
        assert 0.6 < vol2 / vol < 1.4
        np.testing.assert_allclose(_centroid(lab2 == v, aff2), _centroid(labels == v, affine), atol=1.5)
    assert im2[lab2 == 53].mean() < im2[(lab2 == 0) & (im2 > 50)].mean()  # still darker than its surroundings


def test_bias_noise_and_vertex_cut(st):
    image, labels, affine = _volume()
    gain = st.CONDITIONS["bias_field"][0](np.ones_like(image), labels, affine, (53, 17), 0)[0]
    assert gain.min() == pytest.approx(0.728, abs=0.002) and gain.max() == pytest.approx(np.exp(0.48), rel=1e-4)
    assert 0.75 < gain[image > 0].min() and gain[image > 0].max() < 1.25  # smooth: +-25 % over this head
    noisy = st.CONDITIONS["noise"][0](image, labels, affine, (53, 17), 1)[0]
    assert noisy.min() >= 0 and 2.0 < float(np.std(noisy[image == 100.0] - 100.0)) < 6.0
    im2, lab2, aff2 = st.CONDITIONS["vertex_cut"][0](image, labels, affine, (53, 17), 0)
    top = [max(_c[2] for _c in (a[:3, :3] @ np.argwhere(i > 50).T).T + a[:3, 3]) for i, a in
           ((image, affine), (im2, aff2))]
    assert top[0] - top[1] == pytest.approx(0.2 * 52, abs=1.5)  # a fifth of the head's 52 mm height
    for v in (53, 17):
        assert (lab2 == v).sum() == (labels == v).sum()
        np.testing.assert_allclose(_centroid(lab2 == v, aff2), _centroid(labels == v, affine), atol=1e-6)


def test_stress_run_scores_a_shared_case_under_two_conditions(st, shared_data, tmp_path):
    raw = st.run(["--data", str(shared_data), "--sets", "ixi_nichart", "--limit", "1", "--model", "ann",
                  "--conditions", "none", "storage_order", "--out", str(tmp_path)])
    assert set(raw["runs"]) == {"none", "storage_order"}
    base, moved = (next(iter(raw["runs"][c].values())) for c in ("none", "storage_order"))
    for side in ("right", "left"):
        assert base[side]["dice"] > 0.6 and abs(moved[side]["dice"] - base[side]["dice"]) < 0.03
        assert moved[side]["coverage"] >= 0.95
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert [r["condition"] for r in rows] == ["none", "storage_order"] and float(rows[0]["dice_change_mean"]) == 0
    change = np.mean([moved[s]["dice"] - base[s]["dice"] for s in ("right", "left")])
    assert float(rows[1]["dice_change_mean"]) == pytest.approx(change, abs=1e-3)
    assert (tmp_path / "stress_eval.png").stat().st_size > 10_000
    # --report rewrites tables and figure from raw.json without running anything; --before draws a run behind
    (tmp_path / "stress_eval.png").unlink()
    again = st.run(["--out", str(tmp_path), "--report", "--before", str(tmp_path / "raw.json")])
    assert again["runs"] == raw["runs"] and (tmp_path / "stress_eval.png").stat().st_size > 10_000
