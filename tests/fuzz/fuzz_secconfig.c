/*
 * fuzz_secconfig.c - libFuzzer target for the security module's configuration
 * check (core/secconfig.h), what `twinhub security check` runs on a file or a
 * twin: the input is parsed as JSON with the hub's limits, its configuration
 * object (the member TH_SECCONFIG_OBJECT when there is one, else the whole
 * document) checked and compared with itself and with the defaults; the input
 * as a C string is also parsed as a duration.
 *
 * Invariants: every finding has a key and a message, problems counts the
 * non-warnings, a configuration matches itself except for its bare entries,
 * and an accepted duration is between 1 ms and the C agent's limit.
 */
#include <stdbool.h>

#include "fuzz_common.h"
#include "json.h"
#include "secconfig.h"
#include "th_limits.h"

static void check_report(const struct th_secconfig_report *r)
{
    size_t problems = 0;
    for (size_t i = 0; i < r->count; i++) {
        const struct th_secconfig_finding *f = &r->items[i];
        FUZZ_CHECK(f->key != NULL);
        FUZZ_CHECK(f->message[0] != '\0');
        FUZZ_CHECK(f->kind <= TH_SECCONFIG_UNKNOWN_KEY);
        if (f->kind != TH_SECCONFIG_UNKNOWN_KEY)
            problems++;
    }
    FUZZ_CHECK(problems == r->problems);
}

/* Whether two members of `obj` have the same name (a file can hold that, a twin cannot). */
static bool has_repeated_name(const cJSON *obj)
{
    const cJSON *a, *b;
    cJSON_ArrayForEach(a, obj)
    {
        for (b = a->next; b; b = b->next)
            if (a->string && b->string && !strcmp(a->string, b->string))
                return true;
    }
    return false;
}

static void check_config(const cJSON *config)
{
    struct th_secconfig_report r;
    if (th_secconfig_check(config, &r) != TH_OK)
        return; /* out of memory */
    check_report(&r);
    th_secconfig_report_free(&r);

    /* Compared with itself, only bare entries (which the agents refuse) differ. */
    cJSON *diff = NULL;
    if (!has_repeated_name(config) && th_secconfig_diff(config, config, &diff) == TH_OK) {
        const cJSON *item;
        cJSON_ArrayForEach(item, diff)
        {
            FUZZ_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "bare")));
        }
        cJSON_Delete(diff);
    }
    cJSON *defaults = th_secconfig_defaults();
    if (defaults && th_secconfig_diff(config, defaults, &diff) == TH_OK)
        cJSON_Delete(diff);
    if (defaults && th_secconfig_diff(defaults, config, &diff) == TH_OK)
        cJSON_Delete(diff);
    cJSON_Delete(defaults);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    uint64_t ms = 0;
    char why[320];
    if (th_secconfig_parse_duration(text, &ms, why, sizeof why) == TH_OK)
        FUZZ_CHECK(ms >= 1 && ms <= TH_SECCONFIG_MAX_DURATION_MS);
    else
        FUZZ_CHECK(why[0] != '\0');
    free(text);

    char *bytes = fuzz_bytes(data, size);
    cJSON *doc = NULL;
    struct th_error err = {0};
    if (th_json_parse(bytes, size, TH_JSON_MAX_INPUT_BYTES, TH_TWIN_MAX_DEPTH + 2, &doc, &err) ==
        TH_OK) {
        const cJSON *member = cJSON_GetObjectItemCaseSensitive(doc, TH_SECCONFIG_OBJECT);
        check_config(member ? member : doc);
        cJSON_Delete(doc);
    }
    free(bytes);
    return 0;
}
