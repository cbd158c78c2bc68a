/* fc_json.c - see fc_json.h.  A recursive-descent reader with a depth limit (hostile input cannot
 * exhaust the stack) and a writer helper. */
#include "fc_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FC_JSON_MAX_DEPTH 64

typedef struct {
    const char *p, *end;
    const char *err;
} reader;

static void skip_ws(reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static fc_json *node(fc_jtype t) {
    fc_json *v = calloc(1, sizeof *v);
    if (v) v->type = t;
    return v;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_utf8(char *out, size_t *o, unsigned cp) {
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int read_hex4(reader *r, unsigned *cp) {
    if (r->end - r->p < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(r->p[i]);
        if (h < 0) return 0;
        v = (v << 4) | (unsigned)h;
    }
    r->p += 4;
    *cp = v;
    return 1;
}

/* Reads a string starting after the opening quote; the decoded text is never longer than the source. */
static char *read_string(reader *r) {
    const char *start = r->p;
    size_t cap = 1;
    while (r->p < r->end && *r->p != '"') {
        if (*r->p == '\\') r->p++;
        r->p++;
    }
    if (r->p >= r->end) { r->err = "unterminated string"; return NULL; }
    cap += (size_t)(r->p - start);
    char *out = malloc(cap);
    if (!out) { r->err = "out of memory"; return NULL; }
    size_t o = 0;
    reader s = {start, r->p, NULL};
    while (s.p < s.end) {
        char c = *s.p++;
        if ((unsigned char)c < 0x20) { free(out); r->err = "control character in string"; return NULL; }
        if (c != '\\') { out[o++] = c; continue; }
        if (s.p >= s.end) break;
        c = *s.p++;
        switch (c) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!read_hex4(&s, &cp)) { free(out); r->err = "bad \\u escape"; return NULL; }
            if (cp >= 0xD800 && cp < 0xDC00 && s.end - s.p >= 6 && s.p[0] == '\\' && s.p[1] == 'u') {
                unsigned lo;
                s.p += 2;
                if (read_hex4(&s, &lo) && lo >= 0xDC00 && lo < 0xE000)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* 6 source bytes always cover the 4 output bytes */
            put_utf8(out, &o, cp);
            break;
        }
        default: free(out); r->err = "bad escape"; return NULL;
        }
    }
    out[o] = 0;
    r->p++; /* closing quote */
    return out;
}

static fc_json *read_value(reader *r, int depth);

static fc_json *read_container(reader *r, int depth, int is_obj) {
    fc_json *v = node(is_obj ? FC_JOBJ : FC_JARR);
    if (!v) { r->err = "out of memory"; return NULL; }
    fc_json **tail = &v->child;
    r->p++;
    skip_ws(r);
    if (r->p < r->end && *r->p == (is_obj ? '}' : ']')) { r->p++; return v; }
    for (;;) {
        char *key = NULL;
        skip_ws(r);
        if (is_obj) {
            if (r->p >= r->end || *r->p != '"') { r->err = "expected member name"; goto fail; }
            r->p++;
            key = read_string(r);
            if (!key) goto fail;
            skip_ws(r);
            if (r->p >= r->end || *r->p != ':') { free(key); r->err = "expected ':'"; goto fail; }
            r->p++;
        }
        fc_json *item = read_value(r, depth + 1);
        if (!item) { free(key); goto fail; }
        item->key = key;
        *tail = item;
        tail = &item->next;
        skip_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; continue; }
        if (r->p < r->end && *r->p == (is_obj ? '}' : ']')) { r->p++; return v; }
        r->err = "expected ',' or closing bracket";
        goto fail;
    }
fail:
    fc_json_free(v);
    return NULL;
}

static fc_json *read_value(reader *r, int depth) {
    if (depth > FC_JSON_MAX_DEPTH) { r->err = "nested too deep"; return NULL; }
    skip_ws(r);
    if (r->p >= r->end) { r->err = "unexpected end"; return NULL; }
    char c = *r->p;
    if (c == '{' || c == '[') return read_container(r, depth, c == '{');
    if (c == '"') {
        r->p++;
        char *s = read_string(r);
        if (!s) return NULL;
        fc_json *v = node(FC_JSTR);
        if (!v) { free(s); r->err = "out of memory"; return NULL; }
        v->str = s;
        return v;
    }
    static const struct { const char *word; fc_jtype t; double n; } words[] = {
        {"true", FC_JBOOL, 1}, {"false", FC_JBOOL, 0}, {"null", FC_JNULL, 0}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[i].word, n) == 0) {
            r->p += n;
            fc_json *v = node(words[i].t);
            if (!v) { r->err = "out of memory"; return NULL; }
            v->num = words[i].n;
            return v;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char tmp[64];
        size_t n = 0;
        while (r->p + n < r->end && n < sizeof tmp - 1 && strchr("+-.eE0123456789", r->p[n])) n++;
        memcpy(tmp, r->p, n);
        tmp[n] = 0;
        char *endp;
        double d = strtod(tmp, &endp);
        if (endp == tmp) { r->err = "bad number"; return NULL; }
        r->p += (size_t)(endp - tmp);
        fc_json *v = node(FC_JNUM);
        if (!v) { r->err = "out of memory"; return NULL; }
        v->num = d;
        return v;
    }
    r->err = "unexpected character";
    return NULL;
}

fc_json *fc_json_parse(const char *text, size_t len, const char **err) {
    if (!text) { if (err) *err = "no text"; return NULL; }
    reader r = {text, text + len, NULL};
    fc_json *v = read_value(&r, 0);
    if (v) {
        skip_ws(&r);
        if (r.p != r.end) { fc_json_free(v); v = NULL; r.err = "trailing characters"; }
    }
    if (!v && err) *err = r.err ? r.err : "malformed";
    return v;
}

void fc_json_free(fc_json *v) {
    while (v) {
        fc_json *next = v->next;
        fc_json_free(v->child);
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}

const fc_json *fc_json_get(const fc_json *obj, const char *key) {
    if (!obj || obj->type != FC_JOBJ) return NULL;
    for (const fc_json *m = obj->child; m; m = m->next)
        if (m->key && strcmp(m->key, key) == 0) return m;
    return NULL;
}

const char *fc_json_str(const fc_json *obj, const char *key) {
    const fc_json *m = fc_json_get(obj, key);
    return m && m->type == FC_JSTR ? m->str : NULL;
}

double fc_json_num(const fc_json *obj, const char *key, double fallback) {
    const fc_json *m = fc_json_get(obj, key);
    return m && (m->type == FC_JNUM || m->type == FC_JBOOL) ? m->num : fallback;
}

int fc_json_len(const fc_json *arr) {
    int n = 0;
    if (arr && (arr->type == FC_JARR || arr->type == FC_JOBJ))
        for (const fc_json *m = arr->child; m; m = m->next) n++;
    return n;
}

void fc_buf_init(fc_buf *b) { memset(b, 0, sizeof *b); }

void fc_buf_free(fc_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void fc_buf_put(fc_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) { b->failed = 1; return; }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void fc_buf_puts(fc_buf *b, const char *s) { fc_buf_put(b, s, strlen(s)); }

void fc_buf_printf(fc_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { b->failed = 1; return; }
    if ((size_t)n < sizeof tmp) { fc_buf_put(b, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->failed = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    fc_buf_put(b, big, (size_t)n);
    free(big);
}

void fc_buf_jstr(fc_buf *b, const char *s) {
    fc_buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fc_buf_put(b, "\\\"", 2); break;
        case '\\': fc_buf_put(b, "\\\\", 2); break;
        case '\n': fc_buf_put(b, "\\n", 2); break;
        case '\r': fc_buf_put(b, "\\r", 2); break;
        case '\t': fc_buf_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) fc_buf_printf(b, "\\u%04x", *p);
            else fc_buf_put(b, (const char *)p, 1);
        }
    }
    fc_buf_put(b, "\"", 1);
}
