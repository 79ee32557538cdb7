/*
 * scn_match.c - matchers (docs/scenarios.md, "Matchers"): a plain object
 * matches a superset object, an array matches element by element, a scalar
 * matches an equal scalar; objects whose member is a known `$` operator
 * match by that operator. A mismatch reports the path of the first
 * difference with the expected matcher and the actual value.
 *
 * Member names `$version`, `$metadata` and `$.x` (twin versions and
 * telemetry system properties on the wire) are plain names, not operators.
 */
#define _GNU_SOURCE
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define SHOW_MAX 200

/* Whether an object member name is an operator name (starts with '$', not a twin/wire name). */
static bool is_op_key(const char *k)
{
    return k && k[0] == '$' && strcmp(k, "$version") != 0 && strcmp(k, "$metadata") != 0 &&
           strncmp(k, "$.", 2) != 0;
}

/* The operator member of an operator object, or NULL for a plain value. */
static const cJSON *op_member(const cJSON *m)
{
    if (!cJSON_IsObject(m))
        return NULL;
    const cJSON *c;
    cJSON_ArrayForEach(c, m)
    {
        if (is_op_key(c->string))
            return c;
    }
    return NULL;
}

/* ---- regular expressions glibc compiles in bounded time ---- */

#define REGEX_MAX_LEN 1000
#define REGEX_MAX_REPEAT 1000 /* product of nested repetition counts */
#define REGEX_MAX_GROUPS 64

/* "{m}", "{m,}", "{m,n}" or "{,n}" at p: its largest count (m for "{m,}", at least 1) and
 * length; false if not. */
static bool regex_interval(const char *p, unsigned long *count, size_t *len)
{
    size_t i = 1;
    unsigned long m = 0, n = 0;
    bool digits = false, comma = false, ndigits = false;
    for (; p[i] >= '0' && p[i] <= '9'; i++, digits = true)
        m = m > 100000 ? m : m * 10 + (unsigned long)(p[i] - '0');
    if (p[i] == ',') {
        comma = true;
        for (i++; p[i] >= '0' && p[i] <= '9'; i++, ndigits = true)
            n = n > 100000 ? n : n * 10 + (unsigned long)(p[i] - '0');
    }
    /* glibc reads "{,n}" as "{0,n}" (and "{,}" as "{0,}"): count those too. */
    if ((!digits && !comma) || p[i] != '}')
        return false;
    *count = comma && ndigits ? n : m;
    if (*count == 0)
        *count = 1;
    *len = i + 1;
    return true;
}

/* Index just past the bracket expression starting at p[i] == '[' (or the end). */
static size_t regex_bracket_end(const char *p, size_t i)
{
    i++;
    if (p[i] == '^')
        i++;
    if (p[i] == ']')
        i++; /* a leading ']' is literal */
    while (p[i] && p[i] != ']') {
        if (p[i] == '[' && (p[i + 1] == ':' || p[i + 1] == '.' || p[i + 1] == '=')) {
            const char *close = strstr(p + i + 2, (char[]){p[i + 1], ']', '\0'});
            i = close ? (size_t)(close - p) + 2 : strlen(p);
        } else {
            i++;
        }
    }
    return p[i] ? i + 1 : i;
}

/*
 * Whether glibc's regcomp compiles `p` in bounded time; else why not. Found by
 * fuzz_scenario: regcomp's cost grows steeply with runs of repetition operators
 * ("[0-9]+" and 111 '*' took 2.7 s, 222 took 70 s, for every th_match) and with
 * nested counted repetitions ("((a{1,100}){1,100}){1,100}"), and regexec's
 * with back-references ("(a*)(a*)(a*)\3\2\1c" against 120 'a's: minutes).
 * So: at most REGEX_MAX_LEN characters, no two repetition operators in a row
 * and no back-references (POSIX leaves both undefined in EREs anyway), and
 * nested counts whose product stays within REGEX_MAX_REPEAT. The scan is
 * approximate where regcomp decides validity.
 */
static bool regex_tame(const char *p, char *why, size_t size)
{
    size_t len = strlen(p);
    if (len > REGEX_MAX_LEN) {
        snprintf(why, size, "longer than %d characters", REGEX_MAX_LEN);
        return false;
    }
    unsigned long stack[REGEX_MAX_GROUPS];
    int depth = 0;
    unsigned long cur = 1;  /* the largest repetition product inside the current group */
    unsigned long last = 0; /* the product of the atom just read; 0: none (start, '(', '|') */
    bool after_repeat = false;
    for (size_t i = 0; i < len;) {
        char c = p[i];
        unsigned long count = 1;
        size_t adv = 1;
        if (c == '*' || c == '+' || c == '?' || (c == '{' && regex_interval(p + i, &count, &adv))) {
            if (after_repeat) {
                snprintf(why, size,
                         "two repetition operators in a row at character %zu (as in \"a**\" or "
                         "\"a+{2}\"): POSIX leaves them undefined; keep one",
                         i + 1);
                return false;
            }
            if (last) {
                unsigned long v = count > REGEX_MAX_REPEAT ? count : last * count;
                if (v > REGEX_MAX_REPEAT) {
                    snprintf(why, size,
                             "repetition counts multiply to more than %d (at character %zu); "
                             "use smaller counts",
                             REGEX_MAX_REPEAT, i + 1);
                    return false;
                }
                cur = v > cur ? v : cur;
                last = v;
            }
            after_repeat = true;
            i += adv;
            continue;
        }
        after_repeat = false;
        if (c == '\\' && p[i + 1] >= '1' && p[i + 1] <= '9') {
            snprintf(why, size,
                     "back-reference \\%c at character %zu: POSIX extended regular expressions "
                     "have none, and glibc's can take minutes to match",
                     p[i + 1], i + 1);
            return false;
        } else if (c == '\\') {
            last = 1;
            i += p[i + 1] ? 2 : 1;
        } else if (c == '[') {
            last = 1;
            i = regex_bracket_end(p, i);
        } else if (c == '(') {
            if (depth == REGEX_MAX_GROUPS) {
                snprintf(why, size, "groups nested more than %d deep", REGEX_MAX_GROUPS);
                return false;
            }
            stack[depth++] = cur;
            cur = 1;
            last = 0;
            i++;
        } else if (c == ')' && depth > 0) {
            unsigned long inner = cur;
            cur = stack[--depth];
            cur = inner > cur ? inner : cur;
            last = inner;
            i++;
        } else if (c == '|' || c == '^' || c == '$') {
            last = 0;
            i++;
        } else {
            last = 1;
            i++;
        }
    }
    return true;
}

/* ---- validation ---- */

struct vctx {
    const char *file;
    struct th_scn_diag *diag;
    void (*on_capture)(const char *name, void *arg);
    void *arg;
    bool ok;
};

static void verr(struct vctx *v, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void verr(struct vctx *v, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    v->ok = false;
    th_scn_diag_add(v->diag, v->file, path, "%s", msg);
}

static bool validate_at(struct vctx *v, const cJSON *m, char *path, size_t cap);

/* Append ".key" or "[i]" to path; returns the old length to restore. */
static size_t push_key(char *path, size_t cap, const char *key)
{
    size_t old = strlen(path);
    snprintf(path + old, cap - old, "%s%s", old ? "." : "", key);
    return old;
}

static size_t push_index(char *path, size_t cap, int i)
{
    size_t old = strlen(path);
    snprintf(path + old, cap - old, "[%d]", i);
    return old;
}

static bool duration_operand_ok(struct vctx *v, const cJSON *d, char *path, size_t cap)
{
    if (cJSON_IsTrue(d))
        return true;
    if (!cJSON_IsObject(d)) {
        verr(v, path, "expected true or {\"min\": \"PT1S\", \"max\": \"PT10M\"}");
        return false;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, d)
    {
        size_t old = push_key(path, cap, c->string);
        int64_t us;
        if (strcmp(c->string, "min") != 0 && strcmp(c->string, "max") != 0)
            verr(v, path, "unknown member; $duration takes \"min\" and \"max\"");
        else if (!cJSON_IsString(c) ||
                 (!strstr(c->valuestring, "${") && !th_duration_parse(c->valuestring, &us)))
            verr(v, path, "expected an ISO 8601 duration such as \"PT15S\"");
        path[old] = '\0';
    }
    return true;
}

static bool validate_op(struct vctx *v, const cJSON *m, const cJSON *op, char *path, size_t cap)
{
    const char *name = op->string;
    int n = cJSON_GetArraySize(m);
    bool capture = !strcmp(name, "$capture");
    const cJSON *match = capture ? cJSON_GetObjectItemCaseSensitive(m, "match") : NULL;
    if (n > 1 + (match ? 1 : 0)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, m)
        {
            if (c != op && c != match) {
                size_t old = push_key(path, cap, c->string);
                verr(v, path,
                     "an operator object holds only its operator (\"$capture\" may add "
                     "\"match\"); put other members in a plain object around it");
                path[old] = '\0';
            }
        }
    }
    size_t old = push_key(path, cap, name);
    if (!strcmp(name, "$exact")) {
        /* any JSON */
    } else if (!strcmp(name, "$regex")) {
        if (!cJSON_IsString(op)) {
            verr(v, path, "expected a string holding a POSIX extended regular expression");
        } else if (!strstr(op->valuestring, "${")) {
            regex_t re;
            char why[200];
            int rc;
            if (!regex_tame(op->valuestring, why, sizeof why))
                verr(v, path, "not a usable regular expression: %s", why);
            else if ((rc = regcomp(&re, op->valuestring, REG_EXTENDED | REG_NOSUB)) != 0) {
                char buf[256];
                regerror(rc, &re, buf, sizeof buf);
                verr(v, path, "not a POSIX extended regular expression: %s", buf);
            } else {
                regfree(&re);
            }
        }
    } else if (!strcmp(name, "$range")) {
        int bounds = 0;
        if (!cJSON_IsObject(op)) {
            verr(v, path,
                 "expected {\"min\": a, \"max\": b} (either optional; also "
                 "\"exclusiveMin\", \"exclusiveMax\")");
        } else {
            const cJSON *c;
            cJSON_ArrayForEach(c, op)
            {
                size_t o2 = push_key(path, cap, c->string);
                if (strcmp(c->string, "min") && strcmp(c->string, "max") &&
                    strcmp(c->string, "exclusiveMin") && strcmp(c->string, "exclusiveMax"))
                    verr(v, path,
                         "unknown member; $range takes min, max, exclusiveMin, "
                         "exclusiveMax");
                else if (!cJSON_IsNumber(c))
                    verr(v, path, "expected a number");
                else
                    bounds++;
                path[o2] = '\0';
            }
            if (bounds == 0 && cJSON_GetArraySize(op) == 0)
                verr(v, path, "give at least one bound (min, max, exclusiveMin, exclusiveMax)");
        }
    } else if (!strcmp(name, "$present") || !strcmp(name, "$absent")) {
        if (!cJSON_IsBool(op))
            verr(v, path, "expected true or false");
    } else if (!strcmp(name, "$type")) {
        static const char *const types[] = {"string", "number", "integer", "boolean",
                                            "object", "array",  "null"};
        bool known = false;
        for (size_t i = 0; cJSON_IsString(op) && i < sizeof types / sizeof types[0]; i++)
            known |= !strcmp(op->valuestring, types[i]);
        if (!known)
            verr(v, path,
                 "expected one of \"string\", \"number\", \"integer\", \"boolean\", "
                 "\"object\", \"array\", \"null\"");
    } else if (!strcmp(name, "$duration")) {
        duration_operand_ok(v, op, path, cap);
    } else if (!strcmp(name, "$anyOf")) {
        if (!cJSON_IsArray(op) || cJSON_GetArraySize(op) == 0) {
            verr(v, path, "expected a non-empty array of matchers");
        } else {
            int i = 0;
            const cJSON *c;
            cJSON_ArrayForEach(c, op)
            {
                size_t o2 = push_index(path, cap, i++);
                validate_at(v, c, path, cap);
                path[o2] = '\0';
            }
        }
    } else if (!strcmp(name, "$not") || !strcmp(name, "$contains")) {
        validate_at(v, op, path, cap);
    } else if (capture) {
        if (!cJSON_IsString(op) || !th_vars_valid_name(op->valuestring))
            verr(v, path,
                 "expected a variable name (letters, digits, '_' and '-', not "
                 "starting with a digit)");
        else if (v->on_capture)
            v->on_capture(op->valuestring, v->arg);
        if (match) {
            path[old] = '\0';
            size_t o2 = push_key(path, cap, "match");
            validate_at(v, match, path, cap);
            path[o2] = '\0';
        }
    } else {
        verr(v, path,
             "unknown operator '%s'; operators are $exact, $regex, $range, $present, $absent, "
             "$type, $duration, $anyOf, $not, $contains, $capture",
             name);
    }
    path[old] = '\0';
    return v->ok;
}

static bool validate_at(struct vctx *v, const cJSON *m, char *path, size_t cap)
{
    const cJSON *op = op_member(m);
    if (op)
        return validate_op(v, m, op, path, cap);
    if (cJSON_IsObject(m)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, m)
        {
            size_t old = push_key(path, cap, c->string);
            validate_at(v, c, path, cap);
            path[old] = '\0';
        }
    } else if (cJSON_IsArray(m)) {
        int i = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, m)
        {
            size_t old = push_index(path, cap, i++);
            validate_at(v, c, path, cap);
            path[old] = '\0';
        }
    }
    return v->ok;
}

bool th_matcher_validate(const cJSON *matcher, const char *file, const char *path,
                         struct th_scn_diag *diag, void (*on_capture)(const char *name, void *arg),
                         void *arg)
{
    struct vctx v = {file, diag, on_capture, arg, true};
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path ? path : "");
    return validate_at(&v, matcher, buf, sizeof buf);
}

/* ---- matching ---- */

struct mctx {
    struct th_mismatch *why;
};

/*
 * The formats below are literals of this file that take the expected text
 * and then the actual text ("%.0s" swallows one that a sentence omits).
 */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

static void fail(struct mctx *x, const char *path, const char *fmt, const cJSON *expected,
                 const cJSON *actual)
{
    if (!x->why)
        return;
    char *e = th_scn_json_short(expected, SHOW_MAX);
    char *a = th_scn_json_short(actual, SHOW_MAX);
    snprintf(x->why->path, sizeof x->why->path, "%s", path);
    char body[1200];
    /* fmt takes the expected text, then the actual text */
    snprintf(body, sizeof body, fmt, e ? e : "?", a ? a : "?");
    snprintf(x->why->message, sizeof x->why->message, "%s: %s", path, body);
    free(e);
    free(a);
}

static void fail_text(struct mctx *x, const char *path, const char *text)
{
    if (!x->why)
        return;
    snprintf(x->why->path, sizeof x->why->path, "%s", path);
    snprintf(x->why->message, sizeof x->why->message, "%s: %s", path, text);
}

static bool match_at(struct mctx *x, const cJSON *m, const cJSON *a, char *path, size_t cap,
                     cJSON *caps);

static bool scalar_equal(const cJSON *m, const cJSON *a)
{
    if (cJSON_IsNumber(m))
        return cJSON_IsNumber(a) && m->valuedouble == a->valuedouble;
    if (cJSON_IsString(m))
        return cJSON_IsString(a) && !strcmp(m->valuestring, a->valuestring);
    if (cJSON_IsBool(m))
        return cJSON_IsBool(a) && cJSON_IsTrue(m) == cJSON_IsTrue(a);
    if (cJSON_IsNull(m))
        return cJSON_IsNull(a);
    return false;
}

/* Deep equality with the path of the first difference. */
static bool exact_at(struct mctx *x, const cJSON *m, const cJSON *a, char *path, size_t cap)
{
    if (!a) {
        fail(x, path, "expected %s, got nothing (the member is absent)%.0s", m, NULL);
        return false;
    }
    if (cJSON_IsObject(m)) {
        if (!cJSON_IsObject(a)) {
            fail(x, path, "expected exactly %s, got %s", m, a);
            return false;
        }
        const cJSON *c;
        cJSON_ArrayForEach(c, m)
        {
            size_t old = push_key(path, cap, c->string);
            bool ok = exact_at(x, c, cJSON_GetObjectItemCaseSensitive(a, c->string), path, cap);
            path[old] = '\0';
            if (!ok)
                return false;
        }
        cJSON_ArrayForEach(c, a)
        {
            if (!cJSON_GetObjectItemCaseSensitive(m, c->string)) {
                size_t old = push_key(path, cap, c->string);
                fail(x, path, "expected no such member ($exact%.0s), got %s", NULL, c);
                path[old] = '\0';
                return false;
            }
        }
        return true;
    }
    if (cJSON_IsArray(m)) {
        int n = cJSON_GetArraySize(m);
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
            fail(x, path, "expected exactly %s, got %s", m, a);
            return false;
        }
        for (int i = 0; i < n; i++) {
            size_t old = push_index(path, cap, i);
            bool ok = exact_at(x, cJSON_GetArrayItem(m, i), cJSON_GetArrayItem(a, i), path, cap);
            path[old] = '\0';
            if (!ok)
                return false;
        }
        return true;
    }
    if (!scalar_equal(m, a)) {
        fail(x, path, "expected %s, got %s", m, a);
        return false;
    }
    return true;
}

/* Merge captured strings from `from` into `into` (replacing). Out of memory drops a capture, as
 * it does where a capture is made: the match itself still decides. */
static void put_cap(cJSON *caps, const char *k, cJSON *item)
{
    bool ok = cJSON_GetObjectItemCaseSensitive(caps, k)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(caps, k, item)
                  : cJSON_AddItemToObject(caps, k, item);
    if (!ok)
        cJSON_Delete(item);
}

static void merge_caps(cJSON *into, cJSON *from)
{
    if (!into || !from)
        return;
    cJSON *c = from->child;
    while (c) {
        cJSON *next = c->next;
        cJSON *item = cJSON_DetachItemViaPointer(from, c);
        put_cap(into, item->string, item);
        c = next;
    }
}

static bool is_integer(const cJSON *a)
{
    if (!cJSON_IsNumber(a))
        return false;
    double v = a->valuedouble;
    return v <= 9007199254740992.0 && v >= -9007199254740992.0 && (double)(long long)v == v;
}

static const char *type_of(const cJSON *a)
{
    if (!a)
        return "absent";
    if (cJSON_IsString(a))
        return "string";
    if (cJSON_IsNumber(a))
        return is_integer(a) ? "integer" : "number";
    if (cJSON_IsBool(a))
        return "boolean";
    if (cJSON_IsObject(a))
        return "object";
    if (cJSON_IsArray(a))
        return "array";
    return "null";
}

static bool match_op(struct mctx *x, const cJSON *m, const cJSON *op, const cJSON *a, char *path,
                     size_t cap, cJSON *caps)
{
    const char *name = op->string;
    if (!strcmp(name, "$absent") || !strcmp(name, "$present")) {
        bool want_present = (strcmp(name, "$present") == 0) == (cJSON_IsTrue(op) != 0);
        if (want_present && !a) {
            fail_text(x, path, "expected the member to be present, got nothing (it is absent)");
            return false;
        }
        if (!want_present && a) {
            fail(x, path, "expected the member to be absent%.0s, got %s", NULL, a);
            return false;
        }
        return true;
    }
    if (!strcmp(name, "$not")) {
        struct mctx quiet = {NULL};
        if (match_at(&quiet, op, a, path, cap, NULL)) {
            fail(x, path, "expected anything but %s, got %s", op, a);
            return false;
        }
        return true;
    }
    if (!strcmp(name, "$anyOf")) {
        const cJSON *alt;
        cJSON_ArrayForEach(alt, op)
        {
            struct mctx quiet = {NULL};
            cJSON *tmp = cJSON_CreateObject();
            if (match_at(&quiet, alt, a, path, cap, tmp)) {
                merge_caps(caps, tmp);
                cJSON_Delete(tmp);
                return true;
            }
            cJSON_Delete(tmp);
        }
        if (!a)
            fail(x, path, "expected any of %s, got nothing (the member is absent)%.0s", op, NULL);
        else
            fail(x, path, "expected any of %s, got %s", op, a);
        return false;
    }
    if (!strcmp(name, "$capture")) {
        const cJSON *inner = cJSON_GetObjectItemCaseSensitive(m, "match");
        if (inner) {
            if (!match_at(x, inner, a, path, cap, caps))
                return false;
        } else if (!a) {
            fail_text(x, path, "expected a value to capture, got nothing (the member is absent)");
            return false;
        }
        if (caps && cJSON_IsString(op) && a) {
            char *text = cJSON_IsString(a) ? strdup(a->valuestring) : cJSON_PrintUnformatted(a);
            cJSON *s = text ? cJSON_CreateString(text) : NULL;
            free(text);
            if (s)
                put_cap(caps, op->valuestring, s);
        }
        return true;
    }
    /* The remaining operators need a value. */
    if (!a) {
        fail(x, path, "expected %s, got nothing (the member is absent)%.0s", m, NULL);
        return false;
    }
    if (!strcmp(name, "$exact"))
        return exact_at(x, op, a, path, cap);
    if (!strcmp(name, "$regex")) {
        if (!cJSON_IsString(a)) {
            fail(x, path, "expected a string matching %s, got %s", op, a);
            return false;
        }
        regex_t re;
        char why[200];
        /* A ${...} in the pattern is resolved by now and may hold anything: check it again. */
        if (!cJSON_IsString(op) || !regex_tame(op->valuestring, why, sizeof why) ||
            regcomp(&re, op->valuestring, REG_EXTENDED | REG_NOSUB) != 0) {
            fail(x, path, "%s is not a valid regular expression%.0s", op, NULL);
            return false;
        }
        bool ok = regexec(&re, a->valuestring, 0, NULL, 0) == 0;
        regfree(&re);
        if (!ok)
            fail(x, path, "expected a string matching %s, got %s", op, a);
        return ok;
    }
    if (!strcmp(name, "$range")) {
        if (!cJSON_IsNumber(a)) {
            fail(x, path, "expected a number in %s, got %s", op, a);
            return false;
        }
        double v = a->valuedouble;
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(op, "min");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(op, "max");
        const cJSON *emn = cJSON_GetObjectItemCaseSensitive(op, "exclusiveMin");
        const cJSON *emx = cJSON_GetObjectItemCaseSensitive(op, "exclusiveMax");
        bool ok = (!cJSON_IsNumber(mn) || v >= mn->valuedouble) &&
                  (!cJSON_IsNumber(mx) || v <= mx->valuedouble) &&
                  (!cJSON_IsNumber(emn) || v > emn->valuedouble) &&
                  (!cJSON_IsNumber(emx) || v < emx->valuedouble);
        if (!ok)
            fail(x, path, "expected a number in %s, got %s", op, a);
        return ok;
    }
    if (!strcmp(name, "$type")) {
        const char *want = cJSON_IsString(op) ? op->valuestring : "";
        const char *got = type_of(a);
        bool ok = !strcmp(want, got) || (!strcmp(want, "number") && !strcmp(got, "integer"));
        if (!ok) {
            char text[600];
            char *as = th_scn_json_short(a, SHOW_MAX);
            snprintf(text, sizeof text, "expected a value of type %s, got %s %s", want, got,
                     as ? as : "");
            free(as);
            fail_text(x, path, text);
        }
        return ok;
    }
    if (!strcmp(name, "$duration")) {
        int64_t us;
        if (!cJSON_IsString(a) || !th_duration_parse(a->valuestring, &us)) {
            fail(x, path, "expected an ISO 8601 duration%.0s, got %s", NULL, a);
            return false;
        }
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(op, "min");
        const cJSON *mx = cJSON_GetObjectItemCaseSensitive(op, "max");
        int64_t lo, hi;
        bool ok = (!cJSON_IsString(mn) || (th_duration_parse(mn->valuestring, &lo) && us >= lo)) &&
                  (!cJSON_IsString(mx) || (th_duration_parse(mx->valuestring, &hi) && us <= hi));
        if (!ok)
            fail(x, path, "expected a duration within %s, got %s", op, a);
        return ok;
    }
    if (!strcmp(name, "$contains")) {
        if (!cJSON_IsArray(a)) {
            fail(x, path, "expected an array with an element matching %s, got %s", op, a);
            return false;
        }
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, a)
        {
            struct mctx quiet = {NULL};
            cJSON *tmp = cJSON_CreateObject();
            size_t old = push_index(path, cap, i++);
            bool ok = match_at(&quiet, op, e, path, cap, tmp);
            path[old] = '\0';
            if (ok) {
                merge_caps(caps, tmp);
                cJSON_Delete(tmp);
                return true;
            }
            cJSON_Delete(tmp);
        }
        fail(x, path, "expected an array with an element matching %s, got %s", op, a);
        return false;
    }
    fail(x, path, "unknown operator in %s%.0s", m, NULL);
    return false;
}

static bool match_at(struct mctx *x, const cJSON *m, const cJSON *a, char *path, size_t cap,
                     cJSON *caps)
{
    const cJSON *op = op_member(m);
    if (op)
        return match_op(x, m, op, a, path, cap, caps);
    if (!a) {
        fail(x, path, "expected %s, got nothing (the member is absent)%.0s", m, NULL);
        return false;
    }
    if (cJSON_IsObject(m)) {
        if (!cJSON_IsObject(a)) {
            fail(x, path, "expected an object like %s, got %s", m, a);
            return false;
        }
        const cJSON *c;
        cJSON_ArrayForEach(c, m)
        {
            size_t old = push_key(path, cap, c->string);
            bool ok =
                match_at(x, c, cJSON_GetObjectItemCaseSensitive(a, c->string), path, cap, caps);
            path[old] = '\0';
            if (!ok)
                return false;
        }
        return true;
    }
    if (cJSON_IsArray(m)) {
        int n = cJSON_GetArraySize(m);
        if (!cJSON_IsArray(a)) {
            fail(x, path, "expected an array like %s, got %s", m, a);
            return false;
        }
        if (cJSON_GetArraySize(a) != n) {
            char text[700];
            char *as = th_scn_json_short(a, SHOW_MAX);
            snprintf(text, sizeof text, "expected an array of %d element%s, got %d: %s", n,
                     n == 1 ? "" : "s", cJSON_GetArraySize(a), as ? as : "");
            free(as);
            fail_text(x, path, text);
            return false;
        }
        for (int i = 0; i < n; i++) {
            size_t old = push_index(path, cap, i);
            bool ok =
                match_at(x, cJSON_GetArrayItem(m, i), cJSON_GetArrayItem(a, i), path, cap, caps);
            path[old] = '\0';
            if (!ok)
                return false;
        }
        return true;
    }
    if (!scalar_equal(m, a)) {
        fail(x, path, "expected %s, got %s", m, a);
        return false;
    }
    return true;
}

bool th_match(const cJSON *matcher, const cJSON *actual, const char *root, cJSON *captures,
              struct th_mismatch *why)
{
    char path[512];
    snprintf(path, sizeof path, "%s", root && root[0] ? root : "value");
    struct mctx x = {why};
    if (why)
        memset(why, 0, sizeof *why);
    cJSON *tmp = captures ? cJSON_CreateObject() : NULL;
    bool ok = match_at(&x, matcher, actual, path, sizeof path, tmp);
    if (ok)
        merge_caps(captures, tmp);
    cJSON_Delete(tmp);
    return ok;
}
