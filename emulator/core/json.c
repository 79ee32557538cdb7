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

#include <math.h>
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
    bool in_string = false, escaped = false;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
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
    while (w->ok && w->p < w->end && *w->p != '"') {
        if (*w->p == '\\') {
            if (w->end - w->p >= 6 && w->p[1] == 'u' && memcmp(w->p + 2, "0000", 4) == 0)
                nul = true;
            w->p++; /* the escaped character; \uXXXX digits are stepped over one by one */
        }
        w->p++;
    }
    walk_expect(w, '"');
    return nul;
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
        while (w->p < w->end && strchr("0123456789+-.eE", *w->p) != NULL && *w->p != '\0') {
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

th_result th_json_refuse_nul(const cJSON *doc, const char *what, struct th_error *err)
{
    char path[256] = "";
    bool in_key = false;
    int i = 0;
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

static bool any_loses_decimal(const cJSON *item)
{
    char text[32];
    for (; item != NULL; item = item->next)
        if (loses_decimal(item, text) || any_loses_decimal(item->child))
            return true;
    return false;
}

/* Turns such numbers into raw text with ".0"; false on OOM. */
static bool keep_decimals(cJSON *item)
{
    char text[32];
    for (; item != NULL; item = item->next) {
        if (loses_decimal(item, text)) {
            size_t n = strlen(text);
            char *raw = cJSON_malloc(n + 3);
            if (raw == NULL)
                return false;
            memcpy(raw, text, n);
            memcpy(raw + n, ".0", 3);
            item->type = cJSON_Raw | (item->type & cJSON_StringIsConst);
            item->valuestring = raw;
        } else if (!keep_decimals(item->child)) {
            return false;
        }
    }
    return true;
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

char *th_json_print(const cJSON *item)
{
    if (item == NULL)
        return NULL;
    char text[32];
    if (!loses_decimal(item, text) && !any_loses_decimal(item->child))
        return cJSON_PrintUnformatted(item);
    /* Rare: print a copy whose numbers of that kind are raw text. */
    cJSON *copy = cJSON_Duplicate(item, true);
    char *out = NULL;
    if (copy != NULL && keep_decimals(copy)) /* a duplicate has no siblings to walk */
        out = cJSON_PrintUnformatted(copy);
    cJSON_Delete(copy);
    return out;
}
