/*
 * jsonw.h - a JSON text writer: an append-only buffer into which a caller
 * writes a document member by member, for hot paths that would otherwise
 * build a cJSON tree only to print it (the telemetry event record,
 * docs/performance.md "The event stream with a subscriber").
 *
 * Strings are escaped exactly as cJSON 1.7.15's printer (and th_json_print,
 * json.c) escapes them: '"' '\' and \b \f \n \r \t as two-byte escapes,
 * other bytes below 0x20 as \u00xx (lower-case hex), every other byte as is.
 * tests/unit/test_jsonw.c checks that against cJSON on random strings.
 *
 * Errors are sticky: after a failed allocation every call does nothing and
 * th_jsonw_finish returns NULL, so a writer checks once at the end.
 */
#ifndef TH_JSONW_H
#define TH_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct th_jsonw {
    char *p;     /* the text so far (not NUL-terminated until th_jsonw_finish) */
    size_t len;  /* bytes written */
    size_t cap;  /* bytes allocated */
    bool failed; /* an allocation failed: the text is incomplete */
};

/*
 * Make room for `more` bytes beyond what is written (plus the final NUL), in
 * one allocation when the writer is new: callers that know their size reserve
 * it first. False (and the writer failed) on out-of-memory.
 */
bool th_jsonw_reserve(struct th_jsonw *w, size_t more);
/* Append `n` bytes as they are (JSON punctuation, literals, known-safe text). Inline: the
 * record writers call it for every piece of punctuation. */
static inline void th_jsonw_raw(struct th_jsonw *w, const char *s, size_t n)
{
    if ((!w->failed && w->cap - w->len > n) || th_jsonw_reserve(w, n)) {
        memcpy(w->p + w->len, s, n);
        w->len += n;
    }
}
/* Append `n` bytes of `s` (may hold any byte, NUL included) as one quoted, escaped JSON string. */
void th_jsonw_string(struct th_jsonw *w, const char *s, size_t n);
/* The bytes th_jsonw_string writes for the same input, quotes included. */
size_t th_jsonw_string_size(const char *s, size_t n);
/* Append an integer as its decimal text. */
void th_jsonw_u64(struct th_jsonw *w, uint64_t v);
void th_jsonw_i64(struct th_jsonw *w, int64_t v);
/*
 * End the text: a NUL-terminated string the caller frees with free(), its
 * length in *len (may be NULL), or NULL (nothing kept) when any step failed.
 * The writer is empty afterwards either way.
 */
char *th_jsonw_finish(struct th_jsonw *w, size_t *len);
/* Drop what was written (for a caller that gives up half way). */
void th_jsonw_discard(struct th_jsonw *w);

#endif
