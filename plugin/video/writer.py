"""Writing video with PyAV: containers and image sequences, always to a temporary name first.

A :class:`VideoWriter` accepts only :class:`~facecomp.disclosure.stamp.StampedFrame` objects, so nothing
unlabelled can be encoded. It keeps the source's timestamps (VFR stays VFR), display rotation, timecode and
colour tags, and stream-copies audio and subtitle packets (re-encoding audio to AAC only where the output
container cannot hold the codec, and saying so). ``finish()`` closes the file, reads the disclosure tags
back, and leaves the result under its temporary name for the caller to sign and rename; ``commit()``
renames it into place. Any failure removes the temporary output and leaves the final name untouched.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..disclosure.metadata import container_options, verify_tags
from ..disclosure.stamp import StampedFrame
from ..errors import OutputError
from .encode import ResolvedEncode
from .info import ColorTags, UNSPECIFIED, is_sequence_pattern

_FROM_NDARRAY = {(3, False): "rgb24", (4, False): "rgba", (3, True): "rgb48le", (4, True): "rgba64le"}
_CONTAINER_FORMAT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def check_output_path(output: str | os.PathLike, inputs: list[str]) -> Path:
    """Refuse outputs that would overwrite an input or cannot be written, before any work is done."""
    out = Path(output)
    parent = out.parent if str(out.parent) else Path(".")
    for inp in inputs:
        if inp and os.path.abspath(inp) == os.path.abspath(out):
            raise OutputError("the output path is the input file; facecomp never modifies its source", path=out,
                              hint="choose another output name")
        try:
            if out.exists() and Path(inp).exists() and os.path.samefile(inp, out):
                raise OutputError("the output path is the input file (same file through a link)", path=out,
                                  hint="choose another output name")
        except OSError:
            pass
    if not parent.exists():
        raise OutputError("the output folder does not exist", path=parent, hint="create it first")
    if not parent.is_dir():
        raise OutputError("the output folder is a file, not a folder", path=parent,
                          hint="choose an output inside a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("the output folder is not writable", path=parent,
                          hint="choose a folder you can write to")
    return out


def _os_error(exc: BaseException, path) -> OutputError:
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OutputError("the disk is full; nothing was left under the final name", path=path,
                           hint="free some space and render again")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError("the output folder is not writable", path=path,
                           hint="choose a folder you can write to")
    return OutputError(f"writing failed ({exc})", path=path, hint="check the folder, free space and settings")


def _to_uint(arr: np.ndarray, wide: bool) -> np.ndarray:
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        scale = 65535.0 if wide else 255.0
        out = np.clip(arr, 0.0, 1.0) * scale + 0.5
        return out.astype(np.uint16 if wide else np.uint8)
    if wide and arr.dtype == np.uint8:
        return arr.astype(np.uint16) * 257
    if not wide and arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    return arr


class VideoWriter:
    """One output: a container file or an image sequence, written to a temporary name.

    ``size`` is the display size of the frames handed in; the writer rotates them back to the coded
    orientation and keeps ``rotation`` as the display matrix (image sequences bake the rotation instead).
    """

    def __init__(self, output: str | os.PathLike, *, enc: ResolvedEncode, size: tuple[int, int],
                 fps: Fraction, time_base: Fraction, rotation: int = 0, timecode: str | None = None,
                 color: ColorTags = ColorTags(), tags: dict[str, str] | None = None,
                 carry_streams=(), on_note=None, start_number: int = 0):
        self.output = Path(output)
        self.enc = enc
        self.display_w, self.display_h = size
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base)
        self.rotation = 0 if enc.sequence else rotation % 360
        self.color = color
        self.tags = dict(tags or {})
        self.notes: list[str] = []
        self._on_note = on_note
        self._frames = 0
        self._closed = False
        self._last_pts: int | None = None
        self._stream_map: dict[int, object] = {}
        self._audio_transcoders: dict[int, tuple] = {}
        k = self.rotation // 90
        self._k = k
        coded_w, coded_h = (self.display_h, self.display_w) if k % 2 else (self.display_w, self.display_h)
        self.coded_size = (coded_w, coded_h)
        pix = enc.pix_fmt
        if (coded_w % 2 or coded_h % 2) and pix.startswith(("yuv420", "yuv422", "yuva420")):
            pix = pix.replace("420", "444").replace("422", "444")
            self._note(f"odd frame size {coded_w}x{coded_h}: encoded as 4:4:4 ({pix}) to keep every pixel")
        self.pix_fmt = pix
        if enc.sequence:
            self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.output.parent.name or 'seq'}.facecomp-",
                                                 dir=self.output.parent))
            self.tmp_path = self._tmpdir / self.output.name
            fmt, options = "image2", {"start_number": str(int(start_number))}
            if not is_sequence_pattern(self.output):  # one still under exactly this name
                options = {"update": "1"}
        else:
            self._tmpdir = None
            self.tmp_path = self.output.with_name(f".{self.output.stem}.facecomp-{uuid.uuid4().hex[:8]}{self.output.suffix}")
            fmt = _CONTAINER_FORMAT[self.output.suffix.lower()]
            options = container_options(fmt)
        try:
            self._c = av.open(str(self.tmp_path), "w", format=fmt, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            self._cleanup()
            raise _os_error(exc, self.output) from exc
        try:
            self._setup_video(timecode)
            if not enc.sequence:
                for key, value in self.tags.items():
                    self._c.metadata[key] = value
                self._setup_carry(carry_streams)
            elif carry_streams:
                kinds = sorted({s.type for s in carry_streams})
                self._note(f"image sequences hold no {' or '.join(kinds)}: those streams are not in the output")
        except BaseException:
            self.abort()
            raise

    # ------------------------------------------------------------------ setup
    def _note(self, text: str) -> None:
        self.notes.append(text)
        if self._on_note:
            self._on_note(text)

    def _setup_video(self, timecode: str | None) -> None:
        s = self._c.add_stream(self.enc.encoder, rate=self.fps)
        w, h = self.coded_size
        s.width, s.height = w, h
        s.pix_fmt = self.pix_fmt
        cc = s.codec_context
        if not self.enc.sequence:
            s.time_base = self.time_base
            cc.time_base = self.time_base
        self._yuv = not av.VideoFormat(self.pix_fmt).is_rgb and self.pix_fmt not in ("argb",)
        if self._yuv:
            matrix = self.color.matrix_for_conversion(self.display_h)
            self._matrix = matrix
            self._range = self.color.range if self.color.range in (1, 2) else 1
            cc.colorspace = matrix
            cc.color_range = self._range
            if self.color.primaries != UNSPECIFIED:
                cc.color_primaries = self.color.primaries
            if self.color.transfer != UNSPECIFIED:
                cc.color_trc = self.color.transfer
        opts = dict(self.enc.options)
        if self.enc.encoder in ("libx264", "libx265") and "threads" not in opts:
            opts["threads"] = "0"
        cc.options = opts
        if timecode and not self.enc.sequence:
            s.metadata["timecode"] = timecode
        if self.rotation:
            s.set_display_rotation(self.rotation)
        self._vs = s

    def _setup_carry(self, carry_streams) -> None:
        supported = self._c.supported_codecs
        for ins in carry_streams:
            name = ins.codec_context.name if ins.codec_context else None
            if name and name in supported:
                try:
                    outs = self._c.add_stream_from_template(ins)
                    self._stream_map[ins.index] = outs
                    continue
                except (av.error.FFmpegError, ValueError) as exc:
                    self._note(f"stream {ins.index} ({name}) could not be copied ({exc})")
            if ins.type == "audio":
                outs = self._c.add_stream("aac", rate=ins.codec_context.sample_rate or 48000)
                outs.layout = ins.codec_context.layout
                self._audio_transcoders[ins.index] = (ins.codec_context, outs)
                self._stream_map[ins.index] = outs
                self._note(f"audio stream {ins.index} ({name}) re-encoded to AAC: "
                           f"{self.output.suffix} cannot hold {name}")
            else:
                self._note(f"{ins.type} stream {ins.index} ({name}) dropped: {self.output.suffix} cannot hold it")

    # ------------------------------------------------------------------ writing
    def write(self, frame: StampedFrame, pts: int | None = None) -> None:
        """Encode one stamped frame; ``pts`` in the writer's time_base (None: frame count based)."""
        if not isinstance(frame, StampedFrame):
            raise TypeError("VideoWriter.write() takes StampedFrame objects from Stamper.stamp(): "
                            "every output frame must carry the disclosure label")
        arr = frame.pixels
        if arr.shape[0] != self.display_h or arr.shape[1] != self.display_w:
            raise ValueError(f"frame size {arr.shape[1]}x{arr.shape[0]} differs from the output's "
                             f"{self.display_w}x{self.display_h}")
        wide = self.enc.bit_depth > 8
        arr = _to_uint(arr, wide)
        ch = arr.shape[2]
        if ch == 4 and not self.enc.alpha:
            arr = arr[:, :, :3]
            ch = 3
        elif ch == 3 and self.enc.alpha:
            full = np.iinfo(arr.dtype).max
            arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), full, arr.dtype)], axis=2)
            ch = 4
        if self._k:
            arr = np.rot90(arr, -self._k)
        arr = np.ascontiguousarray(arr)
        vf = av.VideoFrame.from_ndarray(arr, format=_FROM_NDARRAY[(ch, arr.dtype == np.uint16)])
        if self._yuv:
            vf = vf.reformat(format=self.pix_fmt, dst_colorspace=self._matrix, dst_color_range=self._range,
                             src_color_range=2)
        elif vf.format.name != self.pix_fmt:
            vf = vf.reformat(format=self.pix_fmt)
        if self.enc.sequence:
            vf.pts = self._frames
        else:
            if pts is None:
                pts = int(round(self._frames / (self.fps * self.time_base)))
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1  # keep timestamps strictly increasing
            vf.pts = pts
            vf.time_base = self.time_base
            self._last_pts = pts
        try:
            for packet in self._vs.encode(vf):
                self._c.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise _os_error(exc, self.output) from exc
        self._frames += 1

    def write_packet(self, packet: av.Packet, offset: int = 0) -> None:
        """Copy (or transcode) a packet of a carried stream; ``offset`` is subtracted from its timestamps."""
        outs = self._stream_map.get(packet.stream.index)
        if outs is None:
            return
        if offset:
            if packet.pts is not None:
                packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            if packet.pts is not None and packet.pts < 0:
                return
        try:
            if packet.stream.index in self._audio_transcoders:
                dec_ctx, outs = self._audio_transcoders[packet.stream.index]
                for af in dec_ctx.decode(packet):
                    af.pts = None
                    for p in outs.encode(af):
                        self._c.mux(p)
                return
            packet.stream = outs
            self._c.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise _os_error(exc, self.output) from exc

    @property
    def frames_written(self) -> int:
        return self._frames

    # ------------------------------------------------------------------ finishing
    def finish(self) -> Path:
        """Flush and close; read the tags back. The file stays under ``tmp_path`` until :meth:`commit`."""
        try:
            for packet in self._vs.encode():
                self._c.mux(packet)
            for _, outs in self._audio_transcoders.values():
                for packet in outs.encode():
                    self._c.mux(packet)
            self._c.close()
            self._closed = True
        except (av.error.FFmpegError, OSError) as exc:
            self.abort()
            raise _os_error(exc, self.output) from exc
        if self._frames == 0:
            self.abort()
            raise OutputError("no frame was written", path=self.output, hint="check the --start/--end range")
        if not self.enc.sequence:
            try:
                verify_tags(self.tmp_path, self.tags, display=self.output)
            except Exception:
                self.abort()
                raise
        return self.tmp_path

    def sequence_files(self) -> list[Path]:
        """The image files written so far (temporary location), in order."""
        if self._tmpdir is None:
            return []
        return sorted(p for p in self._tmpdir.iterdir() if p.is_file())

    def commit(self) -> list[Path]:
        """Move the finished output to its final name (each file of a sequence); returns the final paths."""
        try:
            if self.enc.sequence:
                finals = []
                for p in self.sequence_files():
                    dest = self.output.parent / p.name
                    os.replace(p, dest)
                    finals.append(dest)
                self._cleanup()
                return finals
            os.replace(self.tmp_path, self.output)
            return [self.output]
        except OSError as exc:
            self.abort()
            raise _os_error(exc, self.output) from exc

    def abort(self) -> None:
        """Close and remove everything written; the final name is never touched."""
        if not self._closed:
            try:
                self._c.close()
            except Exception:
                pass
            self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        elif self.tmp_path.exists():
            try:
                self.tmp_path.unlink()
            except OSError:
                pass
