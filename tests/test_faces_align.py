"""Alignment: similarity estimation and warps are sub-pixel exact, both ways."""

from __future__ import annotations

import numpy as np
import pytest

from facecomp.errors import SettingsError
from facecomp.faces import align
from facecomp.faces.geometry import apply, invert, warp


def _sim(angle, scale, tx, ty):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def test_estimate_recovers_exact_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    m = _sim(0.4, 1.7, 12.25, -3.5)
    est = align.estimate_similarity(src, apply(m, src))
    assert np.allclose(est, m, atol=1e-9)
    assert np.allclose(align.from_template(align.to_template(src, est), est), src, atol=1e-9)


def test_templates():
    p112, s112 = align.template("arcface112")
    p128, s128 = align.template("arcface128")
    assert (s112, s128) == (112, 128)
    assert np.allclose(p128 - p112, [[8, 0]] * 5)
    pf, sf = align.template("face", 256)
    assert sf == 256 and pf[:, 0].min() > 0.25 * 256 and pf[:, 0].max() < 0.75 * 256
    with pytest.raises(SettingsError):
        align.template("nope")
    with pytest.raises(SettingsError):
        align.estimate_similarity(np.zeros((5, 2)), np.zeros((5, 2)))


def _blob(h, w, cx, cy, sigma=3.0):
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres in continuous coordinates
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))


def _centroid(img):
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]] + 0.5
    return np.array([(img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()])


@pytest.mark.parametrize("name", ["arcface112", "arcface128", "face"])
def test_warp_to_template_is_subpixel_exact(name):
    """A blob at a known sub-pixel frame position lands exactly where the matrix maps that point."""
    rng = np.random.default_rng(1)
    dst, side = align.template(name)
    m_true = _sim(0.3, 0.8, 40.3, 17.9)
    frame_pts = apply(invert(m_true), dst)  # the five frame points that map onto the template
    m, side = align.matrix_to_template(frame_pts, name)
    assert np.allclose(m, m_true, atol=1e-9)
    p = frame_pts[2] + rng.uniform(-2, 2, 2)
    img = _blob(260, 260, *p, sigma=4.0).astype(np.float32)
    crop = warp(img, m, (side, side), interp=1)
    expect = apply(m, p[None])[0]
    assert np.linalg.norm(_centroid(crop) - expect) < 0.02


def test_roundtrip_back_to_frame():
    """Frame -> template -> frame returns the same pixels (interior, bilinear twice)."""
    yy, xx = np.mgrid[0:200, 0:220].astype(np.float32)
    img = (np.sin(xx / 9.0) + np.cos(yy / 7.0)).astype(np.float32)
    pts = np.array([[80.4, 90.2], [130.7, 88.9], [105.0, 115.3], [86.1, 140.0], [126.6, 139.2]])
    crop, m = align.align(img, pts, "face", 256)
    back = align.unalign(crop, m, (220, 200))
    roi = (slice(80, 130), slice(85, 130))
    assert np.abs(back[roi] - img[roi]).max() < 0.02


def test_five_points_from_mesh_order():
    lm = np.zeros((478, 2), np.float32)
    lm[468], lm[473] = (10, 20), (30, 20)
    lm[1], lm[61], lm[291] = (20, 30), (12, 40), (28, 40)
    p = align.five_points_from_mesh(lm)
    assert np.allclose(p, [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
