"""ONNX swappers end to end with small models built here to the real contracts (.dfm, inswapper, ArcFace).

Real ONNX Runtime sessions run them; the tests check the pixels that come back (channel order, morph
value, masks, batching, the inswapper latent) and that a wrong-contract model is refused clearly.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facecomp.effect import FrameContext
from facecomp.errors import ModelError, SettingsError
from facecomp.swap import blend, geometry, providers
from facecomp.swap.onnx_swappers import ArcFace, DfmSwapper, InswapperSwapper, open_model
from facecomp.swap.processor import BlendSettings, FaceSwapProcessor

from test_swap_support import FixedFaces, as_dtype, face_at, textured

OPSET = [helper.make_opsetid("", 13)]
WEIGHTS_BGR = np.array([0.2, 0.5, 1.0], np.float32)  # the .dfm test model scales B, G, R by these


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def make_dfm(path, size=64, batch="N", morph=True, left_mask_zero=False):
    """out_celeb_face = in_face * WEIGHTS_BGR * morph_value; masks are ones (or zero on the left half)."""
    inputs = [helper.make_tensor_value_info("in_face:0", TensorProto.FLOAT, [batch, size, size, 3])]
    nodes = []
    inits = [numpy_helper.from_array(WEIGHTS_BGR.reshape(1, 1, 1, 3), "w"),
             numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
             numpy_helper.from_array(np.ones((1,), np.float32), "one")]
    mask_const = np.ones((1, size, size, 1), np.float32)
    if left_mask_zero:
        mask_const[:, :, : size // 2] = 0
    inits.append(numpy_helper.from_array(mask_const, "mconst"))
    nodes.append(helper.make_node("Mul", ["in_face:0", "w"], ["weighted"]))
    if morph:
        inputs.append(helper.make_tensor_value_info("morph_value:0", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Mul", ["weighted", "morph_value:0"], ["out_celeb_face:0"]))
    else:
        nodes.append(helper.make_node("Identity", ["weighted"], ["out_celeb_face:0"]))
    nodes += [helper.make_node("ReduceMax", ["in_face:0"], ["m1"], axes=[3], keepdims=1),
              helper.make_node("Mul", ["m1", "zero"], ["m0"]),
              helper.make_node("Add", ["m0", "mconst"], ["out_celeb_face_mask:0"]),
              helper.make_node("Add", ["m0", "one"], ["out_face_mask:0"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, size, size, c])
               for n, c in (("out_face_mask:0", 1), ("out_celeb_face:0", 3), ("out_celeb_face_mask:0", 1))]
    return _save(helper.make_graph(nodes, "dfm_test", inputs, outputs, inits), path)


def make_arcface(path, seed=0):
    """[N,3,112,112] -> 14x14 average pool -> flatten -> MatMul -> [N,512]: colour-layout sensitive."""
    w = np.random.default_rng(seed).standard_normal((192, 512)).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[14, 14], strides=[14, 14]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w"], ["683"])]
    g = helper.make_graph(nodes, "arcface_test",
                          [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
                          [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
                          [numpy_helper.from_array(w, "w")])
    return _save(g, path)


def make_inswapper(path, seed=1):
    """output = 0.5 * target + (source @ v) (one scalar per face); emap (512x512) is the last initializer."""
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((512, 1)) * 0.05).astype(np.float32)
    emap = rng.standard_normal((512, 512)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["target", "half"], ["t"]),
             helper.make_node("MatMul", ["source", "v"], ["s"]),            # [N,1]
             helper.make_node("Reshape", ["s", "shape4"], ["s4"]),          # [N,1,1,1]
             helper.make_node("Add", ["t", "s4"], ["output"])]
    inits = [numpy_helper.from_array(np.array([0.5], np.float32), "half"), numpy_helper.from_array(v, "v"),
             numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "shape4"),
             numpy_helper.from_array(emap, "emap")]
    g = helper.make_graph(nodes, "inswapper_test",
                          [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
                           helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])], inits)
    return _save(g, path), v, emap


def make_wrong_nchw(path):
    g = helper.make_graph([helper.make_node("Identity", ["in_face:0"], ["out_celeb_face:0"])], "wrong",
                          [helper.make_tensor_value_info("in_face:0", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("out_celeb_face:0", TensorProto.FLOAT, [1, 3, 64, 64])])
    return _save(g, path)


def _centre_value(frame_before, frame_after, face):
    """Original and new RGB (float) at the face's nose, away from every mask edge."""
    lm = geometry.to_cv(face.landmarks)
    x, y = np.round(lm[5]).astype(int)  # a point on the nose bridge
    return blend.to_float(frame_before[y, x, :3]), blend.to_float(frame_after[y, x, :3])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dfm_swapper_runs_the_contract_bgr_nhwc_with_morph_value(tmp_path, dtype):
    path = make_dfm(tmp_path / "test.dfm")
    sw = DfmSwapper(path, morph_value=0.5)
    assert sw.contract.size == 64 and sw.contract.has_morph and not sw.contract.batch_fixed
    faces = [face_at(70, 80, 70, track=1), face_at(190, 85, 60, track=2)]
    frame = as_dtype(np.clip(textured(170, 260) * 0.6 + 0.3, 0, 1), dtype)
    proc = FaceSwapProcessor(sw, FixedFaces({0: faces}), BlendSettings(color="none"))
    res = proc.process(frame, FrameContext(0, 0.0, source=object()))
    assert res.replaced_tracks == (1, 2)
    for f in faces:
        before, after = _centre_value(frame, res.frame, f)
        # RGB = in_RGB * (R 1.0, G 0.5, B 0.2) * morph 0.5: proves BGR in, BGR out, and morph_value fed
        assert np.allclose(after, before * np.array([1.0, 0.5, 0.2]) * 0.5, atol=0.03)
    changed = np.any(res.frame != frame, axis=2)
    assert not changed[:, 120:140].any()  # nothing between the two faces
    assert sw.model_records()[0]["sha256"] == blend_sha(path)


def blend_sha(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_dfm_masks_limit_the_replacement_and_fixed_batch_runs_per_face(tmp_path):
    path = make_dfm(tmp_path / "fixed.dfm", batch=1, morph=False, left_mask_zero=True)
    sw = DfmSwapper(path)
    assert sw.contract.batch_fixed and not sw.contract.has_morph
    faces = [face_at(70, 80, 70, track=3), face_at(190, 85, 60, track=4)]
    frame = as_dtype(np.clip(textured(170, 260) * 0.6 + 0.3, 0, 1), np.uint8)
    patches = sw.swap(frame, faces)
    assert len(patches) == 2
    for p in patches:
        assert p.mask[:, :30].max() == 0 and p.mask[:, 34:].min() == 1  # celeb mask (left zero) x face mask
    proc = FaceSwapProcessor(sw, FixedFaces({0: faces}), BlendSettings(color="none"))
    out = proc.process(frame, FrameContext(0, 0.0, source=object())).frame
    lm = geometry.to_cv(faces[0].landmarks)
    lx, ly = np.round(lm[234]).astype(int) + [6, 0]    # image-left cheek: masked out by the model
    rx, ry = np.round(lm[454]).astype(int) - [12, 0]   # image-right cheek: replaced
    assert np.array_equal(out[ly, lx], frame[ly, lx])
    assert not np.array_equal(out[ry, rx], frame[ry, rx])


def test_wrong_contract_models_are_refused_with_an_explanation(tmp_path):
    with pytest.raises(ModelError) as e:
        DfmSwapper(make_wrong_nchw(tmp_path / "nchw.dfm"))
    msg = str(e.value)
    assert "NCHW" in msg and "out_celeb_face_mask:0" in msg and "nchw.dfm" in msg
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx"):
        open_model(tmp_path / "junk.onnx")
    with pytest.raises(ModelError, match="not found"):
        open_model(tmp_path / "missing.dfm")
    arc = make_arcface(tmp_path / "w600k_r50.onnx")
    with pytest.raises(ModelError, match="not an ArcFace"):
        ArcFace(make_dfm(tmp_path / "x.dfm"))
    with pytest.raises(ModelError, match="inswapper"):
        InswapperSwapper(make_dfm(tmp_path / "y.dfm"), ArcFace(arc), [(textured(10, 10), None)])
    ins, _, _ = make_inswapper(tmp_path / "inswapper_128.onnx")
    with pytest.raises(ModelError, match="--arcface"):
        open_model(ins)


def test_inswapper_latent_is_the_normalised_arcface_embedding_through_emap(tmp_path):
    arc_path = make_arcface(tmp_path / "w600k_r50.onnx")
    ins_path, v, emap = make_inswapper(tmp_path / "inswapper_128.onnx")
    src_img = as_dtype(textured(200, 200, seed=5), np.uint8)
    src_face = face_at(100, 100, 90)
    arc = ArcFace(arc_path)
    sw = open_model(ins_path, arcface=arc_path, sources=[(src_img, src_face.landmarks)])
    assert isinstance(sw, InswapperSwapper) and sw.size == 128
    emb = arc.embed(src_img, src_face.landmarks)
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    latent = emb @ emap
    latent /= np.linalg.norm(latent)
    assert np.allclose(sw.latent[0], latent, atol=1e-5)
    offset = float(latent @ v[:, 0])
    faces = [face_at(70, 80, 70, track=1), face_at(190, 85, 60, track=2)]
    frame = as_dtype(np.clip(textured(170, 260) * 0.5 + 0.2, 0, 1), np.uint16)
    res = FaceSwapProcessor(sw, FixedFaces({0: faces}), BlendSettings(color="none")).process(
        frame, FrameContext(0, 0.0, source=object()))
    assert res.replaced_tracks == (1, 2)
    for f in faces:
        before, after = _centre_value(frame, res.frame, f)
        assert np.allclose(after, np.clip(0.5 * before + offset, 0, 1), atol=0.03)
    recs = sw.model_records()
    assert [r["name"] for r in recs] == ["inswapper_128.onnx", "w600k_r50.onnx"]


def test_provider_selection_falls_back_with_a_logged_warning(caplog):
    assert providers.select("cpu") == ["CPUExecutionProvider"]
    have = providers.available()
    notes = []
    with caplog.at_level(logging.WARNING, logger="facecomp.swap"):
        chain = providers.select("tensorrt", notify=notes.append)
    assert chain[-1] == "CPUExecutionProvider" and all(p in have for p in chain)
    if "TensorrtExecutionProvider" not in have:
        assert notes and "TensorrtExecutionProvider" in notes[0] and "falling back" in caplog.text
    with pytest.raises(SettingsError):
        providers.select("opencl")


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-gpu with a CUDA device")
def test_dfm_on_cuda_with_io_binding_matches_cpu(tmp_path):
    path = make_dfm(tmp_path / "gpu.dfm")
    faces = [face_at(70, 80, 70, track=1), face_at(190, 85, 60, track=2)]
    frame = as_dtype(textured(170, 260), np.uint8)
    cpu = DfmSwapper(path, "cpu").swap(frame, faces)
    gpu_sw = DfmSwapper(path, "cuda")
    assert providers.on_gpu(gpu_sw.session)
    gpu = gpu_sw.swap(frame, faces)
    for a, b in zip(cpu, gpu):
        assert np.abs(a.face - b.face).max() < 1e-4


@pytest.mark.parametrize("kind", ["morph", "dfm"])
def test_faces_hanging_over_the_frame_edge(tmp_path, kind):
    from facecomp.swap.morph import MorphSource, MorphSwapper
    from test_swap_support import synthetic_landmarks

    if kind == "morph":
        sw = MorphSwapper([MorphSource.from_image(textured(200, 200), synthetic_landmarks(100, 100, 110))])
    else:
        sw = DfmSwapper(make_dfm(tmp_path / "edge.dfm"))
    faces = [face_at(10, 60, 80, track=1), face_at(150, 115, 70, track=2)]  # left edge, bottom-right corner
    frame = as_dtype(textured(130, 170), np.uint8)
    res = FaceSwapProcessor(sw, FixedFaces({0: faces}), BlendSettings()).process(
        frame, FrameContext(0, 0.0, source=object()))
    assert res.replaced_tracks == (1, 2)
    changed = np.any(res.frame != frame, axis=2)
    assert changed[:, :40].any() and changed[90:, 120:].any()
    assert not changed[:20, 60:110].any()  # the top middle, far from both faces
