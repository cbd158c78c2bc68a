/*
 * fc_banner.h - the plugin's error banner: a dark red band across the top of the frame with white text,
 * drawn in the output image's own depth.  It marks a frame that the server did NOT replace (the source
 * passes through unchanged under it); it is not the disclosure label, which only the server stamps.
 */
#ifndef FACECOMP_FC_BANNER_H
#define FACECOMP_FC_BANNER_H

#include "ofx_api.h"

typedef enum { FC_U8 = 1, FC_U16 = 2, FC_F32 = 4 } fc_depth;

/* An image as OpenFX lays it out: `data` points at pixel (bounds.x1, bounds.y1), rows go up by
 * `row_bytes` (which may be negative). */
typedef struct {
    unsigned char *data;
    OfxRectI bounds;
    long row_bytes;
    int comps;      /* 3 or 4 */
    fc_depth depth; /* bytes per channel */
} fc_image;

/* Draws `text` (lower-case ASCII; other characters become spaces) as a banner at the top of the full
 * frame `full`, touching only pixels inside `clip` (the render window), so tiles assemble to the same
 * picture a whole-frame render gives. */
void fc_draw_banner(const fc_image *img, OfxRectI full, OfxRectI clip, const char *text);

#endif
