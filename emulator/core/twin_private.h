/*
 * twin_private.h - what the three files of the twin share, and nothing a
 * caller outside emulator/core/twin*.c may use:
 * - twin.c: the document operations (validation and size rules, the writes,
 *   the service-side write, views, etag and version);
 * - twin_meta.c: the compact $metadata tree, the shared pool of property
 *   names, and the merge that updates a section and its metadata together;
 * - twin_state.c: the full-fidelity persistence state (save, validated restore).
 * Names here start with twin_ (public ones with th_twin_, in twin.h).
 */
#ifndef TH_TWIN_PRIVATE_H
#define TH_TWIN_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "th_result.h"
#include "twin.h"

#define KEY_LAST_UPDATED "$lastUpdated"
#define KEY_LAST_UPDATED_VERSION "$lastUpdatedVersion"
#define KEY_METADATA "$metadata"
#define KEY_VERSION "$version"

/* ---- where in the document: a bounded dotted path for error messages (twin.c) ---- */

#define PATH_SHOWN 96 /* bytes of path shown in a message (th_error.message is 256) */

struct twin_path {
    char buf[PATH_SHOWN + 1];
    size_t want; /* logical length; > PATH_SHOWN means the shown text is cut */
};

void twin_path_init(struct twin_path *p, const char *root);
/* Append ".key" (key non-NULL) or "[index]"; returns the length to hand back to twin_path_pop. */
size_t twin_path_push(struct twin_path *p, const char *key, int index);
void twin_path_pop(struct twin_path *p, size_t saved);
/* The path as shown: "reported.a.b", or "reported.a.b..." when cut; returns `out`. */
const char *twin_path_text(const struct twin_path *p, char *out, size_t size);

/* "tags", "desired" or "reported". */
const char *twin_section_name(enum th_twin_section section);

/* ---- rules (twin.c) ---- */

/*
 * The content rules of twin.h (th_twin_validate_patch) for `patch` as a
 * `section` document. `skip_readonly`: $version/$metadata members are passed
 * over instead of refused; `replace`: a whole new section, so null is refused
 * anywhere.
 */
th_result twin_validate(enum th_twin_section section, const cJSON *patch, bool skip_readonly,
                        bool replace, struct th_error *err);
/* 403/403100 when `merged` is over its section's size limit. */
th_result twin_check_size(enum th_twin_section section, const cJSON *merged, struct th_error *err);
/* TH_ERR_NOMEM with the twin's message; returns TH_ERR_NOMEM. */
th_result twin_nomem(struct th_error *err);

/* ---- $metadata and merge (twin_meta.c) ---- */

/* The stamp one write puts on every metadata node it touches. */
struct twin_stamp {
    int64_t us;
    int64_t version;   /* desired $version of this update */
    bool with_version; /* desired metadata carries $lastUpdatedVersion */
};

/*
 * A childless metadata node named `key`, stamped `us` / `version`, or with
 * `time_text` as its $lastUpdated when non-NULL (a restored text th_time_format
 * would not produce); `shared_stamp`: the stamp covers the whole value below.
 * NULL on OOM; free with twin_meta_free.
 */
struct th_twin_meta *twin_meta_new(const char *key, int64_t us, int64_t version,
                                   const char *time_text, bool shared_stamp);
/* A new shared node for `key` with the stamp `st`; NULL on OOM. */
struct th_twin_meta *twin_meta_stamped(const char *key, const struct twin_stamp *st);
/* Frees `m` and its children (not its siblings). Accepts NULL. */
void twin_meta_free(struct th_twin_meta *m);
/* Deep copy of `m` and its children (not its siblings); NULL on OOM. */
struct th_twin_meta *twin_meta_clone(const struct th_twin_meta *m);
/*
 * The $metadata JSON of `m`, which describes `value` ({"$lastUpdated":..,
 * ["$lastUpdatedVersion":..,] "key":{...}}); NULL on OOM; cJSON_Delete.
 */
cJSON *twin_meta_json(const struct th_twin_meta *m, const cJSON *value, bool with_version);
/* twin_meta_json written to b instead of built (the bytes th_json_print gives for it). */
struct th_jsonw;
void twin_meta_print(struct th_jsonw *b, const struct th_twin_meta *m, const cJSON *value,
                     bool with_version);
/*
 * The compact form of a $metadata object that passed twin_state.c's checks
 * (every node an object with a "$lastUpdated" string, desired nodes with an
 * integral "$lastUpdatedVersion"); `key` names the node. NULL on OOM.
 */
struct th_twin_meta *twin_meta_from_json(const cJSON *json, const char *key, bool desired);
/* Makes every node of `m` (describing `value`) shared where that changes nothing. */
void twin_meta_share_all(struct th_twin_meta *m, const cJSON *value);

/*
 * Merge `patch` into `target` (IoT Hub semantics: null deletes, object onto
 * object recurses, anything else replaces; arrays are values). `meta` is the
 * metadata node mirroring `target`, or NULL for tags. Every node the patch
 * names is stamped with `st`; deleted members lose their metadata. The patch
 * must have passed validation. On failure (TH_ERR_NOMEM) target/meta are
 * partly merged: callers pass copies.
 */
th_result twin_merge_object(cJSON *target, struct th_twin_meta *meta, const cJSON *patch,
                            const struct twin_stamp *st);

/* Gives the members of `node` and of everything below it the shared copies of their names. */
void twin_intern_names(cJSON *node);

/* ---- the write's shortcuts (twin_write.c) ---- */

/* True (the default): the shortcuts below are taken where they apply. Tests set it false to
 * compare them with the general way. */
extern bool twin_fast_paths;
/* Whether th_twin_strip_readonly would remove anything from `doc`. */
bool twin_holds_readonly(const cJSON *doc);
/* The th_json_print text of the object `members` plus "$version": version; free(); NULL on
 * OOM; *len (may be NULL) its length. */
char *twin_notification_text(const cJSON *members, int64_t version, size_t *len);
/* Merging `patch` into `target` writes every member `target` will have (conservative). */
bool twin_patch_rewrites_all(const cJSON *target, const cJSON *patch);

/*
 * A section written in place: every change to its members is recorded so
 * that twin_undo_rollback puts the section back exactly as it was (the same
 * items, in the same order), or twin_undo_commit frees what was taken out.
 * A member is never changed in place: one the patch merges into is copied
 * and the copy put in its place, so only the members the patch names are
 * copied, not the section. Either call frees the undo.
 */
struct twin_undo;
/* NULL on OOM. */
struct twin_undo *twin_undo_new(cJSON *section);
cJSON *twin_undo_section(const struct twin_undo *u);
/* `fresh` (taken on every path; NULL is OOM) replaces `existing`, or is appended when
 * `existing` is NULL, named `key`. TH_ERR_NOMEM leaves the section as it was. */
th_result twin_undo_put(struct twin_undo *u, const char *key, cJSON *existing, cJSON *fresh);
/* Takes the member `existing` out. TH_ERR_NOMEM leaves the section as it was. */
th_result twin_undo_remove(struct twin_undo *u, cJSON *existing);
/* Keeps the changes: shares the names of what was put in, frees what was taken out. */
void twin_undo_commit(struct twin_undo *u);
/* Undoes every change, newest first, and frees what was put in. Accepts NULL. */
void twin_undo_rollback(struct twin_undo *u);
/*
 * The metadata side of an in-place write (twin_meta.c): the live metadata
 * root is changed and every change recorded, so that it can be undone. The
 * root's own fields are saved first; a child link that is replaced, appended
 * or cut is recorded with what it held, and what is taken out is freed only
 * on commit. Undone newest first, each record finds the links as it left
 * them. Held inside struct twin_undo; all zero when unused.
 */
struct twin_meta_op {
    struct th_twin_meta **link;
    struct th_twin_meta *old;   /* what *link held (NULL: an append) */
    struct th_twin_meta *fresh; /* what was put there (NULL: a cut) */
};
struct twin_meta_undo {
    struct th_twin_meta *root;        /* NULL: no metadata was touched */
    struct th_twin_meta *saved_child; /* the root's fields as they were */
    int64_t saved_us;
    uint64_t saved_version;
    bool saved_shared;
    bool unshared;                /* meta_unshare made the children (freed on rollback) */
    bool reshared;                /* a final meta_try_share let `dropped` go */
    struct th_twin_meta *dropped; /* (freed on commit) */
    struct twin_meta_op *ops;
    size_t n, cap;
};
/* The metadata undo inside `u`. */
struct twin_meta_undo *twin_undo_meta(struct twin_undo *u);
/*
 * twin_merge_object into twin_undo_section(u) through `u`, and into the live
 * metadata root `meta` (NULL for tags) through twin_undo_meta(u): the same
 * result and the same metadata. On TH_ERR_NOMEM the caller rolls back `u`.
 */
th_result twin_merge_in_place(struct twin_undo *u, struct th_twin_meta *meta, const cJSON *patch,
                              const struct twin_stamp *st);
/* Keep / undo the metadata changes and empty `mu` (twin_undo_commit/rollback call these). */
void twin_meta_undo_commit(struct twin_meta_undo *mu);
void twin_meta_undo_rollback(struct twin_meta_undo *mu);
/* Gives `item`'s name and the names below it their shared copies. */
void twin_intern_item(cJSON *item);

#endif
