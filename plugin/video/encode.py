"""Encoder presets: what each output codec means in FFmpeg terms, and the defaults per container."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from ..errors import SettingsError
from .info import VideoInfo

# name -> (ffmpeg encoder, pixel formats by (bit depth, alpha), is image sequence codec)
CODECS: dict[str, dict] = {
    "h264": {"encoder": "libx264", "pix": {(8, False): "yuv420p", (10, False): "yuv420p10le"}},
    "h265": {"encoder": "libx265", "pix": {(8, False): "yuv420p", (10, False): "yuv420p10le"}},
    "prores": {"encoder": "prores_ks", "pix": {(10, False): "yuv422p10le"}, "profile": "3"},  # 422 HQ
    "prores4444": {"encoder": "prores_ks", "pix": {(10, False): "yuv444p10le", (10, True): "yuva444p10le"},
                   "profile": "4"},
    "qtrle": {"encoder": "qtrle", "pix": {(8, False): "rgb24", (8, True): "argb"}},
    "ffv1": {"encoder": "ffv1", "pix": {(8, False): "yuv444p", (8, True): "yuva444p", (16, False): "yuv444p16le"}},
    "png": {"encoder": "png", "pix": {(8, False): "rgb24", (8, True): "rgba", (16, False): "rgb48be",
                                      (16, True): "rgba64be"}, "sequence": True},
    "tiff": {"encoder": "tiff", "pix": {(8, False): "rgb24", (8, True): "rgba", (16, False): "rgb48le",
                                        (16, True): "rgba64le"}, "sequence": True},
}

CONTAINER_CODECS = {
    ".mp4": ("h264", "h265"),
    ".m4v": ("h264", "h265"),
    ".mov": ("h264", "h265", "prores", "prores4444", "qtrle"),
    ".mkv": ("h264", "h265", "ffv1", "prores", "prores4444"),
    ".png": ("png",),
    ".tif": ("tiff",),
    ".tiff": ("tiff",),
}


@dataclass(frozen=True)
class EncodeSettings:
    """How to encode. ``None`` fields take the per-codec default; ``options`` override anything."""

    codec: str | None = None  # h264 | h265 | prores | prores4444 | qtrle | ffv1 | png | tiff
    bit_depth: int | None = None  # 8, 10 or 16 (codec permitting); default follows the source
    crf: int | None = None
    preset: str | None = None
    alpha: bool | None = None  # keep alpha (default: when source and codec both have it)
    threads: int = 0  # 0: FFmpeg decides
    # encoder options as sorted (key, value) pairs: frozen and hashable; a mapping is accepted and converted
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        opts = self.options
        items = opts.items() if isinstance(opts, Mapping) else opts
        try:
            frozen = tuple(sorted({str(k): str(v) for k, v in items}.items()))
        except (TypeError, ValueError):
            raise SettingsError(f"encoder options must be KEY=VALUE pairs, got {opts!r}") from None
        object.__setattr__(self, "options", frozen)

    def to_dict(self) -> dict:
        return {"codec": self.codec, "bit_depth": self.bit_depth, "crf": self.crf, "preset": self.preset,
                "alpha": self.alpha, "options": dict(self.options)}


@dataclass(frozen=True)
class ResolvedEncode:
    codec: str
    encoder: str
    pix_fmt: str
    bit_depth: int
    alpha: bool
    options: dict
    sequence: bool
    notes: tuple[str, ...] = ()


def output_extension(path: str | Path) -> str:
    return Path(path).suffix.lower()


def resolve(settings: EncodeSettings, output: str | Path, info: VideoInfo) -> ResolvedEncode:
    """Fill in defaults for this output path and source, and check the combination makes sense."""
    ext = output_extension(output)
    notes: list[str] = []
    allowed = CONTAINER_CODECS.get(ext)
    if allowed is None:
        raise SettingsError(f"unsupported output extension {ext or '(none)'}", path=str(output),
                            hint="use .mp4, .mov, .mkv, or a sequence like frames/f_%05d.png or .tif")
    seq_ext = ext in (".png", ".tif", ".tiff")
    # an image name without a frame-number pattern is one still (a photo in, a photo out); the renderer
    # refuses it for a range of more than one frame
    codec = settings.codec
    if codec is None:
        if seq_ext:
            codec = allowed[0]
        elif ext == ".mov" and (info.has_alpha or settings.alpha):
            codec = "prores4444"
        elif ext == ".mov" and info.codec.startswith("prores"):
            codec = "prores"
        elif ext == ".mkv" and settings.alpha:
            codec = "ffv1"
        else:
            codec = "h264"
    if codec not in CODECS:
        raise SettingsError(f"unknown codec {codec!r}", hint=f"choose one of {', '.join(CODECS)}")
    if codec not in allowed:
        raise SettingsError(f"{ext} cannot hold {codec}", path=str(output),
                            hint=f"{ext} takes {', '.join(allowed)}")
    spec = CODECS[codec]
    depths = sorted({d for d, _ in spec["pix"]})
    want_depth = settings.bit_depth or (8 if info.bit_depth <= 8 else 16)
    depth = min((d for d in depths if d >= want_depth), default=depths[-1])
    if settings.bit_depth and settings.bit_depth not in depths:
        raise SettingsError(f"{codec} does not encode {settings.bit_depth}-bit",
                            hint=f"{codec} takes {', '.join(map(str, depths))}-bit")
    can_alpha = any(a for (d, a) in spec["pix"] if d == depth)
    alpha = settings.alpha if settings.alpha is not None else info.has_alpha
    if alpha and not can_alpha:
        if settings.alpha:
            with_alpha = sorted(d for (d, a) in spec["pix"] if a)
            if with_alpha:  # the codec has alpha, but not at this depth (FFV1 and qtrle: 8-bit only)
                raise SettingsError(f"{codec} carries alpha at {'/'.join(map(str, with_alpha))}-bit only, not "
                                    f"at the {depth}-bit this output takes",
                                    hint=f"add --bit-depth {with_alpha[-1]}, or keep {depth}-bit with png or "
                                         f"tiff (16-bit with alpha) or prores4444 (.mov, 10-bit with alpha)")
            raise SettingsError(f"{codec} cannot carry alpha",
                                hint="use prores4444 (.mov), qtrle (.mov), ffv1 (.mkv), png or tiff")
        notes.append(f"the source's alpha channel is dropped: {codec} has no alpha (use prores4444, png or tiff to keep it)")
        alpha = False
    pix = spec["pix"][(depth, alpha)]
    opts: dict[str, str] = {}
    if codec in ("h264", "h265"):
        opts["crf"] = str(settings.crf if settings.crf is not None else 18)
        opts["preset"] = settings.preset or "medium"
        if codec == "h265":
            opts["x265-params"] = "log-level=error"
    elif settings.crf is not None:
        raise SettingsError(f"--crf applies to h264/h265, not {codec}")
    if "profile" in spec:
        opts["profile"] = spec["profile"]
    opts.update(dict(settings.options))
    if codec == "h264":
        _pin_x264_cpu(opts)
    resolved = ResolvedEncode(codec=codec, encoder=spec["encoder"], pix_fmt=pix, bit_depth=depth, alpha=alpha,
                              options=opts, sequence=bool(spec.get("sequence")), notes=tuple(notes))
    check_encoder(resolved)  # before any work: a value the encoder would clamp or ignore is refused here
    return resolved


X264_CPU_AVX512 = 1 << 16  # x264.h: AVX-512 {F, CD, BW, DQ, VL}


def _x264_library() -> str | None:
    """The libx264 this process uses: the one loaded (after ``import av``), else the one in PyAV's wheel."""
    import glob

    import av

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if "libx264" in Path(path).name:
                    return path
    except OSError:
        pass
    base = Path(av.__file__).parent
    for pattern in ("../av.libs/libx264*", "../av.libs/x264*", ".dylibs/libx264*"):
        hits = sorted(glob.glob(str(base / pattern)))
        if hits:
            return hits[0]
    return None


@functools.lru_cache(maxsize=1)
def x264_cpu_without_avx512() -> int | None:
    """The CPU flags libx264 detects here less AVX-512, or None when it detects no AVX-512 (or is not found).

    Why: libx264's AVX-512 code (the one in PyAV 18's wheels, core 165) reads memory it never wrote, so
    the same frames now and then give another bitstream: 8 of 40 renders of one clip differed although
    the frames handed to the encoder were identical in all 40, and with glibc's ``MALLOC_PERTURB_`` the
    bitstream follows the fill byte (it stops with mbtree or B-frames off). Without AVX-512 (its AVX2
    code) 40 of 40 renders were identical and the fill byte changed nothing. Only a bit is cleared, so no
    instruction the CPU lacks is ever enabled.
    """
    import ctypes

    path = _x264_library()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        detect = lib.x264_cpu_detect
    except (OSError, AttributeError):
        return None
    detect.restype = ctypes.c_uint32
    detect.argtypes = []
    flags = int(detect())
    return flags & ~X264_CPU_AVX512 if flags & X264_CPU_AVX512 else None


def _pin_x264_cpu(opts: dict[str, str]) -> None:
    """Add ``asm=`` (this CPU's flags less AVX-512, see :func:`x264_cpu_without_avx512`) to
    ``x264-params``, so a render is bit-identical from run to run; an ``asm``/``no-asm`` given stands."""
    params = opts.get("x264-params", "")
    keys = {item.partition("=")[0].strip() for item in params.split(":") if item.strip()}
    if keys & {"asm", "no-asm"}:
        return
    flags = x264_cpu_without_avx512()
    if flags is not None:
        opts["x264-params"] = ":".join(filter(None, [params, f"asm={flags}"]))


X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


def _number(key: str, value: str, lo: float, hi: float, what: str) -> None:
    try:
        v = float(value)
    except ValueError:
        raise SettingsError(f"{key}={value!r} is not a number", hint=what) from None
    if not lo <= v <= hi:
        raise SettingsError(f"{key} {value} is out of range: the encoder takes {lo:g} to {hi:g}", hint=what)


def check_encoder(enc: ResolvedEncode) -> None:
    """Refuse encoder settings the encoder would not honour, with a :class:`SettingsError` naming the key.

    Two checks. Ranges the encoders clamp silently (libx264 takes ``crf=99`` and encodes at 51, which
    leaves a file whose watermark does not decode): crf and qp, also inside ``x264-params`` /
    ``x265-params``, and the preset name. Then the encoder is opened once on a 64x64 frame with every
    option: an option FFmpeg does not know for it, or a value it rejects, is an error now, not a
    warning in the log of a finished render.
    """
    if enc.codec in ("h264", "h265"):
        qp_max = 51 if enc.bit_depth <= 8 else 63
        useful = "18 (the default) to 28 keep detail and the watermark"
        params = {}
        for key in ("x264-params", "x265-params"):
            for item in filter(None, enc.options.get(key, "").split(":")):
                k, _, v = item.partition("=")
                params[k.strip()] = (f"{key} {k.strip()}", v.strip())
        for key, (name, value) in [(k, (k, enc.options[k])) for k in ("crf", "qp") if k in enc.options] + \
                [(k, params[k]) for k in ("crf", "qp") if k in params]:
            _number(name, value, 0, 51 if key == "crf" else qp_max, f"--crf takes 0 to 51; {useful}")
        preset = enc.options.get("preset")
        if preset is not None and preset not in X26X_PRESETS:
            raise SettingsError(f"unknown preset {preset!r} for {enc.encoder}", hint=f"choose one of {', '.join(X26X_PRESETS)}")
    _trial_open(enc)


def _trial_open(enc: ResolvedEncode) -> None:
    from fractions import Fraction

    import av

    try:
        cc = av.CodecContext.create(enc.encoder, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise SettingsError(f"this FFmpeg has no {enc.encoder} encoder ({exc})",
                            hint="install an FFmpeg/PyAV build with it, or choose another --codec") from exc
    cc.width = cc.height = 64
    cc.pix_fmt = enc.pix_fmt
    cc.time_base = Fraction(1, 25)
    cc.framerate = Fraction(25)
    cc.options = dict(enc.options)
    try:
        cc.open()
    except (av.FFmpegError, OverflowError, ValueError) as exc:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(enc.options.items()))
        raise SettingsError(f"{enc.encoder} refuses these options ({shown})",
                            hint="check each --encoder-option / --crf / --preset value") from exc
    unknown = sorted(dict(cc.options))
    if unknown:
        raise SettingsError(f"{enc.encoder} has no option {', '.join(map(repr, unknown))}",
                            hint="see `ffmpeg -h encoder=" + enc.encoder + "` for its options")


def with_codec(settings: EncodeSettings, codec: str) -> EncodeSettings:
    return replace(settings, codec=codec)
