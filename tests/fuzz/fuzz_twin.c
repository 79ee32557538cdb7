/*
 * fuzz_twin.c - libFuzzer target for twin patches: the input is a JSON body
 * as a device (reported PATCH) or the service (desired/tags update) sends
 * it. It goes through th_json_parse with the plugin's limits, then every
 * twin write (th_twin_service_write with the input as the whole request
 * too), and the results are checked against the contracts in twin.h:
 * a refused patch leaves the twin unchanged, an accepted one bumps exactly
 * its version, and everything accepted is restorable: the twin saved as
 * persist.c saves it (printed) and loaded as it loads it (parsed with its
 * limits, then th_twin_from_state) is the same twin, so no accepted patch
 * can make a later `twinhub serve --state-dir` set the device aside.
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "json.h"
#include "th_limits.h"
#include "twin.h"

static cJSON *state_of(const struct th_twin *t)
{
    cJSON *s = th_twin_state_json(t);
    FUZZ_CHECK(s != NULL);
    return s;
}

/* The twin's state equals `before` (a refused write changed nothing). */
static void check_unchanged(const struct th_twin *t, const cJSON *before)
{
    cJSON *after = state_of(t);
    FUZZ_CHECK(cJSON_Compare(before, after, true));
    cJSON_Delete(after);
}

/* persist.c's limits for a state file (TH_STATE_MAX_FILE, depth 64). */
#define STATE_FILE_MAX (64 * 1024 * 1024)

/* th_json_print of `item`, which must not fail; caller frees. */
static char *printed(const cJSON *item)
{
    FUZZ_CHECK(item != NULL);
    char *text = th_json_print(item);
    FUZZ_CHECK(text != NULL);
    return text;
}

/*
 * The twin saved and loaded the way the state dir does it. Aborts (a
 * finding) when the saved text does not load: that twin would be set aside
 * at the next start.
 */
static struct th_twin *saved_and_loaded(const cJSON *state)
{
    struct th_error err = {0};
    char *text = printed(state);
    cJSON *parsed = NULL;
    if (th_json_parse(text, strlen(text), STATE_FILE_MAX, 64, &parsed, &err) != TH_OK) {
        fprintf(stderr, "a saved twin is not JSON any more: %s\n%s\n", err.message, text);
        abort();
    }
    struct th_twin *back = th_twin_from_state(parsed, &err);
    if (!back) {
        fprintf(stderr, "th_twin_from_state refused a saved twin: %s\n%s\n", err.message, text);
        abort();
    }
    cJSON_Delete(parsed);
    free(text);
    return back;
}

/* Two trees print the same text. */
static void check_same_text(const cJSON *a, const cJSON *b)
{
    char *ta = printed(a), *tb = printed(b);
    if (strcmp(ta, tb) != 0) {
        fprintf(stderr, "the twin changed on the way through its state file:\n%s\n%s\n", ta, tb);
        abort();
    }
    free(ta);
    free(tb);
}

/* Restore, views and clone must all work on any twin the API produced, and give it back. */
static void check_roundtrip(const struct th_twin *t)
{
    cJSON *s = state_of(t);
    struct th_twin *back = saved_and_loaded(s);
    cJSON *s2 = state_of(back);
    FUZZ_CHECK(cJSON_Compare(s, s2, true));
    check_same_text(s, s2);
    cJSON *v1 = th_twin_device_view(t), *v2 = th_twin_device_view(back);
    FUZZ_CHECK(v1 && v2 && cJSON_Compare(v1, v2, true));
    check_same_text(v1, v2);
    cJSON *p1 = th_twin_properties_view(t), *p2 = th_twin_properties_view(back);
    FUZZ_CHECK(p1 != NULL && p2 != NULL);
    check_same_text(p1, p2);
    char *text = printed(p1);
    char e1[16], e2[16];
    th_twin_etag(t, e1);
    th_twin_etag(back, e2);
    FUZZ_CHECK(strcmp(e1, e2) == 0);
    FUZZ_CHECK(th_twin_version(t) == th_twin_version(back));
    struct th_twin *clone = th_twin_clone(t);
    FUZZ_CHECK(clone != NULL);
    cJSON *s3 = state_of(clone);
    FUZZ_CHECK(cJSON_Compare(s, s3, true));
    free(text);
    cJSON_Delete(v1);
    cJSON_Delete(v2);
    cJSON_Delete(p1);
    cJSON_Delete(p2);
    cJSON_Delete(s);
    cJSON_Delete(s2);
    cJSON_Delete(s3);
    th_twin_free(back);
    th_twin_free(clone);
}

/* A twin with some content, so that patches merge into existing members. */
static struct th_twin *seeded_twin(void)
{
    static const char reported[] =
        "{\"fw\":\"1.0\",\"cfg\":{\"a\":1,\"b\":{\"c\":[1,2]}},\"x\":null}";
    static const char desired[] = "{\"target\":21.5,\"cfg\":{\"a\":2,\"mode\":\"eco\"}}";
    struct th_twin *t = th_twin_new(FUZZ_NOW_US);
    FUZZ_CHECK(t != NULL);
    cJSON *r = cJSON_Parse(reported), *d = cJSON_Parse(desired);
    FUZZ_CHECK(r && d);
    FUZZ_CHECK(th_twin_patch_reported(t, r, FUZZ_NOW_US, NULL) == TH_OK);
    FUZZ_CHECK(th_twin_patch_desired(t, d, FUZZ_NOW_US, NULL, NULL) == TH_OK);
    FUZZ_CHECK(th_twin_patch_tags(t, d, NULL) == TH_OK);
    cJSON_Delete(r);
    cJSON_Delete(d);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    struct th_error err = {0};
    cJSON *patch = NULL;
    /* The limits the plugin uses for a reported PATCH payload. */
    if (th_json_parse(buf, size, TH_JSON_MAX_INPUT_BYTES, 64, &patch, &err) != TH_OK) {
        FUZZ_CHECK(patch == NULL);
        free(buf);
        return 0;
    }
    (void)th_twin_validate_patch(TH_SECTION_REPORTED, patch, &err);
    (void)th_json_depth(patch);
    (void)th_twin_section_size(patch);

    struct th_twin *t = seeded_twin();
    int64_t now = FUZZ_NOW_US + 1000;

    /* reported PATCH from a device */
    cJSON *before = state_of(t);
    int64_t rv = t->reported_version;
    uint64_t etag = t->etag_counter;
    if (th_twin_patch_reported(t, patch, now, &err) == TH_OK) {
        FUZZ_CHECK(t->reported_version == rv + 1);
        FUZZ_CHECK(t->etag_counter == etag);
        FUZZ_CHECK(th_twin_section_size(t->reported) <= TH_TWIN_MAX_REPORTED_BYTES);
    } else {
        FUZZ_CHECK(err.status >= 400 && err.status < 600);
        check_unchanged(t, before);
    }
    cJSON_Delete(before);
    check_roundtrip(t);

    /* the same patch with a $version precondition: a stale one changes nothing (412) */
    int64_t want = (size & 1) ? t->reported_version : t->reported_version - 1;
    before = state_of(t);
    rv = t->reported_version;
    th_result vr = th_twin_patch_reported_if(t, patch, &want, now, &err);
    if (vr == TH_OK) {
        FUZZ_CHECK(want == rv && t->reported_version == rv + 1);
    } else {
        FUZZ_CHECK(vr != TH_ERR_PRECONDITION || (want != rv && err.status == 412));
        check_unchanged(t, before);
    }
    cJSON_Delete(before);
    check_roundtrip(t);

    /* desired PATCH from the service (works on a copy: service writes strip $ members) */
    cJSON *svc = cJSON_Duplicate(patch, true);
    FUZZ_CHECK(svc != NULL);
    th_twin_strip_readonly(svc);
    before = state_of(t);
    int64_t dv = t->desired_version;
    etag = t->etag_counter;
    cJSON *note = NULL;
    if (th_twin_patch_desired(t, svc, now, &note, &err) == TH_OK) {
        FUZZ_CHECK(t->desired_version == dv + 1);
        FUZZ_CHECK(t->etag_counter == etag + 1);
        FUZZ_CHECK(note != NULL);
        char *text = th_json_print(note);
        FUZZ_CHECK(text != NULL);
        free(text);
    } else {
        FUZZ_CHECK(note == NULL);
        check_unchanged(t, before);
    }
    cJSON_Delete(note);
    cJSON_Delete(before);

    /* tags, then the wholesale replacements */
    before = state_of(t);
    if (th_twin_patch_tags(t, svc, &err) != TH_OK)
        check_unchanged(t, before);
    cJSON_Delete(before);
    note = NULL;
    before = state_of(t);
    if (th_twin_replace_desired(t, svc, now, &note, &err) != TH_OK)
        check_unchanged(t, before);
    cJSON_Delete(note);
    cJSON_Delete(before);
    before = state_of(t);
    if (th_twin_replace_tags(t, svc, &err) != TH_OK)
        check_unchanged(t, before);
    cJSON_Delete(before);
    check_roundtrip(t);

    /* The input as a whole service request (REST PATCH/PUT body, control updateTwin /
     * replaceTwin patch), unconditional or with a stale If-Match: refused changes nothing,
     * accepted writes reported nothing and moves the etag by one step at most. */
    for (int mode = 0; mode < 2; mode++) {
        char stale[16] = "AAAAAAAAAAA=";
        struct th_twin_write req = {.mode = mode ? TH_TWIN_WRITE_REPLACE : TH_TWIN_WRITE_PATCH,
                                    .doc = patch,
                                    .if_match = (size & 2) ? stale : NULL};
        struct th_twin_write_result res;
        before = state_of(t);
        dv = t->desired_version;
        rv = t->reported_version;
        etag = t->etag_counter;
        if (th_twin_service_write(t, &req, now, &res, &err) == TH_OK) {
            FUZZ_CHECK(req.if_match == NULL);
            FUZZ_CHECK(t->reported_version == rv);
            FUZZ_CHECK(t->etag_counter == etag + (res.tags_written || res.desired_written));
            FUZZ_CHECK(t->desired_version == dv + res.desired_written);
            FUZZ_CHECK((res.notification != NULL) == res.desired_written);
            FUZZ_CHECK((res.desired != NULL) == res.desired_written);
            FUZZ_CHECK(res.desired_version == t->desired_version);
            if (res.notification) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(res.notification, "$version");
                FUZZ_CHECK(cJSON_IsNumber(v) && v->valuedouble == (double)t->desired_version);
                char *text = printed(res.notification);
                free(text);
            }
        } else {
            FUZZ_CHECK(err.status >= 400 && err.status < 600);
            FUZZ_CHECK(!res.tags_written && !res.desired_written && !res.notification);
            check_unchanged(t, before);
        }
        th_twin_write_result_free(&res);
        cJSON_Delete(before);
        check_roundtrip(t);
    }

    /* The input as a saved twin state: whatever is accepted must round-trip too. */
    struct th_twin *restored = th_twin_from_state(patch, &err);
    if (restored) {
        check_roundtrip(restored);
        th_twin_free(restored);
    }

    cJSON_Delete(svc);
    cJSON_Delete(patch);
    th_twin_free(t);
    free(buf);
    return 0;
}
