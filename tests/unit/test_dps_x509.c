/*
 * test_dps_x509.c - the provisioning service's client id rewrite
 * (dps_front.h): the client id the TLS front gives a registering device,
 * and which client ids the plugin accepts for a registration id; X.509
 * attestation (dps_x509.h): enrollment documents, the registration
 * decision for individual enrollments and groups, and the device it makes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <stdlib.h>
#include <time.h>

#include "cacert.h"
#include "dps.h"
#include "dps_front.h"
#include "dps_x509.h"
#include "json.h"
#include "registry.h"
#include "topic.h"
#include "x509.h"
#include "x509_fixture.h"

#define DAY 86400L

/* printf into a malloc'd string. */
static char *it_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *it_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *out = malloc((size_t)n + 1);
    assert_non_null(out);
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

/* obj[a][b]... for a NULL-terminated list of names. */
#define it_json_path(o, ...) json_path((o), __VA_ARGS__, (const char *)NULL)
static const cJSON *json_path(const cJSON *o, ...)
{
    va_list ap;
    va_start(ap, o);
    for (const char *k = va_arg(ap, const char *); k && o; k = va_arg(ap, const char *))
        o = cJSON_GetObjectItemCaseSensitive(o, k);
    va_end(ap);
    return o;
}

#define SDK_USER "0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=x"

static void test_th_dps_front_client_id_sdk_username_succeeds(void **state)
{
    char out[64];
    size_t n = 0;
    (void)state;
    assert_int_equal(th_dps_front_client_id(SDK_USER, strlen(SDK_USER), out, sizeof out, &n),
                     TH_OK);
    assert_string_equal(out, "~dps/dev-1");
    assert_int_equal(n, strlen("~dps/dev-1"));
    /* Not NUL-terminated input: only `len` bytes are read. */
    char buf[] = SDK_USER "XXXXXXX";
    assert_int_equal(th_dps_front_client_id(buf, strlen(SDK_USER), out, sizeof out, &n), TH_OK);
    assert_string_equal(out, "~dps/dev-1");
}

static void test_th_dps_front_client_id_hub_username_fails(void **state)
{
    char out[64];
    size_t n = 0;
    (void)state;
    const char *hub = "127.0.0.1/dev-1/?api-version=2021-04-12";
    assert_int_equal(th_dps_front_client_id(hub, strlen(hub), out, sizeof out, &n), TH_ERR_INVAL);
    const char *nul = "0ne00000001/registrations/dev-1\0/api-version=1";
    assert_int_equal(th_dps_front_client_id(nul, 46, out, sizeof out, &n), TH_ERR_INVAL);
    assert_int_equal(th_dps_front_client_id(SDK_USER, strlen(SDK_USER), out, 8, &n),
                     TH_ERR_BUFFER);
}

static void test_th_dps_client_id_valid_succeeds(void **state)
{
    (void)state;
    assert_true(th_dps_client_id_valid("dev-1", "dev-1"));
    assert_true(th_dps_client_id_valid("~dps/dev-1", "dev-1"));
}

static void test_th_dps_client_id_valid_other_fails(void **state)
{
    (void)state;
    assert_false(th_dps_client_id_valid("dev-2", "dev-1"));
    assert_false(th_dps_client_id_valid("~dps/dev-2", "dev-1"));
    assert_false(th_dps_client_id_valid("~dps/", "dev-1"));
    assert_false(th_dps_client_id_valid("", "dev-1"));
    assert_false(th_dps_client_id_valid(NULL, "dev-1"));
    assert_false(th_dps_client_id_valid("~dps/", ""));
    /* No device (or module: "{deviceId}/{moduleId}") can hold the prefixed form. */
    assert_false(th_id_valid("~dps", 4));
}


/* ---- X.509 attestation ---- */

static struct fx_cert root, dev1, other, expired;

static int x509_setup(void **state)
{
    (void)state;
    root = fx_make("dps-root", NULL, true, -60, DAY);
    dev1 = fx_make("dev-1", &root, false, -60, DAY);
    other = fx_make("dev-1", NULL, false, -60, DAY);
    expired = fx_make("dev-1", &root, false, -2 * DAY, -DAY);
    return 0;
}

static int x509_teardown(void **state)
{
    (void)state;
    fx_free(&root);
    fx_free(&dev1);
    fx_free(&other);
    fx_free(&expired);
    return 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* Put an enrollment whose attestation is {"type":"x509","x509": x509_json}. */
static th_result put_x509(struct th_dps *dps, bool group, const char *id, const char *x509_json,
                          const char *status, struct th_error *err)
{
    char *text = it_fmt("{\"attestation\":{\"type\":\"x509\",\"x509\":%s},"
                        "\"provisioningStatus\":\"%s\"}",
                        x509_json, status);
    cJSON *body = cJSON_Parse(text);
    free(text);
    assert_non_null(body);
    th_result r = th_dps_enrollment_put(dps, group, id, body, NULL, 1000000, NULL, err);
    cJSON_Delete(body);
    return r;
}

/* {"primary":{"certificate":PEM}} for c, JSON-escaped. */
static char *certs_json(const struct fx_cert *c)
{
    char *pem = fx_pem(c, false);
    cJSON *o = cJSON_CreateObject();
    cJSON *p = cJSON_AddObjectToObject(o, "primary");
    cJSON_AddStringToObject(p, "certificate", pem);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(pem);
    return out;
}

static struct th_x509_chain *chain_of(const struct fx_cert *leaf, const struct fx_cert *ca)
{
    char *a = fx_pem(leaf, false), *b = ca ? fx_pem(ca, false) : NULL;
    char *both = it_fmt("%s%s", a, b ? b : "");
    struct th_x509_chain *ch = th_x509_chain_from_pem(both, strlen(both));
    free(a);
    free(b);
    free(both);
    assert_non_null(ch);
    return ch;
}

static void test_th_dps_x509_check_individual_succeeds(void **state)
{
    struct th_error err = {0};
    (void)state;
    struct th_dps *dps = th_dps_new(NULL);
    char *cj = certs_json(&dev1), *x = it_fmt("{\"clientCertificates\":%s}", cj);
    assert_int_equal(put_x509(dps, false, "dev-1", x, "enabled", &err), TH_OK);
    /* The service fills info from the certificate. */
    const struct th_dps_enrollment *e = th_dps_find(dps, false, "dev-1");
    const cJSON *info = it_json_path(e->doc, "attestation", "x509", "clientCertificates", "primary",
                                     "info");
    char tp[65];
    fx_thumb(&dev1, true, tp);
    assert_string_equal(th_json_string(info, "sha256Thumbprint", ""), tp);
    assert_non_null(strstr(th_json_string(info, "subjectName", ""), "CN=dev-1"));
    /* A thumbprint alone (info) is accepted too. */
    char *y = it_fmt("{\"clientCertificates\":{\"primary\":{\"info\":{\"sha256Thumbprint\":"
                     "\"%s\"}}}}",
                     tp);
    assert_int_equal(put_x509(dps, false, "dev-2", y, "enabled", &err), TH_OK);
    free(cj);
    free(x);
    free(y);
    th_dps_free(dps);
}

static void test_th_dps_x509_check_wrong_shape_fails(void **state)
{
    struct th_error err = {0};
    (void)state;
    struct th_dps *dps = th_dps_new(NULL);
    char *cj = certs_json(&root);
    char *x = it_fmt("{\"signingCertificates\":%s}", cj);
    char *both = it_fmt("{\"signingCertificates\":%s,\"caReferences\":{\"primary\":\"r\"}}", cj);
    char *cli = it_fmt("{\"clientCertificates\":%s}", cj);
    assert_int_equal(put_x509(dps, false, "dev-1", "{}", "enabled", &err), TH_ERR_INVAL);
    assert_non_null(strstr(err.message, "clientCertificates.primary"));
    assert_int_equal(put_x509(dps, false, "dev-1", x, "enabled", &err), TH_ERR_INVAL);
    assert_int_equal(put_x509(dps, false, "dev-1",
                              "{\"clientCertificates\":{\"primary\":{\"certificate\":\"xyz\"}}}",
                              "enabled", &err),
                     TH_ERR_INVAL);
    assert_int_equal(put_x509(dps, true, "g", both, "enabled", &err), TH_ERR_INVAL);
    assert_int_equal(put_x509(dps, true, "g", cli, "enabled", &err), TH_ERR_INVAL);
    assert_int_equal(put_x509(dps, true, "g", "{\"caReferences\":{\"primary\":\"\"}}", "enabled",
                              &err),
                     TH_ERR_INVAL);
    assert_int_equal(err.status, 400);
    assert_int_equal(put_x509(dps, true, "g", x, "enabled", &err), TH_OK);
    free(cj);
    free(x);
    free(both);
    free(cli);
    th_dps_free(dps);
}

static void test_th_dps_attest_x509_individual_succeeds(void **state)
{
    struct th_error err = {0};
    struct th_dps_attest a;
    (void)state;
    struct th_dps *dps = th_dps_new(NULL);
    struct th_registry *reg = th_registry_new();
    char *cj = certs_json(&dev1), *x = it_fmt("{\"clientCertificates\":%s}", cj);
    assert_int_equal(put_x509(dps, false, "dev-1", x, "enabled", &err), TH_OK);
    struct th_x509_chain *ch = chain_of(&dev1, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_OK);
    assert_true(a.x509);
    /* The device is made selfSigned with the leaf's SHA-256 thumbprint. */
    struct th_dps_plan plan;
    struct th_identity *id = NULL;
    struct th_dps_registration *rs = NULL;
    th_dps_plan(dps, reg, "dev-1", &a, &plan);
    assert_int_equal(th_dps_assign(dps, reg, "dev-1", &a, &plan, NULL, 2000000, &id, NULL, &rs,
                                   &err),
                     TH_OK);
    char tp[65];
    fx_thumb(&dev1, true, tp);
    assert_int_equal(id->auth_type, TH_AUTH_SELF_SIGNED);
    assert_string_equal(id->x509_primary, tp);
    th_x509_chain_free(ch);
    free(cj);
    free(x);
    th_registry_free(reg);
    th_dps_free(dps);
}

static void test_th_dps_attest_x509_individual_fails(void **state)
{
    struct th_error err = {0};
    struct th_dps_attest a;
    (void)state;
    struct th_dps *dps = th_dps_new(NULL);
    char *cj = certs_json(&dev1), *x = it_fmt("{\"clientCertificates\":%s}", cj);
    assert_int_equal(put_x509(dps, false, "dev-1", x, "enabled", &err), TH_OK);
    /* Another certificate with the same CN. */
    struct th_x509_chain *ch = chain_of(&other, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_AUTH);
    assert_int_equal(err.status, 401);
    assert_non_null(strstr(err.message, "neither the primary nor the secondary"));
    /* The CN is not the registration id. */
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-2", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "subject CN 'dev-1' is not the registration id"));
    th_x509_chain_free(ch);
    /* Expired. */
    ch = chain_of(&expired, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "expired"));
    th_x509_chain_free(ch);
    /* Disabled. */
    assert_int_equal(put_x509(dps, false, "dev-1", x, "disabled", &err), TH_OK);
    ch = chain_of(&dev1, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_DISABLED);
    /* A symmetric-key enrollment cannot register with a certificate. */
    cJSON *b = cJSON_Parse("{\"attestation\":{\"type\":\"symmetricKey\"}}");
    assert_int_equal(th_dps_enrollment_put(dps, false, "dev-1", b, NULL, 1, NULL, &err), TH_OK);
    cJSON_Delete(b);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "symmetric-key"));
    th_x509_chain_free(ch);
    free(cj);
    free(x);
    th_dps_free(dps);
}

static void test_th_dps_attest_x509_group_signing_certificate_succeeds(void **state)
{
    struct th_error err = {0};
    struct th_dps_attest a;
    (void)state;
    struct th_dps *dps = th_dps_new(NULL);
    char *cj = certs_json(&root), *x = it_fmt("{\"signingCertificates\":%s}", cj);
    assert_int_equal(put_x509(dps, true, "fleet", x, "enabled", &err), TH_OK);
    struct th_x509_chain *ch = chain_of(&dev1, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_OK);
    assert_string_equal(a.enrollment->id, "fleet");
    th_x509_chain_free(ch);
    /* A self-signed certificate does not chain to the group. */
    ch = chain_of(&other, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "does not chain"));
    th_x509_chain_free(ch);
    /* A disabled group is named. */
    assert_int_equal(put_x509(dps, true, "fleet", x, "disabled", &err), TH_OK);
    ch = chain_of(&dev1, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, NULL, now_s(),
                                        &a, &err),
                     TH_ERR_DISABLED);
    assert_non_null(strstr(err.message, "'fleet' is disabled"));
    th_x509_chain_free(ch);
    free(cj);
    free(x);
    th_dps_free(dps);
}

static void test_th_dps_attest_x509_group_ca_reference_fails_until_verified(void **state)
{
    struct th_error err = {0};
    struct th_dps_attest a;
    (void)state;
    struct th_dps *dps = th_dps_new(NULL);
    struct th_cacerts *cas = th_cacerts_new();
    char *pem = fx_pem(&root, false);
    assert_int_equal(th_cacerts_put(cas, "root", pem, false, NULL, 1, NULL, &err), TH_OK);
    assert_int_equal(put_x509(dps, true, "fleet", "{\"caReferences\":{\"primary\":\"root\"}}",
                              "enabled", &err),
                     TH_OK);
    struct th_x509_chain *ch = chain_of(&dev1, NULL);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, cas, now_s(),
                                        &a, &err),
                     TH_ERR_AUTH);
    assert_non_null(strstr(err.message, "'root', which is not verified"));
    assert_int_equal(th_cacerts_put(cas, "root", pem, true, NULL, 2, NULL, &err), TH_OK);
    assert_int_equal(th_dps_attest_x509(dps, TH_DPS_DEFAULT_ID_SCOPE, "dev-1", ch, cas, now_s(),
                                        &a, &err),
                     TH_OK);
    assert_string_equal(a.enrollment->id, "fleet");
    th_x509_chain_free(ch);
    free(pem);
    th_cacerts_free(cas);
    th_dps_free(dps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_th_dps_front_client_id_sdk_username_succeeds),
        cmocka_unit_test(test_th_dps_front_client_id_hub_username_fails),
        cmocka_unit_test(test_th_dps_client_id_valid_succeeds),
        cmocka_unit_test(test_th_dps_client_id_valid_other_fails),
        cmocka_unit_test(test_th_dps_x509_check_individual_succeeds),
        cmocka_unit_test(test_th_dps_x509_check_wrong_shape_fails),
        cmocka_unit_test(test_th_dps_attest_x509_individual_succeeds),
        cmocka_unit_test(test_th_dps_attest_x509_individual_fails),
        cmocka_unit_test(test_th_dps_attest_x509_group_signing_certificate_succeeds),
        cmocka_unit_test(test_th_dps_attest_x509_group_ca_reference_fails_until_verified),
    };
    return cmocka_run_group_tests(tests, x509_setup, x509_teardown);
}
