"""The visible disclosure label: "SYNTHETIC · AI-altered" in white on a near-black box.

Why this module is strict: the label is the one disclosure a viewer sees without tools, so every
setting that could make it unreadable (smaller than the minimum cap height, faint, off-frame, empty,
missing the words "SYNTHETIC" and "AI") is refused with :class:`~facecomp.errors.DisclosureError`.
Users may only make it larger or move it to another corner.

Why it is fast: the label is stamped on every frame of 1080p/4K video. The text coverage mask and
box are rendered ONCE per frame size (a :class:`_Sprite`, cached per :class:`Label`), and each frame
costs one alpha blend over the box region only. Pixels outside the box are never touched.

Sizing rule: the cap height (height of the rendered capital "H", measured on pixels, not the font
size) is at least ``MIN_CAP_FRACTION`` of the frame's shorter side and never under ``MIN_CAP_PX``.
Text that is too wide wraps at " · " separators, then at spaces; it is never shrunk below the
minimum. A frame too small to carry a legible label raises DisclosureError naming the frame size.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from facecomp.errors import DisclosureError

__all__ = [
    "CORNERS",
    "DEFAULT_TEXT",
    "MAX_MARGIN",
    "MAX_SCALE",
    "MIN_CAP_FRACTION",
    "MIN_CAP_PX",
    "MIN_MARGIN",
    "MIN_OPACITY",
    "PACKAGED_FONT",
    "CJK_PIP_PACKAGE",
    "CJK_APT_PACKAGES",
    "FontChoice",
    "Label",
    "LabelLayout",
    "LabelSettings",
    "find_cjk_font",
    "latin_font",
]

MIN_CAP_FRACTION = 0.05
MIN_CAP_PX = 12
MIN_OPACITY = 0.85
MIN_MARGIN = 0.025
MAX_MARGIN = 0.20
MAX_SCALE = 4.0
MAX_TEXT_CHARS = 80
DEFAULT_TEXT = "SYNTHETIC · AI-altered"
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")

#: where a CJK font comes from: ``pip install facecomp[cjk]`` installs this wheel (WenQuanYi Micro Hei)
CJK_PIP_PACKAGE = "paperang-p2-fonts-cjk"
#: Debian/Ubuntu fallbacks, any one suffices
CJK_APT_PACKAGES = ("fonts-wqy-microhei", "fonts-noto-cjk", "fonts-wqy-zenhei")

# Levels in unit range. Neutral greys, so one coverage map serves RGB, grey and RGBA frames.
BOX_LEVEL = 16.0 / 255.0
TEXT_LEVEL = 1.0

# Box geometry in units of the cap height.
_PAD_X = 0.6
_PAD_Y = 0.5
_LINE_GAP = 0.4
_SEPARATOR = " · "

_WORD_SYNTHETIC = re.compile(r"(?<![A-Za-z])SYNTHETIC(?![A-Za-z])")
_WORD_AI = re.compile(r"(?<![A-Za-z])AI(?![A-Za-z])")
_HIDING_KEYS = {"enabled", "enable", "disabled", "disable", "visible", "hidden", "hide", "off", "none"}


# --------------------------------------------------------------------------------------------------
# settings


def _check_text(name: str, value: Any, *, require_words: bool) -> str:
    if not isinstance(value, str):
        raise DisclosureError(f"label {name} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise DisclosureError(f"label {name} is empty: the disclosure label cannot be blanked")
    if len(text) > MAX_TEXT_CHARS:
        raise DisclosureError(f"label {name} is {len(text)} characters; at most {MAX_TEXT_CHARS} stay legible")
    for ch in text:
        cat = unicodedata.category(ch)
        # control, format (zero-width, bidi overrides), private-use, surrogate, line/para separators
        if cat in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"):
            raise DisclosureError(
                f"label {name} contains an invisible or control character U+{ord(ch):04X}",
                hint="use plain visible text; line breaks are added automatically",
            )
    if require_words and not (_WORD_SYNTHETIC.search(text) and _WORD_AI.search(text)):
        raise DisclosureError(
            f"label text {text!r} must contain the words 'SYNTHETIC' and 'AI' (upper case)",
            hint=f"the default is {DEFAULT_TEXT!r}",
        )
    return text


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DisclosureError(f"label {name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise DisclosureError(f"label {name} must be finite, got {value!r}")
    return v


@dataclass(frozen=True)
class LabelSettings:
    """What the user may choose about the label. Validated on construction: nothing here can hide it."""

    text: str = DEFAULT_TEXT
    extra_line: str | None = None  # e.g. "AI合成" (GB 45438-2025); needs a CJK font
    corner: str = "top-left"
    scale: float = 1.0  # >= 1.0: enlarge only
    opacity: float = 0.92  # box opacity, >= MIN_OPACITY; the text itself is always opaque
    margin: float = 0.03  # fraction of the frame's shorter side, MIN_MARGIN..MAX_MARGIN

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", _check_text("text", self.text, require_words=True))
        if self.extra_line is not None:
            object.__setattr__(self, "extra_line", _check_text("extra_line", self.extra_line, require_words=False))
        if self.corner not in CORNERS:
            raise DisclosureError(f"label corner {self.corner!r} is not one of {', '.join(CORNERS)}")
        scale = _check_number("scale", self.scale)
        if scale < 1.0:
            raise DisclosureError(
                f"label scale {scale:g} would shrink the label below the legal minimum; only scale >= 1.0 is allowed"
            )
        if scale > MAX_SCALE:
            raise DisclosureError(f"label scale {scale:g} is above the maximum {MAX_SCALE:g}")
        opacity = _check_number("opacity", self.opacity)
        if not MIN_OPACITY <= opacity <= 1.0:
            raise DisclosureError(
                f"label opacity {opacity:g} is outside {MIN_OPACITY:g}..1.0: a fainter label is not readable"
            )
        margin = _check_number("margin", self.margin)
        if not MIN_MARGIN <= margin <= MAX_MARGIN:
            raise DisclosureError(
                f"label margin {margin:g} is outside the safe range {MIN_MARGIN:g}..{MAX_MARGIN:g} of the shorter side"
            )
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "opacity", opacity)
        object.__setattr__(self, "margin", margin)

    def to_dict(self) -> dict:
        """Plain JSON-able values, for the sidecar manifest."""
        return {
            "text": self.text,
            "extra_line": self.extra_line,
            "corner": self.corner,
            "scale": self.scale,
            "opacity": self.opacity,
            "margin": self.margin,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "LabelSettings":
        """Build from a manifest/config mapping. Unknown keys (``enabled: false`` …) are refused."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise DisclosureError(f"label settings must be a mapping, got {type(d).__name__}")
        known = {"text", "extra_line", "corner", "scale", "opacity", "margin"}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            hiding = [k for k in unknown if k.lower() in _HIDING_KEYS]
            if hiding:
                raise DisclosureError(f"label setting {hiding[0]!r} refused: the disclosure label cannot be disabled")
            raise DisclosureError(f"unknown label setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(d))


# --------------------------------------------------------------------------------------------------
# fonts


@dataclass(frozen=True)
class FontChoice:
    """A font file (or Pillow's built-in font when ``path`` is None) and how it was found."""

    name: str
    path: str | None
    index: int = 0
    source: str = "system"  # system | package | pillow | env
    embolden: float = 0.0  # stroke width as a fraction of the font size (for regular-weight fallbacks)


_RENDER_LOCK = threading.RLock()  # FreeType faces are not safe to share across threads


def _font_dirs() -> list[Path]:
    dirs = [Path(__file__).with_name("fonts")]
    for env in ("XDG_DATA_HOME",):
        if os.environ.get(env):
            dirs.append(Path(os.environ[env]) / "fonts")
    home = Path.home()
    dirs += [
        home / ".local/share/fonts",
        home / ".fonts",
        Path("/usr/share/fonts"),
        Path("/usr/local/share/fonts"),
        Path("/Library/Fonts"),
        Path("/System/Library/Fonts"),
        home / "Library/Fonts",
    ]
    windir = os.environ.get("WINDIR")
    if windir:
        dirs.append(Path(windir) / "Fonts")
    return [d for d in dirs if d.is_dir()]


@functools.lru_cache(maxsize=1)
def _font_index() -> dict[str, str]:
    """Lower-cased file name -> path, over the usual font folders (walked once per process)."""
    found: dict[str, str] = {}
    for root in _font_dirs():
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                if f.lower().endswith((".ttf", ".otf", ".ttc", ".otc")):
                    found.setdefault(f.lower(), os.path.join(dirpath, f))
    return found


@functools.lru_cache(maxsize=256)
def _load(choice: FontChoice, size: int) -> ImageFont.FreeTypeFont:
    if not features.check("freetype2"):
        raise DisclosureError("Pillow was built without FreeType; the label needs anti-aliased TrueType text",
                              hint="pip install --force-reinstall pillow")
    with _RENDER_LOCK:
        if choice.path is None:
            font = ImageFont.load_default(size=size)
            if not isinstance(font, ImageFont.FreeTypeFont):
                raise DisclosureError("Pillow's default font is a bitmap font here; install pillow>=10.1 with FreeType")
            return font
        return ImageFont.truetype(choice.path, size=size, index=choice.index, layout_engine=ImageFont.Layout.BASIC)


def _stroke(choice: FontChoice, size: int) -> int:
    return int(round(choice.embolden * size))


def _has_glyphs(choice: FontChoice, text: str) -> bool:
    """True when every visible character has a real glyph (not the .notdef box, not blank)."""
    font = _load(choice, 48)
    with _RENDER_LOCK:
        notdef = font.getmask("\uffff")
        nd_key = (notdef.size, bytes(notdef))
        for ch in set(text):
            if ch.isspace():
                continue
            m = font.getmask(ch)
            if m.size[0] == 0 or m.size[1] == 0 or not any(bytes(m)):
                return False
            if (m.size, bytes(m)) == nd_key:
                return False
    return True


#: the label font shipped inside the package (DejaVu Sans Bold 2.37, Bitstream Vera licence with public-domain
#: DejaVu changes; the licence text is ``fonts/DejaVu-LICENSE.txt``): the same settings draw the same label
#: pixels on every machine, which the render queue and Ray need (segments from different hosts are joined)
PACKAGED_FONT = Path(__file__).with_name("fonts") / "DejaVuSans-Bold.ttf"


@functools.lru_cache(maxsize=1)
def latin_font() -> FontChoice:
    """The packaged DejaVu Sans Bold; only if the package lost it, an installed bold sans, else Pillow's font."""
    if PACKAGED_FONT.is_file():
        choice = FontChoice(name=PACKAGED_FONT.stem, path=str(PACKAGED_FONT), source="package")
        if _has_glyphs(choice, DEFAULT_TEXT):
            return choice
    idx = {k: v for k, v in _font_index().items() if Path(v).parent != PACKAGED_FONT.parent}
    for fname in ("dejavusans-bold.ttf", "dejavusanscondensed-bold.ttf", "notosans-bold.ttf", "liberationsans-bold.ttf"):
        if fname in idx:
            choice = FontChoice(name=Path(idx[fname]).stem, path=idx[fname], source="system")
            try:
                if _has_glyphs(choice, DEFAULT_TEXT):
                    return choice
            except OSError:
                continue
    return FontChoice(name="Pillow built-in (Aileron)", path=None, source="pillow", embolden=0.025)


_CJK_PACKAGE_FILES = (
    # (import name, file inside it): PyPI wheels that carry a CJK font
    ("paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc"),
    ("pylopdf_fonts_zh_cn", "NotoSansSC-Regular.otf"),
    ("noto_cjk_sans_otc", "NotoSansCJK-Regular.ttc"),
)
_CJK_SYSTEM_FILES = (
    "wqy-microhei.ttc",
    "notosanscjk-bold.ttc",
    "notosanscjk-regular.ttc",
    "notosanscjksc-bold.otf",
    "notosanscjksc-regular.otf",
    "notosanssc-regular.otf",
    "notosanssc-bold.otf",
    "sourcehansanssc-regular.otf",
    "wqy-zenhei.ttc",
    "droidsansfallbackfull.ttf",
    "msyh.ttc",
    "pingfang.ttc",
)


def _package_file(module: str, rel: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)  # locates without importing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / rel
        if p.is_file():
            return str(p)
    return None


def _cjk_choice(path: str, source: str) -> FontChoice:
    # CJK fonts mostly ship in regular weight only; a light stroke matches the bold Latin line
    bold = "bold" in Path(path).name.lower() or "heavy" in Path(path).name.lower()
    return FontChoice(name=Path(path).stem, path=path, source=source, embolden=0.0 if bold else 0.03)


def _cjk_candidates() -> list[FontChoice]:
    out: list[FontChoice] = []
    env = os.environ.get("FACECOMP_CJK_FONT")
    if env and Path(env).is_file():
        out.append(_cjk_choice(env, "env"))
    for module, rel in _CJK_PACKAGE_FILES:
        p = _package_file(module, rel)
        if p:
            out.append(_cjk_choice(p, "package"))
    idx = _font_index()
    for fname in _CJK_SYSTEM_FILES:
        if fname in idx:
            out.append(_cjk_choice(idx[fname], "system"))
    return out


@functools.lru_cache(maxsize=32)
def find_cjk_font(text: str = "AI合成") -> FontChoice:
    """The first installed font with glyphs for every character of ``text``, or DisclosureError naming what to install."""
    for choice in _cjk_candidates():
        try:
            if _has_glyphs(choice, text):
                return choice
        except OSError:
            continue
    raise DisclosureError(
        f"no installed font has glyphs for the label line {text!r}",
        hint=f"pip install 'facecomp[cjk]' (installs {CJK_PIP_PACKAGE}), or apt-get install {CJK_APT_PACKAGES[0]}"
        f" (or {CJK_APT_PACKAGES[1]}), or set FACECOMP_CJK_FONT to a .ttf/.ttc/.otf file",
    )


def _font_for(text: str) -> FontChoice:
    latin = latin_font()
    if _has_glyphs(latin, text):
        return latin
    return find_cjk_font(text)


def _measure_cap(choice: FontChoice, size: int) -> int:
    """Cap height in pixels of the rendered "H": rows whose coverage reaches 50%."""
    font = _load(choice, size)
    stroke = _stroke(choice, size)
    with _RENDER_LOCK:
        l, t, r, b = font.getbbox("H", anchor="ls", stroke_width=stroke)
        img = Image.new("L", (r - l + 4, b - t + 4), 0)
        ImageDraw.Draw(img).text((2 - l, 2 - t), "H", font=font, fill=255, anchor="ls",
                                 stroke_width=stroke, stroke_fill=255)
    rows = np.flatnonzero(np.asarray(img).max(axis=1) >= 128)
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


@functools.lru_cache(maxsize=512)
def _size_for_cap(choice: FontChoice, cap: int) -> int:
    """Smallest font size whose rendered "H" is at least ``cap`` pixels tall."""
    ratio = max(_measure_cap(choice, 200) / 200.0, 0.3)
    size = max(4, int(cap / ratio) - 2)
    while _measure_cap(choice, size) < cap:
        size += 1
    while size > 4 and _measure_cap(choice, size - 1) >= cap:
        size -= 1
    return size


# --------------------------------------------------------------------------------------------------
# layout


@dataclass(frozen=True)
class _Line:
    text: str
    font: FontChoice
    size: int
    bbox: tuple[int, int, int, int]  # ink box relative to the left baseline origin

    @property
    def width(self) -> int:
        return self.bbox[2] - self.bbox[0]


@dataclass(frozen=True)
class LabelLayout:
    """Where the label goes on a frame of a given size, and how big. ``box`` is (x0, y0, x1, y1), x1/y1 exclusive."""

    frame_size: tuple[int, int]  # (height, width)
    box: tuple[int, int, int, int]
    cap_height_px: int
    font_px: int
    lines: tuple[str, ...]
    corner: str
    margin_px: int
    min_cap_px: int
    font_name: str
    fonts: tuple[str, ...] = field(default=())  # font per line

    @property
    def box_width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def box_height(self) -> int:
        return self.box[3] - self.box[1]


def _make_line(text: str, cap: int) -> _Line:
    choice = _font_for(text)
    size = _size_for_cap(choice, cap)
    font = _load(choice, size)
    with _RENDER_LOCK:
        bbox = font.getbbox(text, anchor="ls", stroke_width=_stroke(choice, size))
    return _Line(text, choice, size, tuple(int(v) for v in bbox))


def _tokens(text: str, cap: int, max_w: int) -> list[tuple[str, str]]:
    """(joiner, piece) tokens: whole " · " segments, split at spaces only where a segment is too wide."""
    out: list[tuple[str, str]] = []
    for i, seg in enumerate(text.split(_SEPARATOR)):
        seg = seg.strip()
        if not seg:
            continue
        joiner = _SEPARATOR if out else ""
        if _make_line(seg, cap).width <= max_w:
            out.append((joiner, seg))
            continue
        for j, word in enumerate(seg.split()):
            out.append((joiner if j == 0 else " ", word))
    return out


def _wrap(text: str, cap: int, max_w: int) -> list[_Line] | None:
    """Greedy wrap; None when even a single word is wider than ``max_w``."""
    whole = _make_line(text, cap)
    if whole.width <= max_w:
        return [whole]
    lines: list[_Line] = []
    current: _Line | None = None
    for joiner, piece in _tokens(text, cap, max_w):
        if current is not None:
            candidate = _make_line(current.text + joiner + piece, cap)
            if candidate.width <= max_w:
                current = candidate
                continue
            lines.append(current)
        current = _make_line(piece, cap)
        if current.width > max_w:
            return None
    if current is not None:
        lines.append(current)
    return lines


def _stack(lines: list[_Line], cap: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Box size and the (x, baseline y) origin of each line inside the box."""
    pad_x = max(2, round(_PAD_X * cap))
    pad_y = max(2, round(_PAD_Y * cap))
    gap = max(2, round(_LINE_GAP * cap))
    origins: list[tuple[int, int]] = []
    y = pad_y
    width = 0
    for i, ln in enumerate(lines):
        above = max(cap, -ln.bbox[1])
        below = max(0, ln.bbox[3])
        baseline = y + above
        origins.append((pad_x - ln.bbox[0], baseline))
        width = max(width, ln.width)
        y = baseline + below + (gap if i < len(lines) - 1 else 0)
    return width + 2 * pad_x, y + pad_y, origins


# --------------------------------------------------------------------------------------------------
# sprite + stamping


class _Sprite:
    """The rendered label for one frame size: coverage, alpha and grey level over the box, plus per-dtype caches."""

    def __init__(self, layout: LabelLayout, coverage: np.ndarray, opacity: float) -> None:
        self.layout = layout
        self.coverage = coverage  # float32 (bh, bw), 0..1 text coverage
        self.alpha = (opacity + (1.0 - opacity) * coverage).astype(np.float32)  # text opaque, box at opacity
        self.level = (BOX_LEVEL + (TEXT_LEVEL - BOX_LEVEL) * coverage).astype(np.float32)  # unpremultiplied grey
        self._cache: dict[tuple, tuple[np.ndarray, ...]] = {}
        self._lock = threading.Lock()

    def terms(self, dtype: np.dtype, channels: int) -> tuple[np.ndarray, ...]:
        """Blend terms pre-broadcast to (bh, bw, channels) so each frame costs a few in-place ufuncs."""
        key = (dtype.str, channels)
        got = self._cache.get(key)
        if got is not None:
            return got
        with self._lock:
            got = self._cache.get(key)
            if got is None:
                got = self._make_terms(dtype, channels)
                self._cache[key] = got
        return got

    def _make_terms(self, dtype: np.dtype, channels: int) -> tuple[np.ndarray, ...]:
        maxv = _max_value(dtype)
        a = self.alpha[..., None]
        if channels == 4:  # straight-alpha "over", computed on 2-D planes
            return (np.ascontiguousarray(self.alpha, np.float32), np.ascontiguousarray(1.0 - self.alpha, np.float32),
                    np.ascontiguousarray(self.alpha * self.level * maxv, np.float32))
        if dtype == np.uint8:
            # exact-enough integer blend: out = (f * (256 - w) + p + 128) >> 8, with w = round(256 * alpha)
            w = np.rint(a * 256.0)
            inv_w = (256.0 - w).astype(np.uint16)
            p = (np.rint(w * self.level[..., None] * 255.0) + 128.0).astype(np.uint16)
            return (np.ascontiguousarray(np.repeat(inv_w, channels, axis=2)),
                    np.ascontiguousarray(np.repeat(p, channels, axis=2)))
        return (np.ascontiguousarray(np.repeat((1.0 - a).astype(np.float32), channels, axis=2)),
                np.ascontiguousarray(np.repeat((a * self.level[..., None] * maxv).astype(np.float32), channels, axis=2)))


def _max_value(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))


class Label:
    """Renders and stamps the disclosure label. Thread-safe; sprites are cached per frame size."""

    _CACHE_SIZE = 16

    def __init__(self, settings: LabelSettings = LabelSettings()) -> None:
        if not isinstance(settings, LabelSettings):
            raise DisclosureError(f"Label needs LabelSettings, got {type(settings).__name__}")
        self.settings = settings
        self._sprites: OrderedDict[tuple[int, int], _Sprite] = OrderedDict()
        self._lock = threading.Lock()
        # fail early (at configuration time) when the text cannot be drawn with any installed font
        _font_for(settings.text)
        if settings.extra_line:
            _font_for(settings.extra_line)

    # ---- layout
    def layout(self, height: int, width: int) -> LabelLayout:
        """Position and size of the label on a ``height`` x ``width`` frame (cached with the sprite)."""
        return self._sprite(int(height), int(width)).layout

    def _compute(self, height: int, width: int) -> tuple[LabelLayout, list[_Line], list[tuple[int, int]]]:
        s = self.settings
        if height <= 0 or width <= 0:
            raise DisclosureError(f"cannot place the label on a {width}x{height} frame")
        short = min(height, width)
        min_cap = max(MIN_CAP_PX, math.ceil(MIN_CAP_FRACTION * short))
        margin_px = max(2, math.ceil(s.margin * short))
        avail_w = width - 2 * margin_px
        avail_h = height - 2 * margin_px
        cap = max(min_cap, math.ceil(min_cap * s.scale))
        while True:
            pad_x = max(2, round(_PAD_X * cap))
            lines = _wrap(s.text, cap, avail_w - 2 * pad_x)
            if lines is not None and s.extra_line:
                extra = _wrap(s.extra_line, cap, avail_w - 2 * pad_x)
                lines = None if extra is None else lines + extra
            if lines is not None:
                bw, bh, origins = _stack(lines, cap)
                if bw <= avail_w and bh <= avail_h:
                    break
            if cap <= min_cap:
                raise DisclosureError(
                    f"a {width}x{height} frame is too small to carry a legible disclosure label "
                    f"(needs capitals >= {min_cap} px and a {margin_px} px margin)",
                    hint="render at a larger size; the label is never shrunk below the minimum",
                )
            cap = max(min_cap, math.floor(cap * 0.9))  # an enlarged label gives way before failing
        corner = s.corner
        x0 = margin_px if corner.endswith("left") else width - margin_px - bw
        y0 = margin_px if corner.startswith("top") else height - margin_px - bh
        layout = LabelLayout(
            frame_size=(height, width),
            box=(x0, y0, x0 + bw, y0 + bh),
            cap_height_px=cap,
            font_px=lines[0].size,
            lines=tuple(ln.text for ln in lines),
            corner=corner,
            margin_px=margin_px,
            min_cap_px=min_cap,
            font_name=lines[0].font.name,
            fonts=tuple(ln.font.name for ln in lines),
        )
        return layout, lines, origins

    def _sprite(self, height: int, width: int) -> _Sprite:
        key = (height, width)
        with self._lock:
            sp = self._sprites.get(key)
            if sp is not None:
                self._sprites.move_to_end(key)
                return sp
            layout, lines, origins = self._compute(height, width)
            bw, bh = layout.box_width, layout.box_height
            img = Image.new("L", (bw, bh), 0)
            with _RENDER_LOCK:
                draw = ImageDraw.Draw(img)
                draw.fontmode = "L"  # anti-aliased
                for ln, (x, y) in zip(lines, origins):
                    stroke = _stroke(ln.font, ln.size)
                    draw.text((x, y), ln.text, font=_load(ln.font, ln.size), fill=255, anchor="ls",
                              stroke_width=stroke, stroke_fill=255)
            coverage = np.asarray(img, dtype=np.float32) / 255.0
            sp = _Sprite(layout, coverage, self.settings.opacity)
            self._sprites[key] = sp
            while len(self._sprites) > self._CACHE_SIZE:
                self._sprites.popitem(last=False)
            return sp

    # ---- stamping
    def stamp(self, frame: np.ndarray, *, alpha: str = "straight", full_size: tuple[int, int] | None = None,
              window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """A NEW array (same shape and dtype) with the label drawn; pixels outside the box are bit-identical.

        ``alpha``: how a fourth channel is read: "straight", "premultiplied" (colour = straight x alpha), or
        "none" (not alpha: the label is drawn opaque and the channel set to opaque in the box).
        ``full_size`` (height, width) and ``window`` (x0, y0, x1, y1): ``frame`` is that window of a larger
        frame; the label is sized and placed by the full frame and the window gets exactly its part.
        """
        _check_frame(frame)
        out = frame.copy()
        self._blend(out, alpha, full_size, window)
        return out

    def stamp_into(self, frame: np.ndarray, *, alpha: str = "straight", full_size: tuple[int, int] | None = None,
                   window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Draw the label in place (saves the full-frame copy); returns ``frame``. Arguments as :meth:`stamp`."""
        _check_frame(frame)
        if not frame.flags.writeable:
            raise DisclosureError("stamp_into needs a writeable frame; use stamp() for read-only arrays")
        self._blend(frame, alpha, full_size, window)
        return frame

    def coverage(self, height: int, width: int) -> np.ndarray:
        """The text coverage mask (float32 0..1, read-only) over the label box; used by the label detector."""
        cov = self._sprite(int(height), int(width)).coverage.view()
        cov.flags.writeable = False
        return cov

    def sprite_rgba(self, height: int, width: int) -> np.ndarray:
        """The label box as straight-alpha RGBA uint8 (for hosts that composite it themselves)."""
        sp = self._sprite(int(height), int(width))
        grey = np.rint(sp.level * 255.0).astype(np.uint8)
        a = np.rint(sp.alpha * 255.0).astype(np.uint8)
        return np.dstack([grey, grey, grey, a])

    def _blend(self, out: np.ndarray, alpha: str = "straight", full_size: tuple[int, int] | None = None,
               window: tuple[int, int, int, int] | None = None) -> None:
        h, w = out.shape[:2]
        fh, fw = (h, w) if full_size is None else (int(full_size[0]), int(full_size[1]))
        wx, wy = (0, 0) if window is None else (int(window[0]), int(window[1]))
        if alpha not in ("straight", "premultiplied", "none"):
            raise DisclosureError(f"unknown alpha mode {alpha!r}")
        sp = self._sprite(fh, fw)
        bx0, by0, bx1, by1 = sp.layout.box
        # the part of the label box inside this window, in full-frame pixels
        x0, y0, x1, y1 = max(bx0, wx), max(by0, wy), min(bx1, wx + w), min(by1, wy + h)
        if x1 <= x0 or y1 <= y0:
            return
        cut = (slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0))
        channels = 1 if out.ndim == 2 else out.shape[2]
        region = out[y0 - wy:y1 - wy, x0 - wx:x1 - wx]
        if out.ndim == 2:
            region = region[..., None]
        if out.dtype.kind == "f":
            # HDR values stay outside the box; inside it the label is drawn on 0..1 (NaN counts as black),
            # so a highlight cannot wash the box out
            np.nan_to_num(region, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
            np.clip(region, 0.0, 1.0, out=region)
        terms = tuple(t[cut] for t in sp.terms(out.dtype, 4 if channels == 4 else channels))
        maxv = _max_value(out.dtype)
        if channels == 4:
            # plane by plane: numpy is slow on (…, 3|4) inner axes with broadcasting, fast on 2-D planes
            a, inv_a, p = terms
            is_int = out.dtype.kind == "u"
            if alpha == "straight":
                fa = np.empty(a.shape, np.float32)
                fa[...] = region[..., 3]
                np.multiply(fa, np.float32(1.0 / maxv), out=fa)
                np.clip(fa, 0.0, 1.0, out=fa)
                keep = np.multiply(fa, inv_a, out=fa)  # share of the frame that shows through
                out_a = keep + a  # "over" with straight alpha: >= label alpha >= opacity
                inv_out = np.divide(np.float32(1.0), out_a)
            else:  # premultiplied "over" (and "none": the same, over an opaque frame): c * (1 - a) + label
                keep = inv_a
                inv_out = None
                if alpha == "premultiplied":
                    fa = np.empty(a.shape, np.float32)
                    fa[...] = region[..., 3]
                    np.multiply(fa, np.float32(1.0 / maxv), out=fa)
                    np.clip(fa, 0.0, 1.0, out=fa)
                    out_a = np.multiply(fa, inv_a, out=fa)
                    np.add(out_a, a, out=out_a)
                else:
                    out_a = np.ones(a.shape, np.float32)
            c = np.empty(a.shape, np.float32)
            for k in range(3):
                c[...] = region[..., k]
                np.multiply(c, keep, out=c)
                np.add(c, p, out=c)
                if inv_out is not None:
                    np.multiply(c, inv_out, out=c)
                if is_int:
                    np.rint(c, out=c)
                    np.clip(c, 0, maxv, out=c)
                region[..., k] = c
            np.multiply(out_a, np.float32(maxv), out=out_a)
            if is_int:
                np.rint(out_a, out=out_a)
                np.clip(out_a, 0, maxv, out=out_a)
            region[..., 3] = out_a
            return
        if out.dtype == np.uint8:
            inv_w, p = terms
            buf = np.multiply(region, inv_w, dtype=np.uint16)
            np.add(buf, p, out=buf)
            np.right_shift(buf, 8, out=buf)
            region[...] = buf
            return
        inv_a, p = terms
        buf = np.multiply(region, inv_a, dtype=np.float32)
        np.add(buf, p, out=buf)
        if out.dtype.kind == "u":
            np.rint(buf, out=buf)
            np.minimum(buf, maxv, out=buf)
        region[...] = buf


def _check_frame(frame: Any) -> None:
    if not isinstance(frame, np.ndarray):
        raise DisclosureError(f"the label is stamped on numpy frames, got {type(frame).__name__}")
    if frame.dtype not in _DTYPES:
        raise DisclosureError(f"unsupported frame dtype {frame.dtype}; expected uint8, uint16, float32 or float64")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))):
        raise DisclosureError(f"unsupported frame shape {frame.shape}; expected (H,W), (H,W,1), (H,W,3) or (H,W,4)")
