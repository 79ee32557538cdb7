/*
 * test_twin_print.c - th_identity_twin_text (core/twin_print.c) and the
 * th_jbuf_* pieces (core/json.c, on a jsonw.h writer) give the very bytes th_json_print gives for
 * th_identity_twin_json and for a built cJSON item, on many random twins and
 * identities: devices and modules, every optional member, metadata shared
 * and explicit, restored time texts, numbers of every kind, escapes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json.h"
#include "registry.h"
#include "topic.h"
#include "twin.h"
#include "twin_private.h"

#define NOW 1700000000000000LL /* 2023-11-14T22:13:20Z in microseconds */

static unsigned lcg_next(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 1) & 0x7fffffffu;
}

static double some_number(unsigned *seed)
{
    switch (lcg_next(seed) % 7) {
    case 0:
        return (double)(int)(lcg_next(seed) % 2000) - 1000;
    case 1:
        return (double)(lcg_next(seed) % 100000) / 100.0;
    case 2:
        return 22.5;
    case 3:
        return (double)lcg_next(seed) * 1e-3 / 7.0;
    case 4:
        return 4503599627370496.0; /* 2^52 */
    case 5:
        return -0.0;
    default:
        return (double)lcg_next(seed) * 3.0e9;
    }
}

/* A short key from a small alphabet, so that patches often name existing members. */
static void some_key(unsigned *seed, char out[8])
{
    static const char *const keys[] = {"a", "b", "mode", "temp", "cfg", "n", "x1", "zz"};
    snprintf(out, 8, "%s", keys[lcg_next(seed) % 8]);
}

static cJSON *some_value(unsigned *seed, int depth, bool allow_null)
{
    switch (lcg_next(seed) % (depth < 3 ? 8 : 6)) {
    case 0:
        return allow_null ? cJSON_CreateNull() : cJSON_CreateTrue();
    case 1:
        return cJSON_CreateBool(lcg_next(seed) & 1);
    case 2: {
        char s[12];
        for (int i = 0; i < 11; i++)
            s[i] = (char)(1 + lcg_next(seed) % 126); /* control bytes, quotes, backslash */
        s[11] = '\0';
        return cJSON_CreateString(s);
    }
    case 3:
    case 4:
        return cJSON_CreateNumber(some_number(seed));
    case 5: {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; i < 3; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(some_number(seed)));
        return arr;
    }
    default: {
        cJSON *obj = cJSON_CreateObject();
        int n = (int)(lcg_next(seed) % 4);
        for (int i = 0; i < n; i++) {
            char key[8];
            some_key(seed, key);
            if (!cJSON_GetObjectItemCaseSensitive(obj, key))
                cJSON_AddItemToObject(obj, key, some_value(seed, depth + 1, allow_null));
        }
        return obj;
    }
    }
}

static cJSON *some_patch(unsigned *seed)
{
    cJSON *obj = cJSON_CreateObject();
    int n = 1 + (int)(lcg_next(seed) % 4);
    for (int i = 0; i < n; i++) {
        char key[8];
        some_key(seed, key);
        if (!cJSON_GetObjectItemCaseSensitive(obj, key))
            cJSON_AddItemToObject(obj, key, some_value(seed, 1, true));
    }
    return obj;
}

static void assert_same_text(const char *mine, const char *theirs, int round)
{
    assert_non_null(mine);
    assert_non_null(theirs);
    size_t at = 0;
    while (mine[at] && mine[at] == theirs[at])
        at++;
    if (mine[at] != theirs[at])
        fail_msg("round %d, byte %zu: printed '%.60s' built '%.60s'", round, at,
                 mine + (at > 30 ? at - 30 : 0), theirs + (at > 30 ? at - 30 : 0));
}

/* Writes that took (a random patch may break a content rule and be refused). */
static int writes_ok;

/* Writes and changes the twin a few times, at different times, as the hub would. */
static void churn(struct th_twin *twin, unsigned *seed)
{
    int64_t t = NOW;
    int writes = (int)(lcg_next(seed) % 8);
    for (int w = 0; w < writes; w++) {
        struct th_error err = {0};
        t += (int64_t)(lcg_next(seed) % 3) * 1234567; /* sometimes the same time: shared stamps */
        cJSON *patch = some_patch(seed);
        th_result rc;
        switch (lcg_next(seed) % 4) {
        case 0:
            rc = th_twin_patch_reported(twin, patch, t, &err);
            break;
        case 1:
            rc = th_twin_patch_tags(twin, patch, &err);
            break;
        default: {
            cJSON *note = NULL;
            rc = th_twin_patch_desired(twin, patch, t, &note, &err);
            cJSON_Delete(note);
        }
        }
        writes_ok += rc == TH_OK;
        cJSON_Delete(patch);
    }
}

/* A twin saved and restored with some $lastUpdated texts th_time_format would not write. */
static struct th_twin *restored_with_time_texts(const struct th_twin *twin)
{
    cJSON *state = th_twin_state_json(twin);
    assert_non_null(state);
    cJSON *dm = cJSON_GetObjectItemCaseSensitive(state, "desiredMeta");
    cJSON *rm = cJSON_GetObjectItemCaseSensitive(state, "reportedMeta");
    cJSON_ReplaceItemInObjectCaseSensitive(dm, "$lastUpdated",
                                           cJSON_CreateString("2020-01-01T00:00:00Z"));
    for (cJSON *c = rm->child; c != NULL; c = c->next)
        if (cJSON_IsObject(c))
            cJSON_ReplaceItemInObjectCaseSensitive(c, "$lastUpdated",
                                                   cJSON_CreateString("yesterday \"noon\""));
    struct th_error err = {0};
    struct th_twin *back = th_twin_from_state(state, &err);
    cJSON_Delete(state);
    assert_non_null(back);
    return back;
}

static void test_th_identity_twin_text_same_bytes_as_twin_json_succeeds(void **state)
{
    (void)state;
    unsigned seed = 4242;
    for (int round = 0; round < 400; round++) {
        struct th_identity id;
        memset(&id, 0, sizeof id);
        id.device_id = round % 5 == 0 ? "d\"ev\\1\x01" : "dev-1";
        id.module_id = round % 3 == 0 ? "mod\t1" : NULL;
        id.enabled = lcg_next(&seed) & 1;
        id.status_reason = lcg_next(&seed) % 3 == 0 ? "maintenance \"now\"" : NULL;
        id.etag_counter = lcg_next(&seed);
        id.auth_type = (enum th_auth_type)(lcg_next(&seed) % 4);
        if (lcg_next(&seed) & 1)
            snprintf(id.x509_primary, sizeof id.x509_primary, "%s", "ABCDEF0123");
        if (lcg_next(&seed) & 1)
            snprintf(id.x509_secondary, sizeof id.x509_secondary, "%s", "abcdef0123");
        id.iot_edge = lcg_next(&seed) & 1;
        id.device_scope = lcg_next(&seed) & 1 ? "ms-azure-iot-edge://gw-1" : NULL;
        id.parent_scope = lcg_next(&seed) & 1 ? "ms-azure-iot-edge://top-2" : NULL;
        id.model_id = lcg_next(&seed) & 1 ? "dtmi:com:example:Thermostat;1" : NULL;
        id.connected = lcg_next(&seed) & 1;
        id.last_activity_us = lcg_next(&seed) & 1 ? NOW + (int64_t)lcg_next(&seed) : 0;
        id.status_updated_us = lcg_next(&seed) & 1 ? NOW - (int64_t)lcg_next(&seed) : 0;
        id.c2d_count = lcg_next(&seed) % 70;
        if (lcg_next(&seed) % 3 == 0)
            id.configurations = cJSON_Parse(
                "{\"cfg-1\":{\"status\":\"Applied\"},\"c2\":{\"status\":\"Targeted\"}}");
        struct th_twin *twin = th_twin_new(NOW);
        assert_non_null(twin);
        churn(twin, &seed);
        if (round % 4 == 3) {
            struct th_twin *back = restored_with_time_texts(twin);
            th_twin_free(twin);
            twin = back;
            churn(twin, &seed);
        }
        id.twin = twin;

        cJSON *tree = th_identity_twin_json(&id);
        char *theirs = th_json_print(tree), *mine = th_identity_twin_text(&id);
        assert_same_text(mine, theirs, round);
        free(mine);
        free(theirs);
        cJSON_Delete(tree);
        cJSON_Delete(id.configurations);
        th_twin_free(twin);
    }
    assert_true(writes_ok > 600); /* the twins were written, not left empty */
}

static void test_th_identity_twin_text_no_twin_fails(void **state)
{
    (void)state;
    struct th_identity id;
    memset(&id, 0, sizeof id);
    id.device_id = "d";
    assert_null(th_identity_twin_text(&id));
    assert_null(th_identity_twin_text(NULL));
}

/* th_jbuf_number prints what th_json_print prints for cJSON_CreateNumber of the same double. */
static void test_th_jbuf_number_same_as_created_number_succeeds(void **state)
{
    (void)state;
    unsigned seed = 99;
    for (int i = 0; i < 20000; i++) {
        double d = some_number(&seed);
        if (i % 5 == 0)
            d = -d * 1e10;
        cJSON *n = cJSON_CreateNumber(d);
        char *theirs = th_json_print(n);
        struct th_jsonw b = {0};
        th_jbuf_number(&b, d);
        char *mine = th_jsonw_finish(&b, NULL);
        assert_same_text(mine, theirs, i);
        free(mine);
        free(theirs);
        cJSON_Delete(n);
    }
}

static void test_th_jsonw_finish_empty_succeeds(void **state)
{
    (void)state;
    struct th_jsonw b = {0};
    char *text = th_jsonw_finish(&b, NULL);
    assert_non_null(text);
    assert_string_equal(text, "");
    free(text);
    th_jbuf_key(&b, "k\n");
    th_jbuf_value(&b, NULL); /* a failure: the text is dropped */
    assert_null(th_jsonw_finish(&b, NULL));
    assert_null(b.p);
}

static void test_th_twin_short_answer_text_etag_and_desired_version_succeeds(void **state)
{
    (void)state;
    struct th_twin *twin = th_twin_new(NOW);
    assert_non_null(twin);
    struct th_error err = {0};
    cJSON *patch = cJSON_Parse("{\"a\":1}"), *note = NULL;
    assert_int_equal(th_twin_patch_desired(twin, patch, NOW, &note, &err), TH_OK);
    cJSON_Delete(note);
    assert_int_equal(th_twin_patch_tags(twin, patch, &err), TH_OK);
    cJSON_Delete(patch);
    char *text = th_twin_short_answer_text(twin);
    /* etag counter 3 (two writes), desired $version 2 (one desired write) */
    assert_string_equal(text, "{\"status\":200,\"etag\":\"AAAAAAAAAAM=\",\"$version\":2}");
    free(text);
    assert_null(th_twin_short_answer_text(NULL));
    th_twin_free(twin);
}

/* th_topic_desired, written without vsnprintf, gives what "%lld" gave, and the same results. */
static void test_th_topic_desired_same_as_snprintf_succeeds(void **state)
{
    (void)state;
    static const long long edge[] = {
        0, 1, 9, 10, -1, 4503599627370496LL, 9223372036854775807LL, -9223372036854775807LL - 1};
    unsigned seed = 5;
    for (int i = 0; i < 20000; i++) {
        long long v = i < 8 ? edge[i] : (long long)lcg_next(&seed) * (i % 3 ? 1 : -977);
        char mine[128], ref[128];
        snprintf(ref, sizeof ref, "$iothub/twin/PATCH/properties/desired/?$version=%lld", v);
        assert_int_equal(th_topic_desired(v, mine, sizeof mine), TH_OK);
        assert_string_equal(mine, ref);
        size_t need = strlen(ref);
        assert_int_equal(th_topic_desired(v, mine, need), TH_ERR_BUFFER); /* no room for NUL */
        assert_string_equal(mine, "");
        assert_int_equal(th_topic_desired(v, mine, need + 1), TH_OK);
    }
}

/* twin_path_push writes what snprintf(".%s") wrote, cut at the same byte, and counts alike. */
static void test_twin_path_push_same_as_snprintf_succeeds(void **state)
{
    (void)state;
    unsigned seed = 7;
    for (int round = 0; round < 2000; round++) {
        struct twin_path p;
        char ref[PATH_SHOWN + 1];
        size_t ref_want;
        twin_path_init(&p, "desired");
        ref_want = (size_t)snprintf(ref, sizeof ref, "%s", "desired");
        int depth = 1 + (int)(lcg_next(&seed) % 12);
        for (int d = 0; d < depth; d++) {
            char key[64];
            size_t len = lcg_next(&seed) % 40;
            for (size_t i = 0; i < len; i++)
                key[i] = (char)('a' + lcg_next(&seed) % 26);
            key[len] = '\0';
            size_t at = ref_want < PATH_SHOWN ? ref_want : PATH_SHOWN;
            if (lcg_next(&seed) % 5 == 0) {
                int i = (int)(lcg_next(&seed) % 1000);
                (void)twin_path_push(&p, NULL, i);
                ref_want += (size_t)snprintf(ref + at, sizeof ref - at, "[%d]", i);
            } else {
                (void)twin_path_push(&p, key, 0);
                ref_want += (size_t)snprintf(ref + at, sizeof ref - at, ".%s", key);
            }
            assert_string_equal(p.buf, ref);
            assert_int_equal(p.want, ref_want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_identity_twin_text_same_bytes_as_twin_json_succeeds),
        cmocka_unit_test(test_th_identity_twin_text_no_twin_fails),
        cmocka_unit_test(test_th_jbuf_number_same_as_created_number_succeeds),
        cmocka_unit_test(test_th_jsonw_finish_empty_succeeds),
        cmocka_unit_test(test_twin_path_push_same_as_snprintf_succeeds),
        cmocka_unit_test(test_th_topic_desired_same_as_snprintf_succeeds),
        cmocka_unit_test(test_th_twin_short_answer_text_etag_and_desired_version_succeeds),
    };
    return cmocka_run_group_tests_name("twin_print", tests, NULL, NULL);
}
