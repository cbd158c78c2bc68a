/*
 * facereplace.c - "Face Replace (disclosed)", the facecomp OpenFX image-effect plugin.
 *
 * The plugin does no image processing of its own: each render sends the source frame to the facecomp
 * render server (`facecomp serve`) through shared memory and copies back what the server returns, which
 * the server has always passed through the one stamping step (the SYNTHETIC label).  When the server is
 * missing, crashed, too slow or refuses the settings, the output is the source frame, unreplaced, with a
 * red error banner drawn here, and the reason goes to the host's message suite; the next render starts
 * a new server.  So a replaced frame without the label can never leave the plugin: it only ever copies
 * pixels from a successful server reply.
 *
 * Parameters come from Resources/parameters.json (written at build time from `facecomp spec --ofx-json`),
 * so the inspector shows exactly the settings every other host shows, under the same names.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef POLLRDHUP
#define POLLRDHUP 0 /* Linux only; POLLIN alone sees the end of file elsewhere */
#endif

#include "fc_banner.h"
#include "fc_json.h"
#include "fc_wire.h"
#include "ofx_api.h"

#define FC_PLUGIN_ID "org.facecomp.FaceReplace"
#define FC_VERSION_MAJOR 1
#define FC_VERSION_MINOR 0
#define FC_BANNER_TEXT "facecomp: render server unavailable - see log"
#define FC_MAX_SIDE 65536                        /* larger claimed images are refused as absurd */
#define FC_MAX_BYTES ((size_t)8 << 30)           /* and so is more than 8 GiB of pixels */
#define FC_POOL 8                                /* idle connections kept per instance */
#define FC_PARAM_TIMEOUT "server_timeout"        /* plugin's own parameters, beyond the settings */
#define FC_PARAM_CLIP "clip_file"

/* ---- host and suites (set once by the host before any action) --------------------------------- */

static OfxHost *g_host;
static const OfxPropertySuiteV1 *g_prop;
static const OfxImageEffectSuiteV1 *g_effect;
static const OfxParameterSuiteV1 *g_param;
static const OfxMessageSuiteV1 *g_msg1;
static const OfxMessageSuiteV2 *g_msg2;
/* One server start at a time across every instance and render thread of this process. */
static pthread_mutex_t g_start_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- per-instance state ------------------------------------------------------------------------ */

typedef enum { PT_STRING, PT_CHOICE, PT_DOUBLE, PT_INT, PT_BOOL } fc_ptype;

typedef struct {
    char *name;
    fc_ptype type;
    int multi;          /* multi-line string: one entry per line, sent as a list */
    int has_none;       /* integer with a value that means "automatic" */
    int none_value;
    int n_values;
    char **values;      /* choice: the settings value of each option, as JSON text */
    OfxParamHandle handle;
} fc_param;

#define FC_CACHE 4

/* One `open` of a server session (each `open` needs its `close`, docs/hosts-contract.md).  The current
 * one serves the parameters as they are; when they change, a new one is opened and the old one is
 * retired, closed on the server as soon as no render thread uses it (it would otherwise hold the
 * server's memory until its LRU eviction). */
typedef enum { SESS_CURRENT, SESS_RETIRED, SESS_GONE } fc_sess_state;

typedef struct fc_session {
    char *key;            /* settings + clip it was opened for */
    char *id;             /* JSON text of the server's session id */
    int users;            /* render threads using it now */
    fc_sess_state state;  /* GONE: the server no longer has it (restarted, closed it): no close to send */
    struct fc_session *next;
} fc_session;

typedef struct {
    char *key;             /* settings, clip, layout of the frame; NULL: a free slot */
    double time;
    unsigned char *pixels; /* the server's result, in its shared memory (no copy); NULL while `busy` */
    int fd;                /* that memory's fd, valid while `pixels` is set */
    size_t bytes;
    int busy;              /* a render thread is getting this frame from the server */
    unsigned long used;
} fc_cached;

typedef struct {
    OfxImageEffectHandle effect;
    OfxImageClipHandle src, dst;
    int n_params;
    fc_param *params;
    OfxParamHandle timeout_param, clip_param;
    char clip_id[64];

    pthread_mutex_t lock; /* guards everything below */
    int idle[FC_POOL];
    int n_idle;
    fc_session *sessions; /* the current one and retired ones not yet closed */
    int failing;          /* the last render failed: the message is up */
    int noted_alone;      /* the "frames analysed alone" note was given */
    /* shared-memory frames kept for reuse (no new pages to fault in every frame) */
    int shm_fd[FC_POOL];
    void *shm_map[FC_POOL];
    size_t shm_size[FC_POOL];
    int n_shm;
    /* replaced frames kept while a host renders them in tiles (several render threads, several frames):
     * every tile of a frame is cut from one server result, even when threads render its tiles at once */
    fc_cached cache[FC_CACHE];
    unsigned long cache_clock;
    pthread_cond_t cache_cond;
} fc_instance;

/* ---- small helpers ------------------------------------------------------------------------------ */

static void log_stderr(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("facecomp-ofx: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Posts a message through whichever message suite the host has; always also to stderr. */
static void post(fc_instance *inst, const char *type, int persistent, const char *text) {
    log_stderr("%s", text);
    void *handle = inst ? (void *)inst->effect : NULL;
    if (persistent && g_msg2 && g_msg2->setPersistentMessage)
        g_msg2->setPersistentMessage(handle, type, FC_PLUGIN_ID, "%s", text);
    else if (g_msg1 && g_msg1->message)
        g_msg1->message(handle, type, FC_PLUGIN_ID, "%s", text);
}

static void clear_persistent(fc_instance *inst) {
    if (g_msg2 && g_msg2->clearPersistentMessage) g_msg2->clearPersistentMessage(inst->effect);
}

static int get_string(OfxPropertySetHandle p, const char *name, int i, const char **out) {
    char *s = NULL;
    if (!p || g_prop->propGetString(p, name, i, &s) != kOfxStatOK || !s) return -1;
    *out = s;
    return 0;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Directory holding the bundle's resources: <bundle>/Contents/Resources, found from this binary's own
 * path (<bundle>/Contents/<arch>/FaceReplace.ofx), so it works wherever the bundle was installed. */
static int resources_dir(char *out, size_t cap) {
    const char *env = getenv("FACECOMP_OFX_RESOURCES");
    if (env && *env) return snprintf(out, cap, "%s", env) < (int)cap ? 0 : -1;
    Dl_info info;
    if (!dladdr((void *)&resources_dir, &info) || !info.dli_fname) return -1;
    char path[PATH_MAX];
    if (!realpath(info.dli_fname, path)) snprintf(path, sizeof path, "%s", info.dli_fname);
    for (int i = 0; i < 2; i++) { /* drop the file name, then the arch folder */
        char *slash = strrchr(path, '/');
        if (!slash) return -1;
        *slash = 0;
    }
    return snprintf(out, cap, "%s/Resources", path) < (int)cap ? 0 : -1;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > (16u << 20)) break; /* a descriptor file is a few KiB; refuse anything huge */
            char *b = realloc(buf, cap);
            if (!b) break;
            buf = b;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096) {
            fclose(f);
            buf[n] = 0;
            *len = n;
            return buf;
        }
    }
    fclose(f);
    free(buf);
    return NULL;
}

/* parameters.json from the resources folder, parsed; NULL with a message when missing or malformed. */
static fc_json *load_descriptors(void) {
    char dir[PATH_MAX], path[PATH_MAX + 32];
    if (resources_dir(dir, sizeof dir) != 0) {
        post(NULL, kOfxMessageError, 0, "facecomp: cannot locate the bundle's Resources folder");
        return NULL;
    }
    snprintf(path, sizeof path, "%s/parameters.json", dir);
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text) {
        char m[PATH_MAX + 128];
        snprintf(m, sizeof m, "facecomp: %s is missing; rebuild the bundle with `facecomp ofx build`", path);
        post(NULL, kOfxMessageError, 0, m);
        return NULL;
    }
    const char *err = NULL;
    fc_json *v = fc_json_parse(text, len, &err);
    free(text);
    if (!v || v->type != FC_JARR) {
        char m[PATH_MAX + 128];
        snprintf(m, sizeof m, "facecomp: %s is not a JSON list (%s)", path, err ? err : "wrong type");
        post(NULL, kOfxMessageError, 0, m);
        fc_json_free(v);
        return NULL;
    }
    return v;
}

static int ptype_of(const char *type, fc_ptype *out) {
    static const struct { const char *name; fc_ptype t; } map[] = {
        {"string", PT_STRING}, {"choice", PT_CHOICE}, {"double", PT_DOUBLE}, {"integer", PT_INT}, {"boolean", PT_BOOL}};
    for (size_t i = 0; type && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(type, map[i].name) == 0) { *out = map[i].t; return 0; }
    return -1;
}

/* A parameter name the host and the server can both take: ASCII letters, digits and underscores. */
static int valid_name(const char *s) {
    if (!s || !*s || strlen(s) > 63) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

/* ---- describe ----------------------------------------------------------------------------------- */

static OfxStatus describe(OfxImageEffectHandle effect) {
    OfxPropertySetHandle p;
    if (!effect) return kOfxStatErrBadHandle;
    if (g_effect->getPropertySet(effect, &p) != kOfxStatOK || !p) return kOfxStatErrBadHandle;
    g_prop->propSetString(p, kOfxPropLabel, 0, "Face Replace (disclosed)");
    g_prop->propSetString(p, kOfxPropShortLabel, 0, "Face Replace");
    g_prop->propSetString(p, kOfxPropLongLabel, 0, "Face Replace (disclosed)");
    g_prop->propSetString(p, kOfxImageEffectPluginPropGrouping, 0, "facecomp");
    g_prop->propSetString(p, kOfxPropPluginDescription, 0,
                          "Replaces faces through the facecomp render server. Every replaced frame carries "
                          "the visible SYNTHETIC label; it cannot be switched off. On any server error the "
                          "source frame passes through unreplaced under a red error banner.");
    g_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 0, kOfxImageEffectContextFilter);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 1, kOfxImageEffectContextGeneral);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 0, kOfxBitDepthByte);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 1, kOfxBitDepthShort);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 2, kOfxBitDepthFloat);
    g_prop->propSetString(p, kOfxImageEffectPluginRenderThreadSafety, 0, kOfxImageEffectRenderFullySafe);
    g_prop->propSetInt(p, kOfxImageEffectPluginPropHostFrameThreading, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPluginPropSingleInstance, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsMultiResolution, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsMultipleClipDepths, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsMultipleClipPARs, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPluginPropFieldRenderTwiceAlways, 0, 0);
    return kOfxStatOK;
}

static OfxStatus define_clip(OfxImageEffectHandle effect, const char *name) {
    OfxPropertySetHandle c = NULL;
    if (g_effect->clipDefine(effect, name, &c) != kOfxStatOK || !c) return kOfxStatFailed;
    g_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
    g_prop->propSetString(c, kOfxImageEffectPropSupportedComponents, 1, kOfxImageComponentRGB);
    g_prop->propSetInt(c, kOfxImageEffectPropSupportsTiles, 0, 1);
    return kOfxStatOK;
}

/* Defines one parameter from its descriptor; returns 0 on success. */
static int define_param(OfxParamSetHandle set, const fc_json *d, const char *parent) {
    const char *name = fc_json_str(d, "name"), *label = fc_json_str(d, "label"), *hint = fc_json_str(d, "hint");
    fc_ptype t;
    if (!valid_name(name) || ptype_of(fc_json_str(d, "type"), &t) != 0) return -1;
    static const char *const kinds[] = {kOfxParamTypeString, kOfxParamTypeChoice, kOfxParamTypeDouble,
                                        kOfxParamTypeInteger, kOfxParamTypeBoolean};
    OfxPropertySetHandle p = NULL;
    if (g_param->paramDefine(set, kinds[t], name, &p) != kOfxStatOK || !p) return -1;
    g_prop->propSetString(p, kOfxPropLabel, 0, label ? label : name);
    if (hint) g_prop->propSetString(p, kOfxParamPropHint, 0, hint);
    g_prop->propSetString(p, kOfxParamPropScriptName, 0, name);
    if (parent) g_prop->propSetString(p, kOfxParamPropParent, 0, parent);
    const fc_json *def = fc_json_get(d, "default");
    int has_min = fc_json_get(d, "min") && fc_json_get(d, "min")->type == FC_JNUM;
    int has_max = fc_json_get(d, "max") && fc_json_get(d, "max")->type == FC_JNUM;
    double mn = fc_json_num(d, "min", 0), mx = fc_json_num(d, "max", 0);
    /* The label may grow but never shrink, whatever the descriptor says. */
    if (strcmp(name, "label_scale") == 0 && (!has_min || mn < 1.0)) { has_min = 1; mn = 1.0; }
    switch (t) {
    case PT_STRING: {
        const char *mode = fc_json_str(d, "string_mode");
        const char *ofx_mode = kOfxParamStringIsSingleLine;
        if (mode && strcmp(mode, "file") == 0) ofx_mode = kOfxParamStringIsFilePath;
        else if (mode && strcmp(mode, "multi") == 0) ofx_mode = kOfxParamStringIsMultiLine;
        g_prop->propSetString(p, kOfxParamPropStringMode, 0, ofx_mode);
        if (mode && strcmp(mode, "file") == 0) g_prop->propSetInt(p, kOfxParamPropStringFilePathExists, 0, 1);
        g_prop->propSetString(p, kOfxParamPropDefault, 0, def && def->type == FC_JSTR ? def->str : "");
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
        break;
    }
    case PT_CHOICE: {
        const fc_json *opts = fc_json_get(d, "options");
        int i = 0;
        for (const fc_json *o = opts ? opts->child : NULL; o; o = o->next)
            if (o->type == FC_JSTR) g_prop->propSetString(p, kOfxParamPropChoiceOption, i++, o->str);
        g_prop->propSetInt(p, kOfxParamPropDefault, 0, def && def->type == FC_JNUM ? (int)def->num : 0);
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
        break;
    }
    case PT_DOUBLE:
        g_prop->propSetDouble(p, kOfxParamPropDefault, 0, def && def->type == FC_JNUM ? def->num : (has_min ? mn : 0));
        if (has_min) { g_prop->propSetDouble(p, kOfxParamPropMin, 0, mn); g_prop->propSetDouble(p, kOfxParamPropDisplayMin, 0, mn); }
        if (has_max) { g_prop->propSetDouble(p, kOfxParamPropMax, 0, mx); g_prop->propSetDouble(p, kOfxParamPropDisplayMax, 0, mx); }
        g_prop->propSetDouble(p, kOfxParamPropIncrement, 0, 0.01);
        g_prop->propSetInt(p, kOfxParamPropDigits, 0, 3);
        /* A clip session renders with one set of settings (tracking and colour are computed over the
           clip), so a keyframed value would open a session and an engine per distinct value. */
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
        break;
    case PT_INT:
        g_prop->propSetInt(p, kOfxParamPropDefault, 0, def && def->type == FC_JNUM ? (int)def->num : 0);
        if (has_min) { g_prop->propSetInt(p, kOfxParamPropMin, 0, (int)mn); g_prop->propSetInt(p, kOfxParamPropDisplayMin, 0, (int)mn); }
        if (has_max) { g_prop->propSetInt(p, kOfxParamPropMax, 0, (int)mx); g_prop->propSetInt(p, kOfxParamPropDisplayMax, 0, (int)mx); }
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
        break;
    case PT_BOOL:
        g_prop->propSetInt(p, kOfxParamPropDefault, 0, def && def->type == FC_JBOOL ? (int)def->num : 0);
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
        break;
    }
    return 0;
}

static OfxStatus describe_in_context(OfxImageEffectHandle effect, OfxPropertySetHandle in_args) {
    if (!effect) return kOfxStatErrBadHandle;
    const char *context = NULL;
    if (in_args && get_string(in_args, kOfxImageEffectPropContext, 0, &context) == 0 &&
        strcmp(context, kOfxImageEffectContextFilter) != 0 && strcmp(context, kOfxImageEffectContextGeneral) != 0)
        return kOfxStatErrMissingHostFeature; /* the specification's answer: the host ignores that context */
    fc_json *descs = load_descriptors();
    if (!descs) return kOfxStatFailed;
    OfxStatus st = define_clip(effect, kOfxImageEffectSimpleSourceClipName);
    if (st == kOfxStatOK) st = define_clip(effect, kOfxImageEffectOutputClipName);
    OfxParamSetHandle set = NULL;
    if (st == kOfxStatOK && (g_effect->getParamSet(effect, &set) != kOfxStatOK || !set)) st = kOfxStatFailed;
    if (st != kOfxStatOK) { fc_json_free(descs); return st; }
    /* one group per settings group, in the order they first appear */
    char groups[32][40];
    int n_groups = 0, n_defined = 0;
    for (const fc_json *d = descs->child; d; d = d->next) {
        const char *g = fc_json_str(d, "group");
        char gname[48] = {0};
        if (valid_name(g) && strlen(g) < 32) {
            snprintf(gname, sizeof gname, "group_%s", g);
            int known = 0;
            for (int i = 0; i < n_groups; i++) known |= strcmp(groups[i], gname) == 0;
            if (!known && n_groups < 32) {
                OfxPropertySetHandle gp = NULL;
                if (g_param->paramDefine(set, kOfxParamTypeGroup, gname, &gp) == kOfxStatOK && gp) {
                    char label[40];
                    snprintf(label, sizeof label, "%s", g);
                    label[0] = (char)(label[0] >= 'a' && label[0] <= 'z' ? label[0] - 32 : label[0]);
                    g_prop->propSetString(gp, kOfxPropLabel, 0, label);
                    snprintf(groups[n_groups++], sizeof groups[0], "%s", gname);
                } else {
                    gname[0] = 0;
                }
            }
        }
        if (define_param(set, d, gname[0] ? gname : NULL) == 0) n_defined++;
        else log_stderr("skipped an unusable parameter descriptor (%s)", fc_json_str(d, "name") ? fc_json_str(d, "name") : "?");
    }
    fc_json_free(descs);
    /* the plugin's own: where the clip's media is (hosts do not tell plugins), and how long to wait */
    OfxPropertySetHandle p = NULL;
    if (g_param->paramDefine(set, kOfxParamTypeString, FC_PARAM_CLIP, &p) == kOfxStatOK && p) {
        g_prop->propSetString(p, kOfxPropLabel, 0, "Clip file (optional)");
        g_prop->propSetString(p, kOfxParamPropHint, 0,
                              "the media file this clip comes from: tracking then uses the neighbouring frames; "
                              "empty: each frame is analysed alone");
        g_prop->propSetString(p, kOfxParamPropStringMode, 0, kOfxParamStringIsFilePath);
        g_prop->propSetString(p, kOfxParamPropDefault, 0, "");
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
    }
    if (g_param->paramDefine(set, kOfxParamTypeDouble, FC_PARAM_TIMEOUT, &p) == kOfxStatOK && p) {
        g_prop->propSetString(p, kOfxPropLabel, 0, "Server timeout (s)");
        g_prop->propSetString(p, kOfxParamPropHint, 0,
                              "longest wait for the render server per frame (and for it to start); past it the "
                              "source passes through under an error banner");
        g_prop->propSetDouble(p, kOfxParamPropDefault, 0, 60.0);
        g_prop->propSetDouble(p, kOfxParamPropMin, 0, 0.1);
        g_prop->propSetDouble(p, kOfxParamPropMax, 0, 3600.0);
        g_prop->propSetDouble(p, kOfxParamPropDisplayMin, 0, 1.0);
        g_prop->propSetDouble(p, kOfxParamPropDisplayMax, 0, 600.0);
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
    }
    return n_defined > 0 ? kOfxStatOK : kOfxStatFailed;
}

/* ---- instances ---------------------------------------------------------------------------------- */

static fc_instance *instance_of(OfxImageEffectHandle effect) {
    OfxPropertySetHandle p = NULL;
    void *data = NULL;
    if (!effect || g_effect->getPropertySet(effect, &p) != kOfxStatOK || !p) return NULL;
    if (g_prop->propGetPointer(p, kOfxPropInstanceData, 0, &data) != kOfxStatOK) return NULL;
    fc_instance *inst = data;
    return inst && inst->effect == effect ? inst : NULL;
}

static void free_params(fc_param *ps, int n) {
    for (int i = 0; i < n; i++) {
        free(ps[i].name);
        for (int j = 0; j < ps[i].n_values; j++) free(ps[i].values[j]);
        free(ps[i].values);
    }
    free(ps);
}

/* JSON text of one descriptor value (for a choice's settings values). */
static char *json_text(const fc_json *v) {
    fc_buf b;
    fc_buf_init(&b);
    if (!v || v->type == FC_JNULL) fc_buf_puts(&b, "null");
    else if (v->type == FC_JBOOL) fc_buf_puts(&b, v->num ? "true" : "false");
    else if (v->type == FC_JNUM) fc_buf_printf(&b, "%.17g", v->num);
    else if (v->type == FC_JSTR) fc_buf_jstr(&b, v->str);
    else fc_buf_puts(&b, "null");
    if (b.failed) { fc_buf_free(&b); return NULL; }
    return b.data;
}

static OfxStatus create_instance(OfxImageEffectHandle effect) {
    OfxPropertySetHandle p = NULL;
    if (!effect || g_effect->getPropertySet(effect, &p) != kOfxStatOK || !p) return kOfxStatErrBadHandle;
    fc_instance *inst = calloc(1, sizeof *inst);
    if (!inst) return kOfxStatErrMemory;
    inst->effect = effect;
    pthread_mutex_init(&inst->lock, NULL);
    pthread_cond_init(&inst->cache_cond, NULL);
    OfxPropertySetHandle cp;
    if (g_effect->clipGetHandle(effect, kOfxImageEffectSimpleSourceClipName, &inst->src, &cp) != kOfxStatOK ||
        g_effect->clipGetHandle(effect, kOfxImageEffectOutputClipName, &inst->dst, &cp) != kOfxStatOK ||
        !inst->src || !inst->dst) {
        pthread_mutex_destroy(&inst->lock);
        free(inst);
        return kOfxStatErrBadHandle;
    }
    OfxParamSetHandle set = NULL;
    fc_json *descs = load_descriptors();
    if (g_effect->getParamSet(effect, &set) != kOfxStatOK || !set || !descs) {
        fc_json_free(descs);
        pthread_mutex_destroy(&inst->lock);
        free(inst);
        return kOfxStatFailed;
    }
    int n = fc_json_len(descs);
    inst->params = calloc((size_t)(n > 0 ? n : 1), sizeof(fc_param));
    for (const fc_json *d = descs->child; d && inst->params; d = d->next) {
        fc_param *fp = &inst->params[inst->n_params];
        const char *name = fc_json_str(d, "name");
        OfxPropertySetHandle pp;
        if (!valid_name(name) || ptype_of(fc_json_str(d, "type"), &fp->type) != 0) continue;
        if (g_param->paramGetHandle(set, name, &fp->handle, &pp) != kOfxStatOK || !fp->handle) continue;
        fp->name = xstrdup(name);
        const char *mode = fc_json_str(d, "string_mode");
        fp->multi = mode && strcmp(mode, "multi") == 0;
        const fc_json *nv = fc_json_get(d, "none_value");
        if (nv && nv->type == FC_JNUM) { fp->has_none = 1; fp->none_value = (int)nv->num; }
        const fc_json *vals = fc_json_get(d, "values");
        if (!vals) vals = fc_json_get(d, "options");
        int nvals = fc_json_len(vals);
        if (fp->type == PT_CHOICE && nvals > 0) {
            fp->values = calloc((size_t)nvals, sizeof(char *));
            for (const fc_json *v = vals->child; v && fp->values; v = v->next) fp->values[fp->n_values++] = json_text(v);
        }
        inst->n_params++;
    }
    fc_json_free(descs);
    g_param->paramGetHandle(set, FC_PARAM_TIMEOUT, &inst->timeout_param, &cp);
    g_param->paramGetHandle(set, FC_PARAM_CLIP, &inst->clip_param, &cp);
    unsigned long long r = (unsigned long long)(uintptr_t)inst ^ ((unsigned long long)getpid() << 32) ^
                           (unsigned long long)(fc_now() * 1e6);
    snprintf(inst->clip_id, sizeof inst->clip_id, "ofx-%016llx", r);
    g_prop->propSetPointer(p, kOfxPropInstanceData, 0, inst);
    return kOfxStatOK;
}

static void drop_connections_locked(fc_instance *inst) {
    for (int i = 0; i < inst->n_idle; i++) close(inst->idle[i]);
    inst->n_idle = 0;
}

static void drop_shm_locked(fc_instance *inst) {
    for (int i = 0; i < inst->n_shm; i++) {
        munmap(inst->shm_map[i], inst->shm_size[i]);
        close(inst->shm_fd[i]);
    }
    inst->n_shm = 0;
}

/* A shared-memory frame of exactly `bytes`: a kept one, else a new one.  -1 on failure. */
static int take_shm(fc_instance *inst, size_t bytes, void **map) {
    pthread_mutex_lock(&inst->lock);
    for (int i = 0; i < inst->n_shm; i++)
        if (inst->shm_size[i] == bytes) {
            int fd = inst->shm_fd[i];
            *map = inst->shm_map[i];
            inst->n_shm--;
            inst->shm_fd[i] = inst->shm_fd[inst->n_shm];
            inst->shm_map[i] = inst->shm_map[inst->n_shm];
            inst->shm_size[i] = inst->shm_size[inst->n_shm];
            pthread_mutex_unlock(&inst->lock);
            return fd;
        }
    pthread_mutex_unlock(&inst->lock);
    return fc_shm_create(bytes, map);
}

/* Keeps a frame's shared memory for the next render (only after the server answered: a server that
 * timed out may still write into it later). */
static void give_shm_locked(fc_instance *inst, int fd, void *map, size_t bytes) {
    if (inst->n_shm == FC_POOL) { /* full: the oldest goes */
        munmap(inst->shm_map[0], inst->shm_size[0]);
        close(inst->shm_fd[0]);
        inst->n_shm--;
        memmove(inst->shm_fd, inst->shm_fd + 1, sizeof(int) * (size_t)inst->n_shm);
        memmove(inst->shm_map, inst->shm_map + 1, sizeof(void *) * (size_t)inst->n_shm);
        memmove(inst->shm_size, inst->shm_size + 1, sizeof(size_t) * (size_t)inst->n_shm);
    }
    inst->shm_fd[inst->n_shm] = fd;
    inst->shm_map[inst->n_shm] = map;
    inst->shm_size[inst->n_shm++] = bytes;
}

static void give_shm(fc_instance *inst, int fd, void *map, size_t bytes) {
    pthread_mutex_lock(&inst->lock);
    give_shm_locked(inst, fd, map, bytes);
    pthread_mutex_unlock(&inst->lock);
}

static void session_free(fc_session *r) {
    free(r->key);
    free(r->id);
    free(r);
}

static void session_unlink_locked(fc_instance *inst, fc_session *r) {
    for (fc_session **p = &inst->sessions; *p; p = &(*p)->next)
        if (*p == r) { *p = r->next; return; }
}

/* The server that held the sessions is gone (stopped, crashed): none needs a close any more. */
static void sessions_forget_locked(fc_instance *inst) {
    for (fc_session **p = &inst->sessions; *p;) {
        fc_session *r = *p;
        r->state = SESS_GONE;
        if (r->users == 0) { *p = r->next; session_free(r); }
        else p = &r->next;
    }
}

static void sessions_forget(fc_instance *inst) {
    pthread_mutex_lock(&inst->lock);
    sessions_forget_locked(inst);
    pthread_mutex_unlock(&inst->lock);
}

/* A render thread is done with `r`; `gone`: the server said it has no such session. */
static void session_release(fc_instance *inst, fc_session *r, int gone) {
    if (!r) return;
    pthread_mutex_lock(&inst->lock);
    if (gone) r->state = SESS_GONE;
    if (--r->users == 0 && r->state == SESS_GONE) {
        session_unlink_locked(inst, r);
        session_free(r);
    }
    pthread_mutex_unlock(&inst->lock);
}

/* Sends `close` on the healthy connection `s` for every retired session no thread uses.  -1 when the
 * connection failed meanwhile (the caller then closes it); the closes are best effort either way. */
static int close_retired(fc_instance *inst, int s, double deadline) {
    fc_session *todo = NULL;
    pthread_mutex_lock(&inst->lock);
    for (fc_session **p = &inst->sessions; *p;) {
        fc_session *r = *p;
        if (r->state == SESS_RETIRED && r->users == 0) { *p = r->next; r->next = todo; todo = r; }
        else p = &r->next;
    }
    pthread_mutex_unlock(&inst->lock);
    int rc = 0;
    while (todo) {
        fc_session *r = todo;
        todo = r->next;
        if (rc == 0) {
            fc_buf b;
            fc_buf_init(&b);
            fc_buf_printf(&b, "{\"op\":\"close\",\"session\":%s}", r->id);
            const char *why = NULL;
            fc_json *reply = b.failed ? NULL : fc_call(s, b.data, b.len, -1, deadline, &why, NULL);
            if (!reply && !b.failed) rc = -1; /* transport: the connection is unusable */
            fc_json_free(reply);
            fc_buf_free(&b);
        }
        session_free(r);
    }
    return rc;
}

static void free_cached(fc_cached *c) {
    free(c->key);
    if (c->pixels) {
        munmap(c->pixels, c->bytes);
        close(c->fd);
    }
    memset(c, 0, sizeof *c);
}

/* Frees a kept frame whose slot is taken for another; its shared memory goes back to the pool, so a
 * host rendering frame after frame in tiles reuses the same memory (no new pages to fault in). */
static void recycle_cached_locked(fc_instance *inst, fc_cached *c) {
    if (c->pixels) {
        give_shm_locked(inst, c->fd, c->pixels, c->bytes);
        c->pixels = NULL;
    }
    free_cached(c);
}

/* Drops the kept frames (those being fetched stay: their threads finish them). */
static void drop_cache_locked(fc_instance *inst) {
    for (int i = 0; i < FC_CACHE; i++)
        if (!inst->cache[i].busy) free_cached(&inst->cache[i]);
}

typedef enum { CACHE_HIT, CACHE_CLAIMED, CACHE_NONE } fc_cache_result;

/* Under the lock: copies a kept frame's window, or claims a slot for this thread to fill, waiting while
 * another thread fetches the same frame.  *slot gets the claimed slot. */
static fc_cache_result cache_lookup_locked(fc_instance *inst, const char *key, double time, size_t bytes,
                                           double deadline, int *slot, int *waited) {
    *slot = -1;
    for (;;) {
        int found = -1;
        for (int i = 0; i < FC_CACHE; i++)
            if (inst->cache[i].key && inst->cache[i].time == time && inst->cache[i].bytes == bytes &&
                strcmp(inst->cache[i].key, key) == 0)
                found = i;
        if (found >= 0 && !inst->cache[found].busy) {
            inst->cache[found].used = ++inst->cache_clock;
            *slot = found;
            return CACHE_HIT;
        }
        if (found >= 0) { /* another tile of this frame is being fetched: wait for it */
            *waited = 1;
            double left = deadline - fc_now();
            if (left <= 0) return CACHE_NONE;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double end = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + left;
            ts.tv_sec = (time_t)end;
            ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
            if (pthread_cond_timedwait(&inst->cache_cond, &inst->lock, &ts) == ETIMEDOUT) return CACHE_NONE;
            continue;
        }
        int pick = -1;
        for (int i = 0; i < FC_CACHE; i++) {
            if (inst->cache[i].busy) continue;
            if (!inst->cache[i].key) { pick = i; break; }
            if (pick < 0 || inst->cache[i].used < inst->cache[pick].used) pick = i;
        }
        if (pick < 0) return CACHE_NONE; /* every slot is being filled: render uncached */
        recycle_cached_locked(inst, &inst->cache[pick]);
        inst->cache[pick].key = xstrdup(key);
        if (!inst->cache[pick].key) return CACHE_NONE;
        inst->cache[pick].time = time;
        inst->cache[pick].bytes = bytes;
        inst->cache[pick].busy = 1;
        inst->cache[pick].used = ++inst->cache_clock;
        *slot = pick;
        return CACHE_CLAIMED;
    }
}

static OfxStatus destroy_instance(OfxImageEffectHandle effect) {
    fc_instance *inst = instance_of(effect);
    if (!inst) return kOfxStatErrBadHandle;
    OfxPropertySetHandle p = NULL;
    g_effect->getPropertySet(effect, &p);
    if (p) g_prop->propSetPointer(p, kOfxPropInstanceData, 0, NULL);
    pthread_mutex_lock(&inst->lock);
    /* best effort: tell the server the sessions are done (it also closes idle sessions itself) */
    for (fc_session *r = inst->sessions; r; r = r->next)
        if (r->state != SESS_GONE) r->state = SESS_RETIRED;
    int s = inst->n_idle > 0 ? inst->idle[--inst->n_idle] : -1;
    pthread_mutex_unlock(&inst->lock);
    if (s >= 0) {
        close_retired(inst, s, fc_now() + 2.0);
        close(s);
    }
    pthread_mutex_lock(&inst->lock);
    while (inst->sessions) {
        fc_session *r = inst->sessions;
        inst->sessions = r->next;
        session_free(r);
    }
    drop_connections_locked(inst);
    for (int i = 0; i < FC_CACHE; i++) free_cached(&inst->cache[i]);
    drop_shm_locked(inst);
    pthread_mutex_unlock(&inst->lock);
    pthread_mutex_destroy(&inst->lock);
    pthread_cond_destroy(&inst->cache_cond);
    free_params(inst->params, inst->n_params);
    free(inst);
    return kOfxStatOK;
}

/* ---- settings from parameter values ------------------------------------------------------------- */

/* The settings object the server's `open` takes, from the parameter values at `time`. */
static int build_settings(fc_instance *inst, OfxTime time, fc_buf *b) {
    fc_buf_puts(b, "{");
    int first = 1;
    for (int i = 0; i < inst->n_params; i++) {
        fc_param *fp = &inst->params[i];
        char head[80];
        snprintf(head, sizeof head, "%s\"%s\":", first ? "" : ",", fp->name);
        switch (fp->type) {
        case PT_STRING: {
            char *s = NULL;
            if (g_param->paramGetValueAtTime(fp->handle, time, &s) != kOfxStatOK || !s || !*s) continue;
            fc_buf_puts(b, head);
            if (!fp->multi) { fc_buf_jstr(b, s); break; }
            fc_buf_puts(b, "[");
            int n = 0;
            for (const char *q = s; *q;) {
                size_t len = strcspn(q, "\r\n");
                if (len > 0) {
                    char *line = malloc(len + 1);
                    if (!line) return -1;
                    memcpy(line, q, len);
                    line[len] = 0;
                    if (n++) fc_buf_puts(b, ",");
                    fc_buf_jstr(b, line);
                    free(line);
                }
                q += len;
                while (*q == '\r' || *q == '\n') q++;
            }
            fc_buf_puts(b, "]");
            break;
        }
        case PT_CHOICE: {
            int v = 0;
            if (g_param->paramGetValueAtTime(fp->handle, time, &v) != kOfxStatOK) continue;
            if (v < 0 || v >= fp->n_values || !fp->values[v]) continue;
            fc_buf_puts(b, head);
            fc_buf_puts(b, fp->values[v]);
            break;
        }
        case PT_DOUBLE: {
            double v = 0;
            if (g_param->paramGetValueAtTime(fp->handle, time, &v) != kOfxStatOK || !isfinite(v)) continue;
            if (strcmp(fp->name, "label_scale") == 0 && v < 1.0) v = 1.0; /* never shrunk */
            fc_buf_puts(b, head);
            fc_buf_printf(b, "%.17g", v);
            break;
        }
        case PT_INT: {
            int v = 0;
            if (g_param->paramGetValueAtTime(fp->handle, time, &v) != kOfxStatOK) continue;
            fc_buf_puts(b, head);
            if (fp->has_none && v == fp->none_value) fc_buf_puts(b, "null");
            else fc_buf_printf(b, "%d", v);
            break;
        }
        case PT_BOOL: {
            int v = 0;
            if (g_param->paramGetValueAtTime(fp->handle, time, &v) != kOfxStatOK) continue;
            fc_buf_puts(b, head);
            fc_buf_puts(b, v ? "true" : "false");
            break;
        }
        }
        first = 0;
    }
    fc_buf_puts(b, "}");
    return b->failed ? -1 : 0;
}

/* ---- images ------------------------------------------------------------------------------------- */

typedef struct {
    OfxPropertySetHandle handle;
    fc_image img;
    const char *depth_name, *alpha;
} fc_host_image;

static OfxStatus image_props(OfxPropertySetHandle h, OfxImageClipHandle clip, fc_host_image *out) {
    memset(out, 0, sizeof *out);
    out->handle = h;
    void *data = NULL;
    int rb = 0;
    const char *depth = NULL, *comps = NULL, *premult = NULL;
    if (g_prop->propGetPointer(h, kOfxImagePropData, 0, &data) != kOfxStatOK || !data) return kOfxStatErrImageFormat;
    if (g_prop->propGetIntN(h, kOfxImagePropBounds, 4, &out->img.bounds.x1) != kOfxStatOK) return kOfxStatErrImageFormat;
    if (g_prop->propGetInt(h, kOfxImagePropRowBytes, 0, &rb) != kOfxStatOK) return kOfxStatErrImageFormat;
    if (get_string(h, kOfxImageEffectPropPixelDepth, 0, &depth) != 0) return kOfxStatErrImageFormat;
    if (get_string(h, kOfxImageEffectPropComponents, 0, &comps) != 0) return kOfxStatErrImageFormat;
    if (strcmp(depth, kOfxBitDepthByte) == 0) out->img.depth = FC_U8;
    else if (strcmp(depth, kOfxBitDepthShort) == 0) out->img.depth = FC_U16;
    else if (strcmp(depth, kOfxBitDepthFloat) == 0) out->img.depth = FC_F32;
    else return kOfxStatErrImageFormat;
    if (strcmp(comps, kOfxImageComponentRGBA) == 0) out->img.comps = 4;
    else if (strcmp(comps, kOfxImageComponentRGB) == 0) out->img.comps = 3;
    else return kOfxStatErrImageFormat;
    out->depth_name = out->img.depth == FC_U8 ? "uint8" : out->img.depth == FC_U16 ? "uint16" : "float32";
    out->alpha = "none";
    if (out->img.comps == 4) {
        out->alpha = "straight";
        /* the image's own premultiplication state, else its clip's */
        if (get_string(h, kOfxImageEffectPropPreMultiplication, 0, &premult) != 0) {
            OfxPropertySetHandle cp = NULL;
            if (!clip || g_effect->clipGetPropertySet(clip, &cp) != kOfxStatOK ||
                get_string(cp, kOfxImageEffectPropPreMultiplication, 0, &premult) != 0)
                premult = NULL;
        }
        if (premult) {
            if (strcmp(premult, kOfxImagePreMultiplied) == 0) out->alpha = "premultiplied";
            else if (strcmp(premult, kOfxImageOpaque) == 0) out->alpha = "none";
        }
    }
    const OfxRectI *bd = &out->img.bounds;
    long w = (long)bd->x2 - bd->x1, hgt = (long)bd->y2 - bd->y1;
    if (w <= 0 || hgt <= 0 || w > FC_MAX_SIDE || hgt > FC_MAX_SIDE) return kOfxStatErrImageFormat;
    long row = w * out->img.comps * (long)out->img.depth;
    if (labs((long)rb) < row || (size_t)labs((long)rb) * (size_t)hgt > FC_MAX_BYTES) return kOfxStatErrImageFormat;
    out->img.data = data;
    out->img.row_bytes = rb;
    return kOfxStatOK;
}

static OfxRectI intersect(OfxRectI a, OfxRectI b) {
    OfxRectI r = {a.x1 > b.x1 ? a.x1 : b.x1, a.y1 > b.y1 ? a.y1 : b.y1, a.x2 < b.x2 ? a.x2 : b.x2,
                  a.y2 < b.y2 ? a.y2 : b.y2};
    if (r.x2 < r.x1) r.x2 = r.x1;
    if (r.y2 < r.y1) r.y2 = r.y1;
    return r;
}

static unsigned char *pixel(const fc_image *img, int x, int y) {
    return img->data + (long)(y - img->bounds.y1) * img->row_bytes + (long)(x - img->bounds.x1) * img->comps * (int)img->depth;
}

/* Copies `r` (OpenFX coordinates, y up) between an OpenFX image and a top-down buffer whose rows cover
 * `area` (stride bytes per row).  to_buf: image -> buffer, else buffer -> image. */
static void copy_rows(const fc_image *img, unsigned char *buf, OfxRectI area, size_t stride, OfxRectI r, int to_buf) {
    size_t bpp = (size_t)img->comps * (size_t)img->depth, n = (size_t)(r.x2 - r.x1) * bpp;
    for (int y = r.y1; y < r.y2; y++) {
        unsigned char *b = buf + (size_t)(area.y2 - 1 - y) * stride + (size_t)(r.x1 - area.x1) * bpp;
        if (to_buf) memcpy(b, pixel(img, r.x1, y), n);
        else memcpy(pixel(img, r.x1, y), b, n);
    }
}

/* A 64-bit hash of the pixels of `r` in `img`, row by row: the tile cache's key includes it, so a frame
 * whose source pixels changed upstream (same time, same parameters: a paint fix, a new grade) is sent
 * to the server again instead of cut from the old result.  Four independent lanes of 8-byte words
 * (multiply, rotate, multiply: each step is invertible, so a single changed word always changes the
 * result) keep it near memory speed. */
static uint64_t lane_step(uint64_t h, uint64_t w) {
    h ^= w * 0x9E3779B97F4A7C15ull;
    h = (h << 29) | (h >> 35);
    return h * 0xBF58476D1CE4E5B9ull;
}

static uint64_t frame_hash(const fc_image *img, OfxRectI r) {
    size_t n = (size_t)(r.x2 - r.x1) * (size_t)img->comps * (size_t)img->depth;
    uint64_t a = 0x243F6A8885A308D3ull, b = 0x13198A2E03707344ull, c = 0xA4093822299F31D0ull,
             d = 0x082EFA98EC4E6C89ull ^ (uint64_t)n;
    for (int y = r.y1; y < r.y2; y++) {
        const unsigned char *p = pixel(img, r.x1, y);
        size_t i = 0;
        for (; i + 32 <= n; i += 32) {
            uint64_t w[4];
            memcpy(w, p + i, sizeof w); /* rows need not be 8-byte aligned */
            a = lane_step(a, w[0]);
            b = lane_step(b, w[1]);
            c = lane_step(c, w[2]);
            d = lane_step(d, w[3]);
        }
        for (; i < n; i += 8) { /* the row's tail, zero-padded */
            uint64_t w = 0;
            memcpy(&w, p + i, n - i < 8 ? n - i : 8);
            a = lane_step(a, w);
        }
        d = lane_step(d, (uint64_t)(unsigned)y); /* row boundaries count: rows are not one stream */
    }
    uint64_t h = a ^ ((b << 17) | (b >> 47)) ^ ((c << 31) | (c >> 33)) ^ ((d << 47) | (d >> 17));
    h ^= h >> 31;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 29;
    return h;
}

/* Writes transparent black (every channel zero; black for RGB) over the pixels of `win` outside `keep`:
 * the parts of the render window where the source has no pixels.  The specification's guide has a
 * filter write zeros where there is no source pixel, and a host must not see whatever its buffer
 * held before. */
static void clear_outside(const fc_image *img, OfxRectI win, OfxRectI keep) {
    size_t bpp = (size_t)img->comps * (size_t)img->depth;
    int empty = keep.x2 <= keep.x1 || keep.y2 <= keep.y1;
    for (int y = win.y1; y < win.y2; y++) {
        if (empty || y < keep.y1 || y >= keep.y2) {
            memset(pixel(img, win.x1, y), 0, (size_t)(win.x2 - win.x1) * bpp);
            continue;
        }
        if (keep.x1 > win.x1) memset(pixel(img, win.x1, y), 0, (size_t)(keep.x1 - win.x1) * bpp);
        if (win.x2 > keep.x2) memset(pixel(img, keep.x2, y), 0, (size_t)(win.x2 - keep.x2) * bpp);
    }
}

static void copy_image(const fc_image *src, const fc_image *dst, OfxRectI r) {
    size_t n = (size_t)(r.x2 - r.x1) * (size_t)dst->comps * (size_t)dst->depth;
    /* memmove: a host may hand the same memory as source and output */
    for (int y = r.y1; y < r.y2; y++) memmove(pixel(dst, r.x1, y), pixel(src, r.x1, y), n);
}

/* ---- talking to the server ---------------------------------------------------------------------- */

static void start_log_path(const char *sock, char *out, size_t cap) {
    snprintf(out, cap, "%s", sock);
    char *dot = strrchr(out, '.'), *slash = strrchr(out, '/');
    if (dot && (!slash || dot > slash)) *dot = 0;
    size_t n = strlen(out);
    snprintf(out + n, cap - n, ".start.log");
}

/* The server's error reply as one line; returns its type (static storage in `out`). */
static void describe_error(const fc_json *r, char *out, size_t cap) {
    const fc_json *e = fc_json_get(r, "error");
    const char *type = fc_json_str(e, "type"), *msg = fc_json_str(e, "message");
    snprintf(out, cap, "%s: %s", type ? type : "error", msg ? msg : "the server refused the request");
}

/* Whether a server's error reply is ServerStoppingError: it is stopping (idle timeout, `--stop`, an
 * upgrade) and did not run the request, which goes to a new server instead (docs/hosts-contract.md). */
static int is_stopping(const fc_json *reply) {
    const char *type = fc_json_str(fc_json_get(reply, "error"), "type");
    return type && strcmp(type, "ServerStoppingError") == 0;
}

/* A new connection, greeted, starting the server when nobody listens.  A server that is still dying
 * (its socket accepts but nobody answers: the moments after a crash or a stop) is waited out
 * briefly, then replaced; one that answers that it is stopping too.  A server started here that exits
 * at once is started again, twice at most: it may have lost the single-instance lock to one that was
 * still stopping.  -1 with `why` set. */
static int fresh_connection(double deadline, char *why, size_t why_cap) {
    char sock_path[PATH_MAX];
    if (fc_socket_path(sock_path, sizeof sock_path) != 0) { snprintf(why, why_cap, "socket path too long"); return -1; }
    int spawns = 0;
    for (int attempt = 0; attempt < 20 && fc_now() < deadline; attempt++) {
        if (attempt > 0) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        int s = fc_connect(sock_path);
        if (s < 0 && (errno == ENOENT || errno == ECONNREFUSED)) {
            pthread_mutex_lock(&g_start_lock);
            s = fc_connect(sock_path); /* another thread may have started it meanwhile */
            if (s < 0) {
                char res[PATH_MAX], exe_file[PATH_MAX + 32], exe[PATH_MAX], log_path[PATH_MAX + 16];
                const char *ef = NULL;
                if (resources_dir(res, sizeof res) == 0) {
                    snprintf(exe_file, sizeof exe_file, "%s/facecomp_executable", res);
                    ef = exe_file;
                }
                start_log_path(sock_path, log_path, sizeof log_path);
                if (fc_find_executable(ef, exe, sizeof exe) != 0) {
                    snprintf(why, why_cap, "no server at %s and no facecomp executable found (set "
                             "FACECOMP_EXECUTABLE or reinstall with `facecomp ofx install`)", sock_path);
                } else {
                    log_stderr("starting %s serve (socket %s, output in %s)", exe, sock_path, log_path);
                    spawns++;
                    if (fc_start_server(exe, sock_path, log_path, deadline) == 0) s = fc_connect(sock_path);
                    if (s < 0 && errno == ECHILD) {
                        snprintf(why, why_cap, "started %s serve but it exited while starting (see %s)", exe, log_path);
                        if (spawns < 3) {
                            pthread_mutex_unlock(&g_start_lock);
                            continue;
                        }
                    } else if (s < 0)
                        snprintf(why, why_cap, "started %s serve but it did not answer on %s in time (see %s)", exe,
                                 sock_path, log_path);
                }
            }
            pthread_mutex_unlock(&g_start_lock);
            if (s < 0) return -1;
        } else if (s < 0) {
            snprintf(why, why_cap, "cannot connect to %s: %s", sock_path, strerror(errno));
            return -1;
        }
        const char *hello = "{\"op\":\"hello\",\"protocol\":2,\"client\":\"facecomp-ofx " FC_PLUGIN_ID "\"}";
        const char *err = NULL;
        int sent = 0;
        fc_json *r = fc_call(s, hello, strlen(hello), -1, deadline, &err, &sent);
        if (r && fc_json_get(r, "ok") && fc_json_get(r, "ok")->num) {
            fc_json_free(r);
            return s;
        }
        close(s);
        if (r && is_stopping(r)) { /* wait until it has gone, then start a new one */
            describe_error(r, why, why_cap);
            fc_json_free(r);
            continue;
        }
        if (r) { /* a live server that refuses us: no point waiting */
            describe_error(r, why, why_cap);
            fc_json_free(r);
            return -1;
        }
        snprintf(why, why_cap, "the server did not greet: %s", err ? err : "no reply");
    }
    if (!why[0]) snprintf(why, why_cap, "no connection to the server at %s before the deadline", sock_path);
    return -1;
}

/* A greeted socket: an idle one of the instance (*pooled = 1), else a fresh one.  -1 with `why` set. */
static int get_connection(fc_instance *inst, double deadline, char *why, size_t why_cap, int *pooled) {
    for (;;) {
        pthread_mutex_lock(&inst->lock);
        if (inst->n_idle == 0) {
            pthread_mutex_unlock(&inst->lock);
            break;
        }
        int s = inst->idle[--inst->n_idle];
        pthread_mutex_unlock(&inst->lock);
        /* an idle connection never has anything to read: if it does (EOF, hang-up), the server that
         * held it has gone (idle timeout, stop, restart) */
        struct pollfd p = {s, POLLIN | POLLRDHUP, 0};
        if (poll(&p, 1, 0) != 0) {
            close(s);
            sessions_forget(inst); /* its sessions went with it */
            continue;
        }
        *pooled = 1;
        return s;
    }
    *pooled = 0;
    return fresh_connection(deadline, why, why_cap);
}

static void put_connection(fc_instance *inst, int s) {
    pthread_mutex_lock(&inst->lock);
    if (inst->n_idle < FC_POOL) { inst->idle[inst->n_idle++] = s; s = -1; }
    pthread_mutex_unlock(&inst->lock);
    if (s >= 0) close(s);
}

/* The current session for `key`, opening one when there is none (the one it replaces is retired);
 * the caller uses it, then gives it back with session_release. */
static fc_session *ensure_session(fc_instance *inst, int s, const char *key, const char *settings, const char *clip,
                                  double deadline, char *why, size_t why_cap, int *opened, int *sent) {
    *sent = 1;
    *opened = 0;
    pthread_mutex_lock(&inst->lock);
    for (fc_session *r = inst->sessions; r; r = r->next)
        if (r->state == SESS_CURRENT && strcmp(r->key, key) == 0) {
            r->users++;
            pthread_mutex_unlock(&inst->lock);
            return r;
        }
    pthread_mutex_unlock(&inst->lock);
    fc_buf b;
    fc_buf_init(&b);
    fc_buf_puts(&b, "{\"op\":\"open\",\"clip\":");
    if (clip && *clip) fc_buf_jstr(&b, clip);
    else fc_buf_puts(&b, "null");
    fc_buf_puts(&b, ",\"settings\":");
    fc_buf_puts(&b, settings);
    fc_buf_puts(&b, ",\"clip_id\":");
    /* a clip file gets the server's stable id for that file (same watermark id on every machine) */
    if (clip && *clip) fc_buf_puts(&b, "null");
    else fc_buf_jstr(&b, inst->clip_id);
    fc_buf_puts(&b, "}");
    if (b.failed) { fc_buf_free(&b); snprintf(why, why_cap, "out of memory"); return NULL; }
    const char *err = NULL;
    fc_json *r = fc_call(s, b.data, b.len, -1, deadline, &err, sent);
    int e = errno;
    fc_buf_free(&b);
    if (!r) {
        snprintf(why, why_cap, "%s", err);
        if (e == ETIMEDOUT) *opened = -2; /* the deadline passed: the server may be busy, not gone */
        return NULL;
    }
    const fc_json *ok = fc_json_get(r, "ok"), *sid = fc_json_get(r, "session");
    if (!ok || !ok->num || !sid) {
        describe_error(r, why, why_cap);
        *opened = is_stopping(r) ? -3 : -1; /* stopping: not run; else refused, not a transport failure */
        fc_json_free(r);
        return NULL;
    }
    fc_session *rec = calloc(1, sizeof *rec);
    if (rec) {
        rec->id = json_text(sid);
        rec->key = xstrdup(key);
    }
    if (!rec || !rec->id || !rec->key) {
        if (rec) session_free(rec);
        fc_json_free(r);
        snprintf(why, why_cap, "out of memory");
        return NULL;
    }
    rec->users = 1;
    const char *note = fc_json_str(r, "note");
    pthread_mutex_lock(&inst->lock);
    for (fc_session *o = inst->sessions; o; o = o->next) /* the parameters changed: the old one goes */
        if (o->state == SESS_CURRENT) o->state = SESS_RETIRED;
    rec->next = inst->sessions;
    inst->sessions = rec;
    int first_alone = !(clip && *clip) && !inst->noted_alone;
    if (first_alone) inst->noted_alone = 1;
    pthread_mutex_unlock(&inst->lock);
    if (note) {
        char m[1200];
        snprintf(m, sizeof m, "facecomp: %s", note);
        post(inst, kOfxMessageLog, 0, m);
    }
    if (first_alone) {
        char m[400];
        snprintf(m, sizeof m, "facecomp: the host gives no clip file, so each frame is analysed alone (set \"Clip "
                 "file\" for tracking across neighbouring frames); clip id %s", inst->clip_id);
        post(inst, kOfxMessageLog, 0, m);
    }
    fc_json_free(r);
    *opened = 1;
    return rec;
}

/* FC_UNSENT: the request never reached the server (a pooled connection to a server that has since
 * gone): safe to repeat on a new connection.  FC_TIMEOUT: the frame's deadline passed (a busy or slow
 * server, not a dead one): that frame fails, the connection it was on is closed (a late reply would
 * answer the next request), the other connections and the sessions stay.  FC_STOPPING: the server
 * answered ServerStoppingError: it did not run the request, which goes to a new server. */
typedef enum { FC_OK, FC_TRANSPORT, FC_UNSENT, FC_REFUSED, FC_STALE, FC_TIMEOUT, FC_STOPPING } fc_outcome;

/* One render request on socket `s`; the frame's pixels are in `fd`.  Fills engine_ms. */
static fc_outcome render_request(int s, const char *sid, int fd, OfxTime time, double fps, const OfxRectI *full, const OfxRectI *win,
                                 const fc_host_image *src, size_t stride, double deadline, double *engine_ms, double *server_ms,
                                 char *why, size_t why_cap) {
    fc_buf b;
    fc_buf_init(&b);
    long index = lround(time); /* OpenFX time counts frames */
    double seconds = fps > 0 ? time / fps : time;
    fc_buf_printf(&b, "{\"op\":\"render\",\"session\":%s,\"index\":%ld,\"time\":%.17g,\"full\":[%d,%d],"
                      "\"window\":[%d,%d,%d,%d],\"dtype\":\"%s\",\"channels\":%d,\"alpha\":\"%s\",\"stride\":%zu}",
                  sid, index, seconds, full->x2 - full->x1, full->y2 - full->y1, win->x1, win->y1, win->x2, win->y2,
                  src->depth_name, src->img.comps, src->alpha, stride);
    if (b.failed) { fc_buf_free(&b); snprintf(why, why_cap, "out of memory"); return FC_TRANSPORT; }
    const char *err = NULL;
    int sent = 0;
    fc_json *r = fc_call(s, b.data, b.len, fd, deadline, &err, &sent);
    int e = errno;
    fc_buf_free(&b);
    if (!r) {
        snprintf(why, why_cap, "%s", err);
        return e == ETIMEDOUT ? FC_TIMEOUT : sent ? FC_TRANSPORT : FC_UNSENT;
    }
    const fc_json *ok = fc_json_get(r, "ok");
    if (ok && ok->type == FC_JBOOL && ok->num && fc_json_get(r, "tracks")) {
        *engine_ms = fc_json_num(r, "engine_ms", -1);
        *server_ms = fc_json_num(r, "server_ms", -1);
        fc_json_free(r);
        return FC_OK;
    }
    const char *type = fc_json_str(fc_json_get(r, "error"), "type");
    describe_error(r, why, why_cap);
    fc_outcome o = type && strcmp(type, "SessionNotFoundError") == 0 ? FC_STALE : is_stopping(r) ? FC_STOPPING : FC_REFUSED;
    fc_json_free(r);
    return o;
}

/* ---- render ------------------------------------------------------------------------------------- */

static void fail_message(fc_instance *inst, const char *why) {
    char sock[PATH_MAX], logp[PATH_MAX + 16], m[3000];
    if (fc_socket_path(sock, sizeof sock) != 0) snprintf(sock, sizeof sock, "serve.sock");
    snprintf(logp, sizeof logp, "%s", sock);
    char *dot = strrchr(logp, '.');
    if (dot) strcpy(dot, ".log");
    snprintf(m, sizeof m, "facecomp: render server unavailable (%s); this frame is the unreplaced source. Server log: %s",
             why, logp);
    pthread_mutex_lock(&inst->lock);
    int was_failing = inst->failing;
    inst->failing = 1;
    pthread_mutex_unlock(&inst->lock);
    /* Every failing frame reports.  With message suite V2 that is a persistent (non-modal) error on the
     * effect; a V1 host may show errors as modal dialogs, so there only the first failure of a streak
     * is an error and the rest go to the host's log. */
    if (g_msg2 && g_msg2->setPersistentMessage) post(inst, kOfxMessageError, 1, m);
    else post(inst, was_failing ? kOfxMessageLog : kOfxMessageError, 0, m);
}

static OfxStatus render(OfxImageEffectHandle effect, OfxPropertySetHandle in_args) {
    if (!effect) return kOfxStatErrBadHandle;
    fc_instance *inst = instance_of(effect);
    if (!inst) return kOfxStatErrBadHandle;
    if (!in_args) return kOfxStatErrBadHandle;
    OfxTime time = 0;
    OfxRectI window;
    if (g_prop->propGetDouble(in_args, kOfxPropTime, 0, &time) != kOfxStatOK || !isfinite(time)) return kOfxStatErrValue;
    if (g_prop->propGetIntN(in_args, kOfxImageEffectPropRenderWindow, 4, &window.x1) != kOfxStatOK) return kOfxStatErrValue;
    if (window.x2 <= window.x1 || window.y2 <= window.y1) return kOfxStatOK; /* nothing to draw */

    OfxPropertySetHandle sh = NULL, dh = NULL;
    if (g_effect->clipGetImage(inst->src, time, NULL, &sh) != kOfxStatOK || !sh) return kOfxStatFailed;
    if (g_effect->clipGetImage(inst->dst, time, NULL, &dh) != kOfxStatOK || !dh) {
        g_effect->clipReleaseImage(sh);
        return kOfxStatFailed;
    }
    OfxStatus st = kOfxStatOK;
    fc_host_image src, dst;
    int shm_fd = -1;
    void *shm = NULL;
    size_t shm_bytes = 0;
    char *settings = NULL, *key = NULL, *session_key = NULL;
    fc_session *sess = NULL; /* the server session this thread uses */
    int claimed = -1; /* cache slot this thread fills */
    OfxRectI dst_win = {0, 0, 0, 0}, written = {0, 0, 0, 0};
    fc_buf sb, kb;
    fc_buf_init(&sb);
    fc_buf_init(&kb);
    if ((st = image_props(sh, inst->src, &src)) != kOfxStatOK || (st = image_props(dh, inst->dst, &dst)) != kOfxStatOK)
        goto done;
    if (src.img.depth != dst.img.depth || src.img.comps != dst.img.comps) { st = kOfxStatErrImageFormat; goto done; }
    /* the render window lies inside the output image (the host's promise; clipped to it anyway) */
    dst_win = intersect(window, dst.img.bounds);
    OfxRectI out_r = intersect(dst_win, src.img.bounds);
    if (out_r.x2 <= out_r.x1 || out_r.y2 <= out_r.y1) goto done;

    /* The whole frame: the source's region of definition in pixels; the server sees all the source the
     * host gave (normally the whole frame, as regions of interest ask for it) so that every tile of a
     * frame is cut from the same replaced picture. */
    OfxRectI full = src.img.bounds;
    OfxRectD rod;
    double scale[2] = {1, 1}, par = 1;
    g_prop->propGetDoubleN(in_args, kOfxImageEffectPropRenderScale, 2, scale);
    g_prop->propGetDouble(sh, kOfxImagePropPixelAspectRatio, 0, &par);
    if (!(par > 0 && isfinite(par))) par = 1;
    if (!(scale[0] > 0 && scale[0] <= 1)) scale[0] = 1;
    if (!(scale[1] > 0 && scale[1] <= 1)) scale[1] = 1;
    if (g_effect->clipGetRegionOfDefinition(inst->src, time, &rod) == kOfxStatOK && isfinite(rod.x1) && isfinite(rod.x2) &&
        isfinite(rod.y1) && isfinite(rod.y2)) {
        OfxRectI r = {(int)floor(rod.x1 * scale[0] / par), (int)floor(rod.y1 * scale[1]),
                      (int)ceil(rod.x2 * scale[0] / par), (int)ceil(rod.y2 * scale[1])};
        if (r.x2 > r.x1 && r.y2 > r.y1 && (long)r.x2 - r.x1 <= FC_MAX_SIDE && (long)r.y2 - r.y1 <= FC_MAX_SIDE) full = r;
    }
    OfxRectI area = intersect(src.img.bounds, full);
    if (area.x2 <= area.x1 || area.y2 <= area.y1) { area = src.img.bounds; full = src.img.bounds; }
    out_r = intersect(out_r, area);
    written = out_r; /* what the rest of the render writes; the rest of dst_win is cleared at the end */
    /* server window: top-down pixel coordinates inside the full frame, exclusive ends */
    OfxRectI win = {area.x1 - full.x1, full.y2 - area.y2, area.x2 - full.x1, full.y2 - area.y1};
    size_t bpp = (size_t)src.img.comps * (size_t)src.img.depth;
    size_t stride = (size_t)(area.x2 - area.x1) * bpp;
    shm_bytes = stride * (size_t)(area.y2 - area.y1);

    /* frames per second, to give the server seconds: the source clip's rate, else the effect's */
    double fps = 0;
    OfxPropertySetHandle cprops = NULL, eprops = NULL;
    if (g_effect->clipGetPropertySet(inst->src, &cprops) != kOfxStatOK || !cprops ||
        g_prop->propGetDouble(cprops, kOfxImageEffectPropFrameRate, 0, &fps) != kOfxStatOK || !(fps > 0)) {
        fps = 0;
        if (g_effect->getPropertySet(effect, &eprops) == kOfxStatOK && eprops &&
            (g_prop->propGetDouble(eprops, kOfxImageEffectPropFrameRate, 0, &fps) != kOfxStatOK || !(fps > 0)))
            fps = 0;
    }
    if (!isfinite(fps) || fps > 10000) fps = 0;
    double timeout = 60;
    if (inst->timeout_param) g_param->paramGetValueAtTime(inst->timeout_param, time, &timeout);
    if (!(timeout > 0) || !isfinite(timeout)) timeout = 60;
    char *clip = NULL;
    if (inst->clip_param) g_param->paramGetValueAtTime(inst->clip_param, time, &clip);
    if (build_settings(inst, time, &sb) != 0) { st = kOfxStatErrMemory; goto done; }
    settings = sb.data;
    fc_buf_puts(&kb, settings);
    fc_buf_puts(&kb, "|");
    fc_buf_puts(&kb, clip ? clip : "");
    session_key = strndup(kb.data ? kb.data : "", kb.len);
    fc_buf_printf(&kb, "|%s|%d|%s|%d,%d,%d,%d|%d,%d", src.depth_name, src.img.comps, src.alpha, area.x1, area.y1,
                  area.x2, area.y2, full.x2 - full.x1, full.y2 - full.y1);
    /* tiles of a frame already replaced (or being fetched by another thread): cut from that result,
     * which is only the same frame when the source pixels are the same too */
    int tiled = out_r.x1 != area.x1 || out_r.y1 != area.y1 || out_r.x2 != area.x2 || out_r.y2 != area.y2;
    if (tiled) fc_buf_printf(&kb, "|%016llx", (unsigned long long)frame_hash(&src.img, area));
    if (kb.failed) { st = kOfxStatErrMemory; goto done; }
    key = kb.data;
    if (!session_key) { st = kOfxStatErrMemory; goto done; }

    char why[2048] = "";
    int waited = 0; /* this thread waited for another's fetch of the frame */
    double t0 = fc_now(), deadline = t0 + timeout, engine_ms = -1, server_ms = -1; /* the round trip starts here */
    if (tiled) {
        int slot = -1;
        pthread_mutex_lock(&inst->lock);
        fc_cache_result cr = cache_lookup_locked(inst, key, time, shm_bytes, deadline, &slot, &waited);
        if (cr == CACHE_HIT) {
            copy_rows(&dst.img, inst->cache[slot].pixels, area, stride, out_r, 0);
            pthread_mutex_unlock(&inst->lock);
            goto done;
        }
        pthread_mutex_unlock(&inst->lock);
        if (cr == CACHE_CLAIMED) claimed = slot;
    }
    shm_fd = take_shm(inst, shm_bytes, &shm);
    if (shm_fd < 0) {
        snprintf(why, sizeof why, "cannot make shared memory for the frame: %s", strerror(errno));
        goto fallback;
    }
    copy_rows(&src.img, shm, area, stride, area, 1);

    fc_outcome outcome = FC_TRANSPORT;
    int stale_retries = 0, unsent_retries = 0, stopping_retries = 0;
    for (;;) {
        if (fc_now() >= deadline) { /* spent waiting for another thread's fetch of this frame, or retrying */
            outcome = FC_TIMEOUT;
            break;
        }
        int pooled = 0;
        int s = get_connection(inst, deadline, why, sizeof why, &pooled);
        if (s < 0) { outcome = fc_now() >= deadline ? FC_TIMEOUT : FC_TRANSPORT; break; }
        int opened = 0, sent = 1;
        session_release(inst, sess, 0);
        sess = ensure_session(inst, s, session_key, settings, clip, deadline, why, sizeof why, &opened, &sent);
        if (!sess) {
            if (opened == -1) { put_connection(inst, s); outcome = FC_REFUSED; break; }
            close(s);
            outcome = opened == -3 ? FC_STOPPING : opened == -2 ? FC_TIMEOUT : sent ? FC_TRANSPORT : FC_UNSENT;
        } else {
            outcome = render_request(s, sess->id, shm_fd, time, fps, &full, &win, &src, stride, deadline, &engine_ms,
                                     &server_ms, why, sizeof why);
            if (outcome == FC_TRANSPORT || outcome == FC_UNSENT || outcome == FC_TIMEOUT || outcome == FC_STOPPING)
                close(s); /* a stopping server closes it too */
            else if (close_retired(inst, s, fc_now() + 2.0 < deadline ? fc_now() + 2.0 : deadline) != 0) close(s);
            else put_connection(inst, s);
        }
        if (outcome == FC_UNSENT && pooled && unsent_retries++ < 2) {
            /* the pooled connection went with an earlier server (restarted, idle-stopped): the
             * request never arrived, so repeat it on a new connection */
            pthread_mutex_lock(&inst->lock);
            drop_connections_locked(inst);
            sessions_forget_locked(inst);
            pthread_mutex_unlock(&inst->lock);
            continue;
        }
        if (outcome == FC_UNSENT) outcome = FC_TRANSPORT;
        if (outcome == FC_STOPPING && stopping_retries++ < 3) {
            /* the server is stopping and did not run the request: every pooled connection and session
             * goes with it; the frame goes to a new server (started once this one has gone) */
            log_stderr("the server was stopping (%s); sending the frame to a new server", why);
            pthread_mutex_lock(&inst->lock);
            drop_connections_locked(inst);
            sessions_forget_locked(inst);
            pthread_mutex_unlock(&inst->lock);
            why[0] = 0;
            continue;
        }
        if (outcome == FC_STOPPING) outcome = FC_TRANSPORT;
        if (outcome == FC_STALE && stale_retries++ < 1) {
            /* the server closed the session (memory cap, restart): open a new one and try once more */
            session_release(inst, sess, 1);
            sess = NULL;
            copy_rows(&src.img, shm, area, stride, area, 1);
            continue;
        }
        break;
    }
    if (outcome == FC_STALE) { /* still no such session: the next frame opens one */
        session_release(inst, sess, 1);
        sess = NULL;
    }
    if (outcome == FC_REFUSED || outcome == FC_STALE) { /* the server is done with it: keep it */
        give_shm(inst, shm_fd, shm, shm_bytes);
        shm_fd = -1;
        shm = NULL;
    }
    if (outcome == FC_OK) {
        copy_rows(&dst.img, shm, area, stride, out_r, 0);
        pthread_mutex_lock(&inst->lock);
        int was_failing = inst->failing;
        inst->failing = 0;
        int kept = claimed >= 0;
        if (kept) { /* the other tiles are cut from the server's result where it is: no copy of the frame */
            inst->cache[claimed].pixels = shm;
            inst->cache[claimed].fd = shm_fd;
            inst->cache[claimed].busy = 0;
            claimed = -1;
            pthread_cond_broadcast(&inst->cache_cond);
        }
        pthread_mutex_unlock(&inst->lock);
        if (was_failing) clear_persistent(inst);
        if (getenv("FACECOMP_OFX_TIMING")) {
            char m[160];
            snprintf(m, sizeof m, "facecomp timing: round_trip_ms=%.3f server_ms=%.3f engine_ms=%.3f",
                     (fc_now() - t0) * 1000.0, server_ms, engine_ms);
            post(inst, kOfxMessageLog, 0, m);
        }
        if (!kept) give_shm(inst, shm_fd, shm, shm_bytes); /* read out: kept for the next frame */
        shm_fd = -1;
        shm = NULL;
        goto done;
    }
    if (outcome == FC_TIMEOUT) /* one clear reason, whatever step the deadline passed in */
        snprintf(why, sizeof why, "timed out: no result within the %g s server timeout (the \"Server timeout (s)\" "
                 "parameter)%s; the connections and the session are kept and the next frame asks again",
                 timeout, waited ? ", waiting for another render thread fetching this frame" : "");
    if (outcome == FC_TRANSPORT) {
        /* the server is gone or broke the connection: forget connections and sessions; the next frame
         * reconnects (and starts a server when none listens) */
        pthread_mutex_lock(&inst->lock);
        drop_connections_locked(inst);
        sessions_forget_locked(inst);
        pthread_mutex_unlock(&inst->lock);
    }
fallback:
    copy_image(&src.img, &dst.img, out_r);
    fc_draw_banner(&dst.img, full, out_r, FC_BANNER_TEXT);
    fail_message(inst, why[0] ? why : "unknown error");
done:
    if (st == kOfxStatOK) clear_outside(&dst.img, dst_win, written);
    if (claimed >= 0) { /* not filled (the frame failed): free the slot, wake the waiting tiles */
        pthread_mutex_lock(&inst->lock);
        free_cached(&inst->cache[claimed]);
        pthread_cond_broadcast(&inst->cache_cond);
        pthread_mutex_unlock(&inst->lock);
    }
    if (shm) munmap(shm, shm_bytes);
    if (shm_fd >= 0) close(shm_fd);
    session_release(inst, sess, 0);
    free(session_key);
    fc_buf_free(&sb);
    fc_buf_free(&kb);
    g_effect->clipReleaseImage(sh);
    g_effect->clipReleaseImage(dh);
    return st;
}

/* The whole source frame for any output window: the server replaces faces on the full picture. */
static OfxStatus regions_of_interest(OfxImageEffectHandle effect, OfxPropertySetHandle in_args, OfxPropertySetHandle out_args) {
    fc_instance *inst = instance_of(effect);
    if (!inst) return kOfxStatErrBadHandle;
    if (!in_args || !out_args) return kOfxStatErrBadHandle;
    OfxTime time = 0;
    OfxRectD rod;
    g_prop->propGetDouble(in_args, kOfxPropTime, 0, &time);
    if (g_effect->clipGetRegionOfDefinition(inst->src, time, &rod) != kOfxStatOK) return kOfxStatReplyDefault;
    g_prop->propSetDoubleN(out_args, kOfxImageClipPropRoI_ kOfxImageEffectSimpleSourceClipName, 4, &rod.x1);
    return kOfxStatOK;
}

/* ---- entry points ------------------------------------------------------------------------------- */

static OfxStatus load(void) {
    if (!g_host || !g_host->fetchSuite) return kOfxStatErrMissingHostFeature;
    g_prop = g_host->fetchSuite(g_host->host, kOfxPropertySuite, 1);
    g_effect = g_host->fetchSuite(g_host->host, kOfxImageEffectSuite, 1);
    g_param = g_host->fetchSuite(g_host->host, kOfxParameterSuite, 1);
    g_msg2 = g_host->fetchSuite(g_host->host, kOfxMessageSuite, 2);
    g_msg1 = g_msg2 ? (const OfxMessageSuiteV1 *)g_msg2 : g_host->fetchSuite(g_host->host, kOfxMessageSuite, 1);
    if (!g_prop || !g_effect || !g_param) {
        g_prop = NULL;
        g_effect = NULL;
        g_param = NULL;
        return kOfxStatErrMissingHostFeature;
    }
    return kOfxStatOK;
}

static OfxStatus main_entry(const char *action, const void *handle, OfxPropertySetHandle in_args,
                            OfxPropertySetHandle out_args) {
    if (!action) return kOfxStatErrBadHandle;
    if (strcmp(action, kOfxActionLoad) == 0) return load();
    if (!g_prop || !g_effect || !g_param) return kOfxStatErrMissingHostFeature; /* not loaded (or refused) */
    OfxImageEffectHandle effect = (OfxImageEffectHandle)handle;
    if (strcmp(action, kOfxActionUnload) == 0) return kOfxStatOK;
    if (strcmp(action, kOfxActionDescribe) == 0) return describe(effect);
    if (strcmp(action, kOfxImageEffectActionDescribeInContext) == 0) return describe_in_context(effect, in_args);
    if (strcmp(action, kOfxActionCreateInstance) == 0) return create_instance(effect);
    if (strcmp(action, kOfxActionDestroyInstance) == 0) return destroy_instance(effect);
    if (strcmp(action, kOfxImageEffectActionRender) == 0) return render(effect, in_args);
    if (strcmp(action, kOfxImageEffectActionGetRegionsOfInterest) == 0) return regions_of_interest(effect, in_args, out_args);
    if (strcmp(action, kOfxActionPurgeCaches) == 0) {
        fc_instance *inst = instance_of(effect);
        if (!inst) return kOfxStatErrBadHandle;
        pthread_mutex_lock(&inst->lock);
        drop_cache_locked(inst);
        drop_shm_locked(inst);
        pthread_mutex_unlock(&inst->lock);
        return kOfxStatOK;
    }
    /* never an identity: even an unchanged frame gets the server's label */
    if (strcmp(action, kOfxImageEffectActionIsIdentity) == 0) return instance_of(effect) ? kOfxStatReplyDefault : kOfxStatErrBadHandle;
    return kOfxStatReplyDefault;
}

static void set_host(OfxHost *host) { g_host = host; }

static OfxPlugin g_plugin = {kOfxImageEffectPluginApi, kOfxImageEffectPluginApiVersion, FC_PLUGIN_ID,
                             FC_VERSION_MAJOR, FC_VERSION_MINOR, set_host, main_entry};

FC_OFX_EXPORT int OfxGetNumberOfPlugins(void) { return 1; }

FC_OFX_EXPORT OfxPlugin *OfxGetPlugin(int nth) { return nth == 0 ? &g_plugin : NULL; }
