/*
 * query.c - the IoT Hub twin query language (iothub-protocol.md section 11):
 * a lexer, a recursive-descent parser that builds a small expression tree,
 * and an evaluator that filters, projects, groups and aggregates twin
 * documents (shape of section 7.1). Pure: no I/O, no logging. The decisions
 * the hub leaves open are listed in query.h.
 */
#include "query.h"
#include "util.h"

#include <locale.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARSE_NESTING 64 /* parentheses, NOT/sign chains and arrays inside each other */
#define MAX_TREE_DEPTH 1000  /* bounds evaluation recursion for long operator chains */
#define MAX_CALL_ARGS 32
#define NEAR_BYTES 24 /* how much of the text an error message quotes */

/* ------------------------------------------------------------------------ */
/* Tokens                                                                   */
/* ------------------------------------------------------------------------ */

enum tok_kind {
    T_EOF,
    T_IDENT, /* bare word: keyword, function or attribute name */
    T_NAME,  /* [[escaped attribute name]] */
    T_NUMBER,
    T_STRING,
    T_STAR,
    T_COMMA,
    T_DOT,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_PLUS,
    T_MINUS,
    T_SLASH,
    T_PERCENT,
    T_EQ,
    T_NE,
    T_LT,
    T_GT,
    T_LE,
    T_GE,
};

struct token {
    enum tok_kind kind;
    size_t pos; /* byte offset of the token in the text */
    size_t len; /* bytes of source text */
    double num; /* T_NUMBER */
    char *str;  /* T_STRING, T_NAME: decoded, NUL-terminated, owned by the token */
};

/* ------------------------------------------------------------------------ */
/* Expression tree and the parsed query                                     */
/* ------------------------------------------------------------------------ */

enum node_kind {
    N_CONST, /* value */
    N_UNDEF, /* the constant undefined */
    N_PATH,  /* segs[first..nsegs) */
    N_NOT,   /* a */
    N_SIGN,  /* op (OP_ADD or OP_SUB) applied to a */
    N_ARITH, /* a op b */
    N_CMP,   /* a op b */
    N_AND,
    N_OR,
    N_IN,  /* a IN value (array) */
    N_NIN, /* a NIN value (array) */
    N_CALL,
};

enum op { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE };

enum fn {
    F_IS_DEFINED,
    F_IS_NULL,
    F_IS_STRING,
    F_IS_NUMBER,
    F_IS_BOOL,
    F_IS_OBJECT,
    F_IS_ARRAY,
    F_IS_PRIMITIVE,
    F_STARTSWITH,
    F_ENDSWITH,
    F_CONTAINS,
    F_LOWER,
    F_UPPER,
    F_LENGTH,
    F_CONCAT,
    F_SUBSTRING,
    F_INDEX_OF,
    F_ABS,
    F_FLOOR,
    F_CEILING,
};

struct fn_def {
    const char *name;
    enum fn fn;
    unsigned min_args, max_args;
};

static const struct fn_def fn_defs[] = {
    {"IS_DEFINED", F_IS_DEFINED, 1, 1},
    {"IS_NULL", F_IS_NULL, 1, 1},
    {"IS_STRING", F_IS_STRING, 1, 1},
    {"IS_NUMBER", F_IS_NUMBER, 1, 1},
    {"IS_BOOL", F_IS_BOOL, 1, 1},
    {"IS_OBJECT", F_IS_OBJECT, 1, 1},
    {"IS_ARRAY", F_IS_ARRAY, 1, 1},
    {"IS_PRIMITIVE", F_IS_PRIMITIVE, 1, 1},
    {"STARTSWITH", F_STARTSWITH, 2, 2},
    {"STARTS_WITH", F_STARTSWITH, 2, 2},
    {"ENDSWITH", F_ENDSWITH, 2, 2},
    {"ENDS_WITH", F_ENDSWITH, 2, 2},
    {"CONTAINS", F_CONTAINS, 2, 2},
    {"LOWER", F_LOWER, 1, 1},
    {"UPPER", F_UPPER, 1, 1},
    {"LENGTH", F_LENGTH, 1, 1},
    {"CONCAT", F_CONCAT, 2, MAX_CALL_ARGS},
    {"SUBSTRING", F_SUBSTRING, 3, 3},
    {"INDEX_OF", F_INDEX_OF, 2, 2},
    {"ABS", F_ABS, 1, 1},
    {"FLOOR", F_FLOOR, 1, 1},
    {"CEILING", F_CEILING, 1, 1},
};

enum agg { AGG_NONE, AGG_COUNT, AGG_SUM, AGG_AVG, AGG_MIN, AGG_MAX };

static const struct {
    const char *name;
    enum agg agg;
} agg_defs[] = {
    {"COUNT", AGG_COUNT}, {"SUM", AGG_SUM}, {"AVG", AGG_AVG}, {"MIN", AGG_MIN}, {"MAX", AGG_MAX},
};

static const char *const reserved_words[] = {
    "SELECT", "FROM", "WHERE", "GROUP", "BY",   "AS",    "AND",  "OR",
    "NOT",    "IN",   "NIN",   "TOP",   "TRUE", "FALSE", "NULL", "UNDEFINED",
};

struct path_seg {
    char *name;   /* owned */
    bool escaped; /* written as [[name]]: never taken for a devices/modules prefix */
};

struct node {
    enum node_kind kind;
    size_t pos; /* where the expression starts, for messages */
    int depth;  /* height of the subtree, bounded by MAX_TREE_DEPTH */
    enum op op;
    cJSON *value; /* N_CONST value or N_IN/N_NIN list; owned */
    struct path_seg *segs;
    size_t nsegs;
    size_t first; /* first segment after the devices./devices.modules. prefix */
    struct node *a, *b;
    const struct fn_def *fn;
    struct node **args;
    size_t nargs;
};

struct sel_item {
    struct node *expr; /* NULL for COUNT() */
    enum agg agg;
    char *key; /* alias or "$n"; NULL: the stored name of the path's last attribute */
    size_t pos;
    int group_index; /* grouped queries: which GROUP BY path a plain item shows */
};

struct th_query {
    enum th_query_source source;
    bool star;
    size_t top; /* SIZE_MAX without TOP */
    struct sel_item *items;
    size_t nitems;
    bool grouped; /* aggregates or GROUP BY: results come from groups */
    struct node *where;
    struct node **group;
    size_t ngroup;
    size_t group_pos;
};

struct parser {
    const char *text;
    size_t len;
    struct token *toks;
    size_t ntoks, cap;
    size_t i;         /* current token */
    int nesting;      /* current parse recursion, bounded by MAX_PARSE_NESTING */
    unsigned unnamed; /* "$n" keys handed out so far */
    struct th_error *err;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static char ascii_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool ieq(const char *a, const char *b)
{
    return th_slice_ieq(a, strlen(a), b, strlen(b));
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_ident_start(char c)
{
    unsigned char u = (unsigned char)c;
    return (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || u == '_' || u == '$' || u >= 0x80;
}

static bool is_ident_char(char c)
{
    return is_ident_start(c) || is_digit(c);
}

static bool is_utf8_cont(char c)
{
    return ((unsigned char)c & 0xC0) == 0x80;
}

/* Number of code points in a NUL-terminated UTF-8 string. */
static size_t cp_count(const char *s, const char *end)
{
    size_t n = 0;
    for (; s < end && *s; s++) {
        if (!is_utf8_cont(*s))
            n++;
    }
    return n;
}

/* The position `n` code points after `s`, or the terminating NUL. */
static const char *cp_skip(const char *s, size_t n)
{
    while (n > 0 && *s) {
        s++;
        while (is_utf8_cont(*s))
            s++;
        n--;
    }
    return s;
}

/* floor without libm: values beyond 2^52 are already integral (or not finite). */
static double num_floor(double x)
{
    if (!(x > -4503599627370496.0 && x < 4503599627370496.0))
        return x;
    double t = (double)(long long)x;
    return t > x ? t - 1.0 : t;
}

static double num_ceil(double x)
{
    return -num_floor(-x);
}

static double num_trunc(double x)
{
    return x < 0 ? num_ceil(x) : num_floor(x);
}

static bool num_finite(double x)
{
    return x == x && x <= 1.7976931348623157e308 && x >= -1.7976931348623157e308;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Record "query: <what> at column N near '<text>'" for a problem at byte `pos`
 * and return TH_ERR_INVAL. The quote stops at a line break and never splits a
 * UTF-8 sequence.
 */
__attribute__((format(printf, 3, 4))) static th_result fail_at(const struct parser *p, size_t pos,
                                                               const char *fmt, ...)
{
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (pos >= p->len)
        return th_error_set_at(p->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, p->len + 1,
                               "query: %s at column %zu (end of query)", what, p->len + 1);
    size_t n = 0;
    while (pos + n < p->len && n < NEAR_BYTES && p->text[pos + n] != '\n' &&
           p->text[pos + n] != '\r' && p->text[pos + n] != '\0')
        n++;
    if (pos + n < p->len) {
        while (n > 0 && is_utf8_cont(p->text[pos + n]))
            n--;
    }
    return th_error_set_at(p->err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, pos + 1,
                           "query: %s at column %zu near '%.*s'", what, pos + 1, (int)n,
                           p->text + pos);
}

static th_result oom(struct th_error *err)
{
    return th_error_set(err, TH_ERR_NOMEM, 0, "query: out of memory");
}

/* ------------------------------------------------------------------------ */
/* Lexer                                                                    */
/* ------------------------------------------------------------------------ */

static th_result push_token(struct parser *p, const struct token *t)
{
    if (p->ntoks == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        struct token *grown = realloc(p->toks, cap * sizeof *grown);
        if (!grown)
            return oom(p->err);
        p->toks = grown;
        p->cap = cap;
    }
    p->toks[p->ntoks++] = *t;
    return TH_OK;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Four hex digits at text[i..i+4) into *out; false when they are not there. */
static bool read_hex4(const struct parser *p, size_t i, uint32_t *out)
{
    if (i + 4 > p->len)
        return false;
    uint32_t v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = th_hex_value(p->text[i + k]);
        if (h < 0)
            return false;
        v = v * 16 + (uint32_t)h;
    }
    *out = v;
    return true;
}

/*
 * Decode the \uXXXX escape at text[i] (the backslash), joining a surrogate
 * pair. *used is the number of source bytes consumed.
 */
static th_result lex_unicode(const struct parser *p, size_t i, uint32_t *cp, size_t *used)
{
    uint32_t hi, lo;
    if (!read_hex4(p, i + 2, &hi))
        return fail_at(p, i, "invalid \\u escape in string, expected four hex digits");
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return fail_at(p, i, "invalid \\u escape in string, lone low surrogate");
    if (hi >= 0xD800 && hi <= 0xDBFF) {
        if (i + 7 >= p->len || p->text[i + 6] != '\\' || p->text[i + 7] != 'u' ||
            !read_hex4(p, i + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return fail_at(p, i, "invalid \\u escape in string, high surrogate without low");
        *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        *used = 12;
        return TH_OK;
    }
    if (hi == 0)
        return fail_at(p, i, "\\u0000 is not allowed in a string");
    *cp = hi;
    *used = 6;
    return TH_OK;
}

/* A quoted string starting at text[pos]; t->str gets the decoded bytes. */
static th_result lex_string(struct parser *p, size_t pos, struct token *t)
{
    char quote = p->text[pos];
    /* Decoding never grows the text, so the rest of it bounds the result. */
    char *buf = malloc(p->len - pos);
    if (!buf)
        return oom(p->err);
    size_t o = 0, i = pos + 1;
    th_result r = TH_OK;
    for (;;) {
        if (i >= p->len) {
            r = fail_at(p, pos, "unterminated string");
            break;
        }
        char c = p->text[i];
        if (c == quote) {
            i++;
            break;
        }
        if (c == '\0') {
            r = fail_at(p, i, "NUL character in string");
            break;
        }
        if (c != '\\') {
            buf[o++] = c;
            i++;
            continue;
        }
        if (i + 1 >= p->len) {
            r = fail_at(p, pos, "unterminated string");
            break;
        }
        char e = p->text[i + 1];
        char plain = 0;
        switch (e) {
        case '\'':
        case '"':
        case '\\':
        case '/':
            plain = e;
            break;
        case 'b':
            plain = '\b';
            break;
        case 'f':
            plain = '\f';
            break;
        case 'n':
            plain = '\n';
            break;
        case 'r':
            plain = '\r';
            break;
        case 't':
            plain = '\t';
            break;
        case 'u': {
            uint32_t cp = 0;
            size_t used = 0;
            r = lex_unicode(p, i, &cp, &used);
            if (r != TH_OK)
                break;
            o += utf8_encode(cp, buf + o);
            i += used;
            continue;
        }
        default:
            r = fail_at(p, i, "invalid escape in string");
            break;
        }
        if (r != TH_OK)
            break;
        buf[o++] = plain;
        i += 2;
    }
    if (r != TH_OK) {
        free(buf);
        return r;
    }
    buf[o] = '\0';
    t->kind = T_STRING;
    t->str = buf;
    t->len = i - pos;
    return TH_OK;
}

/*
 * Convert a validated decimal literal with strtod. strtod follows LC_NUMERIC,
 * so the '.' is swapped for the locale's decimal point first (as cJSON does).
 */
static th_result decimal_value(struct parser *p, size_t pos, size_t n, double *out)
{
    char *buf = malloc(n + 1);
    if (!buf)
        return oom(p->err);
    memcpy(buf, p->text + pos, n);
    buf[n] = '\0';
    const struct lconv *lc = localeconv();
    char point = (lc && lc->decimal_point && lc->decimal_point[0]) ? lc->decimal_point[0] : '.';
    for (size_t k = 0; k < n; k++) {
        if (buf[k] == '.')
            buf[k] = point;
    }
    char *end = NULL;
    double v = strtod(buf, &end);
    bool whole = end == buf + n;
    free(buf);
    if (!whole)
        return fail_at(p, pos, "invalid number");
    *out = v;
    return TH_OK;
}

/* A number (decimal with optional fraction and exponent, or 0x hex) at text[pos]. */
static th_result lex_number(struct parser *p, size_t pos, struct token *t)
{
    const char *s = p->text;
    size_t i = pos;
    double v = 0;
    if (s[i] == '0' && i + 1 < p->len && (s[i + 1] == 'x' || s[i + 1] == 'X')) {
        i += 2;
        size_t start = i;
        while (i < p->len && th_hex_value(s[i]) >= 0)
            v = v * 16 + th_hex_value(s[i++]);
        if (i == start)
            return fail_at(p, pos, "invalid hex number");
    } else {
        while (i < p->len && is_digit(s[i]))
            i++;
        if (i + 1 < p->len && s[i] == '.' && is_digit(s[i + 1])) {
            i++;
            while (i < p->len && is_digit(s[i]))
                i++;
        }
        if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1;
            if (j < p->len && (s[j] == '+' || s[j] == '-'))
                j++;
            if (j >= p->len || !is_digit(s[j]))
                return fail_at(p, pos, "invalid number");
            while (j < p->len && is_digit(s[j]))
                j++;
            i = j;
        }
        th_result r = decimal_value(p, pos, i - pos, &v);
        if (r != TH_OK)
            return r;
    }
    if (i < p->len && is_ident_char(s[i]))
        return fail_at(p, pos, "invalid number");
    if (!num_finite(v))
        return fail_at(p, pos, "number out of range");
    t->kind = T_NUMBER;
    t->num = v;
    t->len = i - pos;
    return TH_OK;
}

/*
 * "[[name]]" is an escaped attribute name when "]]" comes before any '[', ']',
 * ',' or quote; otherwise the brackets are array brackets. Returns the offset
 * of the closing "]]" or 0 when this is not an escaped name.
 */
static size_t escaped_name_end(const struct parser *p, size_t pos)
{
    size_t i = pos + 2;
    for (; i < p->len; i++) {
        char c = p->text[i];
        if (c == ']')
            break;
        if (c == '[' || c == ',' || c == '\'' || c == '"' || c == '\0')
            return 0;
    }
    if (i == pos + 2 || i + 1 >= p->len || p->text[i + 1] != ']')
        return 0;
    return i;
}

/* Split the whole text into p->toks, ending with T_EOF. */
static th_result lex(struct parser *p)
{
    const char *s = p->text;
    size_t i = 0;
    for (;;) {
        while (i < p->len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' ||
                              s[i] == '\f' || s[i] == '\v'))
            i++;
        struct token t = {.kind = T_EOF, .pos = i, .len = 1};
        th_result r = TH_OK;
        if (i >= p->len) {
            t.len = 0;
            return push_token(p, &t);
        }
        char c = s[i];
        size_t close;
        if (is_ident_start(c)) {
            size_t j = i;
            while (j < p->len && is_ident_char(s[j]))
                j++;
            t.kind = T_IDENT;
            t.len = j - i;
        } else if (is_digit(c)) {
            r = lex_number(p, i, &t);
        } else if (c == '\'' || c == '"') {
            r = lex_string(p, i, &t);
        } else if (c == '[' && i + 1 < p->len && s[i + 1] == '[' &&
                   (close = escaped_name_end(p, i)) != 0) {
            size_t n = close - (i + 2);
            t.str = malloc(n + 1);
            if (!t.str)
                return oom(p->err);
            memcpy(t.str, s + i + 2, n);
            t.str[n] = '\0';
            t.kind = T_NAME;
            t.len = close + 2 - i;
        } else {
            char next = i + 1 < p->len ? s[i + 1] : '\0';
            switch (c) {
            case '*':
                t.kind = T_STAR;
                break;
            case ',':
                t.kind = T_COMMA;
                break;
            case '.':
                t.kind = T_DOT;
                break;
            case '(':
                t.kind = T_LPAREN;
                break;
            case ')':
                t.kind = T_RPAREN;
                break;
            case '[':
                t.kind = T_LBRACK;
                break;
            case ']':
                t.kind = T_RBRACK;
                break;
            case '+':
                t.kind = T_PLUS;
                break;
            case '-':
                t.kind = T_MINUS;
                break;
            case '/':
                t.kind = T_SLASH;
                break;
            case '%':
                t.kind = T_PERCENT;
                break;
            case '=':
                t.kind = T_EQ;
                break;
            case '!':
                if (next != '=')
                    return fail_at(p, i, "unexpected character, did you mean '!='");
                t.kind = T_NE;
                t.len = 2;
                break;
            case '<':
                t.kind = next == '=' ? T_LE : next == '>' ? T_NE : T_LT;
                t.len = (next == '=' || next == '>') ? 2 : 1;
                break;
            case '>':
                t.kind = next == '=' ? T_GE : T_GT;
                t.len = next == '=' ? 2 : 1;
                break;
            default:
                return fail_at(p, i, "unexpected character");
            }
        }
        if (r != TH_OK)
            return r;
        r = push_token(p, &t);
        if (r != TH_OK) {
            free(t.str);
            return r;
        }
        i = t.pos + t.len;
    }
}

/* ------------------------------------------------------------------------ */
/* Tree construction                                                        */
/* ------------------------------------------------------------------------ */

static void node_free(struct node *n)
{
    if (!n)
        return;
    cJSON_Delete(n->value);
    for (size_t k = 0; k < n->nsegs; k++)
        free(n->segs[k].name);
    free(n->segs);
    node_free(n->a);
    node_free(n->b);
    for (size_t k = 0; k < n->nargs; k++)
        node_free(n->args[k]);
    free(n->args);
    free(n);
}

static struct node *node_new(enum node_kind kind, size_t pos)
{
    struct node *n = calloc(1, sizeof *n);
    if (n) {
        n->kind = kind;
        n->pos = pos;
        n->depth = 1;
    }
    return n;
}

/*
 * Make a node over children `a` and `b` (either may be NULL). Takes ownership
 * of both on every path; *out is the new node.
 */
static th_result node_join(struct parser *p, enum node_kind kind, enum op op, size_t pos,
                           struct node *a, struct node *b, struct node **out)
{
    struct node *n = node_new(kind, pos);
    if (!n) {
        node_free(a);
        node_free(b);
        return oom(p->err);
    }
    n->op = op;
    n->a = a;
    n->b = b;
    int da = a ? a->depth : 0, db = b ? b->depth : 0;
    n->depth = 1 + (da > db ? da : db);
    if (n->depth > MAX_TREE_DEPTH) {
        node_free(n);
        return fail_at(p, pos, "expression nested too deeply");
    }
    *out = n;
    return TH_OK;
}

/* ------------------------------------------------------------------------ */
/* Parser                                                                   */
/* ------------------------------------------------------------------------ */

static const struct token *cur(const struct parser *p)
{
    return &p->toks[p->i];
}

static const struct token *peek(const struct parser *p, size_t ahead)
{
    size_t k = p->i + ahead;
    return &p->toks[k < p->ntoks ? k : p->ntoks - 1];
}

static void advance(struct parser *p)
{
    if (p->toks[p->i].kind != T_EOF)
        p->i++;
}

static bool tok_is_word(const struct parser *p, const struct token *t, const char *word)
{
    return t->kind == T_IDENT && th_slice_ieq(word, strlen(word), p->text + t->pos, t->len);
}

static bool tok_is_reserved(const struct parser *p, const struct token *t)
{
    for (size_t k = 0; k < sizeof reserved_words / sizeof reserved_words[0]; k++) {
        if (tok_is_word(p, t, reserved_words[k]))
            return true;
    }
    return false;
}

/* Consume keyword `word` or fail with "expected <word>". */
static th_result expect_word(struct parser *p, const char *word)
{
    if (!tok_is_word(p, cur(p), word))
        return fail_at(p, cur(p)->pos, "expected %s", word);
    advance(p);
    return TH_OK;
}

static th_result enter(struct parser *p)
{
    if (++p->nesting > MAX_PARSE_NESTING)
        return fail_at(p, cur(p)->pos, "expression nested too deeply");
    return TH_OK;
}

static void leave(struct parser *p)
{
    p->nesting--;
}

/* The token's text as a new string (an escaped name's inner text); NULL on OOM. */
static char *tok_name(const struct parser *p, const struct token *t)
{
    if (t->kind == T_NAME)
        return strdup(t->str);
    char *s = malloc(t->len + 1);
    if (s) {
        memcpy(s, p->text + t->pos, t->len);
        s[t->len] = '\0';
    }
    return s;
}

/* attribute path: name { '.' name }; the first name may not be a reserved word. */
static th_result parse_path(struct parser *p, struct node **out)
{
    const struct token *t = cur(p);
    if (!(t->kind == T_NAME || (t->kind == T_IDENT && !tok_is_reserved(p, t))))
        return fail_at(p, t->pos, "expected an attribute name");
    struct node *n = node_new(N_PATH, t->pos);
    if (!n)
        return oom(p->err);
    for (;;) {
        t = cur(p);
        struct path_seg *grown = realloc(n->segs, (n->nsegs + 1) * sizeof *grown);
        if (!grown) {
            node_free(n);
            return oom(p->err);
        }
        n->segs = grown;
        n->segs[n->nsegs].escaped = t->kind == T_NAME;
        n->segs[n->nsegs].name = tok_name(p, t);
        if (!n->segs[n->nsegs].name) {
            node_free(n);
            return oom(p->err);
        }
        n->nsegs++;
        advance(p);
        if (cur(p)->kind != T_DOT)
            break;
        advance(p);
        if (cur(p)->kind != T_IDENT && cur(p)->kind != T_NAME) {
            th_result r = fail_at(p, cur(p)->pos, "expected an attribute name after '.'");
            node_free(n);
            return r;
        }
    }
    *out = n;
    return TH_OK;
}

static th_result parse_array(struct parser *p, cJSON **out);

/* One element of an array constant: [sign] number, string, true, false, null or array. */
static th_result parse_array_element(struct parser *p, cJSON **out)
{
    const struct token *t = cur(p);
    double sign = 1;
    if (t->kind == T_MINUS || t->kind == T_PLUS) {
        sign = t->kind == T_MINUS ? -1 : 1;
        advance(p);
        t = cur(p);
        if (t->kind != T_NUMBER)
            return fail_at(p, t->pos, "expected a number after the sign");
    }
    cJSON *v = NULL;
    if (t->kind == T_NUMBER)
        v = cJSON_CreateNumber(sign * t->num);
    else if (t->kind == T_STRING)
        v = cJSON_CreateString(t->str);
    else if (tok_is_word(p, t, "true"))
        v = cJSON_CreateTrue();
    else if (tok_is_word(p, t, "false"))
        v = cJSON_CreateFalse();
    else if (tok_is_word(p, t, "null"))
        v = cJSON_CreateNull();
    else if (t->kind == T_LBRACK)
        return parse_array(p, out);
    else if (tok_is_word(p, t, "undefined"))
        return fail_at(p, t->pos, "undefined is not allowed in an array");
    else
        return fail_at(p, t->pos, "expected a constant in the array");
    if (!v)
        return oom(p->err);
    advance(p);
    *out = v;
    return TH_OK;
}

/* '[' [element {',' element}] ']' into a new cJSON array owned by the caller. */
static th_result parse_array(struct parser *p, cJSON **out)
{
    if (cur(p)->kind != T_LBRACK)
        return fail_at(p, cur(p)->pos, "expected '['");
    th_result r = enter(p);
    if (r != TH_OK)
        return r;
    advance(p);
    cJSON *arr = cJSON_CreateArray();
    if (!arr) {
        leave(p);
        return oom(p->err);
    }
    if (cur(p)->kind == T_RBRACK) {
        advance(p);
    } else {
        for (;;) {
            cJSON *v = NULL;
            r = parse_array_element(p, &v);
            if (r != TH_OK)
                break;
            if (!cJSON_AddItemToArray(arr, v)) {
                cJSON_Delete(v);
                r = oom(p->err);
                break;
            }
            if (cur(p)->kind == T_COMMA) {
                advance(p);
                continue;
            }
            if (cur(p)->kind == T_RBRACK) {
                advance(p);
                break;
            }
            r = fail_at(p, cur(p)->pos, "expected ',' or ']' in the array");
            break;
        }
    }
    leave(p);
    if (r != TH_OK) {
        cJSON_Delete(arr);
        return r;
    }
    *out = arr;
    return TH_OK;
}

static th_result parse_or(struct parser *p, struct node **out);

static bool is_aggregate_name(const struct parser *p, const struct token *t, enum agg *agg)
{
    for (size_t k = 0; k < sizeof agg_defs / sizeof agg_defs[0]; k++) {
        if (tok_is_word(p, t, agg_defs[k].name)) {
            if (agg)
                *agg = agg_defs[k].agg;
            return true;
        }
    }
    return false;
}

/* name '(' [expr {',' expr}] ')' with the arity of fn_defs. */
static th_result parse_call(struct parser *p, struct node **out)
{
    const struct token *name = cur(p);
    const struct fn_def *def = NULL;
    for (size_t k = 0; k < sizeof fn_defs / sizeof fn_defs[0]; k++) {
        if (tok_is_word(p, name, fn_defs[k].name)) {
            def = &fn_defs[k];
            break;
        }
    }
    if (!def) {
        if (is_aggregate_name(p, name, NULL))
            return fail_at(p, name->pos, "aggregate %.*s() is only allowed as a SELECT item",
                           (int)name->len, p->text + name->pos);
        return fail_at(p, name->pos, "unknown function '%.*s'", (int)name->len,
                       p->text + name->pos);
    }
    struct node *n = node_new(N_CALL, name->pos);
    if (!n)
        return oom(p->err);
    n->fn = def;
    advance(p); /* name */
    advance(p); /* ( */
    th_result r = TH_OK;
    if (cur(p)->kind == T_RPAREN) {
        advance(p);
    } else {
        for (;;) {
            if (n->nargs == MAX_CALL_ARGS) {
                r = fail_at(p, cur(p)->pos, "too many arguments for %s", def->name);
                break;
            }
            struct node **grown = realloc(n->args, (n->nargs + 1) * sizeof *grown);
            if (!grown) {
                r = oom(p->err);
                break;
            }
            n->args = grown;
            struct node *arg = NULL;
            r = parse_or(p, &arg);
            if (r != TH_OK)
                break;
            n->args[n->nargs++] = arg;
            if (arg->depth + 1 > n->depth)
                n->depth = arg->depth + 1;
            if (cur(p)->kind == T_COMMA) {
                advance(p);
                continue;
            }
            if (cur(p)->kind == T_RPAREN) {
                advance(p);
                break;
            }
            r = fail_at(p, cur(p)->pos, "expected ',' or ')' in the call to %s", def->name);
            break;
        }
    }
    if (r == TH_OK && (n->nargs < def->min_args || n->nargs > def->max_args)) {
        if (def->min_args == def->max_args)
            r = fail_at(p, n->pos, "%s takes %u argument%s, not %zu", def->name, def->min_args,
                        def->min_args == 1 ? "" : "s", n->nargs);
        else
            r = fail_at(p, n->pos, "%s takes at least %u arguments, not %zu", def->name,
                        def->min_args, n->nargs);
    }
    if (r == TH_OK && n->depth > MAX_TREE_DEPTH)
        r = fail_at(p, n->pos, "expression nested too deeply");
    if (r != TH_OK) {
        node_free(n);
        return r;
    }
    *out = n;
    return TH_OK;
}

static th_result make_const(struct parser *p, size_t pos, cJSON *v, struct node **out)
{
    if (!v)
        return oom(p->err);
    struct node *n = node_new(N_CONST, pos);
    if (!n) {
        cJSON_Delete(v);
        return oom(p->err);
    }
    n->value = v;
    *out = n;
    return TH_OK;
}

/* constant | array | '(' expr ')' | function call | attribute path */
static th_result parse_primary(struct parser *p, struct node **out)
{
    const struct token *t = cur(p);
    size_t pos = t->pos;
    th_result r;
    switch (t->kind) {
    case T_NUMBER:
        advance(p);
        return make_const(p, pos, cJSON_CreateNumber(t->num), out);
    case T_STRING:
        advance(p);
        return make_const(p, pos, cJSON_CreateString(t->str), out);
    case T_LBRACK: {
        cJSON *arr = NULL;
        r = parse_array(p, &arr);
        if (r != TH_OK)
            return r;
        return make_const(p, pos, arr, out);
    }
    case T_LPAREN:
        r = enter(p);
        if (r != TH_OK)
            return r;
        advance(p);
        r = parse_or(p, out);
        leave(p);
        if (r != TH_OK)
            return r;
        if (cur(p)->kind != T_RPAREN) {
            r = fail_at(p, cur(p)->pos, "expected ')'");
            node_free(*out);
            *out = NULL;
            return r;
        }
        advance(p);
        return TH_OK;
    case T_NAME:
        return parse_path(p, out);
    case T_IDENT:
        if (tok_is_word(p, t, "true") || tok_is_word(p, t, "false")) {
            bool b = tok_is_word(p, t, "true");
            advance(p);
            return make_const(p, pos, cJSON_CreateBool(b), out);
        }
        if (tok_is_word(p, t, "null")) {
            advance(p);
            return make_const(p, pos, cJSON_CreateNull(), out);
        }
        if (tok_is_word(p, t, "undefined")) {
            advance(p);
            *out = node_new(N_UNDEF, pos);
            return *out ? TH_OK : oom(p->err);
        }
        if (peek(p, 1)->kind == T_LPAREN)
            return parse_call(p, out);
        if (tok_is_reserved(p, t))
            return fail_at(p, pos, "expected an expression");
        return parse_path(p, out);
    default:
        return fail_at(p, pos, "expected an expression");
    }
}

/* ['-' | '+'] unary | primary */
static th_result parse_unary(struct parser *p, struct node **out)
{
    const struct token *t = cur(p);
    if (t->kind != T_MINUS && t->kind != T_PLUS)
        return parse_primary(p, out);
    size_t pos = t->pos;
    enum op op = t->kind == T_MINUS ? OP_SUB : OP_ADD;
    th_result r = enter(p);
    if (r != TH_OK)
        return r;
    advance(p);
    struct node *a = NULL;
    r = parse_unary(p, &a);
    leave(p);
    if (r != TH_OK)
        return r;
    return node_join(p, N_SIGN, op, pos, a, NULL, out);
}

/*
 * One left-associative precedence level: operand {op operand}. `match` says
 * whether the current token is an operator of this level and which node it
 * makes; the operator token's position is the node's.
 */
static th_result parse_binary(struct parser *p,
                              th_result (*operand)(struct parser *, struct node **),
                              bool (*match)(const struct parser *, enum node_kind *, enum op *),
                              struct node **out)
{
    struct node *left = NULL;
    th_result r = operand(p, &left);
    enum node_kind kind;
    enum op op;
    while (r == TH_OK && match(p, &kind, &op)) {
        size_t pos = cur(p)->pos;
        advance(p);
        struct node *right = NULL;
        r = operand(p, &right);
        if (r != TH_OK) {
            node_free(left);
            return r;
        }
        r = node_join(p, kind, op, pos, left, right, &left);
    }
    if (r == TH_OK)
        *out = left;
    return r;
}

static bool match_mul(const struct parser *p, enum node_kind *kind, enum op *op)
{
    enum tok_kind k = cur(p)->kind;
    *kind = N_ARITH;
    *op = k == T_STAR ? OP_MUL : k == T_SLASH ? OP_DIV : OP_MOD;
    return k == T_STAR || k == T_SLASH || k == T_PERCENT;
}

static bool match_add(const struct parser *p, enum node_kind *kind, enum op *op)
{
    enum tok_kind k = cur(p)->kind;
    *kind = N_ARITH;
    *op = k == T_PLUS ? OP_ADD : OP_SUB;
    return k == T_PLUS || k == T_MINUS;
}

static th_result parse_mul(struct parser *p, struct node **out)
{
    return parse_binary(p, parse_unary, match_mul, out);
}

static th_result parse_add(struct parser *p, struct node **out)
{
    return parse_binary(p, parse_mul, match_add, out);
}

/* add [ cmp_op add | IN array | NIN array | NOT IN array ]; comparisons do not chain. */
static th_result parse_cmp(struct parser *p, struct node **out)
{
    struct node *left = NULL;
    th_result r = parse_add(p, &left);
    if (r != TH_OK)
        return r;
    const struct token *t = cur(p);
    size_t pos = t->pos;
    enum op op;
    switch (t->kind) {
    case T_EQ:
        op = OP_EQ;
        break;
    case T_NE:
        op = OP_NE;
        break;
    case T_LT:
        op = OP_LT;
        break;
    case T_GT:
        op = OP_GT;
        break;
    case T_LE:
        op = OP_LE;
        break;
    case T_GE:
        op = OP_GE;
        break;
    default: {
        enum node_kind kind;
        if (tok_is_word(p, t, "IN")) {
            kind = N_IN;
            advance(p);
        } else if (tok_is_word(p, t, "NIN")) {
            kind = N_NIN;
            advance(p);
        } else if (tok_is_word(p, t, "NOT") && tok_is_word(p, peek(p, 1), "IN")) {
            kind = N_NIN;
            advance(p);
            advance(p);
        } else {
            *out = left;
            return TH_OK;
        }
        if (cur(p)->kind != T_LBRACK) {
            /* "[[x]]" lexes as an escaped name; say how to write a nested array instead. */
            r = fail_at(p, cur(p)->pos, "expected '[' after %s%s", kind == N_IN ? "IN" : "NIN",
                        cur(p)->kind == T_NAME ? " (write '[ [' for an array in an array)" : "");
            node_free(left);
            return r;
        }
        cJSON *list = NULL;
        r = parse_array(p, &list);
        if (r != TH_OK) {
            node_free(left);
            return r;
        }
        struct node *n = NULL;
        r = node_join(p, kind, OP_EQ, pos, left, NULL, &n);
        if (r != TH_OK) {
            cJSON_Delete(list);
            return r;
        }
        n->value = list;
        *out = n;
        return TH_OK;
    }
    }
    advance(p);
    struct node *right = NULL;
    r = parse_add(p, &right);
    if (r != TH_OK) {
        node_free(left);
        return r;
    }
    return node_join(p, N_CMP, op, pos, left, right, out);
}

/* NOT not | cmp */
static th_result parse_not(struct parser *p, struct node **out)
{
    if (!tok_is_word(p, cur(p), "NOT"))
        return parse_cmp(p, out);
    size_t pos = cur(p)->pos;
    th_result r = enter(p);
    if (r != TH_OK)
        return r;
    advance(p);
    struct node *a = NULL;
    r = parse_not(p, &a);
    leave(p);
    if (r != TH_OK)
        return r;
    return node_join(p, N_NOT, OP_EQ, pos, a, NULL, out);
}

static bool match_and(const struct parser *p, enum node_kind *kind, enum op *op)
{
    *kind = N_AND;
    *op = OP_EQ;
    return tok_is_word(p, cur(p), "AND");
}

static bool match_or(const struct parser *p, enum node_kind *kind, enum op *op)
{
    *kind = N_OR;
    *op = OP_EQ;
    return tok_is_word(p, cur(p), "OR");
}

static th_result parse_and(struct parser *p, struct node **out)
{
    return parse_binary(p, parse_not, match_and, out);
}

/* The full expression grammar: or := and {OR and}. */
static th_result parse_or(struct parser *p, struct node **out)
{
    return parse_binary(p, parse_and, match_or, out);
}

/* AVG/SUM/MIN/MAX(path) or COUNT(); the name token is current. */
static th_result parse_aggregate(struct parser *p, struct sel_item *item)
{
    const struct token *name = cur(p);
    size_t name_pos = name->pos;
    int name_len = (int)name->len;
    advance(p); /* name */
    advance(p); /* ( */
    th_result r;
    if (item->agg != AGG_COUNT) {
        if (cur(p)->kind == T_RPAREN)
            return fail_at(p, name_pos, "%.*s needs an attribute path", name_len,
                           p->text + name_pos);
        r = parse_path(p, &item->expr);
        if (r != TH_OK)
            return r;
    }
    if (cur(p)->kind != T_RPAREN) {
        if (item->agg == AGG_COUNT)
            return fail_at(p, cur(p)->pos, "COUNT() takes no argument");
        return fail_at(p, cur(p)->pos, "expected ')' after the attribute path");
    }
    advance(p);
    return TH_OK;
}

/* expr [AS name] or aggregate [AS name]; gives unnamed non-paths "$n". */
static th_result parse_select_item(struct parser *p, struct sel_item *item)
{
    const struct token *t = cur(p);
    item->pos = t->pos;
    item->group_index = -1;
    th_result r;
    enum agg agg;
    if (is_aggregate_name(p, t, &agg) && peek(p, 1)->kind == T_LPAREN) {
        item->agg = agg;
        r = parse_aggregate(p, item);
    } else {
        r = parse_or(p, &item->expr);
    }
    if (r != TH_OK)
        return r;
    if (tok_is_word(p, cur(p), "AS")) {
        advance(p);
        t = cur(p);
        if (!(t->kind == T_NAME || (t->kind == T_IDENT && !tok_is_reserved(p, t))))
            return fail_at(p, t->pos, "expected a name after AS");
        item->key = tok_name(p, t);
        if (!item->key)
            return oom(p->err);
        advance(p);
        return TH_OK;
    }
    if (item->agg == AGG_NONE && item->expr->kind == N_PATH)
        return TH_OK;
    char key[16];
    snprintf(key, sizeof key, "$%u", ++p->unnamed);
    item->key = strdup(key);
    return item->key ? TH_OK : oom(p->err);
}

static th_result parse_select_list(struct parser *p, struct th_query *q)
{
    for (;;) {
        struct sel_item *grown = realloc(q->items, (q->nitems + 1) * sizeof *grown);
        if (!grown)
            return oom(p->err);
        q->items = grown;
        memset(&q->items[q->nitems], 0, sizeof q->items[0]);
        q->nitems++;
        th_result r = parse_select_item(p, &q->items[q->nitems - 1]);
        if (r != TH_OK)
            return r;
        if (cur(p)->kind != T_COMMA)
            return TH_OK;
        advance(p);
    }
}

static th_result parse_source(struct parser *p, struct th_query *q)
{
    const struct token *t = cur(p);
    if (!tok_is_word(p, t, "devices"))
        return fail_at(p, t->pos, "expected devices, devices.modules or devices.jobs after FROM");
    advance(p);
    q->source = TH_QUERY_DEVICES;
    if (cur(p)->kind != T_DOT)
        return TH_OK;
    advance(p);
    t = cur(p);
    if (tok_is_word(p, t, "modules")) {
        q->source = TH_QUERY_MODULES;
        advance(p);
        return TH_OK;
    }
    if (tok_is_word(p, t, "jobs")) {
        q->source = TH_QUERY_JOBS;
        advance(p);
        return TH_OK;
    }
    return fail_at(p, t->pos, "expected devices, devices.modules or devices.jobs after FROM");
}

/* SELECT [TOP n] list FROM source [WHERE expr] [GROUP BY path {, path}] EOF */
static th_result parse_query(struct parser *p, struct th_query *q)
{
    th_result r = expect_word(p, "SELECT");
    if (r != TH_OK)
        return r;
    if (tok_is_word(p, cur(p), "TOP")) {
        advance(p);
        const struct token *t = cur(p);
        if (t->kind != T_NUMBER || t->num != num_floor(t->num) || t->num > 1e15)
            return fail_at(p, t->pos, "expected a whole number after TOP");
        q->top = (size_t)t->num;
        advance(p);
    }
    if (cur(p)->kind == T_STAR) {
        q->star = true;
        advance(p);
    } else {
        r = parse_select_list(p, q);
        if (r != TH_OK)
            return r;
    }
    r = expect_word(p, "FROM");
    if (r != TH_OK)
        return r;
    r = parse_source(p, q);
    if (r != TH_OK)
        return r;
    if (tok_is_word(p, cur(p), "WHERE")) {
        advance(p);
        r = parse_or(p, &q->where);
        if (r != TH_OK)
            return r;
    }
    if (tok_is_word(p, cur(p), "GROUP")) {
        q->group_pos = cur(p)->pos;
        advance(p);
        r = expect_word(p, "BY");
        if (r != TH_OK)
            return r;
        for (;;) {
            struct node **grown = realloc(q->group, (q->ngroup + 1) * sizeof *grown);
            if (!grown)
                return oom(p->err);
            q->group = grown;
            q->group[q->ngroup] = NULL;
            r = parse_path(p, &q->group[q->ngroup]);
            if (r != TH_OK)
                return r;
            q->ngroup++;
            if (cur(p)->kind != T_COMMA)
                break;
            advance(p);
        }
    }
    if (cur(p)->kind != T_EOF)
        return fail_at(p, cur(p)->pos, "expected end of query");
    return TH_OK;
}

/* ------------------------------------------------------------------------ */
/* Checks after parsing                                                     */
/* ------------------------------------------------------------------------ */

/* Drop the devices. / devices.modules. qualifier from every path under n. */
static void strip_prefixes(struct node *n, enum th_query_source source)
{
    if (!n)
        return;
    if (n->kind == N_PATH) {
        if (n->nsegs > 1 && !n->segs[0].escaped && ieq(n->segs[0].name, "devices")) {
            n->first = 1;
            if (source == TH_QUERY_MODULES && n->nsegs > 2 && !n->segs[1].escaped &&
                ieq(n->segs[1].name, "modules"))
                n->first = 2;
        }
        return;
    }
    strip_prefixes(n->a, source);
    strip_prefixes(n->b, source);
    for (size_t k = 0; k < n->nargs; k++)
        strip_prefixes(n->args[k], source);
}

static bool same_path(const struct node *a, const struct node *b)
{
    if (a->kind != N_PATH || b->kind != N_PATH || a->nsegs - a->first != b->nsegs - b->first)
        return false;
    for (size_t k = 0; k < a->nsegs - a->first; k++) {
        if (!ieq(a->segs[a->first + k].name, b->segs[b->first + k].name))
            return false;
    }
    return true;
}

/* The result key an item is expected to produce, as written. */
static const char *nominal_key(const struct sel_item *item)
{
    if (item->key)
        return item->key;
    return item->expr->segs[item->expr->nsegs - 1].name;
}

/*
 * A devices.jobs path: job properties, unqualified or as devices.jobs.x.
 * IoT Hub's query language article ("Get started with jobs queries") lists
 * what jobs queries do not support: projections, aggregates and conditions
 * on the device twin; paths into the twin (devices.x, tags, properties) are
 * refused here.
 */
static th_result check_jobs_paths(struct parser *p, struct node *n)
{
    if (!n)
        return TH_OK;
    if (n->kind == N_PATH) {
        bool qualified = n->nsegs > 1 && !n->segs[0].escaped && ieq(n->segs[0].name, "devices");
        if (qualified && n->nsegs > 2 && !n->segs[1].escaped && ieq(n->segs[1].name, "jobs")) {
            n->first = 2;
            return TH_OK;
        }
        const char *head = n->segs[qualified ? 1 : 0].name;
        if (qualified || ieq(head, "tags") || ieq(head, "properties"))
            return fail_at(p, n->pos,
                           "a devices.jobs query can refer to job properties only, not to "
                           "the device twin ('%s%s')",
                           qualified ? "devices." : "", head);
        return TH_OK;
    }
    th_result r = check_jobs_paths(p, n->a);
    if (r == TH_OK)
        r = check_jobs_paths(p, n->b);
    for (size_t k = 0; r == TH_OK && k < n->nargs; k++)
        r = check_jobs_paths(p, n->args[k]);
    return r;
}

/* Semantic rules the grammar cannot express. */
static th_result check_query(struct parser *p, struct th_query *q)
{
    if (q->source == TH_QUERY_JOBS) {
        if (!q->star)
            return fail_at(p, q->items[0].pos,
                           "FROM devices.jobs takes SELECT * only, no projections or aggregates");
        if (q->ngroup > 0)
            return fail_at(p, q->group_pos, "GROUP BY is supported only FROM devices");
        return check_jobs_paths(p, q->where);
    }
    for (size_t k = 0; k < q->nitems; k++)
        strip_prefixes(q->items[k].expr, q->source);
    strip_prefixes(q->where, q->source);
    for (size_t k = 0; k < q->ngroup; k++)
        strip_prefixes(q->group[k], q->source);

    if (q->ngroup > 0 && q->source != TH_QUERY_DEVICES)
        return fail_at(p, q->group_pos, "GROUP BY is supported only FROM devices");
    if (q->ngroup > 0 && q->star)
        return fail_at(p, q->group_pos, "GROUP BY needs a select list, not *");

    for (size_t k = 0; k < q->nitems; k++) {
        if (q->items[k].agg != AGG_NONE)
            q->grouped = true;
    }
    if (q->ngroup > 0)
        q->grouped = true;
    for (size_t k = 0; q->grouped && k < q->nitems; k++) {
        struct sel_item *item = &q->items[k];
        if (item->agg != AGG_NONE)
            continue;
        for (size_t g = 0; g < q->ngroup; g++) {
            if (same_path(item->expr, q->group[g])) {
                item->group_index = (int)g;
                break;
            }
        }
        if (item->group_index < 0)
            return fail_at(p, item->pos,
                           q->ngroup ? "select item must be an aggregate or a GROUP BY attribute"
                                     : "select item must be an aggregate when aggregates are "
                                       "selected without GROUP BY");
    }
    for (size_t k = 0; k < q->nitems; k++) {
        for (size_t j = 0; j < k; j++) {
            if (strcmp(nominal_key(&q->items[j]), nominal_key(&q->items[k])) == 0)
                return fail_at(p, q->items[k].pos, "duplicate result name '%s'",
                               nominal_key(&q->items[k]));
        }
    }
    return TH_OK;
}

/* ------------------------------------------------------------------------ */
/* Public: parse and free                                                   */
/* ------------------------------------------------------------------------ */

void th_query_free(struct th_query *q)
{
    if (!q)
        return;
    for (size_t k = 0; k < q->nitems; k++) {
        node_free(q->items[k].expr);
        free(q->items[k].key);
    }
    free(q->items);
    node_free(q->where);
    for (size_t k = 0; k < q->ngroup; k++)
        node_free(q->group[k]);
    free(q->group);
    free(q);
}

th_result th_query_parse(const char *text, size_t len, struct th_query **out, struct th_error *err)
{
    if (!out)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "query: no output given");
    *out = NULL;
    if (!text && len)
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "query: no text given");
    size_t chars = 0;
    for (size_t k = 0; k < len; k++) {
        if (!is_utf8_cont(text[k]))
            chars++;
    }
    if (chars > TH_QUERY_MAX_CHARS)
        return th_error_set(err, TH_ERR_TOO_LARGE, TH_EC_ARGUMENT_INVALID,
                            "query: text is %zu characters long, the limit is %d", chars,
                            TH_QUERY_MAX_CHARS);

    struct parser p = {.text = text ? text : "", .len = len, .err = err};
    struct th_query *q = NULL;
    th_result r = lex(&p);
    if (r == TH_OK) {
        q = calloc(1, sizeof *q);
        if (!q)
            r = oom(err);
    }
    if (r == TH_OK) {
        q->top = SIZE_MAX;
        r = parse_query(&p, q);
    }
    if (r == TH_OK)
        r = check_query(&p, q);
    for (size_t k = 0; k < p.ntoks; k++)
        free(p.toks[k].str);
    free(p.toks);
    if (r != TH_OK) {
        th_query_free(q);
        return r;
    }
    *out = q;
    return TH_OK;
}

enum th_query_source th_query_source(const struct th_query *q)
{
    return q ? q->source : TH_QUERY_DEVICES;
}

const char *th_query_item_type(const struct th_query *q, bool is_twin)
{
    if (q && q->source == TH_QUERY_JOBS)
        return "deviceJob";
    return is_twin ? "twin" : "raw";
}

/* ------------------------------------------------------------------------ */
/* Values                                                                   */
/* ------------------------------------------------------------------------ */

enum vtype { V_UNDEF, V_NULL, V_BOOL, V_NUM, V_STR, V_OBJ, V_ARR };

/* A value during evaluation; borrows from the document or the query unless `owned`. */
struct val {
    enum vtype t;
    bool b;
    double n;
    const char *s;
    char *owned;    /* a string made by a function; freed by val_clear */
    const cJSON *j; /* the JSON node the value was read from, if any */
};

static void val_clear(struct val *v)
{
    free(v->owned);
    memset(v, 0, sizeof *v);
}

static void val_from_json(const cJSON *j, struct val *v)
{
    memset(v, 0, sizeof *v);
    if (!j)
        return;
    v->j = j;
    if (cJSON_IsNull(j)) {
        v->t = V_NULL;
    } else if (cJSON_IsBool(j)) {
        v->t = V_BOOL;
        v->b = cJSON_IsTrue(j);
    } else if (cJSON_IsNumber(j)) {
        v->t = V_NUM;
        v->n = j->valuedouble;
    } else if (cJSON_IsString(j) && j->valuestring) {
        v->t = V_STR;
        v->s = j->valuestring;
    } else if (cJSON_IsObject(j)) {
        v->t = V_OBJ;
    } else if (cJSON_IsArray(j)) {
        v->t = V_ARR;
    } else {
        v->j = NULL;
    }
}

static void val_bool(struct val *v, bool b)
{
    memset(v, 0, sizeof *v);
    v->t = V_BOOL;
    v->b = b;
}

static void val_num(struct val *v, double n)
{
    memset(v, 0, sizeof *v);
    if (num_finite(n)) {
        v->t = V_NUM;
        v->n = n;
    }
}

/* Take ownership of `s` (NULL means out of memory). */
static th_result val_take_str(struct val *v, char *s)
{
    memset(v, 0, sizeof *v);
    if (!s)
        return TH_ERR_NOMEM;
    v->t = V_STR;
    v->s = s;
    v->owned = s;
    return TH_OK;
}

static bool val_is_primitive(const struct val *v)
{
    return v->t == V_NULL || v->t == V_BOOL || v->t == V_NUM || v->t == V_STR;
}

/* A new cJSON copy of a defined value, or NULL on OOM. */
static cJSON *val_to_json(const struct val *v)
{
    if (v->j)
        return cJSON_Duplicate(v->j, true);
    switch (v->t) {
    case V_NULL:
        return cJSON_CreateNull();
    case V_BOOL:
        return cJSON_CreateBool(v->b);
    case V_NUM:
        return cJSON_CreateNumber(v->n);
    case V_STR:
        return cJSON_CreateString(v->s);
    default:
        return NULL;
    }
}

/*
 * Compare two primitives of the same type (numbers, strings ordinally, false <
 * true, null = null). False when they are not comparable: the result is then
 * undefined.
 */
static bool compare_prims(const struct val *a, const struct val *b, int *c)
{
    if (a->t != b->t)
        return false;
    switch (a->t) {
    case V_NULL:
        *c = 0;
        return true;
    case V_BOOL:
        *c = (int)a->b - (int)b->b;
        return true;
    case V_NUM:
        *c = a->n < b->n ? -1 : a->n > b->n ? 1 : 0;
        return true;
    case V_STR: {
        int s = strcmp(a->s, b->s);
        *c = s < 0 ? -1 : s > 0 ? 1 : 0;
        return true;
    }
    default:
        return false;
    }
}

/* ------------------------------------------------------------------------ */
/* Evaluation                                                               */
/* ------------------------------------------------------------------------ */

/* Member `name` of an object: exact case first, then ASCII case-insensitive. */
static const cJSON *member(const cJSON *obj, const char *name)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it)
        return it;
    cJSON_ArrayForEach(it, obj)
    {
        if (it->string && ieq(it->string, name))
            return it;
    }
    return NULL;
}

/* The node a path names in doc, or NULL (undefined). */
static const cJSON *lookup_path(const struct node *path, const cJSON *doc)
{
    const cJSON *at = doc;
    for (size_t k = path->first; k < path->nsegs && at; k++)
        at = member(at, path->segs[k].name);
    return at;
}

static th_result eval(const struct node *n, const cJSON *doc, struct val *out);

static th_result eval_arith(enum op op, const struct val *a, const struct val *b, struct val *out)
{
    memset(out, 0, sizeof *out);
    if (a->t != V_NUM || b->t != V_NUM)
        return TH_OK;
    double x = a->n, y = b->n;
    switch (op) {
    case OP_ADD:
        val_num(out, x + y);
        break;
    case OP_SUB:
        val_num(out, x - y);
        break;
    case OP_MUL:
        val_num(out, x * y);
        break;
    case OP_DIV:
        if (y != 0)
            val_num(out, x / y);
        break;
    case OP_MOD:
        if (y == 0)
            break;
        if (x == num_trunc(x) && y == num_trunc(y) && x > -9.2e18 && x < 9.2e18 && y > -9.2e18 &&
            y < 9.2e18)
            val_num(out, (double)((long long)x % (long long)y));
        else
            val_num(out, x - num_trunc(x / y) * y);
        break;
    default:
        break;
    }
    return TH_OK;
}

static void eval_cmp(enum op op, const struct val *a, const struct val *b, struct val *out)
{
    int c;
    memset(out, 0, sizeof *out);
    if (!compare_prims(a, b, &c))
        return;
    switch (op) {
    case OP_EQ:
        val_bool(out, c == 0);
        break;
    case OP_NE:
        val_bool(out, c != 0);
        break;
    case OP_LT:
        val_bool(out, c < 0);
        break;
    case OP_GT:
        val_bool(out, c > 0);
        break;
    case OP_LE:
        val_bool(out, c <= 0);
        break;
    case OP_GE:
        val_bool(out, c >= 0);
        break;
    default:
        break;
    }
}

/* a IN list / a NIN list: undefined unless a is a primitive. */
static void eval_in(bool negate, const struct val *a, const cJSON *list, struct val *out)
{
    memset(out, 0, sizeof *out);
    if (!val_is_primitive(a))
        return;
    bool found = false;
    const cJSON *el;
    cJSON_ArrayForEach(el, list)
    {
        struct val e;
        int c;
        val_from_json(el, &e);
        if (compare_prims(a, &e, &c) && c == 0) {
            found = true;
            break;
        }
    }
    val_bool(out, negate ? !found : found);
}

static char *str_map_case(const char *s, bool upper)
{
    char *r = strdup(s);
    if (r) {
        for (char *c = r; *c; c++)
            *c = upper ? ascii_upper(*c) : ascii_lower(*c);
    }
    return r;
}

static char *str_slice(const char *from, const char *to)
{
    size_t n = (size_t)(to - from);
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, from, n);
        r[n] = '\0';
    }
    return r;
}

/* A whole number >= 0 from a number value, clamping negatives to 0. */
static size_t count_arg(double x)
{
    x = num_trunc(x);
    if (x <= 0)
        return 0;
    return x >= 1e15 ? (size_t)1e15 : (size_t)x;
}

/* Apply a built-in function to evaluated arguments (undefined on type mismatch). */
static th_result call_fn(enum fn fn, const struct val *args, size_t nargs, struct val *out)
{
    const struct val *a = &args[0];
    const struct val *b = nargs > 1 ? &args[1] : NULL;
    memset(out, 0, sizeof *out);
    switch (fn) {
    case F_IS_DEFINED:
        val_bool(out, a->t != V_UNDEF);
        return TH_OK;
    case F_IS_NULL:
        val_bool(out, a->t == V_NULL);
        return TH_OK;
    case F_IS_STRING:
        val_bool(out, a->t == V_STR);
        return TH_OK;
    case F_IS_NUMBER:
        val_bool(out, a->t == V_NUM);
        return TH_OK;
    case F_IS_BOOL:
        val_bool(out, a->t == V_BOOL);
        return TH_OK;
    case F_IS_OBJECT:
        val_bool(out, a->t == V_OBJ);
        return TH_OK;
    case F_IS_ARRAY:
        val_bool(out, a->t == V_ARR);
        return TH_OK;
    case F_IS_PRIMITIVE:
        val_bool(out, val_is_primitive(a));
        return TH_OK;
    case F_ABS:
        if (a->t == V_NUM)
            val_num(out, a->n < 0 ? -a->n : a->n);
        return TH_OK;
    case F_FLOOR:
        if (a->t == V_NUM)
            val_num(out, num_floor(a->n));
        return TH_OK;
    case F_CEILING:
        if (a->t == V_NUM)
            val_num(out, num_ceil(a->n));
        return TH_OK;
    default:
        break;
    }
    /* The rest work on strings. */
    for (size_t k = 0; k < nargs; k++) {
        bool numeric_arg = fn == F_SUBSTRING && k > 0;
        if (args[k].t != (numeric_arg ? V_NUM : V_STR))
            return TH_OK;
    }
    size_t alen = strlen(a->s);
    switch (fn) {
    case F_STARTSWITH:
        val_bool(out, strncmp(a->s, b->s, strlen(b->s)) == 0);
        return TH_OK;
    case F_ENDSWITH: {
        size_t blen = strlen(b->s);
        val_bool(out, blen <= alen && memcmp(a->s + alen - blen, b->s, blen) == 0);
        return TH_OK;
    }
    case F_CONTAINS:
        val_bool(out, strstr(a->s, b->s) != NULL);
        return TH_OK;
    case F_LOWER:
    case F_UPPER:
        return val_take_str(out, str_map_case(a->s, fn == F_UPPER));
    case F_LENGTH:
        val_num(out, (double)cp_count(a->s, a->s + alen));
        return TH_OK;
    case F_INDEX_OF: {
        const char *at = strstr(a->s, b->s);
        val_num(out, at ? (double)cp_count(a->s, at) : -1.0);
        return TH_OK;
    }
    case F_SUBSTRING: {
        const char *from = cp_skip(a->s, count_arg(args[1].n));
        const char *to = cp_skip(from, count_arg(args[2].n));
        return val_take_str(out, str_slice(from, to));
    }
    case F_CONCAT: {
        size_t total = 0;
        for (size_t k = 0; k < nargs; k++)
            total += strlen(args[k].s);
        char *r = malloc(total + 1);
        if (!r)
            return TH_ERR_NOMEM;
        size_t o = 0;
        for (size_t k = 0; k < nargs; k++) {
            size_t l = strlen(args[k].s);
            memcpy(r + o, args[k].s, l);
            o += l;
        }
        r[o] = '\0';
        return val_take_str(out, r);
    }
    default:
        return TH_OK;
    }
}

static th_result eval_call(const struct node *n, const cJSON *doc, struct val *out)
{
    struct val args[MAX_CALL_ARGS];
    /* Every function takes an argument; this only keeps the compiler sure of it. */
    memset(&args[0], 0, sizeof args[0]);
    size_t done = 0;
    th_result r = TH_OK;
    for (; done < n->nargs; done++) {
        r = eval(n->args[done], doc, &args[done]);
        if (r != TH_OK)
            break;
    }
    if (r == TH_OK)
        r = call_fn(n->fn->fn, args, n->nargs, out);
    for (size_t k = 0; k < done; k++)
        val_clear(&args[k]);
    return r;
}

/*
 * Evaluate n against doc into *out, which the caller clears with val_clear.
 * Missing attributes and type mismatches give undefined; fails only on OOM.
 */
static th_result eval(const struct node *n, const cJSON *doc, struct val *out)
{
    struct val a, b;
    th_result r;
    memset(out, 0, sizeof *out);
    switch (n->kind) {
    case N_CONST:
        val_from_json(n->value, out);
        return TH_OK;
    case N_UNDEF:
        return TH_OK;
    case N_PATH:
        val_from_json(lookup_path(n, doc), out);
        return TH_OK;
    case N_NOT:
        r = eval(n->a, doc, &a);
        if (r == TH_OK && a.t == V_BOOL)
            val_bool(out, !a.b);
        val_clear(&a);
        return r;
    case N_SIGN:
        r = eval(n->a, doc, &a);
        if (r == TH_OK && a.t == V_NUM)
            val_num(out, n->op == OP_SUB ? -a.n : a.n);
        val_clear(&a);
        return r;
    case N_ARITH:
    case N_CMP:
        r = eval(n->a, doc, &a);
        if (r != TH_OK)
            return r;
        r = eval(n->b, doc, &b);
        if (r == TH_OK) {
            if (n->kind == N_ARITH)
                r = eval_arith(n->op, &a, &b, out);
            else
                eval_cmp(n->op, &a, &b, out);
        }
        val_clear(&a);
        val_clear(&b);
        return r;
    case N_AND:
    case N_OR: {
        /* Three-valued logic: a decisive operand wins even if the other is undefined. */
        bool decisive = n->kind == N_OR;
        r = eval(n->a, doc, &a);
        if (r != TH_OK)
            return r;
        if (a.t == V_BOOL && a.b == decisive) {
            val_clear(&a);
            val_bool(out, decisive);
            return TH_OK;
        }
        r = eval(n->b, doc, &b);
        if (r == TH_OK) {
            if (b.t == V_BOOL && b.b == decisive)
                val_bool(out, decisive);
            else if (a.t == V_BOOL && b.t == V_BOOL)
                val_bool(out, !decisive);
        }
        val_clear(&a);
        val_clear(&b);
        return r;
    }
    case N_IN:
    case N_NIN:
        r = eval(n->a, doc, &a);
        if (r == TH_OK)
            eval_in(n->kind == N_NIN, &a, n->value, out);
        val_clear(&a);
        return r;
    case N_CALL:
        return eval_call(n, doc, out);
    }
    return TH_OK;
}

/* Whether doc satisfies WHERE: only boolean true does. */
static th_result matches(const struct th_query *q, const cJSON *doc, bool *ok)
{
    *ok = true;
    if (!q->where)
        return TH_OK;
    struct val v;
    th_result r = eval(q->where, doc, &v);
    *ok = r == TH_OK && v.t == V_BOOL && v.b;
    val_clear(&v);
    return r;
}

bool th_query_grouped(const struct th_query *q)
{
    return q && q->grouped;
}

bool th_query_star(const struct th_query *q)
{
    return q && q->star;
}

size_t th_query_top(const struct th_query *q)
{
    return q ? q->top : SIZE_MAX;
}

bool th_query_has_group_by(const struct th_query *q)
{
    return q && q->ngroup > 0;
}

th_result th_query_matches(const struct th_query *q, const cJSON *doc, bool *out_match)
{
    if (out_match)
        *out_match = false;
    if (!q || !doc || !out_match)
        return TH_ERR_INVAL;
    bool ok;
    th_result r = matches(q, doc, &ok);
    *out_match = r == TH_OK && ok;
    return r;
}

/* ------------------------------------------------------------------------ */
/* What a query reads (for query documents, query.h)                        */
/* ------------------------------------------------------------------------ */

/* Call visit on every path of n; stops at the first true. */
static bool any_path(const struct node *n, bool (*visit)(const struct node *, const void *),
                     const void *arg)
{
    if (!n)
        return false;
    if (n->kind == N_PATH)
        return visit(n, arg);
    if (any_path(n->a, visit, arg) || any_path(n->b, visit, arg))
        return true;
    for (size_t k = 0; k < n->nargs; k++) {
        if (any_path(n->args[k], visit, arg))
            return true;
    }
    return false;
}

/* Any path of the query: WHERE (when `where`), the select list and GROUP BY (when `out`). */
static bool query_any_path(const struct th_query *q, bool where, bool out,
                           bool (*visit)(const struct node *, const void *), const void *arg)
{
    if (where && any_path(q->where, visit, arg))
        return true;
    for (size_t k = 0; out && k < q->nitems; k++) {
        if (any_path(q->items[k].expr, visit, arg))
            return true;
    }
    for (size_t k = 0; out && k < q->ngroup; k++) {
        if (any_path(q->group[k], visit, arg))
            return true;
    }
    return false;
}

static bool path_has_dollar(const struct node *n, const void *arg)
{
    (void)arg;
    for (size_t k = n->first; k < n->nsegs; k++) {
        if (strchr(n->segs[k].name, '$'))
            return true;
    }
    return false;
}

/* properties, properties.desired or properties.reported (any case): the sections themselves. */
static bool path_is_section(const struct node *n, const void *arg)
{
    (void)arg;
    size_t len = n->nsegs - n->first;
    const struct path_seg *s = &n->segs[n->first];
    return (len == 1 && ieq(s[0].name, "properties")) ||
           (len == 2 && ieq(s[0].name, "properties") &&
            (ieq(s[1].name, "desired") || ieq(s[1].name, "reported")));
}

static bool path_starts_with(const struct node *n, const void *arg)
{
    return ieq(n->segs[n->first].name, (const char *)arg);
}

bool th_query_needs_meta(const struct th_query *q)
{
    return !q || q->source == TH_QUERY_JOBS || query_any_path(q, true, true, path_has_dollar, NULL);
}

bool th_query_reads_sections(const struct th_query *q)
{
    return !q || query_any_path(q, false, true, path_is_section, NULL);
}

bool th_query_names_member(const struct th_query *q, const char *name)
{
    return q && name && query_any_path(q, true, true, path_starts_with, name);
}

/* Add a copy of `src` to obj under key unless the key is already there. Takes `item`. */
static th_result add_member(cJSON *obj, const char *key, cJSON *item)
{
    if (!item)
        return TH_ERR_NOMEM;
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
        /* Two paths ending in the same stored name: the first one wins. */
        cJSON_Delete(item);
        return TH_OK;
    }
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return TH_ERR_NOMEM;
    }
    return TH_OK;
}

/* One projected object for doc, appended to items. */
static th_result project(const struct th_query *q, const cJSON *doc, cJSON *items)
{
    cJSON *obj = cJSON_CreateObject();
    if (!obj || !cJSON_AddItemToArray(items, obj)) {
        cJSON_Delete(obj);
        return TH_ERR_NOMEM;
    }
    for (size_t k = 0; k < q->nitems; k++) {
        const struct sel_item *item = &q->items[k];
        struct val v;
        th_result r = eval(item->expr, doc, &v);
        if (r == TH_OK && v.t != V_UNDEF) {
            /* A path keeps the document's casing of its last attribute. */
            const char *key = item->key ? item->key : v.j->string;
            r = add_member(obj, key, val_to_json(&v));
        }
        val_clear(&v);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}

th_result th_query_project(const struct th_query *q, const cJSON *doc, cJSON *items)
{
    if (!q || !doc || !cJSON_IsArray(items) || q->grouped)
        return TH_ERR_INVAL;
    if (!q->star)
        return project(q, doc, items);
    cJSON *copy = cJSON_Duplicate(doc, true);
    if (!copy || !cJSON_AddItemToArray(items, copy)) {
        cJSON_Delete(copy);
        return TH_ERR_NOMEM;
    }
    return TH_OK;
}

static th_result run_plain(const struct th_query *q, cJSON *const *docs, size_t n, cJSON *items)
{
    size_t count = 0;
    for (size_t k = 0; k < n && count < q->top; k++) {
        bool ok;
        th_result r = matches(q, docs[k], &ok);
        if (r != TH_OK)
            return r;
        if (!ok)
            continue;
        r = th_query_project(q, docs[k], items);
        if (r != TH_OK)
            return r;
        count++;
    }
    return TH_OK;
}

/* Running state of one aggregate in one group. */
struct acc {
    double sum;
    size_t nums;
    cJSON *best; /* MIN/MAX so far: a copy, so documents may go once added */
};

struct group {
    cJSON **keys;     /* one per GROUP BY path, NULL = undefined; copies, owned */
    struct acc *accs; /* one per select item */
    size_t count;
};

static void groups_free(struct group *groups, size_t n, const struct th_query *q)
{
    for (size_t k = 0; k < n; k++) {
        for (size_t j = 0; groups[k].keys && j < q->ngroup; j++)
            cJSON_Delete(groups[k].keys[j]);
        for (size_t j = 0; groups[k].accs && j < q->nitems; j++)
            cJSON_Delete(groups[k].accs[j].best);
        free(groups[k].keys);
        free(groups[k].accs);
    }
    free(groups);
}

/* MIN/MAX order over primitives: null < false < true < numbers < strings. */
static int prim_rank(const struct val *v)
{
    switch (v->t) {
    case V_NULL:
        return 0;
    case V_BOOL:
        return 1;
    case V_NUM:
        return 2;
    case V_STR:
        return 3;
    default:
        return -1;
    }
}

static int order_prims(const struct val *a, const struct val *b)
{
    int ra = prim_rank(a), rb = prim_rank(b), c = 0;
    if (ra != rb)
        return ra < rb ? -1 : 1;
    compare_prims(a, b, &c);
    return c;
}

/* Replace acc->best with a copy of j (a primitive). */
static th_result set_best(struct acc *acc, const cJSON *j)
{
    cJSON *copy = cJSON_Duplicate(j, true);
    if (!copy)
        return TH_ERR_NOMEM;
    cJSON_Delete(acc->best);
    acc->best = copy;
    return TH_OK;
}

static th_result accumulate(const struct sel_item *item, const cJSON *doc, struct acc *acc)
{
    if (item->agg == AGG_COUNT || item->agg == AGG_NONE)
        return TH_OK;
    struct val v;
    val_from_json(lookup_path(item->expr, doc), &v);
    if (item->agg == AGG_SUM || item->agg == AGG_AVG) {
        if (v.t == V_NUM) {
            acc->sum += v.n;
            acc->nums++;
        }
        return TH_OK;
    }
    if (!val_is_primitive(&v))
        return TH_OK;
    if (!acc->best)
        return set_best(acc, v.j);
    struct val best;
    val_from_json(acc->best, &best);
    int c = order_prims(&v, &best);
    if ((item->agg == AGG_MIN && c < 0) || (item->agg == AGG_MAX && c > 0))
        return set_best(acc, v.j);
    return TH_OK;
}

static bool same_keys(cJSON *const *a, const cJSON **b, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (!a[k] != !b[k])
            return false;
        if (a[k] && !cJSON_Compare(a[k], b[k], true))
            return false;
    }
    return true;
}

static th_result group_add(const struct th_query *q, struct group **groups, size_t *ngroups,
                           const cJSON **keys, struct group **out)
{
    struct group *grown = realloc(*groups, (*ngroups + 1) * sizeof *grown);
    if (!grown)
        return TH_ERR_NOMEM;
    *groups = grown;
    struct group *g = &grown[*ngroups];
    memset(g, 0, sizeof *g);
    g->keys = calloc(q->ngroup ? q->ngroup : 1, sizeof *g->keys);
    g->accs = calloc(q->nitems ? q->nitems : 1, sizeof *g->accs);
    (*ngroups)++; /* counted now so groups_free releases a half-built group */
    if (!g->keys || !g->accs)
        return TH_ERR_NOMEM;
    for (size_t k = 0; k < q->ngroup; k++) {
        if (keys[k] && !(g->keys[k] = cJSON_Duplicate(keys[k], true)))
            return TH_ERR_NOMEM;
    }
    *out = g;
    return TH_OK;
}

/* The result object of one group, appended to items. */
static th_result emit_group(const struct th_query *q, const struct group *g, cJSON *items)
{
    cJSON *obj = cJSON_CreateObject();
    if (!obj || !cJSON_AddItemToArray(items, obj)) {
        cJSON_Delete(obj);
        return TH_ERR_NOMEM;
    }
    for (size_t k = 0; k < q->nitems; k++) {
        const struct sel_item *item = &q->items[k];
        const struct acc *acc = &g->accs[k];
        cJSON *v = NULL;
        const char *key = item->key;
        switch (item->agg) {
        case AGG_NONE: {
            const cJSON *gk = g->keys[item->group_index];
            if (!gk)
                continue;
            if (!key)
                key = gk->string;
            v = cJSON_Duplicate(gk, true);
            break;
        }
        case AGG_COUNT:
            v = cJSON_CreateNumber((double)g->count);
            break;
        case AGG_SUM:
            v = cJSON_CreateNumber(acc->sum);
            break;
        case AGG_AVG:
            if (acc->nums == 0)
                continue;
            v = cJSON_CreateNumber(acc->sum / (double)acc->nums);
            break;
        case AGG_MIN:
        case AGG_MAX:
            if (!acc->best)
                continue;
            v = cJSON_Duplicate(acc->best, true);
            break;
        }
        th_result r = add_member(obj, key, v);
        if (r != TH_OK)
            return r;
    }
    return TH_OK;
}

/* Results gathered one matching document at a time (query.h). */
struct th_query_groups {
    const struct th_query *q;
    struct group *groups;
    size_t ngroups;
    const cJSON **keys; /* scratch: the current document's GROUP BY values */
};

void th_query_groups_free(struct th_query_groups *gs)
{
    if (!gs)
        return;
    groups_free(gs->groups, gs->ngroups, gs->q);
    free(gs->keys);
    free(gs);
}

th_result th_query_groups_new(const struct th_query *q, struct th_query_groups **out)
{
    if (!out)
        return TH_ERR_INVAL;
    *out = NULL;
    if (!q || !q->grouped)
        return TH_ERR_INVAL;
    struct th_query_groups *gs = calloc(1, sizeof *gs);
    if (!gs)
        return TH_ERR_NOMEM;
    gs->q = q;
    gs->keys = calloc(q->ngroup ? q->ngroup : 1, sizeof *gs->keys);
    struct group *g;
    /* Without GROUP BY every match lands in one group, which exists even when nothing matches. */
    th_result r = gs->keys ? TH_OK : TH_ERR_NOMEM;
    if (r == TH_OK && q->ngroup == 0)
        r = group_add(q, &gs->groups, &gs->ngroups, gs->keys, &g);
    if (r != TH_OK) {
        th_query_groups_free(gs);
        return r;
    }
    *out = gs;
    return TH_OK;
}

th_result th_query_groups_add(struct th_query_groups *gs, const cJSON *doc)
{
    if (!gs || !doc)
        return TH_ERR_INVAL;
    const struct th_query *q = gs->q;
    struct group *g = gs->ngroups ? &gs->groups[0] : NULL;
    th_result r = TH_OK;
    if (q->ngroup > 0) {
        for (size_t j = 0; j < q->ngroup; j++)
            gs->keys[j] = lookup_path(q->group[j], doc);
        g = NULL;
        /* Linear search: fine for emulator-sized hubs, keeps first-seen order. */
        for (size_t j = 0; j < gs->ngroups; j++) {
            if (same_keys(gs->groups[j].keys, gs->keys, q->ngroup)) {
                g = &gs->groups[j];
                break;
            }
        }
        if (!g && (r = group_add(q, &gs->groups, &gs->ngroups, gs->keys, &g)) != TH_OK)
            return r;
    }
    g->count++;
    for (size_t j = 0; r == TH_OK && j < q->nitems; j++)
        r = accumulate(&q->items[j], doc, &g->accs[j]);
    return r;
}

th_result th_query_groups_emit(const struct th_query_groups *gs, cJSON *items)
{
    if (!gs || !cJSON_IsArray(items))
        return TH_ERR_INVAL;
    th_result r = TH_OK;
    for (size_t k = 0; r == TH_OK && k < gs->ngroups && k < gs->q->top; k++)
        r = emit_group(gs->q, &gs->groups[k], items);
    return r;
}

static th_result run_grouped(const struct th_query *q, cJSON *const *docs, size_t n, cJSON *items)
{
    struct th_query_groups *gs;
    th_result r = th_query_groups_new(q, &gs);
    for (size_t k = 0; r == TH_OK && k < n; k++) {
        bool ok;
        r = matches(q, docs[k], &ok);
        if (r == TH_OK && ok)
            r = th_query_groups_add(gs, docs[k]);
    }
    if (r == TH_OK)
        r = th_query_groups_emit(gs, items);
    th_query_groups_free(gs);
    return r;
}

th_result th_query_run(const struct th_query *q, cJSON *const *docs, size_t n, cJSON **out_items,
                       bool *out_is_twin, struct th_error *err)
{
    if (out_items)
        *out_items = NULL;
    if (!q || !out_items || (n && !docs))
        return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID, "query: nothing to run");
    for (size_t k = 0; k < n; k++) {
        if (!docs[k])
            return th_error_set(err, TH_ERR_INVAL, TH_EC_ARGUMENT_INVALID,
                                "query: document %zu is missing", k);
    }
    cJSON *items = cJSON_CreateArray();
    if (!items)
        return oom(err);
    th_result r = q->grouped ? run_grouped(q, docs, n, items) : run_plain(q, docs, n, items);
    if (r != TH_OK) {
        cJSON_Delete(items);
        return oom(err);
    }
    *out_items = items;
    if (out_is_twin)
        *out_is_twin = q->star;
    return TH_OK;
}
