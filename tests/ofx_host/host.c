/*
 * host.c - a small OpenFX host for facecomp's tests: it dlopen()s a plugin binary, implements the
 * property, image-effect, parameter, memory, multithread and message suites, and drives
 * load -> describe -> describeInContext -> createInstance -> set parameters -> render.
 *
 * Frames come from raw files (top-down rows, the given depth and channel count) and go back the same
 * way.  Images are handed to the plugin as OpenFX lays them out (bottom-up rows) with padded rows, so
 * the plugin's stride handling is exercised.  `--hostile` instead runs a list of abusive calls and
 * prints the status code of each.
 *
 * Output (stdout), one line each:  STATUS <what> <code> | MSG <type> <text> | FRAME <i> <code> <ms>
 *                                   | PARAM <json> | CHECK <name> <code>
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../ofx_bridge/fc_json.h"
#include "../../ofx_bridge/ofx_api.h"

/* ---- property sets ------------------------------------------------------------------------------ */

#define MAXV 16
typedef struct {
    char name[128];
    char kind; /* 's' 'i' 'd' 'p' */
    int n;
    char *s[MAXV];
    int i[MAXV];
    double d[MAXV];
    void *p[MAXV];
} prop;

struct OfxPropertySetStruct {
    uint32_t magic;
    pthread_mutex_t lock;
    int n, cap;
    prop *props;
};

#define PROPS_MAGIC 0x50524f50u

static OfxPropertySetHandle props_new(void) {
    OfxPropertySetHandle h = calloc(1, sizeof *h);
    h->magic = PROPS_MAGIC;
    pthread_mutex_init(&h->lock, NULL);
    return h;
}

static void props_free(OfxPropertySetHandle h) {
    if (!h) return;
    for (int k = 0; k < h->n; k++)
        for (int j = 0; j < MAXV; j++) free(h->props[k].s[j]);
    free(h->props);
    h->magic = 0;
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static prop *find(OfxPropertySetHandle h, const char *name, int create, char kind) {
    for (int k = 0; k < h->n; k++)
        if (strcmp(h->props[k].name, name) == 0) return &h->props[k];
    if (!create) return NULL;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->props = realloc(h->props, (size_t)h->cap * sizeof(prop));
    }
    prop *p = &h->props[h->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    return p;
}

#define CHECK_SET(h, name)                                                                   \
    if (!(h) || (h)->magic != PROPS_MAGIC) return kOfxStatErrBadHandle;                      \
    if (!(name)) return kOfxStatErrValue;

static OfxStatus set_any(OfxPropertySetHandle h, const char *name, int index, char kind, const void *v) {
    CHECK_SET(h, name);
    if (index < 0 || index >= MAXV) return kOfxStatErrBadIndex;
    pthread_mutex_lock(&h->lock);
    prop *p = find(h, name, 1, kind);
    p->kind = kind;
    if (kind == 's') { free(p->s[index]); p->s[index] = strdup(*(const char *const *)v); }
    else if (kind == 'i') p->i[index] = *(const int *)v;
    else if (kind == 'd') p->d[index] = *(const double *)v;
    else p->p[index] = *(void *const *)v;
    if (index + 1 > p->n) p->n = index + 1;
    pthread_mutex_unlock(&h->lock);
    return kOfxStatOK;
}

static OfxStatus get_any(OfxPropertySetHandle h, const char *name, int index, char kind, void *v) {
    CHECK_SET(h, name);
    if (!v) return kOfxStatErrValue;
    pthread_mutex_lock(&h->lock);
    prop *p = find(h, name, 0, kind);
    OfxStatus st = kOfxStatOK;
    if (!p) st = kOfxStatErrUnknown;
    else if (index < 0 || index >= p->n) st = kOfxStatErrBadIndex;
    else if (p->kind != kind) st = kOfxStatErrValue;
    else if (kind == 's') *(char **)v = p->s[index] ? p->s[index] : (char *)"";
    else if (kind == 'i') *(int *)v = p->i[index];
    else if (kind == 'd') *(double *)v = p->d[index];
    else *(void **)v = p->p[index];
    pthread_mutex_unlock(&h->lock);
    return st;
}

static OfxStatus pSetPointer(OfxPropertySetHandle h, const char *n, int i, void *v) { return set_any(h, n, i, 'p', &v); }
static OfxStatus pSetString(OfxPropertySetHandle h, const char *n, int i, const char *v) { return v ? set_any(h, n, i, 's', &v) : kOfxStatErrValue; }
static OfxStatus pSetDouble(OfxPropertySetHandle h, const char *n, int i, double v) { return set_any(h, n, i, 'd', &v); }
static OfxStatus pSetInt(OfxPropertySetHandle h, const char *n, int i, int v) { return set_any(h, n, i, 'i', &v); }
static OfxStatus pSetPointerN(OfxPropertySetHandle h, const char *n, int c, void *const *v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pSetPointer(h, n, k, v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pSetStringN(OfxPropertySetHandle h, const char *n, int c, const char *const *v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pSetString(h, n, k, v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pSetDoubleN(OfxPropertySetHandle h, const char *n, int c, const double *v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pSetDouble(h, n, k, v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pSetIntN(OfxPropertySetHandle h, const char *n, int c, const int *v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pSetInt(h, n, k, v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pGetPointer(OfxPropertySetHandle h, const char *n, int i, void **v) { return get_any(h, n, i, 'p', v); }
static OfxStatus pGetString(OfxPropertySetHandle h, const char *n, int i, char **v) { return get_any(h, n, i, 's', v); }
static OfxStatus pGetDouble(OfxPropertySetHandle h, const char *n, int i, double *v) { return get_any(h, n, i, 'd', v); }
static OfxStatus pGetInt(OfxPropertySetHandle h, const char *n, int i, int *v) { return get_any(h, n, i, 'i', v); }
static OfxStatus pGetPointerN(OfxPropertySetHandle h, const char *n, int c, void **v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pGetPointer(h, n, k, &v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pGetStringN(OfxPropertySetHandle h, const char *n, int c, char **v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pGetString(h, n, k, &v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pGetDoubleN(OfxPropertySetHandle h, const char *n, int c, double *v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pGetDouble(h, n, k, &v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pGetIntN(OfxPropertySetHandle h, const char *n, int c, int *v) {
    for (int k = 0; k < c; k++) { OfxStatus s = pGetInt(h, n, k, &v[k]); if (s) return s; }
    return kOfxStatOK;
}
static OfxStatus pReset(OfxPropertySetHandle h, const char *n) {
    CHECK_SET(h, n);
    return kOfxStatOK;
}
static OfxStatus pGetDimension(OfxPropertySetHandle h, const char *n, int *count) {
    CHECK_SET(h, n);
    pthread_mutex_lock(&h->lock);
    prop *p = find(h, n, 0, 0);
    if (p && count) *count = p->n;
    pthread_mutex_unlock(&h->lock);
    return p ? kOfxStatOK : kOfxStatErrUnknown;
}

static const OfxPropertySuiteV1 PROP_SUITE = {
    pSetPointer, pSetString, pSetDouble, pSetInt, pSetPointerN, pSetStringN, pSetDoubleN, pSetIntN,
    pGetPointer, pGetString, pGetDouble, pGetInt, pGetPointerN, pGetStringN, pGetDoubleN, pGetIntN,
    pReset, pGetDimension};

/* ---- effects, clips, params, images ------------------------------------------------------------- */

#define MAXP 96
struct OfxParamStruct {
    char name[64];
    char type[64];
    OfxPropertySetHandle props;
    int ival;
    double dval;
    char *sval;
    pthread_mutex_t lock;
};

struct OfxParamSetStruct {
    OfxPropertySetHandle props;
    int n;
    struct OfxParamStruct params[MAXP];
};

typedef struct {
    int w, h, comps, depth; /* depth: bytes per channel */
    int frames;
    unsigned char **in;     /* top-down input frames */
    unsigned char **out;    /* OpenFX-layout output frames (bottom-up, padded) */
    unsigned char **src_ofx; /* OpenFX-layout source frames */
    long row_bytes;
    int top_down;           /* rows stored top first: the host hands negative row bytes */
    const char *premult;
    double scale, par;      /* render scale and pixel aspect: the region of definition is in canonical units */
    int fail_time;          /* clipGetImage for this time fails (hostile checks) */
    int crop;               /* the source clip covers only crop_r (OpenFX pixels, y up): a smaller clip */
    int crop_r[4];
    /* hostile overrides for the next images */
    int absurd, null_data, small_rows, half_depth, mismatch;
} media;

struct OfxImageClipStruct {
    char name[32];
    OfxPropertySetHandle props;
    media *m;
    int is_output;
};

struct OfxImageEffectStruct {
    OfxPropertySetHandle props;
    struct OfxParamSetStruct params;
    struct OfxImageClipStruct clips[2];
    int n_clips;
    media *m;
};

static OfxStatus eGetPropertySet(OfxImageEffectHandle e, OfxPropertySetHandle *p) {
    if (!e || !p) return kOfxStatErrBadHandle;
    *p = e->props;
    return kOfxStatOK;
}
static OfxStatus eGetParamSet(OfxImageEffectHandle e, OfxParamSetHandle *p) {
    if (!e || !p) return kOfxStatErrBadHandle;
    *p = &e->params;
    return kOfxStatOK;
}
static OfxStatus eClipDefine(OfxImageEffectHandle e, const char *name, OfxPropertySetHandle *p) {
    if (!e || !name) return kOfxStatErrBadHandle;
    if (e->n_clips >= 2) return kOfxStatErrExists;
    struct OfxImageClipStruct *c = &e->clips[e->n_clips++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->props = props_new();
    c->m = e->m;
    c->is_output = strcmp(name, "Output") == 0;
    if (p) *p = c->props;
    return kOfxStatOK;
}
static OfxStatus eClipGetHandle(OfxImageEffectHandle e, const char *name, OfxImageClipHandle *clip, OfxPropertySetHandle *p) {
    if (!e || !name || !clip) return kOfxStatErrBadHandle;
    for (int k = 0; k < e->n_clips; k++)
        if (strcmp(e->clips[k].name, name) == 0) {
            *clip = &e->clips[k];
            if (p) *p = e->clips[k].props;
            return kOfxStatOK;
        }
    return kOfxStatErrUnknown;
}
static OfxStatus eClipGetPropertySet(OfxImageClipHandle c, OfxPropertySetHandle *p) {
    if (!c || !p) return kOfxStatErrBadHandle;
    *p = c->props;
    return kOfxStatOK;
}

static const char *depth_name(int d) { return d == 1 ? kOfxBitDepthByte : d == 2 ? kOfxBitDepthShort : kOfxBitDepthFloat; }

static OfxStatus eClipGetImage(OfxImageClipHandle c, OfxTime t, const OfxRectD *region, OfxPropertySetHandle *img) {
    (void)region;
    if (!c || !img) return kOfxStatErrBadHandle;
    media *m = c->m;
    int i = (int)t;
    if (!m || i < 0 || i >= m->frames || i == m->fail_time) return kOfxStatFailed;
    OfxPropertySetHandle p = props_new();
    unsigned char *data = c->is_output ? m->out[i] : m->src_ofx[i];
    if (m->top_down) data += (size_t)(m->h - 1) * m->row_bytes; /* the bottom row, last in memory */
    int bounds[4] = {0, 0, m->w, m->h};
    int rb = (int)(m->top_down ? -m->row_bytes : m->row_bytes), depth = m->depth;
    if (m->crop && !c->is_output) { /* the source image is only the clip's own (smaller) area */
        memcpy(bounds, m->crop_r, sizeof bounds);
        data += (long)bounds[1] * rb + (long)bounds[0] * m->comps * m->depth;
    }
    if (m->absurd) { bounds[2] = 1000000; bounds[3] = 1000000; }
    if (m->small_rows) rb = 8;
    if (m->mismatch && c->is_output) depth = 4;
    pSetPointer(p, kOfxImagePropData, 0, m->null_data ? NULL : data);
    pSetIntN(p, kOfxImagePropBounds, 4, bounds);
    pSetInt(p, kOfxImagePropRowBytes, 0, rb);
    pSetString(p, kOfxImageEffectPropPixelDepth, 0, m->half_depth ? kOfxBitDepthHalf : depth_name(depth));
    pSetString(p, kOfxImageEffectPropComponents, 0, m->comps == 4 ? kOfxImageComponentRGBA : kOfxImageComponentRGB);
    pSetString(p, kOfxImageEffectPropPreMultiplication, 0, m->premult);
    pSetDouble(p, kOfxImagePropPixelAspectRatio, 0, m->par);
    pSetString(p, kOfxImagePropField, 0, "OfxFieldNone");
    *img = p;
    return kOfxStatOK;
}
static OfxStatus eClipReleaseImage(OfxPropertySetHandle img) {
    if (!img || img->magic != PROPS_MAGIC) return kOfxStatErrBadHandle;
    props_free(img);
    return kOfxStatOK;
}
static OfxStatus eClipGetRoD(OfxImageClipHandle c, OfxTime t, OfxRectD *r) {
    (void)t;
    if (!c || !r || !c->m) return kOfxStatErrBadHandle;
    media *m = c->m;
    int box[4] = {0, 0, m->w, m->h};
    if (m->crop && !c->is_output) memcpy(box, m->crop_r, sizeof box);
    r->x1 = box[0] * m->par / m->scale; r->y1 = box[1] / m->scale;
    r->x2 = box[2] * m->par / m->scale;
    r->y2 = box[3] / m->scale;
    return kOfxStatOK;
}
static int eAbort(OfxImageEffectHandle e) { (void)e; return 0; }
static OfxStatus eMemAlloc(OfxImageEffectHandle e, size_t n, OfxImageMemoryHandle *h) {
    (void)e;
    if (!h) return kOfxStatErrBadHandle;
    *h = malloc(n ? n : 1);
    return *h ? kOfxStatOK : kOfxStatErrMemory;
}
static OfxStatus eMemFree(OfxImageMemoryHandle h) { free(h); return kOfxStatOK; }
static OfxStatus eMemLock(OfxImageMemoryHandle h, void **p) { if (!p) return kOfxStatErrBadHandle; *p = h; return kOfxStatOK; }
static OfxStatus eMemUnlock(OfxImageMemoryHandle h) { (void)h; return kOfxStatOK; }

static const OfxImageEffectSuiteV1 EFFECT_SUITE = {
    eGetPropertySet, eGetParamSet, eClipDefine, eClipGetHandle, eClipGetPropertySet, eClipGetImage,
    eClipReleaseImage, eClipGetRoD, eAbort, eMemAlloc, eMemFree, eMemLock, eMemUnlock};

static OfxStatus prDefine(OfxParamSetHandle s, const char *type, const char *name, OfxPropertySetHandle *p) {
    if (!s || !type || !name) return kOfxStatErrBadHandle;
    if (s->n >= MAXP) return kOfxStatErrMemory;
    for (int k = 0; k < s->n; k++) if (strcmp(s->params[k].name, name) == 0) return kOfxStatErrExists;
    struct OfxParamStruct *q = &s->params[s->n++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    snprintf(q->type, sizeof q->type, "%s", type);
    q->props = props_new();
    pthread_mutex_init(&q->lock, NULL);
    if (p) *p = q->props;
    return kOfxStatOK;
}
static OfxStatus prGetHandle(OfxParamSetHandle s, const char *name, OfxParamHandle *h, OfxPropertySetHandle *p) {
    if (!s || !name || !h) return kOfxStatErrBadHandle;
    for (int k = 0; k < s->n; k++)
        if (strcmp(s->params[k].name, name) == 0) {
            *h = &s->params[k];
            if (p) *p = s->params[k].props;
            return kOfxStatOK;
        }
    return kOfxStatErrUnknown;
}
static OfxStatus prSetGetPropertySet(OfxParamSetHandle s, OfxPropertySetHandle *p) {
    if (!s || !p) return kOfxStatErrBadHandle;
    *p = s->props;
    return kOfxStatOK;
}
static OfxStatus prGetPropertySet(OfxParamHandle h, OfxPropertySetHandle *p) {
    if (!h || !p) return kOfxStatErrBadHandle;
    *p = h->props;
    return kOfxStatOK;
}
static int is_int_kind(const char *t) {
    return !strcmp(t, kOfxParamTypeInteger) || !strcmp(t, kOfxParamTypeChoice) || !strcmp(t, kOfxParamTypeBoolean);
}
static OfxStatus get_value(OfxParamHandle h, va_list ap) {
    if (!h) return kOfxStatErrBadHandle;
    pthread_mutex_lock(&h->lock);
    if (is_int_kind(h->type)) *va_arg(ap, int *) = h->ival;
    else if (!strcmp(h->type, kOfxParamTypeDouble)) *va_arg(ap, double *) = h->dval;
    else if (!strcmp(h->type, kOfxParamTypeString)) *va_arg(ap, char **) = h->sval ? h->sval : (char *)"";
    pthread_mutex_unlock(&h->lock);
    return kOfxStatOK;
}
static OfxStatus prGetValue(OfxParamHandle h, ...) {
    va_list ap; va_start(ap, h); OfxStatus s = get_value(h, ap); va_end(ap); return s;
}
static OfxStatus prGetValueAtTime(OfxParamHandle h, OfxTime t, ...) {
    va_list ap; va_start(ap, t); OfxStatus s = get_value(h, ap); va_end(ap); return s;
}
static OfxStatus prGetDerivative(OfxParamHandle h, OfxTime t, ...) { (void)h; (void)t; return kOfxStatErrUnsupported; }
static OfxStatus prGetIntegral(OfxParamHandle h, OfxTime a, OfxTime b, ...) { (void)h; (void)a; (void)b; return kOfxStatErrUnsupported; }
static OfxStatus set_value(OfxParamHandle h, va_list ap) {
    if (!h) return kOfxStatErrBadHandle;
    pthread_mutex_lock(&h->lock);
    if (is_int_kind(h->type)) h->ival = va_arg(ap, int);
    else if (!strcmp(h->type, kOfxParamTypeDouble)) h->dval = va_arg(ap, double);
    else if (!strcmp(h->type, kOfxParamTypeString)) { free(h->sval); h->sval = strdup(va_arg(ap, char *)); }
    pthread_mutex_unlock(&h->lock);
    return kOfxStatOK;
}
static OfxStatus prSetValue(OfxParamHandle h, ...) {
    va_list ap; va_start(ap, h); OfxStatus s = set_value(h, ap); va_end(ap); return s;
}
static OfxStatus prSetValueAtTime(OfxParamHandle h, OfxTime t, ...) {
    va_list ap; va_start(ap, t); OfxStatus s = set_value(h, ap); va_end(ap); return s;
}
static OfxStatus prGetNumKeys(OfxParamHandle h, unsigned int *n) { (void)h; if (n) *n = 0; return kOfxStatOK; }
static OfxStatus prGetKeyTime(OfxParamHandle h, unsigned int k, OfxTime *t) { (void)h; (void)k; (void)t; return kOfxStatErrBadIndex; }
static OfxStatus prGetKeyIndex(OfxParamHandle h, OfxTime t, int d, int *i) { (void)h; (void)t; (void)d; if (i) *i = -1; return kOfxStatFailed; }
static OfxStatus prDeleteKey(OfxParamHandle h, OfxTime t) { (void)h; (void)t; return kOfxStatErrBadIndex; }
static OfxStatus prDeleteAllKeys(OfxParamHandle h) { (void)h; return kOfxStatOK; }
static OfxStatus prCopy(OfxParamHandle a, OfxParamHandle b, OfxTime o, const OfxRangeD *r) { (void)a; (void)b; (void)o; (void)r; return kOfxStatErrUnsupported; }
static OfxStatus prEditBegin(OfxParamSetHandle s, const char *n) { (void)s; (void)n; return kOfxStatOK; }
static OfxStatus prEditEnd(OfxParamSetHandle s) { (void)s; return kOfxStatOK; }

static const OfxParameterSuiteV1 PARAM_SUITE = {
    prDefine, prGetHandle, prSetGetPropertySet, prGetPropertySet, prGetValue, prGetValueAtTime,
    prGetDerivative, prGetIntegral, prSetValue, prSetValueAtTime, prGetNumKeys, prGetKeyTime,
    prGetKeyIndex, prDeleteKey, prDeleteAllKeys, prCopy, prEditBegin, prEditEnd};

static OfxStatus mAlloc(void *h, size_t n, void **d) { (void)h; if (!d) return kOfxStatErrBadHandle; *d = malloc(n); return *d ? kOfxStatOK : kOfxStatErrMemory; }
static OfxStatus mFree(void *d) { free(d); return kOfxStatOK; }
static const OfxMemorySuiteV1 MEMORY_SUITE = {mAlloc, mFree};

static OfxStatus tMulti(OfxThreadFunctionV1 fn, unsigned int n, void *arg) { for (unsigned k = 0; k < n; k++) fn(k, n, arg); return kOfxStatOK; }
static OfxStatus tNum(unsigned int *n) { if (n) *n = 1; return kOfxStatOK; }
static OfxStatus tIndex(unsigned int *i) { if (i) *i = 0; return kOfxStatOK; }
static int tSpawned(void) { return 0; }
static OfxStatus tMutexCreate(OfxMutexHandle *m, int c) { (void)c; pthread_mutex_t *p = malloc(sizeof *p); pthread_mutex_init(p, NULL); *m = (OfxMutexHandle)p; return kOfxStatOK; }
static OfxStatus tMutexDestroy(const OfxMutexHandle m) { pthread_mutex_destroy((pthread_mutex_t *)m); free(m); return kOfxStatOK; }
static OfxStatus tLock(const OfxMutexHandle m) { pthread_mutex_lock((pthread_mutex_t *)m); return kOfxStatOK; }
static OfxStatus tUnlock(const OfxMutexHandle m) { pthread_mutex_unlock((pthread_mutex_t *)m); return kOfxStatOK; }
static OfxStatus tTry(const OfxMutexHandle m) { return pthread_mutex_trylock((pthread_mutex_t *)m) == 0 ? kOfxStatOK : kOfxStatFailed; }
static const OfxMultiThreadSuiteV1 THREAD_SUITE = {tMulti, tNum, tIndex, tSpawned, tMutexCreate, tMutexDestroy, tLock, tUnlock, tTry};

static pthread_mutex_t g_out_lock = PTHREAD_MUTEX_INITIALIZER;

static void print_msg(const char *kind, const char *type, const char *fmt, va_list ap) {
    char text[4096];
    vsnprintf(text, sizeof text, fmt, ap);
    for (char *c = text; *c; c++) if (*c == '\n') *c = ' ';
    pthread_mutex_lock(&g_out_lock);
    printf("MSG %s%s %s\n", kind, type ? type : "(null)", text);
    fflush(stdout);
    pthread_mutex_unlock(&g_out_lock);
}
static OfxStatus msgMessage(void *h, const char *type, const char *id, const char *fmt, ...) {
    (void)h; (void)id;
    va_list ap; va_start(ap, fmt); print_msg("", type, fmt, ap); va_end(ap);
    return kOfxStatOK;
}
static OfxStatus msgPersistent(void *h, const char *type, const char *id, const char *fmt, ...) {
    (void)h; (void)id;
    va_list ap; va_start(ap, fmt); print_msg("persistent:", type, fmt, ap); va_end(ap);
    return kOfxStatOK;
}
static OfxStatus msgClear(void *h) {
    (void)h;
    pthread_mutex_lock(&g_out_lock);
    printf("MSG clear\n");
    fflush(stdout);
    pthread_mutex_unlock(&g_out_lock);
    return kOfxStatOK;
}
static const OfxMessageSuiteV2 MESSAGE_SUITE = {msgMessage, msgPersistent, msgClear};

/* which suites the host offers (the hostile checks take some away) */
static int g_offer = 0xFF;
enum { OFFER_PROP = 1, OFFER_EFFECT = 2, OFFER_PARAM = 4, OFFER_MEMORY = 8, OFFER_THREAD = 16, OFFER_MSG2 = 32, OFFER_MSG1 = 64 };

static const void *fetch_suite(OfxPropertySetHandle host, const char *name, int version) {
    (void)host;
    if (!name) return NULL;
    if (!strcmp(name, kOfxPropertySuite) && version == 1 && (g_offer & OFFER_PROP)) return &PROP_SUITE;
    if (!strcmp(name, kOfxImageEffectSuite) && version == 1 && (g_offer & OFFER_EFFECT)) return &EFFECT_SUITE;
    if (!strcmp(name, kOfxParameterSuite) && version == 1 && (g_offer & OFFER_PARAM)) return &PARAM_SUITE;
    if (!strcmp(name, kOfxMemorySuite) && version == 1 && (g_offer & OFFER_MEMORY)) return &MEMORY_SUITE;
    if (!strcmp(name, kOfxMultiThreadSuite) && version == 1 && (g_offer & OFFER_THREAD)) return &THREAD_SUITE;
    if (!strcmp(name, kOfxMessageSuite) && version == 2 && (g_offer & OFFER_MSG2)) return &MESSAGE_SUITE;
    if (!strcmp(name, kOfxMessageSuite) && version == 1 && (g_offer & OFFER_MSG1)) return &MESSAGE_SUITE;
    return NULL;
}

static const void *fetch_nothing(OfxPropertySetHandle host, const char *name, int version) {
    (void)host; (void)name; (void)version;
    return NULL;
}

/* ---- driver ------------------------------------------------------------------------------------- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static OfxPlugin *g_plugin;
static OfxHost g_hostrec;

static OfxStatus call(const char *action, const void *handle, OfxPropertySetHandle in, OfxPropertySetHandle out) {
    return g_plugin->mainEntry(action, handle, in, out);
}

static void status_line(const char *what, OfxStatus st) {
    pthread_mutex_lock(&g_out_lock);
    printf("STATUS %s %d\n", what, st);
    fflush(stdout);
    pthread_mutex_unlock(&g_out_lock);
}

static void fail(const char *why) {
    fprintf(stderr, "ofx_host: %s\n", why);
    exit(2);
}

static OfxImageEffectHandle new_effect(media *m) {
    OfxImageEffectHandle e = calloc(1, sizeof *e);
    e->props = props_new();
    e->params.props = props_new();
    e->m = m;
    return e;
}

/* An instance: a fresh effect with the descriptor's clips and parameters copied over, defaults set. */
static OfxImageEffectHandle instantiate(OfxImageEffectHandle desc, media *m, const char *context) {
    OfxImageEffectHandle e = new_effect(m);
    pSetString(e->props, kOfxImageEffectPropContext, 0, context);
    for (int k = 0; k < desc->n_clips; k++) {
        OfxPropertySetHandle p;
        eClipDefine(e, desc->clips[k].name, &p);
        pSetString(p, kOfxImageEffectPropPixelDepth, 0, depth_name(m->depth));
        pSetString(p, kOfxImageEffectPropComponents, 0, m->comps == 4 ? kOfxImageComponentRGBA : kOfxImageComponentRGB);
        pSetString(p, kOfxImageEffectPropPreMultiplication, 0, m->premult);
        pSetInt(p, kOfxImageClipPropConnected, 0, 1);
        pSetDouble(p, kOfxImageEffectPropFrameRate, 0, 25.0);
    }
    for (int k = 0; k < desc->params.n; k++) {
        struct OfxParamStruct *d = &desc->params.params[k];
        OfxPropertySetHandle p;
        prDefine(&e->params, d->type, d->name, &p);
        struct OfxParamStruct *q = &e->params.params[e->params.n - 1];
        if (is_int_kind(d->type)) pGetInt(d->props, kOfxParamPropDefault, 0, &q->ival);
        else if (!strcmp(d->type, kOfxParamTypeDouble)) pGetDouble(d->props, kOfxParamPropDefault, 0, &q->dval);
        else if (!strcmp(d->type, kOfxParamTypeString)) {
            char *s = NULL;
            pGetString(d->props, kOfxParamPropDefault, 0, &s);
            q->sval = strdup(s ? s : "");
        }
    }
    return e;
}

/* name=value: choices by option label or index, booleans 0/1/true/false. */
static int set_param(OfxImageEffectHandle inst, OfxImageEffectHandle desc, const char *assign) {
    const char *eq = strchr(assign, '=');
    if (!eq) return -1;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(eq - assign), assign);
    const char *v = eq + 1;
    OfxParamHandle h, dh;
    OfxPropertySetHandle p;
    if (prGetHandle(&inst->params, name, &h, &p) != kOfxStatOK) return -1;
    prGetHandle(&desc->params, name, &dh, &p);
    if (!strcmp(h->type, kOfxParamTypeChoice)) {
        int count = 0;
        pGetDimension(dh->props, kOfxParamPropChoiceOption, &count);
        for (int k = 0; k < count; k++) {
            char *o;
            if (pGetString(dh->props, kOfxParamPropChoiceOption, k, &o) == kOfxStatOK && !strcmp(o, v))
                return prSetValue(h, k);
        }
        return prSetValue(h, atoi(v));
    }
    if (!strcmp(h->type, kOfxParamTypeBoolean)) return prSetValue(h, (!strcmp(v, "true") || !strcmp(v, "1")) ? 1 : 0);
    if (!strcmp(h->type, kOfxParamTypeInteger)) return prSetValue(h, atoi(v));
    if (!strcmp(h->type, kOfxParamTypeDouble)) return prSetValue(h, atof(v));
    /* strings: "\n" in the argument stands for a line break (multi-line path lists) */
    char *s = strdup(v);
    for (char *c = s; (c = strstr(c, "\\n"));) { c[0] = '\n'; memmove(c + 1, c + 2, strlen(c + 2) + 1); }
    OfxStatus st = prSetValue(h, s);
    free(s);
    return st;
}

static void dump_params(OfxImageEffectHandle desc) {
    for (int k = 0; k < desc->params.n; k++) {
        struct OfxParamStruct *d = &desc->params.params[k];
        fc_buf b;
        fc_buf_init(&b);
        fc_buf_puts(&b, "{\"name\":");
        fc_buf_jstr(&b, d->name);
        fc_buf_puts(&b, ",\"type\":");
        fc_buf_jstr(&b, d->type);
        OfxPropertySetHandle p = d->props;
        for (int j = 0; j < p->n; j++) {
            prop *q = &p->props[j];
            fc_buf_puts(&b, ",");
            fc_buf_jstr(&b, q->name);
            fc_buf_puts(&b, ":[");
            for (int i = 0; i < q->n; i++) {
                if (i) fc_buf_puts(&b, ",");
                if (q->kind == 's') fc_buf_jstr(&b, q->s[i] ? q->s[i] : "");
                else if (q->kind == 'i') fc_buf_printf(&b, "%d", q->i[i]);
                else if (q->kind == 'd') fc_buf_printf(&b, "%.17g", q->d[i]);
                else fc_buf_puts(&b, "null");
            }
            fc_buf_puts(&b, "]");
        }
        fc_buf_puts(&b, "}");
        printf("PARAM %s\n", b.data);
        fc_buf_free(&b);
    }
}

static void dump_effect_props(OfxImageEffectHandle desc) {
    OfxPropertySetHandle p = desc->props;
    for (int j = 0; j < p->n; j++) {
        prop *q = &p->props[j];
        printf("EFFECTPROP %s", q->name);
        for (int i = 0; i < q->n; i++) {
            if (q->kind == 's') printf(" %s", q->s[i] ? q->s[i] : "");
            else if (q->kind == 'i') printf(" %d", q->i[i]);
            else if (q->kind == 'd') printf(" %g", q->d[i]);
        }
        printf("\n");
    }
    for (int k = 0; k < desc->n_clips; k++) {
        OfxPropertySetHandle c = desc->clips[k].props;
        for (int j = 0; j < c->n; j++) {
            prop *q = &c->props[j];
            printf("CLIPPROP %s %s", desc->clips[k].name, q->name);
            for (int i = 0; i < q->n; i++) if (q->kind == 's') printf(" %s", q->s[i]); else if (q->kind == 'i') printf(" %d", q->i[i]);
            printf("\n");
        }
    }
}

/* ---- media -------------------------------------------------------------------------------------- */

static media g_media;

/* Where OpenFX row y (0 = bottom) lives in the host's buffer. */
static int mem_row(const media *m, int y) { return m->top_down ? m->h - 1 - y : y; }

static void load_media(media *m, const char *pattern) {
    size_t bpp = (size_t)m->comps * m->depth, row = (size_t)m->w * bpp;
    m->row_bytes = (long)row + 16; /* padded rows: the plugin must honour row bytes */
    m->in = calloc((size_t)m->frames, sizeof(void *));
    m->src_ofx = calloc((size_t)m->frames, sizeof(void *));
    m->out = calloc((size_t)m->frames, sizeof(void *));
    for (int i = 0; i < m->frames; i++) {
        char path[4096];
        snprintf(path, sizeof path, pattern, i);
        FILE *f = fopen(path, "rb");
        if (!f) fail("cannot open an input frame");
        m->in[i] = malloc(row * m->h);
        if (fread(m->in[i], 1, row * m->h, f) != row * m->h) fail("short input frame");
        fclose(f);
        m->src_ofx[i] = malloc((size_t)m->row_bytes * m->h);
        m->out[i] = malloc((size_t)m->row_bytes * m->h);
        memset(m->out[i], 0x5A, (size_t)m->row_bytes * m->h); /* marks pixels the plugin never wrote */
        for (int y = 0; y < m->h; y++)
            memcpy(m->src_ofx[i] + (size_t)mem_row(m, y) * m->row_bytes, m->in[i] + (size_t)(m->h - 1 - y) * row, row);
    }
}

static void save_frame(media *m, int i, const char *pattern) {
    size_t row = (size_t)m->w * m->comps * m->depth;
    char path[4096];
    snprintf(path, sizeof path, pattern, i);
    FILE *f = fopen(path, "wb");
    if (!f) fail("cannot write an output frame");
    for (int y = m->h - 1; y >= 0; y--) fwrite(m->out[i] + (size_t)mem_row(m, y) * m->row_bytes, 1, row, f);
    fclose(f);
}

/* ---- rendering ---------------------------------------------------------------------------------- */

typedef struct {
    OfxImageEffectHandle inst;
    int first, step, count, tiles;
    const char *kill_cmd;
    int kill_frame, kill_ms;
    const char *before_cmd; /* run to completion before rendering before_frame */
    int before_frame;
} job;

typedef struct { const char *cmd; int ms; } killer;

/* --param-at F:name=value: a parameter the user changes just before frame F is rendered */
static OfxImageEffectHandle g_desc;
static const char *g_param_at[16];
static int g_param_at_frame[16], g_n_param_at;
static int set_param(OfxImageEffectHandle inst, OfxImageEffectHandle desc, const char *assign);

static void *run_killer(void *arg) {
    killer *k = arg;
    struct timespec ts = {k->ms / 1000, (k->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&g_out_lock);
    printf("KILL %s\n", k->cmd);
    fflush(stdout);
    pthread_mutex_unlock(&g_out_lock);
    if (system(k->cmd) != 0) fprintf(stderr, "ofx_host: kill command failed\n");
    return NULL;
}

static int g_tile_threads; /* render the tiles of a frame from one thread each, all at once */

typedef struct { OfxImageEffectHandle inst; int i, t, n; OfxStatus st; } tile_job;

static OfxStatus render_tile(OfxImageEffectHandle inst, int i, int t, int n) {
    media *m = inst->m;
    /* tiles: horizontal bands, last one taking the remainder */
    int y1 = m->h * t / n, y2 = m->h * (t + 1) / n;
    {
        OfxPropertySetHandle in = props_new();
        int win[4] = {0, y1, m->w, y2};
        double scale[2] = {m->scale, m->scale};
        pSetDouble(in, kOfxPropTime, 0, (double)i);
        pSetIntN(in, kOfxImageEffectPropRenderWindow, 4, win);
        pSetDoubleN(in, kOfxImageEffectPropRenderScale, 2, scale);
        pSetString(in, kOfxImageEffectPropFieldToRender, 0, "OfxFieldNone");
        OfxStatus st = call(kOfxImageEffectActionRender, inst, in, NULL);
        props_free(in);
        return st;
    }
}

static void *run_tile(void *arg) {
    tile_job *j = arg;
    j->st = render_tile(j->inst, j->i, j->t, j->n);
    return NULL;
}

static OfxStatus render_frame(OfxImageEffectHandle inst, int i, int tiles) {
    OfxStatus worst = kOfxStatOK;
    int n = tiles > 0 ? tiles : 1;
    if (g_tile_threads && n > 1 && n <= 16) {
        pthread_t th[16];
        tile_job jobs[16];
        for (int t = 0; t < n; t++) {
            jobs[t] = (tile_job){inst, i, t, n, kOfxStatOK};
            pthread_create(&th[t], NULL, run_tile, &jobs[t]);
        }
        for (int t = 0; t < n; t++) {
            pthread_join(th[t], NULL);
            if (jobs[t].st != kOfxStatOK) worst = jobs[t].st;
        }
        return worst;
    }
    for (int t = 0; t < n; t++) { /* top band first */
        OfxStatus st = render_tile(inst, i, t, n);
        if (st != kOfxStatOK) worst = st;
    }
    return worst;
}

static void *run_job(void *arg) {
    job *j = arg;
    for (int k = 0; k < j->count; k++) {
        int i = j->first + k * j->step;
        pthread_t kt;
        killer kk = {j->kill_cmd, j->kill_ms};
        if (j->before_cmd && i == j->before_frame) {
            pthread_mutex_lock(&g_out_lock);
            printf("BEFORE %s\n", j->before_cmd);
            fflush(stdout);
            pthread_mutex_unlock(&g_out_lock);
            if (system(j->before_cmd) != 0) fprintf(stderr, "ofx_host: --before command failed\n");
        }
        for (int a = 0; a < g_n_param_at; a++)
            if (g_param_at_frame[a] == i) {
                pthread_mutex_lock(&g_out_lock);
                printf("PARAMSET %d %s\n", i, g_param_at[a]);
                fflush(stdout);
                pthread_mutex_unlock(&g_out_lock);
                if (set_param(j->inst, g_desc, g_param_at[a]) != kOfxStatOK) fail("bad --param-at");
            }
        int killing = j->kill_cmd && i == j->kill_frame;
        if (killing) pthread_create(&kt, NULL, run_killer, &kk);
        double t0 = now_ms();
        OfxStatus st = render_frame(j->inst, i, j->tiles);
        double ms = now_ms() - t0;
        if (killing) pthread_join(kt, NULL);
        pthread_mutex_lock(&g_out_lock);
        printf("FRAME %d %d %.3f\n", i, st, ms);
        fflush(stdout);
        pthread_mutex_unlock(&g_out_lock);
    }
    return NULL;
}

/* ---- hostile checks ----------------------------------------------------------------------------- */

static void check(const char *name, OfxStatus st) {
    printf("CHECK %s %d\n", name, st);
    fflush(stdout);
}

static void hostile(media *m) {
    OfxHost nohost = {NULL, fetch_nothing};
    g_plugin->setHost(NULL);
    check("load_without_host", call(kOfxActionLoad, NULL, NULL, NULL));
    g_plugin->setHost(&nohost);
    check("load_without_suites", call(kOfxActionLoad, NULL, NULL, NULL));
    g_offer = OFFER_PROP;
    g_plugin->setHost(&g_hostrec);
    check("load_with_property_suite_only", call(kOfxActionLoad, NULL, NULL, NULL));
    OfxImageEffectHandle desc = new_effect(m);
    check("describe_after_failed_load", call(kOfxActionDescribe, desc, NULL, NULL));
    g_offer = OFFER_PROP | OFFER_EFFECT | OFFER_PARAM; /* no memory, thread or message suites */
    check("load_without_optional_suites", call(kOfxActionLoad, NULL, NULL, NULL));
    check("unknown_action", call("OfxActionNoSuchThing", NULL, NULL, NULL));
    check("null_action", call(NULL, NULL, NULL, NULL));
    check("describe_null_handle", call(kOfxActionDescribe, NULL, NULL, NULL));
    check("describe", call(kOfxActionDescribe, desc, NULL, NULL));
    OfxPropertySetHandle in = props_new();
    pSetString(in, kOfxImageEffectPropContext, 0, "OfxImageEffectContextTransition");
    check("describe_unsupported_context", call(kOfxImageEffectActionDescribeInContext, desc, in, NULL));
    pSetString(in, kOfxImageEffectPropContext, 0, kOfxImageEffectContextFilter);
    check("describe_in_context_null_handle", call(kOfxImageEffectActionDescribeInContext, NULL, in, NULL));
    check("describe_in_context", call(kOfxImageEffectActionDescribeInContext, desc, in, NULL));
    props_free(in);
    check("render_null_handle", call(kOfxImageEffectActionRender, NULL, NULL, NULL));
    check("render_on_descriptor", call(kOfxImageEffectActionRender, desc, NULL, NULL));
    check("create_instance_null_handle", call(kOfxActionCreateInstance, NULL, NULL, NULL));
    OfxImageEffectHandle inst = instantiate(desc, m, kOfxImageEffectContextFilter);
    check("create_instance", call(kOfxActionCreateInstance, inst, NULL, NULL));
    check("render_null_args", call(kOfxImageEffectActionRender, inst, NULL, NULL));
    OfxPropertySetHandle args = props_new();
    int win[4] = {0, 0, m->w, m->h};
    pSetIntN(args, kOfxImageEffectPropRenderWindow, 4, win);
    check("render_without_time", call(kOfxImageEffectActionRender, inst, args, NULL));
    pSetDouble(args, kOfxPropTime, 0, 0.0);
    int empty[4] = {10, 10, 10, 20};
    pSetIntN(args, kOfxImageEffectPropRenderWindow, 4, empty);
    check("render_empty_window", call(kOfxImageEffectActionRender, inst, args, NULL));
    int outside[4] = {-1000000, -1000000, 2000000, 2000000};
    pSetIntN(args, kOfxImageEffectPropRenderWindow, 4, outside);
    m->absurd = 1;
    check("render_absurd_bounds", call(kOfxImageEffectActionRender, inst, args, NULL));
    m->absurd = 0;
    m->null_data = 1;
    check("render_null_image_data", call(kOfxImageEffectActionRender, inst, args, NULL));
    m->null_data = 0;
    m->small_rows = 1;
    check("render_short_row_bytes", call(kOfxImageEffectActionRender, inst, args, NULL));
    m->small_rows = 0;
    m->half_depth = 1;
    check("render_half_depth", call(kOfxImageEffectActionRender, inst, args, NULL));
    m->half_depth = 0;
    m->mismatch = 1;
    check("render_mismatched_depths", call(kOfxImageEffectActionRender, inst, args, NULL));
    m->mismatch = 0;
    m->fail_time = 0;
    check("render_image_unavailable", call(kOfxImageEffectActionRender, inst, args, NULL));
    m->fail_time = -1;
    /* a window far larger than the image, with no server: clipped, source + banner, no crash */
    check("render_without_server", call(kOfxImageEffectActionRender, inst, args, NULL));
    props_free(args);
    check("is_identity", call(kOfxImageEffectActionIsIdentity, inst, NULL, NULL));
    check("regions_of_interest_null_args", call(kOfxImageEffectActionGetRegionsOfInterest, inst, NULL, NULL));
    check("purge_caches", call(kOfxActionPurgeCaches, inst, NULL, NULL));
    check("destroy_instance", call(kOfxActionDestroyInstance, inst, NULL, NULL));
    check("destroy_instance_twice", call(kOfxActionDestroyInstance, inst, NULL, NULL));
    check("render_after_destroy", call(kOfxImageEffectActionRender, inst, NULL, NULL));
    check("unload", call(kOfxActionUnload, NULL, NULL, NULL));
}

/* ---- main --------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    const char *bin = NULL, *in_pat = NULL, *out_pat = NULL, *context = kOfxImageEffectContextFilter, *kill = NULL;
    const char *before = NULL;
    int before_frame = -1, crop_rows[2] = {0, 0}, rerender_time = -1, rerender_from = -1;
    const char *params[64];
    int n_params = 0, threads = 1, tiles = 0, describe_only = 0, hostile_mode = 0, kill_frame = -1, kill_ms = 0;
    media *m = &g_media;
    m->comps = 4; m->depth = 1; m->frames = 1; m->premult = kOfxImageUnPreMultiplied; m->fail_time = -1;
    m->scale = 1.0; m->par = 1.0;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
#define ARG(flag) (!strcmp(o, flag) && v && (a++, 1))
        if (ARG("--plugin")) bin = v;
        else if (ARG("--in")) in_pat = v;
        else if (ARG("--out")) out_pat = v;
        else if (ARG("--width")) m->w = atoi(v);
        else if (ARG("--height")) m->h = atoi(v);
        else if (ARG("--comps")) m->comps = atoi(v);
        else if (ARG("--depth")) m->depth = !strcmp(v, "short") ? 2 : !strcmp(v, "float") ? 4 : 1;
        else if (ARG("--frames")) m->frames = atoi(v);
        else if (ARG("--premult")) m->premult = !strcmp(v, "premultiplied") ? kOfxImagePreMultiplied : !strcmp(v, "opaque") ? kOfxImageOpaque : kOfxImageUnPreMultiplied;
        else if (ARG("--param")) { if (n_params < 64) params[n_params++] = v; }
        else if (ARG("--threads")) threads = atoi(v);
        else if (ARG("--scale")) m->scale = atof(v);
        else if (ARG("--par")) m->par = atof(v);
        else if (ARG("--tiles")) tiles = atoi(v);
        else if (ARG("--context")) context = !strcmp(v, "general") ? kOfxImageEffectContextGeneral : kOfxImageEffectContextFilter;
        else if (ARG("--kill")) { kill_frame = atoi(v); const char *c1 = strchr(v, ':'); kill_ms = c1 ? atoi(c1 + 1) : 0; const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL; kill = c2 ? c2 + 1 : NULL; }
        else if (ARG("--before")) { before_frame = atoi(v); const char *c1 = strchr(v, ':'); before = c1 ? c1 + 1 : NULL; }
        else if (ARG("--offer")) g_offer = (int)strtol(v, NULL, 0);
        else if (ARG("--param-at")) { /* F:name=value */
            const char *c1 = strchr(v, ':');
            if (!c1 || g_n_param_at == 16) fail("--param-at takes F:name=value");
            g_param_at_frame[g_n_param_at] = atoi(v);
            g_param_at[g_n_param_at++] = c1 + 1;
        }
        else if (ARG("--rerender")) { /* T:J, after the run: time T again with input frame J's pixels */
            if (sscanf(v, "%d:%d", &rerender_time, &rerender_from) != 2) fail("--rerender takes T:J");
        }
        else if (ARG("--src-crop")) { /* x1,y1,x2,y2 in top-down rows: the source clip is that part only */
            int c[4];
            if (sscanf(v, "%d,%d,%d,%d", &c[0], &c[1], &c[2], &c[3]) != 4) fail("--src-crop takes x1,y1,x2,y2");
            m->crop = 1;
            m->crop_r[0] = c[0]; m->crop_r[2] = c[2];
            crop_rows[0] = c[1]; crop_rows[1] = c[3]; /* turned into OpenFX rows once the height is known */
        }
        else if (!strcmp(o, "--describe")) describe_only = 1;
        else if (!strcmp(o, "--top-down")) m->top_down = 1;
        else if (!strcmp(o, "--tile-threads")) g_tile_threads = 1;
        else if (!strcmp(o, "--hostile")) hostile_mode = 1;
        else { fprintf(stderr, "ofx_host: unknown argument %s\n", o); return 2; }
    }
    if (!bin) fail("--plugin is required");
    void *lib = dlopen(bin, RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "ofx_host: %s\n", dlerror()); return 2; }
    int (*count)(void) = (int (*)(void))dlsym(lib, "OfxGetNumberOfPlugins");
    OfxPlugin *(*get)(int) = (OfxPlugin * (*)(int)) dlsym(lib, "OfxGetPlugin");
    if (!count || !get) fail("the binary exports no OfxGetNumberOfPlugins/OfxGetPlugin");
    printf("PLUGINS %d\n", count());
    g_plugin = get(0);
    if (!g_plugin) fail("OfxGetPlugin(0) returned NULL");
    printf("PLUGIN %s %d %s %u.%u\n", g_plugin->pluginApi, g_plugin->apiVersion, g_plugin->pluginIdentifier,
           g_plugin->pluginVersionMajor, g_plugin->pluginVersionMinor);
    printf("PLUGIN1 %s\n", get(1) ? "non-null" : "null");
    g_hostrec.host = props_new();
    pSetString(g_hostrec.host, kOfxPropName, 0, "org.facecomp.testhost");
    pSetString(g_hostrec.host, kOfxPropLabel, 0, "facecomp test host");
    pSetInt(g_hostrec.host, kOfxImageEffectPropSupportsTiles, 0, 1);
    g_hostrec.fetchSuite = fetch_suite;

    if (hostile_mode) {
        if (!m->w) { m->w = 64; m->h = 48; }
        m->frames = 1;
        size_t row = (size_t)m->w * m->comps * m->depth;
        m->row_bytes = (long)row + 16;
        m->in = calloc(1, sizeof(void *));
        m->src_ofx = calloc(1, sizeof(void *));
        m->out = calloc(1, sizeof(void *));
        m->in[0] = calloc(row, (size_t)m->h);
        m->src_ofx[0] = calloc((size_t)m->row_bytes, (size_t)m->h);
        m->out[0] = calloc((size_t)m->row_bytes, (size_t)m->h);
        for (size_t k = 0; k < (size_t)m->row_bytes * m->h; k++) m->src_ofx[0][k] = (unsigned char)(k * 7);
        hostile(m);
        if (out_pat) save_frame(m, 0, out_pat);
        return 0;
    }

    g_plugin->setHost(&g_hostrec);
    status_line("load", call(kOfxActionLoad, NULL, NULL, NULL));
    OfxImageEffectHandle desc = new_effect(m);
    g_desc = desc;
    status_line("describe", call(kOfxActionDescribe, desc, NULL, NULL));
    OfxPropertySetHandle in = props_new();
    pSetString(in, kOfxImageEffectPropContext, 0, context);
    OfxStatus st = call(kOfxImageEffectActionDescribeInContext, desc, in, NULL);
    status_line("describe_in_context", st);
    props_free(in);
    if (describe_only) {
        dump_effect_props(desc);
        dump_params(desc);
        return 0;
    }
    if (st != kOfxStatOK) return 3;
    if (!in_pat || !m->w || !m->h) fail("--in, --width and --height are required to render");
    load_media(m, in_pat);
    if (m->crop) {
        m->crop_r[1] = m->h - crop_rows[1];
        m->crop_r[3] = m->h - crop_rows[0];
        if (m->crop_r[0] < 0 || m->crop_r[1] < 0 || m->crop_r[2] > m->w || m->crop_r[3] > m->h ||
            m->crop_r[2] <= m->crop_r[0] || m->crop_r[3] <= m->crop_r[1])
            fail("--src-crop lies outside the frame");
    }
    OfxImageEffectHandle inst = instantiate(desc, m, context);
    status_line("create_instance", call(kOfxActionCreateInstance, inst, NULL, NULL));
    for (int k = 0; k < n_params; k++)
        if (set_param(inst, desc, params[k]) != kOfxStatOK) { fprintf(stderr, "ofx_host: bad --param %s\n", params[k]); return 2; }

    /* regions of interest: the plugin asks for the whole source */
    OfxPropertySetHandle rin = props_new(), rout = props_new();
    int rwin[4] = {0, 0, m->w, m->h / 2};
    pSetDouble(rin, kOfxPropTime, 0, 0);
    pSetIntN(rin, kOfxImageEffectPropRenderWindow, 4, rwin);
    status_line("regions_of_interest", call(kOfxImageEffectActionGetRegionsOfInterest, inst, rin, rout));
    double roi[4] = {0};
    pGetDoubleN(rout, "OfxImageClipPropRoI_Source", 4, roi);
    printf("ROI %g %g %g %g\n", roi[0], roi[1], roi[2], roi[3]);
    status_line("is_identity", call(kOfxImageEffectActionIsIdentity, inst, rin, rout));
    props_free(rin);
    props_free(rout);

    if (threads < 1) threads = 1;
    pthread_t th[16];
    job jobs[16];
    if (threads > 16) threads = 16;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){inst, t, threads, (m->frames - t + threads - 1) / threads, tiles, kill, kill_frame, kill_ms, before, before_frame};
        pthread_create(&th[t], NULL, run_job, &jobs[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    if (rerender_time >= 0) {
        /* an upstream change: the source at this time now holds another input frame's pixels, same
         * time and parameters; the frame is rendered again (the same way: tiles, threads) */
        if (rerender_time >= m->frames || rerender_from < 0 || rerender_from >= m->frames) fail("bad --rerender");
        size_t row = (size_t)m->w * m->comps * m->depth;
        for (int y = 0; y < m->h; y++)
            memcpy(m->src_ofx[rerender_time] + (size_t)mem_row(m, y) * m->row_bytes,
                   m->in[rerender_from] + (size_t)(m->h - 1 - y) * row, row);
        double t0 = now_ms();
        OfxStatus rst = render_frame(inst, rerender_time, tiles);
        printf("RERENDER %d %d %.3f\n", rerender_time, rst, now_ms() - t0);
        fflush(stdout);
    }
    if (out_pat)
        for (int i = 0; i < m->frames; i++) save_frame(m, i, out_pat);
    status_line("destroy_instance", call(kOfxActionDestroyInstance, inst, NULL, NULL));
    status_line("unload", call(kOfxActionUnload, NULL, NULL, NULL));
    return 0;
}
