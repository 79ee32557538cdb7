/*
 * test_x509.c - X.509 device authentication in core: the front credential
 * (x509.h), thumbprints, th_x509_authenticate for selfSigned and
 * certificateAuthority identities, the CA certificate store (cacert.h) with
 * proof of possession, th_auth_connect with a certificate, and identities
 * of the X.509 types in the registry (identity JSON, documents, state).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ctype.h>
#include <time.h>

#include <cmocka.h>

#include "auth.h"
#include "cacert.h"
#include "json.h"
#include "registry.h"
#include "x509.h"
#include "x509_fixture.h"

#define DAY 86400L
static const uint8_t SECRET[TH_X509_SECRET_LEN] = "0123456789abcdef0123456789abcdef";

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* The credential the front would send for `c` (+ `inter`, optional), opened again. */
static struct th_x509_chain *chain_of(const struct fx_cert *c, const struct fx_cert *inter,
                                      const char *cid, const char *user)
{
    struct th_x509_der der[2];
    size_t n = 0, len;
    unsigned char *d0 = fx_der(c, &len);
    der[n++] = (struct th_x509_der){d0, len};
    unsigned char *d1 = NULL;
    if (inter) {
        d1 = fx_der(inter, &len);
        der[n++] = (struct th_x509_der){d1, len};
    }
    char cred[8192], reason[TH_X509_REASON_BUF];
    size_t clen = 0;
    assert_int_equal(th_x509_cred_build(SECRET, sizeof SECRET, (const uint8_t *)cid, strlen(cid),
                                        (const uint8_t *)user, strlen(user), der, n, cred,
                                        sizeof cred - 1, &clen),
                     TH_OK);
    cred[clen] = '\0';
    OPENSSL_free(d0);
    OPENSSL_free(d1);
    struct th_x509_chain *ch = NULL;
    assert_int_equal(
        th_x509_cred_open(SECRET, sizeof SECRET, cid, user, cred, &ch, reason, sizeof reason),
        TH_OK);
    return ch;
}

static void test_th_x509_cred_open_roundtrip_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    struct th_x509_chain *ch = chain_of(&c, NULL, "d1", "h/d1/?api-version=1");
    char sha1[41], sha256[65], w1[41], w256[65];
    th_x509_chain_thumbprints(ch, sha1, sha256);
    fx_thumb(&c, false, w1);
    fx_thumb(&c, true, w256);
    assert_string_equal(sha1, w1);
    assert_string_equal(sha256, w256);
    th_x509_chain_free(ch);
    fx_free(&c);
}

static void test_th_x509_cred_open_forged_fails(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    size_t len;
    unsigned char *d = fx_der(&c, &len);
    struct th_x509_der der = {d, len};
    char cred[4096], reason[TH_X509_REASON_BUF];
    size_t clen;
    assert_int_equal(th_x509_cred_build(SECRET, sizeof SECRET, (const uint8_t *)"d1", 2,
                                        (const uint8_t *)"u", 1, &der, 1, cred, sizeof cred - 1,
                                        &clen),
                     TH_OK);
    cred[clen] = '\0';
    struct th_x509_chain *ch = NULL;
    /* Another client id: the HMAC binds it. */
    assert_int_equal(
        th_x509_cred_open(SECRET, sizeof SECRET, "d2", "u", cred, &ch, reason, sizeof reason),
        TH_ERR_AUTH);
    assert_null(ch);
    /* Another secret (a client that made its own credential). */
    static const uint8_t other[TH_X509_SECRET_LEN] = "ffffffffffffffffffffffffffffffff";
    assert_int_equal(
        th_x509_cred_open(other, sizeof other, "d1", "u", cred, &ch, reason, sizeof reason),
        TH_ERR_AUTH);
    /* A flipped certificate byte. */
    cred[clen - 5] = cred[clen - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(
        th_x509_cred_open(SECRET, sizeof SECRET, "d1", "u", cred, &ch, reason, sizeof reason),
        TH_ERR_AUTH);
    assert_int_equal(th_x509_cred_open(SECRET, sizeof SECRET, "d1", "u", TH_X509_CRED_PREFIX "x",
                                       &ch, reason, sizeof reason),
                     TH_ERR_FORMAT);
    assert_false(th_x509_is_cred("SharedAccessSignature sr=x"));
    OPENSSL_free(d);
    fx_free(&c);
}

static void test_th_x509_cred_build_small_buffer_fails(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    size_t len, clen;
    unsigned char *d = fx_der(&c, &len);
    struct th_x509_der der = {d, len};
    char cred[100];
    assert_int_equal(th_x509_cred_build(SECRET, sizeof SECRET, (const uint8_t *)"d1", 2,
                                        (const uint8_t *)"u", 1, &der, 1, cred, sizeof cred, &clen),
                     TH_ERR_BUFFER);
    OPENSSL_free(d);
    fx_free(&c);
}

static void test_th_x509_thumbprint_valid_forms_succeeds(void **state)
{
    (void)state;
    assert_true(th_x509_thumbprint_valid("0123456789abcdef0123456789ABCDEF01234567"));
    assert_true(th_x509_thumbprint_valid(
        "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789ABCDEF"));
    assert_false(th_x509_thumbprint_valid("0123"));
    assert_false(th_x509_thumbprint_valid("0123456789abcdef0123456789ABCDEF0123456g"));
    assert_false(th_x509_thumbprint_valid(NULL));
}

static void test_th_x509_authenticate_self_signed_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("anything", NULL, false, -60, DAY);
    struct th_x509_chain *ch = chain_of(&c, NULL, "d1", "u");
    char sha1[41], sha256[65], lower[65];
    fx_thumb(&c, false, sha1);
    fx_thumb(&c, true, sha256);
    for (size_t i = 0; i <= strlen(sha256); i++)
        lower[i] = (char)tolower((unsigned char)sha256[i]);
    char reason[TH_X509_REASON_BUF];
    struct th_x509_identity id = {"d1", NULL, false, sha1, NULL};
    assert_int_equal(th_x509_authenticate(ch, &id, NULL, now_s(), reason, sizeof reason), TH_OK);
    /* The secondary matches, in lower case, as SHA-256. */
    id = (struct th_x509_identity){"d1", NULL, false, "0000000000000000000000000000000000000000",
                                   lower};
    assert_int_equal(th_x509_authenticate(ch, &id, NULL, now_s(), reason, sizeof reason), TH_OK);
    th_x509_chain_free(ch);
    fx_free(&c);
}

static void test_th_x509_authenticate_wrong_thumbprint_fails(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    struct th_x509_chain *ch = chain_of(&c, NULL, "d1", "u");
    char reason[TH_X509_REASON_BUF];
    struct th_x509_identity id = {"d1", NULL, false, "0000000000000000000000000000000000000000",
                                  NULL};
    assert_int_equal(th_x509_authenticate(ch, &id, NULL, now_s(), reason, sizeof reason),
                     TH_ERR_AUTH);
    assert_non_null(strstr(reason, "thumbprint"));
    th_x509_chain_free(ch);
    fx_free(&c);
}

static void test_th_x509_authenticate_expired_fails(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -2 * DAY, -DAY);
    struct th_x509_chain *ch = chain_of(&c, NULL, "d1", "u");
    char sha1[41], reason[TH_X509_REASON_BUF];
    fx_thumb(&c, false, sha1);
    struct th_x509_identity id = {"d1", NULL, false, sha1, NULL};
    assert_int_equal(th_x509_authenticate(ch, &id, NULL, now_s(), reason, sizeof reason),
                     TH_ERR_AUTH);
    assert_non_null(strstr(reason, "expired"));
    th_x509_chain_free(ch);
    fx_free(&c);
}

/* A store with `ca` registered as "root", verified or not. */
static struct th_cacerts *store_with(const struct fx_cert *ca, bool verified)
{
    struct th_cacerts *cas = th_cacerts_new();
    char *pem = fx_pem(ca, false);
    struct th_error err = {0};
    assert_int_equal(th_cacerts_put(cas, "root", pem, verified, NULL, 1, NULL, &err), TH_OK);
    free(pem);
    return cas;
}

static void test_th_x509_authenticate_ca_signed_succeeds(void **state)
{
    (void)state;
    struct fx_cert ca = fx_make("root", NULL, true, -60, DAY);
    struct fx_cert inter = fx_make("inter", &ca, true, -60, DAY);
    struct fx_cert leaf = fx_make("d1", &inter, false, -60, DAY);
    struct th_cacerts *cas = store_with(&ca, true);
    struct th_x509_chain *ch = chain_of(&leaf, &inter, "d1", "u");
    char reason[TH_X509_REASON_BUF] = "";
    struct th_x509_identity id = {"d1", NULL, true, NULL, NULL};
    assert_int_equal(th_x509_authenticate(ch, &id, cas, now_s(), reason, sizeof reason), TH_OK);
    /* A module's CN is "{deviceId}/{moduleId}": the device's certificate is refused for it. */
    id.module_id = "m1";
    assert_int_equal(th_x509_authenticate(ch, &id, cas, now_s(), reason, sizeof reason),
                     TH_ERR_AUTH);
    assert_non_null(strstr(reason, "'d1/m1'"));
    th_x509_chain_free(ch);
    struct fx_cert mleaf = fx_make("d1/m1", &inter, false, -60, DAY);
    ch = chain_of(&mleaf, &inter, "d1/m1", "u");
    assert_int_equal(th_x509_authenticate(ch, &id, cas, now_s(), reason, sizeof reason), TH_OK);
    fx_free(&mleaf);
    th_x509_chain_free(ch);
    th_cacerts_free(cas);
    fx_free(&leaf);
    fx_free(&inter);
    fx_free(&ca);
}

static void test_th_x509_authenticate_ca_refusals_fails(void **state)
{
    (void)state;
    struct fx_cert ca = fx_make("root", NULL, true, -60, DAY);
    struct fx_cert other = fx_make("other-root", NULL, true, -60, DAY);
    struct fx_cert leaf = fx_make("d1", &ca, false, -60, DAY);
    struct fx_cert wrong_cn = fx_make("d2", &ca, false, -60, DAY);
    struct fx_cert foreign = fx_make("d1", &other, false, -60, DAY);
    char reason[TH_X509_REASON_BUF];
    struct th_x509_identity id = {"d1", NULL, true, NULL, NULL};

    struct th_cacerts *unverified = store_with(&ca, false);
    struct th_x509_chain *ch = chain_of(&leaf, NULL, "d1", "u");
    assert_int_equal(th_x509_authenticate(ch, &id, unverified, now_s(), reason, sizeof reason),
                     TH_ERR_AUTH);
    assert_non_null(strstr(reason, "not verified"));
    assert_non_null(strstr(reason, "'root'"));
    th_x509_chain_free(ch);

    struct th_cacerts *cas = store_with(&ca, true);
    ch = chain_of(&wrong_cn, NULL, "d1", "u");
    assert_int_equal(th_x509_authenticate(ch, &id, cas, now_s(), reason, sizeof reason),
                     TH_ERR_AUTH);
    assert_non_null(strstr(reason, "CN 'd2'"));
    th_x509_chain_free(ch);

    ch = chain_of(&foreign, NULL, "d1", "u");
    assert_int_equal(th_x509_authenticate(ch, &id, cas, now_s(), reason, sizeof reason),
                     TH_ERR_AUTH);
    assert_non_null(strstr(reason, "does not chain"));
    th_x509_chain_free(ch);

    th_cacerts_free(cas);
    th_cacerts_free(unverified);
    fx_free(&leaf);
    fx_free(&wrong_cn);
    fx_free(&foreign);
    fx_free(&other);
    fx_free(&ca);
}

static void test_th_cacerts_proof_of_possession_succeeds(void **state)
{
    (void)state;
    struct fx_cert ca = fx_make("root", NULL, true, -60, DAY);
    struct th_cacerts *cas = store_with(&ca, false);
    struct th_error err = {0};
    cJSON *got = th_cacerts_get_json(cas, "root", &err);
    assert_non_null(got);
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(got, "properties");
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(props, "isVerified")));
    assert_string_equal(th_json_string(props, "subject", ""), "CN=root");
    char etag[64];
    snprintf(etag, sizeof etag, "%s", th_json_string(got, "etag", ""));
    cJSON_Delete(got);

    /* Without If-Match, and with a stale one. */
    cJSON *out = NULL;
    assert_int_equal(th_cacerts_verification_code(cas, "root", NULL, 2, &out, &err), TH_ERR_INVAL);
    assert_int_equal(th_cacerts_verification_code(cas, "root", "\"bm9wZQ==\"", 2, &out, &err),
                     TH_ERR_PRECONDITION);
    assert_int_equal(th_cacerts_verification_code(cas, "root", etag, 2, &out, &err), TH_OK);
    char code[64];
    snprintf(code, sizeof code, "%s",
             th_json_string(cJSON_GetObjectItemCaseSensitive(out, "properties"), "verificationCode",
                            ""));
    assert_int_equal(strlen(code), 48);
    cJSON_Delete(out);

    /* A certificate with the code as CN signed by another key is refused. */
    struct fx_cert stranger = fx_make("stranger", NULL, true, -60, DAY);
    struct fx_cert bad = fx_make(code, &stranger, false, -60, DAY);
    char *pem = fx_pem(&bad, false);
    assert_int_equal(th_cacerts_verify(cas, "root", "*", pem, 3, &out, &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "private key"));
    free(pem);
    /* The wrong CN is refused. */
    struct fx_cert wrong = fx_make("not-the-code", &ca, false, -60, DAY);
    pem = fx_pem(&wrong, false);
    assert_int_equal(th_cacerts_verify(cas, "root", "*", pem, 3, &out, &err), TH_ERR_INVAL);
    free(pem);
    /* The right one verifies it. */
    struct fx_cert proof = fx_make(code, &ca, false, -60, DAY);
    pem = fx_pem(&proof, false);
    assert_int_equal(th_cacerts_verify(cas, "root", "*", pem, 3, &out, &err), TH_OK);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(out, "properties"), "isVerified")));
    cJSON_Delete(out);
    free(pem);

    /* State round trip keeps it verified. */
    cJSON *st = th_cacerts_state_json(cas);
    struct th_cacerts *back = th_cacerts_new();
    assert_int_equal(th_cacerts_restore(back, st, &err), TH_OK);
    const char *name;
    bool verified = false;
    assert_non_null(th_cacerts_x509_at(back, 0, &name, &verified));
    assert_true(verified);
    cJSON_Delete(st);
    th_cacerts_free(back);

    assert_int_equal(th_cacerts_delete(cas, "root", NULL, &err), TH_ERR_INVAL);
    assert_int_equal(th_cacerts_delete(cas, "root", "*", &err), TH_OK);
    assert_int_equal(th_cacerts_count(cas), 0);
    assert_int_equal(th_cacerts_delete(cas, "root", "*", &err), TH_ERR_NOT_FOUND);
    th_cacerts_free(cas);
    fx_free(&proof);
    fx_free(&wrong);
    fx_free(&bad);
    fx_free(&stranger);
    fx_free(&ca);
}

static void test_th_cacerts_put_bad_input_fails(void **state)
{
    (void)state;
    struct th_cacerts *cas = th_cacerts_new();
    struct th_error err = {0};
    assert_int_equal(th_cacerts_put(cas, "bad name", "x", false, NULL, 1, NULL, &err),
                     TH_ERR_INVAL);
    assert_int_equal(th_cacerts_put(cas, "ok", "not a pem", false, NULL, 1, NULL, &err),
                     TH_ERR_INVAL);
    assert_int_equal(err.code, 400004);
    th_cacerts_free(cas);
}

/* A registry with d1 (selfSigned with c's SHA-1), d2 (certificateAuthority), d3 (sas). */
static struct th_registry *x509_registry(const struct fx_cert *c)
{
    struct th_registry *reg = th_registry_new();
    char sha1[41], body[256];
    fx_thumb(c, false, sha1);
    snprintf(body, sizeof body,
             "{\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":"
             "{\"primaryThumbprint\":\"%s\",\"secondaryThumbprint\":null}}}",
             sha1);
    const char *bodies[] = {body, "{\"authentication\":{\"type\":\"certificateAuthority\"}}", "{}"};
    const char *ids[] = {"d1", "d2", "d3"};
    for (int i = 0; i < 3; i++) {
        cJSON *j = cJSON_Parse(bodies[i]);
        struct th_ident_req req;
        struct th_error err = {0};
        assert_int_equal(th_ident_req_from_json(j, false, &req, &err), TH_OK);
        assert_int_equal(th_registry_create(reg, ids[i], NULL, &req, NULL, NULL, 1, NULL, &err),
                         TH_OK);
        cJSON_Delete(j);
    }
    return reg;
}

static void test_th_auth_connect_x509_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    struct th_registry *reg = x509_registry(&c);
    struct th_x509_chain *ch = chain_of(&c, NULL, "d1", "127.0.0.1/d1/?api-version=2021-04-12");
    struct th_auth_connect_facts f = {
        4, "d1", "127.0.0.1/d1/?api-version=2021-04-12", NULL, now_s(), 0, ch, NULL};
    struct th_auth_connect_decision d;
    assert_int_equal(th_auth_connect(reg, &f, &d), TH_OK);
    assert_int_equal(d.kind, TH_AUTH_IDENTITY);
    assert_true(d.x509);
    assert_string_equal(d.identity->device_id, "d1");
    th_x509_chain_free(ch);
    th_registry_free(reg);
    fx_free(&c);
}

static void test_th_auth_connect_x509_mismatches_fails(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d3", NULL, false, -60, DAY);
    struct th_registry *reg = x509_registry(&c);
    struct th_auth_connect_decision d;
    /* A SAS device presenting a certificate and no password. */
    struct th_x509_chain *ch = chain_of(&c, NULL, "d3", "h/d3/?api-version=1");
    struct th_auth_connect_facts f = {4, "d3", "h/d3/?api-version=1", NULL, now_s(), 0, ch, NULL};
    assert_int_equal(th_auth_connect(reg, &f, &d), TH_ERR_AUTH);
    assert_non_null(strstr(d.reason, "'sas'"));
    th_x509_chain_free(ch);
    /* An X.509 device with a SAS token (any password). */
    f = (struct th_auth_connect_facts){4,
                                       "d2",
                                       "h/d2/?api-version=1",
                                       "SharedAccessSignature sr=h%2Fdevices%2Fd2&sig=x&se=1",
                                       now_s(),
                                       0,
                                       NULL,
                                       NULL};
    assert_int_equal(th_auth_connect(reg, &f, &d), TH_ERR_AUTH);
    th_registry_free(reg);
    fx_free(&c);
}

static void test_th_identity_to_json_x509_types_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d1", NULL, false, -60, DAY);
    struct th_registry *reg = x509_registry(&c);
    char sha1[41];
    fx_thumb(&c, false, sha1);
    cJSON *j = th_identity_to_json(th_registry_find(reg, "d1", NULL));
    const cJSON *auth = cJSON_GetObjectItemCaseSensitive(j, "authentication");
    assert_string_equal(th_json_string(auth, "type", ""), "selfSigned");
    assert_string_equal(th_json_string(cJSON_GetObjectItemCaseSensitive(auth, "x509Thumbprint"),
                                       "primaryThumbprint", ""),
                        sha1);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(auth, "symmetricKey"), "primaryKey")));
    cJSON_Delete(j);
    j = th_identity_to_json(th_registry_find(reg, "d2", NULL));
    assert_string_equal(
        th_json_string(cJSON_GetObjectItemCaseSensitive(j, "authentication"), "type", ""),
        "certificateAuthority");
    cJSON_Delete(j);

    /* Export, load into an empty registry, and the state round trip keep both. */
    cJSON *doc = th_registry_export(reg, false);
    struct th_registry *copy = th_registry_new();
    struct th_error err = {0};
    assert_int_equal(th_registry_load(copy, doc, 1, &err), TH_OK);
    const struct th_identity *d1 = th_registry_find(copy, "d1", NULL);
    assert_int_equal(d1->auth_type, TH_AUTH_SELF_SIGNED);
    assert_string_equal(d1->x509_primary, sha1);
    assert_int_equal(th_registry_find(copy, "d2", NULL)->auth_type, TH_AUTH_CA);
    cJSON *st = th_device_state_json(d1);
    struct th_registry *restored = th_registry_new();
    assert_int_equal(th_registry_restore_device(restored, st, &err), TH_OK);
    assert_string_equal(th_registry_find(restored, "d1", NULL)->x509_primary, sha1);
    cJSON_Delete(st);
    cJSON_Delete(doc);
    th_registry_free(restored);
    th_registry_free(copy);
    th_registry_free(reg);
    fx_free(&c);
}

static void test_th_registry_import_x509_overwrite_succeeds(void **state)
{
    (void)state;
    struct fx_cert c = fx_make("d3", NULL, false, -60, DAY);
    struct th_registry *reg = x509_registry(&c);
    char sha256[65], doc_text[512];
    fx_thumb(&c, true, sha256);
    /* d3 (sas) becomes selfSigned; d1 (selfSigned) becomes certificateAuthority; new d4. */
    snprintf(doc_text, sizeof doc_text,
             "{\"devices\":[{\"deviceId\":\"d3\",\"authentication\":{\"type\":\"selfSigned\","
             "\"x509Thumbprint\":{\"primaryThumbprint\":\"%s\"}}},"
             "{\"deviceId\":\"d1\",\"authentication\":{\"type\":\"certificateAuthority\"}},"
             "{\"deviceId\":\"d4\",\"authentication\":{\"type\":\"certificateAuthority\"}}]}",
             sha256);
    cJSON *doc = cJSON_Parse(doc_text);
    size_t created = 0, updated = 0, skipped = 0;
    struct th_error err = {0};
    assert_int_equal(
        th_registry_import(reg, doc, true, 2, &created, &updated, &skipped, &err), TH_OK);
    assert_int_equal(created, 1);
    assert_int_equal(updated, 2);
    const struct th_identity *d3 = th_registry_find(reg, "d3", NULL);
    assert_int_equal(d3->auth_type, TH_AUTH_SELF_SIGNED);
    assert_string_equal(d3->x509_primary, sha256);
    assert_string_equal(d3->primary_key, "");
    const struct th_identity *d1 = th_registry_find(reg, "d1", NULL);
    assert_int_equal(d1->auth_type, TH_AUTH_CA);
    assert_string_equal(d1->x509_primary, "");
    assert_int_equal(th_registry_find(reg, "d4", NULL)->auth_type, TH_AUTH_CA);
    cJSON_Delete(doc);
    th_registry_free(reg);
    fx_free(&c);
}

static void test_th_registry_create_x509_bad_requests_fails(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"authentication\":{\"type\":\"selfSigned\"}}",
        "{\"authentication\":{\"type\":\"selfSigned\",\"x509Thumbprint\":"
        "{\"primaryThumbprint\":\"abc\"}}}",
        "{\"authentication\":{\"type\":\"certificateAuthority\",\"x509Thumbprint\":"
        "{\"primaryThumbprint\":\"0000000000000000000000000000000000000000\"}}}",
        "{\"authentication\":{\"type\":\"certificateAuthority\",\"symmetricKey\":"
        "{\"primaryKey\":\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"}}}",
    };
    struct th_registry *reg = th_registry_new();
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        cJSON *j = cJSON_Parse(bodies[i]);
        struct th_ident_req req;
        struct th_error err = {0};
        assert_int_equal(th_ident_req_from_json(j, false, &req, &err), TH_OK);
        assert_int_equal(th_registry_create(reg, "dx", NULL, &req, NULL, NULL, 1, NULL, &err),
                         TH_ERR_INVAL);
        assert_int_equal(err.code, 400004);
        cJSON_Delete(j);
    }
    assert_null(th_registry_find(reg, "dx", NULL));
    th_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_x509_cred_open_roundtrip_succeeds),
        cmocka_unit_test(test_th_x509_cred_open_forged_fails),
        cmocka_unit_test(test_th_x509_cred_build_small_buffer_fails),
        cmocka_unit_test(test_th_x509_thumbprint_valid_forms_succeeds),
        cmocka_unit_test(test_th_x509_authenticate_self_signed_succeeds),
        cmocka_unit_test(test_th_x509_authenticate_wrong_thumbprint_fails),
        cmocka_unit_test(test_th_x509_authenticate_expired_fails),
        cmocka_unit_test(test_th_x509_authenticate_ca_signed_succeeds),
        cmocka_unit_test(test_th_x509_authenticate_ca_refusals_fails),
        cmocka_unit_test(test_th_cacerts_proof_of_possession_succeeds),
        cmocka_unit_test(test_th_cacerts_put_bad_input_fails),
        cmocka_unit_test(test_th_auth_connect_x509_succeeds),
        cmocka_unit_test(test_th_auth_connect_x509_mismatches_fails),
        cmocka_unit_test(test_th_identity_to_json_x509_types_succeeds),
        cmocka_unit_test(test_th_registry_import_x509_overwrite_succeeds),
        cmocka_unit_test(test_th_registry_create_x509_bad_requests_fails),
    };
    return cmocka_run_group_tests_name("x509", tests, NULL, NULL);
}
