/*
 * json_fast.c - one pass over plain JSON text that builds the very tree
 * cJSON 1.7.15's parser builds for it, with th_json_parse's flags, for the
 * common case: every request to the hub is parsed, and cJSON's parser (a
 * strncmp per literal test, two passes per string, strtod for every number)
 * plus th_json_parse's flag walk and depth pass were a third of the broker's
 * instructions per desired update (docs/performance.md, "Fan-out").
 *
 * It takes only what it can reproduce exactly and gives up (NULL) on anything
 * else, and th_json_parse then runs its cJSON path, which decides and words
 * every error: whitespace other than space, tab, CR and LF (cJSON skips any
 * byte <= 0x20); \u escapes (UTF-16 and the \u0000 flags); raw NUL bytes in
 * strings; numbers with a trailing '.' or an empty exponent, more than 15
 * digits with a fraction or an exponent or more than 18 without, or a power
 * of ten beyond 10^+-22 in all; nesting past max_depth; trailing bytes other
 * than JSON whitespace; and out of memory. For the numbers it takes, the
 * value is what strtod returns for that text, correctly rounded: m * 10^k or
 * m / 10^k with m < 10^15 and k <= 22 is one correctly rounded operation on
 * two exact doubles (Clinger's fast path), and an integer m < 10^18 (< 2^63:
 * the state files' times in microseconds have 16 digits) one correctly
 * rounded conversion of an exact int64_t. tests/unit/test_json_fast.c compares the two paths
 * on many texts, tree against tree (types and flags, values, names, links).
 */
#include "json_fast.h"

#include <stdint.h>
#include <string.h>

#include "json.h"

bool th_json_fast_enabled = true;

struct fp {
    const char *p, *end;
    int depth, max_depth;
};

static void skip_ws(struct fp *f)
{
    while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
        f->p++;
}

static cJSON *value(struct fp *f);

/* A string token at f->p (a '"'), unescaped into cJSON's allocator; NULL to give up. */
static char *string(struct fp *f)
{
    const char *s = ++f->p;
    size_t n = 0;
    bool escaped = false;
    while (f->p < f->end && *f->p != '"') {
        unsigned char c = (unsigned char)*f->p;
        if (c == '\\') {
            if (f->end - f->p < 2 || strchr("\"\\/bfnrt", f->p[1]) == NULL || f->p[1] == '\0')
                return NULL; /* \u, a bad escape or the end: cJSON decides */
            escaped = true;
            f->p += 2;
        } else if (c == '\0') {
            return NULL;
        } else {
            f->p++;
        }
        n++;
    }
    if (f->p >= f->end)
        return NULL;
    char *out = cJSON_malloc(n + 1);
    if (out == NULL)
        return NULL;
    if (!escaped) {
        memcpy(out, s, n);
    } else {
        char *o = out;
        for (const char *q = s; q < f->p; q++) {
            if (*q != '\\') {
                *o++ = *q;
                continue;
            }
            switch (*++q) {
            case 'b':
                *o++ = '\b';
                break;
            case 'f':
                *o++ = '\f';
                break;
            case 'n':
                *o++ = '\n';
                break;
            case 'r':
                *o++ = '\r';
                break;
            case 't':
                *o++ = '\t';
                break;
            default: /* " \ / */
                *o++ = *q;
            }
        }
    }
    out[n] = '\0';
    f->p++; /* the closing quote */
    return out;
}

static cJSON *number(struct fp *f)
{
    /* The powers of ten a double holds exactly: 10^22 is the last. */
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    bool neg = *f->p == '-';
    if (neg)
        f->p++;
    uint64_t m = 0;
    int digits = 0, decimals = 0, exp10 = 0;
    /* At most 19 digits read here (m < 10^19 < 2^64): more than 18 is not ours. */
    while (f->p < f->end && *f->p >= '0' && *f->p <= '9' && digits <= 18) {
        m = m * 10 + (uint64_t)(*f->p++ - '0');
        digits++;
    }
    if (digits == 0)
        return NULL;
    bool decimal = f->p < f->end && *f->p == '.';
    if (decimal) {
        f->p++;
        while (f->p < f->end && *f->p >= '0' && *f->p <= '9' && digits <= 15) {
            m = m * 10 + (uint64_t)(*f->p++ - '0');
            digits++;
            decimals++;
        }
        if (decimals == 0)
            return NULL;
    }
    /* An exponent (cJSON prints 1796617375310120 as 1.79661737531012e+15): 1 to 3 digits. */
    if (f->p < f->end && (*f->p == 'e' || *f->p == 'E')) {
        decimal = true;
        f->p++;
        bool eneg = f->p < f->end && *f->p == '-';
        if (f->p < f->end && (*f->p == '-' || *f->p == '+'))
            f->p++;
        int edigits = 0;
        while (f->p < f->end && *f->p >= '0' && *f->p <= '9' && edigits <= 3) {
            exp10 = exp10 * 10 + (*f->p++ - '0');
            edigits++;
        }
        if (edigits == 0 || edigits > 3)
            return NULL;
        if (eneg)
            exp10 = -exp10;
    }
    exp10 -= decimals;
    /* cJSON hands the longest run of these characters to strtod: anything more is not ours. */
    if (digits > (decimal ? 15 : 18) || exp10 > 22 || exp10 < -22 ||
        (f->p < f->end && strchr("0123456789+-eE.", *f->p) != NULL && *f->p != '\0'))
        return NULL;
    double d = (double)(int64_t)m; /* exact below 2^53, else rounded once as strtod rounds */
    if (exp10 > 0)
        d *= pow10[exp10];
    else if (exp10 < 0)
        d /= pow10[-exp10];
    cJSON *item = cJSON_CreateNumber(neg ? -d : d);
    if (item != NULL && decimal)
        item->type |= TH_JSON_DECIMAL;
    return item;
}

static bool literal(struct fp *f, const char *word, size_t n)
{
    if ((size_t)(f->end - f->p) < n || memcmp(f->p, word, n) != 0)
        return false;
    f->p += n;
    return true;
}

/* Appends `item` to `parent`'s children as cJSON's parser links them (first->prev = last). */
static void link_child(cJSON *parent, cJSON **last, cJSON *item)
{
    if (*last == NULL) {
        parent->child = item;
    } else {
        (*last)->next = item;
        item->prev = *last;
    }
    *last = item;
    parent->child->prev = item;
}

static cJSON *container(struct fp *f, bool object)
{
    if (++f->depth > f->max_depth || f->depth >= CJSON_NESTING_LIMIT)
        return NULL;
    cJSON *c = object ? cJSON_CreateObject() : cJSON_CreateArray();
    cJSON *last = NULL;
    if (c == NULL)
        return NULL;
    f->p++;
    skip_ws(f);
    if (f->p < f->end && *f->p == (object ? '}' : ']')) {
        f->p++;
        f->depth--;
        return c;
    }
    for (;;) {
        char *key = NULL;
        if (object) {
            if (f->p >= f->end || *f->p != '"' || (key = string(f)) == NULL)
                goto fail;
            skip_ws(f);
            if (f->p >= f->end || *f->p != ':') {
                cJSON_free(key);
                goto fail;
            }
            f->p++;
            skip_ws(f);
        }
        cJSON *item = value(f);
        if (item == NULL) {
            cJSON_free(key);
            goto fail;
        }
        item->string = key;
        link_child(c, &last, item);
        skip_ws(f);
        if (f->p < f->end && *f->p == ',') {
            f->p++;
            skip_ws(f);
            continue;
        }
        if (f->p < f->end && *f->p == (object ? '}' : ']')) {
            f->p++;
            f->depth--;
            return c;
        }
        goto fail;
    }
fail:
    cJSON_Delete(c);
    return NULL;
}

static cJSON *value(struct fp *f)
{
    if (f->p >= f->end)
        return NULL;
    switch (*f->p) {
    case 'n':
        return literal(f, "null", 4) ? cJSON_CreateNull() : NULL;
    case 'f':
        return literal(f, "false", 5) ? cJSON_CreateFalse() : NULL;
    case 't': {
        cJSON *item = literal(f, "true", 4) ? cJSON_CreateTrue() : NULL;
        if (item != NULL)
            item->valueint = 1; /* as cJSON's parser sets it */
        return item;
    }
    case '"': {
        char *s = string(f);
        cJSON *item = s != NULL ? cJSON_CreateNull() : NULL;
        if (item == NULL) {
            cJSON_free(s);
            return NULL;
        }
        item->type = cJSON_String;
        item->valuestring = s;
        return item;
    }
    case '{':
        return container(f, true);
    case '[':
        return container(f, false);
    default:
        return *f->p == '-' || (*f->p >= '0' && *f->p <= '9') ? number(f) : NULL;
    }
}

cJSON *th_json_parse_fast(const char *text, size_t len, int max_depth)
{
    if (!th_json_fast_enabled || text == NULL)
        return NULL;
    struct fp f = {.p = text, .end = text + len, .max_depth = max_depth};
    cJSON *root = value(&f);
    if (root == NULL)
        return NULL;
    skip_ws(&f);
    if (f.p != f.end) { /* trailing bytes: th_json_parse's cJSON path words the error */
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Clears the flags the one-pass path sets (TH_JSON_DECIMAL; it leaves \u escapes to cJSON). */
static void clear_decimal(cJSON *item)
{
    for (; item != NULL; item = item->next) {
        item->type &= ~TH_JSON_DECIMAL;
        if (item->child != NULL)
            clear_decimal(item->child);
    }
}

cJSON *th_json_parse_as_cjson(const char *text, size_t len)
{
    /* No leading whitespace or BOM (the fast path gives up on them): cJSON's parser skips them. */
    cJSON *fast = text != NULL ? th_json_parse_fast(text, len, CJSON_NESTING_LIMIT) : NULL;
    if (fast == NULL)
        return cJSON_ParseWithLength(text, len);
    clear_decimal(fast);
    return fast;
}
