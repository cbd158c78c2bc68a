"""``facecomp score ORIGINAL OUTPUT --source PHOTO [--json]``: how good is a render, by the project's own measures."""

from __future__ import annotations

import argparse
import json

from . import add_progress_arguments, progress_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("original", help="the clip that was rendered")
    p.add_argument("output", help="the rendered clip")
    p.add_argument("--source", nargs="*", default=[], metavar="PHOTO", help="the source photo(s) that were put in; needed for the identity measure, which "
                        "also needs dlib (pip install 'facecomp[identity]'); without them identity is skipped")
    p.add_argument("--json", action="store_true", help="print the full per-frame report as JSON")
    p.add_argument("--identity-step", type=int, default=1, metavar="N",
                   help="measure identity on every Nth frame (dlib is the slow part)")
    p.add_argument("--mouth-reads", type=int, default=16, metavar="N",
                   help="FaceMesh reads of each frame's mouth through jittered crops (2-64), half for each side of the "
                        "comparison, so a mouth that opens a pixel or two is not read as one crop's noise")
    p.add_argument("--no-realism", dest="realism", action="store_false",
                   help="skip the realism figures (they analyse the output too: expression, mouth, light, hands)")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="skip the floor of the landmark figures (the original rendered with no face replaced, "
                        "stamped and encoded as the output was, then read: one more render and landmark pass)")
    add_progress_arguments(p)


def run(args) -> int:
    from ..render.floor import score_with_floor
    from ..swap.score import ScoreSettings, score_clips

    progress = None if args.json else progress_from_args(args)
    settings = ScoreSettings(identity_step=args.identity_step, realism=args.realism, mouth_reads=args.mouth_reads)
    score = score_with_floor if args.floor else score_clips
    report = score(args.original, args.output, args.source, settings, progress=progress)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    s = report["summary"]
    print(f"frames {s['frames']}, with a face {s['frames_with_face']}, replaced {100 * s['replaced_share']:.0f}%")
    ident = s.get("identity")
    if ident and "mean_d_source" in ident:
        print(f"identity (dlib distance, < 0.6 = same person): to source {ident['mean_d_source']}, "
              f"to original target {ident['mean_d_target']}; closer to the source on "
              f"{100 * ident['closer_to_source_share']:.0f}% of {ident['frames']} frames")
    elif s.get("identity_note"):
        print(s["identity_note"])
    print(f"seam (edge/inside gradient): output {s['seam']['output']}, original {s['seam']['original']}, "
          f"ratio {s['seam'].get('ratio')} (goal < 1.15)")
    print(f"flicker (face region, per frame): output {s['flicker']['output']}, original {s['flicker']['original']}, "
          f"ratio {s['flicker']['ratio']}")
    r = s.get("realism")
    if r:
        floor = lambda k: (f"; floor {r[k]}" if r.get(k) is not None else "")  # noqa: E731
        print(f"expression error (landmarks vs target, per inter-ocular distance): {r['expression_error']} "
              f"(goal < 0.05{floor('expression_error_floor')})")
        print(f"mouth opening correlation with the target: {r['mouth_corr']} (goal > 0.9{floor('mouth_corr_floor')})")
        rel = r.get("mouth_reliability") or {}
        if rel.get("target") is not None:
            print(f"  (each frame read through {settings.mouth_reads} jittered crops, the output's half against the "
                  f"target's other half; one half against the other repeats at {rel['target']} on the target, "
                  f"{rel.get('output')} on the output: a render that changed nothing reaches about the first; "
                  f"one read of the tracked landmarks gives {r.get('mouth_corr_tracked')})")
        if r.get("expression_error_floor") is not None or r.get("mouth_corr_floor") is not None:
            print("  (floor: the same figure for the original rendered with no face replaced, stamped and encoded "
                  "as the output was: what the stamp and the encode alone do to the reading on this clip; figures "
                  "near it say nothing of the swap)")
        if r.get("floor_note"):
            print(f"  ({r['floor_note']})")
        print(f"lighting correlation (low-frequency luminance vs target): {r['lighting_corr']} (goal > 0.9)")
        print(f"texture anomalies: smeared share {r['smeared_share']}, frames with torn areas {r['torn_frames']} "
              f"(goal 0)")
        if r["hand_frames"]:
            print(f"hand pixels kept over the face: {r['hand_kept']} on {r['hand_frames']} frames with hands "
                  f"(goal > 0.95)")
        else:
            print("hand pixels kept: no frame with a hand over the face")
    return 0
