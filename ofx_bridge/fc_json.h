/*
 * fc_json.h - a small JSON reader and writer for the plugin: parameters.json at describe time and the
 * render server's replies.  Values are a tree of nodes allocated with malloc; free with fc_json_free.
 */
#ifndef FACECOMP_FC_JSON_H
#define FACECOMP_FC_JSON_H

#include <stddef.h>

typedef enum { FC_JNULL, FC_JBOOL, FC_JNUM, FC_JSTR, FC_JARR, FC_JOBJ } fc_jtype;

typedef struct fc_json {
    fc_jtype type;
    double num;           /* FC_JNUM, FC_JBOOL (0/1) */
    char *str;            /* FC_JSTR: decoded UTF-8 */
    char *key;            /* member name when inside an object */
    struct fc_json *child; /* first element/member */
    struct fc_json *next;  /* next sibling */
} fc_json;

/* Parse `len` bytes; NULL on malformed input (err gets a short reason when non-NULL). */
fc_json *fc_json_parse(const char *text, size_t len, const char **err);
void fc_json_free(fc_json *v);
/* Member of an object by name, or NULL. */
const fc_json *fc_json_get(const fc_json *obj, const char *key);
/* String member or NULL; number member or `fallback`. */
const char *fc_json_str(const fc_json *obj, const char *key);
double fc_json_num(const fc_json *obj, const char *key, double fallback);
int fc_json_len(const fc_json *arr);

/* A growable output buffer for building requests. */
typedef struct {
    char *data;
    size_t len, cap;
    int failed; /* set when an allocation failed; the text is then unusable */
} fc_buf;

void fc_buf_init(fc_buf *b);
void fc_buf_free(fc_buf *b);
void fc_buf_put(fc_buf *b, const char *s, size_t n);
void fc_buf_puts(fc_buf *b, const char *s);
void fc_buf_printf(fc_buf *b, const char *fmt, ...);
/* Writes `s` as a quoted JSON string with escapes. */
void fc_buf_jstr(fc_buf *b, const char *s);

#endif
