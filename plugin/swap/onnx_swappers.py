"""Swappers that run the model formats the field already uses: DeepFaceLab/DeepFaceLive ``.dfm`` and
insightface's ``inswapper_128`` (with the user's ArcFace ``w600k_r50.onnx`` for the source identity).

Both are user-supplied files, loaded only as ONNX (protobuf; nothing is unpickled). Their contract
(input/output names, ranks, sizes, channel layout) is checked on load, and a mismatch is a
:class:`ModelError` that says what was expected, what the file has, and what to do. All faces of a frame
go through the model in one call when the model's batch dimension allows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import ModelError, SettingsError
from . import geometry, providers
from .blend import to_float
from .types import FaceLike, SwapPatch
from ..hashing import sha256_file

DFM_INPUT, DFM_MORPH = "in_face:0", "morph_value:0"
DFM_OUTPUTS = ("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0")


def _check_file(path: str | os.PathLike, what: str) -> str:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ModelError(f"{what} not found", path=p, hint="these models are user-supplied: check the path")
    return p


def _describe(args) -> str:
    return ", ".join(f"{a.name} {a.type} {list(a.shape)}" for a in args) or "none"


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def aligned_crop(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The frame warped by ``m`` (frame -> aligned) into a float32 (size, size, 3) RGB square.

    Only the frame region under the square is converted to float, so a 4K frame costs what its face does.
    """
    inv = geometry.invert(m)
    corners = geometry.apply(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    H, W = frame.shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 2, 0, W - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 2, 0, H - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 2, x0 + 1, W))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 2, y0 + 1, H))
    crop = to_float(frame[y0:y1, x0:x1, :3])
    mc = m.astype(np.float64).copy()
    mc[:, 2] += mc[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.warpAffine(crop, mc, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _aligned_batch(frame: np.ndarray, faces: Sequence[FaceLike], template: np.ndarray, size: int
                   ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per face: the similarity to the model's template, the aligned crop, and the landmarks in it."""
    ms, targets, lms = [], [], []
    for f in faces:
        lm = geometry.to_cv(np.asarray(f.landmarks, np.float32))
        m = geometry.similarity(geometry.five_points(lm), template)
        ms.append(m)
        targets.append(aligned_crop(frame, m, size))
        lms.append(geometry.apply(m, lm[:468, :2]))
    return ms, targets, lms

class _OnnxBase:
    target_interiors = False

    def __init__(self, path: str | os.PathLike, provider: str, notify: Callable[[str], None] | None,
                 session=None):
        self.path = _check_file(path, f"{self.kind} model")
        self.provider = provider
        self.session = session if session is not None else providers.make_session(self.path, provider, notify)
        self.sha256 = sha256_file(self.path)

    kind = "onnx"

    def _run_batched(self, batch_fixed: bool, feeds_for: Callable[[slice], dict], outputs: list[str], n: int
                     ) -> list[np.ndarray]:
        """One call for all faces, or one per face when the model's batch dimension is fixed at 1."""
        if not batch_fixed or n == 1:
            return providers.run(self.session, outputs, feeds_for(slice(0, n)))
        parts = [providers.run(self.session, outputs, feeds_for(slice(i, i + 1))) for i in range(n)]
        return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(outputs))]

    def model_records(self) -> list[dict]:
        return [{"name": os.path.basename(self.path), "version": self.kind, "sha256": self.sha256,
                 "licence": "user-supplied"}]


@dataclass(frozen=True)
class DfmContract:
    size: int
    batch_fixed: bool
    has_morph: bool


def check_dfm(session, path: str) -> DfmContract:
    """Validate the DeepFaceLab/DeepFaceLive .dfm contract; explain every mismatch."""
    ins = {a.name: a for a in session.get_inputs()}
    outs = {a.name: a for a in session.get_outputs()}
    expected = (f"expected input {DFM_INPUT} float32 [N, H, W, 3] (NHWC, 0..1, H == W), optional "
                f"{DFM_MORPH} float32 [1], outputs {', '.join(DFM_OUTPUTS)}")
    problems = []
    inp = ins.get(DFM_INPUT)
    size = 0
    batch_fixed = False
    if inp is None:
        problems.append(f"no input named {DFM_INPUT}")
    else:
        shape = list(inp.shape)
        if inp.type != "tensor(float)":
            problems.append(f"{DFM_INPUT} is {inp.type}, not float32")
        if len(shape) != 4:
            problems.append(f"{DFM_INPUT} has rank {len(shape)}, not 4 (NHWC)")
        else:
            h, w, c = _static(shape[1]), _static(shape[2]), _static(shape[3])
            if c != 3:
                hint = " (it looks NCHW: .dfm models are NHWC)" if _static(shape[1]) == 3 else ""
                problems.append(f"{DFM_INPUT} last dimension is {shape[3]}, not 3 channels{hint}")
            elif h is None or w is None or h != w:
                problems.append(f"{DFM_INPUT} needs a fixed square resolution, has {shape[1]}x{shape[2]}")
            else:
                size = h
            batch_fixed = _static(shape[0]) == 1
    extra = sorted(set(ins) - {DFM_INPUT, DFM_MORPH})
    if extra:
        problems.append(f"unexpected input(s) {', '.join(extra)}")
    missing = [o for o in DFM_OUTPUTS if o not in outs]
    if missing:
        problems.append(f"missing output(s) {', '.join(missing)}")
    if problems:
        raise ModelError(f"not a DeepFaceLab/DeepFaceLive .dfm model: {'; '.join(problems)}. It has inputs "
                         f"{_describe(session.get_inputs())} and outputs {_describe(session.get_outputs())}",
                         path=path, hint=expected)
    return DfmContract(size, batch_fixed, DFM_MORPH in ins)


class DfmSwapper(_OnnxBase):
    """A DeepFaceLab/DeepFaceLive .dfm model: the identity is baked into the model; no source photo needed.

    The face is aligned to the faces package's whole-face template at the model's resolution and fed as BGR NHWC 0..1 (the
    layout DeepFaceLab trains on); the model's two masks are combined by minimum.
    """

    name = "dfm"
    kind = "dfm"

    def __init__(self, path: str | os.PathLike, provider: str = "cpu", morph_value: float = 0.75,
                 notify: Callable[[str], None] | None = None, session=None):
        if not 0.0 <= morph_value <= 1.0:
            raise SettingsError(f"dfm morph value must be in 0..1, got {morph_value}")
        super().__init__(path, provider, notify, session)
        self.contract = check_dfm(self.session, self.path)
        self.morph_value = morph_value
        self.template = geometry.whole_face_template(self.contract.size)

    def swap(self, frame: np.ndarray, faces: Sequence[FaceLike]) -> list[SwapPatch]:
        if not faces:
            return []
        s = self.contract.size
        ms, targets, lms = _aligned_batch(frame, faces, self.template, s)
        batch = np.ascontiguousarray(np.stack(targets)[..., ::-1])  # RGB -> BGR, NHWC

        def feeds(sl: slice) -> dict:
            d = {DFM_INPUT: batch[sl]}
            if self.contract.has_morph:
                d[DFM_MORPH] = np.array([self.morph_value], np.float32)
            return d

        face_mask, celeb, celeb_mask = self._run_batched(self.contract.batch_fixed, feeds, list(DFM_OUTPUTS), len(faces))
        out = []
        for i, f in enumerate(faces):
            img = np.asarray(celeb[i], np.float32)[..., ::-1]
            mask = np.minimum(_mask2d(face_mask[i]), _mask2d(celeb_mask[i]))
            img, mask = _to_size(img, s), _to_size(mask, s)
            out.append(SwapPatch(np.clip(img, 0, 1), np.clip(mask, 0, 1), targets[i], lms[i],
                                 geometry.invert(ms[i]), getattr(f, "track_id", None)))
        return out

    def settings_dict(self) -> dict:
        return {"swapper": "dfm", "model": os.path.basename(self.path), "size": self.contract.size,
                "morph_value": self.morph_value if self.contract.has_morph else None,"template": "face",
                "provider": self.session.get_providers()[0]}


def _mask2d(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float32)
    return m[..., 0] if m.ndim == 3 else m


def _to_size(img: np.ndarray, s: int) -> np.ndarray:
    if img.shape[0] == s and img.shape[1] == s:
        return np.ascontiguousarray(img)
    return cv2.resize(np.ascontiguousarray(img), (s, s), interpolation=cv2.INTER_LINEAR)


class ArcFace:
    """The user's ArcFace recogniser (insightface ``w600k_r50.onnx``): RGB 112x112 aligned crops, (x - 127.5) / 127.5."""

    def __init__(self, path: str | os.PathLike, provider: str = "cpu", notify: Callable[[str], None] | None = None):
        self.path = _check_file(path, "ArcFace model")
        self.session = providers.make_session(self.path, provider, notify)
        self.sha256 = sha256_file(self.path)
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        problems = []
        if len(ins) != 1:
            problems.append(f"{len(ins)} inputs, not 1")
        shape = list(ins[0].shape) if ins else []
        if len(shape) != 4 or _static(shape[1]) != 3 or _static(shape[2]) is None or shape[2] != shape[3]:
            problems.append(f"input shape {shape}, not [N, 3, S, S]")
        if not outs or len(outs[0].shape) != 2 or _static(outs[0].shape[1]) is None:
            problems.append(f"output {_describe(outs)}, not [N, D]")
        if problems:
            raise ModelError(f"not an ArcFace recogniser: {'; '.join(problems)}", path=self.path,
                             hint="pass insightface's w600k_r50.onnx (input [1,3,112,112], output [1,512]) to --arcface")
        self.input = ins[0].name
        self.size = int(shape[2])
        self.dim = int(outs[0].shape[1])
        self.batch_fixed = _static(shape[0]) == 1

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """L2-normalised embedding of one face of an image (any supported dtype); landmarks in the faces
        package's convention (pixel centres at +0.5)."""
        m = geometry.similarity(geometry.five_points(geometry.to_cv(np.asarray(landmarks, np.float32))),
                                geometry.arcface_template(self.size))
        crop = aligned_crop(rgb, m, self.size)
        x = ((crop * 255.0 - 127.5) / 127.5).transpose(2, 0, 1)[None].astype(np.float32)
        emb = providers.run(self.session, [self.session.get_outputs()[0].name], {self.input: x})[0][0]
        return (emb / max(float(np.linalg.norm(emb)), 1e-12)).astype(np.float32)

    def model_record(self) -> dict:
        return {"name": os.path.basename(self.path), "version": "arcface", "sha256": self.sha256,
                "licence": "user-supplied"}


def read_emap(path: str) -> np.ndarray:
    """The inswapper's identity map: the graph's last initializer, read with the onnx package (no pickle)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is in the 'onnx' extra
        raise ModelError("reading inswapper's emap needs the onnx package", path=path,
                         hint="pip install 'facecomp[onnx]'") from exc
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelError(f"cannot parse the ONNX file ({exc})", path=path) from exc
    if not model.graph.initializer:
        raise ModelError("the model has no initializers, so no emap", path=path,
                         hint="inswapper_128.onnx keeps its 512x512 emap as the graph's last initializer")
    return numpy_helper.to_array(model.graph.initializer[-1]).astype(np.float32)


class InswapperSwapper(_OnnxBase):
    """insightface's inswapper_128: target (N,3,128,128) RGB 0..1 + source latent (N,512) -> swapped face.

    latent = L2-normalise(ArcFace(source) @ emap). Several source photos: their normalised embeddings are
    averaged (they share one identity).
    """

    name = "inswapper"
    kind = "inswapper"

    def __init__(self, path: str | os.PathLike, arcface: ArcFace, sources: Sequence[tuple[np.ndarray, np.ndarray]],
                 provider: str = "cpu", notify: Callable[[str], None] | None = None, session=None):
        super().__init__(path, provider, notify, session)
        ins = {a.name: a for a in self.session.get_inputs()}
        outs = self.session.get_outputs()
        problems = []
        t, s = ins.get("target"), ins.get("source")
        if t is None or len(t.shape) != 4 or _static(t.shape[1]) != 3 or _static(t.shape[2]) is None \
                or t.shape[2] != t.shape[3]:
            problems.append(f"input 'target' must be float32 [N, 3, S, S], found {_describe([t]) if t else 'none'}")
        if s is None or len(s.shape) != 2 or _static(s.shape[1]) is None:
            problems.append(f"input 'source' must be float32 [N, D], found {_describe([s]) if s else 'none'}")
        if len(outs) != 1 or len(outs[0].shape) != 4:
            problems.append(f"one output [N, 3, S, S] expected, found {_describe(outs)}")
        if problems:
            raise ModelError(f"not an inswapper model: {'; '.join(problems)}", path=self.path,
                             hint="pass insightface's inswapper_128.onnx to --model")
        self.size = int(t.shape[2])
        self.latent_dim = int(s.shape[1])
        self.batch_fixed = _static(t.shape[0]) == 1 or _static(s.shape[0]) == 1
        self.emap = read_emap(self.path)
        if self.emap.shape != (arcface.dim, self.latent_dim):
            raise ModelError(f"emap shape {self.emap.shape} does not join ArcFace's {arcface.dim}-d embedding to the "
                             f"model's {self.latent_dim}-d source input", path=self.path,
                             hint="inswapper_128 needs w600k_r50.onnx (512-d) as --arcface")
        if not sources:
            raise SettingsError("inswapper needs at least one source photo", hint="pass --source PHOTO")
        self.arcface = arcface
        embs = np.stack([arcface.embed(img, lm) for img, lm in sources])
        mean = embs.mean(axis=0)
        latent = (mean / max(float(np.linalg.norm(mean)), 1e-12)) @ self.emap
        self.latent = (latent / max(float(np.linalg.norm(latent)), 1e-12)).astype(np.float32)[None]
        self.template = geometry.arcface_template(self.size)
        self.out_name = outs[0].name

    def swap(self, frame: np.ndarray, faces: Sequence[FaceLike]) -> list[SwapPatch]:
        if not faces:
            return []
        s = self.size
        ms, targets, lms = _aligned_batch(frame, faces, self.template, s)
        batch = np.ascontiguousarray(np.stack(targets).transpose(0, 3, 1, 2))
        latent = np.repeat(self.latent, len(faces), axis=0)

        def feeds(sl: slice) -> dict:
            return {"target": batch[sl], "source": latent[sl]}

        (pred,) = self._run_batched(self.batch_fixed, feeds, [self.out_name], len(faces))
        out = []
        for i, f in enumerate(faces):
            img = _to_size(np.asarray(pred[i], np.float32).transpose(1, 2, 0), s)
            out.append(SwapPatch(np.clip(img, 0, 1), np.ones((s, s), np.float32), targets[i], lms[i],
                                 geometry.invert(ms[i]), getattr(f, "track_id", None)))
        return out

    def model_records(self) -> list[dict]:
        return super().model_records() + [self.arcface.model_record()]

    def settings_dict(self) -> dict:
        return {"swapper": "inswapper", "model": os.path.basename(self.path), "size": self.size,
                "arcface": os.path.basename(self.arcface.path), "provider": self.session.get_providers()[0]}


def open_model(path: str | os.PathLike, *, arcface: str | os.PathLike | None = None,
               sources: Sequence[tuple[np.ndarray, np.ndarray]] = (), provider: str = "cpu",
               notify: Callable[[str], None] | None = None, dfm_morph: float = 0.75):
    """Open a user model by its contract: a .dfm (in_face:0) or an inswapper (target + source)."""
    p = _check_file(path, "model")
    session = providers.make_session(p, provider, notify)
    names = {a.name for a in session.get_inputs()}
    if DFM_INPUT in names or p.lower().endswith(".dfm"):
        return DfmSwapper(p, provider, morph_value=dfm_morph, session=session)
    if {"target", "source"} <= names:
        if arcface is None:
            raise ModelError("an inswapper model needs the ArcFace recogniser for the source identity", path=p,
                             hint="pass --arcface w600k_r50.onnx (insightface's buffalo_l recogniser)")
        return InswapperSwapper(p, ArcFace(arcface, provider, notify), sources, provider, session=session)
    raise ModelError(f"unknown model contract: inputs {sorted(names)}", path=p,
                     hint=f"supported: .dfm ({DFM_INPUT} -> {', '.join(DFM_OUTPUTS)}) and inswapper_128 "
                          "(target [1,3,128,128] + source [1,512])")
