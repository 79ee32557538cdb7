/*
 * json.c - the one place untrusted JSON enters the core: a parse helper with
 * a byte limit, a nesting limit and a strict end-of-document check, plus
 * typed getters over cJSON. Used for MQTT twin payloads, REST bodies and the
 * control API (iothub-protocol.md sections 6.2, 7.5, 9: malformed JSON is a
 * 400 answered in-band).
 *
 * cJSON 1.7.15 notes that shape this file:
 * - cJSON_ParseWithLengthOpts(..., require_null_terminated=1) needs the NUL
 *   counted in the length, so we pass 0 and check the tail ourselves.
 * - cJSON's own nesting limit (1000) is a compile-time constant and reports
 *   deep input as a syntax error, so depth is measured by our own walk.
 * - cJSON treats every byte <= 0x20 as whitespace; JSON allows only four.
 * - cJSON keeps neither how a number was written nor a "\u0000" in a name
 *   or string (it cuts the C string there), so a second walk over the text
 *   marks those items (json.h, TH_JSON_DECIMAL and friends).
 */
#include "json.h"
#include "json_fast.h"
#include "jsonw.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON insignificant whitespace (RFC 8259 section 2). */
static bool is_json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Nesting depth of the text itself, counted without building a tree so that
 * absurdly deep input is classified as "too deep" rather than as a syntax
 * error from cJSON's recursion guard. Stops counting once `limit` is passed.
 * For well-formed JSON the result equals th_json_depth of the parsed tree.
 */
static int text_depth(const char *buf, size_t len, int limit)
{
    int depth = 0, max = 0;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (c == '"') {
            /* A string, in a loop of its own: most bytes of a document are in strings. */
            for (i++; i < len && buf[i] != '"'; i++)
                if (buf[i] == '\\')
                    i++; /* the escaped byte */
        } else if (c == '{' || c == '[') {
            if (++depth > max) {
                max = depth;
                if (max > limit)
                    return max;
            }
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return max;
}

/* ---- marking what the tree does not keep ---- */

struct walk {
    const char *p, *end;
    bool ok;
};

static void walk_ws(struct walk *w)
{
    while (w->p < w->end && (unsigned char)*w->p <= 0x20) /* cJSON's notion of whitespace */
        w->p++;
}

/* Steps over `c` (after whitespace); a mismatch stops the walk. */
static void walk_expect(struct walk *w, char c)
{
    walk_ws(w);
    if (w->p < w->end && *w->p == c)
        w->p++;
    else
        w->ok = false;
}

/* Steps over a string token; true when it holds the escape \u0000. */
static bool walk_string(struct walk *w)
{
    bool nul = false;
    walk_expect(w, '"');
    if (!w->ok)
        return false;
    const char *p = w->p, *end = w->end; /* locals: this loop runs over every string byte */
    while (p < end && *p != '"') {
        if (*p == '\\') {
            if (end - p >= 6 && p[1] == 'u' && memcmp(p + 2, "0000", 4) == 0)
                nul = true;
            p++; /* the escaped character; \uXXXX digits are stepped over one by one */
        }
        p++;
    }
    w->p = p;
    walk_expect(w, '"');
    return nul;
}

/* The characters of "0123456789+-.eE" (what the strchr this replaces matched, without its NUL). */
static bool is_number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E';
}

/*
 * Walks the text of `item` (which cJSON parsed from it, children in text
 * order) and sets the TH_JSON_* flags on it and below it.
 */
static void walk_item(struct walk *w, cJSON *item)
{
    walk_ws(w);
    switch (item->type & 0xFF) {
    case cJSON_Object:
        walk_expect(w, '{');
        for (cJSON *c = item->child; c != NULL && w->ok; c = c->next) {
            if (c != item->child)
                walk_expect(w, ',');
            if (walk_string(w))
                c->type |= TH_JSON_KEY_NUL;
            walk_expect(w, ':');
            walk_item(w, c);
        }
        walk_expect(w, '}');
        break;
    case cJSON_Array:
        walk_expect(w, '[');
        for (cJSON *c = item->child; c != NULL && w->ok; c = c->next) {
            if (c != item->child)
                walk_expect(w, ',');
            walk_item(w, c);
        }
        walk_expect(w, ']');
        break;
    case cJSON_String:
        if (walk_string(w))
            item->type |= TH_JSON_STRING_NUL;
        break;
    case cJSON_Number:
        /* cJSON reads a number as the longest run of these characters. */
        while (w->p < w->end && is_number_char(*w->p)) {
            if (*w->p == '.' || *w->p == 'e' || *w->p == 'E')
                item->type |= TH_JSON_DECIMAL;
            w->p++;
        }
        break;
    default: { /* true, false, null */
        size_t n = (item->type & 0xFF) == cJSON_False ? 5 : 4;
        if ((size_t)(w->end - w->p) < n)
            w->ok = false;
        else
            w->p += n;
        break;
    }
    }
}

static void clear_flags(cJSON *item)
{
    for (; item != NULL; item = item->next) {
        item->type &= ~(TH_JSON_DECIMAL | TH_JSON_KEY_NUL | TH_JSON_STRING_NUL);
        clear_flags(item->child);
    }
}

/*
 * Parse one document from `len` bytes of `buf` with limits; see json.h.
 * Ownership: on TH_OK *out is a new tree the caller frees with cJSON_Delete;
 * on every failure *out is NULL and nothing is allocated.
 */
th_result th_json_parse(const char *buf, size_t len, size_t max_bytes, int max_depth, cJSON **out,
                        struct th_error *err)
{
    if (out == NULL)
        return th_error_set(err, TH_ERR_INVAL, 0, "th_json_parse: no output pointer given");
    *out = NULL;
    if (buf == NULL && len > 0)
        return th_error_set(err, TH_ERR_INVAL, 0, "th_json_parse: NULL buffer with length %zu",
                            len);
    if (len > max_bytes)
        return th_error_set(err, TH_ERR_TOO_LARGE, 0,
                            "JSON body is %zu bytes; at most %zu bytes are accepted, send a "
                            "smaller document",
                            len, max_bytes);

    /* Leading bytes: an optional UTF-8 BOM (cJSON skips it), then JSON whitespace only. */
    size_t start = 0;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        start = 3;
    while (start < len && (unsigned char)buf[start] <= 0x20) {
        if (!is_json_ws((unsigned char)buf[start]))
            return th_error_set_at(err, TH_ERR_FORMAT, 0, start + 1,
                                   "JSON body has control character 0x%02x at byte %zu; only "
                                   "spaces, tabs and line breaks may surround the document",
                                   (unsigned char)buf[start], start);
        start++;
    }
    if (start == len)
        return th_error_set(err, TH_ERR_FORMAT, 0,
                            "JSON body is empty; send one JSON document (for example {})");

    /* Plain JSON takes one pass (json_fast.c); anything else, and every error, is cJSON's.
     * cJSON skips a BOM only when more than 4 bytes follow its start: those texts are its.
     * A negative depth limit refuses even a scalar (the walk below): cJSON's path decides it. */
    bool bom_cjson_keeps = len <= 4 && len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0;
    cJSON *fast = bom_cjson_keeps || max_depth < 0
                      ? NULL
                      : th_json_parse_fast(buf + start, len - start, max_depth);
    if (fast != NULL) {
        *out = fast;
        return TH_OK;
    }

    /* Measured on the text, before cJSON recurses: exact for valid JSON (every '{' or
     * '[' outside a string opens a container), and it keeps input deeper than cJSON's
     * own limit a "too deep" error instead of a syntax error. */
    if (text_depth(buf, len, max_depth) > max_depth)
        return th_error_set(err, TH_ERR_TOO_DEEP, 0,
                            "JSON nests objects/arrays more than %d levels deep; flatten the "
                            "document",
                            max_depth);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (root == NULL) {
        size_t at = (end != NULL && end >= buf && end <= buf + len) ? (size_t)(end - buf) : 0;
        return th_error_set_at(err, TH_ERR_FORMAT, 0, at + 1,
                               "JSON body is not valid JSON (error near byte %zu); send one "
                               "well-formed JSON document",
                               at);
    }
    for (const char *p = end; p < buf + len; p++) {
        if (!is_json_ws((unsigned char)*p)) {
            cJSON_Delete(root);
            return th_error_set_at(err, TH_ERR_FORMAT, 0, (size_t)(p - buf) + 1,
                                   "JSON body has extra data at byte %zu after the document; send "
                                   "exactly one JSON document",
                                   (size_t)(p - buf));
        }
    }
    struct walk w = {.p = buf + start, .end = end, .ok = true};
    walk_item(&w, root);
    if (!w.ok)
        clear_flags(root); /* cannot happen for text cJSON accepted; never leave a wrong flag */
    *out = root;
    return TH_OK;
}

int th_json_depth(const cJSON *item)
{
    if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
        return 0;
    int max = 0;
    for (const cJSON *child = item->child; child != NULL; child = child->next) {
        int d = th_json_depth(child);
        if (d > max)
            max = d;
    }
    return max + 1;
}

const char *th_json_string(const cJSON *obj, const char *key, const char *fallback)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(item) || item->valuestring == NULL)
        return fallback;
    return item->valuestring;
}

/* valuedouble, never valueint: valueint saturates at INT_MAX/INT_MIN. */
double th_json_number(const cJSON *obj, const char *key, double fallback)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(item))
        return fallback;
    return item->valuedouble;
}

bool th_json_bool(const cJSON *obj, const char *key, bool fallback)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsBool(item))
        return fallback;
    return cJSON_IsTrue(item);
}

/* Appends one path step ("a", "[3]") to path; keeps what fits. */
static void path_step(char *path, size_t size, const cJSON *item, int index)
{
    size_t n = strlen(path);
    if (n + 1 >= size)
        return;
    if (item->string != NULL)
        snprintf(path + n, size - n, "%s%s", n ? "." : "", item->string);
    else
        snprintf(path + n, size - n, "[%d]", index);
}

/* Depth-first search for a flagged item; path holds the way to it. */
static bool find_nul(const cJSON *item, int index, char *path, size_t size, bool *in_key)
{
    size_t keep = strlen(path);
    path_step(path, size, item, index);
    if (item->type & (TH_JSON_KEY_NUL | TH_JSON_STRING_NUL)) {
        *in_key = (item->type & TH_JSON_KEY_NUL) != 0;
        return true;
    }
    int i = 0;
    for (const cJSON *c = item->child; c != NULL; c = c->next, i++)
        if (find_nul(c, i, path, size, in_key))
            return true;
    path[keep] = '\0';
    return false;
}

/* True when `item` or anything below it is flagged; no path built (the common, clean case). */
static bool any_nul(const cJSON *item)
{
    for (; item != NULL; item = item->next) {
        if (item->type & (TH_JSON_KEY_NUL | TH_JSON_STRING_NUL))
            return true;
        if (item->child != NULL && any_nul(item->child))
            return true;
    }
    return false;
}

th_result th_json_refuse_nul(const cJSON *doc, const char *what, struct th_error *err)
{
    char path[256] = "";
    bool in_key = false;
    int i = 0;
    /* The path of a flagged item costs a snprintf per member on the way: only look for it
     * when there is one (a state directory of 100,000 twins spent a third of its load here). */
    if (doc == NULL ||
        (!(doc->type & (TH_JSON_KEY_NUL | TH_JSON_STRING_NUL)) && !any_nul(doc->child)))
        return TH_OK;
    for (const cJSON *c = doc != NULL ? doc->child : NULL; c != NULL; c = c->next, i++)
        if (find_nul(c, i, path, sizeof path, &in_key))
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "%s holds \\u0000 in the %s at '%s'; twinhub cannot keep the "
                                "NUL character in a JSON string, remove it",
                                what, in_key ? "member name" : "string value", path);
    if (doc != NULL && (doc->type & TH_JSON_STRING_NUL))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                            "%s is a string holding \\u0000; twinhub cannot keep the NUL "
                            "character in a JSON string, remove it",
                            what);
    return TH_OK;
}

cJSON *th_json_object(const cJSON *obj, const char *key)
{
    cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsObject(item) ? item : NULL;
}

/* 2^52: from here on a double may be integral although it was written as a decimal. */
#define DECIMAL_KEEP_FROM 4503599627370496.0

/*
 * The text cJSON 1.7.15 prints for a number that is not an int (print_number:
 * 15 significant digits, or 17 when 15 do not read back the same). cJSON
 * compares with a tolerance of about one unit in the last place, so it may
 * keep the 15 digits where this exact test takes 17; at 2^52 and beyond the
 * 15-digit text has an exponent, so a number that loses its decimal form in
 * cJSON's text is never missed here (at worst one more is printed in full).
 */
static void cjson_number_text(double d, char out[32])
{
    double back = 0;
    snprintf(out, 32, "%1.15g", d);
    if (sscanf(out, "%lg", &back) != 1 || back != d)
        snprintf(out, 32, "%1.17g", d);
}

/* A TH_JSON_DECIMAL number that cJSON would print as an integer literal beyond +-2^52. */
static bool loses_decimal(const cJSON *item, char text[32])
{
    if (!cJSON_IsNumber(item) || !(item->type & TH_JSON_DECIMAL))
        return false;
    double d = item->valuedouble;
    if (!isfinite(d) || (d < DECIMAL_KEEP_FROM && d > -DECIMAL_KEEP_FROM))
        return false;
    cjson_number_text(d, text);
    return strpbrk(text, ".eE") == NULL;
}

/* Ownership: the returned string is the caller's, freed with free() (cJSON's default hooks). */
void th_json_error_about(const struct th_error *err, const char *what, char *out, size_t size)
{
    /* The messages above read "JSON body <fact>; <advice>": keep the fact, name `what`. */
    const char *m = err->message;
    if (!strncmp(m, "JSON body ", 10))
        snprintf(out, size, "%s %.*s", what, (int)strcspn(m + 10, ";"), m + 10);
    else if (!strncmp(m, "JSON ", 5))
        snprintf(out, size, "%s: %.*s", what, (int)strcspn(m, ";"), m);
    else
        snprintf(out, size, "%s is not valid JSON: %s", what,
                 m[0] ? m : th_result_str(err->result));
}

/*
 * The printer behind th_json_print: the bytes cJSON_PrintUnformatted (cJSON
 * 1.7.15, print_value and friends) writes for the same tree, written without
 * its per-value sprintf calls and buffer copies, which were a fifth of the
 * broker's instructions per twin update (docs/performance.md, "Fan-out").
 * Integers (below 2^31 in size) are written digit by digit; a number
 * that is exactly r / 10^k (k <= 6) with at most 15 significant digits is
 * written from those digits, which is the text "%1.15g" gives it and reads
 * back equal, so cJSON keeps it too; anything else goes through cJSON's own
 * steps (cjson_print_number). Strings are escaped as cJSON does (", \, \b \f
 * \n \r \t, other bytes below 0x20 as \u00xx, everything else as is). The
 * hub never calls setlocale, so the decimal point is '.', as cJSON writes it.
 * tests/unit/test_json.c compares the two printers on many documents.
 */
/* The text is written with jsonw.c's writer (the same escapes, one growing buffer). */
static inline void pb_put(struct th_jsonw *b, const char *s, size_t n)
{
    th_jsonw_raw(b, s, n);
}

static inline void pb_putc(struct th_jsonw *b, char c)
{
    th_jsonw_raw(b, &c, 1);
}

static void pb_string(struct th_jsonw *b, const char *s)
{
    s = s ? s : "";
    th_jsonw_string(b, s, strlen(s));
}

/* Decimal text of v ending at `end` (NUL-terminated); returns its start. */
static char *fmt_u64(uint64_t v, char *end)
{
    *--end = '\0';
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* cJSON 1.7.15's compare_double. */
static bool cjson_close(double a, double b)
{
    double max = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= max * DBL_EPSILON;
}

/* What cJSON 1.7.15's print_number writes for a finite number that is not its valueint. */
static void cjson_print_number(double d, char out[32])
{
    double back = 0;
    snprintf(out, 32, "%1.15g", d);
    if (sscanf(out, "%lg", &back) != 1 || !cjson_close(back, d))
        snprintf(out, 32, "%1.17g", d);
}

static void pb_number(struct th_jsonw *b, const cJSON *item)
{
    static const double pow10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};
    char text[48];
    double d = item->valuedouble;
    if (isnan(d) || isinf(d)) {
        pb_put(b, "null", 4);
        return;
    }
    if (loses_decimal(item, text)) { /* th_json_print's ".0" rule (json.h) */
        pb_put(b, text, strlen(text));
        pb_put(b, ".0", 2);
        return;
    }
    if (d == 0) { /* "%1.15g" keeps the sign of -0 */
        pb_put(b, signbit(d) ? "-0" : "0", signbit(d) ? 2 : 1);
        return;
    }
    if (d == (double)item->valueint) {
        int v = item->valueint;
        char *s = fmt_u64(v < 0 ? (uint64_t)(-(int64_t)v) : (uint64_t)v, text + sizeof text);
        if (v < 0)
            *--s = '-';
        pb_put(b, s, strlen(s));
        return;
    }
    double a = fabs(d);
    for (int k = 0; a >= 1e-4 && a < 1e15 && k <= 6; k++) {
        double x = a * pow10[k];
        if (x >= 1e15)
            break; /* more decimals only make it longer: not 15 significant digits */
        double r = (double)(int64_t)(x + 0.5); /* no libm: the core links without it */
        if (r / pow10[k] != a)
            continue;
        /* a is the decimal r / 10^k; k is the smallest, so its last digit is not 0. */
        char digits[24];
        char *s = fmt_u64((uint64_t)r, digits + sizeof digits);
        size_t n = strlen(s), kk = (size_t)k;
        char *o = text;
        if (d < 0)
            *o++ = '-';
        if (n <= kk) {
            *o++ = '0';
            *o++ = '.';
            memset(o, '0', kk - n);
            o += kk - n;
            memcpy(o, s, n);
            o += n;
        } else {
            memcpy(o, s, n - kk);
            o += n - kk;
            if (kk) {
                *o++ = '.';
                memcpy(o, s + n - kk, kk);
                o += kk;
            }
        }
        pb_put(b, text, (size_t)(o - text));
        return;
    }
    cjson_print_number(d, text);
    pb_put(b, text, strlen(text));
}

static bool pb_value(struct th_jsonw *b, const cJSON *item, int depth)
{
    if (depth > 10000) { /* far beyond anything th_json_parse accepts */
        b->failed = true;
        return false;
    }
    switch (item->type & 0xFF) {
    case cJSON_NULL:
        pb_put(b, "null", 4);
        break;
    case cJSON_False:
        pb_put(b, "false", 5);
        break;
    case cJSON_True:
        pb_put(b, "true", 4);
        break;
    case cJSON_Number:
        pb_number(b, item);
        break;
    case cJSON_Raw:
        if (item->valuestring == NULL) {
            b->failed = true;
            return false;
        }
        pb_put(b, item->valuestring, strlen(item->valuestring));
        break;
    case cJSON_String:
        pb_string(b, item->valuestring);
        break;
    case cJSON_Array:
    case cJSON_Object: {
        bool obj = (item->type & 0xFF) == cJSON_Object;
        pb_putc(b, obj ? '{' : '[');
        for (const cJSON *c = item->child; c != NULL; c = c->next) {
            if (obj) {
                pb_string(b, c->string);
                pb_putc(b, ':');
            }
            if (!pb_value(b, c, depth + 1))
                return false;
            if (c->next)
                pb_putc(b, ',');
        }
        pb_putc(b, obj ? '}' : ']');
        break;
    }
    default:
        b->failed = true;
        return false;
    }
    return !b->failed;
}

char *th_json_print(const cJSON *item)
{
    if (item == NULL)
        return NULL;
    struct th_jsonw b = {0};
    if (!th_jsonw_reserve(&b, 255) || !pb_value(&b, item, 0)) {
        free(b.p);
        return NULL;
    }
    b.p[b.len] = '\0';
    return b.p;
}

/* ---- th_jbuf: the printer above, piece by piece, on a jsonw.h writer (json.h) ---- */

void th_jbuf_string(struct th_jsonw *b, const char *s)
{
    pb_string(b, s);
}

void th_jbuf_key(struct th_jsonw *b, const char *key)
{
    pb_string(b, key);
    pb_putc(b, ':');
}

void th_jbuf_number(struct th_jsonw *b, double d)
{
    /* The item cJSON_CreateNumber makes: valueint saturated as cJSON 1.7.15 does. */
    cJSON item = {.type = cJSON_Number, .valuedouble = d};
    if (isnan(d))
        item.valueint = 0; /* printed as null either way */
    else if (d >= INT_MAX)
        item.valueint = INT_MAX;
    else if (d <= (double)INT_MIN)
        item.valueint = INT_MIN;
    else
        item.valueint = (int)d;
    pb_number(b, &item);
}

void th_jbuf_value(struct th_jsonw *b, const cJSON *item)
{
    if (item == NULL)
        b->failed = true;
    else
        pb_value(b, item, 0);
}
