"""``facecomp timeline TIMELINE -o OUT_TIMELINE``: render the selected clips through the queue, write the result.

Re-running the same command resumes: the jobs it queued before (same output files) are taken again and
their committed segments reused.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import SettingsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("timeline", help=".otio, .edl (CMX 3600), .xml (FCP 7) or .fcpxml")
    p.add_argument("-o", "--output", required=True, help="the output timeline (.otio, .edl, .xml, .fcpxml)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--track", type=int, help="the clips of video track N (1 = the lowest)")
    sel.add_argument("--clips-with-marker", metavar="NAME", help="the clips holding a marker named NAME")
    sel.add_argument("--clip-color", metavar="C", help="the clips of colour C (e.g. green; .otio and some XML)")
    p.add_argument("--handles", type=int, default=12, help="extra source frames rendered before and after each clip")
    p.add_argument("--settings", metavar="FILE", help="effect settings (.json/.toml from --save-settings)")
    p.add_argument("--rate", type=float, help="an EDL's frame rate (EDLs do not say; default: found from the events)")
    p.add_argument("--media-dir", metavar="DIR", help="where clips named by an EDL are found")
    p.add_argument("--media-out", metavar="DIR", help="folder for the processed clips (default: OUT_EXT_media next to it)")
    p.add_argument("--queue", metavar="DIR", help="queue folder (default: .OUT.facecomp-queue next to the output)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", default=None, help="Ray cluster address")
    p.add_argument("--progress", choices=["text", "json"], default="text")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace the output timeline")


def run(args) -> int:
    from ..queue import timeline as tlm
    from ..queue.jobs import validate_job
    from ..queue.store import QueueDir

    src = Path(args.timeline)
    out = Path(args.output)
    tlm.adapter_for(out)  # refuse an unknown output format before any work
    if out.exists() and not args.overwrite:
        raise SettingsError("the output timeline exists", path=out, hint="pass -y to replace it")
    if args.handles < 0:
        raise SettingsError("--handles must be >= 0")
    settings = {}
    if args.settings:
        from ..settings import load_settings
        settings = load_settings(args.settings).with_absolute_paths(Path(args.settings).parent).to_dict()
        settings.pop("schema", None)
    timeline = tlm.read_timeline(src, rate=args.rate)
    picks = tlm.select_clips(timeline, tlm.Selection(args.track, args.clips_with_marker, args.clip_color))
    if not picks:
        raise SettingsError("no clip matches the selection", path=src,
                            hint="check --track / --clips-with-marker / --clip-color")
    tag = out.name.replace(".", "_")  # graded.xml and graded.edl side by side do not share media
    media_out = Path(args.media_out) if args.media_out else out.with_name(f"{tag}_media")
    media_out.mkdir(parents=True, exist_ok=True)
    base = src.parent.resolve()
    plans = tlm.plan_jobs(timeline, picks, base_dir=base, media_dir=Path(args.media_dir) if args.media_dir else None,
                          out_dir=media_out.resolve(), handles=args.handles, stem=tag)
    q = QueueDir(Path(args.queue) if args.queue else out.with_name(f".{out.name}.facecomp-queue"), create=True)
    existing = {}
    for jid in q.ids():
        job = q.job(jid)
        existing[job.output] = (jid, job)
    ids, new_jobs = {}, []
    for i, plan in enumerate(plans):
        if plan.output in existing:  # queued by an earlier run of this command: resume it
            jid, job = existing[plan.output]
            if (job.input, job.start, job.end) != (os.path.realpath(plan.input), plan.start, plan.end):
                raise SettingsError(f"{plan.output} is the output of queued job {jid} for another range",
                                    hint="use another --media-out or --queue")
            if q.state(jid).get("status") in ("failed", "cancelled"):
                q.retry(jid)
            ids[i] = jid
            continue
        data = {"schema": "facecomp.job/1", "name": plan.name, "input": plan.input, "output": plan.output,
                "start": plan.start, "end": plan.end, "settings": settings}
        new_jobs.append((i, validate_job(data, base_dir=base, policy=q.policy, where=src, name=plan.name)))
    for (i, _), jid in zip(new_jobs, q.add_jobs([j for _, j in new_jobs], [str(src)] * len(new_jobs))):
        ids[i] = jid
    from .cmd_queue import run_queue
    run_queue(q, args)
    from ..disclosure.manifest import load_manifest
    done, failed = {}, []
    for i, plan in enumerate(plans):
        if q.state(ids[i]).get("status") == "done" and Path(plan.output).is_file():
            done[i] = (plan, load_manifest(plan.output))
        else:
            failed.append(f"{plan.clip_name} ({ids[i]}: {q.state(ids[i]).get('error') or q.state(ids[i]).get('status')})")
    if not done:
        raise SettingsError("no clip rendered; no timeline written: " + "; ".join(failed))
    result = tlm.build_output(timeline, picks, done)
    tlm.write_timeline(result, out, overwrite=args.overwrite)
    if not args.quiet and args.progress == "text":
        print(f"wrote {out}: {len(done)} processed clip(s) on new track(s), media in {media_out}")
    for f in failed:
        print(f"not processed: {f}")
    return 1 if failed else 0
