/*
 * fuzz_sas.c - libFuzzer target for SAS tokens (the CONNECT password):
 * th_sas_parse, then th_sas_resource and th_sas_verify on what parses, as
 * auth.c does. The seeds are tokens signed with the unit tests' key, so
 * mutations reach the verify path with a matching signature. Also signs the
 * input as a resource URI and checks that the hub accepts its own token, and
 * runs the scope decisions of core/auth.h on every resource that parses.
 */
#include <ctype.h>
#include <stdbool.h>

#include "auth.h"
#include "fuzz_common.h"
#include "sas.h"

/* A copy of `id` with every ASCII letter's case flipped. */
static void flip_case(const char *id, char *out, size_t size)
{
    size_t i = 0;
    for (; id[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)id[i];
        out[i] = (char)(isupper(c) ? tolower(c) : islower(c) ? toupper(c) : c);
    }
    out[i] = '\0';
}

/* The decisions of auth.h on a resource that parsed: a resource covers itself, in any case. */
static void check_scopes(const struct th_sas_resource *res)
{
    struct th_error err = {0};
    char dev[sizeof res->device_id], mod[sizeof res->module_id];
    flip_case(res->device_id, dev, sizeof dev);
    flip_case(res->module_id, mod, sizeof mod);
    const char *m = res->module_id[0] ? res->module_id : NULL;
    const char *fm = res->module_id[0] ? mod : NULL;
    if (res->device_id[0]) {
        FUZZ_CHECK(th_auth_connect_scope(res, false, res->device_id, m, &err) == TH_OK);
        FUZZ_CHECK(th_auth_connect_scope(res, false, dev, fm, &err) == TH_OK);
        FUZZ_CHECK(th_auth_connect_scope(res, true, dev, fm, &err) == TH_OK);
        FUZZ_CHECK(th_auth_connect_scope(res, false, res->device_id, m ? NULL : "m", &err) ==
                   TH_ERR_AUTH);
    } else {
        FUZZ_CHECK(th_auth_connect_scope(res, true, "d", NULL, &err) == TH_OK);
        FUZZ_CHECK(th_auth_connect_scope(res, false, "d", NULL, &err) == TH_ERR_AUTH);
    }
    const char *path_dev = res->device_id[0] ? dev : "d";
    FUZZ_CHECK((th_auth_rest_device_scope(res, TH_AUTH_REST_DEVICE_MODULES, path_dev, &err) ==
                TH_OK) == (res->module_id[0] == '\0'));
    FUZZ_CHECK(th_auth_rest_device_scope(res, TH_AUTH_REST_SERVICE, path_dev, &err) == TH_ERR_AUTH);
}

/* The key of tests/unit/test_sas.c (bytes 0..31). */
#define FUZZ_KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_bytes(data, size);
    struct th_sas_token tok;
    struct th_error err = {0};

    if (th_sas_parse(buf, size, &tok, &err) == TH_OK) {
        FUZZ_CHECK(tok.sr.ptr >= buf && tok.sr.ptr + tok.sr.len <= buf + size);
        FUZZ_CHECK(tok.sig.ptr >= buf && tok.sig.ptr + tok.sig.len <= buf + size);
        FUZZ_CHECK(tok.se.ptr >= buf && tok.se.ptr + tok.se.len <= buf + size);
        FUZZ_CHECK(tok.expiry >= 0);
        struct th_sas_resource res;
        if (th_sas_resource(&tok, &res, &err) == TH_OK) {
            FUZZ_CHECK(res.host[0] != '\0');
            FUZZ_CHECK(strlen(res.host) < sizeof res.host);
            FUZZ_CHECK(strlen(res.device_id) <= 128 && strlen(res.module_id) <= 128);
            FUZZ_CHECK(!res.module_id[0] || res.device_id[0]);
            check_scopes(&res);
        }
        /* Every skew the plugin can be configured with, including extreme ones. */
        (void)th_sas_verify(&tok, FUZZ_KEY, FUZZ_NOW_S, 0, &err);
        (void)th_sas_verify(&tok, FUZZ_KEY, FUZZ_NOW_S, 3600, &err);
        (void)th_sas_verify(&tok, FUZZ_KEY, INT64_MAX / 2, -(INT64_MAX / 4), &err);
        (void)th_sas_verify(&tok, "not base64!", FUZZ_NOW_S, 0, &err);
        (void)th_sas_verify(&tok, "", FUZZ_NOW_S, 0, &err);
        /* Two keys: the second only counts when the first's signature did not match. */
        th_result one = th_sas_verify(&tok, FUZZ_KEY, FUZZ_NOW_S, 0, &err);
        FUZZ_CHECK(th_auth_verify_keys(&tok, FUZZ_KEY, "", FUZZ_NOW_S, 0, &err) == one);
        FUZZ_CHECK(th_auth_verify_keys(&tok, "bm90IHRoZSBrZXkgYXQgYWxsIGJ1dCAzMiBieXRlcyE=",
                                       FUZZ_KEY, FUZZ_NOW_S, 0, &err) == one);
    }

    /* Sign the input as a resource URI: whatever the hub signs, it must accept
     * (an empty resource makes an empty sr, which no identity uses). */
    char *uri = fuzz_cstr(data, size);
    char token[8192];
    for (int with_skn = 0; uri[0] && with_skn < 2; with_skn++) {
        if (th_sas_sign(uri, FUZZ_KEY, FUZZ_NOW_S + 60, with_skn ? "iothubowner" : NULL, token,
                        sizeof token) != TH_OK)
            continue;
        struct th_sas_token t2;
        FUZZ_CHECK(th_sas_parse(token, strlen(token), &t2, &err) == TH_OK);
        FUZZ_CHECK(th_sas_verify(&t2, FUZZ_KEY, FUZZ_NOW_S, 0, &err) == TH_OK);
        FUZZ_CHECK(th_sas_verify(&t2, FUZZ_KEY, FUZZ_NOW_S + 120, 0, &err) == TH_ERR_EXPIRED);
        FUZZ_CHECK((t2.skn.ptr != NULL) == (with_skn != 0));
        struct th_sas_resource res;
        (void)th_sas_resource(&t2, &res, &err);
    }
    /* A buffer that is too small is refused, never overrun. */
    char small[40];
    th_result r = th_sas_sign(uri, FUZZ_KEY, FUZZ_NOW_S, NULL, small, sizeof small);
    FUZZ_CHECK(r != TH_OK || strlen(small) < sizeof small);

    free(uri);
    free(buf);
    return 0;
}
